//! Errors of tracking.

use std::path::PathBuf;

/// What can go wrong while recording or reading runs.
#[derive(Debug, thiserror::Error)]
pub enum TrackingError {
    /// The tracking server did not answer.
    #[error("Cannot reach MLflow at `{uri}`: {message}")]
    Unreachable {
        /// The server, without credentials.
        uri: String,
        /// What the connection reported.
        message: String,
    },
    /// The tracking server answered with an error.
    #[error("MLflow at `{uri}` answered {status} to `{endpoint}`: {message}")]
    Api {
        /// The server, without credentials.
        uri: String,
        /// The HTTP status.
        status: u16,
        /// The REST endpoint.
        endpoint: String,
        /// MLflow's error code (`RESOURCE_DOES_NOT_EXIST`, `INVALID_PARAMETER_VALUE`, ...).
        code: String,
        /// MLflow's message.
        message: String,
    },
    /// A tracking URI that is not `http(s)://...` or `file:...`.
    #[error("Invalid tracking URI `{uri}`: {message}")]
    InvalidUri {
        /// The URI, without credentials.
        uri: String,
        /// What is wrong with it.
        message: String,
    },
    /// A metric, parameter, tag or alias name that cannot be stored.
    #[error("Invalid key `{key}`: {message}")]
    InvalidKey {
        /// The key.
        key: String,
        /// What is wrong with it.
        message: String,
    },
    /// A file of the embedded store could not be read or written.
    #[error("Cannot access `{path}`: {source}")]
    Io {
        /// The file.
        path: PathBuf,
        /// The cause.
        source: std::io::Error,
    },
    /// A file of the embedded store does not parse.
    #[error("Malformed `{path}`: {message}")]
    Corrupt {
        /// The file.
        path: PathBuf,
        /// What does not parse.
        message: String,
    },
    /// A search filter or ordering that does not parse.
    #[error("Invalid search {what} `{text}`: {message}")]
    Search {
        /// `filter` or `order_by`.
        what: &'static str,
        /// The text.
        text: String,
        /// What is wrong, and where.
        message: String,
    },
    /// No run with this id.
    #[error("Run `{0}` not found")]
    RunNotFound(String),
    /// No experiment with this name or id.
    #[error("Experiment `{0}` not found")]
    ExperimentNotFound(String),
    /// No artifact at this path.
    #[error("Artifact `{path}` of run `{run_id}` not found")]
    ArtifactNotFound {
        /// The run.
        run_id: String,
        /// The artifact's path in the run.
        path: String,
    },
    /// A registered model or version that does not exist.
    #[error("Registered model `{0}` not found")]
    ModelNotFound(String),
    /// The server cannot take artifacts.
    #[error("The run's artifact location `{0}` is not served by the tracking server; start `mlflow server` with `--serve-artifacts`")]
    ArtifactsNotProxied(String),
}

impl TrackingError {
    pub(crate) fn io(path: impl Into<PathBuf>, source: std::io::Error) -> Self {
        TrackingError::Io {
            path: path.into(),
            source,
        }
    }

    /// Whether the server could not be reached at all (as opposed to refusing a request).
    pub fn is_unreachable(&self) -> bool {
        matches!(self, TrackingError::Unreachable { .. })
            || matches!(self, TrackingError::Api { status, .. } if *status >= 500)
    }

    /// Whether the server refused the request itself (a 4xx answer).
    pub fn is_rejected(&self) -> bool {
        matches!(self, TrackingError::Api { status, .. } if (400..500).contains(status))
    }
}
