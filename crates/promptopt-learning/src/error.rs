//! The crate's error type.

/// What can go wrong in continuous learning.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum LearningError {
    /// A setting of the `learning:` block is invalid.
    #[error("Invalid learning setting `{field}`: {message}")]
    Invalid {
        /// The setting, as a path (`data.holdout_fraction`).
        field: String,
        /// What is wrong with it.
        message: String,
    },
}

impl LearningError {
    pub(crate) fn invalid(field: &str, message: impl std::fmt::Display) -> Self {
        Self::Invalid {
            field: field.to_string(),
            message: message.to_string(),
        }
    }
}
