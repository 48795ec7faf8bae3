//! The crate's error type.

use std::path::PathBuf;

/// Everything that can go wrong in the registry.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum RegistryError {
    /// A file or folder could not be read or written.
    #[error("Cannot access `{path}`: {source}")]
    Io {
        /// The path.
        path: PathBuf,
        /// The cause.
        #[source]
        source: std::io::Error,
    },

    /// No such model, version or alias.
    #[error("No model `{name}`{} in the registry at `{home}`", selector.as_ref().map(|v| format!(" at `{v}`")).unwrap_or_default())]
    NotFound {
        /// The model name.
        name: String,
        /// The version or alias asked for, when one was.
        selector: Option<String>,
        /// The registry's home folder.
        home: PathBuf,
    },

    /// A version that exists already (versions are immutable).
    #[error("Model `{name}` version `{version}` already exists; versions are immutable")]
    VersionExists {
        /// The model name.
        name: String,
        /// The version.
        version: String,
    },

    /// A malformed model reference, name, version or alias.
    #[error("Invalid model reference `{reference}`: {message}")]
    InvalidRef {
        /// What was given.
        reference: String,
        /// What is wrong.
        message: String,
    },

    /// A file that is not a model artifact this version can read.
    #[error("`{path}` is not a model artifact: {message}")]
    InvalidArtifact {
        /// The file.
        path: PathBuf,
        /// What is wrong.
        message: String,
    },

    /// Saving a version failed after several concurrent writers took the versions it tried.
    #[error("Cannot save model `{name}`: other writers kept taking the next version")]
    Contended {
        /// The model name.
        name: String,
    },

    /// An export format name that is not one of [`crate::export::ExportFormat`]'s.
    #[error("Unknown export format `{name}`; expected `dspy`, `messages` or `markdown`")]
    UnknownExportFormat {
        /// What was given.
        name: String,
    },

    /// A program could not be rendered for export.
    #[error(transparent)]
    Core(#[from] promptopt_core::CoreError),

    /// JSON (de)serialization failed.
    #[error("JSON error: {0}")]
    Json(#[from] serde_json::Error),
}

impl RegistryError {
    pub(crate) fn io(path: impl Into<PathBuf>, source: std::io::Error) -> Self {
        Self::Io {
            path: path.into(),
            source,
        }
    }
}
