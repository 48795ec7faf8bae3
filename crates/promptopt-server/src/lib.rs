//! The HTTP API of promptopt (`promptopt serve`): optimization jobs, saved models and
//! predictions, behind bearer tokens.
//!
//! - `POST /v1/optimizations` queues an optimization request (the same request the CLI reads)
//!   as a job on the [`promptopt_jobs`] queue; `GET /v1/jobs/{id}` and its Server-Sent Events
//!   stream `GET /v1/jobs/{id}/events` follow it; workers (`promptopt worker`) run it.
//! - `GET /v1/models...` reads the registry; `PUT /v1/models/{name}/aliases/{alias}` promotes;
//!   `POST /v1/models/{name}/predict` calls a saved model, one input or a batch.
//! - `/v1/experiments...` runs A/B experiments between versions of a model: predictions are
//!   routed to variants (sticky by `user_id`), `POST /v1/feedback` records outcomes, and the
//!   winner is declared by an always-valid sequential test (with a database, see
//!   [`Server::with_database`]).
//! - `/v1/models/{name}/learning...` runs continuous learning: every prediction is logged
//!   (sampled and redacted per model), drift is detected on the outcomes, retraining jobs go to
//!   the queue, better versions are deployed and worse ones rolled back.
//! - `GET /healthz`, `GET /readyz`, `GET /metrics` (Prometheus), `GET /openapi.json`.
//! - `/ui`: the web console over the same handlers: jobs live, models and aliases,
//!   experiments, model health (a token entered once per browser session).
//!
//! Every error is `{"error": {"code", "message", "field"}}` with a 4xx status for bad input;
//! saturation is 503 with `Retry-After`. Loaded programs are cached by exact version, so moving
//! an alias swaps the program for new requests while in-flight ones finish on the old one.
//!
//! ```
//! use std::sync::Arc;
//! use axum::body::Body;
//! use axum::http::Request;
//! use promptopt_server::{Server, ServeConfig, Tokens, LmsFromStack};
//! use tower::ServiceExt;
//!
//! # let home = tempfile::tempdir()?;
//! let rt = tokio::runtime::Runtime::new()?;
//! rt.block_on(async {
//!     let queue = promptopt_jobs::open_queue(None, home.path()).await?;
//!     let registry = promptopt_registry::Registry::new(home.path());
//!     let lms = Arc::new(LmsFromStack::new(promptopt_lm::LmConfig::default()));
//!     let mut tokens = Tokens::default();
//!     tokens.add_list("secret:predict", "example")?;
//!     let server = Server::new(registry, queue, lms, tokens, ServeConfig::default());
//!     let response = server
//!         .router()
//!         .oneshot(Request::get("/v1/models").header("authorization", "Bearer secret").body(Body::empty())?)
//!         .await?;
//!     assert_eq!(response.status(), 200);
//!     Ok::<_, Box<dyn std::error::Error>>(())
//! })?;
//! # Ok::<(), Box<dyn std::error::Error>>(())
//! ```

mod auth;
mod body;
mod config;
mod error;
mod experiments;
mod jobs;
mod learning;
mod listen;
mod lockout;
mod metrics;
mod middleware;
mod models;
mod openapi;
mod predict;
mod predlog;
mod ui;

use std::future::Future;
use std::sync::Arc;

use axum::extract::DefaultBodyLimit;
use axum::routing::{get, post, put};
use axum::Router;
use promptopt_jobs::SharedQueue;
use promptopt_registry::Registry;
use tokio::net::TcpListener;
use tokio::sync::{watch, Semaphore};

pub use auth::{Scope, TokenSpec, Tokens};
pub use config::{ModelSettings, PredictionLogConfig, ServeConfig};
pub use error::{ApiError, ErrorBody, ErrorDetail, ServerError};
pub use metrics::{Metrics, PredictionFigures};
pub use openapi::openapi_json;
pub use predict::{LmsFromStack, ModelLms};
pub use predlog::LogPolicy;

/// What every handler shares.
pub(crate) struct Shared {
    pub(crate) registry: Registry,
    pub(crate) queue: SharedQueue,
    pub(crate) tokens: Tokens,
    pub(crate) config: ServeConfig,
    pub(crate) metrics: Metrics,
    pub(crate) models: predict::ModelCache,
    pub(crate) limiter: Arc<Semaphore>,
    /// Clients refused as unauthorized too often, answered 429 for a while.
    pub(crate) lockout: lockout::Lockout,
    pub(crate) shutdown: watch::Receiver<bool>,
    shutdown_tx: watch::Sender<bool>,
    /// Experiments, feedback and the prediction log, when the server has a database.
    pub(crate) experiments: Option<Arc<experiments::Experiments>>,
    /// The continuous-learning loops, when the server has a database.
    pub(crate) learning: Option<Arc<learning::Learning>>,
    /// The web console's sessions.
    pub(crate) console: ui::Sessions,
}

/// The state handed to handlers.
pub(crate) type AppState = Arc<Shared>;

/// The HTTP server: its routes over a registry, a queue and the models' LMs.
#[derive(Clone)]
pub struct Server {
    shared: AppState,
}

impl std::fmt::Debug for Server {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Server")
            .field("registry", &self.shared.registry.home())
            .field("queue", &self.shared.queue.url())
            .field("tokens", &self.shared.tokens)
            .finish_non_exhaustive()
    }
}

impl Server {
    /// A server over `registry` and `queue`, predicting through `lms`, accepting `tokens`.
    pub fn new(
        registry: Registry,
        queue: SharedQueue,
        lms: Arc<dyn ModelLms>,
        tokens: Tokens,
        config: ServeConfig,
    ) -> Self {
        let (shutdown_tx, shutdown) = watch::channel(false);
        let limiter = Arc::new(Semaphore::new(config.max_concurrent_requests));
        let lockout = lockout::Lockout::new(config.max_failed_auth_per_minute);
        Self {
            shared: Arc::new(Shared {
                models: predict::ModelCache::new(registry.clone(), lms),
                registry,
                queue,
                tokens,
                config,
                metrics: Metrics::default(),
                limiter,
                lockout,
                shutdown,
                shutdown_tx,
                experiments: None,
                learning: None,
                console: ui::Sessions::default(),
            }),
        }
    }

    /// Gives the server its database (`sqlite:PATH` or `postgres://...`): A/B experiments,
    /// feedback and the log of every prediction served. Call it before [`Server::router`].
    pub async fn with_database(mut self, url: &str) -> Result<Self, ServerError> {
        let store = promptopt_experiments::ExperimentStore::open(url)
            .await
            .map_err(ServerError::Database)?;
        let spool = self.shared.registry.home().join("spool");
        let spool_max = self.shared.config.prediction_log.spool_max_bytes;
        let experiments = experiments::Experiments::open(store, spool, spool_max)
            .await
            .map_err(ServerError::Database)?;
        let shared = Arc::get_mut(&mut self.shared).ok_or(ServerError::AlreadyShared)?;
        let experiments = Arc::new(experiments);
        experiments::Experiments::follow(&experiments, std::time::Duration::from_secs(2));
        shared.experiments = Some(experiments);
        shared.learning = Some(Arc::new(learning::Learning::new()));
        Ok(self)
    }

    /// The routes, with limits, request ids, access logs and metrics.
    pub fn router(&self) -> Router {
        let state = Arc::clone(&self.shared);
        let api = Router::new()
            .route("/v1/optimizations", post(jobs::submit))
            .route("/v1/jobs", get(jobs::list))
            .route("/v1/jobs/{id}", get(jobs::get_job))
            .route("/v1/jobs/{id}/result", get(jobs::result))
            .route("/v1/jobs/{id}/events", get(jobs::events))
            .route("/v1/jobs/{id}/cancel", post(jobs::cancel))
            .route("/v1/jobs/{id}/retry", post(jobs::retry))
            .route("/v1/models", get(models::list))
            .route("/v1/models/{name}", get(models::get_model))
            .route(
                "/v1/models/{name}/versions/{version}",
                get(models::get_version).delete(models::delete_version),
            )
            .route(
                "/v1/models/{name}/aliases/{alias}",
                put(models::set_alias).delete(models::remove_alias),
            )
            .route("/v1/models/{name}/predict", post(predict::predict))
            .route(
                "/v1/experiments",
                post(experiments::create).get(experiments::list),
            )
            .route("/v1/experiments/{id}", get(experiments::get_experiment))
            .route("/v1/experiments/{id}/start", post(experiments::start))
            .route("/v1/experiments/{id}/stop", post(experiments::stop))
            .route("/v1/experiments/{id}/promote", post(experiments::promote))
            .route("/v1/feedback", post(experiments::feedback))
            .route(
                "/v1/models/{name}/learning",
                get(learning::routes::status)
                    .put(learning::routes::enable)
                    .delete(learning::routes::disable),
            )
            .route(
                "/v1/models/{name}/learning/history",
                get(learning::routes::history),
            )
            .route(
                "/v1/models/{name}/learning/rollback",
                post(learning::routes::rollback),
            )
            .route(
                "/v1/models/{name}/learning/export",
                get(learning::routes::export),
            )
            .route("/healthz", get(middleware::healthz))
            .route("/readyz", get(middleware::readyz))
            .route("/metrics", get(middleware::metrics))
            .route("/openapi.json", get(openapi::serve_openapi))
            .nest(
                "/ui",
                ui::router().layer(axum::middleware::from_fn(ui::security_headers)),
            )
            .route_layer(axum::middleware::from_fn_with_state(
                Arc::clone(&state),
                middleware::around,
            ))
            .fallback(middleware::not_found)
            .method_not_allowed_fallback(middleware::method_not_allowed)
            .layer(DefaultBodyLimit::max(self.shared.config.max_body_bytes));
        api.with_state(state)
    }

    /// Starts the continuous-learning loops (with a database): the `learning:` blocks of the
    /// configuration are stored, and every enabled model's loop runs until shutdown. `serve`
    /// calls it.
    pub async fn start_learning(&self) -> Result<(), ServerError> {
        if self.shared.learning.is_none() {
            return Ok(());
        }
        learning::apply_configured(&self.shared).await?;
        learning::spawn(Arc::clone(&self.shared));
        Ok(())
    }

    /// Serves on `listener` until `shutdown` resolves, then stops taking connections, ends event
    /// streams and waits for in-flight requests to finish. The learning loops run meanwhile.
    pub async fn serve(
        self,
        listener: TcpListener,
        shutdown: impl Future<Output = ()> + Send + 'static,
    ) -> Result<(), ServerError> {
        self.start_learning().await?;
        let router = self.router();
        let tx = self.shared.shutdown_tx.clone();
        let signal = async move {
            shutdown.await;
            let _ = tx.send(true);
        };
        let header_timeout = self.shared.config.header_timeout();
        listen::serve(listener, router, signal, header_timeout).await;
        Ok(())
    }
}
