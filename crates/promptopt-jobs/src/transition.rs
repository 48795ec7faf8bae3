//! The changes of a job's record that both backends make the same way; each backend only wraps
//! them in its own atomic update.

use crate::{backoff, new_job_id, JobError, JobRecord, JobSpec, JobState, Outcome, Priority};

/// A new lease token: `lease-` and 16 random hex digits.
pub(crate) fn new_lease_token() -> String {
    new_job_id().replacen("job-", "lease-", 1)
}

/// The record of a job whose stored record does not parse: `dead`, with the reason.
pub(crate) fn unreadable(
    job_id: &str,
    priority: Priority,
    created_at: f64,
    reason: &str,
    now: f64,
) -> JobRecord {
    let mut record = JobRecord::new(
        job_id.to_string(),
        &JobSpec::new(serde_json::json!({})),
        created_at,
    );
    record.priority = priority;
    record.state = JobState::Dead;
    record.finished_at = Some(now);
    record.error = Some(format!("The job's record does not parse: {reason}"));
    record
}

impl JobRecord {
    /// Starts an attempt for `worker`: `running`, one attempt more. A job taken over from a worker
    /// that stopped (`reclaimed`) on its last attempt becomes `dead` instead, and `false` is
    /// returned.
    pub(crate) fn begin_attempt(&mut self, worker: &str, reclaimed: bool, now: f64) -> bool {
        let previous = self.worker.as_deref().unwrap_or("?").to_string();
        if reclaimed && self.attempts >= self.max_attempts {
            self.state = JobState::Dead;
            self.finished_at = Some(now);
            self.error = Some(format!(
                "The worker running it (`{previous}`) stopped responding, on attempt {} of {}",
                self.attempts, self.max_attempts
            ));
            return false;
        }
        if reclaimed {
            self.error = Some(format!(
                "The worker `{previous}` stopped responding; attempt {} takes over",
                self.attempts + 1
            ));
        }
        self.state = JobState::Running;
        self.attempts += 1;
        self.worker = Some(worker.to_string());
        self.started_at = Some(now);
        self.not_before = None;
        true
    }

    /// Applies how an attempt ended; returns the result to store, as JSON text.
    pub(crate) fn apply(&mut self, outcome: &Outcome, now: f64) -> Option<String> {
        let optimization_id = |r: &serde_json::Value| {
            r.get("optimization_id")
                .and_then(|v| v.as_str())
                .map(str::to_string)
        };
        let mut result = None;
        match outcome {
            Outcome::Succeeded {
                result: r,
                model_id,
            }
            | Outcome::TimedOut {
                result: r,
                model_id,
            } => {
                self.state = if matches!(outcome, Outcome::Succeeded { .. }) {
                    self.error = None;
                    JobState::Succeeded
                } else {
                    JobState::TimedOut
                };
                self.model_id = model_id.clone();
                self.optimization_id = optimization_id(r);
                result = Some(r.to_string());
            }
            Outcome::Cancelled { result: r } => {
                self.state = JobState::Cancelled;
                if let Some(r) = r {
                    self.optimization_id = optimization_id(r);
                    result = Some(r.to_string());
                }
            }
            Outcome::Failed { error, transient } => {
                self.error = Some(error.clone());
                if !*transient {
                    self.state = JobState::Failed;
                } else if self.attempts >= self.max_attempts {
                    self.state = JobState::Dead;
                } else {
                    self.state = JobState::Queued;
                    self.not_before = Some(now + backoff(self.attempts).as_secs_f64());
                }
            }
        }
        if self.state.is_final() {
            self.finished_at = Some(now);
        }
        result
    }

    /// `jobs cancel`: a queued job is `cancelled` at once, a running one is flagged for its
    /// worker; a final one is refused.
    pub(crate) fn cancel(&mut self, now: f64) -> Result<(), JobError> {
        match self.state {
            JobState::Queued => {
                self.state = JobState::Cancelled;
                self.finished_at = Some(now);
            }
            JobState::Running => self.cancel_requested = true,
            state => {
                return Err(JobError::WrongState {
                    job_id: self.job_id.clone(),
                    state: state.to_string(),
                    message: "only a queued or running job can be cancelled".into(),
                })
            }
        }
        Ok(())
    }

    /// `jobs retry`: a failed, dead, cancelled or timed-out job is queued with fresh attempts.
    pub(crate) fn reset_for_retry(&mut self) -> Result<(), JobError> {
        match self.state {
            JobState::Failed | JobState::Dead | JobState::Cancelled | JobState::TimedOut => {
                self.state = JobState::Queued;
                self.attempts = 0;
                self.finished_at = None;
                self.cancel_requested = false;
                self.not_before = None;
                Ok(())
            }
            state => Err(JobError::WrongState {
                job_id: self.job_id.clone(),
                state: state.to_string(),
                message: "only a failed, dead, cancelled or timed-out job can be retried".into(),
            }),
        }
    }
}
