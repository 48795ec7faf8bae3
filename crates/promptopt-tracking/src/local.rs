//! The embedded store: runs written in MLflow's file layout (`mlruns/`), so that MLflow's own
//! client and UI read them without a server.
//!
//! ```text
//! mlruns/<experiment_id>/meta.yaml
//! mlruns/<experiment_id>/<run_id>/meta.yaml
//! mlruns/<experiment_id>/<run_id>/{params,tags}/<key>        the value
//! mlruns/<experiment_id>/<run_id>/metrics/<key>              "<timestamp> <value> <step>" per line
//! mlruns/<experiment_id>/<run_id>/artifacts/...
//! mlruns/models/<name>/meta.yaml, version-<n>/meta.yaml, version-<n>/tags/<key>, aliases/<alias>
//! ```
//!
//! MLflow 3.18 keeps this layout in maintenance mode: its readers open it with
//! `MLFLOW_ALLOW_FILE_STORE=true`, and `mlflow migrate-filestore` turns it into a database.
//! Experiment ids are derived from the name, so several processes that create the same
//! experiment at once agree on it; every `meta.yaml` is replaced atomically.

use std::collections::BTreeMap;
use std::io::Write;
use std::path::{Path, PathBuf};

use async_trait::async_trait;
use serde_yaml::{Mapping, Value};
use sha2::{Digest, Sha256};

use crate::filter::{Filter, OrderBy};
use crate::{
    now_ms, ArtifactEntry, Experiment, KeyValue, MetricPoint, ModelVersion, Run, RunInfo, RunQuery,
    RunStatus, TrackingError, TrackingStore,
};

/// MLflow's file layout under one folder.
#[derive(Debug, Clone)]
pub struct LocalStore {
    root: PathBuf,
}

const DEFAULT_EXPERIMENT: &str = "0";

fn read(path: &Path) -> Result<String, TrackingError> {
    std::fs::read_to_string(path).map_err(|e| TrackingError::io(path, e))
}

fn write_atomic(path: &Path, bytes: &[u8]) -> Result<(), TrackingError> {
    let dir = path.parent().unwrap_or(Path::new("."));
    std::fs::create_dir_all(dir).map_err(|e| TrackingError::io(dir, e))?;
    let tmp = dir.join(format!(
        ".{}.{}.tmp",
        path.file_name().and_then(|n| n.to_str()).unwrap_or("file"),
        rand::random::<u64>()
    ));
    std::fs::write(&tmp, bytes).map_err(|e| TrackingError::io(&tmp, e))?;
    std::fs::rename(&tmp, path).map_err(|e| TrackingError::io(path, e))
}

fn yaml(path: &Path) -> Result<Mapping, TrackingError> {
    let text = read(path)?;
    match serde_yaml::from_str::<Value>(&text) {
        Ok(Value::Mapping(m)) => Ok(m),
        Ok(_) => Err(TrackingError::Corrupt {
            path: path.into(),
            message: "expected a mapping".into(),
        }),
        Err(e) => Err(TrackingError::Corrupt {
            path: path.into(),
            message: e.to_string(),
        }),
    }
}

fn write_yaml(path: &Path, map: &Mapping) -> Result<(), TrackingError> {
    let text = serde_yaml::to_string(map).map_err(|e| TrackingError::Corrupt {
        path: path.into(),
        message: e.to_string(),
    })?;
    write_atomic(path, text.as_bytes())
}

fn get_str(map: &Mapping, key: &str) -> String {
    match map.get(key) {
        Some(Value::String(s)) => s.clone(),
        Some(Value::Number(n)) => n.to_string(),
        _ => String::new(),
    }
}

fn get_int(map: &Mapping, key: &str) -> Option<i64> {
    match map.get(key) {
        Some(Value::Number(n)) => n.as_i64(),
        Some(Value::String(s)) => s.parse().ok(),
        _ => None,
    }
}

fn mapping<const N: usize>(pairs: [(&str, Value); N]) -> Mapping {
    pairs
        .into_iter()
        .map(|(k, v)| (Value::String(k.to_string()), v))
        .collect()
}

/// Keys become file names: MLflow allows letters, digits, `_ - . /` and spaces.
fn check_key(key: &str) -> Result<(), TrackingError> {
    let ok = !key.is_empty()
        && !key.starts_with('/')
        && !key
            .split('/')
            .any(|part| part == ".." || part == "." || part.is_empty())
        && key
            .chars()
            .all(|c| c.is_alphanumeric() || "_-./ ".contains(c));
    if ok {
        Ok(())
    } else {
        Err(TrackingError::InvalidKey {
            key: key.into(),
            message: "a key may hold letters, digits, `_`, `-`, `.`, `/` and spaces".into(),
        })
    }
}

fn file_uri(path: &Path) -> String {
    format!("file://{}", path.display())
}

fn list_dir(path: &Path) -> Result<Vec<(String, PathBuf)>, TrackingError> {
    let mut out = Vec::new();
    let entries = match std::fs::read_dir(path) {
        Ok(e) => e,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(out),
        Err(e) => return Err(TrackingError::io(path, e)),
    };
    for entry in entries {
        let entry = entry.map_err(|e| TrackingError::io(path, e))?;
        if let Some(name) = entry.file_name().to_str() {
            if !name.starts_with('.') {
                out.push((name.to_string(), entry.path()));
            }
        }
    }
    out.sort();
    Ok(out)
}

/// Files under `dir`, recursively, as `(relative path, full path)`.
fn walk(dir: &Path, prefix: &str, out: &mut Vec<(String, PathBuf)>) -> Result<(), TrackingError> {
    for (name, path) in list_dir(dir)? {
        let rel = if prefix.is_empty() {
            name
        } else {
            format!("{prefix}/{name}")
        };
        if path.is_dir() {
            walk(&path, &rel, out)?;
        } else {
            out.push((rel, path));
        }
    }
    Ok(())
}

impl LocalStore {
    /// The store under `root` (created, with MLflow's `Default` experiment, when missing).
    pub fn open(root: impl Into<PathBuf>) -> Result<Self, TrackingError> {
        let root: PathBuf = root.into();
        let root = if root.is_absolute() {
            root
        } else {
            std::env::current_dir()
                .map_err(|e| TrackingError::io(&root, e))?
                .join(root)
        };
        let store = Self { root };
        let default = store.root.join(DEFAULT_EXPERIMENT).join("meta.yaml");
        if !default.exists() {
            store.write_experiment(DEFAULT_EXPERIMENT, "Default")?;
        }
        Ok(store)
    }

    /// The folder.
    pub fn root(&self) -> &Path {
        &self.root
    }

    fn write_experiment(&self, id: &str, name: &str) -> Result<(), TrackingError> {
        let dir = self.root.join(id);
        let now = now_ms();
        write_yaml(
            &dir.join("meta.yaml"),
            &mapping([
                ("artifact_location", Value::from(file_uri(&dir))),
                ("creation_time", Value::from(now)),
                ("effective_trace_archival_retention", Value::Null),
                ("experiment_id", Value::from(id)),
                ("last_update_time", Value::from(now)),
                ("lifecycle_stage", Value::from("active")),
                ("name", Value::from(name)),
                ("trace_location", Value::Null),
                ("workspace", Value::from("default")),
            ]),
        )
    }

    fn experiments(&self) -> Result<Vec<Experiment>, TrackingError> {
        let mut out = Vec::new();
        for (name, path) in list_dir(&self.root)? {
            let meta = path.join("meta.yaml");
            if name == "models" || !meta.exists() {
                continue;
            }
            let m = yaml(&meta)?;
            let e = Experiment {
                experiment_id: get_str(&m, "experiment_id"),
                name: get_str(&m, "name"),
                artifact_location: get_str(&m, "artifact_location"),
                lifecycle_stage: get_str(&m, "lifecycle_stage"),
            };
            if e.lifecycle_stage != "deleted" {
                out.push(e);
            }
        }
        Ok(out)
    }

    fn find_run_dir(&self, run_id: &str) -> Result<PathBuf, TrackingError> {
        if run_id.is_empty() || !run_id.chars().all(|c| c.is_ascii_alphanumeric()) {
            return Err(TrackingError::RunNotFound(run_id.into()));
        }
        for e in self.experiments()? {
            let dir = self.root.join(&e.experiment_id).join(run_id);
            if dir.join("meta.yaml").exists() {
                return Ok(dir);
            }
        }
        Err(TrackingError::RunNotFound(run_id.into()))
    }

    fn read_kv_dir(dir: &Path) -> Result<BTreeMap<String, String>, TrackingError> {
        let mut files = Vec::new();
        walk(dir, "", &mut files)?;
        files
            .into_iter()
            .map(|(key, path)| Ok((key, read(&path)?)))
            .collect()
    }

    fn read_metric(path: &Path, key: &str) -> Result<Vec<MetricPoint>, TrackingError> {
        let text = read(path)?;
        text.lines()
            .filter(|l| !l.trim().is_empty())
            .map(|line| {
                let parts: Vec<&str> = line.split_whitespace().collect();
                let bad = || TrackingError::Corrupt {
                    path: path.into(),
                    message: format!("expected `<timestamp> <value> <step>`, found `{line}`"),
                };
                let [ts, value, rest @ ..] = parts.as_slice() else {
                    return Err(bad());
                };
                Ok(MetricPoint {
                    key: key.to_string(),
                    timestamp: ts.parse().map_err(|_| bad())?,
                    value: value.parse().map_err(|_| bad())?,
                    step: match rest.first() {
                        Some(s) => s.parse().map_err(|_| bad())?,
                        None => 0,
                    },
                })
            })
            .collect()
    }

    fn read_run(&self, dir: &Path) -> Result<Run, TrackingError> {
        let m = yaml(&dir.join("meta.yaml"))?;
        let mut metrics = BTreeMap::new();
        let mut files = Vec::new();
        walk(&dir.join("metrics"), "", &mut files)?;
        for (key, path) in files {
            let points = Self::read_metric(&path, &key)?;
            if let Some(latest) = points
                .iter()
                .max_by(|a, b| (a.step, a.timestamp).cmp(&(b.step, b.timestamp)))
            {
                metrics.insert(key, latest.value);
            }
        }
        let tags = Self::read_kv_dir(&dir.join("tags"))?;
        let run_id = get_str(&m, "run_id");
        Ok(Run {
            info: RunInfo {
                run_name: tags
                    .get("mlflow.runName")
                    .cloned()
                    .unwrap_or_else(|| get_str(&m, "run_name")),
                experiment_id: get_str(&m, "experiment_id"),
                status: get_int(&m, "status")
                    .and_then(RunStatus::from_code)
                    .unwrap_or(RunStatus::Running),
                start_time: get_int(&m, "start_time").unwrap_or(0),
                end_time: get_int(&m, "end_time"),
                artifact_uri: get_str(&m, "artifact_uri"),
                run_id,
            },
            params: Self::read_kv_dir(&dir.join("params"))?,
            metrics,
            tags,
        })
    }

    /// The names of the registered models.
    pub fn model_names(&self) -> Result<Vec<String>, TrackingError> {
        Ok(list_dir(&self.root.join("models"))?
            .into_iter()
            .filter(|(_, p)| p.join("meta.yaml").exists())
            .map(|(n, _)| n)
            .collect())
    }

    /// Every run of the store (all experiments), unordered.
    pub fn all_runs(&self) -> Result<Vec<Run>, TrackingError> {
        let mut out = Vec::new();
        for e in self.experiments()? {
            for (_, path) in list_dir(&self.root.join(&e.experiment_id))? {
                if path.join("meta.yaml").exists() {
                    out.push(self.read_run(&path)?);
                }
            }
        }
        Ok(out)
    }

    fn create_run_sync(
        &self,
        experiment_id: &str,
        run_name: &str,
        start_time: i64,
        tags: &[KeyValue],
    ) -> Result<RunInfo, TrackingError> {
        if !self.root.join(experiment_id).join("meta.yaml").exists() {
            return Err(TrackingError::ExperimentNotFound(experiment_id.into()));
        }
        let run_id = format!("{:032x}", rand::random::<u128>());
        let dir = self.root.join(experiment_id).join(&run_id);
        let artifact_uri = file_uri(&dir.join("artifacts"));
        write_yaml(
            &dir.join("meta.yaml"),
            &mapping([
                ("artifact_uri", Value::from(artifact_uri.clone())),
                ("end_time", Value::Null),
                ("entry_point_name", Value::from("")),
                ("experiment_id", Value::from(experiment_id)),
                ("lifecycle_stage", Value::from("active")),
                ("run_id", Value::from(run_id.clone())),
                ("run_name", Value::from(run_name)),
                ("source_name", Value::from("")),
                ("source_type", Value::from(4)),
                ("source_version", Value::from("")),
                ("start_time", Value::from(start_time)),
                ("status", Value::from(RunStatus::Running.code())),
                ("tags", Value::Sequence(Vec::new())),
                ("user_id", Value::from(user())),
            ]),
        )?;
        let mut all = vec![KeyValue::new("mlflow.runName", run_name)];
        all.extend(tags.iter().cloned());
        self.log_batch_sync(&run_id, &[], &[], &all)?;
        Ok(RunInfo {
            run_id,
            run_name: run_name.into(),
            experiment_id: experiment_id.into(),
            status: RunStatus::Running,
            start_time,
            end_time: None,
            artifact_uri,
        })
    }

    fn log_batch_sync(
        &self,
        run_id: &str,
        metrics: &[MetricPoint],
        params: &[KeyValue],
        tags: &[KeyValue],
    ) -> Result<(), TrackingError> {
        let dir = self.find_run_dir(run_id)?;
        for p in params {
            check_key(&p.key)?;
            let path = dir.join("params").join(&p.key);
            if !path.exists() {
                write_atomic(&path, p.value.as_bytes())?;
            }
        }
        for t in tags {
            check_key(&t.key)?;
            write_atomic(&dir.join("tags").join(&t.key), t.value.as_bytes())?;
        }
        let mut by_key: BTreeMap<&str, String> = BTreeMap::new();
        for m in metrics {
            check_key(&m.key)?;
            let line = by_key.entry(&m.key).or_default();
            line.push_str(&format!("{} {} {}\n", m.timestamp, m.value, m.step));
        }
        for (key, lines) in by_key {
            let path = dir.join("metrics").join(key);
            if let Some(parent) = path.parent() {
                std::fs::create_dir_all(parent).map_err(|e| TrackingError::io(parent, e))?;
            }
            let mut file = std::fs::OpenOptions::new()
                .create(true)
                .append(true)
                .open(&path)
                .map_err(|e| TrackingError::io(&path, e))?;
            file.write_all(lines.as_bytes())
                .map_err(|e| TrackingError::io(&path, e))?;
        }
        Ok(())
    }

    fn update_run_sync(
        &self,
        run_id: &str,
        status: RunStatus,
        end_time: Option<i64>,
    ) -> Result<(), TrackingError> {
        let path = self.find_run_dir(run_id)?.join("meta.yaml");
        let mut m = yaml(&path)?;
        m.insert("status".into(), Value::from(status.code()));
        if let Some(t) = end_time {
            m.insert("end_time".into(), Value::from(t));
        }
        write_yaml(&path, &m)
    }

    fn artifact_path(&self, run_id: &str, path: &str) -> Result<PathBuf, TrackingError> {
        if path.is_empty()
            || path.starts_with('/')
            || path.split('/').any(|p| p == ".." || p.is_empty())
        {
            return Err(TrackingError::ArtifactNotFound {
                run_id: run_id.into(),
                path: path.into(),
            });
        }
        Ok(self.find_run_dir(run_id)?.join("artifacts").join(path))
    }

    fn model_dir(&self, name: &str) -> Result<PathBuf, TrackingError> {
        check_key(name)?;
        Ok(self.root.join("models").join(name))
    }

    fn versions_sync(&self, name: &str) -> Result<Vec<ModelVersion>, TrackingError> {
        let dir = self.model_dir(name)?;
        let mut aliases: BTreeMap<String, Vec<String>> = BTreeMap::new();
        for (alias, path) in list_dir(&dir.join("aliases"))? {
            aliases
                .entry(read(&path)?.trim().to_string())
                .or_default()
                .push(alias);
        }
        let mut out = Vec::new();
        for (entry, path) in list_dir(&dir)? {
            if !entry.starts_with("version-") {
                continue;
            }
            let m = yaml(&path.join("meta.yaml"))?;
            let version = get_str(&m, "version");
            out.push(ModelVersion {
                name: name.into(),
                source: get_str(&m, "source"),
                run_id: get_str(&m, "run_id"),
                aliases: aliases.remove(&version).unwrap_or_default(),
                tags: Self::read_kv_dir(&path.join("tags"))?,
                version,
            });
        }
        out.sort_by_key(|v| v.version.parse::<u64>().unwrap_or(0));
        Ok(out)
    }

    fn create_model_version_sync(
        &self,
        name: &str,
        source: &str,
        run_id: &str,
        tags: &[KeyValue],
    ) -> Result<ModelVersion, TrackingError> {
        let dir = self.model_dir(name)?;
        let now = now_ms();
        if !dir.join("meta.yaml").exists() {
            write_yaml(
                &dir.join("meta.yaml"),
                &mapping([
                    ("aliases", Value::Mapping(Mapping::new())),
                    ("creation_timestamp", Value::from(now)),
                    ("deployment_job_id", Value::Null),
                    ("deployment_job_state", Value::Null),
                    ("description", Value::Null),
                    ("last_updated_timestamp", Value::from(now)),
                    ("name", Value::from(name)),
                    ("workspace", Value::from("default")),
                ]),
            )?;
        }
        // Claim the next number by creating its folder (atomic between processes).
        let mut n = self
            .versions_sync(name)?
            .last()
            .and_then(|v| v.version.parse::<u64>().ok())
            .unwrap_or(0)
            + 1;
        let vdir = loop {
            let vdir = dir.join(format!("version-{n}"));
            match std::fs::create_dir(&vdir) {
                Ok(()) => break vdir,
                Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => n += 1,
                Err(e) => return Err(TrackingError::io(&vdir, e)),
            }
        };
        for t in tags {
            check_key(&t.key)?;
            write_atomic(&vdir.join("tags").join(&t.key), t.value.as_bytes())?;
        }
        write_yaml(
            &vdir.join("meta.yaml"),
            &mapping([
                ("creation_timestamp", Value::from(now)),
                ("current_stage", Value::from("None")),
                ("deployment_job_state", Value::Null),
                ("description", Value::Null),
                ("last_updated_timestamp", Value::from(now)),
                ("model_id", Value::Null),
                ("name", Value::from(name)),
                ("run_id", Value::from(run_id)),
                ("run_link", Value::Null),
                ("source", Value::from(source)),
                ("status", Value::from("READY")),
                ("status_message", Value::Null),
                ("storage_location", Value::from(source)),
                ("user_id", Value::Null),
                ("version", Value::from(n)),
                ("workspace", Value::from("default")),
            ]),
        )?;
        Ok(ModelVersion {
            name: name.into(),
            version: n.to_string(),
            source: source.into(),
            run_id: run_id.into(),
            aliases: Vec::new(),
            tags: tags
                .iter()
                .map(|t| (t.key.clone(), t.value.clone()))
                .collect(),
        })
    }

    fn set_alias_sync(&self, name: &str, alias: &str, version: &str) -> Result<(), TrackingError> {
        check_key(alias)?;
        let dir = self.model_dir(name)?;
        let meta = dir.join("meta.yaml");
        if !dir.join(format!("version-{version}")).exists() {
            return Err(TrackingError::ModelNotFound(format!(
                "{name} version {version}"
            )));
        }
        let mut m = yaml(&meta)?;
        let mut aliases = match m.get("aliases") {
            Some(Value::Mapping(a)) => a.clone(),
            _ => Mapping::new(),
        };
        aliases.insert(Value::from(alias), Value::from(version));
        m.insert("aliases".into(), Value::Mapping(aliases));
        m.insert("last_updated_timestamp".into(), Value::from(now_ms()));
        write_yaml(&meta, &m)?;
        write_atomic(&dir.join("aliases").join(alias), version.as_bytes())
    }
}

pub(crate) fn user() -> String {
    std::env::var("USER")
        .or_else(|_| std::env::var("USERNAME"))
        .unwrap_or_else(|_| "promptopt".into())
}

/// The id an experiment name gets: a number from the name's hash, as MLflow's ids are numbers.
fn experiment_id_of(name: &str) -> String {
    let digest = Sha256::digest(name.as_bytes());
    let mut bytes = [0u8; 8];
    bytes.copy_from_slice(&digest[..8]);
    // 1 to 10^18, never the default experiment's 0.
    (u64::from_le_bytes(bytes) % 1_000_000_000_000_000_000 + 1).to_string()
}

async fn blocking<T: Send + 'static>(
    f: impl FnOnce() -> Result<T, TrackingError> + Send + 'static,
) -> Result<T, TrackingError> {
    tokio::task::spawn_blocking(f)
        .await
        .unwrap_or_else(|e| Err(TrackingError::io("(store task)", std::io::Error::other(e))))
}

#[async_trait]
impl TrackingStore for LocalStore {
    fn location(&self) -> String {
        file_uri(&self.root)
    }

    async fn list_experiments(&self) -> Result<Vec<Experiment>, TrackingError> {
        let s = self.clone();
        blocking(move || s.experiments()).await
    }

    async fn experiment_by_name(&self, name: &str) -> Result<Option<Experiment>, TrackingError> {
        let name = name.to_string();
        Ok(self
            .list_experiments()
            .await?
            .into_iter()
            .find(|e| e.name == name))
    }

    async fn create_experiment(&self, name: &str) -> Result<String, TrackingError> {
        let (s, name) = (self.clone(), name.to_string());
        blocking(move || {
            if name.trim().is_empty() {
                return Err(TrackingError::ExperimentNotFound(name));
            }
            let mut id = experiment_id_of(&name);
            // Another experiment holds the hashed id (a collision): take the next free number.
            loop {
                let meta = s.root.join(&id).join("meta.yaml");
                if !meta.exists() {
                    s.write_experiment(&id, &name)?;
                    return Ok(id);
                }
                if get_str(&yaml(&meta)?, "name") == name {
                    return Ok(id);
                }
                id = (id.parse::<u64>().unwrap_or(0) + 1).to_string();
            }
        })
        .await
    }

    async fn create_run(
        &self,
        experiment_id: &str,
        run_name: &str,
        start_time: i64,
        tags: &[KeyValue],
    ) -> Result<RunInfo, TrackingError> {
        let s = self.clone();
        let (e, n, t) = (
            experiment_id.to_string(),
            run_name.to_string(),
            tags.to_vec(),
        );
        blocking(move || s.create_run_sync(&e, &n, start_time, &t)).await
    }

    async fn log_batch(
        &self,
        run_id: &str,
        metrics: &[MetricPoint],
        params: &[KeyValue],
        tags: &[KeyValue],
    ) -> Result<(), TrackingError> {
        let s = self.clone();
        let (r, m, p, t) = (
            run_id.to_string(),
            metrics.to_vec(),
            params.to_vec(),
            tags.to_vec(),
        );
        blocking(move || s.log_batch_sync(&r, &m, &p, &t)).await
    }

    async fn update_run(
        &self,
        run_id: &str,
        status: RunStatus,
        end_time: Option<i64>,
    ) -> Result<(), TrackingError> {
        let (s, r) = (self.clone(), run_id.to_string());
        blocking(move || s.update_run_sync(&r, status, end_time)).await
    }

    async fn get_run(&self, run_id: &str) -> Result<Run, TrackingError> {
        let (s, r) = (self.clone(), run_id.to_string());
        blocking(move || s.read_run(&s.find_run_dir(&r)?)).await
    }

    async fn search_runs(&self, query: &RunQuery) -> Result<Vec<Run>, TrackingError> {
        let filter = Filter::parse(query.filter.as_deref().unwrap_or(""))?;
        let order = OrderBy::parse(&query.order_by)?;
        let (s, ids, max) = (
            self.clone(),
            query.experiment_ids.clone(),
            query.max_results,
        );
        blocking(move || {
            let mut runs: Vec<Run> = s
                .all_runs()?
                .into_iter()
                .filter(|r| ids.is_empty() || ids.contains(&r.info.experiment_id))
                .filter(|r| filter.matches(r))
                .collect();
            order.sort(&mut runs);
            if let Some(max) = max {
                runs.truncate(max);
            }
            Ok(runs)
        })
        .await
    }

    async fn metric_history(
        &self,
        run_id: &str,
        key: &str,
    ) -> Result<Vec<MetricPoint>, TrackingError> {
        let (s, r, k) = (self.clone(), run_id.to_string(), key.to_string());
        blocking(move || {
            check_key(&k)?;
            let path = s.find_run_dir(&r)?.join("metrics").join(&k);
            if !path.exists() {
                return Ok(Vec::new());
            }
            LocalStore::read_metric(&path, &k)
        })
        .await
    }

    async fn upload_artifact(
        &self,
        run: &RunInfo,
        path: &str,
        bytes: Vec<u8>,
    ) -> Result<(), TrackingError> {
        let (s, r, p) = (self.clone(), run.run_id.clone(), path.to_string());
        blocking(move || write_atomic(&s.artifact_path(&r, &p)?, &bytes)).await
    }

    async fn list_artifacts(&self, run_id: &str) -> Result<Vec<ArtifactEntry>, TrackingError> {
        let (s, r) = (self.clone(), run_id.to_string());
        blocking(move || {
            let mut files = Vec::new();
            walk(&s.find_run_dir(&r)?.join("artifacts"), "", &mut files)?;
            Ok(files
                .into_iter()
                .map(|(path, full)| ArtifactEntry {
                    file_size: std::fs::metadata(&full).ok().map(|m| m.len()),
                    path,
                    is_dir: false,
                })
                .collect())
        })
        .await
    }

    async fn download_artifact(&self, run_id: &str, path: &str) -> Result<Vec<u8>, TrackingError> {
        let (s, r, p) = (self.clone(), run_id.to_string(), path.to_string());
        blocking(move || {
            let full = s.artifact_path(&r, &p)?;
            if !full.is_file() {
                return Err(TrackingError::ArtifactNotFound { run_id: r, path: p });
            }
            std::fs::read(&full).map_err(|e| TrackingError::io(&full, e))
        })
        .await
    }

    async fn create_model_version(
        &self,
        name: &str,
        source: &str,
        run_id: &str,
        tags: &[KeyValue],
    ) -> Result<ModelVersion, TrackingError> {
        let s = self.clone();
        let (n, src, r, t) = (
            name.to_string(),
            source.to_string(),
            run_id.to_string(),
            tags.to_vec(),
        );
        blocking(move || s.create_model_version_sync(&n, &src, &r, &t)).await
    }

    async fn model_versions(&self, name: &str) -> Result<Vec<ModelVersion>, TrackingError> {
        let (s, n) = (self.clone(), name.to_string());
        blocking(move || s.versions_sync(&n)).await
    }

    async fn set_model_alias(
        &self,
        name: &str,
        alias: &str,
        version: &str,
    ) -> Result<(), TrackingError> {
        let (s, n, a, v) = (
            self.clone(),
            name.to_string(),
            alias.to_string(),
            version.to_string(),
        );
        blocking(move || s.set_alias_sync(&n, &a, &v)).await
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    #[tokio::test]
    async fn a_run_round_trips_through_the_layout() {
        let dir = tempfile::tempdir().unwrap();
        let store = LocalStore::open(dir.path().join("mlruns")).unwrap();
        let exp = store.get_or_create_experiment("sentiment").await.unwrap();
        assert_eq!(
            store.get_or_create_experiment("sentiment").await.unwrap(),
            exp
        );
        let run = store
            .create_run(&exp, "miprov2", 1000, &[KeyValue::new("team", "nlp")])
            .await
            .unwrap();
        let point = |step, value| MetricPoint {
            key: "trial_score".into(),
            value,
            timestamp: 1000 + step,
            step,
        };
        store
            .log_batch(
                &run.run_id,
                &[point(1, 0.5), point(2, 0.75)],
                &[KeyValue::new("algorithm", "miprov2")],
                &[KeyValue::new("stage", "optimize")],
            )
            .await
            .unwrap();
        store
            .upload_artifact(&run, "model/artifact.json", b"{}".to_vec())
            .await
            .unwrap();
        store
            .update_run(&run.run_id, RunStatus::Finished, Some(2000))
            .await
            .unwrap();

        let back = store.get_run(&run.run_id).await.unwrap();
        assert_eq!(back.info.status, RunStatus::Finished);
        assert_eq!(back.info.end_time, Some(2000));
        assert_eq!(back.info.run_name, "miprov2");
        assert_eq!(back.metrics["trial_score"], 0.75);
        assert_eq!(back.params["algorithm"], "miprov2");
        assert_eq!(back.tags["team"], "nlp");
        let history = store
            .metric_history(&run.run_id, "trial_score")
            .await
            .unwrap();
        assert_eq!(history, vec![point(1, 0.5), point(2, 0.75)]);
        let files = store.list_artifacts(&run.run_id).await.unwrap();
        assert_eq!(files[0].path, "model/artifact.json");
        assert_eq!(
            store
                .download_artifact(&run.run_id, "model/artifact.json")
                .await
                .unwrap(),
            b"{}"
        );
        assert!(store
            .download_artifact(&run.run_id, "../meta.yaml")
            .await
            .is_err());

        let found = store
            .search_runs(&RunQuery {
                filter: Some("metrics.trial_score > 0.7 and params.algorithm = 'miprov2'".into()),
                ..RunQuery::default()
            })
            .await
            .unwrap();
        assert_eq!(found.len(), 1);

        let v1 = store
            .create_model_version(
                "sst2",
                "runs:/x/model",
                &run.run_id,
                &[KeyValue::new("promptopt.version", "1.0.0")],
            )
            .await
            .unwrap();
        let v2 = store
            .create_model_version("sst2", "runs:/y/model", &run.run_id, &[])
            .await
            .unwrap();
        assert_eq!((v1.version.as_str(), v2.version.as_str()), ("1", "2"));
        store
            .set_model_alias("sst2", "production", "1")
            .await
            .unwrap();
        let versions = store.model_versions("sst2").await.unwrap();
        assert_eq!(versions[0].aliases, ["production"]);
        assert_eq!(versions[0].tags["promptopt.version"], "1.0.0");
        assert!(store
            .set_model_alias("sst2", "production", "9")
            .await
            .is_err());
    }

    #[test]
    fn keys_cannot_escape_their_folder() {
        assert!(check_key("val_score").is_ok());
        assert!(check_key("stage/optimize seconds").is_ok());
        assert!(check_key("../x").is_err());
        assert!(check_key("a//b").is_err());
        assert!(check_key("").is_err());
    }
}
