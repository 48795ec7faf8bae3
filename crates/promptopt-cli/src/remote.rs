//! `--server URL`: the client of a `promptopt serve` HTTP API, which `jobs`, `models` and
//! `predict` talk to instead of the local queue and registry.
//!
//! Errors the server answers (`{"error": {"code", "message", "field"}}`) become [`RemoteError`]s
//! that give its message and the HTTP status; the token is sent only as a sensitive header and
//! never appears in a message or in `Debug` output.

use std::collections::VecDeque;
use std::time::Duration;

use reqwest::header::{HeaderValue, ACCEPT, AUTHORIZATION};
use reqwest::{Method, RequestBuilder, Response, StatusCode, Url};
use serde::de::DeserializeOwned;
use serde_json::Value;

/// How long connecting to the server may take.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(10);

/// How long a request other than an event stream may take.
const REQUEST_TIMEOUT: Duration = Duration::from_secs(300);

/// `--server` and `--token`: talk to a `promptopt serve` API instead of the local queue and
/// registry.
#[derive(Clone, Default, clap::Args)]
pub struct ServerArgs {
    /// A `promptopt serve` API to use instead of the local queue and registry, e.g.
    /// `http://127.0.0.1:8000`.
    #[arg(long, env = "PROMPTOPT_SERVER", global = true, value_name = "URL")]
    pub server: Option<String>,
    /// The bearer token for `--server`.
    #[arg(
        long,
        env = "PROMPTOPT_TOKEN",
        global = true,
        hide_env_values = true,
        value_name = "TOKEN"
    )]
    pub token: Option<String>,
}

impl std::fmt::Debug for ServerArgs {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ServerArgs")
            .field("server", &self.server)
            .field("token", &self.token.as_ref().map(|_| "<redacted>"))
            .finish()
    }
}

impl ServerArgs {
    /// The client for `--server`, or `None` to work locally (no `--server`, or an empty one).
    pub fn remote(&self) -> anyhow::Result<Option<Remote>> {
        let Some(server) = self
            .server
            .as_deref()
            .map(str::trim)
            .filter(|s| !s.is_empty())
        else {
            return Ok(None);
        };
        let token = self
            .token
            .as_deref()
            .map(str::trim)
            .filter(|t| !t.is_empty());
        Ok(Some(Remote::new(server, token)?))
    }

    /// The client for `--server`, or for a server on this machine's default address
    /// (`http://127.0.0.1:8000`): for commands that only make sense against a server.
    pub fn remote_or_default(&self) -> anyhow::Result<Remote> {
        let mut args = self.clone();
        if args.server.as_deref().is_none_or(|s| s.trim().is_empty()) {
            args.server = Some(DEFAULT_SERVER.to_string());
        }
        args.remote()?
            .ok_or_else(|| anyhow::anyhow!("Give the server with `--server URL`"))
    }
}

/// Where `promptopt serve` listens unless told otherwise.
pub const DEFAULT_SERVER: &str = "http://127.0.0.1:8000";

/// What went wrong talking to the server.
#[derive(Debug, thiserror::Error)]
pub enum RemoteError {
    /// The server cannot be reached (refused, unknown host, timed out).
    #[error("Cannot reach the server at `{url}`: {reason}")]
    Unreachable {
        /// The server's URL.
        url: String,
        /// Why, in a few words.
        reason: String,
    },
    /// The server answered with an error status.
    #[error("The server answered {status}: {message}{hint}")]
    Api {
        /// The HTTP status.
        status: StatusCode,
        /// The server's machine-readable code (`not_found`, `forbidden`, ...), when it gave one.
        code: Option<String>,
        /// The server's message.
        message: String,
        /// What the user may do about it (empty when nothing).
        hint: String,
    },
    /// The answer is not what the API sends.
    #[error("The server at `{url}` sent an answer that does not parse: {message}")]
    Invalid {
        /// The server's URL.
        url: String,
        /// What is wrong.
        message: String,
    },
}

impl RemoteError {
    /// The HTTP status the server answered, for an error answer.
    pub fn status(&self) -> Option<StatusCode> {
        match self {
            RemoteError::Api { status, .. } => Some(*status),
            _ => None,
        }
    }

    /// Whether the request itself was at fault (a 4xx answer): a usage error.
    pub fn is_client_error(&self) -> bool {
        self.status().is_some_and(|s| s.is_client_error())
    }
}

/// A client of one `promptopt serve` API.
#[derive(Clone)]
pub struct Remote {
    /// The API's base URL.
    base: Url,
    /// The base URL as messages show it (without credentials or a trailing `/`).
    shown: String,
    /// `Bearer TOKEN`, marked sensitive.
    auth: Option<HeaderValue>,
    /// The HTTP client.
    client: reqwest::Client,
}

impl std::fmt::Debug for Remote {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Remote")
            .field("base", &self.shown)
            .field("token", &self.auth.as_ref().map(|_| "<redacted>"))
            .finish_non_exhaustive()
    }
}

/// The innermost cause of an error, which names what actually failed (`Connection refused`).
fn root_cause(error: &(dyn std::error::Error + 'static)) -> String {
    let mut cause = error;
    while let Some(next) = cause.source() {
        cause = next;
    }
    cause.to_string()
}

impl Remote {
    /// A client of the API at `server` (`http://HOST:PORT`, maybe with a path prefix), sending
    /// `token` as `Authorization: Bearer TOKEN` when given.
    pub fn new(server: &str, token: Option<&str>) -> anyhow::Result<Self> {
        let bad = || {
            anyhow::anyhow!(
                "`--server` must be an `http://` or `https://` URL such as `http://127.0.0.1:8000`, not `{server}`"
            )
        };
        let base = Url::parse(server).map_err(|_| bad())?;
        if !matches!(base.scheme(), "http" | "https") || base.cannot_be_a_base() {
            return Err(bad());
        }
        let mut shown = base.clone();
        let _ = shown.set_username("");
        let _ = shown.set_password(None);
        let shown = shown.as_str().trim_end_matches('/').to_string();
        let auth = match token {
            Some(token) => {
                let mut value = HeaderValue::from_str(&format!("Bearer {token}")).map_err(|_| {
                    anyhow::anyhow!(
                        "The token (`--token` or `PROMPTOPT_TOKEN`) holds characters an HTTP header cannot carry"
                    )
                })?;
                value.set_sensitive(true);
                Some(value)
            }
            None => None,
        };
        let client = reqwest::Client::builder()
            .connect_timeout(CONNECT_TIMEOUT)
            .user_agent(concat!("promptopt/", env!("CARGO_PKG_VERSION")))
            .build()
            .map_err(|e| anyhow::anyhow!("Cannot set up the HTTP client: {}", root_cause(&e)))?;
        Ok(Self {
            base,
            shown,
            auth,
            client,
        })
    }

    /// The server's URL, as messages show it.
    pub fn url(&self) -> &str {
        &self.shown
    }

    /// The URL of the API path `segments` (each one percent-encoded).
    fn endpoint(&self, segments: &[&str]) -> Url {
        let mut url = self.base.clone();
        url.set_query(None);
        url.set_fragment(None);
        if let Ok(mut path) = url.path_segments_mut() {
            path.pop_if_empty().extend(segments);
        }
        url
    }

    /// A request to `segments`, with the token.
    fn request(&self, method: Method, segments: &[&str]) -> RequestBuilder {
        let mut builder = self.client.request(method, self.endpoint(segments));
        if let Some(auth) = &self.auth {
            builder = builder.header(AUTHORIZATION, auth.clone());
        }
        builder
    }

    fn unreachable(&self, error: &reqwest::Error) -> RemoteError {
        let reason = if error.is_timeout() {
            "the request timed out".to_string()
        } else {
            root_cause(error)
        };
        RemoteError::Unreachable {
            url: self.shown.clone(),
            reason,
        }
    }

    fn invalid(&self, message: impl std::fmt::Display) -> RemoteError {
        RemoteError::Invalid {
            url: self.shown.clone(),
            message: message.to_string(),
        }
    }

    /// Sends `builder`; an error status becomes [`RemoteError::Api`] with the server's message.
    async fn send(&self, builder: RequestBuilder) -> Result<Response, RemoteError> {
        let response = builder.send().await.map_err(|e| self.unreachable(&e))?;
        let status = response.status();
        if status.is_success() {
            return Ok(response);
        }
        let bytes = response.bytes().await.unwrap_or_default();
        let body: Option<Value> = serde_json::from_slice(&bytes).ok();
        let detail = body.as_ref().and_then(|b| b.get("error"));
        let code = detail
            .and_then(|d| d.get("code"))
            .and_then(Value::as_str)
            .map(str::to_string);
        let message = detail
            .and_then(|d| d.get("message"))
            .and_then(Value::as_str)
            .map(str::to_string)
            .unwrap_or_else(|| {
                let text = String::from_utf8_lossy(&bytes);
                let text: String = text.trim().chars().take(200).collect();
                if text.is_empty() {
                    status
                        .canonical_reason()
                        .unwrap_or("no message")
                        .to_string()
                } else {
                    text
                }
            });
        let hint = if status == StatusCode::UNAUTHORIZED && self.auth.is_none() {
            " (pass `--token` or set `PROMPTOPT_TOKEN`)".to_string()
        } else {
            String::new()
        };
        Err(RemoteError::Api {
            status,
            code,
            message,
            hint,
        })
    }

    /// Reads a JSON answer.
    async fn json<T: DeserializeOwned>(&self, response: Response) -> Result<T, RemoteError> {
        let bytes = response.bytes().await.map_err(|e| self.unreachable(&e))?;
        serde_json::from_slice(&bytes).map_err(|e| self.invalid(e))
    }

    /// `GET` `segments` with `query`, parsing the JSON answer.
    pub async fn get<T: DeserializeOwned>(
        &self,
        segments: &[&str],
        query: &[(&str, String)],
    ) -> Result<T, RemoteError> {
        let builder = self
            .request(Method::GET, segments)
            .query(query)
            .timeout(REQUEST_TIMEOUT);
        let response = self.send(builder).await?;
        self.json(response).await
    }

    /// `GET` `segments` with `query`, returning the body as text (JSON lines, CSV).
    pub async fn get_text(
        &self,
        segments: &[&str],
        query: &[(&str, String)],
    ) -> Result<String, RemoteError> {
        let builder = self
            .request(Method::GET, segments)
            .query(query)
            .timeout(REQUEST_TIMEOUT);
        let response = self.send(builder).await?;
        response.text().await.map_err(|e| self.unreachable(&e))
    }

    /// `POST` `body` (JSON, when given) to `segments` with `query`, parsing the JSON answer.
    pub async fn post<T: DeserializeOwned>(
        &self,
        segments: &[&str],
        query: &[(&str, String)],
        body: Option<&Value>,
    ) -> Result<T, RemoteError> {
        let mut builder = self
            .request(Method::POST, segments)
            .query(query)
            .timeout(REQUEST_TIMEOUT);
        if let Some(body) = body {
            builder = builder.json(body);
        }
        let response = self.send(builder).await?;
        self.json(response).await
    }

    /// `PUT` the JSON `body` to `segments`, parsing the JSON answer.
    pub async fn put<T: DeserializeOwned>(
        &self,
        segments: &[&str],
        body: &Value,
    ) -> Result<T, RemoteError> {
        let builder = self
            .request(Method::PUT, segments)
            .json(body)
            .timeout(REQUEST_TIMEOUT);
        let response = self.send(builder).await?;
        self.json(response).await
    }

    /// `DELETE` `segments`.
    pub async fn delete(&self, segments: &[&str]) -> Result<(), RemoteError> {
        let builder = self
            .request(Method::DELETE, segments)
            .timeout(REQUEST_TIMEOUT);
        self.send(builder).await.map(drop)
    }

    /// Opens the Server-Sent Events stream at `segments`, resuming after the event numbered
    /// `last_event_id` when given.
    pub async fn events(
        &self,
        segments: &[&str],
        last_event_id: Option<&str>,
    ) -> Result<EventStream, RemoteError> {
        let mut builder = self
            .request(Method::GET, segments)
            .header(ACCEPT, "text/event-stream");
        if let Some(id) = last_event_id {
            builder = builder.header("last-event-id", id);
        }
        let response = self.send(builder).await?;
        Ok(EventStream {
            response,
            parser: SseParser::default(),
            ready: VecDeque::new(),
            url: self.shown.clone(),
        })
    }
}

/// One Server-Sent Event.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SseEvent {
    /// Its name (`message` when the server gave none).
    pub event: String,
    /// Its data, lines joined by `\n`.
    pub data: String,
    /// Its id, when it has one.
    pub id: Option<String>,
}

/// Splits a Server-Sent Events body into events, however it arrives in chunks.
#[derive(Debug, Default)]
pub struct SseParser {
    /// Bytes of a line not yet complete.
    partial: Vec<u8>,
    /// The `event:` of the event being read.
    event: Option<String>,
    /// Its `data:` lines.
    data: Vec<String>,
    /// Its `id:`.
    id: Option<String>,
}

impl SseParser {
    /// Reads `bytes`, returning the events they complete.
    pub fn feed(&mut self, bytes: &[u8]) -> Vec<SseEvent> {
        self.partial.extend_from_slice(bytes);
        let mut events = Vec::new();
        while let Some(end) = self.partial.iter().position(|b| *b == b'\n') {
            let line: Vec<u8> = self.partial.drain(..=end).collect();
            let line = String::from_utf8_lossy(&line);
            let line = line.trim_end_matches('\n').trim_end_matches('\r');
            if let Some(event) = self.line(line) {
                events.push(event);
            }
        }
        events
    }

    /// Takes one line; a blank line ends an event.
    fn line(&mut self, line: &str) -> Option<SseEvent> {
        if line.is_empty() {
            if self.data.is_empty() && self.event.is_none() {
                return None;
            }
            let event = SseEvent {
                event: self.event.take().unwrap_or_else(|| "message".into()),
                data: std::mem::take(&mut self.data).join("\n"),
                id: self.id.take(),
            };
            return Some(event);
        }
        if line.starts_with(':') {
            return None;
        }
        let (field, value) = match line.split_once(':') {
            Some((field, value)) => (field, value.strip_prefix(' ').unwrap_or(value)),
            None => (line, ""),
        };
        match field {
            "event" => self.event = Some(value.to_string()),
            "data" => self.data.push(value.to_string()),
            "id" => self.id = Some(value.to_string()),
            _ => {}
        }
        None
    }
}

/// An open Server-Sent Events stream.
#[derive(Debug)]
pub struct EventStream {
    response: Response,
    parser: SseParser,
    ready: VecDeque<SseEvent>,
    url: String,
}

impl EventStream {
    /// The next event, or `None` once the server closed the stream.
    pub async fn next(&mut self) -> Result<Option<SseEvent>, RemoteError> {
        loop {
            if let Some(event) = self.ready.pop_front() {
                return Ok(Some(event));
            }
            match self.response.chunk().await {
                Ok(Some(bytes)) => self.ready.extend(self.parser.feed(&bytes)),
                Ok(None) => return Ok(None),
                Err(error) => {
                    return Err(RemoteError::Unreachable {
                        url: self.url.clone(),
                        reason: format!("the event stream broke: {}", root_cause(&error)),
                    })
                }
            }
        }
    }
}

/// A remote error as an exit: 2 when the request was at fault (4xx), else 1.
pub(crate) fn exit_of(error: RemoteError) -> crate::common::Exit {
    if error.is_client_error() {
        crate::common::Exit::usage(error)
    } else {
        crate::common::Exit::failed(error)
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    #[test]
    fn events_split_across_chunks_are_put_together() {
        let mut parser = SseParser::default();
        assert!(parser.feed(b": keep-alive\n\nevent: jo").is_empty());
        assert!(parser.feed(b"b\r\ndata: {\"a\":").is_empty());
        let events = parser.feed(b" 1}\r\n\r\nid: 7\nevent: trial_scored\ndata: x\ndata: y\n\n");
        assert_eq!(
            events,
            vec![
                SseEvent {
                    event: "job".into(),
                    data: "{\"a\": 1}".into(),
                    id: None
                },
                SseEvent {
                    event: "trial_scored".into(),
                    data: "x\ny".into(),
                    id: Some("7".into())
                }
            ]
        );
        assert_eq!(parser.feed(b"data: plain\n\n")[0].event, "message");
    }

    #[test]
    fn the_token_stays_out_of_debug_output_and_paths_are_encoded() {
        let remote = Remote::new("http://user:pw@127.0.0.1:9/api/", Some("s3cret")).unwrap();
        assert_eq!(remote.url(), "http://127.0.0.1:9/api");
        assert!(!format!("{remote:?}").contains("s3cret"));
        let args = ServerArgs {
            server: Some("http://x".into()),
            token: Some("s3cret".into()),
        };
        assert!(!format!("{args:?}").contains("s3cret"));
        assert_eq!(
            remote.endpoint(&["v1", "models", "a/b"]).as_str(),
            "http://user:pw@127.0.0.1:9/api/v1/models/a%2Fb"
        );
        let e = Remote::new("localhost:8000", None).unwrap_err().to_string();
        assert!(e.contains("`localhost:8000`"), "{e}");
        let e = Remote::new("http://h", Some("bad\ntoken"))
            .unwrap_err()
            .to_string();
        assert!(!e.contains("bad"), "{e}");
    }
}
