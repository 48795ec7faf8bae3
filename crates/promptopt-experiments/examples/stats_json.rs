//! The statistics of `promptopt_experiments::stats` as a JSON-lines filter, for checking them
//! against other implementations (`tests/python/test_stats_scipy.py` compares with SciPy).
//!
//! Reads one JSON object per line on stdin (blank lines are skipped) and writes one JSON line per
//! request on stdout:
//! the result object, `null` when the test is undefined for these inputs, or `{"error": ...}`
//! when the line is not a valid request. Requests (`alpha` defaults to 0.05):
//!
//! ```text
//! {"test": "z", "control": {"n": 1000, "successes": 500}, "treatment": {"n": 1000, "successes": 600}, "alpha": 0.05}
//! {"test": "welch", "control": {"n": 20, "mean": 1.0, "variance": 2.0}, "treatment": {...}, "alpha": 0.05}
//! {"test": "srm", "counts": [5050, 4950], "weights": [0.5, 0.5]}
//! {"test": "holm", "p_values": [0.04, 0.01, 0.03], "alpha": 0.05}
//! {"test": "sequential_binary", "control": {...}, "treatment": {...}, "alpha": 0.05, "tau2": 0.0025, "previous_p": 0.3}
//! {"test": "sequential_continuous", "control": {...}, "treatment": {...}, "tau2": 1.0}
//! ```
//!
//! Run with `cargo run -p promptopt-experiments --example stats_json < requests.jsonl`.

use std::error::Error;
use std::io::{self, BufRead, Write};

use promptopt_experiments::stats::{
    holm, sequential, srm_check, two_proportion_z, welch_t, BinarySummary, ContinuousSummary,
};
use serde::Deserialize;
use serde_json::{json, Value};

/// One request line.
#[derive(Deserialize)]
#[serde(tag = "test", rename_all = "snake_case", deny_unknown_fields)]
enum Request {
    /// Two-proportion z-test.
    Z {
        control: BinarySummary,
        treatment: BinarySummary,
        #[serde(default = "default_alpha")]
        alpha: f64,
    },
    /// Welch's t-test.
    Welch {
        control: ContinuousSummary,
        treatment: ContinuousSummary,
        #[serde(default = "default_alpha")]
        alpha: f64,
    },
    /// Sample-ratio-mismatch check.
    Srm { counts: Vec<u64>, weights: Vec<f64> },
    /// Holm–Bonferroni correction.
    Holm {
        p_values: Vec<f64>,
        #[serde(default = "default_alpha")]
        alpha: f64,
    },
    /// Always-valid sequential test on a binary metric.
    SequentialBinary {
        control: BinarySummary,
        treatment: BinarySummary,
        #[serde(default = "default_alpha")]
        alpha: f64,
        tau2: f64,
        #[serde(default)]
        previous_p: Option<f64>,
    },
    /// Always-valid sequential test on a continuous metric.
    SequentialContinuous {
        control: ContinuousSummary,
        treatment: ContinuousSummary,
        #[serde(default = "default_alpha")]
        alpha: f64,
        tau2: f64,
        #[serde(default)]
        previous_p: Option<f64>,
    },
}

fn default_alpha() -> f64 {
    0.05
}

/// The answer to one line: a result, `null`, or an error object.
fn answer(line: &str) -> Value {
    let request: Request = match serde_json::from_str(line) {
        Ok(request) => request,
        Err(error) => return json!({ "error": error.to_string() }),
    };
    let result = match request {
        Request::Z {
            control,
            treatment,
            alpha,
        } => serde_json::to_value(two_proportion_z(&control, &treatment, alpha)),
        Request::Welch {
            control,
            treatment,
            alpha,
        } => serde_json::to_value(welch_t(&control, &treatment, alpha)),
        Request::Srm { counts, weights } => serde_json::to_value(srm_check(&counts, &weights)),
        Request::Holm { p_values, alpha } => Ok(json!({ "rejected": holm(&p_values, alpha) })),
        Request::SequentialBinary {
            control,
            treatment,
            alpha,
            tau2,
            previous_p,
        } => serde_json::to_value(sequential(&control, &treatment, alpha, tau2, previous_p)),
        Request::SequentialContinuous {
            control,
            treatment,
            alpha,
            tau2,
            previous_p,
        } => serde_json::to_value(sequential(&control, &treatment, alpha, tau2, previous_p)),
    };
    result.unwrap_or_else(|error| json!({ "error": error.to_string() }))
}

fn main() -> Result<(), Box<dyn Error>> {
    let stdin = io::stdin();
    let stdout = io::stdout();
    let mut out = stdout.lock();
    for line in stdin.lock().lines() {
        let line = line?;
        if line.trim().is_empty() {
            continue;
        }
        writeln!(out, "{}", answer(&line))?;
        out.flush()?;
    }
    Ok(())
}
