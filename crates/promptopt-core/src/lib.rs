//! Examples, datasets, signatures, programs, adapters, metrics and the evaluator of promptopt.

pub mod adapter;
pub mod dataset;
mod duration;
mod error;
pub mod evaluate;
pub mod events;
mod example;
pub mod metrics;
pub mod program;
mod signature;
mod state;
pub mod tools;
mod trace;

pub use dataset::Dataset;
pub use duration::parse_duration;
pub use error::CoreError;
pub use evaluate::{evaluate, EvalMemo, EvalReport, EvalSettings, ExampleResult, MemoJournal};
pub use events::{Event, EventSink, StopReason, TrialKind};
pub use example::{value_to_text, Example};
pub use metrics::{Metric, MetricInfo, Score};
pub use program::{LmRegistry, Program, RunOutput, RunSettings, Runtime, Stage, StageSpec};
pub use signature::{Field, FieldType, Signature};
pub use state::{PredictorState, ProgramState, Strategy};
pub use trace::{Prediction, Trace, TraceStep};
