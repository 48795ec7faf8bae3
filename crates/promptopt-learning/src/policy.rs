//! The loop's state and its decisions, as pure functions of the state, the settings and the
//! figures: when to retrain, whether a candidate is good enough, whether a deployed version
//! stays or is rolled back.

use promptopt_core::Example;
use serde::{Deserialize, Serialize};

use crate::config::LearningConfig;
use crate::monitor::LiveMetric;

/// Where the loop of one model stands; stored in the server's database so that a restarted
/// server (or another one on the same database) carries on.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(tag = "phase", rename_all = "snake_case")]
pub enum Phase {
    /// Watching the live outcomes for a trigger.
    #[default]
    Watching,
    /// A retraining job runs on the queue.
    Retraining {
        /// The job.
        job_id: String,
        /// What started it.
        trigger: String,
        /// When it was submitted.
        started_at: f64,
        /// The production version it must beat.
        current: String,
        /// The recent examples held out to compare the two.
        holdout: Vec<Example>,
    },
    /// The new version runs in an A/B experiment against production.
    Experimenting {
        /// The experiment's name.
        experiment: String,
        /// The candidate version.
        version: String,
        /// The production version.
        previous: String,
    },
    /// A version went live; its live metric is watched against the previous one's.
    Guarding {
        /// The version now in production.
        version: String,
        /// The version it replaced.
        previous: String,
        /// When it went live.
        since: f64,
        /// The previous version's live metric when it was replaced, if it had outcomes.
        baseline: Option<f64>,
        /// Outcomes the new version had when it went live (only later ones count).
        outcomes_before: u64,
    },
}

impl Phase {
    /// Its name: `watching`, `retraining`, `experimenting`, `guarding`.
    pub fn name(&self) -> &'static str {
        match self {
            Phase::Watching => "watching",
            Phase::Retraining { .. } => "retraining",
            Phase::Experimenting { .. } => "experimenting",
            Phase::Guarding { .. } => "guarding",
        }
    }
}

/// The loop's state for one model.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(default)]
pub struct LoopState {
    /// The phase.
    pub phase: Phase,
    /// Failed retrainings in a row.
    pub failures: u32,
    /// No retraining starts before this time (backoff after failures).
    pub next_attempt_at: Option<f64>,
    /// When the last retraining was submitted (or the loop was enabled, before any).
    pub last_retrain_at: Option<f64>,
    /// Labelled outcomes since the last retraining.
    pub labels_since_retrain: u64,
    /// The `production` version the loop last saw.
    pub production: Option<String>,
    /// Outcomes updated up to this time are processed.
    pub cursor: f64,
    /// Retrainings submitted.
    pub retrains: u64,
    /// The trigger of a retraining that failed: it fires again once the backoff has passed.
    pub retry_trigger: Option<String>,
}

/// Whether a retraining is due now, and why. `drift` names a drift a detector signalled.
pub fn due_trigger(
    config: &LearningConfig,
    state: &LoopState,
    now: f64,
    drift: Option<&str>,
) -> Option<String> {
    if state.phase != Phase::Watching {
        return None;
    }
    if state.next_attempt_at.is_some_and(|t| now < t) {
        return None;
    }
    if state.labels_since_retrain < config.min_new_labels {
        return None;
    }
    if let Some(failed) = &state.retry_trigger {
        return Some(format!("retry after a failed retraining ({failed})"));
    }
    if config.triggers.drift {
        if let Some(reason) = drift {
            return Some(format!("drift: {reason}"));
        }
    }
    if let Some(n) = config.triggers.new_labels {
        if state.labels_since_retrain >= n {
            return Some(format!(
                "{} new labelled predictions (trigger at {n})",
                state.labels_since_retrain
            ));
        }
    }
    if let Some(every) = &config.triggers.every {
        if let (Ok(span), Some(last)) = (every.duration("triggers.every"), state.last_retrain_at) {
            if now - last >= span.as_secs_f64() {
                return Some(format!("schedule: every {}", every.0));
            }
        }
    }
    None
}

/// Whether a candidate scoring `new` on the held-out slice replaces the current version
/// scoring `current`: better, by at least the margin.
pub fn better(config: &LearningConfig, new: f64, current: f64) -> bool {
    new > current && new - current >= config.deploy.margin
}

/// What the guard concludes about a deployed version.
#[derive(Debug, Clone, PartialEq)]
pub enum Verdict {
    /// Not enough outcomes yet.
    Wait,
    /// It holds up: the guard ends.
    Keep {
        /// Its live metric.
        live: f64,
    },
    /// It does worse than the version it replaced by more than the margin.
    RollBack {
        /// Its live metric.
        live: f64,
        /// The previous version's.
        baseline: f64,
    },
}

/// Judges a deployed version from its live metric (`live`, counting only outcomes after it
/// went live: `outcomes_before` are subtracted) against the previous version's `baseline`.
pub fn guard(
    config: &LearningConfig,
    live: Option<&LiveMetric>,
    outcomes_before: u64,
    baseline: Option<f64>,
) -> Verdict {
    let Some(live) = live else {
        return Verdict::Wait;
    };
    if live.total.saturating_sub(outcomes_before) < config.guard.min_outcomes {
        return Verdict::Wait;
    }
    match baseline {
        Some(baseline) if live.mean < baseline - config.guard.margin => Verdict::RollBack {
            live: live.mean,
            baseline,
        },
        _ => Verdict::Keep { live: live.mean },
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;
    use crate::config::Span;

    fn watching(labels: u64) -> LoopState {
        LoopState {
            labels_since_retrain: labels,
            last_retrain_at: Some(0.0),
            ..LoopState::default()
        }
    }

    #[test]
    fn triggers_need_fresh_labels_and_respect_the_backoff() {
        let mut config = LearningConfig::default();
        config.triggers.new_labels = Some(100);
        config.triggers.every = Some(Span::from("1h"));
        assert_eq!(due_trigger(&config, &watching(5), 10.0, Some("ddm")), None);
        assert_eq!(
            due_trigger(&config, &watching(30), 10.0, Some("ddm on the error rate")).unwrap(),
            "drift: ddm on the error rate"
        );
        assert!(due_trigger(&config, &watching(120), 10.0, None)
            .unwrap()
            .contains("120 new labelled"));
        assert_eq!(due_trigger(&config, &watching(30), 10.0, None), None);
        assert!(due_trigger(&config, &watching(30), 3600.0, None)
            .unwrap()
            .starts_with("schedule"));
        let mut backing_off = watching(500);
        backing_off.next_attempt_at = Some(100.0);
        assert_eq!(due_trigger(&config, &backing_off, 50.0, Some("x")), None);
        assert!(due_trigger(&config, &backing_off, 100.0, Some("x")).is_some());
        backing_off.retry_trigger = Some("drift: ddm".into());
        assert_eq!(
            due_trigger(&config, &backing_off, 100.0, None).unwrap(),
            "retry after a failed retraining (drift: ddm)"
        );
        let mut busy = watching(500);
        busy.phase = Phase::Guarding {
            version: "2.0.0".into(),
            previous: "1.0.0".into(),
            since: 0.0,
            baseline: None,
            outcomes_before: 0,
        };
        assert_eq!(due_trigger(&config, &busy, 50.0, Some("x")), None);
    }

    #[test]
    fn a_candidate_must_beat_the_margin() {
        let mut config = LearningConfig::default();
        assert!(better(&config, 0.8, 0.7));
        assert!(!better(&config, 0.7, 0.7));
        config.deploy.margin = 0.05;
        assert!(!better(&config, 0.74, 0.7));
        assert!(better(&config, 0.76, 0.7));
    }

    #[test]
    fn the_guard_waits_then_keeps_or_rolls_back() {
        let config = LearningConfig::default();
        let live = |mean: f64, total: u64| LiveMetric {
            model_id: "t@2.0.0".into(),
            mean,
            window: 50,
            total,
        };
        assert_eq!(guard(&config, None, 0, Some(0.9)), Verdict::Wait);
        assert_eq!(
            guard(&config, Some(&live(0.2, 60)), 20, Some(0.9)),
            Verdict::Wait
        );
        assert_eq!(
            guard(&config, Some(&live(0.2, 60)), 0, Some(0.9)),
            Verdict::RollBack {
                live: 0.2,
                baseline: 0.9
            }
        );
        assert_eq!(
            guard(&config, Some(&live(0.87, 60)), 0, Some(0.9)),
            Verdict::Keep { live: 0.87 }
        );
        assert_eq!(
            guard(&config, Some(&live(0.1, 60)), 0, None),
            Verdict::Keep { live: 0.1 }
        );
    }

    #[test]
    fn the_state_round_trips_through_json() {
        let state = LoopState {
            phase: Phase::Retraining {
                job_id: "job-1".into(),
                trigger: "drift".into(),
                started_at: 1.0,
                current: "1.0.0".into(),
                holdout: vec![Example::new().with("text", "a").with("label", "b")],
            },
            failures: 2,
            ..LoopState::default()
        };
        let text = serde_json::to_string(&state).unwrap();
        assert!(text.contains("\"phase\":\"retraining\""), "{text}");
        let back: LoopState = serde_json::from_str(&text).unwrap();
        assert_eq!(back, state);
    }
}
