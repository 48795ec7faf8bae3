//! The Pareto frontier over per-validation-example scores.
//!
//! For every validation example the frontier holds the best score any candidate reached on it
//! and the set of candidates that reached it. A candidate that is best on some example survives
//! even when its average is low: that is what keeps GEPA's search diverse.

use std::collections::{BTreeMap, BTreeSet};

/// Per validation example: the best score and the candidates that reach it.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Frontier {
    best: Vec<f64>,
    members: Vec<BTreeSet<usize>>,
}

fn clean(score: f64) -> f64 {
    if score.is_nan() {
        f64::NEG_INFINITY
    } else {
        score
    }
}

impl Frontier {
    /// An empty frontier over `examples` validation examples.
    pub fn new(examples: usize) -> Self {
        Self {
            best: vec![f64::NEG_INFINITY; examples],
            members: vec![BTreeSet::new(); examples],
        }
    }

    /// The frontier of these candidates (id, per-example scores). Every score list must have one
    /// score per validation example; the first list fixes the count.
    pub fn build<'a>(candidates: impl IntoIterator<Item = (usize, &'a [f64])>) -> Self {
        let mut frontier: Option<Frontier> = None;
        for (id, scores) in candidates {
            let f = frontier.get_or_insert_with(|| Frontier::new(scores.len()));
            f.insert(id, scores);
        }
        frontier.unwrap_or_default()
    }

    /// Adds a candidate: on each example a strictly better score replaces the set, an equal score
    /// joins it. Scores beyond the frontier's example count are ignored.
    pub fn insert(&mut self, id: usize, scores: &[f64]) {
        for (k, &raw) in scores.iter().enumerate().take(self.best.len()) {
            let s = clean(raw);
            if s > self.best[k] {
                self.best[k] = s;
                self.members[k].clear();
                self.members[k].insert(id);
            } else if s == self.best[k] {
                self.members[k].insert(id);
            }
        }
    }

    /// Number of validation examples.
    pub fn examples(&self) -> usize {
        self.best.len()
    }

    /// The best score on example `k`.
    pub fn best_score(&self, k: usize) -> Option<f64> {
        self.best.get(k).copied()
    }

    /// The candidates best on example `k`.
    pub fn front(&self, k: usize) -> Option<&BTreeSet<usize>> {
        self.members.get(k)
    }

    /// Every candidate on some front.
    pub fn candidates(&self) -> BTreeSet<usize> {
        self.members.iter().flatten().copied().collect()
    }

    /// Number of distinct candidates on the frontier.
    pub fn len(&self) -> usize {
        self.candidates().len()
    }

    /// Whether no candidate is on the frontier.
    pub fn is_empty(&self) -> bool {
        self.members.iter().all(BTreeSet::is_empty)
    }

    /// Per candidate: on how many examples it is among the best.
    pub fn coverage(&self) -> BTreeMap<usize, usize> {
        let mut freq = BTreeMap::new();
        for front in &self.members {
            for &id in front {
                *freq.entry(id).or_insert(0) += 1;
            }
        }
        freq
    }

    /// The candidates that survive dominance pruning, as GEPA's `remove_dominated_programs`:
    /// candidates are visited in ascending average score (ties: ascending id); a candidate is
    /// dominated when every front it belongs to also holds another surviving candidate; one
    /// dominated candidate is removed at a time and the scan restarts, until none is dominated.
    pub fn dominators(&self, averages: &BTreeMap<usize, f64>) -> Vec<usize> {
        let mut order: Vec<usize> = self.candidates().into_iter().collect();
        let avg = |id: usize| clean(averages.get(&id).copied().unwrap_or(f64::NEG_INFINITY));
        order.sort_by(|&a, &b| avg(a).total_cmp(&avg(b)).then(a.cmp(&b)));
        let mut removed: BTreeSet<usize> = BTreeSet::new();
        loop {
            let next = order.iter().copied().find(|&y| {
                !removed.contains(&y)
                    && self
                        .members
                        .iter()
                        .filter(|front| front.contains(&y))
                        .all(|front| front.iter().any(|&o| o != y && !removed.contains(&o)))
            });
            match next {
                Some(y) => {
                    removed.insert(y);
                }
                None => break,
            }
        }
        order
            .into_iter()
            .filter(|id| !removed.contains(id))
            .collect()
    }

    /// The frontier restricted to the dominators (fronts keep only surviving candidates).
    pub fn without_dominated(&self, averages: &BTreeMap<usize, f64>) -> Frontier {
        let keep: BTreeSet<usize> = self.dominators(averages).into_iter().collect();
        Frontier {
            best: self.best.clone(),
            members: self
                .members
                .iter()
                .map(|front| front.intersection(&keep).copied().collect())
                .collect(),
        }
    }
}

/// The mean of a score list (0 for an empty list).
pub fn average(scores: &[f64]) -> f64 {
    if scores.is_empty() {
        0.0
    } else {
        scores.iter().copied().map(clean).sum::<f64>() / scores.len() as f64
    }
}

/// Which candidates to retire so the pool holds at most `cap` candidates.
///
/// Retired first: candidates on no front; then candidates removed by dominance pruning; then
/// the rest. Within each group the lowest average goes first (ties: the newest, highest id).
/// The `elite` best candidates by average (ties: lowest id) are never retired, so with
/// `elite >= cap` fewer may be retired than needed.
pub fn retire_for_cap(pool: &[(usize, &[f64])], cap: usize, elite: usize) -> Vec<usize> {
    if pool.len() <= cap {
        return Vec::new();
    }
    let averages: BTreeMap<usize, f64> = pool.iter().map(|(id, s)| (*id, average(s))).collect();
    let frontier = Frontier::build(pool.iter().map(|(id, s)| (*id, *s)));
    let on_front = frontier.candidates();
    let dominators: BTreeSet<usize> = frontier.dominators(&averages).into_iter().collect();
    let avg = |id: usize| averages.get(&id).copied().unwrap_or(f64::NEG_INFINITY);

    let mut by_rank: Vec<usize> = pool.iter().map(|(id, _)| *id).collect();
    by_rank.sort_by(|&a, &b| avg(b).total_cmp(&avg(a)).then(a.cmp(&b)));
    let elites: BTreeSet<usize> = by_rank.iter().take(elite).copied().collect();

    let tier = |id: usize| {
        if !on_front.contains(&id) {
            0
        } else if !dominators.contains(&id) {
            1
        } else {
            2
        }
    };
    let mut order: Vec<usize> = by_rank
        .iter()
        .copied()
        .filter(|id| !elites.contains(id))
        .collect();
    order.sort_by(|&a, &b| {
        tier(a)
            .cmp(&tier(b))
            .then(avg(a).total_cmp(&avg(b)))
            .then(b.cmp(&a))
    });
    order.truncate(pool.len() - cap);
    order
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    fn avgs(pool: &[(usize, Vec<f64>)]) -> BTreeMap<usize, f64> {
        pool.iter().map(|(i, s)| (*i, average(s))).collect()
    }

    fn frontier(pool: &[(usize, Vec<f64>)]) -> Frontier {
        Frontier::build(pool.iter().map(|(i, s)| (*i, s.as_slice())))
    }

    #[test]
    fn fronts_replace_on_better_and_join_on_equal() {
        let pool = vec![
            (0, vec![1.0, 0.0, 0.0, 1.0]),
            (1, vec![1.0, 1.0, 0.0, 0.0]),
            (2, vec![0.0, 0.5, 0.0, 0.0]),
        ];
        let f = frontier(&pool);
        assert_eq!(f.front(0).unwrap(), &BTreeSet::from([0, 1]));
        assert_eq!(f.front(1).unwrap(), &BTreeSet::from([1]));
        assert_eq!(f.front(2).unwrap(), &BTreeSet::from([0, 1, 2]));
        assert_eq!(f.front(3).unwrap(), &BTreeSet::from([0]));
        assert_eq!(f.best_score(1), Some(1.0));
        assert_eq!(f.coverage(), BTreeMap::from([(0, 3), (1, 3), (2, 1)]));
        assert_eq!(f.len(), 3);
    }

    #[test]
    fn dominated_candidates_are_pruned_lowest_average_first() {
        // Candidate 2 is only on front 2, which also holds 0 and 1: dominated.
        // 0 and 1 each own an example alone (3 and 1): both survive.
        let pool = vec![
            (0, vec![1.0, 0.0, 0.0, 1.0]),
            (1, vec![1.0, 1.0, 0.0, 0.0]),
            (2, vec![0.0, 0.5, 0.0, 0.0]),
        ];
        let f = frontier(&pool);
        assert_eq!(f.dominators(&avgs(&pool)), vec![0, 1]);
        let pruned = f.without_dominated(&avgs(&pool));
        assert_eq!(pruned.front(2).unwrap(), &BTreeSet::from([0, 1]));
    }

    #[test]
    fn identical_candidates_keep_the_higher_average_one() {
        // 0 and 1 are on exactly the same fronts. Visiting by ascending average, 1 (lower
        // average, same fronts) goes first and is removed; 0 then stands alone.
        let pool = vec![(0, vec![1.0, 1.0, 0.5]), (1, vec![1.0, 1.0, 0.2])];
        let f = frontier(&pool);
        assert_eq!(f.front(0).unwrap(), &BTreeSet::from([0, 1]));
        assert_eq!(f.dominators(&avgs(&pool)), vec![0]);
        // With equal averages the lower id is visited first and removed.
        let pool = vec![(0, vec![1.0, 1.0]), (1, vec![1.0, 1.0])];
        assert_eq!(frontier(&pool).dominators(&avgs(&pool)), vec![1]);
    }

    #[test]
    fn chain_of_domination_stops_when_each_front_keeps_one() {
        // Fronts: e0 {0,1}, e1 {1,2}, e2 {0,2}. Averages 0 < 1 < 2.
        // 0: fronts e0 (has 1), e2 (has 2) -> dominated, removed.
        // 1: e0 now {1} alone -> not dominated. 2: e2 now {2} alone -> not dominated.
        let pool = vec![
            (0, vec![1.0, 0.0, 1.0, 0.0]),
            (1, vec![1.0, 1.0, 0.0, 0.1]),
            (2, vec![0.0, 1.0, 1.0, 0.2]),
        ];
        let f = frontier(&pool);
        assert_eq!(f.front(3).unwrap(), &BTreeSet::from([2]));
        assert_eq!(f.dominators(&avgs(&pool)), vec![1, 2]);
    }

    #[test]
    fn nan_scores_count_as_worst() {
        let pool = vec![(0, vec![f64::NAN, 0.0]), (1, vec![0.0, 0.0])];
        let f = frontier(&pool);
        assert_eq!(f.front(0).unwrap(), &BTreeSet::from([1]));
        assert_eq!(f.front(1).unwrap(), &BTreeSet::from([0, 1]));
    }

    #[test]
    fn cap_retires_off_front_then_dominated_then_lowest_average() {
        let pool = [
            (0, vec![0.5, 0.4, 0.0]),  // on front e2 only (tie with all)
            (1, vec![1.0, 0.0, 0.0]),  // owns e0
            (2, vec![0.0, 1.0, 0.0]),  // owns e1
            (3, vec![0.2, 0.2, 0.0]),  // on front e2 only
            (4, vec![0.1, 0.1, -1.0]), // on no front
        ];
        let refs: Vec<(usize, &[f64])> = pool.iter().map(|(i, s)| (*i, s.as_slice())).collect();
        // Elite: 1 (best average, lowest id). Off front: 4. Dominated: 3 (0.133), 0 (0.3).
        assert_eq!(retire_for_cap(&refs, 4, 1), vec![4]);
        assert_eq!(retire_for_cap(&refs, 3, 1), vec![4, 3]);
        assert_eq!(retire_for_cap(&refs, 2, 1), vec![4, 3, 0]);
        assert!(retire_for_cap(&refs, 5, 1).is_empty());
        // Elites are never retired: with elite 5 nothing can go.
        assert!(retire_for_cap(&refs, 2, 5).is_empty());
    }
}
