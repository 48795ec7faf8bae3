//! The tracker: records one optimization run while it happens, without slowing it.
//!
//! Events go through a bounded queue to a writer task that batches them; when the queue is
//! full, events spill to a file that the writer drains, so none is dropped. Every run is written
//! to the embedded store (its journal); with a server configured it is mirrored there live, and
//! when the server is down the run stays complete in the embedded store, ready for
//! `promptopt runs sync`.

use std::io::Write;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use serde_json::json;
use tokio::sync::{mpsc, oneshot};

use promptopt_core::events::{Event, EventSink};
use promptopt_optimize::{plot::trajectory_svg, OptimizationRequest, OptimizationResult};
use promptopt_registry::Registry;

use crate::client::MlflowClient;
use crate::local::LocalStore;
use crate::record::{finish_records, split_long, start_params, EventRecorder};
use crate::sync::sync_run;
use crate::{now_ms, KeyValue, MetricPoint, RunInfo, RunStatus, TrackingError, TrackingStore};

/// Where and how runs are tracked.
#[derive(Debug, Clone)]
pub struct TrackingConfig {
    /// A tracking server's URL; `None` records in the embedded store only.
    pub server: Option<String>,
    /// The embedded store's folder (MLflow's file layout).
    pub local_root: PathBuf,
    /// The experiment (default: the request's `experiment`, else the model's name).
    pub experiment: Option<String>,
    /// Events queued before they spill to disk.
    pub queue_capacity: usize,
    /// How often queued metrics are written.
    pub flush_interval: Duration,
}

/// Whether `DISABLE_MLFLOW` turns tracking off (`1`, `true`, `yes`, `on`).
pub fn disabled_by_env() -> bool {
    std::env::var("DISABLE_MLFLOW").is_ok_and(|v| {
        matches!(
            v.trim().to_ascii_lowercase().as_str(),
            "1" | "true" | "yes" | "on"
        )
    })
}

impl TrackingConfig {
    /// Tracking into `uri` (a server URL, `file:PATH`, or `None` for `home/mlruns`).
    pub fn new(uri: Option<&str>, home: &Path) -> Result<Self, TrackingError> {
        let mut config = Self {
            server: None,
            local_root: home.join("mlruns"),
            experiment: None,
            queue_capacity: 4096,
            flush_interval: Duration::from_millis(500),
        };
        match uri.map(str::trim).filter(|u| !u.is_empty()) {
            None => {}
            Some(u) if u.starts_with("http://") || u.starts_with("https://") => {
                MlflowClient::new(u)?;
                config.server = Some(u.to_string());
            }
            Some(u) if u.starts_with("file:") || !u.contains("://") => {
                config.local_root =
                    PathBuf::from(u.trim_start_matches("file://").trim_start_matches("file:"));
            }
            Some(u) => {
                return Err(TrackingError::InvalidUri {
                    uri: crate::client::redact(u),
                    message: "expected `http://host:port`, `https://...` or `file:PATH`".into(),
                })
            }
        }
        Ok(config)
    }

    /// How a run of `request` is tracked: `None` when `DISABLE_MLFLOW` or `tracking: false`
    /// turn it off. The URI is `uri` when given, else `MLFLOW_TRACKING_URI`, else the request's
    /// `tracking_uri`, else the embedded store under `home`.
    pub fn for_request(
        request: &OptimizationRequest,
        home: &Path,
        uri: Option<&str>,
    ) -> Result<Option<Self>, TrackingError> {
        if disabled_by_env() || request.tracking == Some(false) {
            return Ok(None);
        }
        let env = std::env::var("MLFLOW_TRACKING_URI").ok();
        let uri = uri
            .or(env.as_deref().filter(|u| !u.trim().is_empty()))
            .or(request.tracking_uri.as_deref());
        let mut config = Self::new(uri, home)?;
        config.experiment = request.experiment.clone();
        Ok(Some(config))
    }
}

enum Message {
    Event(i64, Event),
    Finish(oneshot::Sender<Writer>),
}

/// Events that did not fit in the queue, appended to a file the writer drains.
struct Spill {
    path: PathBuf,
    lock: Mutex<()>,
}

impl Spill {
    fn push(&self, timestamp: i64, event: &Event) -> std::io::Result<()> {
        let line = serde_json::to_string(&json!({"ts": timestamp, "event": event}))?;
        let _guard = self.lock.lock().unwrap_or_else(|p| p.into_inner());
        if let Some(dir) = self.path.parent() {
            std::fs::create_dir_all(dir)?;
        }
        let mut file = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(&self.path)?;
        file.write_all(format!("{line}\n").as_bytes())
    }

    /// Takes the spilled events (the file is emptied).
    fn take(&self) -> Vec<(i64, Event)> {
        let text = {
            let _guard = self.lock.lock().unwrap_or_else(|p| p.into_inner());
            let text = std::fs::read_to_string(&self.path).unwrap_or_default();
            let _ = std::fs::remove_file(&self.path);
            text
        };
        text.lines()
            .filter_map(|line| {
                let v: serde_json::Value = serde_json::from_str(line).ok()?;
                Some((
                    v["ts"].as_i64()?,
                    serde_json::from_value(v["event"].clone()).ok()?,
                ))
            })
            .collect()
    }
}

/// The event subscriber of a [`Tracker`]: never blocks, never drops.
struct TrackingSink {
    sender: mpsc::Sender<Message>,
    spill: Arc<Spill>,
    spilled: Arc<std::sync::atomic::AtomicU64>,
}

impl EventSink for TrackingSink {
    fn emit(&self, event: &Event) {
        let timestamp = now_ms();
        match self
            .sender
            .try_send(Message::Event(timestamp, event.clone()))
        {
            Ok(()) => {}
            Err(mpsc::error::TrySendError::Full(_)) => {
                if self.spill.push(timestamp, event).is_ok() {
                    self.spilled
                        .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                }
            }
            // The run is finished; nothing records events any more.
            Err(mpsc::error::TrySendError::Closed(_)) => {}
        }
    }
}

/// The server side of a tracked run.
struct Remote {
    store: Arc<dyn TrackingStore>,
    run: Option<RunInfo>,
    down: bool,
}

/// The writer task's state.
struct Writer {
    local: LocalStore,
    local_run: Option<RunInfo>,
    remote: Option<Remote>,
    recorder: EventRecorder,
    pending: Vec<MetricPoint>,
    warnings: Vec<String>,
    spill: Arc<Spill>,
}

impl Writer {
    fn warn_once(&mut self, message: String) {
        if !self.warnings.contains(&message) {
            self.warnings.push(message);
        }
    }

    fn remote_failed(&mut self, error: &TrackingError) {
        if let Some(r) = &mut self.remote {
            if !r.down {
                r.down = true;
                let location = r.store.location();
                self.warn_once(format!(
                    "MLflow tracking at `{location}` failed ({error}); the run goes on in the local store and is sent when the server answers again (`promptopt runs sync --to {location}`)"
                ));
            }
        }
    }

    async fn write(&mut self, metrics: &[MetricPoint], params: &[KeyValue], tags: &[KeyValue]) {
        if metrics.is_empty() && params.is_empty() && tags.is_empty() {
            return;
        }
        if let Some(run) = &self.local_run {
            if let Err(e) = self
                .local
                .log_batch(&run.run_id, metrics, params, tags)
                .await
            {
                self.warn_once(format!("Cannot write the run to the local store: {e}"));
            }
        }
        let Some(remote) = &self.remote else { return };
        let (Some(run), false) = (remote.run.clone(), remote.down) else {
            return;
        };
        let store = remote.store.clone();
        match store.log_batch(&run.run_id, metrics, params, tags).await {
            Ok(()) => {}
            Err(e) if e.is_rejected() => {
                // Find the records MLflow refuses, and keep the rest.
                for m in metrics {
                    if let Err(e) = store
                        .log_batch(&run.run_id, std::slice::from_ref(m), &[], &[])
                        .await
                    {
                        self.warn_once(format!("MLflow refused metric `{}`: {e}", m.key));
                    }
                }
                for (what, items, is_param) in [("param", params, true), ("tag", tags, false)] {
                    for kv in items {
                        let one = std::slice::from_ref(kv);
                        let (p, t): (&[KeyValue], &[KeyValue]) =
                            if is_param { (one, &[]) } else { (&[], one) };
                        if let Err(e) = store.log_batch(&run.run_id, &[], p, t).await {
                            self.warn_once(format!("MLflow refused {what} `{}`: {e}", kv.key));
                        }
                    }
                }
            }
            Err(e) => self.remote_failed(&e),
        }
    }

    async fn flush(&mut self) {
        for (ts, event) in self.spill.take() {
            let points = self.recorder.record(ts, &event);
            self.pending.extend(points);
        }
        let metrics = std::mem::take(&mut self.pending);
        self.write(&metrics, &[], &[]).await;
    }

    async fn run(mut self, mut receiver: mpsc::Receiver<Message>, interval: Duration) {
        loop {
            match tokio::time::timeout(interval, receiver.recv()).await {
                Ok(Some(Message::Event(ts, event))) => {
                    let points = self.recorder.record(ts, &event);
                    self.pending.extend(points);
                    if self.pending.len() >= 1000 {
                        self.flush().await;
                    }
                }
                Ok(Some(Message::Finish(reply))) => {
                    // Whatever is still queued was emitted before the run finished.
                    while let Ok(Message::Event(ts, event)) = receiver.try_recv() {
                        let points = self.recorder.record(ts, &event);
                        self.pending.extend(points);
                    }
                    self.flush().await;
                    let _ = reply.send(self);
                    return;
                }
                Ok(None) => {
                    self.flush().await;
                    return;
                }
                Err(_) => self.flush().await,
            }
        }
    }
}

/// Records one optimization run: start it before the run, subscribe [`Tracker::sink`] to the
/// pipeline's events, and [`Tracker::finish`] it with the result.
pub struct Tracker {
    sender: mpsc::Sender<Message>,
    spill: Arc<Spill>,
    spilled: Arc<std::sync::atomic::AtomicU64>,
    experiment: String,
}

impl Tracker {
    /// Opens the stores, creates the run and records the request's parameters. Fails only when
    /// the embedded store cannot be written; a server that does not answer becomes a warning of
    /// the result.
    pub async fn start(
        config: TrackingConfig,
        request: &OptimizationRequest,
    ) -> Result<Tracker, TrackingError> {
        let experiment = config
            .experiment
            .clone()
            .or_else(|| request.model_name().map(str::to_string))
            .unwrap_or_else(|| "promptopt".into());
        let run_name = format!(
            "{}-{}",
            request.model_name().unwrap_or("model"),
            request.algorithm.as_str()
        );
        let local = LocalStore::open(&config.local_root)?;
        let started = now_ms();
        let tags = vec![
            KeyValue::new("promptopt.version", env!("CARGO_PKG_VERSION")),
            KeyValue::new("mlflow.source.name", "promptopt"),
            KeyValue::new("mlflow.source.type", "LOCAL"),
            KeyValue::new("mlflow.user", crate::local::user()),
        ];
        let exp_id = local.get_or_create_experiment(&experiment).await?;
        let local_run = local.create_run(&exp_id, &run_name, started, &tags).await?;
        let mut warnings = Vec::new();
        let remote = match &config.server {
            None => None,
            Some(uri) => {
                let store: Arc<dyn TrackingStore> = Arc::new(MlflowClient::new(uri)?);
                let mut remote_tags = tags.clone();
                remote_tags.push(KeyValue::new("promptopt.local_run_id", &local_run.run_id));
                let created = async {
                    let id = store.get_or_create_experiment(&experiment).await?;
                    store
                        .create_run(&id, &run_name, started, &remote_tags)
                        .await
                }
                .await;
                match created {
                    Ok(run) => Some(Remote {
                        store,
                        run: Some(run),
                        down: false,
                    }),
                    Err(e) => {
                        let location = store.location();
                        warnings.push(format!(
                            "MLflow tracking at `{location}` failed ({e}); the run goes on in the local store and is sent when the server answers again (`promptopt runs sync --to {location}`)"
                        ));
                        Some(Remote {
                            store,
                            run: None,
                            down: true,
                        })
                    }
                }
            }
        };
        let spill = Arc::new(Spill {
            path: config
                .local_root
                .join(".spool")
                .join(format!("{}.jsonl", local_run.run_id)),
            lock: Mutex::new(()),
        });
        let mut writer = Writer {
            local,
            local_run: Some(local_run),
            remote,
            recorder: EventRecorder::default(),
            pending: Vec::new(),
            warnings,
            spill: spill.clone(),
        };
        let mut params = start_params(request);
        let (long, long_warnings) = split_long(&mut params, &mut []);
        writer.warnings.extend(long_warnings);
        writer.write(&[], &params, &[]).await;
        for (path, text) in long {
            upload(&mut writer, &path, text.into_bytes()).await;
        }
        let (sender, receiver) = mpsc::channel(config.queue_capacity.max(1));
        tokio::spawn(writer.run(receiver, config.flush_interval));
        Ok(Tracker {
            sender,
            spill,
            spilled: Arc::default(),
            experiment,
        })
    }

    /// The event subscriber that feeds this run.
    pub fn sink(&self) -> Arc<dyn EventSink> {
        Arc::new(TrackingSink {
            sender: self.sender.clone(),
            spill: self.spill.clone(),
            spilled: self.spilled.clone(),
        })
    }

    /// Events that went through the spill file because the queue was full.
    pub fn spilled(&self) -> u64 {
        self.spilled.load(std::sync::atomic::Ordering::Relaxed)
    }

    /// The experiment the run is recorded in.
    pub fn experiment(&self) -> &str {
        &self.experiment
    }

    /// Records the result (final metrics, tags, artifacts, the saved model as a registered model
    /// version with its aliases), ends the run, and fills `result.mlflow_run_id`; tracking
    /// problems become warnings of the result.
    pub async fn finish(
        self,
        request: &OptimizationRequest,
        result: &mut OptimizationResult,
        registry: &Registry,
    ) {
        let (reply, wait) = oneshot::channel();
        if self.sender.send(Message::Finish(reply)).await.is_err() {
            result
                .warnings
                .push("Tracking stopped during the run; its record is incomplete".into());
            return;
        }
        let Ok(mut writer) = wait.await else {
            result
                .warnings
                .push("Tracking stopped during the run; its record is incomplete".into());
            return;
        };
        let (mut params, metrics, mut tags) = finish_records(result, now_ms());
        let (long, long_warnings) = split_long(&mut params, &mut tags);
        writer.warnings.extend(long_warnings);
        tags.push(KeyValue::new(
            "mlflow.loggedArtifacts",
            r#"[{"path": "candidates.json", "type": "table"}]"#,
        ));
        writer.write(&metrics, &params, &tags).await;

        let mut artifacts: Vec<(String, Vec<u8>)> =
            long.into_iter().map(|(p, t)| (p, t.into_bytes())).collect();
        let pretty = |v: &dyn erased::Json| v.pretty();
        artifacts.push(("request.json".into(), pretty(request)));
        artifacts.push(("result.json".into(), pretty(&*result)));
        if let Some(prompt) = &result.optimized_prompt {
            artifacts.push(("optimized_prompt.txt".into(), prompt.clone().into_bytes()));
        }
        let title = format!(
            "{} — {} ({})",
            request.model_name().unwrap_or("model"),
            result.algorithm_used,
            result.optimized_metrics.metric
        );
        artifacts.push((
            "trajectory.svg".into(),
            trajectory_svg(&title, &result.trajectory).into_bytes(),
        ));
        let mut jsonl = String::new();
        for row in &result.validation_results {
            if let Ok(line) = serde_json::to_string(row) {
                jsonl.push_str(&line);
                jsonl.push('\n');
            }
        }
        artifacts.push(("validation_results.jsonl".into(), jsonl.into_bytes()));
        artifacts.push((
            "candidates.json".into(),
            pretty(&writer.recorder.candidates_table()),
        ));
        let model = result
            .model_id
            .as_deref()
            .and_then(|id| registry.load_ref(id).ok());
        if let Some(m) = &model {
            if let Ok(text) = m.to_json() {
                artifacts.push(("model/model.json".into(), text.into_bytes()));
            }
        }
        for (path, bytes) in artifacts {
            upload(&mut writer, &path, bytes).await;
        }
        if let Some(m) = &model {
            let aliases: Vec<String> = registry
                .aliases(&m.name)
                .unwrap_or_default()
                .into_iter()
                .filter(|(_, v)| *v == m.version)
                .map(|(a, _)| a)
                .collect();
            let tags = vec![
                KeyValue::new("promptopt.model_id", m.id()),
                KeyValue::new("promptopt.version", m.version.to_string()),
            ];
            register(&mut writer, &m.name, &tags, &aliases).await;
        }
        let end = now_ms();
        if let Some(run) = &writer.local_run {
            if let Err(e) = writer
                .local
                .update_run(&run.run_id, RunStatus::Finished, Some(end))
                .await
            {
                writer.warn_once(format!("Cannot write the run to the local store: {e}"));
            }
        }
        if let Some(Remote {
            store,
            run: Some(run),
            down: false,
        }) = &writer.remote
        {
            if let Err(e) = store
                .update_run(&run.run_id, RunStatus::Finished, Some(end))
                .await
            {
                writer.remote_failed(&e);
            }
        }
        // A server that failed during the run gets the whole run now, if it answers again.
        let local_id = writer.local_run.as_ref().map(|r| r.run_id.clone());
        let mut run_id = local_id.clone();
        if let (Some(remote), Some(local_id)) = (&writer.remote, &local_id) {
            if remote.down {
                let location = remote.store.location();
                match sync_run(&writer.local, remote.store.as_ref(), local_id).await {
                    Ok(report) => {
                        writer.warnings.retain(|w| !w.contains(&location));
                        writer.warnings.push(format!(
                            "MLflow at `{location}` failed during the run; the whole run was sent when it finished"
                        ));
                        run_id = Some(report.remote_run_id);
                    }
                    Err(e) => {
                        let what = if e.is_unreachable() {
                            "is unreachable"
                        } else {
                            "refused the run"
                        };
                        let _ = writer
                            .local
                            .log_batch(
                                local_id,
                                &[],
                                &[],
                                &[KeyValue::new("promptopt.sync_pending", &location)],
                            )
                            .await;
                        writer.warnings.retain(|w| !w.contains(&location));
                        writer.warnings.push(format!(
                            "MLflow at `{location}` {what} ({e}); the run is kept in the local store `{}`: send it with `promptopt runs sync --to {location}`",
                            writer.local.root().display()
                        ));
                    }
                }
            } else if let Some(run) = &remote.run {
                run_id = Some(run.run_id.clone());
            }
        }
        result.mlflow_run_id = run_id;
        result.warnings.extend(writer.warnings);
    }
}

/// Serializes values as indented JSON bytes.
mod erased {
    pub trait Json {
        fn pretty(&self) -> Vec<u8>;
    }
    impl<T: serde::Serialize> Json for T {
        fn pretty(&self) -> Vec<u8> {
            serde_json::to_vec_pretty(self).unwrap_or_default()
        }
    }
}

async fn upload(writer: &mut Writer, path: &str, bytes: Vec<u8>) {
    if let Some(run) = writer.local_run.clone() {
        if let Err(e) = writer
            .local
            .upload_artifact(&run, path, bytes.clone())
            .await
        {
            writer.warn_once(format!("Cannot write artifact `{path}` locally: {e}"));
        }
    }
    let Some(Remote {
        store,
        run: Some(run),
        down: false,
    }) = &writer.remote
    else {
        return;
    };
    let (store, run) = (store.clone(), run.clone());
    match store.upload_artifact(&run, path, bytes).await {
        Ok(()) => {}
        Err(e) if e.is_rejected() || matches!(e, TrackingError::ArtifactsNotProxied(_)) => {
            writer.warn_once(format!("MLflow refused artifact `{path}`: {e}"));
        }
        Err(e) => writer.remote_failed(&e),
    }
}

/// Registers the saved model as a version (source: the run's `model` folder) and points the
/// registry's aliases of that version at it, in both stores.
async fn register(writer: &mut Writer, name: &str, tags: &[KeyValue], aliases: &[String]) {
    if let Some(run) = writer.local_run.clone() {
        let source = format!("runs:/{}/model", run.run_id);
        let done = async {
            let v = writer
                .local
                .create_model_version(name, &source, &run.run_id, tags)
                .await?;
            for alias in aliases {
                writer
                    .local
                    .set_model_alias(name, alias, &v.version)
                    .await?;
            }
            Ok::<_, TrackingError>(())
        }
        .await;
        if let Err(e) = done {
            writer.warn_once(format!("Cannot register model `{name}` locally: {e}"));
        }
    }
    let Some(Remote {
        store,
        run: Some(run),
        down: false,
    }) = &writer.remote
    else {
        return;
    };
    let (store, run) = (store.clone(), run.clone());
    let source = format!("runs:/{}/model", run.run_id);
    let done = async {
        let v = store
            .create_model_version(name, &source, &run.run_id, tags)
            .await?;
        for alias in aliases {
            store.set_model_alias(name, alias, &v.version).await?;
        }
        Ok::<_, TrackingError>(())
    }
    .await;
    match done {
        Ok(()) => {}
        Err(e) if e.is_rejected() => {
            writer.warn_once(format!("MLflow refused model version of `{name}`: {e}"))
        }
        Err(e) => writer.remote_failed(&e),
    }
}
