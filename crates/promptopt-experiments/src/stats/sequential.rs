//! Always-valid sequential test: the mixture sequential probability ratio test (mSPRT) with a
//! normal mixing distribution, after Johari, Pekelis and Walsh, "Always valid inference:
//! continuous monitoring of A/B tests" (2017), the test behind Optimizely's stats engine.
//!
//! # The test
//!
//! Let `θ̂ₙ` be the observed difference of means (treatment − control) after the `n`-th look and
//! `Vₙ = s₁²/n₁ + s₂²/n₂` its estimated variance (for a binary metric, the plug-in Bernoulli
//! variances `p̂ᵢ(1 − p̂ᵢ)`). Under the normal approximation `θ̂ₙ ~ N(θ, Vₙ)`, the likelihood ratio
//! of `θ` against `θ₀ = 0`, averaged over a mixing distribution `θ ~ N(0, τ²)`, is
//!
//! ```text
//! Λₙ = sqrt(Vₙ / (Vₙ + τ²)) · exp( τ² θ̂ₙ² / (2 Vₙ (Vₙ + τ²)) )
//! ```
//!
//! Under the null hypothesis `Λₙ` is a martingale with mean 1, so by Ville's inequality
//! `P(Λₙ ≥ 1/α for some n) ≤ α`: the test may be read after every unit and stopped at any
//! time. The always-valid p-value is the running minimum `pₙ = min(pₙ₋₁, 1/Λₙ)` with `p₀ = 1`,
//! and the always-valid `1 − α` confidence interval is the set of `θ₀` that the test does not
//! reject, `Λₙ(θ₀) < 1/α`:
//!
//! ```text
//! θ̂ₙ ± sqrt( Vₙ (Vₙ + τ²) / τ² · (2 ln(1/α) + ln((Vₙ + τ²) / Vₙ)) )
//! ```
//!
//! intersected over the looks (done by [`SequentialState`]).
//!
//! # Choosing the mixing variance τ²
//!
//! `τ²` is the variance of the effects the test expects. The mixture gives the most power to
//! effects of size about `τ`: a much smaller `τ²` makes large effects take longer to detect,
//! a much larger one spends the error budget on effects that never occur and slows down the
//! detection of small ones. The default used by promptopt is to set `τ` to the smallest effect
//! worth detecting, on the metric's own scale: [`tau2_for_effect`]`(δ) = δ²`, e.g. `0.0025` for a
//! lift of 5 percentage points of a conversion rate. Johari et al. recommend fitting `τ²` to
//! the effects of past experiments when such a history exists; the parameter is explicit so
//! that callers can do that.

use serde::{Deserialize, Serialize};

use super::summary::ArmSummary;
use super::{positive_finite, valid_alpha};

/// Mixing variance `τ² = δ²` for a smallest effect of interest `δ` (on the metric's scale,
/// e.g. `0.05` for 5 percentage points); `None` unless `δ` is finite and non-zero.
pub fn tau2_for_effect(effect: f64) -> Option<f64> {
    let tau2 = effect * effect;
    (tau2.is_finite() && tau2 > 0.0).then_some(tau2)
}

/// Result of one look of the always-valid sequential test.
#[derive(Debug, Clone, Copy, PartialEq, Serialize)]
pub struct SequentialResult {
    /// Always-valid p-value: the running minimum of `min(1, 1/Λ)` over the looks so far.
    pub p_value: f64,
    /// Observed difference of means, treatment − control.
    pub difference: f64,
    /// Lower bound of the always-valid `1 − alpha` confidence interval of the difference.
    pub ci_low: f64,
    /// Upper bound of the always-valid `1 − alpha` confidence interval of the difference.
    pub ci_high: f64,
    /// `p_value <= alpha`: the experiment may stop with a decision.
    pub significant: bool,
    /// Mixture likelihood ratio `Λ` of this look against "no difference" (may be `+inf` for an
    /// overwhelming effect, which JSON writes as `null`; see `log_likelihood_ratio`).
    pub likelihood_ratio: f64,
    /// Natural logarithm of `likelihood_ratio`, always finite.
    pub log_likelihood_ratio: f64,
}

/// One look of the always-valid sequential test (mSPRT) of `treatment` against `control`.
///
/// `alpha` is the level, `tau2` the mixing variance `τ²` (see [`tau2_for_effect`]), and
/// `previous_p` the always-valid p-value returned by the previous look (`None` at the first
/// look), which the returned p-value never exceeds. The confidence interval is this look's;
/// [`SequentialState`] keeps the running intersection over the looks as well.
///
/// Works for binary metrics ([`BinarySummary`](super::BinarySummary), difference of proportions
/// with the plug-in variance) and continuous ones ([`ContinuousSummary`](super::ContinuousSummary)).
///
/// `None` when undefined: an arm with fewer than 2 units or unusable values, zero variance of
/// the difference, `alpha` outside `(0, 1)`, `tau2` not finite and positive, or `previous_p`
/// outside `[0, 1]`.
pub fn sequential<S: ArmSummary + ?Sized>(
    control: &S,
    treatment: &S,
    alpha: f64,
    tau2: f64,
    previous_p: Option<f64>,
) -> Option<SequentialResult> {
    if !(valid_alpha(alpha) && positive_finite(tau2)) {
        return None;
    }
    let previous_p = previous_p.unwrap_or(1.0);
    if !(0.0..=1.0).contains(&previous_p) {
        return None;
    }
    let (n1, mean1, var1) = control.moments()?;
    let (n2, mean2, var2) = treatment.moments()?;
    let variance = var1 / n1 + var2 / n2;
    if !positive_finite(variance) {
        return None;
    }
    let difference = mean2 - mean1;
    let ratio = tau2 / variance;
    // ln Λ = -½ ln(1 + τ²/V) + θ̂²/(2V) · τ²/(V + τ²)
    let log_lr =
        -0.5 * ratio.ln_1p() + difference * difference / (2.0 * variance) * (ratio / (1.0 + ratio));
    // Λ(θ₀) < 1/α  ⇔  (θ̂ − θ₀)² < V (1 + V/τ²) (2 ln(1/α) + ln(1 + τ²/V))
    let half_width = (variance * (1.0 + 1.0 / ratio) * (-2.0 * alpha.ln() + ratio.ln_1p())).sqrt();
    let p_value = previous_p.min((-log_lr).exp().min(1.0));
    let result = SequentialResult {
        p_value,
        difference,
        ci_low: difference - half_width,
        ci_high: difference + half_width,
        significant: p_value <= alpha,
        likelihood_ratio: log_lr.exp(),
        log_likelihood_ratio: log_lr,
    };
    let finite = [
        result.p_value,
        result.difference,
        result.ci_low,
        result.ci_high,
        result.log_likelihood_ratio,
    ]
    .iter()
    .all(|x| x.is_finite());
    finite.then_some(result)
}

/// State of an always-valid sequential test between looks: the level and mixing variance, the
/// running-minimum p-value and the running intersection of the confidence intervals.
///
/// Serializable, so that the server can store it with the experiment.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct SequentialState {
    /// Level of the test.
    pub alpha: f64,
    /// Mixing variance `τ²`.
    pub tau2: f64,
    /// Always-valid p-value so far (1 before the first look).
    pub p_value: f64,
    /// Running intersection `(low, high)` of the confidence intervals (`None` before the first
    /// look).
    pub ci: Option<(f64, f64)>,
    /// Number of looks taken into account.
    pub looks: u64,
}

impl SequentialState {
    /// A test at level `alpha` with mixing variance `tau2`, before any look; `None` when `alpha`
    /// is outside `(0, 1)` or `tau2` is not finite and positive.
    pub fn new(alpha: f64, tau2: f64) -> Option<Self> {
        (valid_alpha(alpha) && positive_finite(tau2)).then_some(Self {
            alpha,
            tau2,
            p_value: 1.0,
            ci: None,
            looks: 0,
        })
    }

    /// Takes one look at the current summaries (cumulative since the start of the experiment).
    ///
    /// Returns the look's result with the running-minimum p-value and the running intersection
    /// of the intervals, and records both. If the intersection would be empty (which happens
    /// with probability at most `alpha`), this look's interval replaces it. `None`, with the
    /// state unchanged, when the look is undefined (see [`sequential`]).
    pub fn update<S: ArmSummary + ?Sized>(
        &mut self,
        control: &S,
        treatment: &S,
    ) -> Option<SequentialResult> {
        let mut result = sequential(
            control,
            treatment,
            self.alpha,
            self.tau2,
            Some(self.p_value),
        )?;
        if let Some((low, high)) = self.ci {
            let low = low.max(result.ci_low);
            let high = high.min(result.ci_high);
            if low <= high {
                result.ci_low = low;
                result.ci_high = high;
            }
        }
        self.p_value = result.p_value;
        self.ci = Some((result.ci_low, result.ci_high));
        self.looks = self.looks.saturating_add(1);
        Some(result)
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;
    use crate::stats::{BinarySummary, ContinuousSummary};

    fn assert_close(actual: f64, expected: f64, tol: f64) {
        assert!(
            (actual - expected).abs() <= tol * expected.abs().max(1.0),
            "{actual} vs {expected}"
        );
    }

    #[test]
    fn matches_the_paper_form_with_equal_arms() {
        // Johari et al. write, for n units per arm with common variance σ²:
        // Λ = sqrt(2σ² / (2σ² + nτ²)) · exp(n² τ² θ̂² / (4σ² (2σ² + nτ²))).
        let n = 400.0;
        let sigma2 = 2.5;
        let (m1, m2) = (10.0, 10.3);
        let tau2 = 0.04;
        let control = ContinuousSummary::new(400, m1, sigma2).unwrap();
        let treatment = ContinuousSummary::new(400, m2, sigma2).unwrap();
        let theta: f64 = m2 - m1;
        let expected_lr = (2.0 * sigma2 / (2.0 * sigma2 + n * tau2)).sqrt()
            * (n * n * tau2 * theta * theta / (4.0 * sigma2 * (2.0 * sigma2 + n * tau2))).exp();
        let r = sequential(&control, &treatment, 0.05, tau2, None).unwrap();
        assert_close(r.likelihood_ratio, expected_lr, 1e-12);
        assert_close(r.log_likelihood_ratio, expected_lr.ln(), 1e-12);
        assert_close(r.p_value, (1.0 / expected_lr).min(1.0), 1e-12);
        assert_close(r.difference, theta, 1e-12);
    }

    #[test]
    fn hand_computed_value() {
        // θ̂ = 0.05, V = 0.0001, τ² = 0.0025: ln Λ = ½ ln(1/26) + 0.0025²/(2 · 0.0001 · 0.0026).
        let control = ContinuousSummary::new(100, 1.0, 0.005).unwrap();
        let treatment = ContinuousSummary::new(100, 1.05, 0.005).unwrap();
        let r = sequential(&control, &treatment, 0.05, 0.0025, None).unwrap();
        let expected = 0.5 * (1.0_f64 / 26.0).ln() + 6.25e-6 / 5.2e-7;
        assert_close(r.log_likelihood_ratio, expected, 1e-12);
        assert!(r.significant);
        assert!(r.ci_low > 0.0);
    }

    #[test]
    fn interval_bounds_are_where_the_ratio_reaches_one_over_alpha() {
        let control = BinarySummary::new(1500, 1050).unwrap();
        let treatment = BinarySummary::new(1480, 1100).unwrap();
        let (alpha, tau2) = (0.05, 0.0025);
        let r = sequential(&control, &treatment, alpha, tau2, None).unwrap();
        // Λ(θ₀) computed by shifting the treatment mean by −θ₀ (the variance is unchanged).
        let v = 0.7 * 0.3 / 1500.0 + (1100.0 / 1480.0) * (380.0 / 1480.0) / 1480.0;
        for bound in [r.ci_low, r.ci_high] {
            let shifted = r.difference - bound;
            let log_lr =
                0.5 * (v / (v + tau2)).ln() + tau2 * shifted * shifted / (2.0 * v * (v + tau2));
            assert_close(log_lr, (1.0 / alpha).ln(), 1e-9);
        }
        // The interval is wider than the fixed-horizon one.
        let z = crate::stats::two_proportion_z(&control, &treatment, alpha).unwrap();
        assert!(r.ci_low < z.ci_low && r.ci_high > z.ci_high);
    }

    #[test]
    fn p_value_is_a_running_minimum() {
        let control = BinarySummary::new(1000, 700).unwrap();
        let treatment = BinarySummary::new(1000, 705).unwrap();
        let fresh = sequential(&control, &treatment, 0.05, 0.0025, None).unwrap();
        assert!(fresh.p_value > 0.5);
        let kept = sequential(&control, &treatment, 0.05, 0.0025, Some(0.01)).unwrap();
        assert_eq!(kept.p_value, 0.01);
        assert!(kept.significant);
        // With no evidence Λ < 1 and the p-value stays at 1.
        let same = sequential(&control, &control, 0.05, 0.0025, None).unwrap();
        assert_eq!(same.p_value, 1.0);
        assert!(same.likelihood_ratio < 1.0);
    }

    #[test]
    fn state_keeps_the_minimum_and_the_intersection() {
        let mut state = SequentialState::new(0.05, 0.0025).unwrap();
        let looks = [
            (500, 350, 500, 380),
            (1000, 690, 1000, 760),
            (1500, 1040, 1500, 1110),
        ];
        let mut last_p = 1.0;
        let mut last_ci = (f64::NEG_INFINITY, f64::INFINITY);
        for (n1, x1, n2, x2) in looks {
            let c = BinarySummary::new(n1, x1).unwrap();
            let t = BinarySummary::new(n2, x2).unwrap();
            let single = sequential(&c, &t, 0.05, 0.0025, None).unwrap();
            let r = state.update(&c, &t).unwrap();
            assert!(r.p_value <= last_p && r.p_value <= single.p_value);
            assert!(r.ci_low >= last_ci.0 && r.ci_high <= last_ci.1);
            assert!(r.ci_low >= single.ci_low && r.ci_high <= single.ci_high);
            last_p = r.p_value;
            last_ci = (r.ci_low, r.ci_high);
        }
        assert_eq!(state.looks, 3);
        assert_eq!(state.p_value, last_p);
        assert_eq!(state.ci, Some(last_ci));
        // An undefined look leaves the state alone.
        let empty = BinarySummary::default();
        let before = state;
        assert!(state.update(&empty, &empty).is_none());
        assert_eq!(state, before);
        // The state survives a JSON round trip (to the ulp: serde_json's default float parser
        // may round the last bit differently).
        let json = serde_json::to_string(&state).unwrap();
        let back: SequentialState = serde_json::from_str(&json).unwrap();
        assert_eq!((back.alpha, back.tau2, back.looks), (0.05, 0.0025, 3));
        assert_close(back.p_value, state.p_value, 1e-15);
        let ((low, high), (state_low, state_high)) = (back.ci.unwrap(), state.ci.unwrap());
        assert_close(low, state_low, 1e-15);
        assert_close(high, state_high, 1e-15);
    }

    #[test]
    fn undefined_inputs() {
        let a = BinarySummary::new(100, 70).unwrap();
        let b = BinarySummary::new(100, 75).unwrap();
        assert!(sequential(&a, &b, 0.05, 0.0, None).is_none());
        assert!(sequential(&a, &b, 0.05, f64::NAN, None).is_none());
        assert!(sequential(&a, &b, 1.5, 0.01, None).is_none());
        assert!(sequential(&a, &b, 0.05, 0.01, Some(f64::NAN)).is_none());
        assert!(sequential(&a, &b, 0.05, 0.01, Some(1.5)).is_none());
        let full = BinarySummary::new(100, 100).unwrap();
        assert!(sequential(&full, &full, 0.05, 0.01, None).is_none());
        assert!(SequentialState::new(0.05, -1.0).is_none());
        assert!(tau2_for_effect(0.0).is_none());
        assert_eq!(tau2_for_effect(-0.05), Some(0.05 * 0.05));
        // An overwhelming effect: Λ overflows, the log and the p-value do not.
        let c = ContinuousSummary::new(1_000_000, 0.0, 1.0).unwrap();
        let t = ContinuousSummary::new(1_000_000, 10.0, 1.0).unwrap();
        let r = sequential(&c, &t, 0.05, 1.0, None).unwrap();
        assert!(r.likelihood_ratio.is_infinite() && r.log_likelihood_ratio.is_finite());
        assert_eq!(r.p_value, 0.0);
    }
}
