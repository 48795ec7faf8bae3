//! Sufficient statistics of one experiment arm: counts for a binary metric, and count, mean and
//! sample variance for a continuous one.

use serde::{Deserialize, Serialize};

/// Counts of a binary (success/failure) metric in one arm of an experiment.
///
/// Deserialized values are not checked; the tests return `None` when `successes > n`.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct BinarySummary {
    /// Number of units observed.
    pub n: u64,
    /// Number of those units with a success.
    pub successes: u64,
}

impl BinarySummary {
    /// Summary of `n` units of which `successes` succeeded; `None` when `successes > n`.
    pub fn new(n: u64, successes: u64) -> Option<Self> {
        (successes <= n).then_some(Self { n, successes })
    }

    /// Summary of a list of outcomes (`true` = success).
    pub fn from_outcomes(outcomes: &[bool]) -> Self {
        let mut summary = Self::default();
        for &success in outcomes {
            summary.add(success);
        }
        summary
    }

    /// Adds one observed unit.
    pub fn add(&mut self, success: bool) {
        self.n = self.n.saturating_add(1);
        if success {
            self.successes = self.successes.saturating_add(1);
        }
    }

    /// The success rate `successes / n`; `None` when `n = 0` or the counts are inconsistent.
    pub fn rate(&self) -> Option<f64> {
        (self.n > 0 && self.successes <= self.n).then(|| self.successes as f64 / self.n as f64)
    }

    /// `(n, rate)` when the summary is usable by a test: consistent counts and `n >= 2`.
    pub(crate) fn checked(&self) -> Option<(f64, f64)> {
        if self.n < 2 {
            return None;
        }
        Some((self.n as f64, self.rate()?))
    }
}

/// Error of [`ContinuousSummary::add`]: the observation was NaN or infinite.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[error("observation is not a finite number")]
pub struct NonFiniteValue;

/// Count, mean and sample variance (denominator `n - 1`) of a continuous metric in one arm.
///
/// Built with Welford's online algorithm, which avoids the cancellation of the
/// sum-of-squares formula. The variance of a summary with `n < 2` is 0.
#[derive(Debug, Clone, Copy, Default, PartialEq, Serialize, Deserialize)]
pub struct ContinuousSummary {
    /// Number of observations.
    pub n: u64,
    /// Mean of the observations (0 when `n = 0`).
    pub mean: f64,
    /// Sample variance of the observations, with denominator `n - 1` (0 when `n < 2`).
    pub variance: f64,
}

impl ContinuousSummary {
    /// Summary from already aggregated values; `None` when `mean` or `variance` is not finite or
    /// `variance < 0`.
    pub fn new(n: u64, mean: f64, variance: f64) -> Option<Self> {
        (mean.is_finite() && variance.is_finite() && variance >= 0.0).then_some(Self {
            n,
            mean,
            variance,
        })
    }

    /// Summary of a list of observations; `None` when one of them is NaN or infinite.
    pub fn from_values(values: &[f64]) -> Option<Self> {
        // Welford with the sum of squared deviations kept exactly (not rebuilt from the
        // variance at every step as `add` has to).
        let mut n = 0_u64;
        let mut mean = 0.0_f64;
        let mut m2 = 0.0_f64;
        for &x in values {
            if !x.is_finite() {
                return None;
            }
            n += 1;
            let delta = x - mean;
            mean += delta / n as f64;
            m2 += delta * (x - mean);
        }
        let variance = if n >= 2 { m2 / (n - 1) as f64 } else { 0.0 };
        Self::new(n, mean, variance)
    }

    /// Adds one observation (one Welford step). A NaN or infinite value is refused and leaves
    /// the summary unchanged.
    pub fn add(&mut self, value: f64) -> Result<(), NonFiniteValue> {
        if !value.is_finite() {
            return Err(NonFiniteValue);
        }
        let old_n = self.n as f64;
        let m2 = if self.n >= 2 {
            self.variance * (old_n - 1.0)
        } else {
            0.0
        };
        let n = old_n + 1.0;
        let delta = value - self.mean;
        let mean = self.mean + delta / n;
        let m2 = m2 + delta * (value - mean);
        let variance = if n >= 2.0 { m2 / (n - 1.0) } else { 0.0 };
        if !mean.is_finite() || !variance.is_finite() {
            return Err(NonFiniteValue);
        }
        self.n = self.n.saturating_add(1);
        self.mean = mean;
        self.variance = variance.max(0.0);
        Ok(())
    }

    /// `(n, mean, variance)` when the summary is usable by a test: `n >= 2`, finite values and
    /// `variance >= 0`.
    pub(crate) fn checked(&self) -> Option<(f64, f64, f64)> {
        (self.n >= 2 && self.mean.is_finite() && self.variance.is_finite() && self.variance >= 0.0)
            .then_some((self.n as f64, self.mean, self.variance))
    }
}

/// A per-arm summary whose mean the sequential test compares: it gives the number of units and
/// the mean and variance of one unit's outcome.
pub trait ArmSummary {
    /// `(n, mean, variance of one observation)`, or `None` when the summary is unusable (fewer
    /// than two units, inconsistent or non-finite values).
    fn moments(&self) -> Option<(f64, f64, f64)>;
}

impl ArmSummary for BinarySummary {
    /// The plug-in (Bernoulli) variance `p (1 - p)` of the observed rate `p`.
    fn moments(&self) -> Option<(f64, f64, f64)> {
        let (n, p) = self.checked()?;
        Some((n, p, p * (1.0 - p)))
    }
}

impl ArmSummary for ContinuousSummary {
    /// The sample variance.
    fn moments(&self) -> Option<(f64, f64, f64)> {
        self.checked()
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    #[test]
    fn binary_counts() {
        let mut s = BinarySummary::from_outcomes(&[true, false, true, true]);
        assert_eq!(s, BinarySummary { n: 4, successes: 3 });
        s.add(false);
        assert_eq!(s.rate(), Some(0.6));
        assert!(BinarySummary::new(3, 4).is_none());
        assert_eq!(BinarySummary::default().rate(), None);
        assert_eq!(BinarySummary { n: 1, successes: 1 }.checked(), None);
        assert_eq!(BinarySummary { n: 2, successes: 3 }.checked(), None);
    }

    #[test]
    fn welford_matches_two_pass() {
        let values = [2.0, 4.0, 4.0, 4.0, 5.0, 5.0, 7.0, 9.0];
        let s = ContinuousSummary::from_values(&values).unwrap();
        assert_eq!(s.n, 8);
        assert!((s.mean - 5.0).abs() < 1e-15);
        // Sum of squared deviations 32, over n - 1 = 7.
        assert!((s.variance - 32.0 / 7.0).abs() < 1e-14);

        let mut online = ContinuousSummary::default();
        for &x in &values {
            online.add(x).unwrap();
        }
        assert_eq!(online.n, 8);
        assert!((online.mean - s.mean).abs() < 1e-14);
        assert!((online.variance - s.variance).abs() < 1e-13);
    }

    #[test]
    fn welford_is_stable_with_a_large_offset() {
        // The naive sum-of-squares formula loses every digit here.
        let values: Vec<f64> = [4.0, 7.0, 13.0, 16.0].iter().map(|x| x + 1e9).collect();
        let s = ContinuousSummary::from_values(&values).unwrap();
        assert!((s.variance - 30.0).abs() < 1e-6);
    }

    #[test]
    fn rejects_non_finite_values() {
        assert!(ContinuousSummary::from_values(&[1.0, f64::NAN]).is_none());
        assert!(ContinuousSummary::from_values(&[f64::INFINITY]).is_none());
        let mut s = ContinuousSummary::from_values(&[1.0, 2.0]).unwrap();
        assert_eq!(s.add(f64::NEG_INFINITY), Err(NonFiniteValue));
        assert_eq!(s.n, 2);
        assert!(ContinuousSummary::new(3, 1.0, -1.0).is_none());
        assert_eq!(ContinuousSummary::from_values(&[]).unwrap().n, 0);
        assert_eq!(
            ContinuousSummary::from_values(&[3.0]).unwrap().checked(),
            None
        );
    }

    #[test]
    fn moments_of_each_kind() {
        let b = BinarySummary {
            n: 10,
            successes: 4,
        };
        let (n, mean, var) = b.moments().unwrap();
        assert_eq!((n, mean), (10.0, 0.4));
        assert!((var - 0.24).abs() < 1e-15);
        let c = ContinuousSummary::new(5, 2.0, 3.0).unwrap();
        assert_eq!(c.moments(), Some((5.0, 2.0, 3.0)));
    }
}
