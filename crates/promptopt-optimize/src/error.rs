//! The crate's error type.

use std::path::PathBuf;

use promptopt_core::CoreError;
use promptopt_lm::LmError;

use crate::StopReason;

/// Everything that can go wrong while optimizing, running the pipeline or using the registry.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum OptimizeError {
    /// The run stopped (budget, deadline, iterations, cancellation, early stopping). Optimizers
    /// catch it and return their best candidate so far with the reason.
    #[error("Stopped: {0}")]
    Stopped(StopReason),

    /// A language model call failed.
    #[error("Language model call failed: {0}")]
    Lm(#[from] LmError),

    /// Datasets, metrics or programs failed.
    #[error(transparent)]
    Core(#[from] CoreError),

    /// Every example of the baseline failed with an error: the model is not answering (a server
    /// down, a wrong key), so there is nothing to optimize against.
    #[error("The model failed on all {examples} examples of the baseline; last error: {last}")]
    BaselineFailed {
        /// Examples evaluated.
        examples: usize,
        /// The last example's error.
        last: String,
        /// Whether every error may go away if tried again later (unreachable, 5xx, timeouts).
        retryable: bool,
    },

    /// A program run failed for a reason other than its model call.
    #[error("Program run failed: {0}")]
    Program(String),

    /// An `algorithm_config` (or `few_shot_config`) key no algorithm knows.
    #[error("Unknown key `{key}` in `{section}` for algorithm `{algorithm}`; valid keys: {valid}")]
    UnknownConfigKey {
        /// `algorithm_config` or `few_shot_config`.
        section: &'static str,
        /// The algorithm.
        algorithm: String,
        /// The key given.
        key: String,
        /// The valid keys, comma-separated.
        valid: String,
    },

    /// A configuration value of the wrong type or out of range.
    #[error("Invalid value for `{key}`: {message}")]
    InvalidConfig {
        /// The key (dotted path for nested settings).
        key: String,
        /// What is wrong.
        message: String,
    },

    /// A request file could not be understood.
    #[error("Invalid request{}: {message}", location.as_ref().map(|p| format!(" `{}`", p.display())).unwrap_or_default())]
    InvalidRequest {
        /// The request file, when it came from one.
        location: Option<PathBuf>,
        /// What is wrong (serde's message names the field, line and column).
        message: String,
    },

    /// Something the request asks for that promptopt does not do yet.
    #[error("{0} is not supported yet")]
    Unsupported(String),

    /// There is nothing to optimize on.
    #[error("No examples to {purpose}: {message}")]
    NoExamples {
        /// What they were for (`train`, `validate`).
        purpose: &'static str,
        /// Why there are none.
        message: String,
    },

    /// A file could not be read or written.
    #[error("Cannot access `{path}`: {source}")]
    Io {
        /// The file.
        path: PathBuf,
        /// The cause.
        #[source]
        source: std::io::Error,
    },

    /// Saving, loading or resolving a model in the registry failed.
    #[error(transparent)]
    Registry(#[from] promptopt_registry::RegistryError),

    /// JSON (de)serialization failed.
    #[error("JSON error: {0}")]
    Json(#[from] serde_json::Error),
}

impl OptimizeError {
    /// The stop reason when this error is a clean stop.
    pub fn stop_reason(&self) -> Option<StopReason> {
        match self {
            OptimizeError::Stopped(reason) => Some(*reason),
            _ => None,
        }
    }

    /// Whether a model call failed because its prompt did not fit the model's context window
    /// (directly or in a predictor's call): a property of the program and the example, not a
    /// failure of the model's server.
    pub fn is_context_overflow(&self) -> bool {
        match self {
            OptimizeError::Lm(error) => error.is_context_overflow(),
            OptimizeError::Core(CoreError::Lm { source, .. }) => source.is_context_overflow(),
            _ => false,
        }
    }

    /// Whether the same run may succeed if tried again later: a model server that was
    /// unreachable, answered 5xx or timed out (job queues retry these with backoff).
    pub fn is_transient(&self) -> bool {
        match self {
            OptimizeError::Lm(error) => error.is_retryable(),
            OptimizeError::Core(error) => error.is_retryable(),
            OptimizeError::BaselineFailed { retryable, .. } => *retryable,
            _ => false,
        }
    }

    /// An I/O error with its path.
    pub fn io(path: impl Into<PathBuf>, source: std::io::Error) -> Self {
        OptimizeError::Io {
            path: path.into(),
            source,
        }
    }
}
