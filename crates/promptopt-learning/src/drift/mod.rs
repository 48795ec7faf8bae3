//! Drift detection: noticing that a deployed model's live behaviour has changed.
//!
//! Two families of checks live here:
//!
//! - **Change detectors over a stream**, fed one outcome at a time through the [`DriftDetector`]
//!   trait: [`Ddm`] (Drift Detection Method, on a binary error stream, with a warning zone),
//!   [`PageHinkley`] (a cumulative-sum test on the mean of any numeric stream) and [`Adwin`]
//!   (adaptive windowing on any bounded numeric stream, typically a per-request metric). They
//!   reproduce the detectors of the Python library `river` (`river.drift.binary.DDM`,
//!   `river.drift.PageHinkley`, `river.drift.ADWIN`, version 0.26.1) update for update: same
//!   parameters and defaults, same arithmetic, so the same stream gives warnings and detections at
//!   the same positions. `tests/python/test_drift_river.py` checks this against `river` itself.
//! - **Distribution drift** between a reference sample and a current one, in [`psi`]: the
//!   population stability index over numeric buckets (e.g. input lengths) or over output labels.
//!
//! Detectors are usually built from configuration: [`DetectorConfig`] is tagged by `kind`, e.g.
//! `{"kind": "ddm", "warning_threshold": 2.0}` or, in YAML, `detector: {kind: adwin, delta:
//! 0.01}`; omitted parameters take `river`'s defaults, unknown ones are rejected, and
//! [`DetectorConfig::build`] checks the values.
//!
//! Like `river`, a detector that reported [`DriftSignal::Drift`] starts afresh on its next update:
//! the statistics gathered before the change are dropped, so the detector learns the new regime.

mod adwin;
mod ddm;
mod page_hinkley;
pub mod psi;

use serde::{Deserialize, Serialize};

pub use adwin::{Adwin, AdwinConfig};
pub use ddm::{Ddm, DdmConfig};
pub use page_hinkley::{PageHinkley, PageHinkleyConfig, PageHinkleyMode};
pub use psi::{PsiCheck, PsiConfig, PsiLevel, PsiMonitor};

/// What a detector concluded after one update.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum DriftSignal {
    /// Nothing unusual.
    #[default]
    None,
    /// The stream may be changing: a drift is likely to follow (only [`Ddm`] warns).
    Warning,
    /// The stream has changed.
    Drift,
}

impl DriftSignal {
    /// Whether this is [`DriftSignal::Drift`].
    pub fn is_drift(self) -> bool {
        self == Self::Drift
    }

    /// Whether this is [`DriftSignal::Warning`].
    pub fn is_warning(self) -> bool {
        self == Self::Warning
    }
}

/// A change detector fed one observation at a time.
pub trait DriftDetector: std::fmt::Debug {
    /// Adds one observation and says whether the stream has changed.
    ///
    /// After a [`DriftSignal::Drift`], the next call first resets the detector, as `river` does.
    fn update(&mut self, x: f64) -> DriftSignal;

    /// Adds one binary outcome (`true` for an error or a failure), as `1.0` or `0.0`.
    fn update_error(&mut self, is_error: bool) -> DriftSignal {
        self.update(if is_error { 1.0 } else { 0.0 })
    }

    /// Forgets everything seen so far; the parameters stay.
    fn reset(&mut self);

    /// The detector's kind, as written in [`DetectorConfig`]: `ddm`, `page_hinkley` or `adwin`.
    fn kind(&self) -> &'static str;
}

/// An invalid detector or PSI parameter.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum DriftError {
    /// A parameter outside its allowed range.
    #[error("`{name}` must be {expected}, got {value}")]
    OutOfRange {
        /// The parameter, as named in the configuration.
        name: &'static str,
        /// The allowed range, in words (e.g. "in (0, 1)").
        expected: &'static str,
        /// The rejected value, as written.
        value: String,
    },
    /// Two parameters that contradict each other.
    #[error("`{first}` ({first_value}) must not exceed `{second}` ({second_value})")]
    Inconsistent {
        /// The parameter that must be the smaller.
        first: &'static str,
        /// Its value.
        first_value: String,
        /// The parameter that must be the larger.
        second: &'static str,
        /// Its value.
        second_value: String,
    },
}

impl DriftError {
    /// A parameter outside its range.
    pub(crate) fn out_of_range(
        name: &'static str,
        expected: &'static str,
        value: impl ToString,
    ) -> Self {
        Self::OutOfRange {
            name,
            expected,
            value: value.to_string(),
        }
    }
}

/// Checks that a float parameter is finite and at least 0.
pub(crate) fn check_non_negative(name: &'static str, value: f64) -> Result<(), DriftError> {
    if value.is_finite() && value >= 0.0 {
        Ok(())
    } else {
        Err(DriftError::out_of_range(
            name,
            "a finite number >= 0",
            value,
        ))
    }
}

/// Configuration of a change detector, tagged by `kind`.
///
/// ```
/// use promptopt_learning::drift::{DetectorConfig, DriftSignal};
///
/// let config: DetectorConfig =
///     serde_json::from_str(r#"{"kind": "ddm", "warning_threshold": 2.5}"#)?;
/// let mut detector = config.build()?;
/// assert_eq!(detector.update_error(false), DriftSignal::None);
/// # Ok::<(), Box<dyn std::error::Error>>(())
/// ```
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum DetectorConfig {
    /// [`Ddm`], on a binary error stream.
    Ddm(DdmConfig),
    /// [`PageHinkley`], on the mean of a numeric stream.
    PageHinkley(PageHinkleyConfig),
    /// [`Adwin`], on a bounded numeric stream.
    Adwin(AdwinConfig),
}

impl Default for DetectorConfig {
    /// DDM with `river`'s defaults.
    fn default() -> Self {
        Self::Ddm(DdmConfig::default())
    }
}

impl DetectorConfig {
    /// The detector's kind, as written in the `kind` field.
    pub fn kind(&self) -> &'static str {
        match self {
            Self::Ddm(_) => "ddm",
            Self::PageHinkley(_) => "page_hinkley",
            Self::Adwin(_) => "adwin",
        }
    }

    /// Checks the parameters without building anything.
    pub fn validate(&self) -> Result<(), DriftError> {
        match self {
            Self::Ddm(config) => config.validate(),
            Self::PageHinkley(config) => config.validate(),
            Self::Adwin(config) => config.validate(),
        }
    }

    /// Builds the detector, or says which parameter is invalid.
    pub fn build(&self) -> Result<Box<dyn DriftDetector + Send>, DriftError> {
        Ok(match self {
            Self::Ddm(config) => Box::new(Ddm::new(config.clone())?),
            Self::PageHinkley(config) => Box::new(PageHinkley::new(config.clone())?),
            Self::Adwin(config) => Box::new(Adwin::new(config.clone())?),
        })
    }
}

/// Running mean, updated exactly as `river.stats.Mean` does (`mean += (1 / n) * (x - mean)`),
/// so that the floating-point values match `river`'s bit for bit.
#[derive(Debug, Clone, Copy, Default, PartialEq)]
pub(crate) struct RunningMean {
    n: f64,
    mean: f64,
}

impl RunningMean {
    pub(crate) fn update(&mut self, x: f64) {
        self.n += 1.0;
        self.mean += (1.0 / self.n) * (x - self.mean);
    }

    pub(crate) fn n(&self) -> f64 {
        self.n
    }

    pub(crate) fn get(&self) -> f64 {
        self.mean
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn configs_deserialize_with_defaults_and_reject_unknown_fields() {
        let config: DetectorConfig =
            serde_json::from_str(r#"{"kind": "ddm", "warning_threshold": 2.5}"#).expect("ddm");
        assert_eq!(
            config,
            DetectorConfig::Ddm(DdmConfig {
                warning_threshold: 2.5,
                ..DdmConfig::default()
            })
        );
        let config: DetectorConfig =
            serde_json::from_str(r#"{"kind": "page_hinkley", "mode": "up", "threshold": 20}"#)
                .expect("page_hinkley");
        assert_eq!(
            config,
            DetectorConfig::PageHinkley(PageHinkleyConfig {
                mode: PageHinkleyMode::Up,
                threshold: 20.0,
                ..PageHinkleyConfig::default()
            })
        );
        let config: DetectorConfig = serde_json::from_str(r#"{"kind": "adwin"}"#).expect("adwin");
        assert_eq!(config, DetectorConfig::Adwin(AdwinConfig::default()));

        let yaml = "kind: adwin\ndelta: 0.01\nclock: 1\n";
        let config: DetectorConfig = serde_yaml::from_str(yaml).expect("yaml");
        assert_eq!(
            config,
            DetectorConfig::Adwin(AdwinConfig {
                delta: 0.01,
                clock: 1,
                ..AdwinConfig::default()
            })
        );

        for bad in [
            r#"{"kind": "ddm", "warning_treshold": 2.5}"#,
            r#"{"kind": "kswin"}"#,
            r#"{"delta": 0.002}"#,
            r#"{"kind": "page_hinkley", "mode": "sideways"}"#,
        ] {
            assert!(
                serde_json::from_str::<DetectorConfig>(bad).is_err(),
                "{bad}"
            );
        }
    }

    #[test]
    fn configs_round_trip() {
        for config in [
            DetectorConfig::Ddm(DdmConfig::default()),
            DetectorConfig::PageHinkley(PageHinkleyConfig::default()),
            DetectorConfig::Adwin(AdwinConfig::default()),
        ] {
            let json = serde_json::to_value(&config).expect("serialize");
            assert_eq!(json["kind"], config.kind());
            let back: DetectorConfig = serde_json::from_value(json).expect("deserialize");
            assert_eq!(back, config);
            let detector = config.build().expect("defaults are valid");
            assert_eq!(detector.kind(), config.kind());
        }
    }

    #[test]
    fn invalid_parameters_are_errors_with_readable_messages() {
        let cases = [
            (
                DetectorConfig::Adwin(AdwinConfig {
                    delta: 1.5,
                    ..AdwinConfig::default()
                }),
                "`delta` must be in (0, 1), got 1.5",
            ),
            (
                DetectorConfig::Ddm(DdmConfig {
                    warm_start: 0,
                    ..DdmConfig::default()
                }),
                "`warm_start` must be at least 1, got 0",
            ),
            (
                DetectorConfig::Ddm(DdmConfig {
                    warning_threshold: 4.0,
                    ..DdmConfig::default()
                }),
                "`warning_threshold` (4) must not exceed `drift_threshold` (3)",
            ),
            (
                DetectorConfig::PageHinkley(PageHinkleyConfig {
                    threshold: -1.0,
                    ..PageHinkleyConfig::default()
                }),
                "`threshold` must be a finite number >= 0, got -1",
            ),
            (
                DetectorConfig::PageHinkley(PageHinkleyConfig {
                    alpha: 0.0,
                    ..PageHinkleyConfig::default()
                }),
                "`alpha` must be in (0, 1], got 0",
            ),
            (
                DetectorConfig::Adwin(AdwinConfig {
                    clock: 0,
                    ..AdwinConfig::default()
                }),
                "`clock` must be at least 1, got 0",
            ),
        ];
        for (config, message) in cases {
            let error = config.build().expect_err(message);
            assert_eq!(error.to_string(), message);
            assert_eq!(config.validate(), Err(error));
        }
    }

    #[test]
    fn running_mean_matches_the_incremental_formula() {
        let mut mean = RunningMean::default();
        for x in [-5.0, -3.0, -1.0, 1.0, 3.0, 5.0] {
            mean.update(x);
        }
        assert_eq!(mean.n(), 6.0);
        assert_eq!(mean.get(), 0.0);
    }

    #[test]
    fn signals_serialize_in_snake_case() {
        assert_eq!(
            serde_json::to_string(&DriftSignal::Warning).expect("json"),
            "\"warning\""
        );
        assert!(DriftSignal::Drift.is_drift() && !DriftSignal::Drift.is_warning());
        assert_eq!(DriftSignal::default(), DriftSignal::None);
    }
}
