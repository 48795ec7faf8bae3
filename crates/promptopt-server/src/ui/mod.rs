//! The web console under `/ui`: pages rendered on the server over the same handlers as the API
//! (so a page shows exactly what the API answers, with the same checks), a stylesheet, one
//! small script for live job progress, and charts drawn as SVG. Nothing is fetched from another
//! site and nothing needs building.
//!
//! - `/ui/jobs`: the queue by state; `/ui/jobs/{id}` follows a job live over its event stream.
//! - `/ui/models`: names, versions, aliases and scores; a version's exact prompts and demos,
//!   its MLflow run, promotion to an alias.
//! - `/ui/experiments`: per-variant figures with intervals, the sequential evidence over time,
//!   the sample-ratio check, the decision; start, stop, promote.
//! - `/ui/health`: per model, the live metric over time with drift alarms, and the learning
//!   loop's history.
//!
//! A token is entered once on `/ui/login` (see [`session`]); every action asks for
//! confirmation on its own page and reports a failure in words.

mod chart;
mod experiments;
mod health;
mod jobs;
mod models;
mod page;
mod session;

use axum::extract::Path;
use axum::http::{header, StatusCode};
use axum::response::{IntoResponse, Redirect, Response};
use axum::routing::{get, post};
use axum::Router;

pub(crate) use session::Sessions;

use crate::AppState;

const CSS: &str = include_str!("static/console.css");
const JS: &str = include_str!("static/console.js");

/// `GET /ui/static/{file}`: the stylesheet and the script.
async fn asset(Path(file): Path<String>) -> Response {
    let (kind, body) = match file.as_str() {
        "console.css" => ("text/css; charset=utf-8", CSS),
        "console.js" => ("text/javascript; charset=utf-8", JS),
        _ => return (StatusCode::NOT_FOUND, "No such file").into_response(),
    };
    (
        [
            (header::CONTENT_TYPE, kind),
            (header::CACHE_CONTROL, "public, max-age=3600"),
        ],
        body,
    )
        .into_response()
}

/// The console's routes, to be nested under `/ui`.
pub(crate) fn router() -> Router<AppState> {
    Router::new()
        .route("/", get(|| async { Redirect::to("/ui/jobs") }))
        .route("/login", get(session::login_page).post(session::login))
        .route("/logout", post(session::logout))
        .route("/static/{file}", get(asset))
        .route("/jobs", get(jobs::list))
        .route("/jobs/{id}", get(jobs::page))
        .route("/jobs/{id}/live", get(jobs::live))
        .route("/jobs/{id}/events", get(jobs::events))
        .route(
            "/jobs/{id}/cancel",
            get(jobs::confirm_cancel).post(jobs::cancel),
        )
        .route("/models", get(models::list))
        .route("/models/{name}", get(models::model))
        .route("/models/{name}/versions/{version}", get(models::version))
        .route(
            "/models/{name}/promote",
            get(models::confirm_promote).post(models::promote),
        )
        .route("/experiments", get(experiments::list))
        .route("/experiments/{id}", get(experiments::page))
        .route(
            "/experiments/{id}/{action}",
            get(experiments::confirm).post(experiments::act),
        )
        .route("/health", get(health::list))
        .route("/health/{name}", get(health::page))
        .fallback(page::not_found)
}

/// Headers every console page carries: no framing by other sites, no sniffing, scripts and
/// styles from this server only.
pub(crate) async fn security_headers(
    req: axum::extract::Request,
    next: axum::middleware::Next,
) -> Response {
    let mut response = next.run(req).await;
    let headers = response.headers_mut();
    headers.insert(
        header::CONTENT_SECURITY_POLICY,
        header::HeaderValue::from_static(
            "default-src 'self'; img-src 'self' data:; style-src 'self' 'unsafe-inline'; frame-ancestors 'none'; form-action 'self'",
        ),
    );
    headers.insert(
        header::X_CONTENT_TYPE_OPTIONS,
        header::HeaderValue::from_static("nosniff"),
    );
    headers.insert(
        header::REFERRER_POLICY,
        header::HeaderValue::from_static("same-origin"),
    );
    response
}
