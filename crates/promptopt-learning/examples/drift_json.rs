//! The change detectors of `promptopt_learning::drift` as a JSON-lines filter, for checking them
//! against other implementations (`tests/python/test_drift_river.py` compares with `river`).
//!
//! Reads one JSON object per line on stdin (blank lines are skipped): a detector configuration,
//! as in the server's configuration, and a stream of observations.
//!
//! ```text
//! {"detector": {"kind": "ddm", "warm_start": 30}, "stream": [0.0, 1.0, 0.0]}
//! {"detector": {"kind": "page_hinkley", "mode": "up"}, "stream": [0.5, 0.7]}
//! {"detector": {"kind": "adwin", "delta": 0.002, "clock": 1}, "stream": [0.1, 0.9]}
//! ```
//!
//! Writes one JSON line per request: the 0-based positions at which `update` returned a warning
//! and a drift, and the detector's state after the last observation:
//!
//! ```text
//! {"warnings": [], "drifts": [1234], "final": {"n": 17, "error_rate": 0.35}}
//! ```
//!
//! `final` holds `n` and `error_rate` for DDM, `n` and `mean` for Page-Hinkley, `width`,
//! `estimation`, `total` and `variance` for ADWIN. A line that is not a valid request, or whose
//! parameters are invalid, gets `{"error": ...}`.
//!
//! Run with `cargo run -p promptopt-learning --example drift_json < requests.jsonl`.

use std::error::Error;
use std::io::{self, BufRead, Write};

use promptopt_learning::drift::{
    Adwin, Ddm, DetectorConfig, DriftDetector, DriftSignal, PageHinkley,
};
use serde::Deserialize;
use serde_json::{json, Value};

/// One request line.
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct Request {
    detector: DetectorConfig,
    stream: Vec<f64>,
}

/// Feeds the stream to the detector; returns the positions of warnings and drifts.
fn run(detector: &mut dyn DriftDetector, stream: &[f64]) -> (Vec<usize>, Vec<usize>) {
    let (mut warnings, mut drifts) = (Vec::new(), Vec::new());
    for (i, &x) in stream.iter().enumerate() {
        match detector.update(x) {
            DriftSignal::None => {}
            DriftSignal::Warning => warnings.push(i),
            DriftSignal::Drift => drifts.push(i),
        }
    }
    (warnings, drifts)
}

fn answer(line: &str) -> Result<Value, Box<dyn Error>> {
    let request: Request = serde_json::from_str(line)?;
    let stream = &request.stream;
    let ((warnings, drifts), state) = match request.detector {
        DetectorConfig::Ddm(config) => {
            let mut ddm = Ddm::new(config)?;
            let found = run(&mut ddm, stream);
            (found, json!({"n": ddm.n(), "error_rate": ddm.error_rate()}))
        }
        DetectorConfig::PageHinkley(config) => {
            let mut ph = PageHinkley::new(config)?;
            let found = run(&mut ph, stream);
            (found, json!({"n": ph.n(), "mean": ph.mean()}))
        }
        DetectorConfig::Adwin(config) => {
            let mut adwin = Adwin::new(config)?;
            let found = run(&mut adwin, stream);
            let state = json!({
                "width": adwin.width(),
                "estimation": adwin.estimation(),
                "total": adwin.total(),
                "variance": adwin.variance(),
            });
            (found, state)
        }
    };
    Ok(json!({"warnings": warnings, "drifts": drifts, "final": state}))
}

fn main() -> Result<(), Box<dyn Error>> {
    let stdin = io::stdin();
    let mut stdout = io::BufWriter::new(io::stdout().lock());
    for line in stdin.lock().lines() {
        let line = line?;
        if line.trim().is_empty() {
            continue;
        }
        let value = answer(&line).unwrap_or_else(|e| json!({"error": e.to_string()}));
        serde_json::to_writer(&mut stdout, &value)?;
        stdout.write_all(b"\n")?;
    }
    stdout.flush()?;
    Ok(())
}
