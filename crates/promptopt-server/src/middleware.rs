//! What wraps every route (request ids, the concurrency limit, the timeout, access logs and
//! metrics) and the service routes: `/healthz`, `/readyz`, `/metrics`, the 404 fallback.

use std::time::Instant;

use axum::extract::{MatchedPath, Request, State};
use axum::http::{header, HeaderMap, HeaderValue, StatusCode};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use axum::Json;
use serde::Serialize;

use crate::auth::Scope;
use crate::error::ApiError;
use crate::lockout::client_of;
use crate::AppState;

/// The header carrying a request's id (taken from the client when it sends a sane one).
pub(crate) const REQUEST_ID: &str = "x-request-id";

fn request_id(headers: &HeaderMap) -> String {
    headers
        .get(REQUEST_ID)
        .and_then(|v| v.to_str().ok())
        .filter(|v| {
            !v.is_empty()
                && v.len() <= 128
                && v.chars()
                    .all(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.'))
        })
        .map_or_else(
            || format!("req-{:016x}", rand::random::<u64>()),
            str::to_string,
        )
}

/// Routes that answer even when the server is saturated.
fn unlimited(route: &str) -> bool {
    matches!(route, "/healthz" | "/readyz" | "/metrics")
}

/// Request id, the failed-authentication lockout (429), concurrency limit (503 + `Retry-After`
/// when saturated), timeout (504; event streams excepted), metrics and one access log line per
/// request.
pub(crate) async fn around(State(state): State<AppState>, req: Request, next: Next) -> Response {
    let started = Instant::now();
    let id = request_id(req.headers());
    let route = req
        .extensions()
        .get::<MatchedPath>()
        .map_or_else(|| "unmatched".to_string(), |p| p.as_str().to_string());
    let method = req.method().as_str().to_string();
    let path = req.uri().path().to_string();
    let client = client_of(&req);
    let locked = if unlimited(&route) {
        None
    } else {
        state.lockout.locked(client)
    };
    if let Some(wait) = locked {
        let mut error = ApiError::new(
            StatusCode::TOO_MANY_REQUESTS,
            "too_many_failed_authentications",
            format!(
                "Too many requests from this client were refused as unauthorized; retry in {} s",
                wait.as_secs().max(1)
            ),
        );
        error.retry_after = Some(wait.as_secs().max(1));
        return finish(
            &state,
            error.into_response(),
            &id,
            &route,
            &method,
            &path,
            started,
        );
    }
    let permit = if unlimited(&route) {
        None
    } else {
        match std::sync::Arc::clone(&state.limiter).try_acquire_owned() {
            Ok(permit) => Some(permit),
            Err(_) => {
                let response = ApiError::unavailable(
                    "overloaded",
                    format!(
                        "The server is handling {} requests already; retry shortly",
                        state.config.max_concurrent_requests
                    ),
                    1,
                )
                .into_response();
                return finish(&state, response, &id, &route, &method, &path, started);
            }
        }
    };
    let response = if route.ends_with("/events") {
        next.run(req).await
    } else {
        match tokio::time::timeout(state.config.request_timeout(), next.run(req)).await {
            Ok(response) => response,
            Err(_) => ApiError::new(
                StatusCode::GATEWAY_TIMEOUT,
                "timeout",
                format!(
                    "The request took longer than {} s (`request_timeout_seconds`)",
                    state.config.request_timeout_seconds
                ),
            )
            .into_response(),
        }
    };
    drop(permit);
    if response.status() == StatusCode::UNAUTHORIZED {
        state.lockout.failed(client);
    }
    finish(&state, response, &id, &route, &method, &path, started)
}

fn finish(
    state: &AppState,
    mut response: Response,
    id: &str,
    route: &str,
    method: &str,
    path: &str,
    started: Instant,
) -> Response {
    let elapsed = started.elapsed();
    let status = response.status().as_u16();
    state.metrics.request(route, method, status, elapsed);
    tracing::info!(
        target: "promptopt_server::access",
        request_id = id,
        method,
        path,
        status,
        latency_ms = elapsed.as_secs_f64() * 1000.0,
        "request"
    );
    if let Ok(value) = HeaderValue::from_str(id) {
        response.headers_mut().insert(REQUEST_ID, value);
    }
    response
}

/// `{"status": "ok"}`.
#[derive(Debug, Serialize, utoipa::ToSchema)]
pub(crate) struct Health {
    /// `ok`, or what is not ready.
    pub(crate) status: String,
    /// Per check: `ok` or the problem.
    #[serde(default)]
    pub(crate) checks: std::collections::BTreeMap<String, String>,
}

/// The process is up.
#[utoipa::path(get, path = "/healthz", tag = "service",
    responses((status = 200, description = "The process is up", body = Health)))]
pub(crate) async fn healthz() -> Json<Health> {
    Json(Health {
        status: "ok".into(),
        checks: std::collections::BTreeMap::new(),
    })
}

/// The queue answers and the registry can be read.
#[utoipa::path(get, path = "/readyz", tag = "service",
    responses(
        (status = 200, description = "Ready", body = Health),
        (status = 503, description = "Not ready", body = Health),
    ))]
pub(crate) async fn readyz(State(state): State<AppState>) -> Response {
    let mut checks = std::collections::BTreeMap::new();
    let queue = match state.queue.counts().await {
        Ok(_) => "ok".to_string(),
        Err(e) => e.to_string(),
    };
    checks.insert("queue".to_string(), queue);
    let registry = state.registry.clone();
    let models = match tokio::task::spawn_blocking(move || registry.list()).await {
        Ok(Ok(_)) => "ok".to_string(),
        Ok(Err(e)) => e.to_string(),
        Err(e) => e.to_string(),
    };
    checks.insert("registry".to_string(), models);
    checks.insert(
        "models_loaded".to_string(),
        state.models.loaded().to_string(),
    );
    let ready = checks
        .iter()
        .all(|(k, v)| k == "models_loaded" || v == "ok");
    let status = if ready {
        StatusCode::OK
    } else {
        StatusCode::SERVICE_UNAVAILABLE
    };
    let body = Health {
        status: if ready { "ok" } else { "not ready" }.into(),
        checks,
    };
    (status, Json(body)).into_response()
}

/// Prometheus text: requests, latencies, predictions, tokens, cost, queue depth.
#[utoipa::path(get, path = "/metrics", tag = "service",
    security(("bearer" = ["admin"])),
    responses(
        (status = 200, description = "Prometheus text format", body = String, content_type = "text/plain"),
        (status = 401, description = "No valid token", body = crate::ErrorBody),
        (status = 403, description = "The token lacks the scope", body = crate::ErrorBody),
    ))]
pub(crate) async fn metrics(State(state): State<AppState>, headers: HeaderMap) -> Response {
    if let Err(e) = state.tokens.authorize(&headers, Scope::Admin) {
        return e.into_response();
    }
    let counts = state.queue.counts().await.ok();
    let text = state.metrics.render(counts.as_ref(), state.models.loaded());
    (
        [(
            header::CONTENT_TYPE,
            "text/plain; version=0.0.4; charset=utf-8",
        )],
        text,
    )
        .into_response()
}

/// 404 for a path no route has.
pub(crate) async fn not_found(req: Request) -> ApiError {
    ApiError::not_found(format!("No route `{}`", req.uri().path()))
}

/// 405 for a method the route does not have.
pub(crate) async fn method_not_allowed(req: Request) -> ApiError {
    ApiError::new(
        StatusCode::METHOD_NOT_ALLOWED,
        "method_not_allowed",
        format!(
            "`{}` is not allowed on `{}`",
            req.method(),
            req.uri().path()
        ),
    )
}
