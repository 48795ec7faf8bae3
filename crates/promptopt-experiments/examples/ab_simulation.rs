//! Benchmark of the always-valid sequential test against the z-test read repeatedly ("peeking").
//!
//! Simulated experiments on a binary metric, with every random choice drawn from a seeded
//! ChaCha8 generator (the figures are reproducible):
//!
//! - 2,000 A/A experiments, both arms Bernoulli(0.70);
//! - 2,000 A/B experiments, 0.70 against 0.75 (a true lift of 5 points).
//!
//! Each experiment adds units to both arms and looks at the data after every 100 units per arm,
//! up to a horizon of 5,000 units per arm, stopping at the first significant look (alpha = 0.05).
//! At each look it runs the mixture SPRT (`SequentialState`, τ² = 0.05², see
//! `tau2_for_effect`) and the two-proportion z-test; the z-test is also read once, at the
//! horizon only, which is the one way it is meant to be used.
//!
//! Prints a Markdown table (false-positive rate of the A/A experiments, power and median units
//! per arm to a decision of the A/B ones, each rate with its binomial standard error), the
//! sensitivity of the sequential test to τ², and the same figures as one JSON line.
//!
//! Run with `cargo run --release -p promptopt-experiments --example ab_simulation`.

#![allow(clippy::print_stdout)]

use promptopt_experiments::stats::{
    tau2_for_effect, two_proportion_z, BinarySummary, SequentialState,
};
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;
use serde_json::json;

/// Experiments per scenario.
const TRIALS: usize = 2_000;
/// Units per arm between two looks.
const LOOK_EVERY: u64 = 100;
/// Units per arm at the last look.
const HORIZON: u64 = 5_000;
/// Level of every test.
const ALPHA: f64 = 0.05;
/// Success rate of the control arm (and of both arms in A/A).
const BASE_RATE: f64 = 0.70;
/// True lift of the treatment in A/B experiments.
const LIFT: f64 = 0.05;

/// What happened in one simulated experiment: the units per arm at the first significant look
/// of each procedure, `None` if it never was significant.
struct Trial {
    sequential: Option<u64>,
    peeking_z: Option<u64>,
    final_z: Option<u64>,
}

/// Runs one experiment with success rates `control_rate` and `treatment_rate`.
fn run_trial(rng: &mut ChaCha8Rng, control_rate: f64, treatment_rate: f64, tau2: f64) -> Trial {
    let mut control = BinarySummary::default();
    let mut treatment = BinarySummary::default();
    let mut state = SequentialState::new(ALPHA, tau2);
    let mut trial = Trial {
        sequential: None,
        peeking_z: None,
        final_z: None,
    };
    let mut units = 0;
    while units < HORIZON {
        for _ in 0..LOOK_EVERY {
            control.add(rng.gen_bool(control_rate));
            treatment.add(rng.gen_bool(treatment_rate));
        }
        units += LOOK_EVERY;
        if let Some(state) = state.as_mut() {
            let result = state.update(&control, &treatment);
            if trial.sequential.is_none() && result.is_some_and(|r| r.significant) {
                trial.sequential = Some(units);
            }
        }
        let z = two_proportion_z(&control, &treatment, ALPHA);
        if trial.peeking_z.is_none() && z.is_some_and(|r| r.significant) {
            trial.peeking_z = Some(units);
        }
        if units == HORIZON && z.is_some_and(|r| r.significant) {
            trial.final_z = Some(units);
        }
    }
    trial
}

/// Rate of decisions and median units per arm to a decision of one procedure.
struct Figures {
    rate: f64,
    standard_error: f64,
    median_units: Option<f64>,
}

fn figures(stops: &[Option<u64>]) -> Figures {
    let mut decided: Vec<u64> = stops.iter().flatten().copied().collect();
    decided.sort_unstable();
    let rate = decided.len() as f64 / stops.len() as f64;
    let median_units = match decided.len() {
        0 => None,
        n if n % 2 == 1 => Some(decided[n / 2] as f64),
        n => Some((decided[n / 2 - 1] + decided[n / 2]) as f64 / 2.0),
    };
    Figures {
        rate,
        standard_error: (rate * (1.0 - rate) / stops.len() as f64).sqrt(),
        median_units,
    }
}

/// Runs `TRIALS` experiments from a fixed seed.
fn scenario(seed: u64, treatment_rate: f64, tau2: f64) -> Vec<Trial> {
    let mut rng = ChaCha8Rng::seed_from_u64(seed);
    (0..TRIALS)
        .map(|_| run_trial(&mut rng, BASE_RATE, treatment_rate, tau2))
        .collect()
}

fn median_text(f: &Figures) -> String {
    f.median_units
        .map_or_else(|| "–".to_owned(), |m| format!("{m:.0}"))
}

fn main() {
    let Some(tau2) = tau2_for_effect(LIFT) else {
        return;
    };
    let aa = scenario(1, BASE_RATE, tau2);
    let ab = scenario(2, BASE_RATE + LIFT, tau2);

    let pick = |trials: &[Trial], f: fn(&Trial) -> Option<u64>| -> Figures {
        figures(&trials.iter().map(f).collect::<Vec<_>>())
    };
    let rows = [
        (
            "mSPRT (always valid), look every 100",
            pick(&aa, |t| t.sequential),
            pick(&ab, |t| t.sequential),
        ),
        (
            "z-test, look every 100 (peeking)",
            pick(&aa, |t| t.peeking_z),
            pick(&ab, |t| t.peeking_z),
        ),
        (
            "z-test, one look at the horizon",
            pick(&aa, |t| t.final_z),
            pick(&ab, |t| t.final_z),
        ),
    ];

    println!(
        "{TRIALS} A/A experiments (both arms {BASE_RATE}) and {TRIALS} A/B experiments \
         ({BASE_RATE} vs {}), looks every {LOOK_EVERY} units per arm up to {HORIZON}, \
         alpha = {ALPHA}, tau2 = {tau2:.6}\n",
        BASE_RATE + LIFT
    );
    println!("| test | false-positive rate (A/A) | power (A/B) | median units per arm to decision (A/B) |");
    println!("|---|---|---|---|");
    for (name, aa, ab) in &rows {
        println!(
            "| {name} | {:.3} ± {:.3} | {:.3} ± {:.3} | {} |",
            aa.rate,
            aa.standard_error,
            ab.rate,
            ab.standard_error,
            median_text(ab)
        );
    }

    // Sensitivity of the sequential test to the mixing variance (same seeds).
    println!("\n| mSPRT mixing variance | false-positive rate (A/A) | power (A/B) | median units per arm to decision (A/B) |");
    println!("|---|---|---|---|");
    let mut sensitivity = Vec::new();
    for (label, factor) in [("(δ/2)²", 0.25), ("δ² (default)", 1.0), ("(2δ)²", 4.0)] {
        let t2 = tau2 * factor;
        let (aa_f, ab_f) = if factor == 1.0 {
            (pick(&aa, |t| t.sequential), pick(&ab, |t| t.sequential))
        } else {
            (
                pick(&scenario(1, BASE_RATE, t2), |t| t.sequential),
                pick(&scenario(2, BASE_RATE + LIFT, t2), |t| t.sequential),
            )
        };
        println!(
            "| τ² = {label} = {t2:.6} | {:.3} ± {:.3} | {:.3} ± {:.3} | {} |",
            aa_f.rate,
            aa_f.standard_error,
            ab_f.rate,
            ab_f.standard_error,
            median_text(&ab_f)
        );
        sensitivity.push(json!({
            "tau2": t2,
            "false_positive_rate": aa_f.rate,
            "power": ab_f.rate,
            "median_units_to_decision": ab_f.median_units,
        }));
    }

    let json_rows: Vec<_> = rows
        .iter()
        .map(|(name, aa, ab)| {
            json!({
                "test": name,
                "false_positive_rate": aa.rate,
                "power": ab.rate,
                "median_units_to_decision": ab.median_units,
            })
        })
        .collect();
    let summary = json!({
        "trials": TRIALS,
        "look_every": LOOK_EVERY,
        "horizon": HORIZON,
        "alpha": ALPHA,
        "base_rate": BASE_RATE,
        "lift": LIFT,
        "tau2": tau2,
        "results": json_rows,
        "tau2_sensitivity": sensitivity,
    });
    println!("\n{summary}");
}
