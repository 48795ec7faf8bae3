//! The `learning:` block of a model: what to watch, when to retrain, how to deploy and when to
//! roll back.
//!
//! ```yaml
//! learning:
//!   check_every: 30s            # how often the loop looks at new outcomes
//!   window: 200                 # outcomes in the rolling live metric
//!   detectors: [{kind: ddm}, {kind: page_hinkley, mode: up}, {kind: adwin}]
//!   psi_threshold: 0.2          # input-length and output-label drift
//!   triggers: {drift: true, every: 24h, new_labels: 500}
//!   min_new_labels: 20          # never retrain on fewer fresh labels
//!   data: {window: 7d, max_examples: 2000, holdout_fraction: 0.3, min_holdout: 10,
//!          near_duplicate_jaccard: 0.9}
//!   deploy: {policy: promote, margin: 0.02}
//!   guard: {min_outcomes: 50, margin: 0.05}
//!   retry: {initial: 1m, max: 1h}
//! ```

use std::time::Duration;

use serde::{Deserialize, Serialize};

use crate::drift::{DetectorConfig, PageHinkleyConfig, PageHinkleyMode};
use crate::LearningError;

/// A duration written `90s`, `30m`, `24h` or `7d`, kept as written.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(transparent)]
pub struct Span(pub String);

impl Span {
    /// Its length.
    pub fn duration(&self, field: &str) -> Result<Duration, LearningError> {
        promptopt_core::parse_duration(&self.0)
            .map_err(|message| LearningError::invalid(field, message))
    }
}

impl From<&str> for Span {
    fn from(text: &str) -> Self {
        Self(text.to_string())
    }
}

/// What starts a retraining.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct Triggers {
    /// Retrain when a detector signals drift (on the error rate, the metric, the inputs or the
    /// output labels).
    pub drift: bool,
    /// Retrain on a schedule (`24h`), counted from the last retraining.
    pub every: Option<Span>,
    /// Retrain once this many new labelled predictions have arrived since the last retraining.
    pub new_labels: Option<u64>,
}

impl Default for Triggers {
    fn default() -> Self {
        Self {
            drift: true,
            every: None,
            new_labels: None,
        }
    }
}

/// Which recent labelled predictions a retraining uses, and how many are held out.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct DataConfig {
    /// Only predictions labelled within this long.
    pub window: Span,
    /// At most this many recent examples (the newest).
    pub max_examples: usize,
    /// The share of recent examples held out to validate the new version against the current
    /// one (never trained on).
    pub holdout_fraction: f64,
    /// Held-out examples needed at least; fewer recent examples and the retraining waits.
    pub min_holdout: usize,
    /// Two inputs whose word sets overlap at least this much (Jaccard) are near duplicates: the
    /// newer one is kept.
    pub near_duplicate_jaccard: f64,
    /// Leave out the original examples whose label no recent labelled example uses (labels that
    /// were renamed or retired). Off by default: a rare label may simply not have come up.
    pub retire_stale_labels: bool,
}

impl Default for DataConfig {
    fn default() -> Self {
        Self {
            window: Span::from("7d"),
            max_examples: 2000,
            holdout_fraction: 0.3,
            min_holdout: 10,
            near_duplicate_jaccard: 0.9,
            retire_stale_labels: false,
        }
    }
}

/// How a validated new version goes live.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum DeployPolicy {
    /// Move the `production` alias to it.
    Promote,
    /// Start an A/B experiment against `production` and let it conclude.
    Experiment,
}

/// Deployment settings.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct DeployConfig {
    /// `promote` (the default) or `experiment`.
    pub policy: DeployPolicy,
    /// The new version must beat the current one on the held-out slice by at least this much.
    pub margin: f64,
    /// With `experiment`: the treatment's share of traffic.
    pub traffic: f64,
}

impl Default for DeployConfig {
    fn default() -> Self {
        Self {
            policy: DeployPolicy::Promote,
            margin: 0.0,
            traffic: 0.5,
        }
    }
}

/// The watch after a deployment.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct GuardConfig {
    /// Outcomes of the new version needed before judging it.
    pub min_outcomes: u64,
    /// Roll back when its live metric is below the previous version's by more than this.
    pub margin: f64,
}

impl Default for GuardConfig {
    fn default() -> Self {
        Self {
            min_outcomes: 50,
            margin: 0.05,
        }
    }
}

/// Backoff after a failed retraining.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct RetryConfig {
    /// The wait after the first failure; it doubles with each failure in a row.
    pub initial: Span,
    /// The longest wait.
    pub max: Span,
}

impl Default for RetryConfig {
    fn default() -> Self {
        Self {
            initial: Span::from("1m"),
            max: Span::from("1h"),
        }
    }
}

/// The continuous-learning settings of one model.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct LearningConfig {
    /// How often the loop looks at new outcomes.
    pub check_every: Span,
    /// Outcomes in the rolling live metric (per version).
    pub window: usize,
    /// The change detectors run on each outcome of the production version: the error stream
    /// (score below 1) feeds DDM and Page-Hinkley, the score feeds ADWIN.
    pub detectors: Vec<DetectorConfig>,
    /// The population stability index above which the recent inputs' lengths or output labels
    /// count as drifted from the training data (`0` turns the check off).
    pub psi_threshold: f64,
    /// Recent predictions compared with the training data by the PSI checks, at least.
    pub psi_min_samples: usize,
    /// What starts a retraining.
    pub triggers: Triggers,
    /// Labelled predictions since the last retraining needed before any trigger retrains.
    pub min_new_labels: u64,
    /// The data of a retraining.
    pub data: DataConfig,
    /// How a better version goes live.
    pub deploy: DeployConfig,
    /// The watch after a deployment.
    pub guard: GuardConfig,
    /// Backoff after failed retrainings.
    pub retry: RetryConfig,
    /// The retraining job's priority (`high`, `normal`, `low`).
    pub priority: String,
    /// The retraining job's time limit (`30m`).
    pub timeout: Option<Span>,
}

impl Default for LearningConfig {
    fn default() -> Self {
        Self {
            check_every: Span::from("30s"),
            window: 200,
            detectors: vec![
                DetectorConfig::Ddm(Default::default()),
                DetectorConfig::PageHinkley(PageHinkleyConfig {
                    mode: PageHinkleyMode::Up,
                    ..PageHinkleyConfig::default()
                }),
                DetectorConfig::Adwin(Default::default()),
            ],
            psi_threshold: 0.2,
            psi_min_samples: 100,
            triggers: Triggers::default(),
            min_new_labels: 20,
            data: DataConfig::default(),
            deploy: DeployConfig::default(),
            guard: GuardConfig::default(),
            retry: RetryConfig::default(),
            priority: "normal".into(),
            timeout: None,
        }
    }
}

impl LearningConfig {
    /// Reads a `learning:` block (YAML or JSON); a file may hold the block itself or
    /// `{learning: {...}}`.
    pub fn from_yaml(text: &str) -> Result<Self, LearningError> {
        let value: serde_yaml::Value =
            serde_yaml::from_str(text).map_err(|e| LearningError::invalid("learning", e))?;
        let value = match value {
            serde_yaml::Value::Mapping(mut map) if map.len() == 1 => {
                match map.remove(serde_yaml::Value::from("learning")) {
                    Some(inner) => inner,
                    None => serde_yaml::Value::Mapping(map),
                }
            }
            other => other,
        };
        let config: Self =
            serde_yaml::from_value(value).map_err(|e| LearningError::invalid("learning", e))?;
        config.check()?;
        Ok(config)
    }

    /// Checks every value's range; the error names the setting.
    pub fn check(&self) -> Result<(), LearningError> {
        let every = self.check_every.duration("check_every")?;
        if every.is_zero() {
            return Err(LearningError::invalid(
                "check_every",
                "must be longer than 0",
            ));
        }
        if self.window == 0 {
            return Err(LearningError::invalid("window", "must be at least 1"));
        }
        for (i, detector) in self.detectors.iter().enumerate() {
            detector
                .build()
                .map_err(|e| LearningError::invalid(&format!("detectors[{i}]"), e))?;
        }
        if !(self.psi_threshold.is_finite() && self.psi_threshold >= 0.0) {
            return Err(LearningError::invalid(
                "psi_threshold",
                "must be 0 (off) or a positive number",
            ));
        }
        if let Some(every) = &self.triggers.every {
            if every.duration("triggers.every")?.is_zero() {
                return Err(LearningError::invalid(
                    "triggers.every",
                    "must be longer than 0",
                ));
            }
        }
        if self.triggers.new_labels == Some(0) {
            return Err(LearningError::invalid(
                "triggers.new_labels",
                "must be at least 1",
            ));
        }
        self.data.window.duration("data.window")?;
        if self.data.max_examples == 0 {
            return Err(LearningError::invalid(
                "data.max_examples",
                "must be at least 1",
            ));
        }
        if !(self.data.holdout_fraction > 0.0 && self.data.holdout_fraction < 1.0) {
            return Err(LearningError::invalid(
                "data.holdout_fraction",
                "must be between 0 and 1 (exclusive)",
            ));
        }
        if self.data.min_holdout == 0 {
            return Err(LearningError::invalid(
                "data.min_holdout",
                "must be at least 1",
            ));
        }
        if !(self.data.near_duplicate_jaccard > 0.0 && self.data.near_duplicate_jaccard <= 1.0) {
            return Err(LearningError::invalid(
                "data.near_duplicate_jaccard",
                "must be in (0, 1]",
            ));
        }
        if !(self.deploy.margin.is_finite() && self.deploy.margin >= 0.0) {
            return Err(LearningError::invalid(
                "deploy.margin",
                "must be 0 or a positive number",
            ));
        }
        if !(self.deploy.traffic > 0.0 && self.deploy.traffic < 1.0) {
            return Err(LearningError::invalid(
                "deploy.traffic",
                "must be between 0 and 1 (exclusive)",
            ));
        }
        if self.guard.min_outcomes == 0 {
            return Err(LearningError::invalid(
                "guard.min_outcomes",
                "must be at least 1",
            ));
        }
        if !(self.guard.margin.is_finite() && self.guard.margin >= 0.0) {
            return Err(LearningError::invalid(
                "guard.margin",
                "must be 0 or a positive number",
            ));
        }
        let initial = self.retry.initial.duration("retry.initial")?;
        let max = self.retry.max.duration("retry.max")?;
        if initial.is_zero() || max < initial {
            return Err(LearningError::invalid(
                "retry",
                "`initial` must be longer than 0 and `max` at least `initial`",
            ));
        }
        if !matches!(self.priority.as_str(), "high" | "normal" | "low") {
            return Err(LearningError::invalid(
                "priority",
                format!("must be `high`, `normal` or `low`, not `{}`", self.priority),
            ));
        }
        if let Some(timeout) = &self.timeout {
            timeout.duration("timeout")?;
        }
        Ok(())
    }

    /// The wait before retrying after `failures` failed retrainings in a row.
    pub fn backoff(&self, failures: u32) -> Duration {
        let initial = self
            .retry
            .initial
            .duration("retry.initial")
            .unwrap_or(Duration::from_secs(60));
        let max = self
            .retry
            .max
            .duration("retry.max")
            .unwrap_or(Duration::from_secs(3600));
        let factor = 2u32.saturating_pow(failures.saturating_sub(1).min(30));
        initial.saturating_mul(factor).min(max)
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    #[test]
    fn defaults_check_and_a_block_parses_with_or_without_its_key() {
        LearningConfig::default().check().unwrap();
        let a = LearningConfig::from_yaml(
            "learning:\n  triggers: {every: 24h, new_labels: 100}\n  deploy: {policy: experiment}\n",
        )
        .unwrap();
        assert_eq!(a.triggers.new_labels, Some(100));
        assert_eq!(a.deploy.policy, DeployPolicy::Experiment);
        let b = LearningConfig::from_yaml("window: 50\n").unwrap();
        assert_eq!(b.window, 50);
        assert_eq!(b.guard.min_outcomes, 50);
    }

    #[test]
    fn bad_values_name_the_setting() {
        let cases = [
            ("windoww: 3", "windoww"),
            ("window: 0", "`window`"),
            ("check_every: soon", "`check_every`"),
            ("data: {holdout_fraction: 1.5}", "`data.holdout_fraction`"),
            ("deploy: {policy: yolo}", "yolo"),
            ("triggers: {new_labels: 0}", "`triggers.new_labels`"),
            ("retry: {initial: 1h, max: 1m}", "`retry`"),
            ("priority: urgent", "`priority`"),
            ("detectors: [{kind: adwin, delta: 2.0}]", "`detectors[0]`"),
        ];
        for (text, needle) in cases {
            let e = LearningConfig::from_yaml(text).unwrap_err().to_string();
            assert!(e.contains(needle), "{text}: {e}");
        }
    }

    #[test]
    fn the_backoff_doubles_up_to_its_cap() {
        let config = LearningConfig::default();
        assert_eq!(config.backoff(1), Duration::from_secs(60));
        assert_eq!(config.backoff(2), Duration::from_secs(120));
        assert_eq!(config.backoff(3), Duration::from_secs(240));
        assert_eq!(config.backoff(20), Duration::from_secs(3600));
    }
}
