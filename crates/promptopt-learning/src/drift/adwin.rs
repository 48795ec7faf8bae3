//! ADWIN, adaptive windowing, with the exponential-histogram compression of ADWIN2.

use std::collections::VecDeque;

use serde::{Deserialize, Serialize};

use super::{DriftDetector, DriftError, DriftSignal};

/// Parameters of [`Adwin`]; the defaults are `river.drift.ADWIN`'s.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct AdwinConfig {
    /// Confidence of the cut test: a lower value means fewer false alarms and later detections.
    /// Default 0.002; in (0, 1).
    pub delta: f64,
    /// The window is checked for a change every `clock` observations. Default 32; at least 1.
    pub clock: u64,
    /// Buckets of each size kept before the two oldest are merged. Default 5; at least 1.
    pub max_buckets: usize,
    /// Smallest sub-window length considered by the cut test. Default 5; at least 1.
    pub min_window_length: u64,
    /// No check until the window holds more than this many observations. Default 10.
    pub grace_period: u64,
}

impl Default for AdwinConfig {
    fn default() -> Self {
        Self {
            delta: 0.002,
            clock: 32,
            max_buckets: 5,
            min_window_length: 5,
            grace_period: 10,
        }
    }
}

impl AdwinConfig {
    /// Checks the parameters.
    pub fn validate(&self) -> Result<(), DriftError> {
        if !(self.delta > 0.0 && self.delta < 1.0) {
            return Err(DriftError::out_of_range("delta", "in (0, 1)", self.delta));
        }
        let at_least_one = [
            ("clock", self.clock),
            ("max_buckets", self.max_buckets as u64),
            ("min_window_length", self.min_window_length),
        ];
        for (name, value) in at_least_one {
            if value == 0 {
                return Err(DriftError::out_of_range(name, "at least 1", value));
            }
        }
        Ok(())
    }

    /// Builds the detector.
    pub fn build(self) -> Result<Adwin, DriftError> {
        Adwin::new(self)
    }
}

/// A summary of `2^level` consecutive observations: their sum and the sum of their squared
/// deviations from their mean.
#[derive(Debug, Clone, Copy)]
struct Bucket {
    total: f64,
    variance: f64,
}

/// ADWIN (Bifet and Gavaldà, "Learning from Time-Changing Data with Adaptive Windowing", SDM
/// 2007) in its compressed form ADWIN2, as implemented by `river.drift.ADWIN`.
///
/// The detector keeps a window of recent observations, summarised in buckets: `levels[i]` holds
/// up to `max_buckets` buckets of `2^i` observations each, oldest first, and when a level holds
/// one bucket too many its two oldest are merged into one bucket of the next level. Every
/// `clock` observations (once the window is longer than `grace_period`), each split of the
/// window at a bucket boundary into an older part `W0` (`n0` observations, mean `m0`) and a
/// newer part `W1` (`n1`, `m1`), both at least `min_window_length` long, is tested, oldest
/// boundary first: with `n` and `σ²` the length and variance of the window,
/// `d' = ln(2 ln(n) / delta)` and `k = 1 / (n0 - min_window_length + 1) + 1 / (n1 -
/// min_window_length + 1)`, the window is cut when
///
/// `|m0 - m1| > sqrt(2 k σ² d') + 2/3 d' k`.
///
/// A cut drops the oldest bucket and the test runs again on the shorter window, until no split
/// passes; [`DriftSignal::Drift`] is signalled if at least one cut happened. The update after a
/// drift starts from an empty window, as `river` does. ADWIN never warns.
///
/// The test assumes values in a bounded range (e.g. 0/1 outcomes or scores in [0, 1]).
#[derive(Debug, Clone)]
pub struct Adwin {
    config: AdwinConfig,
    levels: Vec<VecDeque<Bucket>>,
    width: f64,
    total: f64,
    variance: f64,
    ticks: u64,
    drifted: bool,
}

impl Default for Adwin {
    fn default() -> Self {
        Self::fresh(AdwinConfig::default())
    }
}

/// The number of observations in a bucket of `level`.
fn bucket_size(level: usize) -> f64 {
    // Levels stay far below 64: a window of 2^64 observations is out of reach.
    (1u64 << level) as f64
}

impl Adwin {
    /// A detector with these parameters, or the first invalid one.
    pub fn new(config: AdwinConfig) -> Result<Self, DriftError> {
        config.validate()?;
        Ok(Self::fresh(config))
    }

    fn fresh(config: AdwinConfig) -> Self {
        Self {
            config,
            levels: vec![VecDeque::new()],
            width: 0.0,
            total: 0.0,
            variance: 0.0,
            ticks: 0,
            drifted: false,
        }
    }

    /// The parameters.
    pub fn config(&self) -> &AdwinConfig {
        &self.config
    }

    /// Observations in the current window.
    pub fn width(&self) -> u64 {
        // The width is a whole number of observations, well within f64's exact integers.
        self.width as u64
    }

    /// Sum of the observations in the window.
    pub fn total(&self) -> f64 {
        self.total
    }

    /// Sum of the squared deviations of the window's observations from their mean (`river`'s
    /// `variance`; divide by the width for the variance).
    pub fn variance(&self) -> f64 {
        self.variance
    }

    /// Mean of the window, 0 when it is empty.
    pub fn estimation(&self) -> f64 {
        if self.width == 0.0 {
            0.0
        } else {
            self.total / self.width
        }
    }

    /// Number of buckets over all levels.
    pub fn bucket_count(&self) -> usize {
        self.levels.iter().map(VecDeque::len).sum()
    }

    fn insert(&mut self, x: f64) {
        if let Some(first) = self.levels.first_mut() {
            first.push_back(Bucket {
                total: x,
                variance: 0.0,
            });
        }
        self.width += 1.0;
        let mut added = 0.0;
        if self.width > 1.0 {
            let gap = x - self.total / (self.width - 1.0);
            added = (self.width - 1.0) * gap * gap / self.width;
        }
        self.variance += added;
        self.total += x;
        self.compress();
    }

    /// Merges the two oldest buckets of every level that holds too many, from the first level up.
    fn compress(&mut self) {
        let mut level = 0;
        while level < self.levels.len() && self.levels[level].len() > self.config.max_buckets {
            let (Some(older), Some(newer)) = (
                self.levels[level].pop_front(),
                self.levels[level].pop_front(),
            ) else {
                break;
            };
            let size = bucket_size(level);
            let gap = older.total / size - newer.total / size;
            let merged = Bucket {
                total: older.total + newer.total,
                variance: older.variance + newer.variance + size * 0.5 * gap * gap,
            };
            if level + 1 == self.levels.len() {
                self.levels.push(VecDeque::new());
            }
            self.levels[level + 1].push_back(merged);
            level += 1;
        }
    }

    /// Drops the oldest bucket from the window.
    fn drop_oldest(&mut self) {
        let level = self.levels.len() - 1;
        let Some(bucket) = self.levels[level].pop_front() else {
            return;
        };
        let size = bucket_size(level);
        let bucket_mean = bucket.total / size;
        self.width -= size;
        self.total -= bucket.total;
        let window_mean = self.total / self.width;
        let gap = bucket_mean - window_mean;
        self.variance -= bucket.variance + size * self.width * gap * gap / (size + self.width);
        // Levels emptied by merges (possible with `max_buckets` = 1) must not become the oldest.
        while self.levels.len() > 1 && self.levels.last().is_some_and(VecDeque::is_empty) {
            self.levels.pop();
        }
    }

    /// Whether the split into `n0` older and `n1` newer observations whose means differ by
    /// `mean_gap` is significant.
    fn is_cut(&self, n0: f64, n1: f64, mean_gap: f64) -> bool {
        let min = self.config.min_window_length as f64;
        let log_term = (2.0 * self.width.ln() / self.config.delta).ln();
        let harmonic = 1.0 / (n0 - min + 1.0) + 1.0 / (n1 - min + 1.0);
        let epsilon = (2.0 * harmonic * (self.variance / self.width) * log_term).sqrt()
            + 2.0 / 3.0 * log_term * harmonic;
        mean_gap.abs() > epsilon
    }

    /// Scans the splits of the window, oldest first; true at the first significant one.
    fn find_cut(&self) -> bool {
        let min = self.config.min_window_length as f64;
        let (mut n0, mut n1) = (0.0, self.width);
        let (mut sum0, mut sum1) = (0.0, self.total);
        for (level, buckets) in self.levels.iter().enumerate().rev() {
            let size = bucket_size(level);
            for (k, bucket) in buckets.iter().enumerate() {
                n0 += size;
                n1 -= size;
                sum0 += bucket.total;
                sum1 -= bucket.total;
                if level == 0 && k + 1 == buckets.len() {
                    // The newest observation: no split left.
                    return false;
                }
                let mean_gap = sum0 / n0 - sum1 / n1;
                if n1 >= min && n0 >= min && self.is_cut(n0, n1, mean_gap) {
                    return true;
                }
            }
        }
        false
    }
}

impl DriftDetector for Adwin {
    fn update(&mut self, x: f64) -> DriftSignal {
        if self.drifted {
            self.reset();
        }
        self.insert(x);
        self.ticks += 1;
        // Precision loss is irrelevant: `grace_period` is a count of observations.
        if self.ticks % self.config.clock != 0 || self.width <= self.config.grace_period as f64 {
            return DriftSignal::None;
        }
        while self.find_cut() {
            self.drifted = true;
            self.drop_oldest();
        }
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
        "adwin"
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn exact_variance(values: &[f64]) -> f64 {
        let mean = values.iter().sum::<f64>() / values.len() as f64;
        values.iter().map(|v| (v - mean) * (v - mean)).sum()
    }

    #[test]
    fn the_window_tracks_sum_and_squared_deviations() {
        let mut adwin = Adwin::default();
        let values = [1.0, 2.0, 3.0, 4.0, 5.0];
        for v in values {
            assert_eq!(adwin.update(v), DriftSignal::None);
        }
        assert_eq!(adwin.width(), 5);
        assert_eq!(adwin.total(), 15.0);
        assert!((adwin.variance() - exact_variance(&values)).abs() < 1e-12);
        assert_eq!(adwin.estimation(), 3.0);
    }

    #[test]
    fn buckets_are_compressed_exponentially() {
        let mut adwin = Adwin::new(AdwinConfig {
            max_buckets: 2,
            ..AdwinConfig::default()
        })
        .expect("valid");
        let values: Vec<f64> = (0..20).map(|i| f64::from(i % 3)).collect();
        for &v in &values {
            adwin.update(v);
        }
        // With at most two buckets per level, 20 observations take at most 2 per level over
        // five levels (1 + 2 + 4 + 8 + 16 > 20).
        assert!(adwin.bucket_count() <= 10, "{}", adwin.bucket_count());
        let sizes: f64 = adwin
            .levels
            .iter()
            .enumerate()
            .map(|(level, b)| b.len() as f64 * bucket_size(level))
            .sum();
        assert_eq!(sizes, 20.0);
        assert!((adwin.variance() - exact_variance(&values)).abs() < 1e-9);
    }

    #[test]
    fn a_constant_stream_never_drifts() {
        let mut adwin = Adwin::default();
        for _ in 0..5_000 {
            assert_eq!(adwin.update(1.0), DriftSignal::None);
        }
        assert_eq!(adwin.width(), 5_000);
        assert_eq!(adwin.estimation(), 1.0);
    }

    #[test]
    fn an_abrupt_shift_is_detected_and_the_window_restarts() {
        let mut adwin = Adwin::new(AdwinConfig {
            clock: 1,
            ..AdwinConfig::default()
        })
        .expect("valid");
        for _ in 0..500 {
            assert_eq!(adwin.update(0.0), DriftSignal::None);
        }
        let detected = (0..500).find(|_| adwin.update(1.0).is_drift());
        // `river` detects this jump at the eleventh one, with 383 observations left in the
        // window.
        assert_eq!(detected, Some(10));
        assert_eq!(adwin.width(), 383);
        assert_eq!(adwin.estimation(), 11.0 / 383.0);
        assert_eq!(adwin.update(1.0), DriftSignal::None);
        assert_eq!(adwin.width(), 1);
    }

    #[test]
    fn checks_happen_only_on_the_clock() {
        let mut adwin = Adwin::default();
        let signals: Vec<_> = std::iter::repeat_n(0.0, 200)
            .chain(std::iter::repeat_n(1.0, 200))
            .map(|x| adwin.update(x))
            .collect();
        let first = signals.iter().position(|s| s.is_drift()).expect("detected");
        assert_eq!((first + 1) % 32, 0, "{first}");
    }

    #[test]
    fn a_single_bucket_per_level_stays_consistent() {
        let mut adwin = Adwin::new(AdwinConfig {
            max_buckets: 1,
            clock: 1,
            ..AdwinConfig::default()
        })
        .expect("valid");
        let mut drifts = 0;
        for i in 0..3_000 {
            let x = if (i / 700) % 2 == 0 { 0.1 } else { 0.9 };
            if adwin.update(x).is_drift() {
                drifts += 1;
            }
            let sizes: f64 = adwin
                .levels
                .iter()
                .enumerate()
                .map(|(level, b)| b.len() as f64 * bucket_size(level))
                .sum();
            assert_eq!(sizes, adwin.width);
        }
        assert!(drifts >= 3, "{drifts}");
    }
}
