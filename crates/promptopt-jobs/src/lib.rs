//! Distributed optimization for promptopt: a job queue, and workers that run queued optimizations.
//!
//! - [`JobQueue`]: submit, claim under a lease, heartbeat, finish exactly once, cancel, retry,
//!   progress, checkpoints and an event log per job.
//! - [`RedisQueue`]: Redis Streams (one stream per priority, a consumer group, `XCLAIM` of
//!   deliveries whose worker stopped heartbeating) with each job's record in a hash; for workers
//!   on many machines (`PROMPTOPT_QUEUE=redis://...`).
//! - [`SqliteQueue`]: the embedded default, a SQLite file under `PROMPTOPT_HOME`, shared by worker
//!   processes on one machine, with the same semantics and no server.
//! - [`Worker`]: claims jobs, runs the optimization pipeline with its events turned into
//!   throttled progress, heartbeats, stops at timeouts and cancels, retries transient failures,
//!   and resumes a reclaimed job from its checkpoint.
//!
//! ```
//! use promptopt_jobs::{JobQueue, JobSpec, JobState, Priority, SqliteQueue};
//!
//! # let dir = tempfile::tempdir()?;
//! let rt = tokio::runtime::Runtime::new()?;
//! rt.block_on(async {
//!     let queue = SqliteQueue::open(dir.path().join("queue.sqlite"))?;
//!     let mut spec = JobSpec::new(serde_json::json!({"name": "sst2", "model": "local/smollm2-135m"}));
//!     spec.priority = Priority::High;
//!     let job = queue.submit(&spec).await?;
//!     assert_eq!(job.state, JobState::Queued);
//!
//!     let lease = std::time::Duration::from_secs(30);
//!     let claim = queue.claim("worker-1", &Priority::ALL, lease).await?.expect("a job");
//!     assert_eq!(claim.job_id, job.job_id);
//!     assert_eq!(queue.get(&job.job_id).await?.state, JobState::Running);
//!     Ok::<_, promptopt_jobs::JobError>(())
//! })?;
//! # Ok::<(), Box<dyn std::error::Error>>(())
//! ```

mod error;
mod job;
mod queue;
mod redis;
mod sqlite;
mod transition;
mod worker;

pub use error::JobError;
pub use job::{
    new_job_id, now, parse_duration, JobRecord, JobSpec, JobState, Outcome, Priority, Progress,
};
pub use queue::{
    backoff, claim_order, open_queue, redact_url, Claim, Heartbeat, JobQueue, SharedQueue,
    FAIRNESS_EVERY,
};
pub use redis::RedisQueue;
pub use sqlite::SqliteQueue;
pub use worker::{LmFactory, Worker, WorkerConfig, WorkerStats};
