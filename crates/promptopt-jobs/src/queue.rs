//! The [`JobQueue`] trait both backends implement, and [`open_queue`], which picks one from a URL.

use std::collections::BTreeMap;
use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;

use crate::{JobError, JobRecord, JobSpec, JobState, Outcome, Priority, Progress};

/// A job a worker holds: the lease is good while its token is the job's current one.
#[derive(Debug, Clone, PartialEq)]
pub struct Claim {
    /// The job.
    pub job_id: String,
    /// This attempt's lease token; a reclaimed job gets a new one, and the old holder's writes
    /// are refused.
    pub token: String,
    /// The record as claimed (state `running`, attempts counting this one).
    pub record: JobRecord,
    /// What was submitted.
    pub spec: JobSpec,
    /// Whether an earlier attempt was cut off (lease reclaimed): its checkpoint may hold work.
    pub resumed: bool,
    /// The backend's handle of the delivery (the Redis stream and entry id); empty for SQLite.
    pub delivery: String,
}

/// What a heartbeat learns.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Heartbeat {
    /// The lease was lost (reclaimed by another worker, or the job was finished elsewhere): stop
    /// and discard the work.
    pub lost: bool,
    /// `jobs cancel` was asked: stop cleanly.
    pub cancel_requested: bool,
}

/// Retry backoff after a transient failure of attempt `attempt` (1-based): 2, 4, 8 ... seconds,
/// at most 5 minutes, scaled by `PROMPTOPT_RETRY_BACKOFF_SCALE` (tests set it small).
pub fn backoff(attempt: u32) -> Duration {
    let scale = std::env::var("PROMPTOPT_RETRY_BACKOFF_SCALE")
        .ok()
        .and_then(|s| s.parse::<f64>().ok())
        .filter(|s| s.is_finite() && *s >= 0.0)
        .unwrap_or(1.0);
    let base = 2f64.powi(attempt.clamp(1, 16) as i32).min(300.0);
    Duration::from_secs_f64(base * scale)
}

/// Every few claims a worker looks at its priorities lowest first, so that a steady flow of
/// urgent jobs cannot starve the others: a waiting `low` job is taken within this many claims of
/// any one worker.
pub const FAIRNESS_EVERY: u64 = 8;

/// The order in which a worker's `n`th claim (0-based) looks at its priorities: most urgent
/// first, except every [`FAIRNESS_EVERY`]th claim, which looks least urgent first.
pub fn claim_order(priorities: &[Priority], n: u64) -> Vec<Priority> {
    let mut order = priorities.to_vec();
    order.sort();
    if n % FAIRNESS_EVERY == FAIRNESS_EVERY - 1 {
        order.reverse();
    }
    order
}

/// A job queue: where jobs are submitted, claimed by workers under a lease, and finished once.
///
/// Delivery is at least once (a worker that dies loses its lease after `lease`, and another
/// worker claims the job again); completion is exactly once: [`JobQueue::finish`] is refused to a
/// worker whose lease was reclaimed, so a job finished twice records one result.
#[async_trait]
pub trait JobQueue: Send + Sync + std::fmt::Debug {
    /// Where the queue lives, without credentials (`redis://host:6379/0`, `sqlite:/path`).
    fn url(&self) -> String;

    /// Queues a job. The request must already be validated.
    async fn submit(&self, spec: &JobSpec) -> Result<JobRecord, JobError>;

    /// Takes the next job for `worker`, looking at `priorities` in the order given: a queued job
    /// whose backoff has passed, or a running job whose lease expired (reclaimed: its attempt
    /// counts, and past `max_attempts` it is `dead` instead). Records that do not parse are moved
    /// to `dead` with the reason and skipped. `None` when nothing is ready.
    async fn claim(
        &self,
        worker: &str,
        priorities: &[Priority],
        lease: Duration,
    ) -> Result<Option<Claim>, JobError>;

    /// Renews the lease for `lease` more and stores `progress` when given.
    async fn heartbeat(
        &self,
        claim: &Claim,
        lease: Duration,
        progress: Option<&Progress>,
    ) -> Result<Heartbeat, JobError>;

    /// Called before the worker saves the model: `true` if this claim still holds the lease and
    /// no other attempt began finishing (from then on the job is this claim's to finish), `false`
    /// if the worker lost the job and must discard its work.
    async fn begin_finish(&self, claim: &Claim) -> Result<bool, JobError>;

    /// Records how the attempt ended. Returns the updated record, or `None` when the claim no
    /// longer holds the lease (the job was reclaimed or finished elsewhere): nothing is written.
    async fn finish(&self, claim: &Claim, outcome: Outcome) -> Result<Option<JobRecord>, JobError>;

    /// Gives a job back to the queue without counting the attempt (a worker shutting down).
    async fn release(&self, claim: &Claim) -> Result<(), JobError>;

    /// The job's record.
    async fn get(&self, job_id: &str) -> Result<JobRecord, JobError>;

    /// What was submitted.
    async fn spec(&self, job_id: &str) -> Result<JobSpec, JobError>;

    /// The stored result (`OptimizationResult` as JSON), once there is one.
    async fn result(&self, job_id: &str) -> Result<Option<serde_json::Value>, JobError>;

    /// Jobs, newest first, optionally only those in `state`, at most `limit`.
    async fn list(&self, state: Option<JobState>, limit: usize)
        -> Result<Vec<JobRecord>, JobError>;

    /// Cancels a job: a queued one is `cancelled` at once; a running one is flagged and its worker
    /// stops it at the next heartbeat. A final job is refused.
    async fn cancel(&self, job_id: &str) -> Result<JobRecord, JobError>;

    /// Queues a `failed`, `dead`, `cancelled` or `timed_out` job again with fresh attempts.
    async fn retry(&self, job_id: &str) -> Result<JobRecord, JobError>;

    /// Stores one entry of the job's checkpoint (completed work an attempt after a crash reuses).
    async fn save_checkpoint(&self, job_id: &str, key: &str, value: &str) -> Result<(), JobError>;

    /// Every entry of the job's checkpoint.
    async fn checkpoint(&self, job_id: &str) -> Result<Vec<(String, String)>, JobError>;

    /// Appends an event (JSON) to the job's event log, numbered from 1.
    async fn push_event(&self, job_id: &str, event: &serde_json::Value) -> Result<(), JobError>;

    /// The job's events numbered after `after`, at most `limit`, oldest first.
    async fn events(
        &self,
        job_id: &str,
        after: u64,
        limit: usize,
    ) -> Result<Vec<(u64, serde_json::Value)>, JobError>;

    /// How many jobs are in each state.
    async fn counts(&self) -> Result<BTreeMap<JobState, u64>, JobError>;
}

/// A shared queue.
pub type SharedQueue = Arc<dyn JobQueue>;

/// Opens the queue at `url`: `redis://[:PASSWORD@]HOST[:PORT][/DB]` or `rediss://...` (TLS) for
/// Redis; `sqlite:PATH` or a plain path for the embedded queue; `None` (no `--queue` and no
/// `PROMPTOPT_QUEUE`) for the embedded queue at `PROMPTOPT_HOME/queue.sqlite`.
pub async fn open_queue(url: Option<&str>, home: &Path) -> Result<SharedQueue, JobError> {
    let url = url
        .map(str::to_string)
        .or_else(|| std::env::var("PROMPTOPT_QUEUE").ok())
        .filter(|u| !u.trim().is_empty());
    match url {
        None => Ok(Arc::new(crate::SqliteQueue::open(
            home.join("queue.sqlite"),
        )?)),
        Some(url) if url.starts_with("redis://") || url.starts_with("rediss://") => {
            Ok(Arc::new(crate::RedisQueue::connect(&url).await?))
        }
        Some(url) if url.starts_with("sqlite:") => {
            let path = url.trim_start_matches("sqlite:").trim_start_matches("//");
            if path.is_empty() {
                return Err(JobError::InvalidUrl {
                    url,
                    message: "`sqlite:` needs a file path".into(),
                });
            }
            Ok(Arc::new(crate::SqliteQueue::open(path)?))
        }
        Some(url) if url.contains("://") => Err(JobError::InvalidUrl {
            url: crate::redact_url(&url),
            message: "the scheme is not `redis://`, `rediss://` or `sqlite:`".into(),
        }),
        Some(path) => Ok(Arc::new(crate::SqliteQueue::open(path)?)),
    }
}

/// `url` with any password replaced by `***`.
pub fn redact_url(url: &str) -> String {
    let Some((scheme, rest)) = url.split_once("://") else {
        return url.to_string();
    };
    let (authority, tail) = match rest.find('/') {
        Some(i) => (&rest[..i], &rest[i..]),
        None => (rest, ""),
    };
    match authority.rsplit_once('@') {
        Some((userinfo, host)) => {
            let user = userinfo.split(':').next().unwrap_or("");
            let shown = if userinfo.contains(':') {
                format!("{user}:***")
            } else {
                "***".to_string()
            };
            format!("{scheme}://{shown}@{host}{tail}")
        }
        None => url.to_string(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn passwords_never_show() {
        assert_eq!(
            redact_url("redis://:s3cret@localhost:6379/0"),
            "redis://:***@localhost:6379/0"
        );
        assert_eq!(
            redact_url("rediss://default:s3cret@cache.example:6380"),
            "rediss://default:***@cache.example:6380"
        );
        assert_eq!(redact_url("redis://tok@h"), "redis://***@h");
        assert_eq!(redact_url("redis://h:1/2"), "redis://h:1/2");
    }

    #[test]
    fn low_priority_gets_a_turn() {
        let all = Priority::ALL;
        let orders: Vec<Vec<Priority>> =
            (0..FAIRNESS_EVERY).map(|n| claim_order(&all, n)).collect();
        assert!(orders[..FAIRNESS_EVERY as usize - 1]
            .iter()
            .all(|o| o[0] == Priority::High));
        assert_eq!(orders[FAIRNESS_EVERY as usize - 1][0], Priority::Low);
    }

    #[test]
    fn backoff_grows_and_is_capped() {
        assert!(backoff(1) < backoff(2));
        assert!(backoff(30) <= Duration::from_secs(300));
    }
}
