//! Fixed-horizon tests: the two-proportion z-test and Welch's t-test.
//!
//! Their p-values are valid only when read once, at a sample size chosen in advance; reading
//! them repeatedly and stopping at the first significant one inflates the false-positive rate
//! (see the always-valid [`sequential()`](super::sequential()) test for the alternative).

use serde::Serialize;

use super::dist;
use super::summary::{BinarySummary, ContinuousSummary};
use super::{positive_finite, valid_alpha};

/// Result of a fixed-horizon two-sample test.
#[derive(Debug, Clone, Copy, PartialEq, Serialize)]
pub struct TestResult {
    /// The test statistic (`z` or `t`), positive when the treatment's mean is higher.
    pub statistic: f64,
    /// Two-sided p-value.
    pub p_value: f64,
    /// Observed difference of means, treatment − control.
    pub difference: f64,
    /// Lower bound of the two-sided `1 − alpha` confidence interval of the difference.
    pub ci_low: f64,
    /// Upper bound of the two-sided `1 − alpha` confidence interval of the difference.
    pub ci_high: f64,
    /// `p_value <= alpha`.
    pub significant: bool,
    /// Welch–Satterthwaite degrees of freedom of a t-test; `None` (and left out of the JSON)
    /// for the z-test.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub degrees_of_freedom: Option<f64>,
}

/// Two-sided two-proportion z-test of `treatment` against `control` at level `alpha`.
///
/// The statistic uses the pooled standard error, as under the null hypothesis both arms share
/// one rate `p̂ = (x₁ + x₂) / (n₁ + n₂)`:
/// `z = (p̂₂ − p̂₁) / sqrt(p̂ (1 − p̂) (1/n₁ + 1/n₂))` (the textbook test, and `statsmodels`'
/// `proportions_ztest`). The confidence interval of the difference uses the unpooled (Wald)
/// standard error `sqrt(p̂₁(1 − p̂₁)/n₁ + p̂₂(1 − p̂₂)/n₂)` with the normal quantile
/// `z_{1 − alpha/2}`.
///
/// `None` when the test is undefined: an arm with fewer than 2 units or more successes than
/// units, a pooled rate of 0 or 1 (no variance), or `alpha` outside `(0, 1)`.
pub fn two_proportion_z(
    control: &BinarySummary,
    treatment: &BinarySummary,
    alpha: f64,
) -> Option<TestResult> {
    if !valid_alpha(alpha) {
        return None;
    }
    let (n1, p1) = control.checked()?;
    let (n2, p2) = treatment.checked()?;
    let pooled = (control.successes as f64 + treatment.successes as f64) / (n1 + n2);
    let pooled_variance = pooled * (1.0 - pooled) * (1.0 / n1 + 1.0 / n2);
    if !positive_finite(pooled_variance) {
        return None;
    }
    let difference = p2 - p1;
    let statistic = difference / pooled_variance.sqrt();
    let p_value = dist::normal_two_sided_p(statistic)?;

    let wald_se = (p1 * (1.0 - p1) / n1 + p2 * (1.0 - p2) / n2).sqrt();
    let half_width = dist::normal_upper_quantile(0.5 * alpha)? * wald_se;
    finish(statistic, p_value, difference, half_width, alpha, None)
}

/// Two-sided Welch's t-test (unequal variances) of `treatment` against `control` at level
/// `alpha`.
///
/// With `sᵢ² / nᵢ` the squared standard error of each mean, the statistic is
/// `t = (x̄₂ − x̄₁) / sqrt(s₁²/n₁ + s₂²/n₂)` and the degrees of freedom are Welch–Satterthwaite's
/// `ν = (s₁²/n₁ + s₂²/n₂)² / ((s₁²/n₁)²/(n₁ − 1) + (s₂²/n₂)²/(n₂ − 1))`. The p-value comes from
/// Student's t with `ν` degrees of freedom, and the confidence interval of the difference is
/// `x̄₂ − x̄₁ ± t_{1 − alpha/2, ν} · sqrt(s₁²/n₁ + s₂²/n₂)` (as `scipy.stats.ttest_ind` with
/// `equal_var=False`).
///
/// `None` when the test is undefined: an arm with fewer than 2 observations, non-finite or
/// negative values, both variances 0, or `alpha` outside `(0, 1)`.
pub fn welch_t(
    control: &ContinuousSummary,
    treatment: &ContinuousSummary,
    alpha: f64,
) -> Option<TestResult> {
    if !valid_alpha(alpha) {
        return None;
    }
    let (n1, mean1, var1) = control.checked()?;
    let (n2, mean2, var2) = treatment.checked()?;
    let se1 = var1 / n1;
    let se2 = var2 / n2;
    let se_sum = se1 + se2;
    if !positive_finite(se_sum) {
        return None;
    }
    let df = se_sum * se_sum / (se1 * se1 / (n1 - 1.0) + se2 * se2 / (n2 - 1.0));
    if !positive_finite(df) {
        return None;
    }
    let difference = mean2 - mean1;
    let se = se_sum.sqrt();
    let statistic = difference / se;
    let p_value = dist::t_two_sided_p(statistic, df)?;
    let half_width = dist::t_upper_quantile(0.5 * alpha, df)? * se;
    finish(statistic, p_value, difference, half_width, alpha, Some(df))
}

/// Assembles a [`TestResult`], refusing any non-finite number.
fn finish(
    statistic: f64,
    p_value: f64,
    difference: f64,
    half_width: f64,
    alpha: f64,
    degrees_of_freedom: Option<f64>,
) -> Option<TestResult> {
    let result = TestResult {
        statistic,
        p_value,
        difference,
        ci_low: difference - half_width,
        ci_high: difference + half_width,
        significant: p_value <= alpha,
        degrees_of_freedom,
    };
    let finite = [
        result.statistic,
        result.p_value,
        result.ci_low,
        result.ci_high,
    ]
    .iter()
    .all(|x| x.is_finite());
    finite.then_some(result)
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    fn assert_close(actual: f64, expected: f64, tol: f64) {
        assert!(
            (actual - expected).abs() <= tol * expected.abs().max(1.0),
            "{actual} vs {expected}"
        );
    }

    #[test]
    fn z_test_textbook_case() {
        // 50% of 1,000 against 60% of 1,000: pooled rate 0.55,
        // z = 0.1 / sqrt(0.55 · 0.45 · 2/1000) = 4.4947, p = 6.97e-6.
        let control = BinarySummary::new(1000, 500).unwrap();
        let treatment = BinarySummary::new(1000, 600).unwrap();
        let r = two_proportion_z(&control, &treatment, 0.05).unwrap();
        assert_close(r.statistic, 4.494_665_749_754_947, 1e-12);
        assert_close(r.p_value, 6.967_931_072_849_813e-6, 1e-10);
        assert_close(r.difference, 0.1, 1e-14);
        // Wald interval: 0.1 ± 1.96 · sqrt(0.25/1000 + 0.24/1000).
        assert_close(r.ci_low, 0.056_614_347_738_680_69, 1e-12);
        assert_close(r.ci_high, 0.143_385_652_261_319_33, 1e-12);
        assert!(r.significant);
        assert_eq!(r.degrees_of_freedom, None);

        // Swapping the arms flips the sign, not the p-value.
        let swapped = two_proportion_z(&treatment, &control, 0.05).unwrap();
        assert_close(swapped.statistic, -r.statistic, 1e-14);
        assert_close(swapped.p_value, r.p_value, 1e-14);
    }

    #[test]
    fn z_test_not_significant_and_undefined_cases() {
        let a = BinarySummary::new(200, 100).unwrap();
        let b = BinarySummary::new(200, 104).unwrap();
        let r = two_proportion_z(&a, &b, 0.05).unwrap();
        assert!(!r.significant);
        assert!(r.ci_low < 0.0 && r.ci_high > 0.0);

        let all = BinarySummary::new(50, 50).unwrap();
        assert!(two_proportion_z(&all, &all, 0.05).is_none());
        let none = BinarySummary::new(50, 0).unwrap();
        assert!(two_proportion_z(&none, &none, 0.05).is_none());
        let one = BinarySummary::new(1, 1).unwrap();
        assert!(two_proportion_z(&one, &a, 0.05).is_none());
        let bad = BinarySummary { n: 5, successes: 6 };
        assert!(two_proportion_z(&bad, &a, 0.05).is_none());
        for alpha in [0.0, 1.0, -0.1, f64::NAN] {
            assert!(two_proportion_z(&a, &b, alpha).is_none());
        }
    }

    #[test]
    fn welch_small_samples() {
        // Control 3, 4, 5, 8 against treatment 10, 12, 9, 15, 11 (values checked with
        // scipy.stats.ttest_ind(treatment, control, equal_var=False)).
        let control = ContinuousSummary::from_values(&[3.0, 4.0, 5.0, 8.0]).unwrap();
        let treatment = ContinuousSummary::from_values(&[10.0, 12.0, 9.0, 15.0, 11.0]).unwrap();
        let r = welch_t(&control, &treatment, 0.05).unwrap();
        assert_close(r.statistic, 4.288_963_695_444_194_5, 1e-12);
        assert_close(r.p_value, 0.003_932_829_775_269_602, 1e-10);
        assert_close(r.degrees_of_freedom.unwrap(), 6.749_277_766_293_743, 1e-12);
        assert_close(r.ci_low, 2.844_756_782_453_033_3, 1e-10);
        assert_close(r.ci_high, 9.955_243_217_546_968, 1e-10);
        assert_close(r.difference, 6.4, 1e-14);
        assert!(r.significant);
    }

    #[test]
    fn welch_fifteen_per_arm() {
        let a = [
            27.5, 21.0, 19.0, 23.6, 17.0, 17.9, 16.9, 20.1, 21.9, 22.6, 23.1, 19.6, 19.0, 21.7,
            21.4,
        ];
        let b = [
            27.1, 22.0, 20.8, 23.4, 23.4, 23.5, 25.8, 22.0, 24.8, 20.2, 21.9, 22.1, 22.9, 20.5,
            24.4,
        ];
        let control = ContinuousSummary::from_values(&a).unwrap();
        let treatment = ContinuousSummary::from_values(&b).unwrap();
        let r = welch_t(&control, &treatment, 0.05).unwrap();
        assert_close(r.statistic, 2.455_356_398_286_006, 1e-11);
        assert_close(r.p_value, 0.021_378_001_462_866_992, 1e-9);
        assert_close(r.degrees_of_freedom.unwrap(), 24.988_529_290_231_416, 1e-11);
        assert_close(r.ci_low, 0.349_237_066_192_406_9, 1e-10);
        assert_close(r.ci_high, 3.984_096_267_140_929, 1e-10);
        // At alpha = 0.01 the same data are not significant.
        assert!(!welch_t(&control, &treatment, 0.01).unwrap().significant);
    }

    #[test]
    fn welch_undefined_cases() {
        let flat = ContinuousSummary::new(10, 1.0, 0.0).unwrap();
        assert!(welch_t(&flat, &flat, 0.05).is_none());
        let single = ContinuousSummary::from_values(&[1.0]).unwrap();
        let ok = ContinuousSummary::new(10, 1.0, 2.0).unwrap();
        assert!(welch_t(&single, &ok, 0.05).is_none());
        let nan = ContinuousSummary {
            n: 10,
            mean: f64::NAN,
            variance: 1.0,
        };
        assert!(welch_t(&nan, &ok, 0.05).is_none());
        let inf = ContinuousSummary {
            n: 10,
            mean: 0.0,
            variance: f64::INFINITY,
        };
        assert!(welch_t(&ok, &inf, 0.05).is_none());
        // One arm without variance is fine: ν = n − 1 of the other arm.
        let r = welch_t(&flat, &ok, 0.05).unwrap();
        assert_close(r.degrees_of_freedom.unwrap(), 9.0, 1e-12);
    }
}
