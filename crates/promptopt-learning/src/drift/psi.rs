//! Distribution drift between a reference sample and a current one: the population stability
//! index (PSI).
//!
//! With `e_i` and `a_i` the proportions of the reference ("expected") and current ("actual")
//! samples in bucket `i`,
//!
//! `PSI = Σ_i (a_i - e_i) · ln(a_i / e_i)`,
//!
//! where a proportion below [`PSI_EPSILON`] (an empty bucket) is replaced by [`PSI_EPSILON`] so
//! that every term is finite. The index is 0 for identical distributions and grows with the
//! shift; the usual reading is below 0.1 stable, 0.1 to 0.2 a moderate shift, above 0.2 a
//! significant one ([`PsiLevel`]).
//!
//! Numeric values (e.g. input lengths) are bucketed by the quantiles of the reference sample
//! ([`quantile_edges`], [`bucket_proportions`], [`psi_numeric`]), so each bucket holds about the
//! same share of the reference; labels (e.g. predicted classes) are compared through their
//! counts ([`psi_categorical`]).

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

use super::{check_non_negative, DriftError};

/// The proportion that stands in for an empty bucket (and any smaller one) in [`psi`].
pub const PSI_EPSILON: f64 = 1e-4;
/// PSI from which a shift is usually called moderate.
pub const PSI_MODERATE: f64 = 0.1;
/// PSI above which a shift is usually called significant: the default threshold.
pub const PSI_SIGNIFICANT: f64 = 0.2;

/// The population stability index of `actual` against `expected`, two lists of bucket
/// proportions in the same bucket order (each should sum to 1).
///
/// Proportions below [`PSI_EPSILON`] count as [`PSI_EPSILON`]; a bucket missing from the shorter
/// list counts as empty.
///
/// ```
/// use promptopt_learning::drift::psi::psi;
///
/// let value = psi(&[0.5, 0.5], &[0.25, 0.75]);
/// assert!((value - 0.25 * 3f64.ln()).abs() < 1e-12);
/// ```
pub fn psi(expected: &[f64], actual: &[f64]) -> f64 {
    let proportion = |list: &[f64], i: usize| list.get(i).copied().unwrap_or(0.0).max(PSI_EPSILON);
    (0..expected.len().max(actual.len()))
        .map(|i| {
            let (e, a) = (proportion(expected, i), proportion(actual, i));
            (a - e) * (a / e).ln()
        })
        .sum()
}

/// Bucket edges at the quantiles `1/buckets, 2/buckets, …` of `reference` (linear interpolation
/// between order statistics, NumPy's default), ascending, with repeated edges dropped (so a
/// sample with many ties, such as short integer lengths, gets fewer buckets). Non-finite values
/// are ignored; an empty reference or `buckets <= 1` gives no edge (a single bucket).
///
/// `edges.len() + 1` buckets follow, closed on the right: `(-inf, e_0]`, `(e_0, e_1]`, …,
/// `(e_last, inf)`.
pub fn quantile_edges(reference: &[f64], buckets: usize) -> Vec<f64> {
    let mut sorted: Vec<f64> = reference
        .iter()
        .copied()
        .filter(|v| v.is_finite())
        .collect();
    if sorted.is_empty() || buckets <= 1 {
        return Vec::new();
    }
    sorted.sort_by(f64::total_cmp);
    let last = (sorted.len() - 1) as f64;
    let mut edges: Vec<f64> = Vec::with_capacity(buckets - 1);
    for i in 1..buckets {
        let position = last * i as f64 / buckets as f64;
        let below = position.floor();
        // `below` and `below + 1` are within 0..len: `position` is at most `last`.
        let low = sorted[below as usize];
        let high = sorted[(below as usize + 1).min(sorted.len() - 1)];
        let edge = low + (high - low) * (position - below);
        if edges.last().is_none_or(|&previous| edge > previous) {
            edges.push(edge);
        }
    }
    edges
}

/// The proportion of `values` in each bucket delimited by `edges` (ascending, as returned by
/// [`quantile_edges`]): `edges.len() + 1` numbers that sum to 1. NaN values are ignored; when
/// no value is left, every proportion is 0.
pub fn bucket_proportions(values: &[f64], edges: &[f64]) -> Vec<f64> {
    let mut counts = vec![0u64; edges.len() + 1];
    let mut total = 0u64;
    for &value in values.iter().filter(|v| !v.is_nan()) {
        counts[edges.partition_point(|&edge| edge < value)] += 1;
        total += 1;
    }
    proportions(&counts, total)
}

fn proportions(counts: &[u64], total: u64) -> Vec<f64> {
    counts
        .iter()
        .map(|&count| {
            if total == 0 {
                0.0
            } else {
                count as f64 / total as f64
            }
        })
        .collect()
}

/// The PSI of the numeric sample `current` against `reference`, over `buckets` quantile buckets
/// of the reference (10 is customary; ties can leave fewer, see [`quantile_edges`]).
pub fn psi_numeric(reference: &[f64], current: &[f64], buckets: usize) -> f64 {
    NumericBaseline::new(reference, buckets).psi(current)
}

/// The PSI of the label counts `current` against `reference`.
///
/// Each label of the reference is a bucket (a label with a count of 0 included); labels absent
/// from the reference are pooled into one more bucket, whose reference proportion is 0, so that
/// any number of new labels (e.g. malformed outputs) weighs as one new category. An empty
/// sample has every proportion 0.
pub fn psi_categorical(reference: &BTreeMap<String, u64>, current: &BTreeMap<String, u64>) -> f64 {
    let reference_total = reference.values().sum();
    let current_total = current.values().sum();
    let mut expected: Vec<u64> = reference.values().copied().collect();
    expected.push(0);
    let mut actual: Vec<u64> = reference
        .keys()
        .map(|label| current.get(label).copied().unwrap_or(0))
        .collect();
    actual.push(
        current
            .iter()
            .filter(|(label, _)| !reference.contains_key(*label))
            .map(|(_, count)| count)
            .sum(),
    );
    psi(
        &proportions(&expected, reference_total),
        &proportions(&actual, current_total),
    )
}

/// A numeric reference sample reduced to its quantile buckets, to compare many later samples
/// with it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct NumericBaseline {
    /// The bucket edges, see [`quantile_edges`].
    pub edges: Vec<f64>,
    /// The reference's proportion in each bucket.
    pub proportions: Vec<f64>,
}

impl NumericBaseline {
    /// The baseline of `reference` over `buckets` quantile buckets.
    pub fn new(reference: &[f64], buckets: usize) -> Self {
        let edges = quantile_edges(reference, buckets);
        let proportions = bucket_proportions(reference, &edges);
        Self { edges, proportions }
    }

    /// The PSI of `current` against the reference.
    pub fn psi(&self, current: &[f64]) -> f64 {
        psi(&self.proportions, &bucket_proportions(current, &self.edges))
    }
}

/// The usual reading of a PSI value.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum PsiLevel {
    /// Below [`PSI_MODERATE`]: no meaningful shift.
    Stable,
    /// From [`PSI_MODERATE`] to [`PSI_SIGNIFICANT`]: worth a look.
    Moderate,
    /// Above [`PSI_SIGNIFICANT`]: the population has changed.
    Significant,
}

impl PsiLevel {
    /// The level of a PSI value (NaN reads as significant, so it is not silently ignored).
    pub fn of(psi: f64) -> Self {
        if psi < PSI_MODERATE {
            Self::Stable
        } else if psi <= PSI_SIGNIFICANT {
            Self::Moderate
        } else {
            Self::Significant
        }
    }
}

/// Parameters of [`PsiMonitor`].
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct PsiConfig {
    /// A PSI above this is a drift. Default 0.2 ([`PSI_SIGNIFICANT`]); finite, at least 0.
    pub threshold: f64,
    /// Quantile buckets for numeric values. Default 10; at least 2.
    pub buckets: usize,
}

impl Default for PsiConfig {
    fn default() -> Self {
        Self {
            threshold: PSI_SIGNIFICANT,
            buckets: 10,
        }
    }
}

impl PsiConfig {
    /// Checks the parameters.
    pub fn validate(&self) -> Result<(), DriftError> {
        check_non_negative("threshold", self.threshold)?;
        if self.buckets < 2 {
            return Err(DriftError::out_of_range(
                "buckets",
                "at least 2",
                self.buckets,
            ));
        }
        Ok(())
    }
}

/// The outcome of one PSI comparison.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct PsiCheck {
    /// The index.
    pub psi: f64,
    /// The threshold it was compared with.
    pub threshold: f64,
    /// Whether the index is above the threshold (or NaN).
    pub exceeded: bool,
    /// Its usual reading, independent of the threshold.
    pub level: PsiLevel,
}

/// Compares samples with a reference by PSI and flags those above a threshold.
///
/// ```
/// use std::collections::BTreeMap;
/// use promptopt_learning::drift::{PsiConfig, PsiMonitor};
///
/// let monitor = PsiMonitor::new(PsiConfig::default())?;
/// let reference = BTreeMap::from([("yes".to_string(), 50), ("no".to_string(), 50)]);
/// let current = BTreeMap::from([("yes".to_string(), 80), ("no".to_string(), 20)]);
/// let check = monitor.categorical(&reference, &current);
/// assert!(check.exceeded);
/// # Ok::<(), promptopt_learning::drift::DriftError>(())
/// ```
#[derive(Debug, Clone, Default, PartialEq)]
pub struct PsiMonitor {
    config: PsiConfig,
}

impl PsiMonitor {
    /// A monitor with these parameters, or the first invalid one.
    pub fn new(config: PsiConfig) -> Result<Self, DriftError> {
        config.validate()?;
        Ok(Self { config })
    }

    /// The parameters.
    pub fn config(&self) -> &PsiConfig {
        &self.config
    }

    /// Reads a PSI value against the threshold.
    pub fn check(&self, psi: f64) -> PsiCheck {
        PsiCheck {
            psi,
            threshold: self.config.threshold,
            exceeded: psi > self.config.threshold || psi.is_nan(),
            level: PsiLevel::of(psi),
        }
    }

    /// Compares two lists of bucket proportions, see [`psi`].
    pub fn proportions(&self, expected: &[f64], actual: &[f64]) -> PsiCheck {
        self.check(psi(expected, actual))
    }

    /// Compares a numeric sample with a reference sample, over the configured number of
    /// quantile buckets, see [`psi_numeric`].
    pub fn numeric(&self, reference: &[f64], current: &[f64]) -> PsiCheck {
        self.check(psi_numeric(reference, current, self.config.buckets))
    }

    /// The baseline of a numeric reference sample, over the configured number of buckets, to
    /// compare with many samples through [`PsiMonitor::baseline`].
    pub fn numeric_baseline(&self, reference: &[f64]) -> NumericBaseline {
        NumericBaseline::new(reference, self.config.buckets)
    }

    /// Compares a numeric sample with a baseline.
    pub fn baseline(&self, baseline: &NumericBaseline, current: &[f64]) -> PsiCheck {
        self.check(baseline.psi(current))
    }

    /// Compares label counts with reference counts, see [`psi_categorical`].
    pub fn categorical(
        &self,
        reference: &BTreeMap<String, u64>,
        current: &BTreeMap<String, u64>,
    ) -> PsiCheck {
        self.check(psi_categorical(reference, current))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn close(actual: f64, expected: f64) {
        assert!((actual - expected).abs() < 1e-12, "{actual} != {expected}");
    }

    fn counts(pairs: &[(&str, u64)]) -> BTreeMap<String, u64> {
        pairs.iter().map(|(k, v)| (k.to_string(), *v)).collect()
    }

    #[test]
    fn psi_by_hand() {
        close(psi(&[0.5, 0.5], &[0.5, 0.5]), 0.0);
        // 0.25 ln 2 + 0.25 ln 1.5 = 0.25 ln 3.
        close(psi(&[0.5, 0.5], &[0.25, 0.75]), 0.25 * 3f64.ln());
        // Symmetric in its two arguments.
        close(psi(&[0.25, 0.75], &[0.5, 0.5]), 0.25 * 3f64.ln());
        // An empty reference bucket: (0.1 - 1e-4) ln(0.1 / 1e-4) + (0.4 - 0.5) ln(0.4 / 0.5).
        close(
            psi(&[0.5, 0.5, 0.0], &[0.5, 0.4, 0.1]),
            0.0999 * 1000f64.ln() + 0.1 * 1.25f64.ln(),
        );
        // A missing bucket counts as empty.
        close(
            psi(&[0.5, 0.5], &[0.5, 0.4, 0.1]),
            psi(&[0.5, 0.5, 0.0], &[0.5, 0.4, 0.1]),
        );
        close(psi(&[], &[]), 0.0);
    }

    #[test]
    fn quantile_edges_by_hand() {
        let reference: Vec<f64> = (1..=10).map(f64::from).collect();
        // Positions 9 * (0.25, 0.5, 0.75) = 2.25, 4.5, 6.75 between the sorted values.
        let edges = quantile_edges(&reference, 4);
        assert_eq!(edges, vec![3.25, 5.5, 7.75]);
        assert_eq!(
            bucket_proportions(&reference, &edges),
            vec![0.3, 0.2, 0.2, 0.3]
        );
        // Values on an edge go to the bucket below it.
        assert_eq!(
            bucket_proportions(&[3.25, 3.26, f64::NAN, 100.0], &edges),
            vec![1.0 / 3.0, 1.0 / 3.0, 0.0, 1.0 / 3.0]
        );
        // Ties collapse edges.
        assert_eq!(quantile_edges(&[1.0, 1.0, 1.0, 1.0, 2.0], 4), vec![1.0]);
        assert!(quantile_edges(&[], 10).is_empty());
        assert!(quantile_edges(&[1.0, 2.0], 1).is_empty());
        assert_eq!(bucket_proportions(&[], &[1.0]), vec![0.0, 0.0]);
    }

    #[test]
    fn numeric_psi_by_hand() {
        let reference: Vec<f64> = (1..=10).map(f64::from).collect();
        // Against edges 3.25, 5.5, 7.75: reference 0.3, 0.2, 0.2, 0.3; current 0.5, 0.5, 0, 0.
        let current = [1.0, 2.0, 4.0, 5.0];
        let expected = 0.2 * (0.5f64 / 0.3).ln()
            + 0.3 * (0.5f64 / 0.2).ln()
            + (PSI_EPSILON - 0.2) * (PSI_EPSILON / 0.2).ln()
            + (PSI_EPSILON - 0.3) * (PSI_EPSILON / 0.3).ln();
        close(psi_numeric(&reference, &current, 4), expected);
        close(psi_numeric(&reference, &reference, 10), 0.0);
    }

    #[test]
    fn categorical_psi_by_hand() {
        let reference = counts(&[("a", 50), ("b", 50)]);
        close(
            psi_categorical(&reference, &counts(&[("a", 25), ("b", 75)])),
            0.25 * 3f64.ln(),
        );
        // A new label: its own bucket, empty in the reference.
        let with_new = counts(&[("a", 40), ("b", 40), ("c", 20)]);
        let expected = 2.0 * 0.1 * 1.25f64.ln() + (0.2 - PSI_EPSILON) * (0.2 / PSI_EPSILON).ln();
        close(psi_categorical(&reference, &with_new), expected);
        // Several new labels are pooled.
        let split = counts(&[("a", 40), ("b", 40), ("c", 10), ("d", 10)]);
        close(psi_categorical(&reference, &split), expected);
        // A label gone from the current counts.
        close(
            psi_categorical(&reference, &counts(&[("a", 100)])),
            0.5 * 2f64.ln() + (PSI_EPSILON - 0.5) * (PSI_EPSILON / 0.5).ln(),
        );
        close(psi_categorical(&reference, &reference), 0.0);
    }

    #[test]
    fn monitor_flags_values_above_the_threshold() {
        let monitor = PsiMonitor::default();
        assert_eq!(monitor.config().threshold, 0.2);
        let check = monitor.proportions(&[0.5, 0.5], &[0.25, 0.75]);
        assert!(check.exceeded);
        assert_eq!(check.level, PsiLevel::Significant);
        let check = monitor.check(0.15);
        assert!(!check.exceeded);
        assert_eq!(check.level, PsiLevel::Moderate);
        assert_eq!(monitor.check(0.05).level, PsiLevel::Stable);
        assert!(monitor.check(f64::NAN).exceeded);

        let lengths: Vec<f64> = (0..1000).map(|i| f64::from(i % 100)).collect();
        let baseline = monitor.numeric_baseline(&lengths);
        assert_eq!(baseline.edges.len(), 9);
        assert!(!monitor.baseline(&baseline, &lengths).exceeded);
        let longer: Vec<f64> = lengths.iter().map(|l| l + 30.0).collect();
        assert!(monitor.baseline(&baseline, &longer).exceeded);
        assert_eq!(
            monitor.numeric(&lengths, &longer),
            monitor.baseline(&baseline, &longer)
        );

        assert!(PsiMonitor::new(PsiConfig {
            buckets: 1,
            ..PsiConfig::default()
        })
        .is_err());
        let error = PsiMonitor::new(PsiConfig {
            threshold: f64::NAN,
            ..PsiConfig::default()
        })
        .expect_err("NaN threshold");
        assert_eq!(
            error.to_string(),
            "`threshold` must be a finite number >= 0, got NaN"
        );
    }

    #[test]
    fn config_deserializes_with_defaults() {
        let config: PsiConfig = serde_json::from_str(r#"{"threshold": 0.1}"#).expect("json");
        assert_eq!(config.buckets, 10);
        assert!(serde_json::from_str::<PsiConfig>(r#"{"bins": 5}"#).is_err());
    }
}
