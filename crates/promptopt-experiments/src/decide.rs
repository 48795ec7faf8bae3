//! An experiment's status from its variants' running sums: per-variant figures, each treatment
//! against the control (fixed-horizon and always-valid sequential tests), the sample-ratio
//! check, and the decision.
//!
//! A winner is declared only when every variant has `minimum_sample_size` outcomes, the split
//! shows no sample-ratio mismatch, and the always-valid sequential test (Holm-corrected across
//! treatments when there are several) is significant at `significance_level`. The fixed-horizon
//! test is reported for reference: it is valid only when read once, at a sample size fixed in
//! advance.

use indexmap::IndexMap;
use serde::Serialize;

use crate::stats::{
    holm, normal_upper_quantile, sequential, srm_check, t_upper_quantile, tau2_for_effect,
    two_proportion_z, welch_t, BinarySummary, ContinuousSummary, SequentialResult, SrmResult,
    TestResult,
};
use crate::{Experiment, ExperimentState, VariantStats};

/// One variant's figures.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct VariantStatus {
    /// The variant.
    pub name: String,
    /// The model version it serves.
    pub model: String,
    /// Its share of the traffic (normalized weight).
    pub share: f64,
    /// Units assigned so far.
    pub units: u64,
    /// Predictions with an outcome.
    pub outcomes: u64,
    /// The mean outcome (the success rate of a binary metric).
    pub mean: Option<f64>,
    /// The `1 − significance_level` confidence interval of the mean, `[low, high]` (Wilson's
    /// for a binary metric, Student's t otherwise); for reading, not for deciding: decisions
    /// rest on the sequential test of each comparison.
    pub interval: Option<[f64; 2]>,
}

/// One treatment against the control.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Comparison {
    /// The treatment variant.
    pub variant: String,
    /// The fixed-horizon test (z for a binary metric, Welch's t otherwise), for reference.
    pub fixed: Option<TestResult>,
    /// The always-valid sequential test: what decisions are made on.
    pub sequential: Option<SequentialResult>,
    /// Significant after Holm's correction across treatments.
    pub significant: bool,
}

/// What the figures say.
#[derive(Debug, Clone, PartialEq, Serialize)]
#[serde(tag = "outcome", rename_all = "snake_case")]
pub enum Decision {
    /// Not decided: why.
    Continue {
        /// Why not yet.
        reason: String,
    },
    /// A variant is significantly better than the others compared with it.
    Winner {
        /// The winning variant.
        variant: String,
        /// Its difference from the control (the control's largest loss when the control wins).
        difference: f64,
    },
    /// The experiment ended without a winner.
    Ended {
        /// How.
        reason: String,
    },
}

impl Decision {
    /// The winning variant, if there is one.
    pub fn winner(&self) -> Option<&str> {
        match self {
            Decision::Winner { variant, .. } => Some(variant),
            _ => None,
        }
    }
}

/// An experiment's status.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct ExperimentStatus {
    /// The metric outcomes are scored with.
    pub metric: String,
    /// `binary` (every outcome 0 or 1: two-proportion tests) or `continuous` (Welch).
    pub kind: &'static str,
    /// The control variant.
    pub control: String,
    /// Outcomes each variant needs before a decision.
    pub minimum_sample_size: u64,
    /// The level of the tests.
    pub significance_level: f64,
    /// Each variant's figures, in the definition's order.
    pub variants: Vec<VariantStatus>,
    /// Each treatment against the control.
    pub comparisons: Vec<Comparison>,
    /// The sample-ratio-mismatch check of the units' split.
    pub srm: Option<SrmResult>,
    /// The decision.
    pub decision: Decision,
    /// The running minimum of each comparison's always-valid p-value (stored with the
    /// experiment between looks).
    pub sequential_p: IndexMap<String, f64>,
}

enum Arm {
    Binary(BinarySummary),
    Continuous(ContinuousSummary),
}

fn arm(stats: &VariantStats, binary: bool) -> Option<Arm> {
    if binary {
        let successes = stats.score_sum.round().max(0.0) as u64;
        BinarySummary::new(stats.outcomes, successes.min(stats.outcomes)).map(Arm::Binary)
    } else {
        let n = stats.outcomes;
        if n < 2 {
            return None;
        }
        let nf = n as f64;
        let mean = stats.score_sum / nf;
        let variance = ((stats.score_sq_sum - nf * mean * mean) / (nf - 1.0)).max(0.0);
        ContinuousSummary::new(n, mean, variance).map(Arm::Continuous)
    }
}

fn compare(
    control: &Arm,
    treatment: &Arm,
    alpha: f64,
    tau2: f64,
    previous: Option<f64>,
) -> (Option<TestResult>, Option<SequentialResult>) {
    match (control, treatment) {
        (Arm::Binary(c), Arm::Binary(t)) => (
            two_proportion_z(c, t, alpha),
            sequential(c, t, alpha, tau2, previous),
        ),
        (Arm::Continuous(c), Arm::Continuous(t)) => (
            welch_t(c, t, alpha),
            sequential(c, t, alpha, tau2, previous),
        ),
        _ => (None, None),
    }
}

/// The status of `experiment` given its variants' sums.
pub fn status(experiment: &Experiment, stats: &[VariantStats]) -> ExperimentStatus {
    let spec = &experiment.spec;
    let alpha = spec.significance_level;
    let tau2 = tau2_for_effect(spec.minimum_detectable_effect).unwrap_or(0.0025);
    let control = spec.control().to_string();
    let of = |name: &str| -> VariantStats {
        stats
            .iter()
            .find(|s| s.variant == name)
            .cloned()
            .unwrap_or_default()
    };
    let weights = spec.weights();
    let total: f64 = weights.iter().map(|(_, w)| w.max(0.0)).sum();
    let binary = stats.iter().all(|s| s.binary_outcomes == s.outcomes);
    let variants: Vec<VariantStatus> = weights
        .iter()
        .map(|(name, w)| {
            let s = of(name);
            VariantStatus {
                name: name.to_string(),
                model: spec.variants.get(*name).cloned().unwrap_or_default(),
                share: if total > 0.0 { w.max(0.0) / total } else { 0.0 },
                units: s.units,
                outcomes: s.outcomes,
                mean: (s.outcomes > 0).then(|| s.score_sum / s.outcomes as f64),
                interval: interval(&s, binary, alpha),
            }
        })
        .collect();

    // Each treatment against the control; the sequential p-values keep their running minimum.
    let control_arm = arm(&of(&control), binary);
    let mut comparisons = Vec::new();
    let mut sequential_p = experiment.sequential_p.clone();
    for (name, _) in weights.iter().filter(|(n, _)| *n != control) {
        let treatment = arm(&of(name), binary);
        let previous = experiment.sequential_p.get(*name).copied();
        let (fixed, seq) = match (&control_arm, &treatment) {
            (Some(c), Some(t)) => compare(c, t, alpha, tau2, previous),
            _ => (None, None),
        };
        if let Some(s) = &seq {
            sequential_p.insert(name.to_string(), s.p_value);
        }
        comparisons.push(Comparison {
            variant: name.to_string(),
            fixed,
            sequential: seq,
            significant: false,
        });
    }
    let p_values: Vec<f64> = comparisons
        .iter()
        .map(|c| {
            c.sequential
                .map(|s| s.p_value)
                .or_else(|| sequential_p.get(&c.variant).copied())
                .unwrap_or(1.0)
        })
        .collect();
    for (c, rejected) in comparisons.iter_mut().zip(holm(&p_values, alpha)) {
        c.significant = rejected;
    }

    let live: Vec<(u64, f64)> = weights
        .iter()
        .filter(|(_, w)| *w > 0.0)
        .map(|(name, w)| (of(name).units, *w))
        .collect();
    let counts: Vec<u64> = live.iter().map(|(u, _)| *u).collect();
    let shares: Vec<f64> = live.iter().map(|(_, w)| *w).collect();
    let srm = srm_check(&counts, &shares);

    let decision = match experiment.state {
        ExperimentState::Concluded => match &experiment.winner {
            Some(w) => Decision::Winner {
                variant: w.clone(),
                difference: comparisons
                    .iter()
                    .find(|c| &c.variant == w)
                    .and_then(|c| c.sequential.map(|s| s.difference))
                    .unwrap_or(0.0),
            },
            None => Decision::Ended {
                reason: "concluded without a winner".into(),
            },
        },
        ExperimentState::Stopped => Decision::Ended {
            reason: "stopped without a winner".into(),
        },
        ExperimentState::Draft => Decision::Continue {
            reason: "not started".into(),
        },
        ExperimentState::Running => decide(
            spec.minimum_sample_size,
            &variants,
            &comparisons,
            srm.as_ref(),
            &control,
        ),
    };
    ExperimentStatus {
        metric: spec.success_metric.clone(),
        kind: if binary { "binary" } else { "continuous" },
        control,
        minimum_sample_size: spec.minimum_sample_size,
        significance_level: alpha,
        variants,
        comparisons,
        srm,
        decision,
        sequential_p,
    }
}

/// The `1 − alpha` interval of a variant's mean: Wilson's score interval for a binary metric,
/// Student's t interval otherwise (needs two outcomes).
fn interval(stats: &VariantStats, binary: bool, alpha: f64) -> Option<[f64; 2]> {
    let n = stats.outcomes as f64;
    if stats.outcomes == 0 {
        return None;
    }
    let mean = stats.score_sum / n;
    if binary {
        let z = normal_upper_quantile(alpha / 2.0)?;
        let z2 = z * z;
        let centre = (mean + z2 / (2.0 * n)) / (1.0 + z2 / n);
        let half = z / (1.0 + z2 / n) * (mean * (1.0 - mean) / n + z2 / (4.0 * n * n)).sqrt();
        return Some([(centre - half).max(0.0), (centre + half).min(1.0)]);
    }
    if stats.outcomes < 2 {
        return None;
    }
    let variance = ((stats.score_sq_sum - n * mean * mean) / (n - 1.0)).max(0.0);
    let t = t_upper_quantile(alpha / 2.0, n - 1.0)?;
    let half = t * (variance / n).sqrt();
    Some([mean - half, mean + half])
}

/// One look of the evidence over time: after `outcomes` outcomes (all variants together), each
/// treatment's always-valid p-value against the control.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct EvidencePoint {
    /// Outcomes recorded so far, all variants together.
    pub outcomes: u64,
    /// When the last of them was recorded (seconds since the epoch).
    pub at: f64,
    /// Each treatment's running always-valid p-value (absent before it can be computed).
    pub p_values: IndexMap<String, f64>,
}

/// The sequential evidence of `experiment` as it grew: its outcomes, oldest first, as
/// `(variant, score, at)`, replayed in at most `looks` equal steps, each step a look of the
/// same test [`status`] runs (the running minimum carried from look to look).
pub fn evidence_history(
    experiment: &Experiment,
    outcomes: &[(String, f64, f64)],
    looks: usize,
) -> Vec<EvidencePoint> {
    if outcomes.is_empty() || looks == 0 {
        return Vec::new();
    }
    let step = outcomes.len().div_ceil(looks).max(1);
    let mut replay = experiment.clone();
    replay.state = ExperimentState::Running;
    replay.sequential_p = IndexMap::new();
    let mut sums: IndexMap<String, VariantStats> = IndexMap::new();
    let mut points = Vec::new();
    for (i, (variant, score, at)) in outcomes.iter().enumerate() {
        let s = sums.entry(variant.clone()).or_insert_with(|| VariantStats {
            variant: variant.clone(),
            ..VariantStats::default()
        });
        s.units += 1;
        s.outcomes += 1;
        s.score_sum += score;
        s.score_sq_sum += score * score;
        if *score == 0.0 || *score == 1.0 {
            s.binary_outcomes += 1;
        }
        if (i + 1) % step == 0 || i + 1 == outcomes.len() {
            let stats: Vec<VariantStats> = sums.values().cloned().collect();
            let look = status(&replay, &stats);
            replay.sequential_p = look.sequential_p.clone();
            points.push(EvidencePoint {
                outcomes: (i + 1) as u64,
                at: *at,
                p_values: look.sequential_p,
            });
        }
    }
    points
}

fn decide(
    minimum: u64,
    variants: &[VariantStatus],
    comparisons: &[Comparison],
    srm: Option<&SrmResult>,
    control: &str,
) -> Decision {
    let fewest = variants.iter().map(|v| v.outcomes).min().unwrap_or(0);
    if fewest < minimum {
        return Decision::Continue {
            reason: format!("waiting for {minimum} outcomes per variant (the fewest has {fewest})"),
        };
    }
    if srm.is_some_and(|s| s.flagged) {
        return Decision::Continue {
            reason: "the units' split does not match the traffic split (sample-ratio mismatch): check the assignment before trusting any result".into(),
        };
    }
    let better = comparisons
        .iter()
        .filter(|c| c.significant)
        .filter_map(|c| c.sequential.map(|s| (c, s.difference)))
        .filter(|(_, d)| *d > 0.0)
        .max_by(|a, b| a.1.total_cmp(&b.1));
    if let Some((c, difference)) = better {
        return Decision::Winner {
            variant: c.variant.clone(),
            difference,
        };
    }
    let control_wins = !comparisons.is_empty()
        && comparisons
            .iter()
            .all(|c| c.significant && c.sequential.is_some_and(|s| s.difference < 0.0));
    if control_wins {
        let difference = comparisons
            .iter()
            .filter_map(|c| c.sequential.map(|s| -s.difference))
            .fold(f64::INFINITY, f64::min);
        return Decision::Winner {
            variant: control.to_string(),
            difference,
        };
    }
    Decision::Continue {
        reason: "no significant difference yet".into(),
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    fn experiment(yaml: &str) -> Experiment {
        let spec: crate::ExperimentSpec = serde_yaml::from_str(yaml).unwrap();
        Experiment {
            id: "exp-1".into(),
            model: spec.validate().unwrap(),
            spec,
            state: ExperimentState::Running,
            salt: "s".into(),
            created_at: 0.0,
            started_at: Some(0.0),
            ended_at: None,
            winner: None,
            promoted_version: None,
            sequential_p: IndexMap::new(),
        }
    }

    fn sums(variant: &str, units: u64, outcomes: u64, successes: u64) -> VariantStats {
        VariantStats {
            variant: variant.into(),
            units,
            outcomes,
            score_sum: successes as f64,
            score_sq_sum: successes as f64,
            binary_outcomes: outcomes,
        }
    }

    const AB: &str =
        "name: t\nvariants: {control: m@1.0.0, treatment: m@2.0.0}\nminimum_sample_size: 200\n";

    #[test]
    fn intervals_cover_the_mean_and_narrow_with_more_outcomes() {
        let e = experiment(AB);
        let small = status(
            &e,
            &[sums("control", 20, 20, 14), sums("treatment", 20, 20, 10)],
        );
        let large = status(
            &e,
            &[
                sums("control", 2000, 2000, 1400),
                sums("treatment", 20, 20, 10),
            ],
        );
        let [lo, hi] = small.variants[0].interval.unwrap();
        assert!(lo < 0.7 && 0.7 < hi, "{lo} {hi}");
        // Wilson's 95% interval for 14/20: [0.481, 0.855].
        assert!(
            (lo - 0.4810).abs() < 1e-3 && (hi - 0.8545).abs() < 1e-3,
            "{lo} {hi}"
        );
        let [lo2, hi2] = large.variants[0].interval.unwrap();
        assert!(hi2 - lo2 < (hi - lo) / 5.0, "{lo2} {hi2}");
        let none = status(&e, &[]);
        assert_eq!(none.variants[0].interval, None);
        // A continuous metric: Student's t with n − 1 degrees of freedom.
        let continuous = VariantStats {
            variant: "control".into(),
            units: 4,
            outcomes: 4,
            score_sum: 0.2 + 0.4 + 0.6 + 0.8,
            score_sq_sum: 0.04 + 0.16 + 0.36 + 0.64,
            binary_outcomes: 0,
        };
        let [lo, hi] = status(&e, &[continuous]).variants[0].interval.unwrap();
        // mean 0.5, sd 0.2582, t(0.975, 3) = 3.1824: 0.5 ± 0.4108.
        assert!(
            (lo - 0.0892).abs() < 1e-3 && (hi - 0.9108).abs() < 1e-3,
            "{lo} {hi}"
        );
    }

    #[test]
    fn evidence_history_replays_the_looks_and_never_rises() {
        let e = experiment(AB);
        let mut outcomes = Vec::new();
        for i in 0..400u32 {
            let variant = if i % 2 == 0 { "control" } else { "treatment" };
            // control succeeds 1 time in 2, treatment 4 times in 5.
            let success = if i % 2 == 0 { i % 4 == 0 } else { i % 5 != 1 };
            outcomes.push((
                variant.to_string(),
                f64::from(u8::from(success)),
                f64::from(i),
            ));
        }
        let points = evidence_history(&e, &outcomes, 20);
        assert_eq!(points.len(), 20);
        assert_eq!(points.last().unwrap().outcomes, 400);
        assert_eq!(points.last().unwrap().at, 399.0);
        let p: Vec<f64> = points
            .iter()
            .filter_map(|pt| pt.p_values.get("treatment").copied())
            .collect();
        assert!(p.windows(2).all(|w| w[1] <= w[0]), "{p:?}");
        assert!(*p.last().unwrap() < 0.05, "{p:?}");
        // The last look agrees with the status of the same sums.
        let control = outcomes.iter().filter(|o| o.0 == "control");
        let treatment = outcomes.iter().filter(|o| o.0 == "treatment");
        let wins =
            |it: &mut dyn Iterator<Item = &(String, f64, f64)>| it.map(|o| o.1).sum::<f64>() as u64;
        let direct = status(
            &e,
            &[
                sums("control", 200, 200, wins(&mut control.clone())),
                sums("treatment", 200, 200, wins(&mut treatment.clone())),
            ],
        );
        assert!(direct.sequential_p["treatment"] >= *p.last().unwrap());
        assert!(evidence_history(&e, &[], 20).is_empty());
    }

    #[test]
    fn a_clear_lift_past_the_minimum_wins() {
        let e = experiment(AB);
        let s = status(
            &e,
            &[
                sums("control", 1000, 1000, 700),
                sums("treatment", 1000, 1000, 800),
            ],
        );
        assert_eq!(s.kind, "binary");
        assert_eq!(s.decision.winner(), Some("treatment"), "{s:#?}");
        assert!(s.comparisons[0].fixed.unwrap().significant);
        assert!(s.sequential_p["treatment"] < 0.05);
    }

    #[test]
    fn no_winner_before_the_minimum_or_with_a_broken_split() {
        let e = experiment(AB);
        let s = status(
            &e,
            &[
                sums("control", 150, 150, 60),
                sums("treatment", 150, 150, 140),
            ],
        );
        assert!(
            matches!(&s.decision, Decision::Continue { reason } if reason.contains("waiting")),
            "{s:?}"
        );
        // 50/50 split configured, 1,000 vs 1,300 units: a sample-ratio mismatch.
        let s = status(
            &e,
            &[
                sums("control", 1000, 1000, 700),
                sums("treatment", 1300, 1000, 800),
            ],
        );
        assert!(s.srm.unwrap().flagged);
        assert!(
            matches!(&s.decision, Decision::Continue { reason } if reason.contains("sample-ratio"))
        );
    }

    #[test]
    fn equal_variants_do_not_win_and_the_control_can() {
        let e = experiment(AB);
        let s = status(
            &e,
            &[
                sums("control", 1000, 1000, 700),
                sums("treatment", 1000, 1000, 705),
            ],
        );
        assert!(s.decision.winner().is_none(), "{s:?}");
        let s = status(
            &e,
            &[
                sums("control", 1000, 1000, 800),
                sums("treatment", 1000, 1000, 650),
            ],
        );
        assert_eq!(s.decision.winner(), Some("control"));
    }

    #[test]
    fn continuous_outcomes_use_welch_and_the_running_minimum_is_kept() {
        let mut e = experiment(AB);
        e.sequential_p.insert("treatment".into(), 0.001);
        let c = VariantStats {
            variant: "control".into(),
            units: 300,
            outcomes: 300,
            score_sum: 300.0 * 0.5,
            score_sq_sum: 300.0 * (0.25 + 0.04),
            binary_outcomes: 10,
        };
        let t = VariantStats {
            variant: "treatment".into(),
            score_sum: 300.0 * 0.51,
            score_sq_sum: 300.0 * (0.51 * 0.51 + 0.04),
            ..c.clone()
        };
        let s = status(&e, &[c, t]);
        assert_eq!(s.kind, "continuous");
        assert!(s.comparisons[0].fixed.unwrap().degrees_of_freedom.is_some());
        assert_eq!(s.sequential_p["treatment"], 0.001);
    }
}
