//! Benchmark of the change detectors on simulated error streams: false alarms without drift,
//! detection rate and delay with an abrupt drift.
//!
//! Every detector runs with its default parameters (Page-Hinkley in mode `up`, since only a
//! rise of the error rate matters) on the same streams of 0/1 errors, drawn from a seeded
//! ChaCha8 generator (the figures are reproducible; the seed is printed):
//!
//! - 500 streams of 2,000 outcomes with a constant error rate of 0.2 (no drift);
//! - 500 streams of 2,000 outcomes whose error rate jumps from 0.2 to 0.5 at outcome 1,000.
//!
//! For the streams without drift it reports the false-alarm rate (the share of streams with at
//! least one detection) and the false alarms per 1,000 outcomes. For the streams with a drift it
//! reports the detection rate (the share of streams with a detection at or after the change),
//! the median and mean delay of the first such detection (its position minus 1,000, over the
//! streams where it happened), and the share of streams with a false alarm before the change.
//! Rates come with their binomial standard error.
//!
//! `tests/python/river_simulation.py` runs the same protocol with `river` (with its own random
//! streams, so the two tables agree statistically, not exactly).
//!
//! Run with `cargo run --release -p promptopt-learning --example drift_simulation`.

#![allow(clippy::print_stdout)]

use promptopt_learning::drift::{
    AdwinConfig, DdmConfig, DetectorConfig, PageHinkleyConfig, PageHinkleyMode,
};
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;
use serde_json::json;

/// Seed of the generator.
const SEED: u64 = 20_240_601;
/// Streams per scenario.
const RUNS: usize = 500;
/// Outcomes per stream.
const LENGTH: usize = 2_000;
/// Position of the drift.
const CHANGE: usize = 1_000;
/// Error rate before the drift (and throughout without drift).
const RATE_BEFORE: f64 = 0.2;
/// Error rate after the drift.
const RATE_AFTER: f64 = 0.5;

/// The detectors compared, with a display name.
fn detectors() -> Vec<(&'static str, DetectorConfig)> {
    vec![
        ("DDM", DetectorConfig::Ddm(DdmConfig::default())),
        (
            "Page-Hinkley (up)",
            DetectorConfig::PageHinkley(PageHinkleyConfig {
                mode: PageHinkleyMode::Up,
                ..PageHinkleyConfig::default()
            }),
        ),
        ("ADWIN", DetectorConfig::Adwin(AdwinConfig::default())),
    ]
}

/// Positions of the detections of a fresh detector on `stream`.
fn detections(config: &DetectorConfig, stream: &[bool]) -> Vec<usize> {
    let Ok(mut detector) = config.build() else {
        return Vec::new();
    };
    stream
        .iter()
        .enumerate()
        .filter_map(|(i, &error)| detector.update_error(error).is_drift().then_some(i))
        .collect()
}

/// A stream of errors with rate `before` up to `CHANGE`, `after` from there on.
fn stream(rng: &mut ChaCha8Rng, before: f64, after: f64) -> Vec<bool> {
    (0..LENGTH)
        .map(|i| rng.gen_bool(if i < CHANGE { before } else { after }))
        .collect()
}

/// Figures of one detector.
#[derive(Default)]
struct Tally {
    /// Streams without drift with at least one detection.
    stable_alarmed: usize,
    /// Detections over all streams without drift.
    stable_alarms: usize,
    /// Streams with drift and a detection at or after the change.
    detected: usize,
    /// Delay of the first detection at or after the change, per detected stream.
    delays: Vec<usize>,
    /// Streams with drift and a detection before the change.
    early_alarmed: usize,
}

/// A rate and its binomial standard error, in percent.
fn rate(count: usize, total: usize) -> String {
    let p = count as f64 / total as f64;
    let se = (p * (1.0 - p) / total as f64).sqrt();
    format!("{:.1} % ± {:.1}", 100.0 * p, 100.0 * se)
}

fn median(values: &mut [usize]) -> Option<f64> {
    values.sort_unstable();
    let n = values.len();
    match n {
        0 => None,
        _ if n % 2 == 1 => Some(values[n / 2] as f64),
        _ => Some((values[n / 2 - 1] + values[n / 2]) as f64 / 2.0),
    }
}

fn main() {
    let mut rng = ChaCha8Rng::seed_from_u64(SEED);
    let detectors = detectors();
    let mut tallies: Vec<Tally> = detectors.iter().map(|_| Tally::default()).collect();

    for _ in 0..RUNS {
        let stable = stream(&mut rng, RATE_BEFORE, RATE_BEFORE);
        let drifting = stream(&mut rng, RATE_BEFORE, RATE_AFTER);
        for ((_, config), tally) in detectors.iter().zip(tallies.iter_mut()) {
            let found = detections(config, &stable);
            tally.stable_alarms += found.len();
            tally.stable_alarmed += usize::from(!found.is_empty());

            let found = detections(config, &drifting);
            tally.early_alarmed += usize::from(found.iter().any(|&i| i < CHANGE));
            if let Some(first) = found.iter().find(|&&i| i >= CHANGE) {
                tally.detected += 1;
                tally.delays.push(first - CHANGE);
            }
        }
    }

    println!(
        "Seed {SEED}; {RUNS} streams of {LENGTH} outcomes per scenario; error rate \
         {RATE_BEFORE} (no drift), or {RATE_BEFORE} then {RATE_AFTER} from outcome {CHANGE}.\n"
    );
    println!(
        "| Detector | False-alarm rate (no drift) | False alarms / 1000 outcomes | \
         Detection rate | Median delay | Mean delay | False alarm before the change |"
    );
    println!("|---|---|---|---|---|---|---|");
    let mut figures = Vec::new();
    for ((name, _), tally) in detectors.iter().zip(tallies.iter_mut()) {
        let per_thousand = tally.stable_alarms as f64 * 1000.0 / (RUNS * LENGTH) as f64;
        let mean_delay = if tally.delays.is_empty() {
            None
        } else {
            Some(tally.delays.iter().sum::<usize>() as f64 / tally.delays.len() as f64)
        };
        let median_delay = median(&mut tally.delays);
        let show = |value: Option<f64>| value.map_or("–".to_string(), |v| format!("{v:.1}"));
        println!(
            "| {name} | {} | {per_thousand:.3} | {} | {} | {} | {} |",
            rate(tally.stable_alarmed, RUNS),
            rate(tally.detected, RUNS),
            show(median_delay),
            show(mean_delay),
            rate(tally.early_alarmed, RUNS),
        );
        figures.push(json!({
            "detector": name,
            "false_alarm_rate": tally.stable_alarmed as f64 / RUNS as f64,
            "false_alarms_per_1000": per_thousand,
            "detection_rate": tally.detected as f64 / RUNS as f64,
            "median_delay": median_delay,
            "mean_delay": mean_delay,
            "false_alarm_before_change_rate": tally.early_alarmed as f64 / RUNS as f64,
        }));
    }
    println!(
        "\n{}",
        json!({"seed": SEED, "runs": RUNS, "figures": figures})
    );
}
