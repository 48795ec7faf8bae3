//! The crate's error type.

use std::path::PathBuf;

/// Everything that can go wrong in `promptopt-core`.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum CoreError {
    /// A file could not be read.
    #[error("Cannot read `{path}`: {source}")]
    Io {
        /// The file.
        path: PathBuf,
        /// The cause.
        #[source]
        source: std::io::Error,
    },

    /// A dataset file's extension is not one we load.
    #[error("Unsupported dataset format `{extension}` for `{path}` (expected `.jsonl`, `.json` or `.csv`)")]
    UnsupportedFormat {
        /// The file.
        path: PathBuf,
        /// Its extension (empty when it has none).
        extension: String,
    },

    /// A line or element of a dataset file is not valid.
    #[error("Malformed {format} on {location} of `{path}`: {message}")]
    Malformed {
        /// The format (`JSON`, `CSV`).
        format: &'static str,
        /// The file.
        path: PathBuf,
        /// Where in the file: "line 3", "element 4".
        location: String,
        /// What is wrong.
        message: String,
    },

    /// A dataset holds no examples.
    #[error("Dataset {source_name} has no examples")]
    EmptyDataset {
        /// Where it came from (a quoted path, or a description).
        source_name: String,
    },

    /// A key the dataset should have is absent from every example.
    #[error("{role} key `{key}` is in no example; the examples have: {available}")]
    MissingKey {
        /// `Input` or `Output`.
        role: &'static str,
        /// The key.
        key: String,
        /// The keys that exist, comma-separated.
        available: String,
    },

    /// Input or output keys could not be inferred.
    #[error(
        "Cannot infer the dataset's keys: {reason}; set `input_keys` and `output_keys` explicitly"
    )]
    AmbiguousKeys {
        /// Why.
        reason: String,
    },

    /// A split ratio outside (0, 1).
    #[error("Split ratio {ratio} is not between 0 and 1")]
    InvalidSplit {
        /// The ratio given.
        ratio: f64,
    },

    /// No metric of that name.
    #[error("Unknown metric `{name}`; known metrics: {known}")]
    UnknownMetric {
        /// The name asked for.
        name: String,
        /// The known names, comma-separated.
        known: String,
    },

    /// An external metric command failed.
    #[error("Metric command `{command}` failed: {message}")]
    MetricCommand {
        /// The command line.
        command: String,
        /// What went wrong.
        message: String,
    },

    /// An invalid argument or setting.
    #[error("Invalid {what}: {message}")]
    Invalid {
        /// What was invalid (a setting, a field).
        what: String,
        /// Why.
        message: String,
    },

    /// JSON (de)serialization failed.
    #[error("JSON error: {0}")]
    Json(#[from] serde_json::Error),

    /// A model call failed.
    #[error("The model call of predictor `{predictor}` failed: {source}")]
    Lm {
        /// The predictor.
        predictor: String,
        /// The cause.
        #[source]
        source: promptopt_lm::LmError,
    },

    /// A module called a predictor it does not declare.
    #[error("Predictor `{name}` is not in the program; it has: {known}")]
    UnknownPredictor {
        /// The name called.
        name: String,
        /// The declared predictors, comma-separated.
        known: String,
    },

    /// A program's stages do not fit together (or one of them is malformed).
    #[error("Invalid program, stage `{stage}`: {message}")]
    InvalidProgram {
        /// The stage at fault (empty when the program as a whole is).
        stage: String,
        /// What is wrong.
        message: String,
    },

    /// A declared tool cannot be built.
    #[error("Invalid tool `{tool}`: {message}")]
    InvalidTool {
        /// The tool.
        tool: String,
        /// What is wrong.
        message: String,
    },

    /// An MCP server named by a request cannot be started, reached or listed.
    #[error("The MCP server `{server}` {message}")]
    ToolServer {
        /// The server's command line or URL.
        server: String,
        /// What went wrong.
        message: String,
    },

    /// The program state lacks a predictor of the program.
    #[error("The program state has no entry for predictor `{name}`")]
    MissingPredictorState {
        /// The predictor.
        name: String,
    },

    /// An example lacks an input field of a predictor.
    #[error("Input field `{field}` of predictor `{predictor}` is missing from the example")]
    MissingInput {
        /// The predictor.
        predictor: String,
        /// The field.
        field: String,
    },

    /// No model is configured under a name.
    #[error("No model `{model}` is configured; configured: {known}")]
    UnknownModel {
        /// The model asked for.
        model: String,
        /// The configured models, comma-separated.
        known: String,
    },

    /// A reply could not be parsed into the output fields (a scored failure in evaluations).
    #[error("The reply of predictor `{predictor}` could not be parsed: {message}")]
    Parse {
        /// The predictor.
        predictor: String,
        /// What was wrong.
        message: String,
        /// The raw reply.
        raw: String,
    },

    /// An evaluation stopped because too many examples failed.
    #[error("Evaluation stopped: {errors} examples failed, more than `max_errors` = {max}; last error (example {index}): {last}")]
    TooManyErrors {
        /// Examples failed so far.
        errors: usize,
        /// The limit.
        max: usize,
        /// The index of the example that failed last.
        index: usize,
        /// Its error.
        last: String,
        /// Whether that error may go away if tried again later (server unreachable, 5xx).
        retryable: bool,
    },
}

impl CoreError {
    /// Whether a model call was refused because the run's budget (calls, tokens, cost,
    /// deadline) is spent or the run was cancelled.
    pub fn is_budget_exhausted(&self) -> bool {
        matches!(
            self,
            CoreError::Lm {
                source: promptopt_lm::LmError::BudgetExhausted(_),
                ..
            }
        )
    }

    /// Whether the failure may go away if the same work is tried again later: a model server
    /// that was unreachable, answered 5xx or timed out.
    pub fn is_retryable(&self) -> bool {
        match self {
            CoreError::Lm { source, .. } => source.is_retryable(),
            CoreError::TooManyErrors { retryable, .. } => *retryable,
            _ => false,
        }
    }

    /// Whether a prompt did not fit the model's context (it fails the same way whenever it is
    /// sent, so evaluations score it as a failed example).
    pub fn is_context_overflow(&self) -> bool {
        matches!(self, CoreError::Lm { source, .. } if source.is_context_overflow())
    }
}
