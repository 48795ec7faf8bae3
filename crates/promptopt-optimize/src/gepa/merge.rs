//! Merge: combine two frontier candidates that improved different predictors of a common
//! ancestor, as GEPA's merge proposer does.
//!
//! Two candidates `a < b` are drawn from the frontier's dominators; neither may descend from the
//! other. Their common ancestors qualify when the triplet was not tried before, the ancestor's
//! average is not above either candidate's, and on some predictor the ancestor equals exactly one
//! of them (so the other changed it). The ancestor is drawn weighted by its average. The merged
//! state starts from the ancestor; per predictor: if the ancestor equals exactly one candidate,
//! the other's (changed) predictor is taken; if both changed it, the better-average candidate's
//! (tie: random); if neither changed it, it stays. The merged candidate is then checked on a
//! stratified validation subsample and kept when its sum there is at least each parent's.

use std::collections::{BTreeMap, BTreeSet};

use promptopt_core::ProgramState;
use rand::distributions::{Distribution, WeightedIndex};
use rand::seq::index::sample;
use rand::Rng;
use serde::{Deserialize, Serialize};

/// How many pairs and merges are tried before giving up on merging in one iteration.
pub const MAX_MERGE_ATTEMPTS: usize = 10;

/// What merges were already tried in this run (saved with the run).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct MergeLedger {
    /// `(a, b, ancestor)` triplets already merged.
    pub triplets: BTreeSet<(usize, usize, usize)>,
    /// `(a, b, per-predictor source)` merges already built.
    pub descriptors: BTreeSet<(usize, usize, Vec<usize>)>,
}

/// A merge to evaluate.
#[derive(Debug, Clone, PartialEq)]
pub struct MergePlan {
    /// The first parent (lower id).
    pub a: usize,
    /// The second parent.
    pub b: usize,
    /// Their common ancestor.
    pub ancestor: usize,
    /// Per predictor (in name order), the candidate it was taken from.
    pub descriptor: Vec<usize>,
    /// The merged state.
    pub state: ProgramState,
}

/// The lineage facts a merge needs, by candidate id (retired candidates included).
#[derive(Debug, Clone, Copy)]
pub struct Lineage<'a> {
    /// Every candidate's state.
    pub states: &'a [ProgramState],
    /// Every candidate's parents.
    pub parents: &'a [Vec<usize>],
    /// Every candidate's average validation score.
    pub averages: &'a BTreeMap<usize, f64>,
}

impl Lineage<'_> {
    fn avg(&self, id: usize) -> f64 {
        self.averages.get(&id).copied().unwrap_or(f64::NEG_INFINITY)
    }

    /// Every ancestor of `node` (parents, their parents, ...), without `node` itself.
    pub fn ancestors(&self, node: usize) -> BTreeSet<usize> {
        let mut found = BTreeSet::new();
        let mut stack = vec![node];
        while let Some(n) = stack.pop() {
            for &p in self.parents.get(n).map(Vec::as_slice).unwrap_or(&[]) {
                if found.insert(p) {
                    stack.push(p);
                }
            }
        }
        found
    }

    /// Whether some predictor of the ancestor equals exactly one of `a`, `b` (which differ on it).
    pub fn has_desirable_predictor(&self, ancestor: usize, a: usize, b: usize) -> bool {
        let (Some(anc), Some(sa), Some(sb)) = (
            self.states.get(ancestor),
            self.states.get(a),
            self.states.get(b),
        ) else {
            return false;
        };
        anc.predictors.iter().any(|(name, p)| {
            let pa = sa.predictors.get(name);
            let pb = sb.predictors.get(name);
            (pa == Some(p) || pb == Some(p)) && pa != pb
        })
    }
}

/// Draws a `(a, b, ancestor)` triplet, or `None` after [`MAX_MERGE_ATTEMPTS`] draws.
pub fn find_triplet<R: Rng + ?Sized>(
    lineage: &Lineage<'_>,
    merge_candidates: &[usize],
    ledger: &MergeLedger,
    rng: &mut R,
) -> Option<(usize, usize, usize)> {
    for _ in 0..MAX_MERGE_ATTEMPTS {
        if merge_candidates.len() < 2 {
            return None;
        }
        let pair = sample(rng, merge_candidates.len(), 2);
        let (x, y) = (
            merge_candidates[pair.index(0)],
            merge_candidates[pair.index(1)],
        );
        let (a, b) = if x < y { (x, y) } else { (y, x) };
        if a == b {
            continue;
        }
        let anc_a = lineage.ancestors(a);
        let anc_b = lineage.ancestors(b);
        if anc_a.contains(&b) || anc_b.contains(&a) {
            continue;
        }
        let common: Vec<usize> = anc_a
            .intersection(&anc_b)
            .copied()
            .filter(|&c| {
                !ledger.triplets.contains(&(a, b, c))
                    && lineage.avg(c) <= lineage.avg(a)
                    && lineage.avg(c) <= lineage.avg(b)
                    && lineage.has_desirable_predictor(c, a, b)
            })
            .collect();
        if common.is_empty() {
            continue;
        }
        let weights: Vec<f64> = common.iter().map(|&c| lineage.avg(c).max(0.0)).collect();
        let pick = match WeightedIndex::new(&weights) {
            Ok(dist) => dist.sample(rng),
            Err(_) => rng.gen_range(0..common.len()),
        };
        return Some((a, b, common[pick]));
    }
    None
}

/// The merged state of a triplet and, per predictor in name order, where it came from.
pub fn merge_states<R: Rng + ?Sized>(
    lineage: &Lineage<'_>,
    a: usize,
    b: usize,
    ancestor: usize,
    rng: &mut R,
) -> Option<(ProgramState, Vec<usize>)> {
    let anc = lineage.states.get(ancestor)?;
    let sa = lineage.states.get(a)?;
    let sb = lineage.states.get(b)?;
    let mut merged = anc.clone();
    let mut descriptor = Vec::with_capacity(anc.predictors.len());
    for (name, p) in &anc.predictors {
        let pa = sa.predictors.get(name);
        let pb = sb.predictors.get(name);
        let source = if (pa == Some(p) || pb == Some(p)) && pa != pb {
            if pa == Some(p) {
                b
            } else {
                a
            }
        } else if pa != Some(p) && pb != Some(p) {
            let (va, vb) = (lineage.avg(a), lineage.avg(b));
            if va > vb {
                a
            } else if vb > va {
                b
            } else if rng.gen_bool(0.5) {
                a
            } else {
                b
            }
        } else {
            a
        };
        let from = if source == a { pa } else { pb };
        if let (Some(from), Some(slot)) = (from, merged.predictors.get_mut(name)) {
            *slot = from.clone();
        }
        descriptor.push(source);
    }
    Some((merged, descriptor))
}

/// Finds a new merge: a triplet, then its merged state, skipping merges already built.
/// Records the triplet and descriptor in the ledger.
pub fn plan_merge<R: Rng + ?Sized>(
    lineage: &Lineage<'_>,
    merge_candidates: &[usize],
    ledger: &mut MergeLedger,
    rng: &mut R,
) -> Option<MergePlan> {
    if lineage.states.len() < 3 {
        return None;
    }
    for _ in 0..MAX_MERGE_ATTEMPTS {
        let Some((a, b, ancestor)) = find_triplet(lineage, merge_candidates, ledger, rng) else {
            continue;
        };
        let Some((state, descriptor)) = merge_states(lineage, a, b, ancestor, rng) else {
            continue;
        };
        ledger.triplets.insert((a, b, ancestor));
        if !ledger.descriptors.insert((a, b, descriptor.clone())) {
            continue;
        }
        return Some(MergePlan {
            a,
            b,
            ancestor,
            descriptor,
            state,
        });
    }
    None
}

/// The validation indices a merged candidate is checked on: up to `ceil(n/3)` where `a` beats
/// `b`, then where `b` beats `a`, then ties, each drawn at random, then random others to reach
/// `n` (capped at the validation set size; no index twice).
pub fn merge_subsample<R: Rng + ?Sized>(
    scores_a: &[f64],
    scores_b: &[f64],
    n: usize,
    rng: &mut R,
) -> Vec<usize> {
    let len = scores_a.len().min(scores_b.len());
    let n = n.min(len);
    let a_wins: Vec<usize> = (0..len).filter(|&k| scores_a[k] > scores_b[k]).collect();
    let b_wins: Vec<usize> = (0..len).filter(|&k| scores_b[k] > scores_a[k]).collect();
    let ties: Vec<usize> = (0..len)
        .filter(|&k| {
            scores_a[k].partial_cmp(&scores_b[k]) != Some(std::cmp::Ordering::Greater)
                && scores_b[k].partial_cmp(&scores_a[k]) != Some(std::cmp::Ordering::Greater)
        })
        .collect();
    let per_bucket = n.div_ceil(3).max(1);
    let mut chosen: Vec<usize> = Vec::with_capacity(n);
    for bucket in [&a_wins, &b_wins, &ties] {
        if chosen.len() >= n {
            break;
        }
        let take = bucket.len().min(per_bucket).min(n - chosen.len());
        chosen.extend(sample(rng, bucket.len(), take).iter().map(|i| bucket[i]));
    }
    let unused: Vec<usize> = (0..len).filter(|k| !chosen.contains(k)).collect();
    let missing = n - chosen.len();
    chosen.extend(sample(rng, unused.len(), missing).iter().map(|i| unused[i]));
    chosen
}

/// Whether a merged candidate is kept: its sum on the subsample is at least each parent's.
pub fn accept_merge(merged: &[f64], parent_a: &[f64], parent_b: &[f64]) -> bool {
    let sum = |s: &[f64]| s.iter().sum::<f64>();
    sum(merged) >= sum(parent_a).max(sum(parent_b))
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;
    use promptopt_core::PredictorState;
    use rand::SeedableRng;
    use rand_chacha::ChaCha8Rng;

    fn state(p: &str, q: &str) -> ProgramState {
        let mut s = ProgramState::single("p", PredictorState::new(p));
        s.predictors.insert("q".into(), PredictorState::new(q));
        s
    }

    /// 0 = seed (P0, Q0); 1 = child of 0 changing p (P1, Q0); 2 = child of 0 changing q
    /// (P0, Q2); 3 = child of 1 changing q (P1, Q3).
    fn lineage_fixture() -> (Vec<ProgramState>, Vec<Vec<usize>>, BTreeMap<usize, f64>) {
        let states = vec![
            state("P0", "Q0"),
            state("P1", "Q0"),
            state("P0", "Q2"),
            state("P1", "Q3"),
        ];
        let parents = vec![vec![], vec![0], vec![0], vec![1]];
        let averages = BTreeMap::from([(0, 0.4), (1, 0.6), (2, 0.5), (3, 0.7)]);
        (states, parents, averages)
    }

    #[test]
    fn triplet_takes_each_predictor_from_the_candidate_that_changed_it() {
        let (states, parents, averages) = lineage_fixture();
        let lineage = Lineage {
            states: &states,
            parents: &parents,
            averages: &averages,
        };
        assert_eq!(lineage.ancestors(3), BTreeSet::from([0, 1]));
        let mut ledger = MergeLedger::default();
        let mut rng = ChaCha8Rng::seed_from_u64(0);
        let plan = plan_merge(&lineage, &[1, 2], &mut ledger, &mut rng).unwrap();
        assert_eq!((plan.a, plan.b, plan.ancestor), (1, 2, 0));
        // p: ancestor P0 equals 2's, so 1's P1; q: ancestor Q0 equals 1's, so 2's Q2.
        assert_eq!(plan.state, state("P1", "Q2"));
        assert_eq!(plan.descriptor, vec![1, 2]);
        // The same merge is not built twice.
        assert_eq!(plan_merge(&lineage, &[1, 2], &mut ledger, &mut rng), None);
    }

    #[test]
    fn descendants_are_not_merged_with_their_ancestors() {
        let (states, parents, averages) = lineage_fixture();
        let lineage = Lineage {
            states: &states,
            parents: &parents,
            averages: &averages,
        };
        let mut rng = ChaCha8Rng::seed_from_u64(0);
        // 1 is 3's parent: never a pair.
        assert_eq!(
            find_triplet(&lineage, &[1, 3], &MergeLedger::default(), &mut rng),
            None
        );
    }

    #[test]
    fn ancestor_scoring_above_a_parent_is_rejected() {
        let (states, parents, mut averages) = lineage_fixture();
        averages.insert(0, 0.55); // above 2's 0.5
        let lineage = Lineage {
            states: &states,
            parents: &parents,
            averages: &averages,
        };
        let mut rng = ChaCha8Rng::seed_from_u64(0);
        assert_eq!(
            find_triplet(&lineage, &[1, 2], &MergeLedger::default(), &mut rng),
            None
        );
    }

    #[test]
    fn both_changed_takes_the_better_average() {
        // 2 vs 3 with ancestor 0: p: P0 == 2's, so 3's P1; q: Q2 vs Q3 both changed, 3 is better.
        let (states, parents, averages) = lineage_fixture();
        let lineage = Lineage {
            states: &states,
            parents: &parents,
            averages: &averages,
        };
        let mut rng = ChaCha8Rng::seed_from_u64(0);
        let (merged, desc) = merge_states(&lineage, 2, 3, 0, &mut rng).unwrap();
        assert_eq!(merged, state("P1", "Q3"));
        assert_eq!(desc, vec![3, 3]);
        // 0 is the only common ancestor of 2 and 3; p differs from it in exactly one: qualifies.
        let t = find_triplet(&lineage, &[2, 3], &MergeLedger::default(), &mut rng);
        assert_eq!(t, Some((2, 3, 0)));
    }

    #[test]
    fn subsample_is_stratified() {
        let a = [1.0, 1.0, 1.0, 0.0, 0.0, 0.0, 0.5, 0.5];
        let b = [0.0, 0.0, 0.0, 1.0, 1.0, 1.0, 0.5, 0.5];
        let mut rng = ChaCha8Rng::seed_from_u64(5);
        let s = merge_subsample(&a, &b, 5, &mut rng);
        assert_eq!(s.len(), 5);
        assert_eq!(s.iter().filter(|&&k| k < 3).count(), 2);
        assert_eq!(s.iter().filter(|&&k| (3..6).contains(&k)).count(), 2);
        assert_eq!(s.iter().filter(|&&k| k >= 6).count(), 1);
        let distinct: BTreeSet<usize> = s.iter().copied().collect();
        assert_eq!(distinct.len(), 5);
        // Only a-wins: fills from the rest; never more than the set.
        let s = merge_subsample(&[1.0, 1.0, 1.0, 1.0], &[0.0; 4], 9, &mut rng);
        assert_eq!(
            s.iter().copied().collect::<BTreeSet<_>>(),
            BTreeSet::from([0, 1, 2, 3])
        );
    }

    #[test]
    fn merge_acceptance_is_at_least_both() {
        assert!(accept_merge(&[1.0, 1.0], &[1.0, 0.0], &[0.0, 1.0]));
        assert!(accept_merge(&[1.0, 0.0], &[1.0, 0.0], &[0.0, 1.0]));
        assert!(!accept_merge(&[0.0, 0.5], &[1.0, 0.0], &[0.0, 0.0]));
    }
}
