//! An OpenAI-compatible HTTP endpoint in front of an [`Engine`].
//!
//! Routes: `POST /v1/chat/completions` (non-streaming; usage includes
//! `prompt_tokens_details.cached_tokens`), `GET /v1/models`, `GET /health`. Errors use OpenAI's
//! `{"error": {"message", "type", "param", "code"}}` body: 400 for invalid requests (code
//! `context_length_exceeded` when the prompt does not fit), 404 for an unknown model, 500 when
//! the engine fails. The model may be named `local/<name>` or `<name>`.
//!
//! ```no_run
//! # async fn run() -> Result<(), promptopt_engine::EngineError> {
//! use promptopt_engine::{server::Server, Engine, EngineConfig};
//!
//! let engine = Engine::load_async(EngineConfig::new("local/smollm2-135m")).await?;
//! let server = Server::bind(engine, "127.0.0.1", 8080).await?;
//! server.run().await
//! # }
//! ```

pub mod wire;

use std::future::Future;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{SystemTime, UNIX_EPOCH};

use axum::body::Bytes;
use axum::extract::State;
use axum::http::{header, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::serve::ListenerExt;
use axum::{Json, Router};
use promptopt_lm::{Lm, LmError};
use serde_json::json;
use tokio::net::TcpListener;

use crate::{Engine, EngineError};
use wire::{CompletionRequest, CompletionResponse, ErrorBody, ErrorDetail};

struct AppState {
    engine: Engine,
    next_id: AtomicU64,
}

/// The routes, ready to be served or nested in a larger router.
pub fn router(engine: Engine) -> Router {
    let state = Arc::new(AppState {
        engine,
        next_id: AtomicU64::new(1),
    });
    Router::new()
        .route("/v1/chat/completions", post(chat_completions))
        .route("/v1/models", get(models))
        .route("/health", get(health))
        .fallback(not_found)
        .with_state(state)
}

/// A bound listener serving an engine.
#[derive(Debug)]
pub struct Server {
    listener: TcpListener,
    addr: SocketAddr,
    engine: Engine,
}

impl Server {
    /// Binds `host:port` (port 0 picks a free port; see [`Server::local_addr`]).
    pub async fn bind(engine: Engine, host: &str, port: u16) -> Result<Self, EngineError> {
        let wanted = format!("{host}:{port}");
        let server_error = |message: String| EngineError::Server {
            addr: wanted.clone(),
            message,
        };
        let listener = TcpListener::bind((host, port))
            .await
            .map_err(|error| server_error(error.to_string()))?;
        let addr = listener
            .local_addr()
            .map_err(|error| server_error(error.to_string()))?;
        Ok(Self {
            listener,
            addr,
            engine,
        })
    }

    /// The address actually bound.
    pub fn local_addr(&self) -> SocketAddr {
        self.addr
    }

    /// Serves until the process ends.
    pub async fn run(self) -> Result<(), EngineError> {
        self.run_until(std::future::pending()).await
    }

    /// Serves until `shutdown` completes, then finishes the requests in flight.
    pub async fn run_until(
        self,
        shutdown: impl Future<Output = ()> + Send + 'static,
    ) -> Result<(), EngineError> {
        let addr = self.addr;
        let listener = self.listener.tap_io(|tcp| {
            // Small replies must not wait for Nagle's algorithm.
            let _ = tcp.set_nodelay(true);
        });
        axum::serve(listener, router(self.engine))
            .with_graceful_shutdown(shutdown)
            .await
            .map_err(|error| EngineError::Server {
                addr: addr.to_string(),
                message: error.to_string(),
            })
    }
}

fn error_response(
    status: StatusCode,
    kind: &str,
    message: String,
    param: Option<&str>,
    code: Option<&str>,
) -> Response {
    let body = ErrorBody {
        error: ErrorDetail {
            message,
            kind: kind.to_string(),
            param: param.map(str::to_string),
            code: code.map(str::to_string),
        },
    };
    (status, Json(body)).into_response()
}

fn lm_error_response(error: &LmError) -> Response {
    match error {
        LmError::ContextOverflow { .. } => error_response(
            StatusCode::BAD_REQUEST,
            "invalid_request_error",
            error.to_string(),
            Some("messages"),
            Some("context_length_exceeded"),
        ),
        LmError::InvalidRequest(_) => error_response(
            StatusCode::BAD_REQUEST,
            "invalid_request_error",
            error.to_string(),
            None,
            None,
        ),
        _ => error_response(
            StatusCode::INTERNAL_SERVER_ERROR,
            "server_error",
            error.to_string(),
            None,
            None,
        ),
    }
}

async fn chat_completions(State(state): State<Arc<AppState>>, body: Bytes) -> Response {
    let request: CompletionRequest = match serde_json::from_slice(&body) {
        Ok(request) => request,
        Err(error) => {
            return error_response(
                StatusCode::BAD_REQUEST,
                "invalid_request_error",
                format!("The request body is not a valid chat completion request: {error}"),
                None,
                None,
            )
        }
    };
    if !state.engine.serves(&request.model) {
        return error_response(
            StatusCode::NOT_FOUND,
            "invalid_request_error",
            format!(
                "The model `{}` does not exist; this server serves `{}`",
                request.model,
                state.engine.model_name()
            ),
            Some("model"),
            Some("model_not_found"),
        );
    }
    let mut chat = match request.to_chat_request() {
        Ok(chat) => chat,
        Err((message, param)) => {
            return error_response(
                StatusCode::BAD_REQUEST,
                "invalid_request_error",
                message,
                Some(param),
                None,
            )
        }
    };
    chat.model = state.engine.model_name().to_string();
    match state.engine.chat(&chat).await {
        Ok(response) => {
            let id = format!("chatcmpl-{}", state.next_id.fetch_add(1, Ordering::Relaxed));
            let created = SystemTime::now()
                .duration_since(UNIX_EPOCH)
                .map_or(0, |d| d.as_secs());
            let mut reply =
                Json(CompletionResponse::from_response(id, created, &response)).into_response();
            reply.headers_mut().insert(
                header::CACHE_CONTROL,
                header::HeaderValue::from_static("no-store"),
            );
            reply
        }
        Err(error) => lm_error_response(&error),
    }
}

async fn models(State(state): State<Arc<AppState>>) -> Response {
    Json(json!({
        "object": "list",
        "data": [{
            "id": state.engine.model_name(),
            "object": "model",
            "created": 0,
            "owned_by": "promptopt",
        }],
    }))
    .into_response()
}

async fn health(State(state): State<Arc<AppState>>) -> Response {
    Json(json!({ "status": "ok", "model": state.engine.model_name() })).into_response()
}

async fn not_found() -> Response {
    error_response(
        StatusCode::NOT_FOUND,
        "invalid_request_error",
        "Unknown route: this server answers `POST /v1/chat/completions`, `GET /v1/models` and `GET /health`"
            .to_string(),
        None,
        Some("unknown_url"),
    )
}
