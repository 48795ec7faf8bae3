//! Live monitoring of a model: the rolling metric of each version, and the change detectors
//! fed with the production version's outcomes.

use std::collections::{BTreeMap, VecDeque};

use serde::Serialize;

use crate::drift::{DetectorConfig, DriftDetector, DriftSignal};
use crate::LearningError;

/// An outcome below this score counts as an error for the error-rate detectors.
pub const ERROR_BELOW: f64 = 1.0;

/// The rolling metric of one version.
#[derive(Debug, Clone, Default)]
struct Window {
    scores: VecDeque<f64>,
    sum: f64,
    total: u64,
}

/// A version's live figures.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct LiveMetric {
    /// `name@version`.
    pub model_id: String,
    /// Mean score over the window.
    pub mean: f64,
    /// Outcomes in the window.
    pub window: usize,
    /// Outcomes seen since the monitor started.
    pub total: u64,
}

/// A detector's signal, kept for status and history.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Signal {
    /// The detector (`ddm`, `page_hinkley`, `adwin`).
    pub detector: String,
    /// `warning` or `drift`.
    pub level: String,
    /// The outcome's position in the production version's stream (0-based).
    pub index: u64,
}

/// The monitor of one model.
pub struct Monitor {
    window: usize,
    configs: Vec<DetectorConfig>,
    detectors: Vec<(String, Box<dyn DriftDetector + Send>)>,
    versions: BTreeMap<String, Window>,
    fed: u64,
    last_signals: Vec<Signal>,
}

impl std::fmt::Debug for Monitor {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Monitor")
            .field("window", &self.window)
            .field("detectors", &self.configs)
            .field("fed", &self.fed)
            .finish_non_exhaustive()
    }
}

impl Monitor {
    /// A monitor with a rolling window of `window` outcomes per version and `detectors`.
    pub fn new(window: usize, detectors: &[DetectorConfig]) -> Result<Self, LearningError> {
        let mut monitor = Self {
            window: window.max(1),
            configs: detectors.to_vec(),
            detectors: Vec::new(),
            versions: BTreeMap::new(),
            fed: 0,
            last_signals: Vec::new(),
        };
        monitor.reset_detectors()?;
        Ok(monitor)
    }

    /// Starts the detectors afresh (after a deployment or a rollback the stream is a new one).
    pub fn reset_detectors(&mut self) -> Result<(), LearningError> {
        self.detectors = self
            .configs
            .iter()
            .enumerate()
            .map(|(i, c)| {
                c.build()
                    .map(|d| (c.kind().to_string(), d))
                    .map_err(|e| LearningError::invalid(&format!("detectors[{i}]"), e))
            })
            .collect::<Result<_, _>>()?;
        self.fed = 0;
        Ok(())
    }

    /// Records an outcome of `model_id`; when it is the production version's, feeds the
    /// detectors: DDM and Page-Hinkley read the error (score below 1), ADWIN the score.
    /// Returns the signals it raised.
    pub fn observe(&mut self, model_id: &str, score: f64, production: bool) -> Vec<Signal> {
        let window = self.versions.entry(model_id.to_string()).or_default();
        window.scores.push_back(score);
        window.sum += score;
        window.total += 1;
        while window.scores.len() > self.window {
            if let Some(old) = window.scores.pop_front() {
                window.sum -= old;
            }
        }
        if !production {
            return Vec::new();
        }
        let index = self.fed;
        self.fed += 1;
        let error = if score < ERROR_BELOW { 1.0 } else { 0.0 };
        let mut signals = Vec::new();
        for (name, detector) in &mut self.detectors {
            let x = if name == "adwin" { score } else { error };
            let level = match detector.update(x) {
                DriftSignal::None => continue,
                DriftSignal::Warning => "warning",
                DriftSignal::Drift => "drift",
            };
            signals.push(Signal {
                detector: name.clone(),
                level: level.to_string(),
                index,
            });
        }
        if !signals.is_empty() {
            self.last_signals = signals.clone();
        }
        signals
    }

    /// The live metric of `model_id`, if it has outcomes.
    pub fn live(&self, model_id: &str) -> Option<LiveMetric> {
        let w = self.versions.get(model_id)?;
        if w.scores.is_empty() {
            return None;
        }
        Some(LiveMetric {
            model_id: model_id.to_string(),
            mean: w.sum / w.scores.len() as f64,
            window: w.scores.len(),
            total: w.total,
        })
    }

    /// Every version's live metric.
    pub fn all_live(&self) -> Vec<LiveMetric> {
        self.versions
            .keys()
            .filter_map(|id| self.live(id))
            .collect()
    }

    /// The last signals raised.
    pub fn last_signals(&self) -> &[Signal] {
        &self.last_signals
    }

    /// Outcomes of the production version fed to the detectors since they last started.
    pub fn fed(&self) -> u64 {
        self.fed
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    #[test]
    fn the_window_rolls_and_only_production_feeds_the_detectors() {
        let mut m = Monitor::new(3, &[DetectorConfig::Ddm(Default::default())]).unwrap();
        for s in [1.0, 0.0, 1.0, 1.0] {
            m.observe("t@1.0.0", s, true);
        }
        let live = m.live("t@1.0.0").unwrap();
        assert_eq!(live.window, 3);
        assert_eq!(live.total, 4);
        assert!((live.mean - 2.0 / 3.0).abs() < 1e-12);
        m.observe("t@2.0.0", 0.0, false);
        assert_eq!(m.fed(), 4);
        assert_eq!(m.all_live().len(), 2);
        assert!(m.live("t@3.0.0").is_none());
    }

    #[test]
    fn a_jump_in_the_error_rate_is_signalled() {
        let mut m = Monitor::new(50, &[DetectorConfig::Ddm(Default::default())]).unwrap();
        let mut drift_at = None;
        for i in 0..400u64 {
            // 5% errors, then 60% from outcome 200 (a fixed pattern, no randomness).
            let error = if i < 200 { i % 20 == 0 } else { i % 5 < 3 };
            let signals = m.observe("t@1.0.0", if error { 0.0 } else { 1.0 }, true);
            if drift_at.is_none() && signals.iter().any(|s| s.level == "drift") {
                drift_at = Some(i);
            }
        }
        let at = drift_at.expect("the detector saw the jump");
        assert!((200..260).contains(&at), "detected at {at}");
        assert!(!m.last_signals().is_empty());
    }
}
