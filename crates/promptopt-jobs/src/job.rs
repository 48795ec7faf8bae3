//! What a job is: its specification, state, progress and record.

use std::fmt;
use std::str::FromStr;
use std::time::Duration;

use serde::{Deserialize, Serialize};

use crate::JobError;

/// How urgent a job is. Workers take `high` before `normal` before `low`, with a bound on
/// starvation (see [`crate::FAIRNESS_EVERY`]).
#[derive(
    Debug, Clone, Copy, Default, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize,
)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[serde(rename_all = "lowercase")]
pub enum Priority {
    /// Taken first.
    High,
    /// The default.
    #[default]
    Normal,
    /// Taken when nothing more urgent waits (or at the fairness turn).
    Low,
}

impl Priority {
    /// Every priority, most urgent first.
    pub const ALL: [Priority; 3] = [Priority::High, Priority::Normal, Priority::Low];

    /// The lowercase name.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::High => "high",
            Self::Normal => "normal",
            Self::Low => "low",
        }
    }

    /// Parses a comma-separated list (`high,normal`), most urgent first, without repeats.
    pub fn parse_list(list: &str) -> Result<Vec<Priority>, JobError> {
        let mut out: Vec<Priority> = Vec::new();
        for part in list.split(',').map(str::trim).filter(|p| !p.is_empty()) {
            let p: Priority = part.parse()?;
            if !out.contains(&p) {
                out.push(p);
            }
        }
        if out.is_empty() {
            return Err(JobError::Invalid {
                field: "queues".into(),
                message: "no priority given (use `high`, `normal` and/or `low`)".into(),
            });
        }
        out.sort();
        Ok(out)
    }
}

impl fmt::Display for Priority {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl FromStr for Priority {
    type Err = JobError;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s.to_ascii_lowercase().as_str() {
            "high" => Ok(Self::High),
            "normal" => Ok(Self::Normal),
            "low" => Ok(Self::Low),
            other => Err(JobError::Invalid {
                field: "priority".into(),
                message: format!("`{other}` is not one of `high`, `normal`, `low`"),
            }),
        }
    }
}

/// Where a job is in its life: `queued → running → succeeded | failed | cancelled | timed_out`,
/// and `dead` once its last attempt failed (or its record could not be read).
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[serde(rename_all = "snake_case")]
pub enum JobState {
    /// Waiting for a worker (also between attempts, until `next_attempt_at`).
    Queued,
    /// A worker holds its lease.
    Running,
    /// Finished; the result is stored.
    Succeeded,
    /// Failed with an error that retrying cannot fix (an invalid request, a metric that fails).
    Failed,
    /// Stopped on request.
    Cancelled,
    /// Stopped at its timeout; the best program found so far is the result.
    TimedOut,
    /// Every attempt failed, or the record was unreadable.
    Dead,
}

impl JobState {
    /// Every state.
    pub const ALL: [JobState; 7] = [
        JobState::Queued,
        JobState::Running,
        JobState::Succeeded,
        JobState::Failed,
        JobState::Cancelled,
        JobState::TimedOut,
        JobState::Dead,
    ];

    /// The snake_case name.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Queued => "queued",
            Self::Running => "running",
            Self::Succeeded => "succeeded",
            Self::Failed => "failed",
            Self::Cancelled => "cancelled",
            Self::TimedOut => "timed_out",
            Self::Dead => "dead",
        }
    }

    /// Whether the job will not change any more (short of `jobs retry`).
    pub fn is_final(self) -> bool {
        !matches!(self, Self::Queued | Self::Running)
    }
}

impl fmt::Display for JobState {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl FromStr for JobState {
    type Err = JobError;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Self::ALL
            .into_iter()
            .find(|state| state.as_str() == s.to_ascii_lowercase().replace('-', "_"))
            .ok_or_else(|| JobError::Invalid {
                field: "state".into(),
                message: format!(
                    "`{s}` is not one of {}",
                    Self::ALL
                        .iter()
                        .map(|s| format!("`{s}`"))
                        .collect::<Vec<_>>()
                        .join(", ")
                ),
            })
    }
}

/// What is submitted: the optimization request and how to run it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct JobSpec {
    /// The optimization request, as the CLI reads it (already validated by the submitter).
    pub request: serde_json::Value,
    /// The job's name (the request's `name`).
    #[serde(default)]
    pub name: Option<String>,
    /// How urgent it is.
    #[serde(default)]
    pub priority: Priority,
    /// Stop the optimization after this many seconds, keeping the best so far.
    #[serde(default)]
    pub timeout_seconds: Option<f64>,
    /// Attempts before the job is `dead` (at least 1).
    #[serde(default = "default_attempts")]
    pub max_attempts: u32,
}

fn default_attempts() -> u32 {
    3
}

impl JobSpec {
    /// A job of normal priority, no timeout and three attempts.
    pub fn new(request: serde_json::Value) -> Self {
        let name = request
            .get("name")
            .and_then(|n| n.as_str())
            .map(str::to_string);
        Self {
            request,
            name,
            priority: Priority::Normal,
            timeout_seconds: None,
            max_attempts: default_attempts(),
        }
    }

    /// A job for a validated `request`: its datasets read into it (so any worker can run it),
    /// with `priority` (`high`, `normal`, `low`), an optional `timeout` (`90s`, `30m`, `2h`) and
    /// `max_attempts`. The request's `name` names the job.
    pub fn for_request(
        mut request: promptopt_optimize::OptimizationRequest,
        priority: &str,
        timeout: Option<&str>,
        max_attempts: u32,
    ) -> Result<Self, JobError> {
        request.inline_data()?;
        let value = serde_json::to_value(&request).map_err(|e| JobError::Invalid {
            field: "request".into(),
            message: e.to_string(),
        })?;
        let mut spec = Self::new(value);
        spec.priority = priority.parse()?;
        spec.timeout_seconds = timeout
            .map(parse_duration)
            .transpose()?
            .map(|d| d.as_secs_f64());
        spec.max_attempts = max_attempts;
        spec.validate()?;
        Ok(spec)
    }

    /// Checks the settings (not the request, which the submitter validates).
    pub fn validate(&self) -> Result<(), JobError> {
        if self.max_attempts == 0 {
            return Err(JobError::Invalid {
                field: "max_attempts".into(),
                message: "must be at least 1".into(),
            });
        }
        if let Some(t) = self.timeout_seconds {
            if !(t.is_finite() && t > 0.0) {
                return Err(JobError::Invalid {
                    field: "timeout".into(),
                    message: format!("must be a positive number of seconds, not {t}"),
                });
            }
        }
        if !self.request.is_object() {
            return Err(JobError::Invalid {
                field: "request".into(),
                message: "must be a JSON object".into(),
            });
        }
        Ok(())
    }
}

/// Parses a duration such as `90`, `90s`, `30m`, `2h` or `1h30m` (see
/// [`promptopt_core::parse_duration`]).
pub fn parse_duration(text: &str) -> Result<Duration, JobError> {
    promptopt_core::parse_duration(text).map_err(|message| JobError::Invalid {
        field: "timeout".into(),
        message,
    })
}

/// Where a running job is, fed from its event stream (throttled).
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct Progress {
    /// The pipeline stage (`load`, `baseline`, `optimize`, `validate`, `test`, `save`).
    pub stage: String,
    /// Trials scored so far.
    pub trial: u64,
    /// Trials planned, when the algorithm knows.
    #[serde(default)]
    pub trials_total: Option<u64>,
    /// The best score so far.
    #[serde(default)]
    pub best_score: Option<f64>,
    /// LM calls spent.
    pub lm_calls: u64,
    /// Money spent (USD).
    pub cost_usd: f64,
}

/// A job as the queue stores and reports it (`promptopt jobs status --json`, `GET /v1/jobs/{id}`).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct JobRecord {
    /// The job's id (`job-` and 16 hex digits).
    pub job_id: String,
    /// The request's name.
    #[serde(default)]
    pub name: Option<String>,
    /// Where it is in its life.
    pub state: JobState,
    /// How urgent it is.
    pub priority: Priority,
    /// Attempts started so far.
    pub attempts: u32,
    /// Attempts allowed.
    pub max_attempts: u32,
    /// The timeout of one attempt, in seconds.
    #[serde(default)]
    pub timeout_seconds: Option<f64>,
    /// When it was submitted (seconds since the Unix epoch).
    pub created_at: f64,
    /// When its current or last attempt started.
    #[serde(default)]
    pub started_at: Option<f64>,
    /// When it reached a final state.
    #[serde(default)]
    pub finished_at: Option<f64>,
    /// The worker holding or last holding it.
    #[serde(default)]
    pub worker: Option<String>,
    /// The latest progress.
    #[serde(default)]
    pub progress: Option<Progress>,
    /// The last error (a failed attempt, or the final one).
    #[serde(default)]
    pub error: Option<String>,
    /// The saved model, once succeeded (or timed out with a model).
    #[serde(default)]
    pub model_id: Option<String>,
    /// The optimization's id, once it finished.
    #[serde(default)]
    pub optimization_id: Option<String>,
    /// A cancel was asked while it ran; the worker stops it at its next heartbeat.
    #[serde(default)]
    pub cancel_requested: bool,
    /// A queued retry is not taken before this time (backoff after a transient failure).
    #[serde(default)]
    pub not_before: Option<f64>,
}

impl JobRecord {
    /// A freshly queued record.
    pub fn new(job_id: String, spec: &JobSpec, now: f64) -> Self {
        Self {
            job_id,
            name: spec.name.clone(),
            state: JobState::Queued,
            priority: spec.priority,
            attempts: 0,
            max_attempts: spec.max_attempts,
            timeout_seconds: spec.timeout_seconds,
            created_at: now,
            started_at: None,
            finished_at: None,
            worker: None,
            progress: None,
            error: None,
            model_id: None,
            optimization_id: None,
            cancel_requested: false,
            not_before: None,
        }
    }
}

/// A new job id: `job-` and 16 random hex digits.
pub fn new_job_id() -> String {
    format!("job-{:016x}", rand::random::<u64>())
}

/// Seconds since the Unix epoch.
pub fn now() -> f64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_secs_f64())
        .unwrap_or(0.0)
}

/// How an attempt ended, as the worker reports it.
#[derive(Debug, Clone, PartialEq)]
pub enum Outcome {
    /// The optimization finished: its result (JSON of `OptimizationResult`) and saved model.
    Succeeded {
        /// The result.
        result: serde_json::Value,
        /// The saved model, if any.
        model_id: Option<String>,
    },
    /// Stopped at the timeout with the best so far.
    TimedOut {
        /// The result.
        result: serde_json::Value,
        /// The saved model, if any.
        model_id: Option<String>,
    },
    /// Stopped on request (the result of the best so far, when there was one).
    Cancelled {
        /// The result, if the pipeline got as far as one.
        result: Option<serde_json::Value>,
    },
    /// The attempt failed. A transient failure (LM server unreachable, 5xx, a timeout of the
    /// model) is queued again with backoff while attempts remain, and the job is `dead` after the
    /// last one; any other failure (an invalid request, a metric that fails) ends it `failed`.
    Failed {
        /// What went wrong.
        error: String,
        /// Whether trying again may succeed.
        transient: bool,
    },
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    #[test]
    fn durations_parse() {
        assert_eq!(parse_duration("90").unwrap(), Duration::from_secs(90));
        assert_eq!(parse_duration("30m").unwrap(), Duration::from_secs(1800));
        assert_eq!(parse_duration("1h30m").unwrap(), Duration::from_secs(5400));
        assert_eq!(parse_duration("1.5s").unwrap(), Duration::from_millis(1500));
        for bad in ["", "0", "-3", "5x", "m", "10m5"] {
            let e = parse_duration(bad).unwrap_err().to_string();
            assert!(e.contains("timeout"), "{bad}: {e}");
        }
    }

    #[test]
    fn priorities_and_states_parse() {
        assert_eq!(
            Priority::parse_list("low, high").unwrap(),
            vec![Priority::High, Priority::Low]
        );
        assert!(Priority::parse_list("urgent").is_err());
        assert!(Priority::parse_list(" , ").is_err());
        assert_eq!("timed-out".parse::<JobState>().unwrap(), JobState::TimedOut);
        let e = "done".parse::<JobState>().unwrap_err().to_string();
        assert!(e.contains("`succeeded`"), "{e}");
        assert!(JobState::Dead.is_final() && !JobState::Running.is_final());
    }

    #[test]
    fn spec_checks_its_settings() {
        let mut spec = JobSpec::new(serde_json::json!({"name": "sst2"}));
        assert_eq!(spec.name.as_deref(), Some("sst2"));
        spec.validate().unwrap();
        spec.max_attempts = 0;
        assert!(spec
            .validate()
            .unwrap_err()
            .to_string()
            .contains("max_attempts"));
        spec.max_attempts = 1;
        spec.timeout_seconds = Some(-1.0);
        assert!(spec.validate().unwrap_err().to_string().contains("timeout"));
    }
}
