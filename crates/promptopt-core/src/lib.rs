//! Examples, datasets, signatures, programs, adapters, metrics and the evaluator of promptopt.

pub mod dataset;
mod error;
mod example;
pub mod metrics;
mod signature;
mod state;
mod trace;

pub use dataset::Dataset;
pub use error::CoreError;
pub use example::{value_to_text, Example};
pub use metrics::{Metric, MetricInfo, Score};
pub use signature::{Field, FieldType, Signature};
pub use state::{PredictorState, ProgramState, Strategy};
pub use trace::{Prediction, Trace, TraceStep};
