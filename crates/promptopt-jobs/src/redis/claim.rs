//! Claiming: reading stream entries, taking over expired leases, and taking a job under a new
//! lease (or burying it when its record does not parse).

use std::time::Duration;

use redis::Value;

use super::scripts::{array, entries};
use super::{Cas, Change, Fields, RedisQueue, RetrySet, GROUP, STALE_BATCH};
use crate::transition::{new_lease_token, unreadable};
use crate::{now, Claim, JobError, JobRecord, JobSpec, Priority};

impl RedisQueue {
    /// A queued job delivered before its backoff passed: back to the retry set (unless it is
    /// there already), and the delivery acknowledged.
    async fn defer(&self, id: &str, due: f64, delivery: &str) -> Result<(), JobError> {
        self.query::<Value>(
            redis::cmd("ZADD")
                .arg(self.key("delayed"))
                .arg("NX")
                .arg(due)
                .arg(id),
        )
        .await?;
        self.ack(delivery).await
    }

    /// A job whose record does not parse: `dead`, with the reason, in a record that does.
    async fn bury(
        &self,
        id: &str,
        seen: &Fields,
        reason: &str,
        delivery: &str,
    ) -> Result<(), JobError> {
        let created: Option<f64> = self
            .query(redis::cmd("ZSCORE").arg(self.key("jobs")).arg(id))
            .await?;
        let t = now();
        let priority = seen
            .priority
            .as_deref()
            .and_then(|p| p.parse().ok())
            .unwrap_or_default();
        let record = unreadable(id, priority, created.unwrap_or(t), reason, t);
        let mut set = Self::record_fields(&record)?;
        set.push(("token", String::new()));
        let change = Change {
            set,
            ack: Some(delivery.to_string()),
            retry_set: RetrySet::Remove,
            ..Change::default()
        };
        // If the job changed meanwhile, its entry stays pending and the next claim looks again.
        self.update(id, seen, true, change).await?;
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
                self.bury(&id, &fields, &reason, &delivery).await?;
                return Ok(None);
            }
        };
        let reclaim = fields.state == "running";
        if let Some(due) = record.not_before.filter(|due| !reclaim && *due > t) {
            self.defer(&id, due, &delivery).await?;
            return Ok(None);
        }
        if !record.begin_attempt(worker, reclaim, t) {
            let mut set = Self::record_fields(&record)?;
            set.extend([("token", String::new()), ("lease_until", String::new())]);
            let change = Change {
                set,
                ack: Some(delivery),
                ..Change::default()
            };
            self.update(&id, &fields, true, change).await?;
            return Ok(None);
        }
        let token = new_lease_token();
        let mut set = Self::record_fields(&record)?;
        set.extend([
            ("token", token.clone()),
            ("lease_until", (t + lease.as_secs_f64()).to_string()),
            ("finishing", "0".to_string()),
            ("delivery", delivery.clone()),
        ]);
        let change = Change {
            set,
            ..Change::default()
        };
        // When the job changed meanwhile, the entry stays pending: the next claim looks again.
        if !matches!(
            self.update(&id, &fields, true, change).await?,
            Cas::Done { .. }
        ) {
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

    /// Takes over a pending entry of `stream` that no live lease covers (its worker stopped
    /// heartbeating, or stopped between reading the entry and taking the job): found by a script
    /// that checks each pending entry against its job's `lease_until`, then moved to `worker` with
    /// `XCLAIM`.
    async fn reclaim_expired(
        &self,
        stream: &str,
        worker: &str,
        lease: Duration,
    ) -> Result<Option<Claim>, JobError> {
        let mut invocation = self.find_stale.key(stream);
        invocation
            .arg(GROUP)
            .arg(now())
            .arg(&self.prefix)
            .arg(STALE_BATCH);
        let stale: Vec<String> = self.invoke(&invocation).await?;
        for entry in stale {
            let moved = self
                .query::<Value>(
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

    /// One claim: retries whose backoff passed go back on their streams, then each priority in
    /// the order given is looked at, expired leases first, then new entries.
    pub(super) async fn claim_once(
        &self,
        worker: &str,
        priorities: &[Priority],
        lease: Duration,
    ) -> Result<Option<Claim>, JobError> {
        let mut invocation = self.requeue.key(self.key("delayed"));
        invocation.arg(now()).arg(&self.prefix);
        self.invoke::<i64>(&invocation).await?;
        for &p in priorities {
            let stream = self.stream(p);
            // Entries whose worker stopped heartbeating come first: they are older.
            if let Some(claim) = self.reclaim_expired(&stream, worker, lease).await? {
                return Ok(Some(claim));
            }
            for _ in 0..64 {
                let reply = self
                    .query::<Value>(
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
}
