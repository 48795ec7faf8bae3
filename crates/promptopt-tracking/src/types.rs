//! The records of a tracking store: experiments, runs, metrics, artifacts, model versions.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

/// An experiment: a named group of runs.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Experiment {
    /// Its id.
    pub experiment_id: String,
    /// Its name.
    pub name: String,
    /// Where its runs' artifacts go.
    #[serde(default)]
    pub artifact_location: String,
    /// `active` or `deleted`.
    #[serde(default)]
    pub lifecycle_stage: String,
}

/// The state of a run.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "SCREAMING_SNAKE_CASE")]
pub enum RunStatus {
    /// Still recording.
    Running,
    /// Waiting to start.
    Scheduled,
    /// Completed.
    Finished,
    /// Ended with an error.
    Failed,
    /// Stopped from outside.
    Killed,
}

impl RunStatus {
    /// MLflow's name for it.
    pub fn as_str(self) -> &'static str {
        match self {
            RunStatus::Running => "RUNNING",
            RunStatus::Scheduled => "SCHEDULED",
            RunStatus::Finished => "FINISHED",
            RunStatus::Failed => "FAILED",
            RunStatus::Killed => "KILLED",
        }
    }

    /// The number MLflow's file layout stores.
    pub fn code(self) -> i64 {
        match self {
            RunStatus::Running => 1,
            RunStatus::Scheduled => 2,
            RunStatus::Finished => 3,
            RunStatus::Failed => 4,
            RunStatus::Killed => 5,
        }
    }

    /// The status of a stored number.
    pub fn from_code(code: i64) -> Option<Self> {
        [
            RunStatus::Running,
            RunStatus::Scheduled,
            RunStatus::Finished,
            RunStatus::Failed,
            RunStatus::Killed,
        ]
        .into_iter()
        .find(|s| s.code() == code)
    }
}

impl std::fmt::Display for RunStatus {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

/// One value of a metric.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct MetricPoint {
    /// The metric.
    pub key: String,
    /// Its value.
    pub value: f64,
    /// When, in milliseconds since the Unix epoch.
    pub timestamp: i64,
    /// The step (trial number, iteration).
    #[serde(default)]
    pub step: i64,
}

/// A key and a value: a parameter or a tag.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct KeyValue {
    /// The key.
    pub key: String,
    /// The value.
    #[serde(default)]
    pub value: String,
}

impl KeyValue {
    /// A pair.
    pub fn new(key: impl Into<String>, value: impl Into<String>) -> Self {
        Self {
            key: key.into(),
            value: value.into(),
        }
    }
}

/// What identifies a run and its state.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct RunInfo {
    /// Its id.
    pub run_id: String,
    /// Its display name.
    #[serde(default)]
    pub run_name: String,
    /// Its experiment.
    pub experiment_id: String,
    /// Its state.
    pub status: RunStatus,
    /// Start, ms since the epoch.
    #[serde(default)]
    pub start_time: i64,
    /// End, ms since the epoch.
    #[serde(default)]
    pub end_time: Option<i64>,
    /// Where its artifacts are.
    #[serde(default)]
    pub artifact_uri: String,
}

/// A run with its data: parameters, the latest value of each metric, tags.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Run {
    /// Identity and state.
    pub info: RunInfo,
    /// Parameters.
    pub params: BTreeMap<String, String>,
    /// The latest value of each metric.
    pub metrics: BTreeMap<String, f64>,
    /// Tags.
    pub tags: BTreeMap<String, String>,
}

/// A file or folder among a run's artifacts.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ArtifactEntry {
    /// Its path in the run.
    pub path: String,
    /// Whether it is a folder.
    #[serde(default)]
    pub is_dir: bool,
    /// Its size in bytes (files).
    #[serde(default)]
    pub file_size: Option<u64>,
}

/// A version of a registered model.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ModelVersion {
    /// The registered model.
    pub name: String,
    /// MLflow's version number.
    pub version: String,
    /// Where the model is (`runs:/<run>/<path>`).
    pub source: String,
    /// The run that produced it.
    #[serde(default)]
    pub run_id: String,
    /// Aliases that point at it.
    #[serde(default)]
    pub aliases: Vec<String>,
    /// Its tags.
    #[serde(default)]
    pub tags: BTreeMap<String, String>,
}

/// What to search for.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct RunQuery {
    /// The experiments searched (all when empty).
    pub experiment_ids: Vec<String>,
    /// MLflow's filter syntax, e.g. `params.algorithm = 'miprov2' and metrics.val_score > 0.7`.
    pub filter: Option<String>,
    /// Orderings, e.g. `metrics.val_score DESC`.
    pub order_by: Vec<String>,
    /// At most this many runs (all when `None`).
    pub max_results: Option<usize>,
}

/// Milliseconds since the Unix epoch, now.
pub fn now_ms() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_millis() as i64)
        .unwrap_or(0)
}
