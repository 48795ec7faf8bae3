//! Tail probabilities and quantiles of the normal, Student t and chi-square distributions.
//!
//! Thin wrappers over special functions that never panic: arguments outside a function's domain
//! give `None`. The complementary error function comes from `libm` (a port of musl's, accurate
//! to about one ulp; statrs's is off by up to ~1e-11 relative), the incomplete beta function
//! from [`special`](super::special), the incomplete gamma function from `statrs`. Quantiles are refined with a bracketed Newton iteration on the
//! tail probability, so that they are as accurate as the tail probability itself.

use std::f64::consts::{PI, SQRT_2};

use statrs::function::{erf, gamma};

use super::{positive_finite, special};

/// Largest number of Newton/bisection steps of [`upper_quantile`].
const MAX_QUANTILE_STEPS: usize = 200;

/// Two-sided p-value of a standard normal statistic: `P(|Z| >= |z|)`.
pub(crate) fn normal_two_sided_p(z: f64) -> Option<f64> {
    if !z.is_finite() {
        return None;
    }
    // 2 * P(Z > |z|) = erfc(|z| / sqrt 2), computed without the cancellation of 1 - cdf.
    Some(libm::erfc(z.abs() / SQRT_2))
}

/// Upper-tail probability of the standard normal: `P(Z > z)`.
fn normal_sf(z: f64) -> Option<f64> {
    z.is_finite().then(|| 0.5 * libm::erfc(z / SQRT_2))
}

/// Density of the standard normal.
fn normal_pdf(z: f64) -> f64 {
    (-0.5 * z * z).exp() / (2.0 * PI).sqrt()
}

/// The `z > 0` with `P(Z > z) = q`, for `0 < q < 0.5`.
pub(crate) fn normal_upper_quantile(q: f64) -> Option<f64> {
    if !(q > 0.0 && q < 0.5) {
        return None;
    }
    // Start from statrs's inverse error function, then polish on the accurate tail probability.
    let start = SQRT_2 * erf::erfc_inv(2.0 * q);
    upper_quantile(q, start, normal_sf, normal_pdf)
}

/// Two-sided p-value of a Student t statistic with `df` degrees of freedom: `P(|T| >= |t|)`.
///
/// `P(|T| >= |t|) = I_y(df/2, 1/2)` with `y = df / (df + t²)`, where `I` is the regularized
/// incomplete beta function; `1 − y = t² / (df + t²)` is passed as well, computed without
/// cancellation.
pub(crate) fn t_two_sided_p(t: f64, df: f64) -> Option<f64> {
    if !t.is_finite() || !positive_finite(df) {
        return None;
    }
    let t2 = t * t;
    if t2 == 0.0 {
        return Some(1.0);
    }
    let denominator = df + t2;
    let p = special::beta_reg(0.5 * df, 0.5, df / denominator, t2 / denominator)?;
    Some(p.clamp(0.0, 1.0))
}

/// Upper-tail probability of Student's t: `P(T > t)`, for `t >= 0`.
fn t_sf(t: f64, df: f64) -> Option<f64> {
    t_two_sided_p(t, df).map(|p| 0.5 * p)
}

/// Density of Student's t with `df` degrees of freedom:
/// `(1 + t²/df)^(−(df + 1)/2) / (√df · B(df/2, 1/2))`.
fn t_pdf(t: f64, df: f64) -> f64 {
    let log_density =
        -0.5 * (df + 1.0) * (t * t / df).ln_1p() - 0.5 * df.ln() - special::ln_beta(0.5 * df, 0.5);
    log_density.exp()
}

/// The `t > 0` with `P(T > t) = q` for Student's t with `df` degrees of freedom, `0 < q < 0.5`.
pub(crate) fn t_upper_quantile(q: f64, df: f64) -> Option<f64> {
    if !(q > 0.0 && q < 0.5 && positive_finite(df)) {
        return None;
    }
    // The normal quantile is a fine start for moderate df; the bracketing takes care of heavy
    // tails (small df), where the t quantile is far larger.
    let start = normal_upper_quantile(q)?;
    upper_quantile(q, start, |t| t_sf(t, df), |t| t_pdf(t, df))
}

/// Upper-tail probability of the chi-square distribution: `P(X >= x)` with `df` degrees of freedom.
pub(crate) fn chi_square_sf(x: f64, df: f64) -> Option<f64> {
    if !(x.is_finite() && x >= 0.0 && positive_finite(df)) {
        return None;
    }
    if x == 0.0 {
        return Some(1.0);
    }
    let p = gamma::checked_gamma_ur(0.5 * df, 0.5 * x).ok()?;
    p.is_finite().then_some(p.clamp(0.0, 1.0))
}

/// Solves `sf(x) = q` for `x >= 0`, where `sf` is a decreasing upper-tail probability with
/// `sf(0) = 1/2` and `pdf = -sf'`.
///
/// Newton steps from `start`, kept inside a bracket `[lo, hi]` that always holds the root: a step
/// that would leave the bracket is replaced by bisection, so the iteration cannot diverge.
fn upper_quantile(
    q: f64,
    start: f64,
    sf: impl Fn(f64) -> Option<f64>,
    pdf: impl Fn(f64) -> f64,
) -> Option<f64> {
    let mut lo = 0.0_f64;
    let mut hi = if start.is_finite() && start > 1.0 {
        start
    } else {
        1.0
    };
    // Grow the bracket until sf(hi) <= q.
    while sf(hi)? > q {
        lo = hi;
        hi *= 2.0;
        if !hi.is_finite() {
            return None;
        }
    }
    let mut x = if start.is_finite() && start > lo && start < hi {
        start
    } else {
        0.5 * (lo + hi)
    };
    for _ in 0..MAX_QUANTILE_STEPS {
        let f = sf(x)? - q;
        if f == 0.0 {
            return Some(x);
        }
        if f > 0.0 {
            lo = x;
        } else {
            hi = x;
        }
        let density = pdf(x);
        let newton = x + f / density;
        let next = if density > 0.0 && newton > lo && newton < hi {
            newton
        } else {
            0.5 * (lo + hi)
        };
        if (next - x).abs() <= 4.0 * f64::EPSILON * x.abs() || hi - lo <= f64::EPSILON * hi {
            return Some(next);
        }
        x = next;
    }
    Some(x)
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    fn close(a: f64, b: f64, tol: f64) -> bool {
        (a - b).abs() <= tol * b.abs().max(1e-300)
    }

    #[test]
    fn normal_values() {
        assert!(close(
            normal_upper_quantile(0.025).unwrap(),
            1.959_963_984_540_054_5,
            1e-14
        ));
        assert!(close(
            normal_upper_quantile(0.005).unwrap(),
            2.575_829_303_548_901,
            1e-14
        ));
        assert!(close(
            normal_two_sided_p(1.959_963_984_540_054).unwrap(),
            0.05,
            1e-13
        ));
        assert!(normal_two_sided_p(f64::NAN).is_none());
        assert!(normal_upper_quantile(0.5).is_none());
    }

    #[test]
    fn t_values() {
        // Textbook critical values: t_{0.975, 1} = 12.7062..., t_{0.975, 10} = 2.228138...
        assert!(close(
            t_upper_quantile(0.025, 1.0).unwrap(),
            12.706_204_736_174_705,
            1e-12
        ));
        assert!(close(
            t_upper_quantile(0.025, 10.0).unwrap(),
            2.228_138_851_986_275_3,
            1e-12
        ));
        assert!(close(
            t_upper_quantile(0.005, 3.5).unwrap(),
            5.085_702_223_091_258,
            1e-12
        ));
        // For df = 1 (Cauchy): P(|T| >= 1) = 1/2.
        assert!(close(t_two_sided_p(1.0, 1.0).unwrap(), 0.5, 1e-13));
        assert!(close(
            t_two_sided_p(-2.228_138_851_986_273, 10.0).unwrap(),
            0.05,
            1e-12
        ));
        assert_eq!(t_two_sided_p(0.0, 5.0), Some(1.0));
        assert!(t_two_sided_p(1.0, 0.0).is_none());
        assert!(t_two_sided_p(f64::INFINITY, 3.0).is_none());
    }

    #[test]
    fn chi_square_values() {
        // P(X >= 3.8414588206941285) = 0.05 with one degree of freedom.
        assert!(close(
            chi_square_sf(3.841_458_820_694_128_5, 1.0).unwrap(),
            0.05,
            1e-12
        ));
        // With two degrees of freedom the tail is exp(-x/2).
        assert!(close(
            chi_square_sf(7.0, 2.0).unwrap(),
            (-3.5_f64).exp(),
            1e-13
        ));
        assert_eq!(chi_square_sf(0.0, 3.0), Some(1.0));
        assert!(chi_square_sf(-1.0, 3.0).is_none());
    }
}
