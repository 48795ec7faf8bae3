//! Reading request bodies: JSON with errors that name the field, and limits that answer 413.

use axum::extract::{FromRequest, FromRequestParts, Path, Request};
use axum::http::request::Parts;
use axum::http::{header, StatusCode};
use bytes::Bytes;
use serde::de::DeserializeOwned;

use crate::error::ApiError;

/// A JSON body parsed into `T`; a syntax error is 400, a wrong type, missing or unknown field 422
/// naming the field, a body over the limit 413, a content type other than JSON 415.
#[derive(Debug)]
pub(crate) struct ApiJson<T>(pub(crate) T);

/// The body's bytes, answering 413 above the limit.
pub(crate) async fn bytes_of(req: Request) -> Result<Bytes, ApiError> {
    Bytes::from_request(req, &()).await.map_err(|rejection| {
        if rejection.status() == StatusCode::PAYLOAD_TOO_LARGE {
            ApiError::new(
                StatusCode::PAYLOAD_TOO_LARGE,
                "payload_too_large",
                "The request body is larger than the server accepts (`max_body_bytes`)",
            )
        } else {
            ApiError::bad_request(format!("Cannot read the request body: {rejection}"))
        }
    })
}

/// The request's media type, lower-cased, without parameters.
pub(crate) fn media_type(req: &Request) -> Option<String> {
    req.headers()
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .map(|v| {
            v.split(';')
                .next()
                .unwrap_or("")
                .trim()
                .to_ascii_lowercase()
        })
}

/// Parses JSON into `T`, naming the field at fault.
pub(crate) fn parse_json<T: DeserializeOwned>(bytes: &[u8]) -> Result<T, ApiError> {
    let mut deserializer = serde_json::Deserializer::from_slice(bytes);
    let value: T = serde_path_to_error::deserialize(&mut deserializer).map_err(|e| {
        let path = e.path().to_string();
        let inner = e.into_inner();
        let message = inner.to_string();
        if inner.is_syntax() || inner.is_eof() {
            return ApiError::bad_request(format!("The body is not valid JSON: {message}"));
        }
        // The path ends at the unknown field itself; a missing field is named by the message.
        let named = crate::error::field_of(&message);
        let field = match (path.as_str(), named) {
            (".", named) => named,
            (p, Some(f)) if !p.ends_with(&format!(".{f}")) && p != f => Some(format!("{p}.{f}")),
            (p, _) => Some(p.to_string()),
        };
        let mut error = ApiError::invalid(format!("Invalid request body: {message}"));
        error.field = field;
        error
    })?;
    deserializer
        .end()
        .map_err(|e| ApiError::bad_request(format!("The body is not valid JSON: {e}")))?;
    Ok(value)
}

impl<T: DeserializeOwned, S: Send + Sync> FromRequest<S> for ApiJson<T> {
    type Rejection = ApiError;

    async fn from_request(req: Request, _state: &S) -> Result<Self, Self::Rejection> {
        match media_type(&req).as_deref() {
            Some("application/json") => {}
            Some(other) if other.ends_with("+json") => {}
            other => {
                return Err(ApiError::new(
                    StatusCode::UNSUPPORTED_MEDIA_TYPE,
                    "unsupported_media_type",
                    format!(
                        "The body must be JSON (`Content-Type: application/json`), not {}",
                        other.map_or("a body without a content type".to_string(), |o| format!(
                            "`{o}`"
                        ))
                    ),
                ))
            }
        }
        let bytes = bytes_of(req).await?;
        parse_json(&bytes).map(ApiJson)
    }
}

/// Path parameters; one that does not decode (bad percent-encoding, not UTF-8) is 404 with a
/// JSON error.
#[derive(Debug)]
pub(crate) struct ApiPath<T>(pub(crate) T);

impl<T, S> FromRequestParts<S> for ApiPath<T>
where
    T: DeserializeOwned + Send,
    S: Send + Sync,
{
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, state: &S) -> Result<Self, Self::Rejection> {
        match Path::<T>::from_request_parts(parts, state).await {
            Ok(Path(value)) => Ok(ApiPath(value)),
            Err(rejection) => Err(ApiError::not_found(format!(
                "No resource at `{}`: {}",
                parts.uri.path(),
                rejection.body_text()
            ))),
        }
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    #[derive(Debug, serde::Deserialize)]
    #[serde(deny_unknown_fields)]
    #[allow(dead_code)]
    struct Body {
        inputs: Inner,
    }

    #[derive(Debug, serde::Deserialize)]
    #[serde(deny_unknown_fields)]
    #[allow(dead_code)]
    struct Inner {
        n: u32,
    }

    #[test]
    fn errors_name_the_field_and_syntax_errors_are_400() {
        let e = parse_json::<Body>(br#"{"inputs": {"n": "x"}}"#).unwrap_err();
        assert_eq!(e.status, StatusCode::UNPROCESSABLE_ENTITY);
        assert_eq!(e.field.as_deref(), Some("inputs.n"));
        let e = parse_json::<Body>(br#"{"inputs": {"n": 1, "m": 2}}"#).unwrap_err();
        assert_eq!(e.field.as_deref(), Some("inputs.m"));
        let e = parse_json::<Body>(br#"{"inputs": "#).unwrap_err();
        assert_eq!(e.status, StatusCode::BAD_REQUEST);
        let e = parse_json::<Body>(br#"{"inputs": {"n": 1}} trailing"#).unwrap_err();
        assert_eq!(e.status, StatusCode::BAD_REQUEST);
        assert!(parse_json::<Body>(br#"{"inputs": {"n": 1}}"#).is_ok());
    }
}
