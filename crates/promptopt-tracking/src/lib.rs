//! Experiment tracking for promptopt: every optimization run recorded where MLflow users look.
//!
//! - [`MlflowClient`]: MLflow's REST API (experiments, runs, batched metrics, parameters and
//!   tags, artifacts through the server's artifact proxy, registered models, versions, aliases).
//! - [`LocalStore`]: the embedded default, MLflow's file layout under `PROMPTOPT_HOME/mlruns`,
//!   read by MLflow's own client and UI without a server.
//! - [`TrackingStore`]: the verbs both implement, so listing, searching and reading runs work the
//!   same against either.
//! - [`Tracker`]: subscribes to a run's event stream through a bounded queue (spilling to disk,
//!   never dropping), records the request, every trial, the result and the saved model, and
//!   fills `OptimizationResult::mlflow_run_id`.
//! - [`sync_run`]: replays a run of the embedded store to a server, idempotently.
//!
//! ```
//! use promptopt_tracking::{KeyValue, LocalStore, MetricPoint, RunQuery, TrackingStore};
//!
//! # let dir = tempfile::tempdir()?;
//! let rt = tokio::runtime::Runtime::new()?;
//! rt.block_on(async {
//!     let store = LocalStore::open(dir.path().join("mlruns"))?;
//!     let experiment = store.get_or_create_experiment("sentiment").await?;
//!     let run = store.create_run(&experiment, "miprov2", 0, &[]).await?;
//!     let score = MetricPoint { key: "val_score".into(), value: 0.82, timestamp: 0, step: 1 };
//!     let algorithm = KeyValue::new("algorithm", "miprov2");
//!     store.log_batch(&run.run_id, &[score], &[algorithm], &[]).await?;
//!
//!     let query = RunQuery {
//!         filter: Some("params.algorithm = 'miprov2' and metrics.val_score > 0.7".into()),
//!         ..RunQuery::default()
//!     };
//!     let found = store.search_runs(&query).await?;
//!     assert_eq!(found[0].info.run_id, run.run_id);
//!     Ok::<_, promptopt_tracking::TrackingError>(())
//! })?;
//! # Ok::<(), Box<dyn std::error::Error>>(())
//! ```

mod client;
mod error;
mod filter;
mod local;
mod record;
mod store;
mod sync;
mod tracker;
mod types;

pub use client::{redact, MlflowClient};
pub use error::TrackingError;
pub use filter::{Filter, OrderBy};
pub use local::LocalStore;
pub use record::{MAX_PARAM_LENGTH, MAX_TAG_LENGTH};
pub use store::{open_store, TrackingStore};
pub use sync::{mirror_alias, sync_run, SyncReport};
pub use tracker::{disabled_by_env, Tracker, TrackingConfig};
pub use types::{
    now_ms, ArtifactEntry, Experiment, KeyValue, MetricPoint, ModelVersion, Run, RunInfo, RunQuery,
    RunStatus,
};
