//! The one interface over where runs are recorded: an MLflow server or the embedded store.

use std::path::Path;
use std::sync::Arc;

use async_trait::async_trait;

use crate::client::MlflowClient;
use crate::local::LocalStore;
use crate::{
    ArtifactEntry, Experiment, KeyValue, MetricPoint, ModelVersion, Run, RunInfo, RunQuery,
    RunStatus, TrackingError,
};

/// Where runs are recorded and read back. Implemented by [`MlflowClient`] (a tracking server)
/// and [`LocalStore`] (MLflow's file layout under `PROMPTOPT_HOME`), so every verb works against
/// both.
#[async_trait]
pub trait TrackingStore: Send + Sync {
    /// The store's location, without credentials (safe to print).
    fn location(&self) -> String;

    /// Every active experiment.
    async fn list_experiments(&self) -> Result<Vec<Experiment>, TrackingError>;

    /// The experiment of this name, if any.
    async fn experiment_by_name(&self, name: &str) -> Result<Option<Experiment>, TrackingError>;

    /// Creates an experiment and returns its id.
    async fn create_experiment(&self, name: &str) -> Result<String, TrackingError>;

    /// The id of the experiment of this name, created when missing.
    async fn get_or_create_experiment(&self, name: &str) -> Result<String, TrackingError> {
        if let Some(e) = self.experiment_by_name(name).await? {
            return Ok(e.experiment_id);
        }
        match self.create_experiment(name).await {
            Ok(id) => Ok(id),
            // Another writer created it meanwhile.
            Err(e) if e.is_rejected() => self
                .experiment_by_name(name)
                .await?
                .map(|e| e.experiment_id)
                .ok_or(e),
            Err(e) => Err(e),
        }
    }

    /// Starts a run.
    async fn create_run(
        &self,
        experiment_id: &str,
        run_name: &str,
        start_time: i64,
        tags: &[KeyValue],
    ) -> Result<RunInfo, TrackingError>;

    /// Records metrics, parameters and tags of a run in one call.
    async fn log_batch(
        &self,
        run_id: &str,
        metrics: &[MetricPoint],
        params: &[KeyValue],
        tags: &[KeyValue],
    ) -> Result<(), TrackingError>;

    /// Sets a run's state (and end time).
    async fn update_run(
        &self,
        run_id: &str,
        status: RunStatus,
        end_time: Option<i64>,
    ) -> Result<(), TrackingError>;

    /// One run.
    async fn get_run(&self, run_id: &str) -> Result<Run, TrackingError>;

    /// Runs that match a query, in its order.
    async fn search_runs(&self, query: &RunQuery) -> Result<Vec<Run>, TrackingError>;

    /// Every value of one metric of a run.
    async fn metric_history(
        &self,
        run_id: &str,
        key: &str,
    ) -> Result<Vec<MetricPoint>, TrackingError>;

    /// Stores a file among a run's artifacts (`path` relative, `/`-separated).
    async fn upload_artifact(
        &self,
        run: &RunInfo,
        path: &str,
        bytes: Vec<u8>,
    ) -> Result<(), TrackingError>;

    /// Every artifact file of a run, recursively, with paths relative to the run's root.
    async fn list_artifacts(&self, run_id: &str) -> Result<Vec<ArtifactEntry>, TrackingError>;

    /// The bytes of one artifact.
    async fn download_artifact(&self, run_id: &str, path: &str) -> Result<Vec<u8>, TrackingError>;

    /// Registers a version of a model (the registered model is created when missing).
    async fn create_model_version(
        &self,
        name: &str,
        source: &str,
        run_id: &str,
        tags: &[KeyValue],
    ) -> Result<ModelVersion, TrackingError>;

    /// The versions of a registered model (empty when it does not exist).
    async fn model_versions(&self, name: &str) -> Result<Vec<ModelVersion>, TrackingError>;

    /// Points an alias of a registered model at a version.
    async fn set_model_alias(
        &self,
        name: &str,
        alias: &str,
        version: &str,
    ) -> Result<(), TrackingError>;
}

/// Opens the store a URI names: `http(s)://...` is a tracking server, `file:PATH` or a plain path
/// the embedded layout; `None` is the embedded store under `home` (`home/mlruns`).
pub fn open_store(uri: Option<&str>, home: &Path) -> Result<Arc<dyn TrackingStore>, TrackingError> {
    match uri.map(str::trim).filter(|u| !u.is_empty()) {
        None => Ok(Arc::new(LocalStore::open(home.join("mlruns"))?)),
        Some(u) if u.starts_with("http://") || u.starts_with("https://") => {
            Ok(Arc::new(MlflowClient::new(u)?))
        }
        Some(u) if u.starts_with("file:") => {
            let path = u.trim_start_matches("file://").trim_start_matches("file:");
            Ok(Arc::new(LocalStore::open(path)?))
        }
        Some(u) if !u.contains("://") => Ok(Arc::new(LocalStore::open(u)?)),
        Some(u) => Err(TrackingError::InvalidUri {
            uri: crate::client::redact(u),
            message: "expected `http://host:port`, `https://...` or `file:PATH`".into(),
        }),
    }
}
