//! Parent selection: which candidate a reflective mutation starts from.

use std::collections::BTreeMap;

use rand::seq::index::sample;
use rand::Rng;

use super::config::CandidateSelection;
use super::frontier::Frontier;

/// Picks the parent of the next reflective mutation.
///
/// * `current_best`: the best average (ties: lowest id).
/// * `pareto` without a tournament: GEPA's draw. The frontier is pruned of dominated candidates,
///   then each survivor is drawn with probability proportional to the number of validation
///   examples whose front holds it.
/// * `pareto` with `tournament_size = k`: `k` distinct survivors drawn uniformly (all of them
///   when fewer), the best average wins (ties: larger coverage, then lowest id).
///
/// `None` when the frontier is empty.
pub fn select_parent<R: Rng + ?Sized>(
    strategy: CandidateSelection,
    tournament_size: Option<usize>,
    frontier: &Frontier,
    averages: &BTreeMap<usize, f64>,
    rng: &mut R,
) -> Option<usize> {
    match strategy {
        CandidateSelection::CurrentBest => best_by_average(averages),
        CandidateSelection::Pareto => {
            let pruned = frontier.without_dominated(averages);
            let coverage = pruned.coverage();
            if coverage.is_empty() {
                return None;
            }
            match tournament_size {
                None => Some(weighted_by_coverage(&coverage, rng)),
                Some(k) => Some(tournament(&coverage, averages, k, rng)),
            }
        }
    }
}

/// The id with the best average (ties: lowest id).
pub fn best_by_average(averages: &BTreeMap<usize, f64>) -> Option<usize> {
    let mut best: Option<(usize, f64)> = None;
    for (&id, &avg) in averages {
        match best {
            Some((_, b)) if avg <= b => {}
            _ => best = Some((id, avg)),
        }
    }
    best.map(|(id, _)| id)
}

fn weighted_by_coverage<R: Rng + ?Sized>(coverage: &BTreeMap<usize, usize>, rng: &mut R) -> usize {
    let total: usize = coverage.values().sum();
    let mut pick = rng.gen_range(0..total.max(1));
    for (&id, &count) in coverage {
        if pick < count {
            return id;
        }
        pick -= count;
    }
    coverage.keys().next_back().copied().unwrap_or_default()
}

fn tournament<R: Rng + ?Sized>(
    coverage: &BTreeMap<usize, usize>,
    averages: &BTreeMap<usize, f64>,
    k: usize,
    rng: &mut R,
) -> usize {
    let ids: Vec<usize> = coverage.keys().copied().collect();
    let k = k.clamp(1, ids.len());
    let drawn = sample(rng, ids.len(), k);
    let key = |id: usize| {
        (
            averages.get(&id).copied().unwrap_or(f64::NEG_INFINITY),
            coverage.get(&id).copied().unwrap_or(0),
        )
    };
    let mut winner = ids[drawn.index(0)];
    for i in drawn.iter().skip(1) {
        let id = ids[i];
        let (a, c) = key(id);
        let (wa, wc) = key(winner);
        let better = a > wa || (a == wa && (c > wc || (c == wc && id < winner)));
        if better {
            winner = id;
        }
    }
    winner
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;
    use crate::gepa::frontier::average;
    use rand::SeedableRng;
    use rand_chacha::ChaCha8Rng;

    fn setup(pool: &[(usize, Vec<f64>)]) -> (Frontier, BTreeMap<usize, f64>) {
        let f = Frontier::build(pool.iter().map(|(i, s)| (*i, s.as_slice())));
        let a = pool.iter().map(|(i, s)| (*i, average(s))).collect();
        (f, a)
    }

    #[test]
    fn current_best_takes_the_highest_average_lowest_id() {
        let (f, a) = setup(&[
            (0, vec![0.5, 0.5]),
            (1, vec![1.0, 0.0]),
            (2, vec![0.0, 0.2]),
        ]);
        let mut rng = ChaCha8Rng::seed_from_u64(0);
        assert_eq!(
            select_parent(CandidateSelection::CurrentBest, None, &f, &a, &mut rng),
            Some(0)
        );
    }

    #[test]
    fn pareto_draw_follows_coverage_of_survivors() {
        // Fronts: e0 {0}, e1 {1}, e2 {1}, e3 {1}, e4 {0,1,2}. Candidate 2 is dominated, so
        // the draw is 0 with weight 2 and 1 with weight 4.
        let pool = vec![
            (0, vec![1.0, 0.0, 0.0, 0.0, 1.0]),
            (1, vec![0.0, 1.0, 1.0, 1.0, 1.0]),
            (2, vec![0.0, 0.0, 0.0, 0.0, 1.0]),
        ];
        let (f, a) = setup(&pool);
        let mut rng = ChaCha8Rng::seed_from_u64(7);
        let mut counts = BTreeMap::new();
        for _ in 0..6000 {
            let p = select_parent(CandidateSelection::Pareto, None, &f, &a, &mut rng).unwrap();
            *counts.entry(p).or_insert(0usize) += 1;
        }
        assert!(!counts.contains_key(&2));
        let share0 = counts[&0] as f64 / 6000.0;
        assert!((share0 - 2.0 / 6.0).abs() < 0.03, "{counts:?}");
    }

    #[test]
    fn pareto_draw_is_reproducible_for_a_seed() {
        let pool = vec![(0, vec![1.0, 0.0]), (1, vec![0.0, 1.0])];
        let (f, a) = setup(&pool);
        let draw = |seed| {
            let mut rng = ChaCha8Rng::seed_from_u64(seed);
            (0..20)
                .map(|_| select_parent(CandidateSelection::Pareto, None, &f, &a, &mut rng).unwrap())
                .collect::<Vec<_>>()
        };
        assert_eq!(draw(3), draw(3));
        assert!(draw(3).contains(&0) && draw(3).contains(&1));
    }

    #[test]
    fn full_tournament_picks_best_survivor() {
        // Survivors 0 (avg 0.5), 1 (avg 0.6), 3 (avg 0.6, smaller coverage); 2 is dominated.
        let pool = vec![
            (0, vec![1.0, 0.0, 0.5, 0.5]),
            (1, vec![0.0, 1.0, 0.7, 0.7]),
            (2, vec![0.0, 1.0, 0.0, 0.0]),
            (3, vec![0.0, 0.0, 0.7, 1.7]),
        ];
        let (f, a) = setup(&pool);
        assert_eq!(f.without_dominated(&a).coverage().len(), 3);
        let mut rng = ChaCha8Rng::seed_from_u64(1);
        // Averages: 0 -> 0.5, 1 -> 0.6, 3 -> 0.6; coverage: 1 -> 2 (e1, e2), 3 -> 2 (e2, e3).
        // Tie on both: lowest id wins.
        for _ in 0..20 {
            assert_eq!(
                select_parent(CandidateSelection::Pareto, Some(10), &f, &a, &mut rng),
                Some(1)
            );
        }
        // Tournament of one is a uniform draw among survivors.
        let mut seen = std::collections::BTreeSet::new();
        for _ in 0..200 {
            seen.insert(
                select_parent(CandidateSelection::Pareto, Some(1), &f, &a, &mut rng).unwrap(),
            );
        }
        assert_eq!(seen, [0, 1, 3].into_iter().collect());
    }

    #[test]
    fn empty_frontier_gives_none() {
        let f = Frontier::default();
        let mut rng = ChaCha8Rng::seed_from_u64(0);
        let a = BTreeMap::new();
        assert_eq!(
            select_parent(CandidateSelection::Pareto, None, &f, &a, &mut rng),
            None
        );
        assert_eq!(
            select_parent(CandidateSelection::CurrentBest, None, &f, &a, &mut rng),
            None
        );
    }
}
