//! The server's settings: `promptopt serve --config serve.yaml` and its defaults.

use std::collections::BTreeMap;
use std::path::Path;
use std::time::Duration;

use promptopt_learning::config::LearningConfig;
use serde::Deserialize;

use crate::auth::TokenSpec;
use crate::error::ServerError;
use crate::predlog::LogPolicy;

/// Settings of one model (`models.NAME`).
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct ModelSettings {
    /// How its predictions are logged: `sample_rate`, `drop`, `hash`.
    pub log: LogPolicy,
    /// Its continuous-learning loop (see `promptopt_learning::config`); stored in the database
    /// and started when the server starts.
    pub learning: Option<LearningConfig>,
}

/// The prediction log's settings.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct PredictionLogConfig {
    /// The spool's size limit while the database cannot be written; past it predictions are
    /// dropped from the log (and counted), never refused.
    pub spool_max_bytes: u64,
}

impl Default for PredictionLogConfig {
    fn default() -> Self {
        Self {
            spool_max_bytes: 64 * 1024 * 1024,
        }
    }
}

/// What `serve.yaml` holds. Every key is optional.
///
/// ```yaml
/// bind: 127.0.0.1:8000
/// database: postgres://promptopt@db:5432/promptopt
/// tokens:
///   - {token: "dev-token"}                                  # every scope
///   - {sha256: "9f86d08...", scopes: [predict]}             # stored hashed
/// max_body_bytes: 16777216
/// request_timeout_seconds: 120
/// header_timeout_seconds: 30
/// max_concurrent_requests: 256
/// max_failed_auth_per_minute: 20
/// trusted_requests: false
/// prediction_log: {spool_max_bytes: 67108864}
/// gpu: {device_ids: [0], memory_fraction: 0.8, batch_size: 32}   # the embedded model's GPUs
/// models:
///   tickets:
///     log: {sample_rate: 1.0, drop: [email], hash: [customer_id]}
///     learning: {triggers: {drift: true, every: 24h}, deploy: {policy: promote}}
/// ```
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct ServeConfig {
    /// Where to listen (`--bind` wins).
    pub bind: Option<String>,
    /// The server's database for experiments, feedback and the prediction log: `sqlite:PATH`
    /// or `postgres://USER:PASSWORD@HOST:PORT/DB` (default: `sqlite:PROMPTOPT_HOME/server.sqlite`;
    /// `--database` wins).
    pub database: Option<String>,
    /// Accepted tokens, besides `PROMPTOPT_API_TOKENS`.
    pub tokens: Vec<TokenSpec>,
    /// The largest request body accepted (413 above it).
    pub max_body_bytes: usize,
    /// How long one request may take before it is answered 504 (event streams excepted).
    pub request_timeout_seconds: f64,
    /// How long a client may take to send a request's headers before its connection is closed
    /// (slow-header clients would otherwise hold connections forever).
    pub header_timeout_seconds: f64,
    /// Requests handled at once; more are answered 503 with `Retry-After`.
    pub max_concurrent_requests: usize,
    /// Requests one client (IP address) may have refused as unauthorized in a minute; past it,
    /// that client is answered 429 until the minute is over (0 turns this off).
    pub max_failed_auth_per_minute: u32,
    /// Instances in one batch prediction.
    pub max_batch: usize,
    /// Accept optimization requests that name files on the server (dataset paths), custom metric
    /// commands or a tracking URI. Off by default: over HTTP a request is data only.
    pub trusted_requests: bool,
    /// The prediction log.
    pub prediction_log: PredictionLogConfig,
    /// Per-model settings: logging and continuous learning.
    pub models: BTreeMap<String, ModelSettings>,
    /// The GPUs of the embedded model (`local/…` models), for predictions and in-process
    /// workers (see [`promptopt_lm::gpu::GpuConfig`]). When set it replaces the `gpu:` block of
    /// the requests those workers run; the `PROMPTOPT_GPU_*` variables and `promptopt serve`'s
    /// `--gpu*` flags win over it, setting by setting.
    pub gpu: Option<promptopt_lm::gpu::GpuConfig>,
    /// The address of the MLflow UI the console links saved versions' runs to (for example
    /// `http://127.0.0.1:5000`); `promptopt serve` uses `MLFLOW_TRACKING_URI` when it is an
    /// `http(s)` address and this is not set.
    pub mlflow_ui: Option<String>,
}

impl Default for ServeConfig {
    fn default() -> Self {
        Self {
            bind: None,
            database: None,
            tokens: Vec::new(),
            max_body_bytes: 16 * 1024 * 1024,
            request_timeout_seconds: 120.0,
            header_timeout_seconds: 30.0,
            max_concurrent_requests: 256,
            max_failed_auth_per_minute: 20,
            max_batch: 256,
            trusted_requests: false,
            prediction_log: PredictionLogConfig::default(),
            models: BTreeMap::new(),
            gpu: None,
            mlflow_ui: None,
        }
    }
}

impl ServeConfig {
    /// Reads a YAML (or JSON) configuration file.
    pub fn from_path(path: &Path) -> Result<Self, ServerError> {
        let error = |message: String| ServerError::Config {
            path: path.to_path_buf(),
            message,
        };
        let text = std::fs::read_to_string(path).map_err(|e| error(e.to_string()))?;
        let config: Self = serde_yaml::from_str(&text).map_err(|e| error(e.to_string()))?;
        config.check().map_err(error)?;
        Ok(config)
    }

    /// Checks the values' ranges.
    pub fn check(&self) -> Result<(), String> {
        if !(self.request_timeout_seconds.is_finite() && self.request_timeout_seconds > 0.0) {
            return Err("`request_timeout_seconds` must be a positive number".into());
        }
        if !(self.header_timeout_seconds.is_finite() && self.header_timeout_seconds > 0.0) {
            return Err("`header_timeout_seconds` must be a positive number".into());
        }
        if self.max_concurrent_requests == 0 {
            return Err("`max_concurrent_requests` must be at least 1".into());
        }
        if self.max_body_bytes < 1024 {
            return Err("`max_body_bytes` must be at least 1024".into());
        }
        if self.max_batch == 0 {
            return Err("`max_batch` must be at least 1".into());
        }
        if let Some(gpu) = &self.gpu {
            gpu.check().map_err(|e| e.to_string())?;
        }
        for (name, settings) in &self.models {
            settings
                .log
                .check()
                .map_err(|e| format!("`models.{name}.log`: {e}"))?;
            if let Some(learning) = &settings.learning {
                learning
                    .check()
                    .map_err(|e| format!("`models.{name}.learning`: {e}"))?;
            }
        }
        Ok(())
    }

    /// The per-request timeout.
    pub fn request_timeout(&self) -> Duration {
        Duration::from_secs_f64(self.request_timeout_seconds)
    }

    /// [`ServeConfig::header_timeout_seconds`] as a duration.
    pub fn header_timeout(&self) -> Duration {
        Duration::from_secs_f64(self.header_timeout_seconds)
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    #[test]
    fn a_config_file_parses_and_bad_keys_are_named() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("serve.yaml");
        std::fs::write(
            &path,
            "bind: 127.0.0.1:9000\ntokens: [{token: t, scopes: [predict]}]\nmax_batch: 8\n",
        )
        .unwrap();
        let config = ServeConfig::from_path(&path).unwrap();
        assert_eq!(config.bind.as_deref(), Some("127.0.0.1:9000"));
        assert_eq!(config.max_batch, 8);
        assert_eq!(config.max_concurrent_requests, 256);
        std::fs::write(&path, "max_batchh: 8\n").unwrap();
        let e = ServeConfig::from_path(&path).unwrap_err().to_string();
        assert!(e.contains("unknown field `max_batchh`"), "{e}");
        std::fs::write(
            &path,
            "models: {t: {log: {sample_rate: 2}, learning: {window: 5}}}\n",
        )
        .unwrap();
        let e = ServeConfig::from_path(&path).unwrap_err().to_string();
        assert!(
            e.contains("`models.t.log`") && e.contains("`sample_rate`"),
            "{e}"
        );
        std::fs::write(&path, "models: {t: {learning: {window: 0}}}\n").unwrap();
        let e = ServeConfig::from_path(&path).unwrap_err().to_string();
        assert!(
            e.contains("`models.t.learning`") && e.contains("`window`"),
            "{e}"
        );
        std::fs::write(&path, "max_concurrent_requests: 0\n").unwrap();
        let e = ServeConfig::from_path(&path).unwrap_err().to_string();
        assert!(e.contains("`max_concurrent_requests`"), "{e}");
    }

    #[test]
    fn a_gpu_block_parses_and_bad_values_name_the_setting() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("serve.yaml");
        std::fs::write(
            &path,
            "gpu: {device_ids: [1], memory_fraction: 0.5, batch_size: 64, required: false}\n",
        )
        .unwrap();
        let gpu = ServeConfig::from_path(&path).unwrap().gpu.unwrap();
        assert_eq!(gpu.device_ids, [1]);
        assert_eq!(gpu.batch_size, 64);
        assert!(!gpu.required);
        assert!(ServeConfig::default().gpu.is_none());
        for (block, setting) in [
            ("{memory_fraction: 1.5}", "`gpu.memory_fraction`"),
            ("{batch_size: 0}", "`gpu.batch_size`"),
            ("{device_ids: []}", "`gpu.device_ids`"),
        ] {
            std::fs::write(&path, format!("gpu: {block}\n")).unwrap();
            let e = ServeConfig::from_path(&path).unwrap_err().to_string();
            assert!(e.contains(setting), "{block}: {e}");
        }
        std::fs::write(&path, "gpu: {memory: 0.5}\n").unwrap();
        let e = ServeConfig::from_path(&path).unwrap_err().to_string();
        assert!(e.contains("unknown field `memory`"), "{e}");
    }
}
