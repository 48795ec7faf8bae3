//! Errors of language model calls.

use std::time::Duration;

/// What went wrong in a language model call.
///
/// [`LmError::is_retryable`] says whether the same request may succeed later.
#[derive(Debug, Clone, thiserror::Error)]
#[non_exhaustive]
pub enum LmError {
    /// An API key is missing.
    #[error("Missing API key for `{provider}`: set the environment variable `{variable}`")]
    MissingApiKey {
        /// The provider.
        provider: String,
        /// The variable to set.
        variable: String,
    },
    /// The model name names no known provider.
    #[error("Unknown provider `{provider}` in model `{model}`; known providers: {known}")]
    UnknownProvider {
        /// The provider part of the name.
        provider: String,
        /// The full model name.
        model: String,
        /// The known providers, comma separated.
        known: String,
    },
    /// The provider answered with an HTTP error.
    #[error("{provider} answered HTTP {status}: {message}")]
    Http {
        /// The provider.
        provider: String,
        /// The HTTP status.
        status: u16,
        /// The provider's error message.
        message: String,
        /// How long the provider asked us to wait, if it said.
        retry_after: Option<Duration>,
    },
    /// The server could not be reached.
    #[error("Could not reach {provider} at `{url}`: {message}")]
    Connect {
        /// The provider.
        provider: String,
        /// The URL (never with credentials).
        url: String,
        /// What failed.
        message: String,
    },
    /// The call took longer than allowed.
    #[error("The request to {provider} timed out after {:.1} s", after.as_secs_f64())]
    Timeout {
        /// The provider.
        provider: String,
        /// The limit that was hit.
        after: Duration,
    },
    /// The provider's reply could not be understood.
    #[error("{provider} sent a reply that could not be read: {message}")]
    MalformedResponse {
        /// The provider.
        provider: String,
        /// What was wrong.
        message: String,
    },
    /// The request does not fit the model's context window.
    #[error("The prompt has {prompt_tokens} tokens but the context holds {context_tokens}")]
    ContextOverflow {
        /// Tokens in the prompt.
        prompt_tokens: u64,
        /// Tokens the context holds.
        context_tokens: u64,
    },
    /// A server refused the prompt as longer than its model's context window.
    #[error("{provider} refused the prompt as longer than the model's context: {message}")]
    PromptTooLong {
        /// The provider.
        provider: String,
        /// The server's message.
        message: String,
    },
    /// The request is invalid before it is sent.
    #[error("Invalid request: {0}")]
    InvalidRequest(String),
    /// The local engine failed.
    #[error("Local engine error: {0}")]
    Engine(String),
    /// A budget or limit refused the call.
    #[error("Budget exhausted: {0}")]
    BudgetExhausted(String),
    /// The cache failed.
    #[error("Cache error: {0}")]
    Cache(String),
    /// A retryable error that persisted through every retry.
    #[error("{last} (gave up after {retries} {})", if *retries == 1 { "retry" } else { "retries" })]
    GaveUp {
        /// Retries made after the first attempt.
        retries: u32,
        /// The last attempt's error.
        last: Box<LmError>,
    },
}

impl LmError {
    /// Whether the same request may succeed if sent again later.
    pub fn is_retryable(&self) -> bool {
        match self {
            LmError::GaveUp { last, .. } => last.is_retryable(),
            LmError::Http { status, .. } => matches!(status, 408 | 409 | 425 | 429 | 500..=599),
            LmError::Connect { .. }
            | LmError::Timeout { .. }
            | LmError::MalformedResponse { .. } => true,
            _ => false,
        }
    }

    /// Whether the prompt did not fit the model's context window: a failure of this one
    /// request (its prompt), not of the server, so evaluations score it as a failed example.
    pub fn is_context_overflow(&self) -> bool {
        matches!(
            self.last_attempt(),
            LmError::ContextOverflow { .. } | LmError::PromptTooLong { .. }
        )
    }

    /// The error of the last attempt: this one, unless the retry layer gave up after retries.
    pub fn last_attempt(&self) -> &LmError {
        match self {
            LmError::GaveUp { last, .. } => last.last_attempt(),
            other => other,
        }
    }

    /// Retries made before this error was returned.
    pub fn retries(&self) -> u32 {
        match self {
            LmError::GaveUp { retries, .. } => *retries,
            _ => 0,
        }
    }

    /// How long the provider asked us to wait before retrying, if it said.
    pub fn retry_after(&self) -> Option<Duration> {
        match self.last_attempt() {
            LmError::Http { retry_after, .. } => *retry_after,
            _ => None,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn client_errors_are_not_retryable_but_throttling_is() {
        let http = |status| LmError::Http {
            provider: "openai".into(),
            status,
            message: "x".into(),
            retry_after: None,
        };
        assert!(!http(400).is_retryable());
        assert!(!http(401).is_retryable());
        assert!(http(429).is_retryable());
        assert!(http(529).is_retryable());
        assert!(http(503).is_retryable());
        assert!(!http(400).is_context_overflow());
        let long = LmError::PromptTooLong {
            provider: "openai".into(),
            message: "x".into(),
        };
        assert!(long.is_context_overflow() && !long.is_retryable());
        assert!(LmError::ContextOverflow {
            prompt_tokens: 9,
            context_tokens: 8
        }
        .is_context_overflow());
    }
}
