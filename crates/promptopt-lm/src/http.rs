//! The shared HTTP client and what all providers do with it.

use std::sync::OnceLock;
use std::time::{Duration, Instant};

use reqwest::header::{HeaderMap, HeaderName, HeaderValue, CONTENT_TYPE};

use crate::config::ApiKey;
use crate::LmError;

/// Longest provider error message kept in an [`LmError`].
const MAX_MESSAGE: usize = 600;

/// The one client of the process: connections are pooled and reused by all providers.
pub(crate) fn shared_client(provider: &str) -> Result<reqwest::Client, LmError> {
    static CLIENT: OnceLock<Result<reqwest::Client, String>> = OnceLock::new();
    CLIENT
        .get_or_init(|| {
            reqwest::Client::builder()
                .tcp_nodelay(true)
                .pool_idle_timeout(Duration::from_secs(90))
                .pool_max_idle_per_host(256)
                .connect_timeout(Duration::from_secs(30))
                .build()
                .map_err(|e| e.to_string())
        })
        .clone()
        .map_err(|message| LmError::Connect {
            provider: provider.to_owned(),
            url: String::new(),
            message: format!("Could not create the HTTP client: {message}"),
        })
}

/// A provider's endpoint: its client, URL and headers (the key among them, marked sensitive).
pub(crate) struct Endpoint {
    pub provider: &'static str,
    pub client: reqwest::Client,
    pub url: String,
    pub headers: HeaderMap,
    pub key: Option<ApiKey>,
}

impl std::fmt::Debug for Endpoint {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Endpoint")
            .field("provider", &self.provider)
            .field("url", &self.url)
            .field("key", &self.key)
            .finish()
    }
}

/// A successful reply: its body and how long the exchange took.
pub(crate) struct Reply {
    pub body: bytes::Bytes,
    pub latency: Duration,
}

impl Endpoint {
    /// An endpoint with a JSON content type and `headers`; a header built from the key is marked
    /// sensitive so that it never shows in debug output.
    pub fn new(
        provider: &'static str,
        url: String,
        key: Option<ApiKey>,
        headers: &[(&'static str, String)],
    ) -> Result<Self, LmError> {
        let client = shared_client(provider)?;
        let mut map = HeaderMap::new();
        map.insert(CONTENT_TYPE, HeaderValue::from_static("application/json"));
        for (name, value) in headers {
            let mut value = HeaderValue::from_str(value).map_err(|_| {
                LmError::InvalidRequest(format!(
                    "The value of header `{name}` for {provider} holds characters a header cannot"
                ))
            })?;
            if key.as_ref().is_some_and(|k| value_has_key(&value, k)) {
                value.set_sensitive(true);
            }
            map.insert(HeaderName::from_static(name), value);
        }
        Ok(Self {
            provider,
            client,
            url,
            headers: map,
            key,
        })
    }

    /// Posts `body` to the endpoint's URL (or to `url` when given) and returns the reply body of
    /// a 2xx answer; any other answer becomes an [`LmError`].
    pub async fn post(&self, url: Option<&str>, body: Vec<u8>) -> Result<Reply, LmError> {
        let url = url.unwrap_or(&self.url);
        let started = Instant::now();
        let response = self
            .client
            .post(url)
            .headers(self.headers.clone())
            .body(body)
            .send()
            .await
            .map_err(|e| self.transport_error(url, e))?;
        let status = response.status();
        let retry_after = retry_after(response.headers());
        let bytes = response
            .bytes()
            .await
            .map_err(|e| self.transport_error(url, e))?;
        if status.is_success() {
            return Ok(Reply {
                body: bytes,
                latency: started.elapsed(),
            });
        }
        let (message, hinted) = error_message(&bytes);
        if status.as_u16() == 400 && names_context_overflow(&bytes) {
            return Err(LmError::PromptTooLong {
                provider: self.provider.to_owned(),
                message: self.redact(&message),
            });
        }
        Err(LmError::Http {
            provider: self.provider.to_owned(),
            status: status.as_u16(),
            message: self.redact(&message),
            retry_after: retry_after.or(hinted),
        })
    }

    /// Removes the key from `text`.
    pub fn redact(&self, text: &str) -> String {
        match &self.key {
            Some(key) => key.redact(text),
            None => text.to_owned(),
        }
    }

    /// A reply body that could not be parsed.
    pub fn malformed(&self, error: impl std::fmt::Display) -> LmError {
        LmError::MalformedResponse {
            provider: self.provider.to_owned(),
            message: self.redact(&error.to_string()),
        }
    }

    fn transport_error(&self, url: &str, error: reqwest::Error) -> LmError {
        let message = self.redact(&error_chain(&error.without_url()));
        LmError::Connect {
            provider: self.provider.to_owned(),
            url: url.to_owned(),
            message,
        }
    }
}

fn value_has_key(value: &HeaderValue, key: &ApiKey) -> bool {
    value
        .to_str()
        .is_ok_and(|v| !key.expose().is_empty() && v.contains(key.expose()))
}

/// An error and its sources, joined by `: `.
fn error_chain(error: &dyn std::error::Error) -> String {
    let mut message = error.to_string();
    let mut source = error.source();
    while let Some(inner) = source {
        message.push_str(": ");
        message.push_str(&inner.to_string());
        source = inner.source();
    }
    message
}

/// `Retry-After` (seconds) or OpenAI's `retry-after-ms`.
fn retry_after(headers: &HeaderMap) -> Option<Duration> {
    let read = |name: &str| headers.get(name).and_then(|v| v.to_str().ok());
    if let Some(ms) = read("retry-after-ms").and_then(|v| v.trim().parse::<f64>().ok()) {
        return duration_from_secs(ms / 1000.0);
    }
    read("retry-after")
        .and_then(|v| v.trim().parse::<f64>().ok())
        .and_then(duration_from_secs)
}

fn duration_from_secs(secs: f64) -> Option<Duration> {
    (secs.is_finite() && secs >= 0.0).then(|| Duration::from_secs_f64(secs.min(86_400.0)))
}

/// The message of an error body in any of the providers' formats, and a retry delay if the body
/// names one (Gemini's `RetryInfo`).
fn error_message(body: &[u8]) -> (String, Option<Duration>) {
    let Ok(value) = serde_json::from_slice::<serde_json::Value>(body) else {
        let text = String::from_utf8_lossy(body);
        return (truncate(text.trim()), None);
    };
    let error = value.get("error").unwrap_or(&value);
    let message = error
        .get("message")
        .and_then(|m| m.as_str())
        .or_else(|| error.as_str())
        .map(str::to_owned)
        .unwrap_or_else(|| value.to_string());
    let kind = error
        .get("type")
        .or_else(|| error.get("status"))
        .and_then(|t| t.as_str());
    let message = match kind {
        Some(kind) => format!("{message} ({kind})"),
        None => message,
    };
    let hinted = error
        .get("details")
        .and_then(|d| d.as_array())
        .into_iter()
        .flatten()
        .filter_map(|d| d.get("retryDelay").and_then(|r| r.as_str()))
        .find_map(|delay| delay.strip_suffix('s')?.parse::<f64>().ok())
        .and_then(duration_from_secs);
    (truncate(&message), hinted)
}

/// Whether an error body says the prompt exceeds the context window: OpenAI's (and
/// `promptopt serve-lm`'s) `context_length_exceeded` code or llama.cpp's server's
/// `exceed_context_size_error` type.
fn names_context_overflow(body: &[u8]) -> bool {
    let Ok(value) = serde_json::from_slice::<serde_json::Value>(body) else {
        return false;
    };
    let error = value.get("error").unwrap_or(&value);
    let field = |name: &str| error.get(name).and_then(|v| v.as_str());
    field("code") == Some("context_length_exceeded")
        || field("type") == Some("exceed_context_size_error")
}

fn truncate(text: &str) -> String {
    if text.len() <= MAX_MESSAGE {
        return text.to_owned();
    }
    let mut end = MAX_MESSAGE;
    while !text.is_char_boundary(end) {
        end -= 1;
    }
    format!("{}…", &text[..end])
}

/// Joins a base URL and a path with exactly one slash.
pub(crate) fn join_url(base: &str, path: &str) -> String {
    format!(
        "{}/{}",
        base.trim_end_matches('/'),
        path.trim_start_matches('/')
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn error_bodies_of_all_providers_are_read() {
        let openai = br#"{"error":{"message":"Bad key","type":"invalid_request_error","code":"invalid_api_key"}}"#;
        assert_eq!(error_message(openai).0, "Bad key (invalid_request_error)");
        let anthropic =
            br#"{"type":"error","error":{"type":"overloaded_error","message":"Overloaded"}}"#;
        assert_eq!(error_message(anthropic).0, "Overloaded (overloaded_error)");
        let gemini = br#"{"error":{"code":429,"message":"Quota","status":"RESOURCE_EXHAUSTED","details":[{"@type":"type.googleapis.com/google.rpc.RetryInfo","retryDelay":"7s"}]}}"#;
        assert_eq!(
            error_message(gemini),
            (
                "Quota (RESOURCE_EXHAUSTED)".to_owned(),
                Some(Duration::from_secs(7))
            )
        );
        assert_eq!(error_message(b"<html>oops</html>").0, "<html>oops</html>");
        assert!(names_context_overflow(
            br#"{"error":{"message":"Too long","type":"invalid_request_error","code":"context_length_exceeded"}}"#
        ));
        assert!(names_context_overflow(
            br#"{"error":{"code":400,"message":"Too long","type":"exceed_context_size_error"}}"#
        ));
        assert!(!names_context_overflow(openai));
        assert!(!names_context_overflow(b"<html>oops</html>"));
    }

    #[test]
    fn urls_are_joined_with_one_slash() {
        assert_eq!(join_url("http://x/v1/", "/chat"), "http://x/v1/chat");
        assert_eq!(join_url("http://x/v1", "chat"), "http://x/v1/chat");
    }
}
