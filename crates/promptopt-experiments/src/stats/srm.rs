//! Sample-ratio-mismatch (SRM) check: do the assignment counts match the configured split?
//!
//! A mismatch means that units are lost or duplicated unevenly between arms (a bug in the
//! assignment, a redirect, a filter that depends on the variant...), and then no comparison of
//! the arms can be trusted, whatever its p-value.

use serde::Serialize;

use super::dist;

/// p-value below which [`srm_check`] flags a sample ratio mismatch: `0.001`.
///
/// Far stricter than the usual 0.05 because the check runs on every experiment, repeatedly,
/// and a false alarm stops a healthy experiment; with large samples a real assignment bug
/// still gives p-values many orders of magnitude smaller than this.
pub const SRM_THRESHOLD: f64 = 0.001;

/// Result of the sample-ratio-mismatch check.
#[derive(Debug, Clone, Copy, PartialEq, Serialize)]
pub struct SrmResult {
    /// Pearson's chi-square statistic `Σ (observed − expected)² / expected`.
    pub chi_square: f64,
    /// Degrees of freedom: number of arms − 1.
    pub degrees_of_freedom: usize,
    /// Upper-tail probability of `chi_square` under the chi-square distribution.
    pub p_value: f64,
    /// `p_value < SRM_THRESHOLD`: the split does not match the configured weights.
    pub flagged: bool,
}

/// Chi-square goodness-of-fit test of the assignment `counts` (one per arm) against the
/// expected split `weights` (same order; normalized here, so `[1, 1]` and `[0.5, 0.5]` are the
/// same 50/50 split). Flags a mismatch when the p-value is below [`SRM_THRESHOLD`].
///
/// `None` when undefined: fewer than 2 arms, lengths that differ, a weight that is not finite
/// and positive, or fewer than 2 units in all.
pub fn srm_check(counts: &[u64], weights: &[f64]) -> Option<SrmResult> {
    if counts.len() < 2 || counts.len() != weights.len() {
        return None;
    }
    if !weights.iter().all(|w| w.is_finite() && *w > 0.0) {
        return None;
    }
    let weight_sum: f64 = weights.iter().sum();
    let total: u64 = counts
        .iter()
        .try_fold(0_u64, |acc, &c| acc.checked_add(c))?;
    if total < 2 || !weight_sum.is_finite() {
        return None;
    }
    let total = total as f64;
    let chi_square: f64 = counts
        .iter()
        .zip(weights)
        .map(|(&observed, &weight)| {
            let expected = total * weight / weight_sum;
            let deviation = observed as f64 - expected;
            deviation * deviation / expected
        })
        .sum();
    let degrees_of_freedom = counts.len() - 1;
    let p_value = dist::chi_square_sf(chi_square, degrees_of_freedom as f64)?;
    Some(SrmResult {
        chi_square,
        degrees_of_freedom,
        p_value,
        flagged: p_value < SRM_THRESHOLD,
    })
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    fn assert_close(actual: f64, expected: f64, tol: f64) {
        assert!(
            (actual - expected).abs() <= tol * expected.abs().max(1e-300),
            "{actual} vs {expected}"
        );
    }

    #[test]
    fn even_split_within_noise() {
        // 5,050 vs 4,950 on 50/50: χ² = (50² + 50²) / 5000 = 1, p = 0.3173.
        let r = srm_check(&[5050, 4950], &[0.5, 0.5]).unwrap();
        assert_close(r.chi_square, 1.0, 1e-14);
        assert_eq!(r.degrees_of_freedom, 1);
        assert_close(r.p_value, 0.317_310_507_862_911_15, 1e-12);
        assert!(!r.flagged);
    }

    #[test]
    fn a_real_mismatch_is_flagged() {
        // 821,588 vs 815,482 looks even, but is a mismatch: χ² = 22.77, p = 1.8e-6.
        let r = srm_check(&[821_588, 815_482], &[1.0, 1.0]).unwrap();
        assert_close(r.chi_square, 22.774_368_841_894_36, 1e-10);
        assert_close(r.p_value, 1.821_792_872_619_185_8e-6, 1e-8);
        assert!(r.flagged);
    }

    #[test]
    fn three_arms_with_unequal_weights() {
        let r = srm_check(&[1000, 2100, 6900], &[10.0, 20.0, 70.0]).unwrap();
        assert_close(r.chi_square, 6.428_571_428_571_429, 1e-12);
        assert_eq!(r.degrees_of_freedom, 2);
        assert_close(r.p_value, 0.040_184_026_451_073_63, 1e-11);
        // Significant at 5% but not at the SRM threshold.
        assert!(!r.flagged);
        // A perfect match.
        let exact = srm_check(&[100, 300], &[1.0, 3.0]).unwrap();
        assert_eq!(exact.chi_square, 0.0);
        assert_eq!(exact.p_value, 1.0);
    }

    #[test]
    fn undefined_inputs() {
        assert!(srm_check(&[10], &[1.0]).is_none());
        assert!(srm_check(&[10, 10], &[1.0]).is_none());
        assert!(srm_check(&[10, 10], &[1.0, 0.0]).is_none());
        assert!(srm_check(&[10, 10], &[1.0, f64::NAN]).is_none());
        assert!(srm_check(&[10, 10], &[1.0, f64::INFINITY]).is_none());
        assert!(srm_check(&[0, 1], &[1.0, 1.0]).is_none());
        assert!(srm_check(&[u64::MAX, 1], &[1.0, 1.0]).is_none());
    }
}
