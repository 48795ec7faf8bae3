//! The crate's error type.

/// What can go wrong with experiments.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum ExperimentError {
    /// An experiment definition that does not validate.
    #[error("Invalid experiment: `{field}` {message}")]
    Invalid {
        /// The field at fault.
        field: String,
        /// What is wrong with it.
        message: String,
    },
    /// No experiment with this id or name.
    #[error("No experiment `{0}`")]
    NotFound(String),
    /// No prediction with this id.
    #[error("No prediction `{0}`: feedback needs the `prediction_id` a prediction returned")]
    UnknownPrediction(String),
    /// The experiment is in a state that does not allow the operation.
    #[error("Experiment `{name}` is {state}: {message}")]
    WrongState {
        /// The experiment's name.
        name: String,
        /// Its state.
        state: String,
        /// Why the operation is refused.
        message: String,
    },
    /// Another experiment is running on the same model.
    #[error("Model `{model}` already has the running experiment `{other}`: stop it first")]
    AlreadyRunning {
        /// The model.
        model: String,
        /// The running experiment.
        other: String,
    },
    /// An experiment with this name exists.
    #[error("An experiment named `{0}` exists already")]
    NameTaken(String),
    /// The database cannot be opened or answered with an error.
    #[error("Database `{url}`: {message}")]
    Database {
        /// The database, without its password.
        url: String,
        /// What the database reported.
        message: String,
    },
}

impl ExperimentError {
    pub(crate) fn invalid(field: &str, message: impl Into<String>) -> Self {
        Self::Invalid {
            field: field.to_string(),
            message: message.into(),
        }
    }
}
