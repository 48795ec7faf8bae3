//! DDM, the Drift Detection Method of Gama et al. (2004), on a binary error stream.

use serde::{Deserialize, Serialize};

use super::{check_non_negative, DriftDetector, DriftError, DriftSignal, RunningMean};

/// Parameters of [`Ddm`]; the defaults are `river.drift.binary.DDM`'s.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct DdmConfig {
    /// Observations to see before any warning or detection (the tests start once more than this
    /// many have been seen). Default 30; at least 1.
    pub warm_start: u64,
    /// Warning when `p + s > p_min + warning_threshold * s_min`. Default 2.0 (about 95 %
    /// confidence).
    pub warning_threshold: f64,
    /// Drift when `p + s > p_min + drift_threshold * s_min`. Default 3.0 (about 99 %
    /// confidence); not below `warning_threshold`.
    pub drift_threshold: f64,
}

impl Default for DdmConfig {
    fn default() -> Self {
        Self {
            warm_start: 30,
            warning_threshold: 2.0,
            drift_threshold: 3.0,
        }
    }
}

impl DdmConfig {
    /// Checks the parameters.
    pub fn validate(&self) -> Result<(), DriftError> {
        if self.warm_start == 0 {
            return Err(DriftError::out_of_range(
                "warm_start",
                "at least 1",
                self.warm_start,
            ));
        }
        check_non_negative("warning_threshold", self.warning_threshold)?;
        check_non_negative("drift_threshold", self.drift_threshold)?;
        if self.warning_threshold > self.drift_threshold {
            return Err(DriftError::Inconsistent {
                first: "warning_threshold",
                first_value: self.warning_threshold.to_string(),
                second: "drift_threshold",
                second_value: self.drift_threshold.to_string(),
            });
        }
        Ok(())
    }

    /// Builds the detector.
    pub fn build(self) -> Result<Ddm, DriftError> {
        Ddm::new(self)
    }
}

/// Drift Detection Method (Gama, Medas, Castillo and Rodrigues, "Learning with Drift
/// Detection", SBIA 2004) on a stream of errors: `1.0` (or `update_error(true)`) for a wrong or
/// failed prediction, `0.0` for a right one.
///
/// After `n` observations the error rate is `p` (a running mean) with standard deviation
/// `s = sqrt(p (1 - p) / n)`. Once more than `warm_start` observations have been seen, the
/// detector remembers the `p_min`, `s_min` at which `p + s` was lowest so far (ties update them)
/// and signals
///
/// - [`DriftSignal::Drift`] when `p + s > p_min + drift_threshold * s_min`,
/// - otherwise [`DriftSignal::Warning`] when `p + s > p_min + warning_threshold * s_min`.
///
/// The update after a drift starts from scratch (warm-up included), as in `river`. The input is
/// used as a number, as `river` does: values other than 0 and 1 are not meaningful.
#[derive(Debug, Clone)]
pub struct Ddm {
    config: DdmConfig,
    errors: RunningMean,
    p_min: f64,
    s_min: f64,
    ps_min: f64,
    drifted: bool,
}

impl Default for Ddm {
    fn default() -> Self {
        Self::fresh(DdmConfig::default())
    }
}

impl Ddm {
    /// A detector with these parameters, or the first invalid one.
    pub fn new(config: DdmConfig) -> Result<Self, DriftError> {
        config.validate()?;
        Ok(Self::fresh(config))
    }

    fn fresh(config: DdmConfig) -> Self {
        Self {
            config,
            errors: RunningMean::default(),
            p_min: f64::NAN,
            s_min: f64::NAN,
            ps_min: f64::INFINITY,
            drifted: false,
        }
    }

    /// The parameters.
    pub fn config(&self) -> &DdmConfig {
        &self.config
    }

    /// Observations since the last reset.
    pub fn n(&self) -> u64 {
        // The count is a whole number of updates, well within f64's exact integers.
        self.errors.n() as u64
    }

    /// The error rate since the last reset (0 before any observation).
    pub fn error_rate(&self) -> f64 {
        self.errors.get()
    }

    /// The error rate and its standard deviation at the lowest `p + s` seen after the warm-up,
    /// `None` before that.
    pub fn minimum(&self) -> Option<(f64, f64)> {
        self.ps_min.is_finite().then_some((self.p_min, self.s_min))
    }
}

impl DriftDetector for Ddm {
    fn update(&mut self, x: f64) -> DriftSignal {
        if self.drifted {
            self.reset();
        }
        self.errors.update(x);
        let p = self.errors.get();
        let n = self.errors.n();
        let s = (p * (1.0 - p) / n).sqrt();
        // Precision loss is irrelevant: `warm_start` is a count of updates.
        if n <= self.config.warm_start as f64 {
            return DriftSignal::None;
        }
        if p + s <= self.ps_min {
            self.p_min = p;
            self.s_min = s;
            self.ps_min = self.p_min + self.s_min;
        }
        if p + s > self.p_min + self.config.drift_threshold * self.s_min {
            self.drifted = true;
            DriftSignal::Drift
        } else if p + s > self.p_min + self.config.warning_threshold * self.s_min {
            DriftSignal::Warning
        } else {
            DriftSignal::None
        }
    }

    fn reset(&mut self) {
        *self = Self::fresh(self.config.clone());
    }

    fn kind(&self) -> &'static str {
        "ddm"
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn signals(detector: &mut Ddm, stream: &[u8]) -> Vec<DriftSignal> {
        stream
            .iter()
            .map(|&x| detector.update_error(x == 1))
            .collect()
    }

    #[test]
    fn nothing_happens_during_the_warm_up() {
        let mut ddm = Ddm::default();
        let stream = [1u8; 30];
        assert!(signals(&mut ddm, &stream)
            .iter()
            .all(|s| *s == DriftSignal::None));
        assert_eq!(ddm.n(), 30);
        assert_eq!(ddm.minimum(), None);
    }

    #[test]
    fn an_error_burst_warns_then_drifts() {
        let config = DdmConfig {
            warm_start: 5,
            ..DdmConfig::default()
        };
        let mut ddm = Ddm::new(config).expect("valid");
        // One error in five, then nothing but errors: `river` warns at 43 to 46 and detects the
        // drift at 47 on this stream.
        let mut stream = [1u8, 0, 0, 0, 0].repeat(8);
        stream.extend([1u8; 10]);
        let got = signals(&mut ddm, &stream);
        let at = |wanted: DriftSignal| -> Vec<usize> {
            (0..got.len()).filter(|&i| got[i] == wanted).collect()
        };
        assert_eq!(at(DriftSignal::Warning), vec![43, 44, 45, 46]);
        assert_eq!(at(DriftSignal::Drift), vec![47]);
        // The update after the drift started over: only two observations since.
        assert_eq!(ddm.n(), 2);
        assert_eq!(ddm.error_rate(), 1.0);
    }

    #[test]
    fn after_an_error_free_warm_up_the_first_error_is_a_drift() {
        // With no error at all, p_min = s_min = 0: the lowest possible bar, as in the original
        // method and in `river`.
        let mut ddm = Ddm::default();
        let mut stream = vec![0u8; 40];
        stream.push(1);
        let got = signals(&mut ddm, &stream);
        assert_eq!(got.iter().position(|s| s.is_drift()), Some(40));
    }

    #[test]
    fn the_minimum_follows_the_lowest_p_plus_s() {
        let mut ddm = Ddm::new(DdmConfig {
            warm_start: 1,
            ..DdmConfig::default()
        })
        .expect("valid");
        ddm.update(1.0);
        ddm.update(0.0);
        // n = 2, p = 0.5, s = sqrt(0.25 / 2).
        let (p, s) = ddm.minimum().expect("past the warm-up");
        assert_eq!(p, 0.5);
        assert_eq!(s, (0.25f64 / 2.0).sqrt());
        ddm.update(0.0);
        // n = 3, p = 1/3 (as a running mean), s = sqrt(p (1 - p) / 3): lower, so it is the new
        // minimum.
        let (p, _) = ddm.minimum().expect("past the warm-up");
        assert!((p - 1.0 / 3.0).abs() < 1e-15);
    }

    #[test]
    fn reset_forgets_the_stream() {
        let mut ddm = Ddm::default();
        for _ in 0..50 {
            ddm.update_error(true);
        }
        ddm.reset();
        assert_eq!(ddm.n(), 0);
        assert_eq!(ddm.error_rate(), 0.0);
        assert_eq!(ddm.minimum(), None);
    }
}
