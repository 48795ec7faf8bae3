//! The Page-Hinkley test for a change in the mean of a stream.

use serde::{Deserialize, Serialize};

use super::{check_non_negative, DriftDetector, DriftError, DriftSignal, RunningMean};

/// Which changes of the mean [`PageHinkley`] looks for.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum PageHinkleyMode {
    /// Increases only (e.g. of an error rate).
    Up,
    /// Decreases only (e.g. of a quality score).
    Down,
    /// Both.
    #[default]
    Both,
}

/// Parameters of [`PageHinkley`]; the defaults are `river.drift.PageHinkley`'s.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct PageHinkleyConfig {
    /// Observations to see before any detection. Default 30; at least 1.
    pub min_instances: u64,
    /// Magnitude of change tolerated per observation (the test's drift term). Default 0.005;
    /// finite, at least 0.
    pub delta: f64,
    /// Detection threshold (lambda) on the cumulative deviation. Default 50; finite, at least 0.
    pub threshold: f64,
    /// Forgetting factor of the cumulative sums. Default 0.9999; in (0, 1].
    pub alpha: f64,
    /// Direction of the changes to detect. Default `both`.
    pub mode: PageHinkleyMode,
}

impl Default for PageHinkleyConfig {
    fn default() -> Self {
        Self {
            min_instances: 30,
            delta: 0.005,
            threshold: 50.0,
            alpha: 1.0 - 0.0001,
            mode: PageHinkleyMode::Both,
        }
    }
}

impl PageHinkleyConfig {
    /// Checks the parameters.
    pub fn validate(&self) -> Result<(), DriftError> {
        if self.min_instances == 0 {
            return Err(DriftError::out_of_range(
                "min_instances",
                "at least 1",
                self.min_instances,
            ));
        }
        check_non_negative("delta", self.delta)?;
        check_non_negative("threshold", self.threshold)?;
        if !(self.alpha > 0.0 && self.alpha <= 1.0) {
            return Err(DriftError::out_of_range("alpha", "in (0, 1]", self.alpha));
        }
        Ok(())
    }

    /// Builds the detector.
    pub fn build(self) -> Result<PageHinkley, DriftError> {
        PageHinkley::new(self)
    }
}

/// The Page-Hinkley test (Page, "Continuous Inspection Schemes", Biometrika 1954), a CUSUM
/// chart on the deviations of a stream from its running mean, with a forgetting factor.
///
/// With `m` the running mean after `x`, the detector keeps
///
/// - `up = alpha * up + (x - m) - delta` and its running minimum `up_min`,
/// - `down = alpha * down + (x - m) + delta` and its running maximum `down_max` (which starts at
///   -1, as in `river`),
///
/// and, once `min_instances` observations have been seen, signals [`DriftSignal::Drift`] when
/// `up - up_min > threshold` (an increase; modes `up` and `both`) or `down_max - down >
/// threshold` (a decrease; modes `down` and `both`). It never warns. The update after a drift
/// starts from scratch, as in `river`.
///
/// On an error stream (`0.0`/`1.0`), use mode `up` and a threshold suited to rates: the default
/// of 50 accumulated deviations of a rate below 1 takes hundreds of observations to reach.
#[derive(Debug, Clone)]
pub struct PageHinkley {
    config: PageHinkleyConfig,
    mean: RunningMean,
    sum_increase: f64,
    sum_decrease: f64,
    min_increase: f64,
    max_decrease: f64,
    drifted: bool,
}

impl Default for PageHinkley {
    fn default() -> Self {
        Self::fresh(PageHinkleyConfig::default())
    }
}

impl PageHinkley {
    /// A detector with these parameters, or the first invalid one.
    pub fn new(config: PageHinkleyConfig) -> Result<Self, DriftError> {
        config.validate()?;
        Ok(Self::fresh(config))
    }

    fn fresh(config: PageHinkleyConfig) -> Self {
        Self {
            config,
            mean: RunningMean::default(),
            sum_increase: 0.0,
            sum_decrease: 0.0,
            min_increase: f64::INFINITY,
            max_decrease: -1.0,
            drifted: false,
        }
    }

    /// The parameters.
    pub fn config(&self) -> &PageHinkleyConfig {
        &self.config
    }

    /// Observations since the last reset.
    pub fn n(&self) -> u64 {
        // The count is a whole number of updates, well within f64's exact integers.
        self.mean.n() as u64
    }

    /// The running mean since the last reset (0 before any observation).
    pub fn mean(&self) -> f64 {
        self.mean.get()
    }
}

impl DriftDetector for PageHinkley {
    fn update(&mut self, x: f64) -> DriftSignal {
        if self.drifted {
            self.reset();
        }
        self.mean.update(x);
        let deviation = x - self.mean.get();
        let alpha = self.config.alpha;
        self.sum_increase = alpha * self.sum_increase + deviation - self.config.delta;
        self.sum_decrease = alpha * self.sum_decrease + deviation + self.config.delta;
        if self.sum_increase < self.min_increase {
            self.min_increase = self.sum_increase;
        }
        if self.sum_decrease > self.max_decrease {
            self.max_decrease = self.sum_decrease;
        }
        // Precision loss is irrelevant: `min_instances` is a count of updates.
        if self.mean.n() < self.config.min_instances as f64 {
            return DriftSignal::None;
        }
        let increase = self.sum_increase - self.min_increase;
        let decrease = self.max_decrease - self.sum_decrease;
        let threshold = self.config.threshold;
        self.drifted = match self.config.mode {
            PageHinkleyMode::Up => increase > threshold,
            PageHinkleyMode::Down => decrease > threshold,
            PageHinkleyMode::Both => increase > threshold || decrease > threshold,
        };
        if self.drifted {
            DriftSignal::Drift
        } else {
            DriftSignal::None
        }
    }

    fn reset(&mut self) {
        *self = Self::fresh(self.config.clone());
    }

    fn kind(&self) -> &'static str {
        "page_hinkley"
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn first_drift(
        detector: &mut PageHinkley,
        stream: impl IntoIterator<Item = f64>,
    ) -> Option<usize> {
        stream
            .into_iter()
            .enumerate()
            .find_map(|(i, x)| detector.update(x).is_drift().then_some(i))
    }

    #[test]
    fn a_constant_stream_never_drifts() {
        let mut ph = PageHinkley::default();
        assert_eq!(first_drift(&mut ph, std::iter::repeat_n(3.0, 5_000)), None);
        assert_eq!(ph.n(), 5_000);
        assert_eq!(ph.mean(), 3.0);
    }

    #[test]
    fn hand_computed_increase() {
        // No forgetting, no tolerance, threshold 1.5: after 0, 0, 0 the sums are 0; x = 4 moves
        // the mean to 1 and adds a deviation of 3 to `up`, whose minimum is 0.
        let config = PageHinkleyConfig {
            min_instances: 1,
            delta: 0.0,
            threshold: 1.5,
            alpha: 1.0,
            mode: PageHinkleyMode::Up,
        };
        let mut ph = PageHinkley::new(config).expect("valid");
        assert_eq!(first_drift(&mut ph, [0.0, 0.0, 0.0, 4.0]), Some(3));
        // The next update starts over.
        assert_eq!(ph.update(4.0), DriftSignal::None);
        assert_eq!(ph.n(), 1);
    }

    #[test]
    fn modes_select_the_direction() {
        let up_then_down = || {
            std::iter::repeat_n(0.0, 100)
                .chain(std::iter::repeat_n(10.0, 100))
                .collect::<Vec<_>>()
        };
        let down = || {
            std::iter::repeat_n(10.0, 100)
                .chain(std::iter::repeat_n(0.0, 100))
                .collect::<Vec<_>>()
        };
        for (mode, rises, falls) in [
            (PageHinkleyMode::Up, true, false),
            (PageHinkleyMode::Down, false, true),
            (PageHinkleyMode::Both, true, true),
        ] {
            let config = PageHinkleyConfig {
                mode,
                ..PageHinkleyConfig::default()
            };
            let mut ph = PageHinkley::new(config.clone()).expect("valid");
            assert_eq!(
                first_drift(&mut ph, up_then_down()).is_some(),
                rises,
                "{mode:?}"
            );
            let mut ph = PageHinkley::new(config).expect("valid");
            assert_eq!(first_drift(&mut ph, down()).is_some(), falls, "{mode:?}");
        }
    }
}
