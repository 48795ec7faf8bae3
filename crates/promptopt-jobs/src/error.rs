//! Errors of the job queue and the worker.

use std::path::PathBuf;

/// What can go wrong while queueing, claiming or running jobs.
#[derive(Debug, thiserror::Error)]
pub enum JobError {
    /// A queue URL that is not `redis://`, `rediss://`, `sqlite:PATH` or a path.
    #[error("Invalid queue URL `{url}`: {message}")]
    InvalidUrl {
        /// The URL, without its password.
        url: String,
        /// What is wrong with it.
        message: String,
    },
    /// The Redis server did not answer or refused a command.
    #[error("Redis at `{url}`: {message}")]
    Redis {
        /// The server, without its password.
        url: String,
        /// What Redis reported.
        message: String,
    },
    /// The embedded queue's SQLite file could not be used.
    #[error("Embedded queue `{path}`: {message}")]
    Sqlite {
        /// The database file.
        path: PathBuf,
        /// What SQLite reported.
        message: String,
    },
    /// No job has this id.
    #[error("No job `{0}` in the queue")]
    NotFound(String),
    /// The job is in a state that does not allow the operation.
    #[error("Job `{job_id}` is {state}: {message}")]
    WrongState {
        /// The job.
        job_id: String,
        /// Its state.
        state: String,
        /// Why the operation is refused.
        message: String,
    },
    /// A job's stored record does not parse (written by another version, or damaged).
    #[error("Job `{job_id}` has a record that does not parse: {message}")]
    Corrupt {
        /// The job.
        job_id: String,
        /// What does not parse.
        message: String,
    },
    /// A value given to the queue is not valid (a priority, a timeout, a request).
    #[error("Invalid `{field}`: {message}")]
    Invalid {
        /// The field.
        field: String,
        /// What is wrong with it.
        message: String,
    },
    /// The optimization request of a job does not validate.
    #[error(transparent)]
    Request(#[from] promptopt_optimize::OptimizeError),
    /// A file could not be read or written.
    #[error("Cannot access `{path}`: {source}")]
    Io {
        /// The file.
        path: PathBuf,
        /// The cause.
        source: std::io::Error,
    },
}

impl JobError {
    /// A Redis error on the server `url` (already without its password).
    pub(crate) fn redis(url: &str, error: impl std::fmt::Display) -> Self {
        Self::Redis {
            url: url.to_string(),
            message: error.to_string(),
        }
    }

    /// Whether the error is the queue being unreachable (worth retrying later), rather than a
    /// refusal.
    pub fn is_connection(&self) -> bool {
        match self {
            Self::Redis { message, .. } => {
                let m = message.to_ascii_lowercase();
                m.contains("connection")
                    || m.contains("broken pipe")
                    || m.contains("timed out")
                    || m.contains("loading")
                    || m.contains("refused")
                    || m.contains("reset")
                    || m.contains("terminated")
                    || m.contains("io error")
            }
            Self::Sqlite { message, .. } => message.contains("locked") || message.contains("busy"),
            _ => false,
        }
    }
}
