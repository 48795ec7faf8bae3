//! Statistics of A/B experiments, as pure functions of per-arm summaries.
//!
//! - Summaries: [`BinarySummary`] (units and successes) and [`ContinuousSummary`] (count, mean,
//!   sample variance, built with Welford's algorithm).
//! - Fixed-horizon tests, valid when read once at a sample size chosen in advance:
//!   [`two_proportion_z`] and [`welch_t`], both returning a [`TestResult`].
//! - The always-valid sequential test ([`sequential`], [`SequentialState`]): a mixture SPRT
//!   whose p-value and confidence interval may be read after every unit, stopping at the first
//!   significant look without inflating the false-positive rate.
//! - [`srm_check`]: sample-ratio mismatch, the health check of the assignment.
//! - [`holm`]: Holm–Bonferroni correction when several comparisons are made.
//!
//! Conventions: the difference is always treatment − control; tests are two-sided; `alpha` must
//! lie in `(0, 1)`; a result is significant when `p_value <= alpha`. Every function returns
//! `None` rather than a meaningless number (or a panic) when its inputs leave the test undefined:
//! NaN or infinite values, fewer than 2 units in an arm, zero variance. Results serialize to JSON
//! with serde.
//!
//! ```
//! use promptopt_experiments::stats::{
//!     tau2_for_effect, two_proportion_z, BinarySummary, SequentialState,
//! };
//!
//! let control = BinarySummary::new(1000, 700).unwrap();
//! let treatment = BinarySummary::new(1000, 760).unwrap();
//!
//! // Fixed horizon: read once, at the sample size planned in advance.
//! let z = two_proportion_z(&control, &treatment, 0.05).unwrap();
//! assert!(z.significant && z.ci_low > 0.0);
//!
//! // Always valid: keep the state with the experiment and update it at every look.
//! let mut state = SequentialState::new(0.05, tau2_for_effect(0.05).unwrap()).unwrap();
//! let look = state.update(&control, &treatment).unwrap();
//! assert!(look.p_value > z.p_value); // the price of being allowed to look at any time
//! println!("{}", serde_json::to_string(&look).unwrap());
//! ```
//!
//! The numbers are checked against SciPy by `tests/python/test_stats_scipy.py`, and the
//! error rates by simulation in `tests/stats_simulation.rs` and `examples/ab_simulation.rs`.

mod dist;
mod fixed;
mod multiple;
mod sequential;
mod special;
mod srm;
mod summary;

pub(crate) use dist::{normal_upper_quantile, t_upper_quantile};
pub use fixed::{two_proportion_z, welch_t, TestResult};
pub use multiple::holm;
pub use sequential::{sequential, tau2_for_effect, SequentialResult, SequentialState};
pub use srm::{srm_check, SrmResult, SRM_THRESHOLD};
pub use summary::{ArmSummary, BinarySummary, ContinuousSummary, NonFiniteValue};

/// Whether `alpha` is a usable level: finite and strictly between 0 and 1.
fn valid_alpha(alpha: f64) -> bool {
    alpha > 0.0 && alpha < 1.0
}

/// Whether `x` is finite and strictly positive (false for NaN).
fn positive_finite(x: f64) -> bool {
    x.is_finite() && x > 0.0
}
