//! The Redis queue: Redis Streams with a consumer group, each job's record in a hash.
//!
//! Keys (prefix `promptopt`):
//! - `promptopt:stream:high|normal|low`: one stream per priority; an entry carries a `job_id`. The
//!   consumer group `workers` delivers each entry to one worker (`XREADGROUP`); the entry stays in
//!   the group's pending list until the job ends (`XACK`, then `XDEL`). Heartbeats renew the job's
//!   `lease_until` and re-claim the entry (`XCLAIM ... JUSTID`, which resets its idle time); a
//!   pending entry whose job's lease has passed belongs to a worker that stopped, and the next
//!   claim moves it to its own worker (`XPENDING`, then `XCLAIM`). The lease is the job's, not the
//!   claimer's, so workers with different `--lease` settings share a queue safely.
//! - `promptopt:job:ID`: a hash with the record (`record`, JSON), the request (`spec`), the result,
//!   and beside them the fields the atomic updates compare: `state`, `token` (the current lease),
//!   `rev` (counts the updates), `lease_until`, `finishing`, `cancel`, `priority` and `delivery`
//!   (stream and entry id).
//! - `promptopt:jobs` (a sorted set by creation time, for listing), `promptopt:delayed` (retries
//!   waiting out their backoff, by due time), `promptopt:job:ID:ckpt` (checkpoint entries),
//!   `promptopt:job:ID:events` and `:evn` (the event log and its counter).
//!
//! Every change of a job is a compare-and-set Lua script on its hash (the lease token, state and
//! revision as last read), which in the same step acknowledges the job's stream entry or queues it
//! again, so two workers can never both claim or both finish a job, and a worker that stops midway
//! loses no job. An entry whose job is no longer waiting is acknowledged and skipped when it is
//! delivered.

mod claim;
mod scripts;

use std::collections::BTreeMap;
use std::time::Duration;

use async_trait::async_trait;
use redis::aio::{ConnectionManager, ConnectionManagerConfig};
use redis::{Script, Value};

use self::scripts::redact_message;
use crate::{
    new_job_id, now, redact_url, Claim, Heartbeat, JobError, JobQueue, JobRecord, JobSpec,
    JobState, Outcome, Priority, Progress,
};

const GROUP: &str = "workers";
/// Events kept per job.
const MAX_EVENTS: usize = 10_000;
/// Reads and writes again when a concurrent update changed a job in between, at most this often.
const RACE_RETRIES: u32 = 24;
/// Stale pending entries looked at per priority and claim.
const STALE_BATCH: usize = 16;

/// The Redis job queue (see the module documentation).
#[derive(Clone)]
pub struct RedisQueue {
    url: String,
    prefix: String,
    con: ConnectionManager,
    update: Script,
    begin_finish: Script,
    requeue: Script,
    find_stale: Script,
    push_event: Script,
    read_events: Script,
}

impl std::fmt::Debug for RedisQueue {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RedisQueue")
            .field("url", &self.url)
            .field("prefix", &self.prefix)
            .finish_non_exhaustive()
    }
}

/// A job hash's fields, as last read.
#[derive(Debug, Default)]
struct Fields {
    record: Option<String>,
    spec: Option<String>,
    state: String,
    token: String,
    rev: String,
    lease_until: f64,
    delivery: String,
    priority: Option<String>,
}

/// What happens to a job in the retry set.
#[derive(Debug, Default)]
enum RetrySet {
    #[default]
    Keep,
    Add(f64),
    Remove,
}

/// One atomic update of a job: fields to set, and what goes with them.
#[derive(Debug, Default)]
struct Change {
    set: Vec<(&'static str, String)>,
    /// A delivery (`stream|entry`) to acknowledge.
    ack: Option<String>,
    /// The stream to queue the job on again.
    enqueue: Option<Priority>,
    retry_set: RetrySet,
}

/// How a compare-and-set ended.
enum Cas {
    Done {
        cancel: bool,
    },
    /// The job changed hands or state: nothing was written.
    Lost,
    /// Another update came in between: nothing was written; read again.
    Raced,
}

impl RedisQueue {
    /// Connects to `redis://[USER][:PASSWORD@]HOST[:PORT][/DB]` (`rediss://` for TLS), checks the
    /// server with `PING` and creates the consumer groups. Errors never show the password. The
    /// connection is re-established by itself when the server restarts.
    pub async fn connect(url: &str) -> Result<Self, JobError> {
        let shown = redact_url(url);
        let client = redis::Client::open(url).map_err(|e| JobError::InvalidUrl {
            url: shown.clone(),
            message: redact_message(&e.to_string(), url),
        })?;
        let config = ConnectionManagerConfig::new()
            .set_connection_timeout(Duration::from_secs(5))
            .set_response_timeout(Duration::from_secs(30))
            .set_factor(2)
            .set_max_delay(1000)
            .set_number_of_retries(3);
        let cannot = |message: String| JobError::Redis {
            url: shown.clone(),
            message: format!("Cannot connect: {message}"),
        };
        let con = tokio::time::timeout(
            Duration::from_secs(15),
            ConnectionManager::new_with_config(client, config),
        )
        .await
        .map_err(|_| cannot("no answer within 15 s".into()))?
        .map_err(|e| cannot(redact_message(&e.to_string(), url)))?;
        let queue = Self {
            url: shown.clone(),
            prefix: "promptopt".into(),
            con,
            update: Script::new(scripts::UPDATE),
            begin_finish: Script::new(scripts::BEGIN_FINISH),
            requeue: Script::new(scripts::REQUEUE_DUE),
            find_stale: Script::new(scripts::FIND_STALE),
            push_event: Script::new(scripts::PUSH_EVENT),
            read_events: Script::new(scripts::READ_EVENTS),
        };
        let pong: String = queue
            .query(&redis::cmd("PING"))
            .await
            .map_err(|e| match e {
                JobError::Redis { message, .. } => cannot(redact_message(&message, url)),
                other => other,
            })?;
        if pong != "PONG" {
            return Err(cannot(format!("`PING` answered `{pong}`")));
        }
        queue.create_groups().await?;
        Ok(queue)
    }

    fn stream(&self, p: Priority) -> String {
        format!("{}:stream:{}", self.prefix, p.as_str())
    }

    fn job_key(&self, id: &str) -> String {
        format!("{}:job:{id}", self.prefix)
    }

    fn key(&self, name: &str) -> String {
        format!("{}:{name}", self.prefix)
    }

    fn error(&self, e: impl std::fmt::Display) -> JobError {
        JobError::redis(&self.url, e.to_string().replace('\n', " "))
    }

    fn busy(&self, id: &str) -> JobError {
        JobError::redis(
            &self.url,
            format!("Job `{id}` kept changing under concurrent updates; try again"),
        )
    }

    async fn query<T: redis::FromRedisValue>(&self, cmd: &redis::Cmd) -> Result<T, JobError> {
        let mut con = self.con.clone();
        cmd.query_async(&mut con).await.map_err(|e| self.error(e))
    }

    async fn invoke<T: redis::FromRedisValue>(
        &self,
        invocation: &redis::ScriptInvocation<'_>,
    ) -> Result<T, JobError> {
        let mut con = self.con.clone();
        invocation
            .invoke_async(&mut con)
            .await
            .map_err(|e| self.error(e))
    }

    async fn create_groups(&self) -> Result<(), JobError> {
        for p in Priority::ALL {
            let made = self
                .query::<Value>(
                    redis::cmd("XGROUP")
                        .arg("CREATE")
                        .arg(self.stream(p))
                        .arg(GROUP)
                        .arg("0")
                        .arg("MKSTREAM"),
                )
                .await;
            match made {
                Err(JobError::Redis { message, .. }) if message.contains("BUSYGROUP") => {}
                other => {
                    other?;
                }
            }
        }
        Ok(())
    }

    async fn fields(&self, id: &str) -> Result<Option<Fields>, JobError> {
        let names = [
            "record",
            "spec",
            "state",
            "token",
            "rev",
            "lease_until",
            "delivery",
            "priority",
        ];
        let values: Vec<Option<String>> = self
            .query(redis::cmd("HMGET").arg(self.job_key(id)).arg(&names[..]))
            .await?;
        let mut it = values.into_iter();
        let mut next = || it.next().flatten();
        let (record, spec) = (next(), next());
        let Some(state) = next() else {
            return Ok(None);
        };
        Ok(Some(Fields {
            record,
            spec,
            state,
            token: next().unwrap_or_default(),
            rev: next().unwrap_or_else(|| "0".into()),
            lease_until: next().and_then(|s| s.parse().ok()).unwrap_or(0.0),
            delivery: next().unwrap_or_default(),
            priority: next(),
        }))
    }

    /// Applies `change` to the job if its token and state are still those of `seen` (and its
    /// revision too, with `check_rev`: for changes computed from the record as read).
    async fn update(
        &self,
        id: &str,
        seen: &Fields,
        check_rev: bool,
        change: Change,
    ) -> Result<Cas, JobError> {
        let hash = self.job_key(id);
        let (ack_stream, ack_entry) = match change.ack.as_deref().and_then(|d| d.split_once('|')) {
            Some((stream, entry)) => (stream.to_string(), entry.to_string()),
            None => (hash.clone(), String::new()),
        };
        let enqueue = change.enqueue.map(|p| self.stream(p));
        let retry_set = match change.retry_set {
            RetrySet::Keep => String::new(),
            RetrySet::Add(due) => due.to_string(),
            RetrySet::Remove => "-".into(),
        };
        let mut invocation = self.update.key(&hash);
        invocation
            .key(ack_stream)
            .key(enqueue.clone().unwrap_or_else(|| hash.clone()))
            .key(self.key("delayed"))
            .arg(&seen.token)
            .arg(&seen.state)
            .arg(if check_rev { seen.rev.as_str() } else { "*" })
            .arg(ack_entry)
            .arg(if enqueue.is_some() { "1" } else { "" })
            .arg(retry_set)
            .arg(id)
            .arg(GROUP);
        for (field, value) in &change.set {
            invocation.arg(*field).arg(value);
        }
        Ok(match self.invoke::<i64>(&invocation).await? {
            1 => Cas::Done { cancel: false },
            2 => Cas::Done { cancel: true },
            -1 => Cas::Raced,
            _ => Cas::Lost,
        })
    }

    fn record_fields(record: &JobRecord) -> Result<Vec<(&'static str, String)>, JobError> {
        let json = serde_json::to_string(record).map_err(|e| JobError::Invalid {
            field: "record".into(),
            message: e.to_string(),
        })?;
        Ok(vec![
            ("record", json),
            ("state", record.state.as_str().to_string()),
            (
                "cancel",
                if record.cancel_requested { "1" } else { "0" }.to_string(),
            ),
        ])
    }

    /// Acknowledges a delivery (`stream|entry`) and drops the entry.
    async fn ack(&self, delivery: &str) -> Result<(), JobError> {
        let Some((stream, entry)) = delivery.split_once('|') else {
            return Ok(());
        };
        let mut pipe = redis::pipe();
        pipe.atomic();
        pipe.cmd("XACK").arg(stream).arg(GROUP).arg(entry).ignore();
        pipe.cmd("XDEL").arg(stream).arg(entry).ignore();
        let mut con = self.con.clone();
        pipe.query_async::<()>(&mut con)
            .await
            .map_err(|e| self.error(e))
    }

    fn read_record(&self, id: &str, fields: &Fields) -> Result<JobRecord, JobError> {
        let text = fields.record.as_deref().ok_or_else(|| JobError::Corrupt {
            job_id: id.to_string(),
            message: "the record is missing".into(),
        })?;
        serde_json::from_str(text).map_err(|e| JobError::Corrupt {
            job_id: id.to_string(),
            message: e.to_string(),
        })
    }

    async fn require(&self, id: &str) -> Result<Fields, JobError> {
        self.fields(id)
            .await?
            .ok_or_else(|| JobError::NotFound(id.to_string()))
    }

    /// The ids of the jobs, newest first, at most `limit`.
    async fn ids(&self, limit: Option<usize>) -> Result<Vec<String>, JobError> {
        let stop = limit.map_or(-1, |n| i64::try_from(n).unwrap_or(i64::MAX) - 1);
        self.query(
            redis::cmd("ZREVRANGE")
                .arg(self.key("jobs"))
                .arg(0)
                .arg(stop),
        )
        .await
    }

    /// One field of each job, in the order of `ids`.
    async fn field_of(&self, ids: &[String], field: &str) -> Result<Vec<Option<String>>, JobError> {
        let mut out = Vec::with_capacity(ids.len());
        for chunk in ids.chunks(500) {
            let mut pipe = redis::pipe();
            for id in chunk {
                pipe.cmd("HGET").arg(self.job_key(id)).arg(field);
            }
            let mut con = self.con.clone();
            let values: Vec<Option<String>> = pipe
                .query_async(&mut con)
                .await
                .map_err(|e| self.error(e))?;
            out.extend(values);
        }
        Ok(out)
    }
}

/// Before trying an update again after a concurrent one: a few random milliseconds, more each
/// time, so that contending writers spread out.
async fn pause(attempt: u32) {
    if attempt > 0 {
        let ms = rand::random::<u64>() % (1u64 << attempt.min(6));
        tokio::time::sleep(Duration::from_millis(ms)).await;
    }
}

#[async_trait]
impl JobQueue for RedisQueue {
    fn url(&self) -> String {
        self.url.clone()
    }

    async fn submit(&self, spec: &JobSpec) -> Result<JobRecord, JobError> {
        spec.validate()?;
        let record = JobRecord::new(new_job_id(), spec, now());
        let spec_json = serde_json::to_string(spec).map_err(|e| JobError::Invalid {
            field: "request".into(),
            message: e.to_string(),
        })?;
        let mut set = Self::record_fields(&record)?;
        set.extend([
            ("spec", spec_json),
            ("priority", record.priority.as_str().to_string()),
            ("token", String::new()),
            ("rev", "0".to_string()),
            ("finishing", "0".to_string()),
        ]);
        let mut pipe = redis::pipe();
        pipe.atomic();
        let mut hset = redis::cmd("HSET");
        hset.arg(self.job_key(&record.job_id));
        for (field, value) in &set {
            hset.arg(*field).arg(value);
        }
        pipe.add_command(hset).ignore();
        pipe.cmd("ZADD")
            .arg(self.key("jobs"))
            .arg(record.created_at)
            .arg(&record.job_id)
            .ignore();
        pipe.cmd("XADD")
            .arg(self.stream(record.priority))
            .arg("*")
            .arg("job_id")
            .arg(&record.job_id)
            .ignore();
        let mut con = self.con.clone();
        pipe.query_async::<()>(&mut con)
            .await
            .map_err(|e| self.error(e))?;
        Ok(record)
    }

    async fn claim(
        &self,
        worker: &str,
        priorities: &[Priority],
        lease: Duration,
    ) -> Result<Option<Claim>, JobError> {
        match self.claim_once(worker, priorities, lease).await {
            // The streams are gone (a flushed database): make them again.
            Err(JobError::Redis { message, .. }) if message.contains("NOGROUP") => {
                self.create_groups().await?;
                self.claim_once(worker, priorities, lease).await
            }
            other => other,
        }
    }

    async fn heartbeat(
        &self,
        claim: &Claim,
        lease: Duration,
        progress: Option<&Progress>,
    ) -> Result<Heartbeat, JobError> {
        let lost = Heartbeat {
            lost: true,
            cancel_requested: false,
        };
        for attempt in 0..RACE_RETRIES {
            pause(attempt).await;
            let Some(fields) = self.fields(&claim.job_id).await? else {
                return Ok(lost);
            };
            if fields.token != claim.token || fields.state != "running" {
                return Ok(lost);
            }
            let mut set = vec![("lease_until", (now() + lease.as_secs_f64()).to_string())];
            if let Some(progress) = progress {
                let mut record = self.read_record(&claim.job_id, &fields)?;
                record.progress = Some(progress.clone());
                set.extend(Self::record_fields(&record)?);
            }
            let change = Change {
                set,
                ..Change::default()
            };
            let cancel = match self
                .update(&claim.job_id, &fields, progress.is_some(), change)
                .await?
            {
                Cas::Done { cancel } => cancel,
                Cas::Lost => return Ok(lost),
                Cas::Raced => continue,
            };
            if let Some((stream, entry)) = claim.delivery.split_once('|') {
                let worker = claim.record.worker.as_deref().unwrap_or("worker");
                self.query::<Value>(
                    redis::cmd("XCLAIM")
                        .arg(stream)
                        .arg(GROUP)
                        .arg(worker)
                        .arg(0)
                        .arg(entry)
                        .arg("JUSTID"),
                )
                .await?;
            }
            return Ok(Heartbeat {
                lost: false,
                cancel_requested: cancel,
            });
        }
        Err(self.busy(&claim.job_id))
    }

    async fn begin_finish(&self, claim: &Claim) -> Result<bool, JobError> {
        let mut invocation = self.begin_finish.key(self.job_key(&claim.job_id));
        invocation.arg(&claim.token);
        Ok(self.invoke::<i64>(&invocation).await? == 1)
    }

    async fn finish(&self, claim: &Claim, outcome: Outcome) -> Result<Option<JobRecord>, JobError> {
        for attempt in 0..RACE_RETRIES {
            pause(attempt).await;
            let Some(fields) = self.fields(&claim.job_id).await? else {
                return Ok(None);
            };
            if fields.token != claim.token || fields.state != "running" {
                return Ok(None);
            }
            let mut record = self.read_record(&claim.job_id, &fields)?;
            let result = record.apply(&outcome, now());
            let mut set = Self::record_fields(&record)?;
            set.extend([
                ("token", String::new()),
                ("lease_until", String::new()),
                ("finishing", "0".to_string()),
            ]);
            if let Some(result) = result {
                set.push(("result", result));
            }
            let retry_set = match record.state {
                JobState::Queued => RetrySet::Add(record.not_before.unwrap_or_else(now)),
                _ => RetrySet::Keep,
            };
            let change = Change {
                set,
                ack: Some(claim.delivery.clone()),
                retry_set,
                ..Change::default()
            };
            match self.update(&claim.job_id, &fields, true, change).await? {
                Cas::Done { .. } => return Ok(Some(record)),
                Cas::Lost => return Ok(None),
                Cas::Raced => continue,
            }
        }
        Err(self.busy(&claim.job_id))
    }

    async fn release(&self, claim: &Claim) -> Result<(), JobError> {
        for attempt in 0..RACE_RETRIES {
            pause(attempt).await;
            let Some(fields) = self.fields(&claim.job_id).await? else {
                return Ok(());
            };
            if fields.token != claim.token || fields.state != "running" {
                return Ok(());
            }
            let mut record = self.read_record(&claim.job_id, &fields)?;
            record.state = JobState::Queued;
            record.attempts = record.attempts.saturating_sub(1);
            record.worker = None;
            let mut set = Self::record_fields(&record)?;
            set.extend([
                ("token", String::new()),
                ("lease_until", String::new()),
                ("finishing", "0".to_string()),
            ]);
            let change = Change {
                set,
                ack: Some(claim.delivery.clone()),
                enqueue: Some(record.priority),
                ..Change::default()
            };
            match self.update(&claim.job_id, &fields, true, change).await? {
                Cas::Done { .. } | Cas::Lost => return Ok(()),
                Cas::Raced => continue,
            }
        }
        Err(self.busy(&claim.job_id))
    }

    async fn get(&self, job_id: &str) -> Result<JobRecord, JobError> {
        let fields = self.require(job_id).await?;
        self.read_record(job_id, &fields)
    }

    async fn spec(&self, job_id: &str) -> Result<JobSpec, JobError> {
        let fields = self.require(job_id).await?;
        let text = fields.spec.ok_or_else(|| JobError::Corrupt {
            job_id: job_id.to_string(),
            message: "the request is missing".into(),
        })?;
        serde_json::from_str(&text).map_err(|e| JobError::Corrupt {
            job_id: job_id.to_string(),
            message: e.to_string(),
        })
    }

    async fn result(&self, job_id: &str) -> Result<Option<serde_json::Value>, JobError> {
        self.require(job_id).await?;
        let text: Option<String> = self
            .query(redis::cmd("HGET").arg(self.job_key(job_id)).arg("result"))
            .await?;
        text.map(|t| {
            serde_json::from_str(&t).map_err(|e| JobError::Corrupt {
                job_id: job_id.to_string(),
                message: format!("its result does not parse: {e}"),
            })
        })
        .transpose()
    }

    async fn list(
        &self,
        state: Option<JobState>,
        limit: usize,
    ) -> Result<Vec<JobRecord>, JobError> {
        if limit == 0 {
            return Ok(Vec::new());
        }
        let mut ids = self.ids(state.is_none().then_some(limit)).await?;
        if let Some(state) = state {
            let states = self.field_of(&ids, "state").await?;
            ids = ids
                .into_iter()
                .zip(states)
                .filter(|(_, s)| s.as_deref() == Some(state.as_str()))
                .map(|(id, _)| id)
                .take(limit)
                .collect();
        }
        let records = self.field_of(&ids, "record").await?;
        let mut out = Vec::with_capacity(ids.len());
        for (id, text) in ids.into_iter().zip(records) {
            let Some(text) = text else { continue };
            let record: JobRecord = serde_json::from_str(&text).map_err(|e| JobError::Corrupt {
                job_id: id,
                message: e.to_string(),
            })?;
            out.push(record);
        }
        Ok(out)
    }

    async fn cancel(&self, job_id: &str) -> Result<JobRecord, JobError> {
        for attempt in 0..RACE_RETRIES {
            pause(attempt).await;
            let fields = self.require(job_id).await?;
            let mut record = self.read_record(job_id, &fields)?;
            let mut change = Change::default();
            record.cancel(now())?;
            if record.state == JobState::Cancelled {
                // Its stream entry is acknowledged and skipped when delivered.
                change.retry_set = RetrySet::Remove;
            }
            change.set = Self::record_fields(&record)?;
            if let Cas::Done { .. } = self.update(job_id, &fields, true, change).await? {
                return Ok(record);
            }
        }
        Err(self.busy(job_id))
    }

    async fn retry(&self, job_id: &str) -> Result<JobRecord, JobError> {
        for attempt in 0..RACE_RETRIES {
            pause(attempt).await;
            let fields = self.require(job_id).await?;
            let mut record = self.read_record(job_id, &fields)?;
            record.reset_for_retry()?;
            let mut set = Self::record_fields(&record)?;
            set.extend([("token", String::new()), ("finishing", "0".to_string())]);
            let change = Change {
                set,
                enqueue: Some(record.priority),
                retry_set: RetrySet::Remove,
                ..Change::default()
            };
            if let Cas::Done { .. } = self.update(job_id, &fields, true, change).await? {
                return Ok(record);
            }
        }
        Err(self.busy(job_id))
    }

    async fn save_checkpoint(&self, job_id: &str, key: &str, value: &str) -> Result<(), JobError> {
        self.query::<Value>(
            redis::cmd("HSET")
                .arg(format!("{}:ckpt", self.job_key(job_id)))
                .arg(key)
                .arg(value),
        )
        .await?;
        Ok(())
    }

    async fn checkpoint(&self, job_id: &str) -> Result<Vec<(String, String)>, JobError> {
        let map: BTreeMap<String, String> = self
            .query(redis::cmd("HGETALL").arg(format!("{}:ckpt", self.job_key(job_id))))
            .await?;
        Ok(map.into_iter().collect())
    }

    async fn push_event(&self, job_id: &str, event: &serde_json::Value) -> Result<(), JobError> {
        let key = self.job_key(job_id);
        let mut invocation = self.push_event.key(format!("{key}:events"));
        invocation
            .key(format!("{key}:evn"))
            .arg(event.to_string())
            .arg(MAX_EVENTS);
        self.invoke::<i64>(&invocation).await?;
        Ok(())
    }

    async fn events(
        &self,
        job_id: &str,
        after: u64,
        limit: usize,
    ) -> Result<Vec<(u64, serde_json::Value)>, JobError> {
        if limit == 0 {
            return Ok(Vec::new());
        }
        let mut invocation = self
            .read_events
            .key(format!("{}:events", self.job_key(job_id)));
        // Lua numbers are doubles: keep the numbers exact and the counts small.
        invocation
            .arg(after.min(1 << 52))
            .arg(limit.min(MAX_EVENTS));
        let lines: Vec<String> = self.invoke(&invocation).await?;
        Ok(lines
            .iter()
            .filter_map(|line| {
                let value: serde_json::Value = serde_json::from_str(line).ok()?;
                let n = value.get("n")?.as_u64()?;
                Some((n, value.get("event")?.clone()))
            })
            .filter(|(n, _)| *n > after)
            .take(limit)
            .collect())
    }

    async fn counts(&self) -> Result<BTreeMap<JobState, u64>, JobError> {
        let ids = self.ids(None).await?;
        let mut out = BTreeMap::new();
        for state in self.field_of(&ids, "state").await?.into_iter().flatten() {
            if let Ok(state) = state.parse::<JobState>() {
                *out.entry(state).or_insert(0) += 1;
            }
        }
        Ok(out)
    }
}
