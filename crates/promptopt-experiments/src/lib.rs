//! A/B experiments of promptopt: splitting live traffic between saved model versions, recording
//! outcomes, and deciding with statistics that stay valid when read at any time.
//!
//! - [`stats`]: the statistics, pure functions: the two-proportion z-test, Welch's t-test, an
//!   always-valid sequential test (mixture SPRT), the sample-ratio-mismatch check and Holm's
//!   correction.

pub mod stats;
