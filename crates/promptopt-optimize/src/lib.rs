//! Optimizers and the optimization pipeline of promptopt.
//!
//! An [`Optimizer`] searches [`promptopt_core::ProgramState`]s for a [`promptopt_core::Program`],
//! spending from one [`Budget`] through an [`OptimizeContext`].
//!
//! ```
//! # tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap().block_on(async {
//! use std::sync::Arc;
//! use promptopt_core::{Example, Field, Program, Signature};
//! use promptopt_lm::ScriptedLm;
//! use promptopt_optimize::OptimizeContext;
//! # use promptopt_core::{Metric, MetricInfo, Prediction, Score, Trace};
//! # struct Exact;
//! # impl Metric for Exact {
//! #     fn info(&self) -> MetricInfo { MetricInfo { name: "exact".into(), higher_is_better: true, min: 0.0, max: 1.0 } }
//! #     fn score(&self, e: &Example, p: &Prediction, _: &Trace) -> Score {
//! #         Score::new(if e.text("label") == p.text("label") { 1.0 } else { 0.0 })
//! #     }
//! # }
//!
//! let program = Program::single(Signature::new(vec![Field::text("text")], vec![Field::text("label")]));
//! let lm = Arc::new(ScriptedLm::constant("[[ ## label ## ]]\npositive"));
//! let ctx = OptimizeContext::builder(program.clone(), lm, "scripted/test", Arc::new(Exact)).build();
//! let examples = vec![
//!     Example::new().with("text", "great").with("label", "positive"),
//!     Example::new().with("text", "awful").with("label", "negative"),
//! ];
//! let report = ctx.evaluate(&program.initial_state(), &examples).await?;
//! assert_eq!(report.score, 0.5);
//! assert_eq!(ctx.budget().calls(), 2);
//! # Ok::<(), promptopt_optimize::OptimizeError>(())
//! # }).unwrap();
//! ```

pub mod balance;
mod bootstrap;
mod budget;
mod config;
mod context;
mod error;
pub mod gepa;
pub mod instruction;
mod labeled;
pub mod mipro;
mod optimizer;
mod pipeline;
pub mod plot;
mod random_search;
mod request;
mod result;
pub mod select;
pub mod tool_choice;

pub use bootstrap::{BootstrapFewShot, BootstrapRun};
pub use budget::{Budget, BudgetLimits, BudgetedLm, CancelFlag};
pub use config::AlgorithmConfig;
pub use context::{OptimizeContext, OptimizeContextBuilder};
pub use error::OptimizeError;
pub use labeled::{demo_of, LabeledFewShot};
pub use optimizer::{CandidateRecord, Optimizer, OptimizerOutcome, OutcomeBuilder, TrialPoint};
pub use pipeline::{Pipeline, SaveGate};
pub use promptopt_core::evaluate::{percentile, EvalMemo, EvalReport, ExampleResult, MemoJournal};
pub use promptopt_core::events::{
    CollectSink, Event, EventSink, FanOut, FnSink, NullSink, StopReason, TrialKind,
};
pub use random_search::BootstrapFewShotWithRandomSearch;
pub use request::{
    build_optimizer, valid_keys, Algorithm, Constraints, CustomMetricSpec, DataSource, Objective,
    OptimizationRequest, Target, TargetSpec, DEFAULT_LOCAL_PROMPT_MODEL, DEFAULT_MODEL,
    FEW_SHOT_KEYS,
};
pub use result::{
    improvement_percentage, Analytics, DatasetSummary, LoggedPrediction, ModelReport,
    OptimizationResult, PerformanceMetrics, StageTiming, TestMetrics,
};
pub use select::SelectionStrategy;
