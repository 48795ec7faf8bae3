//! Error rates of the experiment statistics, by simulation.
//!
//! Binary-metric experiments whose every random choice comes from a seeded ChaCha8 generator,
//! looked at after every 100 units per arm up to 2,000 units per arm, stopping at the first
//! significant look (alpha = 0.05). 400 experiments per scenario keep the test within a few
//! seconds of a debug build; a rate near 0.05 then has a standard error of about 0.011, and the
//! bounds below sit several standard errors away from the figures the procedures achieve, yet
//! each one fails for the mistake it guards against (a sequential test that is no better than
//! peeking, a z-test that is not calibrated, a sequential test without power, an interval that
//! is too narrow). `examples/ab_simulation.rs` runs the full benchmark.

#![allow(clippy::unwrap_used)]

use promptopt_experiments::stats::{
    tau2_for_effect, two_proportion_z, BinarySummary, SequentialState,
};
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;

const TRIALS: usize = 400;
const LOOK_EVERY: u64 = 100;
const HORIZON: u64 = 2_000;
const ALPHA: f64 = 0.05;
const BASE_RATE: f64 = 0.70;
const LIFT: f64 = 0.05;

/// One simulated experiment.
#[derive(Default)]
struct Trial {
    /// The sequential test was significant at some look.
    sequential: bool,
    /// Units per arm at the sequential test's first significant look.
    sequential_units: Option<u64>,
    /// The z-test was significant at some look (peeking).
    peeking_z: bool,
    /// The z-test was significant at the horizon, its only valid look.
    final_z: bool,
    /// The always-valid interval excluded the true difference at some look.
    interval_missed: bool,
}

fn run_trial(rng: &mut ChaCha8Rng, treatment_rate: f64) -> Trial {
    let truth = treatment_rate - BASE_RATE;
    let mut control = BinarySummary::default();
    let mut treatment = BinarySummary::default();
    let mut state = SequentialState::new(ALPHA, tau2_for_effect(LIFT).unwrap()).unwrap();
    let mut trial = Trial::default();
    let mut units = 0;
    while units < HORIZON {
        for _ in 0..LOOK_EVERY {
            control.add(rng.gen_bool(BASE_RATE));
            treatment.add(rng.gen_bool(treatment_rate));
        }
        units += LOOK_EVERY;
        let sequential = state.update(&control, &treatment).unwrap();
        if sequential.significant && !trial.sequential {
            trial.sequential = true;
            trial.sequential_units = Some(units);
        }
        if !(sequential.ci_low <= truth && truth <= sequential.ci_high) {
            trial.interval_missed = true;
        }
        let z = two_proportion_z(&control, &treatment, ALPHA).unwrap();
        trial.peeking_z |= z.significant;
        trial.final_z = z.significant && units == HORIZON;
    }
    trial
}

fn scenario(seed: u64, treatment_rate: f64) -> Vec<Trial> {
    let mut rng = ChaCha8Rng::seed_from_u64(seed);
    (0..TRIALS)
        .map(|_| run_trial(&mut rng, treatment_rate))
        .collect()
}

fn rate(trials: &[Trial], f: impl Fn(&Trial) -> bool) -> f64 {
    trials.iter().filter(|t| f(t)).count() as f64 / trials.len() as f64
}

#[test]
fn a_a_experiments_with_peeking() {
    let trials = scenario(11, BASE_RATE);
    let sequential = rate(&trials, |t| t.sequential);
    let peeking = rate(&trials, |t| t.peeking_z);
    let fixed = rate(&trials, |t| t.final_z);
    let missed = rate(&trials, |t| t.interval_missed);
    let figures = format!(
        "sequential {sequential}, peeking z {peeking}, fixed-horizon z {fixed}, \
         interval missed {missed}"
    );
    // The always-valid test keeps its level however often it is read.
    assert!(sequential <= ALPHA + 0.03, "{figures}");
    // The z-test read at every look does not: that is the point of the sequential test.
    assert!(peeking > 0.10, "{figures}");
    // Read once, the z-test is calibrated.
    assert!((ALPHA - 0.03..=ALPHA + 0.03).contains(&fixed), "{figures}");
    // Under A/A the interval misses the truth (0) exactly when the test rejects.
    assert_eq!(missed, sequential, "{figures}");
}

#[test]
fn a_b_experiments_with_a_five_point_lift() {
    let trials = scenario(12, BASE_RATE + LIFT);
    let power = rate(&trials, |t| t.sequential);
    let peeking = rate(&trials, |t| t.peeking_z);
    let fixed = rate(&trials, |t| t.final_z);
    let missed = rate(&trials, |t| t.interval_missed);
    let mut units: Vec<u64> = trials.iter().filter_map(|t| t.sequential_units).collect();
    units.sort_unstable();
    let median = units.get(units.len() / 2).copied().unwrap_or(u64::MAX);
    let figures = format!(
        "sequential power {power}, peeking z {peeking}, fixed-horizon z {fixed}, \
         interval missed {missed}, median units {median}"
    );
    // At 2,000 units per arm a 5-point lift on a 70% base has z ≈ 3.5 on average.
    assert!(power > 0.6, "{figures}");
    // The price of validity: less power than the single look at the horizon, but not much.
    assert!(power < fixed && fixed - power < 0.3, "{figures}");
    // Decisions come well before the horizon.
    assert!(median <= 1_500, "{figures}");
    // The always-valid interval covers the true lift at every look in at least 1 − alpha of
    // the experiments.
    assert!(missed <= ALPHA + 0.03, "{figures}");
}
