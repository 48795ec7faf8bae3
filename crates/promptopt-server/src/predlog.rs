//! The prediction log: every prediction served is written to the server's database in the
//! background, in batches, so that serving never waits on a write; an outcome for a prediction
//! not yet written waits for the log to catch up.
//!
//! When the database cannot be written, a batch goes to a spool file on disk
//! (`PROMPTOPT_HOME/spool/predictions.jsonl`, bounded by `prediction_log.spool_max_bytes`) and
//! is written to the database once it answers again; what does not fit in the spool is dropped
//! and counted (`promptopt_prediction_log_dropped_total`). Predictions keep being served all
//! along.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use promptopt_experiments::{ExperimentStore, PredictionRecord};
use serde::Deserialize;
use serde_json::{Map, Value};
use sha2::{Digest, Sha256};
use tokio::io::AsyncWriteExt;
use tokio::sync::{mpsc, oneshot};

/// Predictions queued for writing before `record` waits (back-pressure).
const QUEUE: usize = 65_536;
/// Predictions written in one transaction at most.
const BATCH: usize = 512;
/// How often a non-empty spool is retried when nothing else happens.
const RETRY: Duration = Duration::from_secs(1);

/// How one model's predictions are logged (`models.NAME.log` in the server's configuration).
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct LogPolicy {
    /// The share of predictions logged (0 to 1). Predictions routed by an experiment are always
    /// logged: their outcomes decide it.
    pub sample_rate: f64,
    /// Input fields left out of the log.
    pub drop: Vec<String>,
    /// Input fields logged as `sha256:` and the hex digest of their text (still comparable,
    /// not readable).
    pub hash: Vec<String>,
}

impl Default for LogPolicy {
    fn default() -> Self {
        Self {
            sample_rate: 1.0,
            drop: Vec::new(),
            hash: Vec::new(),
        }
    }
}

impl LogPolicy {
    /// Checks the values.
    pub fn check(&self) -> Result<(), String> {
        if !(0.0..=1.0).contains(&self.sample_rate) {
            return Err(format!(
                "`sample_rate` must be between 0 and 1, not {}",
                self.sample_rate
            ));
        }
        if let Some(both) = self.drop.iter().find(|f| self.hash.contains(f)) {
            return Err(format!("`{both}` is both dropped and hashed"));
        }
        Ok(())
    }

    /// Whether to log this prediction (`draw` is uniform in [0, 1)).
    pub fn sampled(&self, draw: f64, in_experiment: bool) -> bool {
        in_experiment || draw < self.sample_rate
    }

    /// The inputs as logged: dropped fields removed, hashed fields digested.
    pub fn redact(&self, inputs: &Map<String, Value>) -> Map<String, Value> {
        let mut out = Map::with_capacity(inputs.len());
        for (key, value) in inputs {
            if self.drop.contains(key) {
                continue;
            }
            if self.hash.contains(key) {
                let text = match value {
                    Value::String(s) => s.clone(),
                    other => other.to_string(),
                };
                let digest = Sha256::digest(text.as_bytes());
                out.insert(
                    key.clone(),
                    Value::String(format!("sha256:{}", hex::encode(digest))),
                );
            } else {
                out.insert(key.clone(), value.clone());
            }
        }
        out
    }
}

/// The log's counters.
#[derive(Debug, Default)]
pub(crate) struct LogCounters {
    /// Predictions written to the database.
    pub(crate) written: AtomicU64,
    /// Predictions that went to the spool.
    pub(crate) spooled: AtomicU64,
    /// Predictions dropped because the spool was full.
    pub(crate) dropped: AtomicU64,
    /// Predictions left out by sampling.
    pub(crate) unsampled: AtomicU64,
    /// Bytes in the spool now.
    pub(crate) spool_bytes: AtomicU64,
}

impl LogCounters {
    /// The counters by name, for `/metrics` and status.
    pub(crate) fn snapshot(&self) -> BTreeMap<&'static str, u64> {
        BTreeMap::from([
            ("written", self.written.load(Ordering::Relaxed)),
            ("spooled", self.spooled.load(Ordering::Relaxed)),
            ("dropped", self.dropped.load(Ordering::Relaxed)),
            ("unsampled", self.unsampled.load(Ordering::Relaxed)),
            ("spool_bytes", self.spool_bytes.load(Ordering::Relaxed)),
        ])
    }
}

enum Message {
    Record(Box<PredictionRecord>),
    Flush(oneshot::Sender<()>),
}

/// The sending side of the log.
#[derive(Debug, Clone)]
pub(crate) struct PredictionLog {
    sender: mpsc::Sender<Message>,
    pub(crate) counters: Arc<LogCounters>,
}

impl std::fmt::Debug for Message {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Message::Record(r) => write!(f, "Record({})", r.prediction_id),
            Message::Flush(_) => f.write_str("Flush"),
        }
    }
}

impl PredictionLog {
    /// Starts the writer task over `store`, spooling to `spool_dir` (at most `spool_max`
    /// bytes) while the database cannot be written.
    pub(crate) fn start(store: ExperimentStore, spool_dir: PathBuf, spool_max: u64) -> Self {
        let (sender, receiver) = mpsc::channel(QUEUE);
        let counters = Arc::new(LogCounters::default());
        let spool = Spool {
            path: spool_dir.join("predictions.jsonl"),
            max: spool_max,
            counters: Arc::clone(&counters),
        };
        if let Ok(meta) = std::fs::metadata(&spool.path) {
            counters.spool_bytes.store(meta.len(), Ordering::Relaxed);
        }
        tokio::spawn(writer(store, receiver, spool));
        Self { sender, counters }
    }

    /// Queues a prediction for writing.
    pub(crate) async fn record(&self, record: PredictionRecord) {
        if self
            .sender
            .send(Message::Record(Box::new(record)))
            .await
            .is_err()
        {
            tracing::error!("the prediction log's writer has stopped; a prediction was not logged");
        }
    }

    /// Waits until everything queued so far is written (or spooled).
    pub(crate) async fn flush(&self) {
        let (tx, rx) = oneshot::channel();
        if self.sender.send(Message::Flush(tx)).await.is_ok() {
            let _ = rx.await;
        }
    }
}

/// The spool file.
struct Spool {
    path: PathBuf,
    max: u64,
    counters: Arc<LogCounters>,
}

impl Spool {
    fn bytes(&self) -> u64 {
        self.counters.spool_bytes.load(Ordering::Relaxed)
    }

    /// Appends what fits; counts the rest as dropped.
    async fn append(&self, batch: &[PredictionRecord]) {
        let mut text = String::new();
        let mut kept = 0u64;
        let mut size = self.bytes();
        for record in batch {
            let Ok(line) = serde_json::to_string(record) else {
                continue;
            };
            let add = line.len() as u64 + 1;
            if size + add > self.max {
                break;
            }
            size += add;
            kept += 1;
            text.push_str(&line);
            text.push('\n');
        }
        let lost = batch.len() as u64 - kept;
        if kept > 0 {
            if let Err(e) = append_file(&self.path, text.as_bytes()).await {
                tracing::error!(error = %e, path = %self.path.display(), predictions = batch.len(),
                    "cannot write the prediction log's spool; the predictions are dropped");
                self.counters
                    .dropped
                    .fetch_add(batch.len() as u64, Ordering::Relaxed);
                return;
            }
            self.counters.spool_bytes.store(size, Ordering::Relaxed);
            self.counters.spooled.fetch_add(kept, Ordering::Relaxed);
        }
        if lost > 0 {
            self.counters.dropped.fetch_add(lost, Ordering::Relaxed);
            tracing::error!(
                dropped = lost,
                max_bytes = self.max,
                "the prediction log's spool is full; predictions were dropped"
            );
        }
    }

    /// Writes the spool to the database and empties it; leaves it as it is when the database
    /// still refuses.
    async fn drain(&self, store: &ExperimentStore) {
        if self.bytes() == 0 {
            return;
        }
        let text = match tokio::fs::read_to_string(&self.path).await {
            Ok(text) => text,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                self.counters.spool_bytes.store(0, Ordering::Relaxed);
                return;
            }
            Err(e) => {
                tracing::warn!(error = %e, "cannot read the prediction log's spool");
                return;
            }
        };
        let records: Vec<PredictionRecord> = text
            .lines()
            .filter_map(|line| serde_json::from_str(line).ok())
            .collect();
        for chunk in records.chunks(BATCH) {
            if let Err(e) = store.record_predictions(chunk).await {
                tracing::debug!(error = %e, "the database still refuses the spooled predictions");
                return;
            }
        }
        if let Err(e) = tokio::fs::remove_file(&self.path).await {
            tracing::warn!(error = %e, "cannot remove the prediction log's spool");
            return;
        }
        self.counters.spool_bytes.store(0, Ordering::Relaxed);
        self.counters
            .written
            .fetch_add(records.len() as u64, Ordering::Relaxed);
        tracing::info!(
            predictions = records.len(),
            "the prediction log caught up with its spool"
        );
    }
}

async fn append_file(path: &Path, bytes: &[u8]) -> std::io::Result<()> {
    if let Some(parent) = path.parent() {
        tokio::fs::create_dir_all(parent).await?;
    }
    let mut file = tokio::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(path)
        .await?;
    file.write_all(bytes).await?;
    file.flush().await
}

async fn writer(store: ExperimentStore, mut receiver: mpsc::Receiver<Message>, spool: Spool) {
    let mut batch = Vec::with_capacity(BATCH);
    let mut waiting = Vec::new();
    loop {
        let first = match tokio::time::timeout(RETRY, receiver.recv()).await {
            Ok(Some(first)) => first,
            Ok(None) => return,
            Err(_) => {
                spool.drain(&store).await;
                continue;
            }
        };
        let mut next = Some(first);
        while let Some(message) = next.take() {
            match message {
                Message::Record(r) => batch.push(*r),
                Message::Flush(done) => waiting.push(done),
            }
            if batch.len() < BATCH {
                next = receiver.try_recv().ok();
            }
        }
        if !batch.is_empty() {
            // A spool waiting means the database was down: what is older goes first.
            spool.drain(&store).await;
            if spool.bytes() > 0 {
                spool.append(&batch).await;
            } else {
                match store.record_predictions(&batch).await {
                    Ok(()) => {
                        spool
                            .counters
                            .written
                            .fetch_add(batch.len() as u64, Ordering::Relaxed);
                    }
                    Err(e) => {
                        tracing::warn!(error = %e, predictions = batch.len(),
                            "cannot log predictions; they go to the spool until the database answers");
                        spool.append(&batch).await;
                    }
                }
            }
            batch.clear();
        } else if !waiting.is_empty() {
            spool.drain(&store).await;
        }
        for done in waiting.drain(..) {
            let _ = done.send(());
        }
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    fn record(i: usize) -> PredictionRecord {
        PredictionRecord {
            prediction_id: format!("pred-{i:016x}"),
            model_id: "t@1.0.0".into(),
            experiment_id: None,
            variant: None,
            unit_id: None,
            inputs: serde_json::json!({"text": format!("ticket {i}")}),
            outputs: serde_json::json!({"label": "bug"}),
            created_at: 1.0,
            latency_ms: Some(2.0),
            prompt_tokens: Some(10),
            completion_tokens: Some(1),
            cost_usd: None,
        }
    }

    /// The database refuses writes for a while (its table is moved away by another
    /// connection): predictions go to the spool, nothing is refused, and once the database
    /// answers again the spool is written and removed. A full spool drops and counts.
    #[tokio::test]
    async fn an_unwritable_database_spools_then_catches_up() {
        let dir = tempfile::tempdir().unwrap();
        let db = dir.path().join("server.sqlite");
        let store = ExperimentStore::open(&format!("sqlite:{}", db.display()))
            .await
            .unwrap();
        let spool_dir = dir.path().join("spool");
        let log = PredictionLog::start(store.clone(), spool_dir.clone(), 1 << 20);
        let other = sqlx::SqlitePool::connect(&format!("sqlite://{}", db.display()))
            .await
            .unwrap();
        sqlx::query("ALTER TABLE predictions RENAME TO predictions_away")
            .execute(&other)
            .await
            .unwrap();
        for i in 0..10 {
            log.record(record(i)).await;
        }
        log.flush().await;
        let counts = log.counters.snapshot();
        assert_eq!(counts["spooled"], 10, "{counts:?}");
        assert_eq!(counts["dropped"], 0);
        assert!(spool_dir.join("predictions.jsonl").exists());
        sqlx::query("ALTER TABLE predictions_away RENAME TO predictions")
            .execute(&other)
            .await
            .unwrap();
        log.record(record(10)).await;
        log.flush().await;
        let counts = log.counters.snapshot();
        assert_eq!(counts["written"], 11, "{counts:?}");
        assert_eq!(counts["spool_bytes"], 0);
        assert!(!spool_dir.join("predictions.jsonl").exists());
        assert!(store
            .prediction("pred-0000000000000003")
            .await
            .unwrap()
            .is_some());

        // A spool of 600 bytes holds two records or so; the rest is dropped and counted.
        let small = PredictionLog::start(store.clone(), dir.path().join("small"), 600);
        sqlx::query("ALTER TABLE predictions RENAME TO predictions_away")
            .execute(&other)
            .await
            .unwrap();
        for i in 100..110 {
            small.record(record(i)).await;
        }
        small.flush().await;
        let counts = small.counters.snapshot();
        assert_eq!(counts["spooled"] + counts["dropped"], 10, "{counts:?}");
        assert!(counts["dropped"] >= 7, "{counts:?}");
        assert!(counts["spool_bytes"] <= 600);
    }

    #[test]
    fn redaction_drops_and_hashes_named_fields() {
        let policy = LogPolicy {
            drop: vec!["email".into()],
            hash: vec!["customer".into()],
            ..LogPolicy::default()
        };
        policy.check().unwrap();
        let mut inputs = Map::new();
        inputs.insert("text".into(), "refund please".into());
        inputs.insert("email".into(), "a@b.c".into());
        inputs.insert("customer".into(), "c-42".into());
        let out = policy.redact(&inputs);
        assert_eq!(out.get("text").unwrap(), "refund please");
        assert!(!out.contains_key("email"));
        let hashed = out.get("customer").unwrap().as_str().unwrap();
        assert_eq!(hashed.len(), "sha256:".len() + 64);
        assert!(!hashed.contains("c-42"));
        assert_eq!(policy.redact(&inputs), out, "hashing is stable");
    }

    #[test]
    fn sampling_keeps_experiment_traffic_and_bad_policies_are_named() {
        let policy = LogPolicy {
            sample_rate: 0.25,
            ..LogPolicy::default()
        };
        assert!(policy.sampled(0.1, false));
        assert!(!policy.sampled(0.3, false));
        assert!(policy.sampled(0.3, true));
        let bad = LogPolicy {
            sample_rate: 1.5,
            ..LogPolicy::default()
        };
        assert!(bad.check().unwrap_err().contains("`sample_rate`"));
        let both = LogPolicy {
            drop: vec!["x".into()],
            hash: vec!["x".into()],
            ..LogPolicy::default()
        };
        assert!(both.check().unwrap_err().contains("`x`"));
    }
}
