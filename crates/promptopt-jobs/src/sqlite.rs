//! The embedded queue: one SQLite file (WAL mode) shared by the worker processes of one machine.
//!
//! Tables: `jobs` (one row per job: the record as JSON in `record`, with `state`, `priority`,
//! `token`, `lease_until`, `not_before` and `finishing` beside it for the queries and the
//! compare-and-set updates; `spec` and `result` as JSON), `checkpoints` (`job_id`, `key`,
//! `value`) and `events` (`job_id`, `n`, `event`). Every change runs in an `IMMEDIATE`
//! transaction, so claims from several processes never take the same job; SQLite's busy timeout
//! makes a process wait for another's transaction instead of failing. The blocking SQLite calls
//! run on tokio's blocking threads.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use async_trait::async_trait;
use rusqlite::{params, Connection, OptionalExtension, TransactionBehavior};

use crate::transition::{new_lease_token, unreadable};
use crate::{
    new_job_id, now, Claim, Heartbeat, JobError, JobQueue, JobRecord, JobSpec, JobState, Outcome,
    Priority, Progress,
};

const SCHEMA: &str = "
CREATE TABLE IF NOT EXISTS jobs (
    job_id TEXT PRIMARY KEY,
    priority INTEGER NOT NULL,
    state TEXT NOT NULL,
    record TEXT NOT NULL,
    spec TEXT NOT NULL,
    result TEXT,
    token TEXT,
    lease_until REAL,
    not_before REAL,
    finishing INTEGER NOT NULL DEFAULT 0,
    created_at REAL NOT NULL
);
CREATE INDEX IF NOT EXISTS jobs_ready ON jobs (state, priority, created_at);
CREATE TABLE IF NOT EXISTS checkpoints (
    job_id TEXT NOT NULL,
    key TEXT NOT NULL,
    value TEXT NOT NULL,
    PRIMARY KEY (job_id, key)
);
CREATE TABLE IF NOT EXISTS events (
    job_id TEXT NOT NULL,
    n INTEGER NOT NULL,
    event TEXT NOT NULL,
    PRIMARY KEY (job_id, n)
);
";

/// Events kept per job; older ones are dropped.
const MAX_EVENTS: i64 = 10_000;

/// The embedded job queue (see the module documentation).
#[derive(Clone)]
pub struct SqliteQueue {
    path: PathBuf,
    conn: Arc<Mutex<Connection>>,
}

impl std::fmt::Debug for SqliteQueue {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SqliteQueue")
            .field("path", &self.path)
            .finish()
    }
}

fn priority_rank(p: Priority) -> i64 {
    match p {
        Priority::High => 0,
        Priority::Normal => 1,
        Priority::Low => 2,
    }
}

impl SqliteQueue {
    /// Opens (creating if needed) the queue file at `path`.
    pub fn open(path: impl AsRef<Path>) -> Result<Self, JobError> {
        let path = path.as_ref().to_path_buf();
        if let Some(parent) = path.parent().filter(|p| !p.as_os_str().is_empty()) {
            std::fs::create_dir_all(parent).map_err(|source| JobError::Io {
                path: parent.to_path_buf(),
                source,
            })?;
        }
        let fail = |e: rusqlite::Error| JobError::Sqlite {
            path: path.clone(),
            message: e.to_string(),
        };
        let conn = Connection::open(&path).map_err(fail)?;
        conn.busy_timeout(Duration::from_secs(30)).map_err(fail)?;
        conn.pragma_update(None, "journal_mode", "WAL")
            .map_err(fail)?;
        conn.pragma_update(None, "synchronous", "NORMAL")
            .map_err(fail)?;
        conn.execute_batch(SCHEMA).map_err(fail)?;
        Ok(Self {
            path,
            conn: Arc::new(Mutex::new(conn)),
        })
    }

    /// The database file.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Runs `f` with the connection on a blocking thread.
    async fn with<T: Send + 'static>(
        &self,
        f: impl FnOnce(&mut Connection) -> Result<T, Failure> + Send + 'static,
    ) -> Result<T, JobError> {
        let conn = Arc::clone(&self.conn);
        let path = self.path.clone();
        let out = tokio::task::spawn_blocking(move || {
            let mut guard = conn
                .lock()
                .unwrap_or_else(std::sync::PoisonError::into_inner);
            f(&mut guard)
        })
        .await
        .map_err(|e| JobError::Sqlite {
            path: path.clone(),
            message: format!("The database task failed: {e}"),
        })?;
        out.map_err(|failure| match failure {
            Failure::Sql(e) => JobError::Sqlite {
                path,
                message: e.to_string(),
            },
            Failure::Job(e) => e,
        })
    }
}

/// An error inside a database task: SQLite's, or one of ours.
enum Failure {
    Sql(rusqlite::Error),
    Job(JobError),
}

impl From<rusqlite::Error> for Failure {
    fn from(e: rusqlite::Error) -> Self {
        Self::Sql(e)
    }
}

impl From<JobError> for Failure {
    fn from(e: JobError) -> Self {
        Self::Job(e)
    }
}

fn to_json<T: serde::Serialize>(value: &T) -> Result<String, Failure> {
    serde_json::to_string(value).map_err(|e| {
        Failure::Job(JobError::Invalid {
            field: "record".into(),
            message: e.to_string(),
        })
    })
}

fn parse_record(job_id: &str, text: &str) -> Result<JobRecord, JobError> {
    serde_json::from_str(text).map_err(|e| JobError::Corrupt {
        job_id: job_id.to_string(),
        message: e.to_string(),
    })
}

/// Writes `record` (and its `state`) for its job.
fn store(tx: &rusqlite::Transaction<'_>, record: &JobRecord) -> Result<(), Failure> {
    tx.execute(
        "UPDATE jobs SET record = ?2, state = ?3, not_before = ?4 WHERE job_id = ?1",
        params![
            record.job_id,
            to_json(record)?,
            record.state.as_str(),
            record.not_before
        ],
    )?;
    Ok(())
}

/// A job whose record does not parse: `dead`, with the reason, in a record we can read.
fn bury(tx: &rusqlite::Transaction<'_>, job_id: &str, reason: &str) -> Result<(), Failure> {
    let (priority, created_at): (i64, f64) = tx.query_row(
        "SELECT priority, created_at FROM jobs WHERE job_id = ?1",
        params![job_id],
        |row| Ok((row.get(0)?, row.get(1)?)),
    )?;
    let priority = match priority {
        0 => Priority::High,
        2 => Priority::Low,
        _ => Priority::Normal,
    };
    let record = unreadable(job_id, priority, created_at, reason, now());
    store(tx, &record)?;
    tx.execute(
        "UPDATE jobs SET token = NULL, lease_until = NULL WHERE job_id = ?1",
        params![job_id],
    )?;
    Ok(())
}

fn load(conn: &Connection, job_id: &str) -> Result<JobRecord, Failure> {
    let text: Option<String> = conn
        .query_row(
            "SELECT record FROM jobs WHERE job_id = ?1",
            params![job_id],
            |row| row.get(0),
        )
        .optional()?;
    let text = text.ok_or_else(|| JobError::NotFound(job_id.to_string()))?;
    Ok(parse_record(job_id, &text)?)
}

fn claim_in(
    conn: &mut Connection,
    worker: &str,
    priorities: &[Priority],
    lease: Duration,
) -> Result<Option<Claim>, Failure> {
    let tx = conn.transaction_with_behavior(TransactionBehavior::Immediate)?;
    let t = now();
    let mut found = None;
    'outer: for &priority in priorities {
        loop {
            // A running job whose worker stopped renewing its lease comes first: it is older.
            let expired: Option<(String, String, String)> = tx
                .query_row(
                    "SELECT job_id, record, spec FROM jobs WHERE state = 'running' AND priority = ?1
                     AND lease_until < ?2 ORDER BY created_at LIMIT 1",
                    params![priority_rank(priority), t],
                    |row| Ok((row.get(0)?, row.get(1)?, row.get(2)?)),
                )
                .optional()?;
            let (row, reclaimed) = match expired {
                Some(row) => (row, true),
                None => {
                    let queued: Option<(String, String, String)> = tx
                        .query_row(
                            "SELECT job_id, record, spec FROM jobs WHERE state = 'queued'
                             AND priority = ?1 AND (not_before IS NULL OR not_before <= ?2)
                             ORDER BY created_at, rowid LIMIT 1",
                            params![priority_rank(priority), t],
                            |row| Ok((row.get(0)?, row.get(1)?, row.get(2)?)),
                        )
                        .optional()?;
                    match queued {
                        Some(row) => (row, false),
                        None => continue 'outer,
                    }
                }
            };
            let (job_id, record_text, spec_text) = row;
            let parsed = parse_record(&job_id, &record_text).and_then(|r| {
                serde_json::from_str::<JobSpec>(&spec_text)
                    .map(|s| (r, s))
                    .map_err(|e| JobError::Corrupt {
                        job_id: job_id.clone(),
                        message: format!("its request does not parse: {e}"),
                    })
            });
            let (mut record, spec) = match parsed {
                Ok(pair) => pair,
                Err(e) => {
                    let reason = match e {
                        JobError::Corrupt { message, .. } => message,
                        other => other.to_string(),
                    };
                    bury(&tx, &job_id, &reason)?;
                    continue;
                }
            };
            if !record.begin_attempt(worker, reclaimed, t) {
                store(&tx, &record)?;
                tx.execute(
                    "UPDATE jobs SET token = NULL, lease_until = NULL WHERE job_id = ?1",
                    params![job_id],
                )?;
                continue;
            }
            let token = new_lease_token();
            store(&tx, &record)?;
            tx.execute(
                "UPDATE jobs SET token = ?2, lease_until = ?3, finishing = 0 WHERE job_id = ?1",
                params![job_id, token, t + lease.as_secs_f64()],
            )?;
            found = Some(Claim {
                job_id,
                token,
                resumed: reclaimed || record.attempts > 1,
                record,
                spec,
                delivery: String::new(),
            });
            break 'outer;
        }
    }
    tx.commit()?;
    Ok(found)
}

/// The record of `claim`'s job when the claim still holds its lease.
fn held(tx: &rusqlite::Transaction<'_>, claim: &Claim) -> Result<Option<JobRecord>, Failure> {
    let row: Option<(Option<String>, String, String)> = tx
        .query_row(
            "SELECT token, state, record FROM jobs WHERE job_id = ?1",
            params![claim.job_id],
            |row| Ok((row.get(0)?, row.get(1)?, row.get(2)?)),
        )
        .optional()?;
    match row {
        Some((Some(token), state, record)) if token == claim.token && state == "running" => {
            Ok(Some(parse_record(&claim.job_id, &record)?))
        }
        _ => Ok(None),
    }
}

#[async_trait]
impl JobQueue for SqliteQueue {
    fn url(&self) -> String {
        format!("sqlite:{}", self.path.display())
    }

    async fn submit(&self, spec: &JobSpec) -> Result<JobRecord, JobError> {
        spec.validate()?;
        let spec = spec.clone();
        self.with(move |conn| {
            let record = JobRecord::new(new_job_id(), &spec, now());
            conn.execute(
                "INSERT INTO jobs (job_id, priority, state, record, spec, created_at)
                 VALUES (?1, ?2, ?3, ?4, ?5, ?6)",
                params![
                    record.job_id,
                    priority_rank(record.priority),
                    record.state.as_str(),
                    to_json(&record)?,
                    to_json(&spec)?,
                    record.created_at
                ],
            )?;
            Ok(record)
        })
        .await
    }

    async fn claim(
        &self,
        worker: &str,
        priorities: &[Priority],
        lease: Duration,
    ) -> Result<Option<Claim>, JobError> {
        let worker = worker.to_string();
        let priorities = priorities.to_vec();
        self.with(move |conn| claim_in(conn, &worker, &priorities, lease))
            .await
    }

    async fn heartbeat(
        &self,
        claim: &Claim,
        lease: Duration,
        progress: Option<&Progress>,
    ) -> Result<Heartbeat, JobError> {
        let claim = claim.clone();
        let progress = progress.cloned();
        self.with(move |conn| {
            let tx = conn.transaction_with_behavior(TransactionBehavior::Immediate)?;
            let Some(mut record) = held(&tx, &claim)? else {
                return Ok(Heartbeat {
                    lost: true,
                    cancel_requested: false,
                });
            };
            if let Some(progress) = progress {
                record.progress = Some(progress);
                store(&tx, &record)?;
            }
            tx.execute(
                "UPDATE jobs SET lease_until = ?2 WHERE job_id = ?1",
                params![claim.job_id, now() + lease.as_secs_f64()],
            )?;
            tx.commit()?;
            Ok(Heartbeat {
                lost: false,
                cancel_requested: record.cancel_requested,
            })
        })
        .await
    }

    async fn begin_finish(&self, claim: &Claim) -> Result<bool, JobError> {
        let claim = claim.clone();
        self.with(move |conn| {
            let changed = conn.execute(
                "UPDATE jobs SET finishing = 1 WHERE job_id = ?1 AND token = ?2
                 AND state = 'running' AND finishing = 0",
                params![claim.job_id, claim.token],
            )?;
            Ok(changed == 1)
        })
        .await
    }

    async fn finish(&self, claim: &Claim, outcome: Outcome) -> Result<Option<JobRecord>, JobError> {
        let claim = claim.clone();
        self.with(move |conn| {
            let tx = conn.transaction_with_behavior(TransactionBehavior::Immediate)?;
            let Some(mut record) = held(&tx, &claim)? else {
                return Ok(None);
            };
            let result = record.apply(&outcome, now());
            store(&tx, &record)?;
            tx.execute(
                "UPDATE jobs SET token = NULL, lease_until = NULL, finishing = 0,
                 result = COALESCE(?2, result) WHERE job_id = ?1",
                params![claim.job_id, result],
            )?;
            tx.commit()?;
            Ok(Some(record))
        })
        .await
    }

    async fn release(&self, claim: &Claim) -> Result<(), JobError> {
        let claim = claim.clone();
        self.with(move |conn| {
            let tx = conn.transaction_with_behavior(TransactionBehavior::Immediate)?;
            if let Some(mut record) = held(&tx, &claim)? {
                record.state = JobState::Queued;
                record.attempts = record.attempts.saturating_sub(1);
                record.worker = None;
                store(&tx, &record)?;
                tx.execute(
                    "UPDATE jobs SET token = NULL, lease_until = NULL, finishing = 0
                     WHERE job_id = ?1",
                    params![claim.job_id],
                )?;
            }
            tx.commit()?;
            Ok(())
        })
        .await
    }

    async fn get(&self, job_id: &str) -> Result<JobRecord, JobError> {
        let job_id = job_id.to_string();
        self.with(move |conn| load(conn, &job_id)).await
    }

    async fn spec(&self, job_id: &str) -> Result<JobSpec, JobError> {
        let job_id = job_id.to_string();
        self.with(move |conn| {
            let text: Option<String> = conn
                .query_row(
                    "SELECT spec FROM jobs WHERE job_id = ?1",
                    params![job_id],
                    |row| row.get(0),
                )
                .optional()?;
            let text = text.ok_or_else(|| JobError::NotFound(job_id.clone()))?;
            Ok(serde_json::from_str(&text).map_err(|e| JobError::Corrupt {
                job_id: job_id.clone(),
                message: e.to_string(),
            })?)
        })
        .await
    }

    async fn result(&self, job_id: &str) -> Result<Option<serde_json::Value>, JobError> {
        let job_id = job_id.to_string();
        self.with(move |conn| {
            let row: Option<Option<String>> = conn
                .query_row(
                    "SELECT result FROM jobs WHERE job_id = ?1",
                    params![job_id],
                    |row| row.get(0),
                )
                .optional()?;
            let text = row.ok_or_else(|| JobError::NotFound(job_id.clone()))?;
            match text {
                None => Ok(None),
                Some(t) => Ok(Some(serde_json::from_str(&t).map_err(|e| {
                    JobError::Corrupt {
                        job_id: job_id.clone(),
                        message: format!("its result does not parse: {e}"),
                    }
                })?)),
            }
        })
        .await
    }

    async fn list(
        &self,
        state: Option<JobState>,
        limit: usize,
    ) -> Result<Vec<JobRecord>, JobError> {
        self.with(move |conn| {
            let limit = i64::try_from(limit).unwrap_or(i64::MAX);
            let mut stmt = conn.prepare(
                "SELECT job_id, record FROM jobs WHERE (?1 IS NULL OR state = ?1)
                 ORDER BY created_at DESC, rowid DESC LIMIT ?2",
            )?;
            let rows = stmt.query_map(params![state.map(JobState::as_str), limit], |row| {
                Ok((row.get::<_, String>(0)?, row.get::<_, String>(1)?))
            })?;
            let mut out = Vec::new();
            for row in rows {
                let (job_id, text) = row?;
                out.push(parse_record(&job_id, &text)?);
            }
            Ok(out)
        })
        .await
    }

    async fn cancel(&self, job_id: &str) -> Result<JobRecord, JobError> {
        let job_id = job_id.to_string();
        self.with(move |conn| {
            let tx = conn.transaction_with_behavior(TransactionBehavior::Immediate)?;
            let mut record = load(&tx, &job_id)?;
            record.cancel(now())?;
            store(&tx, &record)?;
            tx.commit()?;
            Ok(record)
        })
        .await
    }

    async fn retry(&self, job_id: &str) -> Result<JobRecord, JobError> {
        let job_id = job_id.to_string();
        self.with(move |conn| {
            let tx = conn.transaction_with_behavior(TransactionBehavior::Immediate)?;
            let mut record = load(&tx, &job_id)?;
            record.reset_for_retry()?;
            store(&tx, &record)?;
            tx.commit()?;
            Ok(record)
        })
        .await
    }

    async fn save_checkpoint(&self, job_id: &str, key: &str, value: &str) -> Result<(), JobError> {
        let (job_id, key, value) = (job_id.to_string(), key.to_string(), value.to_string());
        self.with(move |conn| {
            conn.execute(
                "INSERT OR REPLACE INTO checkpoints (job_id, key, value) VALUES (?1, ?2, ?3)",
                params![job_id, key, value],
            )?;
            Ok(())
        })
        .await
    }

    async fn checkpoint(&self, job_id: &str) -> Result<Vec<(String, String)>, JobError> {
        let job_id = job_id.to_string();
        self.with(move |conn| {
            let mut stmt =
                conn.prepare("SELECT key, value FROM checkpoints WHERE job_id = ?1 ORDER BY key")?;
            let rows = stmt.query_map(params![job_id], |row| Ok((row.get(0)?, row.get(1)?)))?;
            Ok(rows.collect::<Result<Vec<_>, _>>()?)
        })
        .await
    }

    async fn push_event(&self, job_id: &str, event: &serde_json::Value) -> Result<(), JobError> {
        let (job_id, event) = (job_id.to_string(), event.to_string());
        self.with(move |conn| {
            let tx = conn.transaction_with_behavior(TransactionBehavior::Immediate)?;
            let n: i64 = tx.query_row(
                "SELECT COALESCE(MAX(n), 0) + 1 FROM events WHERE job_id = ?1",
                params![job_id],
                |row| row.get(0),
            )?;
            tx.execute(
                "INSERT INTO events (job_id, n, event) VALUES (?1, ?2, ?3)",
                params![job_id, n, event],
            )?;
            if n > MAX_EVENTS {
                tx.execute(
                    "DELETE FROM events WHERE job_id = ?1 AND n <= ?2",
                    params![job_id, n - MAX_EVENTS],
                )?;
            }
            tx.commit()?;
            Ok(())
        })
        .await
    }

    async fn events(
        &self,
        job_id: &str,
        after: u64,
        limit: usize,
    ) -> Result<Vec<(u64, serde_json::Value)>, JobError> {
        let job_id = job_id.to_string();
        self.with(move |conn| {
            let mut stmt = conn.prepare(
                "SELECT n, event FROM events WHERE job_id = ?1 AND n > ?2 ORDER BY n LIMIT ?3",
            )?;
            let after = i64::try_from(after).unwrap_or(i64::MAX);
            let limit = i64::try_from(limit).unwrap_or(i64::MAX);
            let rows = stmt.query_map(params![job_id, after, limit], |row| {
                Ok((row.get::<_, i64>(0)?, row.get::<_, String>(1)?))
            })?;
            let mut out = Vec::new();
            for row in rows {
                let (n, text) = row?;
                let value = serde_json::from_str(&text).unwrap_or(serde_json::Value::String(text));
                out.push((u64::try_from(n).unwrap_or(0), value));
            }
            Ok(out)
        })
        .await
    }

    async fn counts(&self) -> Result<BTreeMap<JobState, u64>, JobError> {
        self.with(move |conn| {
            let mut stmt = conn.prepare("SELECT state, COUNT(*) FROM jobs GROUP BY state")?;
            let rows = stmt.query_map([], |row| {
                Ok((row.get::<_, String>(0)?, row.get::<_, i64>(1)?))
            })?;
            let mut out = BTreeMap::new();
            for row in rows {
                let (state, n) = row?;
                if let Ok(state) = state.parse::<JobState>() {
                    out.insert(state, u64::try_from(n).unwrap_or(0));
                }
            }
            Ok(out)
        })
        .await
    }
}
