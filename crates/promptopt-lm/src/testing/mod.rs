//! Test and benchmark helpers (cargo feature `testing`).
//!
//! [`FixedReplyServer`] is a fast OpenAI-compatible server on loopback that answers every chat
//! completion with a fixed text (or one computed from the request). Point the `openai` provider
//! at [`FixedReplyServer::base_url`] to exercise the whole client stack without a real model.
//!
//! ```
//! # fn main() -> Result<(), promptopt_lm::LmError> {
//! # tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap().block_on(async {
//! use promptopt_lm::testing::FixedReplyServer;
//! use promptopt_lm::{open_provider, ChatRequest, LmConfig, Message};
//!
//! let server = FixedReplyServer::start("positive")?;
//! let config = LmConfig::default().with_base_url("openai", server.base_url());
//! let lm = open_provider("openai/any", &config)?;
//! let reply = lm.chat(&ChatRequest::new("openai/any", vec![Message::user("I loved it")])).await?;
//! assert_eq!(reply.text(), "positive");
//! assert_eq!(server.requests_served(), 1);
//! # Ok(())
//! # })
//! # }
//! ```

mod cpu;
mod http1;

use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

pub use cpu::process_cpu_time;

use crate::{LmError, Message};

/// A request the server received, as the responder sees it.
#[derive(Debug, Clone)]
pub struct ServedRequest {
    /// The `model` field.
    pub model: String,
    /// The `messages` field.
    pub messages: Vec<Message>,
    /// The whole JSON body.
    pub body: serde_json::Value,
}

type Responder = dyn Fn(&ServedRequest) -> String + Send + Sync;
type Handler = dyn Fn(&ServedRequest) -> Reply + Send + Sync;

/// What the server answers with.
pub(crate) enum Answer {
    /// A complete HTTP response, rendered once.
    Fixed(Vec<u8>),
    /// A function of the request.
    Computed(Box<Responder>),
    /// A function of the request that may delay or fail.
    Handled(Box<Handler>),
}

/// A reply of [`FixedReplyServer::with_handler`]: a completion, or an error status, after an
/// optional delay.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Reply {
    /// `200` for a completion whose text is `text`; any other status is an error response
    /// whose message is `text`.
    pub status: u16,
    /// The completion's text, or the error's message.
    pub text: String,
    /// How long the server waits before answering (other connections are served meanwhile).
    pub delay: Duration,
}

impl Reply {
    /// A completion with this text, at once.
    pub fn text(text: impl Into<String>) -> Self {
        Self {
            status: 200,
            text: text.into(),
            delay: Duration::ZERO,
        }
    }

    /// An error response with this status (`500`, `503`, `429`, ...).
    pub fn error(status: u16, message: impl Into<String>) -> Self {
        Self {
            status,
            text: message.into(),
            delay: Duration::ZERO,
        }
    }

    /// The same reply after `delay`.
    pub fn after(mut self, delay: Duration) -> Self {
        self.delay = delay;
        self
    }
}

/// An OpenAI-compatible chat completions server on `127.0.0.1`, running on its own thread.
///
/// It answers `POST /v1/chat/completions` and `POST /chat/completions` over HTTP/1.1 with
/// keep-alive, sets `TCP_NODELAY` and writes each response with one write. In fixed mode the
/// whole response is rendered once at start (model `fixed-reply`, usage: 10 prompt tokens and the
/// reply's word count as completion tokens), so serving costs almost nothing. The server stops
/// when the value is dropped.
pub struct FixedReplyServer {
    addr: SocketAddr,
    served: Arc<AtomicU64>,
    shutdown: Arc<tokio::sync::Notify>,
    thread: std::thread::JoinHandle<()>,
}

impl std::fmt::Debug for FixedReplyServer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("FixedReplyServer")
            .field("addr", &self.addr)
            .field("served", &self.requests_served())
            .finish()
    }
}

impl FixedReplyServer {
    /// A server that answers every request with `reply`.
    pub fn start(reply: impl Into<String>) -> Result<Self, LmError> {
        Self::spawn(Answer::Fixed(http1::fixed_response(&reply.into())))
    }

    /// A server that answers each request with `responder(request)`.
    pub fn with_responder(
        responder: impl Fn(&ServedRequest) -> String + Send + Sync + 'static,
    ) -> Result<Self, LmError> {
        Self::spawn(Answer::Computed(Box::new(responder)))
    }

    /// A server that answers each request with `handler(request)`: a completion, an error
    /// status, either after a delay (requests on other connections are served meanwhile).
    pub fn with_handler(
        handler: impl Fn(&ServedRequest) -> Reply + Send + Sync + 'static,
    ) -> Result<Self, LmError> {
        Self::spawn(Answer::Handled(Box::new(handler)))
    }

    fn spawn(answer: Answer) -> Result<Self, LmError> {
        let fail = |message: String| LmError::Connect {
            provider: "fixed-reply server".into(),
            url: "127.0.0.1:0".into(),
            message,
        };
        let listener = std::net::TcpListener::bind(("127.0.0.1", 0))
            .map_err(|e| fail(format!("Could not bind: {e}")))?;
        listener
            .set_nonblocking(true)
            .map_err(|e| fail(format!("Could not make the socket non-blocking: {e}")))?;
        let addr = listener
            .local_addr()
            .map_err(|e| fail(format!("Could not read the bound address: {e}")))?;
        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_io()
            .enable_time()
            .build()
            .map_err(|e| fail(format!("Could not start the server runtime: {e}")))?;
        let served = Arc::new(AtomicU64::new(0));
        let shutdown = Arc::new(tokio::sync::Notify::new());
        let state = Arc::new(http1::State {
            answer,
            served: Arc::clone(&served),
        });
        let stop = Arc::clone(&shutdown);
        let thread = std::thread::Builder::new()
            .name("fixed-reply-server".into())
            .spawn(move || runtime.block_on(http1::serve(listener, state, stop)))
            .map_err(|e| fail(format!("Could not start the server thread: {e}")))?;
        Ok(Self {
            addr,
            served,
            shutdown,
            thread,
        })
    }

    /// The bound address.
    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// The base URL to give the `openai` provider (`http://127.0.0.1:PORT/v1`).
    pub fn base_url(&self) -> String {
        format!("http://{}/v1", self.addr)
    }

    /// Chat completions answered so far.
    pub fn requests_served(&self) -> u64 {
        self.served.load(Ordering::Relaxed)
    }

    /// CPU time the server thread has used so far (Linux only; `None` elsewhere or once the
    /// thread has ended). Benchmarks subtract it from the process's CPU time.
    pub fn cpu_time(&self) -> Option<Duration> {
        if self.thread.is_finished() {
            return None;
        }
        cpu::thread_cpu_time(&self.thread)
    }
}

impl Drop for FixedReplyServer {
    fn drop(&mut self) {
        self.shutdown.notify_one();
    }
}

#[cfg(test)]
mod tests;
