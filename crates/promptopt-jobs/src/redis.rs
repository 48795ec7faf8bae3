//! The Redis queue: Redis Streams with a consumer group, each job's record in a hash.
//!
//! Keys (prefix `promptopt`):
//! - `promptopt:stream:high|normal|low`: one stream per priority; an entry carries a `job_id`. The
//!   consumer group `workers` delivers each entry to one worker (`XREADGROUP`); the entry stays in
//!   the group's pending list until the job ends (`XACK`). Heartbeats renew the job's
//!   `lease_until` and re-claim the entry (`XCLAIM ... JUSTID`, which resets its idle time); a
//!   pending entry whose job's lease has passed belongs to a worker that stopped, and the next
//!   claim moves it to its own worker (`XPENDING`, then `XCLAIM`). The lease is the job's, not the
//!   claimer's, so workers with different `--lease` settings share a queue safely.
//! - `promptopt:job:ID`: a hash with the record (`record`, JSON), the request (`spec`), the result,
//!   and beside them the fields the atomic updates compare: `state`, `token` (the current lease),
//!   `lease_until`, `finishing`, `cancel`, `priority` and `delivery` (stream and entry id).
//! - `promptopt:jobs` (a sorted set by creation time, for listing), `promptopt:delayed` (retries
//!   waiting out their backoff, by due time), `promptopt:job:ID:ckpt` (checkpoint entries),
//!   `promptopt:job:ID:events` and `:evn` (the event log and its counter).
//!
//! Every change of a job's state is a compare-and-set Lua script on its hash (the expected lease
//! token and state), so two workers can never both claim or both finish a job. Side effects that
//! follow a change (`XACK`, re-adding to a stream) are idempotent: an entry whose job is no longer
//! waiting is acknowledged and skipped when it is delivered again.

use std::collections::BTreeMap;
use std::time::Duration;

use async_trait::async_trait;
use redis::aio::ConnectionManager;
use redis::{Script, Value};

use crate::{
    new_job_id, now, redact_url, Claim, Heartbeat, JobError, JobQueue, JobRecord, JobSpec,
    JobState, Outcome, Priority, Progress,
};

const GROUP: &str = "workers";
/// Events kept per job.
const MAX_EVENTS: i64 = 10_000;

/// Sets fields of a job hash if its lease token and state are as expected (`*`: any).
const CAS: &str = r"
local tok = redis.call('HGET', KEYS[1], 'token')
if not tok then tok = '' end
if ARGV[1] ~= '*' and tok ~= ARGV[1] then return 0 end
local st = redis.call('HGET', KEYS[1], 'state')
if not st then return 0 end
if ARGV[2] ~= '*' and st ~= ARGV[2] then return 0 end
for i = 3, #ARGV, 2 do redis.call('HSET', KEYS[1], ARGV[i], ARGV[i + 1]) end
return 1
";

/// Marks a running job as being finished by the holder of the token, once.
const BEGIN_FINISH: &str = r"
if redis.call('HGET', KEYS[1], 'token') ~= ARGV[1] then return 0 end
if redis.call('HGET', KEYS[1], 'state') ~= 'running' then return 0 end
if redis.call('HGET', KEYS[1], 'finishing') == '1' then return 0 end
redis.call('HSET', KEYS[1], 'finishing', '1')
return 1
";

/// Moves retries whose backoff has passed back onto their priority's stream.
const REQUEUE_DUE: &str = r"
local due = redis.call('ZRANGEBYSCORE', KEYS[1], '-inf', ARGV[1], 'LIMIT', 0, 100)
for _, id in ipairs(due) do
  if redis.call('ZREM', KEYS[1], id) == 1 then
    local p = redis.call('HGET', ARGV[2] .. ':job:' .. id, 'priority') or 'normal'
    redis.call('XADD', ARGV[2] .. ':stream:' .. p, '*', 'job_id', id)
  end
end
return #due
";

/// The Redis job queue (see the module documentation).
#[derive(Clone)]
pub struct RedisQueue {
    url: String,
    prefix: String,
    con: ConnectionManager,
    cas: Script,
    begin_finish: Script,
    requeue: Script,
}

impl std::fmt::Debug for RedisQueue {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RedisQueue")
            .field("url", &self.url)
            .field("prefix", &self.prefix)
            .finish_non_exhaustive()
    }
}

/// A job hash's fields.
#[derive(Debug, Default)]
struct Fields {
    record: Option<String>,
    spec: Option<String>,
    state: String,
    token: String,
    lease_until: f64,
    delivery: String,
    cancel: bool,
}

fn bulk(value: &Value) -> Option<String> {
    match value {
        Value::BulkString(bytes) => Some(String::from_utf8_lossy(bytes).into_owned()),
        Value::SimpleString(s) => Some(s.clone()),
        Value::Int(i) => Some(i.to_string()),
        Value::Okay => Some("OK".into()),
        _ => None,
    }
}

fn array(value: &Value) -> &[Value] {
    match value {
        Value::Array(items) => items,
        _ => &[],
    }
}

/// Stream entries `(entry id, job id)` of an `XREADGROUP` reply's first stream or of an
/// `XCLAIM` or `XRANGE` reply.
fn entries(list: &Value) -> Vec<(String, Option<String>)> {
    array(list)
        .iter()
        .filter_map(|entry| {
            let parts = array(entry);
            let id = bulk(parts.first()?)?;
            let fields = parts.get(1).map(array).unwrap_or(&[]);
            let job = fields
                .chunks(2)
                .find(|kv| kv.first().and_then(bulk).as_deref() == Some("job_id"))
                .and_then(|kv| kv.get(1).and_then(bulk));
            Some((id, job))
        })
        .collect()
}

impl RedisQueue {
    /// Connects to `redis://[USER][:PASSWORD@]HOST[:PORT][/DB]` (`rediss://` for TLS), checks the
    /// server with `PING` and creates the consumer groups. Errors never show the password.
    pub async fn connect(url: &str) -> Result<Self, JobError> {
        let shown = redact_url(url);
        let client = redis::Client::open(url).map_err(|e| JobError::InvalidUrl {
            url: shown.clone(),
            message: redact_message(&e.to_string(), url),
        })?;
        let con = tokio::time::timeout(Duration::from_secs(10), ConnectionManager::new(client))
            .await
            .map_err(|_| JobError::Redis {
                url: shown.clone(),
                message: "Cannot connect: no answer within 10 s".into(),
            })?
            .map_err(|e| JobError::Redis {
                url: shown.clone(),
                message: format!("Cannot connect: {}", redact_message(&e.to_string(), url)),
            })?;
        let queue = Self {
            url: shown,
            prefix: "promptopt".into(),
            con,
            cas: Script::new(CAS),
            begin_finish: Script::new(BEGIN_FINISH),
            requeue: Script::new(REQUEUE_DUE),
        };
        let pong: String = queue.query(&redis::cmd("PING")).await?;
        if pong != "PONG" {
            return Err(JobError::redis(
                &queue.url,
                format!("`PING` answered `{pong}`"),
            ));
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

    async fn query<T: redis::FromRedisValue>(&self, cmd: &redis::Cmd) -> Result<T, JobError> {
        let mut con = self.con.clone();
        cmd.query_async(&mut con)
            .await
            .map_err(|e| JobError::redis(&self.url, e))
    }

    async fn create_groups(&self) -> Result<(), JobError> {
        for p in Priority::ALL {
            let mut con = self.con.clone();
            let made: Result<Value, _> = redis::cmd("XGROUP")
                .arg("CREATE")
                .arg(self.stream(p))
                .arg(GROUP)
                .arg("0")
                .arg("MKSTREAM")
                .query_async(&mut con)
                .await;
            if let Err(e) = made {
                if !e.to_string().contains("BUSYGROUP") {
                    return Err(JobError::redis(&self.url, e));
                }
            }
        }
        Ok(())
    }

    /// Runs a stream command, creating the groups once if they are gone (a flushed database).
    async fn stream_query(&self, cmd: &redis::Cmd) -> Result<Value, JobError> {
        match self.query::<Value>(cmd).await {
            Err(JobError::Redis { message, .. }) if message.contains("NOGROUP") => {
                self.create_groups().await?;
                self.query(cmd).await
            }
            other => other,
        }
    }

    async fn fields(&self, id: &str) -> Result<Option<Fields>, JobError> {
        let values: Vec<Option<String>> = self
            .query(
                redis::cmd("HMGET")
                    .arg(self.job_key(id))
                    .arg("record")
                    .arg("spec")
                    .arg("state")
                    .arg("token")
                    .arg("lease_until")
                    .arg("delivery")
                    .arg("cancel"),
            )
            .await?;
        let mut it = values.into_iter();
        let record = it.next().flatten();
        let spec = it.next().flatten();
        let Some(state) = it.next().flatten() else {
            return Ok(None);
        };
        Ok(Some(Fields {
            record,
            spec,
            state,
            token: it.next().flatten().unwrap_or_default(),
            lease_until: it
                .next()
                .flatten()
                .and_then(|s| s.parse().ok())
                .unwrap_or(0.0),
            delivery: it.next().flatten().unwrap_or_default(),
            cancel: it.next().flatten().as_deref() == Some("1"),
        }))
    }

    /// Compare-and-set on a job hash: `token` and `state` as expected (`*`: any).
    async fn cas(
        &self,
        id: &str,
        token: &str,
        state: &str,
        set: &[(&str, String)],
    ) -> Result<bool, JobError> {
        let mut invocation = self.cas.key(self.job_key(id));
        invocation.arg(token).arg(state);
        for (field, value) in set {
            invocation.arg(*field).arg(value);
        }
        let mut con = self.con.clone();
        let changed: i64 = invocation
            .invoke_async(&mut con)
            .await
            .map_err(|e| JobError::redis(&self.url, e))?;
        Ok(changed == 1)
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

    async fn ack(&self, delivery: &str) -> Result<(), JobError> {
        if let Some((stream, entry)) = delivery.split_once('|') {
            self.query::<Value>(redis::cmd("XACK").arg(stream).arg(GROUP).arg(entry))
                .await?;
        }
        Ok(())
    }

    async fn enqueue(&self, id: &str, priority: Priority) -> Result<(), JobError> {
        self.query::<Value>(
            redis::cmd("XADD")
                .arg(self.stream(priority))
                .arg("*")
                .arg("job_id")
                .arg(id),
        )
        .await?;
        Ok(())
    }

    /// A job whose record does not parse: `dead`, with the reason.
    async fn bury(&self, id: &str, fields: &Fields, reason: &str) -> Result<(), JobError> {
        let spec = JobSpec::new(serde_json::json!({}));
        let mut record = JobRecord::new(id.to_string(), &spec, now());
        record.state = JobState::Dead;
        record.finished_at = Some(now());
        record.error = Some(format!("The job's record does not parse: {reason}"));
        let mut set = Self::record_fields(&record)?;
        set.push(("token", String::new()));
        self.cas(id, &fields.token, &fields.state, &set).await?;
        Ok(())
    }

    /// Tries to take the job of one delivered entry; `None` when it is not ours to run.
    async fn take(
        &self,
        stream: &str,
        entry: &str,
        job_id: Option<String>,
        worker: &str,
        lease: Duration,
        reclaimed: bool,
    ) -> Result<Option<Claim>, JobError> {
        let delivery = format!("{stream}|{entry}");
        let Some(id) = job_id else {
            self.ack(&delivery).await?;
            return Ok(None);
        };
        let Some(fields) = self.fields(&id).await? else {
            self.ack(&delivery).await?;
            return Ok(None);
        };
        let t = now();
        match (fields.state.as_str(), reclaimed) {
            ("queued", _) => {}
            ("running", true) if fields.lease_until < t && fields.delivery == delivery => {}
            // Still held under a longer lease: its worker's next heartbeat takes the entry back.
            ("running", true) if fields.delivery == delivery => return Ok(None),
            _ => {
                self.ack(&delivery).await?;
                return Ok(None);
            }
        }
        let parsed = fields
            .record
            .as_deref()
            .ok_or_else(|| "the record is missing".to_string())
            .and_then(|r| serde_json::from_str::<JobRecord>(r).map_err(|e| e.to_string()))
            .and_then(|r| {
                fields
                    .spec
                    .as_deref()
                    .ok_or_else(|| "the request is missing".to_string())
                    .and_then(|s| {
                        serde_json::from_str::<JobSpec>(s)
                            .map_err(|e| format!("its request does not parse: {e}"))
                    })
                    .map(|s| (r, s))
            });
        let (mut record, spec) = match parsed {
            Ok(pair) => pair,
            Err(reason) => {
                self.bury(&id, &fields, &reason).await?;
                self.ack(&delivery).await?;
                return Ok(None);
            }
        };
        let reclaim = fields.state == "running";
        if reclaim && record.attempts >= record.max_attempts {
            record.state = JobState::Dead;
            record.finished_at = Some(t);
            record.error = Some(format!(
                "The worker running it (`{}`) stopped responding, on attempt {} of {}",
                record.worker.as_deref().unwrap_or("?"),
                record.attempts,
                record.max_attempts
            ));
            let mut set = Self::record_fields(&record)?;
            set.push(("token", String::new()));
            if self.cas(&id, &fields.token, "running", &set).await? {
                self.ack(&delivery).await?;
            }
            return Ok(None);
        }
        if reclaim {
            record.error = Some(format!(
                "The worker `{}` stopped responding; attempt {} takes over",
                record.worker.as_deref().unwrap_or("?"),
                record.attempts + 1
            ));
        }
        record.state = JobState::Running;
        record.attempts += 1;
        record.worker = Some(worker.to_string());
        record.started_at = Some(t);
        record.not_before = None;
        let token = new_job_id().replacen("job-", "lease-", 1);
        let mut set = Self::record_fields(&record)?;
        set.extend([
            ("token", token.clone()),
            ("lease_until", (t + lease.as_secs_f64()).to_string()),
            ("finishing", "0".to_string()),
            ("delivery", delivery.clone()),
        ]);
        if !self.cas(&id, &fields.token, &fields.state, &set).await? {
            return Ok(None);
        }
        Ok(Some(Claim {
            job_id: id,
            token,
            resumed: reclaim || record.attempts > 1,
            record,
            spec,
            delivery,
        }))
    }

    /// Takes over a pending entry of `stream` whose job's lease has passed (its worker stopped
    /// heartbeating): found with `XPENDING` (entries idle at least 100 ms; heartbeats reset the
    /// idle time), checked against the job's `lease_until`, then moved to `worker` with `XCLAIM`.
    async fn reclaim_expired(
        &self,
        stream: &str,
        worker: &str,
        lease: Duration,
    ) -> Result<Option<Claim>, JobError> {
        let pending = self
            .stream_query(
                redis::cmd("XPENDING")
                    .arg(stream)
                    .arg(GROUP)
                    .arg("IDLE")
                    .arg(100)
                    .arg("-")
                    .arg("+")
                    .arg(32),
            )
            .await?;
        let t = now();
        for item in array(&pending) {
            let Some(entry) = array(item).first().and_then(bulk) else {
                continue;
            };
            let range = self
                .query::<Value>(redis::cmd("XRANGE").arg(stream).arg(&entry).arg(&entry))
                .await?;
            let job = entries(&range).into_iter().next().and_then(|(_, job)| job);
            let expired = match &job {
                Some(id) => self
                    .fields(id)
                    .await?
                    .is_none_or(|f| f.state != "running" || f.lease_until < t),
                None => true,
            };
            if !expired {
                continue;
            }
            let moved = self
                .stream_query(
                    redis::cmd("XCLAIM")
                        .arg(stream)
                        .arg(GROUP)
                        .arg(worker)
                        .arg(0)
                        .arg(&entry),
                )
                .await?;
            let Some((entry, job)) = entries(&moved).into_iter().next() else {
                // The entry itself was trimmed or deleted: nothing to run.
                self.ack(&format!("{stream}|{entry}")).await?;
                continue;
            };
            if let Some(claim) = self.take(stream, &entry, job, worker, lease, true).await? {
                return Ok(Some(claim));
            }
        }
        Ok(None)
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

    async fn all_ids(&self) -> Result<Vec<String>, JobError> {
        self.query(
            redis::cmd("ZREVRANGE")
                .arg(format!("{}:jobs", self.prefix))
                .arg(0)
                .arg(-1),
        )
        .await
    }
}

/// `text` without the password of `url` (Redis errors may quote the URL).
fn redact_message(text: &str, url: &str) -> String {
    let password = url
        .split_once("://")
        .and_then(|(_, rest)| rest.split('/').next())
        .and_then(|authority| authority.rsplit_once('@'))
        .and_then(|(userinfo, _)| userinfo.split_once(':').map(|(_, p)| p))
        .filter(|p| !p.is_empty());
    match password {
        Some(p) => text.replace(p, "***"),
        None => text.to_string(),
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
            .arg(format!("{}:jobs", self.prefix))
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
            .map_err(|e| JobError::redis(&self.url, e))?;
        Ok(record)
    }

    async fn claim(
        &self,
        worker: &str,
        priorities: &[Priority],
        lease: Duration,
    ) -> Result<Option<Claim>, JobError> {
        let mut con = self.con.clone();
        let _: i64 = self
            .requeue
            .key(format!("{}:delayed", self.prefix))
            .arg(now())
            .arg(&self.prefix)
            .invoke_async(&mut con)
            .await
            .map_err(|e| JobError::redis(&self.url, e))?;
        for &p in priorities {
            let stream = self.stream(p);
            // Entries whose worker stopped heartbeating come first: they are older.
            if let Some(claim) = self.reclaim_expired(&stream, worker, lease).await? {
                return Ok(Some(claim));
            }
            for _ in 0..64 {
                let reply = self
                    .stream_query(
                        redis::cmd("XREADGROUP")
                            .arg("GROUP")
                            .arg(GROUP)
                            .arg(worker)
                            .arg("COUNT")
                            .arg(1)
                            .arg("STREAMS")
                            .arg(&stream)
                            .arg(">"),
                    )
                    .await?;
                let found = array(&reply)
                    .first()
                    .and_then(|s| array(s).get(1))
                    .map(entries)
                    .unwrap_or_default();
                let Some((entry, job)) = found.into_iter().next() else {
                    break;
                };
                if let Some(claim) = self
                    .take(&stream, &entry, job, worker, lease, false)
                    .await?
                {
                    return Ok(Some(claim));
                }
            }
        }
        Ok(None)
    }

    async fn heartbeat(
        &self,
        claim: &Claim,
        lease: Duration,
        progress: Option<&Progress>,
    ) -> Result<Heartbeat, JobError> {
        let Some(fields) = self.fields(&claim.job_id).await? else {
            return Ok(Heartbeat {
                lost: true,
                cancel_requested: false,
            });
        };
        if fields.token != claim.token || fields.state != "running" {
            return Ok(Heartbeat {
                lost: true,
                cancel_requested: false,
            });
        }
        let mut set = vec![("lease_until", (now() + lease.as_secs_f64()).to_string())];
        if let Some(progress) = progress {
            let mut record = self.read_record(&claim.job_id, &fields)?;
            record.progress = Some(progress.clone());
            set.extend(Self::record_fields(&record)?);
        }
        if !self
            .cas(&claim.job_id, &claim.token, "running", &set)
            .await?
        {
            return Ok(Heartbeat {
                lost: true,
                cancel_requested: false,
            });
        }
        if let Some((stream, entry)) = claim.delivery.split_once('|') {
            let worker = claim.record.worker.as_deref().unwrap_or("worker");
            self.stream_query(
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
        Ok(Heartbeat {
            lost: false,
            cancel_requested: fields.cancel,
        })
    }

    async fn begin_finish(&self, claim: &Claim) -> Result<bool, JobError> {
        let mut con = self.con.clone();
        let won: i64 = self
            .begin_finish
            .key(self.job_key(&claim.job_id))
            .arg(&claim.token)
            .invoke_async(&mut con)
            .await
            .map_err(|e| JobError::redis(&self.url, e))?;
        Ok(won == 1)
    }

    async fn finish(&self, claim: &Claim, outcome: Outcome) -> Result<Option<JobRecord>, JobError> {
        let Some(fields) = self.fields(&claim.job_id).await? else {
            return Ok(None);
        };
        if fields.token != claim.token || fields.state != "running" {
            return Ok(None);
        }
        let mut record = self.read_record(&claim.job_id, &fields)?;
        let result = crate::sqlite::apply_outcome(&mut record, &outcome, now());
        let mut set = Self::record_fields(&record)?;
        set.extend([
            ("token", String::new()),
            ("lease_until", String::new()),
            ("finishing", "0".to_string()),
        ]);
        if let Some(result) = result {
            set.push(("result", result));
        }
        if !self
            .cas(&claim.job_id, &claim.token, "running", &set)
            .await?
        {
            return Ok(None);
        }
        self.ack(&claim.delivery).await?;
        if record.state == JobState::Queued {
            self.query::<Value>(
                redis::cmd("ZADD")
                    .arg(format!("{}:delayed", self.prefix))
                    .arg(record.not_before.unwrap_or_else(now))
                    .arg(&claim.job_id),
            )
            .await?;
        }
        Ok(Some(record))
    }

    async fn release(&self, claim: &Claim) -> Result<(), JobError> {
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
        set.extend([("token", String::new()), ("finishing", "0".to_string())]);
        if self
            .cas(&claim.job_id, &claim.token, "running", &set)
            .await?
        {
            self.ack(&claim.delivery).await?;
            self.enqueue(&claim.job_id, record.priority).await?;
        }
        Ok(())
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
        let ids = self.all_ids().await?;
        let mut out = Vec::new();
        for chunk in ids.chunks(500) {
            let mut pipe = redis::pipe();
            for id in chunk {
                pipe.cmd("HGET").arg(self.job_key(id)).arg("record");
            }
            let mut con = self.con.clone();
            let records: Vec<Option<String>> = pipe
                .query_async(&mut con)
                .await
                .map_err(|e| JobError::redis(&self.url, e))?;
            for (id, text) in chunk.iter().zip(records) {
                let Some(text) = text else { continue };
                let record: JobRecord =
                    serde_json::from_str(&text).map_err(|e| JobError::Corrupt {
                        job_id: id.clone(),
                        message: e.to_string(),
                    })?;
                if state.is_none_or(|s| s == record.state) {
                    out.push(record);
                    if out.len() >= limit {
                        return Ok(out);
                    }
                }
            }
        }
        Ok(out)
    }

    async fn cancel(&self, job_id: &str) -> Result<JobRecord, JobError> {
        for _ in 0..8 {
            let fields = self.require(job_id).await?;
            let mut record = self.read_record(job_id, &fields)?;
            match record.state {
                JobState::Queued => {
                    record.state = JobState::Cancelled;
                    record.finished_at = Some(now());
                }
                JobState::Running => record.cancel_requested = true,
                state => {
                    return Err(JobError::WrongState {
                        job_id: job_id.to_string(),
                        state: state.to_string(),
                        message: "only a queued or running job can be cancelled".into(),
                    })
                }
            }
            let set = Self::record_fields(&record)?;
            if self.cas(job_id, &fields.token, &fields.state, &set).await? {
                if record.state == JobState::Cancelled {
                    self.query::<Value>(
                        redis::cmd("ZREM")
                            .arg(format!("{}:delayed", self.prefix))
                            .arg(job_id),
                    )
                    .await?;
                }
                return Ok(record);
            }
        }
        Err(JobError::redis(
            &self.url,
            format!("Job `{job_id}` kept changing; try again"),
        ))
    }

    async fn retry(&self, job_id: &str) -> Result<JobRecord, JobError> {
        let fields = self.require(job_id).await?;
        let mut record = self.read_record(job_id, &fields)?;
        match record.state {
            JobState::Failed | JobState::Dead | JobState::Cancelled | JobState::TimedOut => {
                record.state = JobState::Queued;
                record.attempts = 0;
                record.finished_at = None;
                record.cancel_requested = false;
                record.not_before = None;
            }
            state => {
                return Err(JobError::WrongState {
                    job_id: job_id.to_string(),
                    state: state.to_string(),
                    message: "only a failed, dead, cancelled or timed-out job can be retried"
                        .into(),
                })
            }
        }
        let mut set = Self::record_fields(&record)?;
        set.push(("token", String::new()));
        if !self.cas(job_id, &fields.token, &fields.state, &set).await? {
            return Err(JobError::WrongState {
                job_id: job_id.to_string(),
                state: fields.state,
                message: "it changed while being retried; try again".into(),
            });
        }
        self.enqueue(job_id, record.priority).await?;
        Ok(record)
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
        let n: i64 = self
            .query(redis::cmd("INCR").arg(format!("{key}:evn")))
            .await?;
        let line = serde_json::json!({"n": n, "event": event}).to_string();
        let mut pipe = redis::pipe();
        pipe.cmd("RPUSH")
            .arg(format!("{key}:events"))
            .arg(line)
            .ignore();
        pipe.cmd("LTRIM")
            .arg(format!("{key}:events"))
            .arg(-MAX_EVENTS)
            .arg(-1)
            .ignore();
        let mut con = self.con.clone();
        pipe.query_async::<()>(&mut con)
            .await
            .map_err(|e| JobError::redis(&self.url, e))
    }

    async fn events(
        &self,
        job_id: &str,
        after: u64,
        limit: usize,
    ) -> Result<Vec<(u64, serde_json::Value)>, JobError> {
        let lines: Vec<String> = self
            .query(
                redis::cmd("LRANGE")
                    .arg(format!("{}:events", self.job_key(job_id)))
                    .arg(0)
                    .arg(-1),
            )
            .await?;
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
        let ids = self.all_ids().await?;
        let mut out = BTreeMap::new();
        for chunk in ids.chunks(500) {
            let mut pipe = redis::pipe();
            for id in chunk {
                pipe.cmd("HGET").arg(self.job_key(id)).arg("state");
            }
            let mut con = self.con.clone();
            let states: Vec<Option<String>> = pipe
                .query_async(&mut con)
                .await
                .map_err(|e| JobError::redis(&self.url, e))?;
            for state in states.into_iter().flatten() {
                if let Ok(state) = state.parse::<JobState>() {
                    *out.entry(state).or_insert(0) += 1;
                }
            }
        }
        Ok(out)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn passwords_are_taken_out_of_messages() {
        assert_eq!(
            redact_message(
                "auth failed for redis://:s3cret@h:1",
                "redis://:s3cret@h:1/0"
            ),
            "auth failed for redis://:***@h:1"
        );
        assert_eq!(
            redact_message("no password", "redis://h:1/0"),
            "no password"
        );
    }
}
