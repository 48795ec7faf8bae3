//! Errors: [`ServerError`] when the server cannot start, [`ApiError`] for what a request gets
//! back (`{"error": {"code", "message", "field"}}` with the status that fits).

use std::net::SocketAddr;
use std::path::PathBuf;

use axum::http::{header, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use promptopt_jobs::JobError;
use promptopt_optimize::OptimizeError;
use promptopt_registry::RegistryError;
use serde::Serialize;

/// Why the server cannot start.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum ServerError {
    /// The configuration file cannot be read or does not parse.
    #[error("Invalid server configuration `{path}`: {message}")]
    Config {
        /// The file.
        path: PathBuf,
        /// What is wrong.
        message: String,
    },
    /// A token list (`PROMPTOPT_API_TOKENS` or the configuration's `tokens`) that does not parse.
    #[error("Invalid token list in {source_name}: {message}")]
    Tokens {
        /// Where the list came from.
        source_name: String,
        /// What is wrong (never the token itself).
        message: String,
    },
    /// `--no-auth` with an address other machines can reach.
    #[error("`--no-auth` is allowed only on a loopback address, not `{addr}`")]
    NoAuthNotLoopback {
        /// The bind address.
        addr: SocketAddr,
    },
    /// No token is configured and `--no-auth` was not given.
    #[error("No API token is configured: set `PROMPTOPT_API_TOKENS` (e.g. `TOKEN:predict,TOKEN2`) or `tokens` in the configuration, or pass `--no-auth` on a loopback address")]
    NoTokens,
    /// The address cannot be bound.
    #[error("Cannot listen on `{addr}`: {source}")]
    Bind {
        /// The address.
        addr: String,
        /// The cause.
        #[source]
        source: std::io::Error,
    },
    /// The database cannot be opened.
    #[error("Cannot open the server's database: {0}")]
    Database(#[source] promptopt_experiments::ExperimentError),
    /// `with_database` was called after the router was built.
    #[error("The database must be given before the server's routes are built")]
    AlreadyShared,
    /// The server stopped with an I/O error.
    #[error("The server stopped: {0}")]
    Serve(#[source] std::io::Error),
}

/// An error answered to a request.
#[derive(Debug, Clone, PartialEq)]
pub struct ApiError {
    /// The HTTP status.
    pub status: StatusCode,
    /// A stable machine-readable code (`not_found`, `invalid_request`, ...).
    pub code: &'static str,
    /// What is wrong, for a person.
    pub message: String,
    /// The field of the request at fault, when one is.
    pub field: Option<String>,
    /// Seconds after which a retry may succeed (`Retry-After`).
    pub retry_after: Option<u64>,
}

/// The JSON body of an error response.
#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct ErrorBody {
    /// The error.
    pub error: ErrorDetail,
}

/// What went wrong.
#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct ErrorDetail {
    /// A stable machine-readable code.
    pub code: String,
    /// What is wrong, for a person.
    pub message: String,
    /// The request field at fault, when one is.
    pub field: Option<String>,
}

impl ApiError {
    /// An error with `status` and `code`.
    pub fn new(status: StatusCode, code: &'static str, message: impl Into<String>) -> Self {
        Self {
            status,
            code,
            message: message.into(),
            field: None,
            retry_after: None,
        }
    }

    /// The same error, naming `field`.
    #[must_use]
    pub fn field(mut self, field: impl Into<String>) -> Self {
        self.field = Some(field.into());
        self
    }

    /// 400: the body or a parameter cannot be read.
    pub fn bad_request(message: impl Into<String>) -> Self {
        Self::new(StatusCode::BAD_REQUEST, "bad_request", message)
    }

    /// 422: well-formed but not valid.
    pub fn invalid(message: impl Into<String>) -> Self {
        Self::new(StatusCode::UNPROCESSABLE_ENTITY, "invalid_request", message)
    }

    /// 404.
    pub fn not_found(message: impl Into<String>) -> Self {
        Self::new(StatusCode::NOT_FOUND, "not_found", message)
    }

    /// 409: the resource is not in a state that allows it.
    pub fn conflict(message: impl Into<String>) -> Self {
        Self::new(StatusCode::CONFLICT, "conflict", message)
    }

    /// 503 with `Retry-After`.
    pub fn unavailable(code: &'static str, message: impl Into<String>, retry_after: u64) -> Self {
        let mut e = Self::new(StatusCode::SERVICE_UNAVAILABLE, code, message);
        e.retry_after = Some(retry_after);
        e
    }

    /// 500: something on our side; the message is logged, the client gets a generic one.
    pub fn internal(message: impl std::fmt::Display) -> Self {
        tracing::error!(error = %message, "internal error");
        Self::new(
            StatusCode::INTERNAL_SERVER_ERROR,
            "internal",
            "The server could not complete the request; see its log",
        )
    }
}

impl std::fmt::Display for ApiError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "{} {}: {}",
            self.status.as_u16(),
            self.code,
            self.message
        )
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let body = ErrorBody {
            error: ErrorDetail {
                code: self.code.to_string(),
                message: self.message,
                field: self.field,
            },
        };
        let mut response = (self.status, axum::Json(body)).into_response();
        if let Some(seconds) = self.retry_after {
            response
                .headers_mut()
                .insert(header::RETRY_AFTER, HeaderValue::from(seconds));
        }
        if self.status == StatusCode::UNAUTHORIZED {
            response
                .headers_mut()
                .insert(header::WWW_AUTHENTICATE, HeaderValue::from_static("Bearer"));
        }
        response
    }
}

impl From<RegistryError> for ApiError {
    fn from(e: RegistryError) -> Self {
        match e {
            RegistryError::NotFound { .. } => Self::not_found(e.to_string()),
            RegistryError::InvalidRef { .. } => Self::invalid(e.to_string()),
            RegistryError::VersionExists { .. } => Self::conflict(e.to_string()),
            RegistryError::Contended { .. } => Self::unavailable("contended", e.to_string(), 1),
            other => Self::internal(other),
        }
    }
}

impl From<JobError> for ApiError {
    fn from(e: JobError) -> Self {
        if e.is_connection() {
            return Self::unavailable("queue_unavailable", e.to_string(), 2);
        }
        match e {
            JobError::NotFound(_) => Self::not_found(e.to_string()),
            JobError::WrongState { .. } => Self::conflict(e.to_string()),
            JobError::Invalid { ref field, .. } => {
                let field = field.clone();
                Self::invalid(e.to_string()).field(field)
            }
            JobError::Request(inner) => Self::from(inner),
            other => Self::internal(other),
        }
    }
}

impl From<OptimizeError> for ApiError {
    fn from(e: OptimizeError) -> Self {
        match e {
            OptimizeError::InvalidRequest { message, .. } => {
                let field = field_of(&message);
                let mut error = Self::invalid(format!("Invalid optimization request: {message}"));
                error.field = field;
                error
            }
            OptimizeError::UnknownConfigKey { .. }
            | OptimizeError::InvalidConfig { .. }
            | OptimizeError::NoExamples { .. }
            | OptimizeError::Unsupported(_) => Self::invalid(e.to_string()),
            OptimizeError::Registry(inner) => Self::from(inner),
            OptimizeError::Core(inner @ promptopt_core::CoreError::MissingInput { .. }) => {
                Self::invalid(inner.to_string())
            }
            other => Self::new(StatusCode::BAD_GATEWAY, "model_error", other.to_string()),
        }
    }
}

/// The field a serde or validation message names: `unknown field `x``, `missing field `x``,
/// `invalid type ... for `x``, or a message that starts with the field's name.
pub(crate) fn field_of(message: &str) -> Option<String> {
    for marker in ["unknown field `", "missing field `", "duplicate field `"] {
        if let Some(rest) = message.split_once(marker).map(|(_, r)| r) {
            return rest.split_once('`').map(|(f, _)| f.to_string());
        }
    }
    let first = message.split([':', ' ']).next()?;
    let trimmed = first.trim_matches('`');
    let looks_like_field = !trimmed.is_empty()
        && trimmed.chars().all(|c| {
            c.is_ascii_lowercase() || c.is_ascii_digit() || matches!(c, '_' | '.' | '[' | ']')
        })
        && trimmed.contains(['_', '.']);
    looks_like_field.then(|| trimmed.to_string())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn fields_are_found_in_serde_and_validation_messages() {
        assert_eq!(
            field_of("unknown field `algoritm`, expected one of `a`").as_deref(),
            Some("algoritm")
        );
        assert_eq!(
            field_of("missing field `model` at line 1").as_deref(),
            Some("model")
        );
        assert_eq!(
            field_of("algorithm_config.max_demos: invalid type").as_deref(),
            Some("algorithm_config.max_demos")
        );
        assert_eq!(field_of("something went wrong"), None);
    }

    #[test]
    fn an_error_response_has_the_json_body_and_retry_after() {
        let response = ApiError::unavailable("overloaded", "Too many requests", 1).into_response();
        assert_eq!(response.status(), StatusCode::SERVICE_UNAVAILABLE);
        assert_eq!(response.headers()[header::RETRY_AFTER], "1");
        let response =
            ApiError::new(StatusCode::UNAUTHORIZED, "unauthorized", "No token").into_response();
        assert_eq!(response.headers()[header::WWW_AUTHENTICATE], "Bearer");
    }
}
