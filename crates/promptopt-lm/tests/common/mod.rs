//! A loopback HTTP server that records requests and answers with scripted replies.
#![allow(clippy::unwrap_used, dead_code)]

use std::collections::VecDeque;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};

use axum::body::Bytes;
use axum::extract::State;
use axum::http::{HeaderMap, Method, StatusCode, Uri};
use axum::response::{IntoResponse, Response};

/// One request as the server saw it.
#[derive(Debug, Clone)]
pub struct Recorded {
    pub method: Method,
    pub path: String,
    pub headers: HeaderMap,
    pub body: Bytes,
}

impl Recorded {
    pub fn json(&self) -> serde_json::Value {
        serde_json::from_slice(&self.body).unwrap()
    }

    pub fn header(&self, name: &str) -> Option<String> {
        self.headers
            .get(name)
            .map(|v| v.to_str().unwrap().to_owned())
    }
}

/// What the server answers.
#[derive(Debug, Clone)]
pub enum Reply {
    /// A status, extra headers and a body.
    Answer {
        status: u16,
        headers: Vec<(&'static str, String)>,
        body: String,
    },
    /// Never answers.
    Hang,
}

impl Reply {
    pub fn json(status: u16, body: serde_json::Value) -> Self {
        Reply::Answer {
            status,
            headers: vec![],
            body: body.to_string(),
        }
    }

    pub fn raw(status: u16, body: &str) -> Self {
        Reply::Answer {
            status,
            headers: vec![],
            body: body.to_owned(),
        }
    }

    pub fn with_header(self, name: &'static str, value: &str) -> Self {
        match self {
            Reply::Answer {
                status,
                mut headers,
                body,
            } => {
                headers.push((name, value.to_owned()));
                Reply::Answer {
                    status,
                    headers,
                    body,
                }
            }
            Reply::Hang => Reply::Hang,
        }
    }
}

#[derive(Default)]
struct Shared {
    replies: Mutex<VecDeque<Reply>>,
    last: Mutex<Option<Reply>>,
    recorded: Mutex<Vec<Recorded>>,
}

/// The server; replies are used in order and the last one repeats.
pub struct MockServer {
    pub addr: SocketAddr,
    shared: Arc<Shared>,
}

impl MockServer {
    pub async fn start(replies: Vec<Reply>) -> Self {
        let shared = Arc::new(Shared {
            replies: Mutex::new(replies.into()),
            ..Shared::default()
        });
        let app = axum::Router::new()
            .fallback(handle)
            .with_state(Arc::clone(&shared));
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        tokio::spawn(async move {
            axum::serve(listener, app).await.unwrap();
        });
        Self { addr, shared }
    }

    pub fn url(&self) -> String {
        format!("http://{}", self.addr)
    }

    pub fn requests(&self) -> Vec<Recorded> {
        self.shared.recorded.lock().unwrap().clone()
    }

    pub fn hits(&self) -> usize {
        self.shared.recorded.lock().unwrap().len()
    }
}

async fn handle(
    State(shared): State<Arc<Shared>>,
    method: Method,
    uri: Uri,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    shared.recorded.lock().unwrap().push(Recorded {
        method,
        path: uri.path().to_owned(),
        headers,
        body,
    });
    let reply = {
        let next = shared.replies.lock().unwrap().pop_front();
        let mut last = shared.last.lock().unwrap();
        match next {
            Some(reply) => {
                *last = Some(reply.clone());
                reply
            }
            None => last.clone().unwrap_or(Reply::raw(500, "no reply scripted")),
        }
    };
    match reply {
        Reply::Hang => {
            std::future::pending::<()>().await;
            StatusCode::OK.into_response()
        }
        Reply::Answer {
            status,
            headers,
            body,
        } => {
            let mut response = (StatusCode::from_u16(status).unwrap(), body).into_response();
            response.headers_mut().insert(
                "content-type",
                axum::http::HeaderValue::from_static("application/json"),
            );
            for (name, value) in headers {
                response
                    .headers_mut()
                    .insert(name, axum::http::HeaderValue::from_str(&value).unwrap());
            }
            response
        }
    }
}

/// A stack config that retries quickly (real time) and times out after `timeout_ms`.
pub fn fast_config(timeout_ms: u64) -> promptopt_lm::LmConfig {
    let mut config = promptopt_lm::LmConfig {
        timeout_ms: Some(timeout_ms),
        ..promptopt_lm::LmConfig::default()
    };
    config.retry.initial_backoff_ms = 1;
    config.retry.max_backoff_ms = 5;
    config.retry.max_retries = 3;
    config.cache.enabled = false;
    config
}
