//! A/B experiments of promptopt: splitting live traffic between saved model versions, recording
//! outcomes, and deciding with statistics that stay valid when read at any time.
//!
//! - [`ExperimentSpec`]: an experiment as the user guide writes it (`variants`, `traffic_split`,
//!   `success_metric`, `minimum_sample_size`, `significance_level`, `max_duration`,
//!   `auto_promote`), and [`Experiment`], its stored record and state.
//! - [`assign`]: sticky, weighted assignment of units to variants by a salted hash.
//! - [`ExperimentStore`]: experiments, served predictions, outcomes and each variant's running
//!   sums in SQLite (the default) or PostgreSQL.
//! - [`stats`]: the statistics, pure functions: the two-proportion z-test, Welch's t-test, an
//!   always-valid sequential test (mixture SPRT), the sample-ratio-mismatch check and Holm's
//!   correction.
//! - [`decide`]: an experiment's status from its variants' sums: per-variant figures, tests and
//!   the decision.
//! - The continuous-learning tables ([`LearningRow`], [`LearningEvent`], [`Outcome`]): each
//!   model's loop, its decisions, its lock, and outcomes joined to their predictions.

pub mod assign;
pub mod decide;
mod error;
mod experiment;
mod learning_store;
pub mod stats;
mod store;

pub use decide::{
    evidence_history, status, Decision, EvidencePoint, ExperimentStatus, VariantStatus,
};
pub use error::ExperimentError;
pub use experiment::{Experiment, ExperimentSpec, ExperimentState};
pub use learning_store::{LearningEvent, LearningRow, Outcome, Served};
pub use store::{redact, ExperimentStore, FeedbackRecorded, PredictionRecord, VariantStats};
