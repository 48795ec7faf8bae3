//! The continuous-learning loop of `promptopt serve`: for every model with a `learning:` block
//! (in the server's configuration or set with `PUT /v1/models/{name}/learning`), it reads the
//! new outcomes, feeds the live metric and the drift detectors, and when a trigger fires,
//! retrains on the queue, validates the new version against production on held-out recent data,
//! deploys it (promote, or an A/B experiment) and guards it, rolling back when it does worse.
//!
//! Several servers may share one database: a lock per model in the database lets one of them
//! run that model's loop at a time (taken again by another when it is not renewed), so there
//! is one retraining at a time per model. Every decision is a row of `learning_events`.

pub(crate) mod retrain;
pub(crate) mod routes;
mod step;

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use promptopt_experiments::{ExperimentStore, LearningEvent};
use promptopt_learning::config::LearningConfig;
use promptopt_learning::monitor::Monitor;
use promptopt_learning::policy::LoopState;
use serde_json::Value;
use tokio::sync::Mutex;

use crate::AppState;

/// How often the loop wakes to see which models are due.
const TICK: Duration = Duration::from_millis(200);

/// What one server keeps in memory for a model's loop.
pub(crate) struct ModelLoop {
    pub(crate) monitor: Monitor,
    /// The settings the monitor was built with (rebuilt when they change).
    pub(crate) config: LearningConfig,
    /// When the model was last stepped (seconds since the epoch).
    pub(crate) last_step: f64,
    /// The drift signalled since the detectors last started, in words.
    pub(crate) drift: Option<String>,
    /// The reference distributions of the production version's training data.
    pub(crate) reference: Option<step::Reference>,
    /// Whether the input and output drift of this production version was reported already.
    pub(crate) psi_reported: bool,
}

impl ModelLoop {
    /// A loop for `config`, its monitor fresh.
    pub(crate) fn new(config: LearningConfig) -> Result<Self, promptopt_learning::LearningError> {
        Ok(Self {
            monitor: Monitor::new(config.window, &config.detectors)?,
            config,
            last_step: 0.0,
            drift: None,
            reference: None,
            psi_reported: false,
        })
    }

    /// Watches a new production stream: the detectors start afresh and past drift is
    /// forgotten.
    pub(crate) fn restart_watch(&mut self) {
        // The settings were checked when the monitor was built, so rebuilding cannot fail.
        let _ = self.monitor.reset_detectors();
        self.drift = None;
        self.psi_reported = false;
    }
}

/// The loops of one server.
pub(crate) struct Learning {
    /// This server's name in the locks.
    pub(crate) holder: String,
    pub(crate) loops: Mutex<HashMap<String, ModelLoop>>,
}

impl Learning {
    pub(crate) fn new() -> Self {
        Self {
            holder: format!("server-{:016x}", rand::random::<u64>()),
            loops: Mutex::new(HashMap::new()),
        }
    }
}

/// Records a decision (logged as well); a failure to record is logged, never fatal.
pub(crate) async fn record(
    store: &ExperimentStore,
    model: &str,
    kind: &str,
    reason: impl Into<String>,
    detail: Value,
) {
    // The figures are always an object (the API promises one).
    let detail = match detail {
        Value::Object(_) => detail,
        Value::Null => Value::Object(serde_json::Map::new()),
        other => serde_json::json!({ "value": other }),
    };
    let event = LearningEvent {
        event_id: format!("lev-{:016x}", rand::random::<u64>()),
        model: model.to_string(),
        at: promptopt_jobs::now(),
        kind: kind.to_string(),
        reason: reason.into(),
        detail,
    };
    tracing::info!(model, kind, reason = %event.reason, "learning");
    if let Err(e) = store.record_learning_event(&event).await {
        tracing::warn!(model, kind, error = %e, "cannot record a learning decision");
    }
}

/// Stores the settings of the server's configuration (`models.NAME.learning`), enabled, keeping
/// any state the database has.
pub(crate) async fn apply_configured(state: &AppState) -> Result<(), crate::ServerError> {
    let Some(exps) = &state.experiments else {
        return Ok(());
    };
    for (name, settings) in &state.config.models {
        let Some(config) = &settings.learning else {
            continue;
        };
        let value = serde_json::to_value(config).unwrap_or(Value::Null);
        let existing = exps
            .store
            .learning(name)
            .await
            .map_err(crate::ServerError::Database)?;
        if existing.as_ref().map(|r| (&r.config, r.enabled)) != Some((&value, true)) {
            let initial = initial_state();
            exps.store
                .set_learning(name, &value, true, &initial, promptopt_jobs::now())
                .await
                .map_err(crate::ServerError::Database)?;
            record(
                &exps.store,
                name,
                "enabled",
                "from the server's configuration",
                value,
            )
            .await;
        }
    }
    Ok(())
}

/// The state a newly enabled loop starts with: the schedule counts from now.
pub(crate) fn initial_state() -> Value {
    let state = LoopState {
        last_retrain_at: Some(promptopt_jobs::now()),
        cursor: promptopt_jobs::now(),
        ..LoopState::default()
    };
    serde_json::to_value(state).unwrap_or(Value::Null)
}

/// Runs the loop until the server shuts down.
pub(crate) fn spawn(state: AppState) {
    let mut shutdown = state.shutdown.clone();
    tokio::spawn(async move {
        loop {
            tokio::select! {
                _ = tokio::time::sleep(TICK) => {}
                _ = shutdown.changed() => return,
            }
            if *shutdown.borrow() {
                return;
            }
            step::tick(&state).await;
        }
    });
}

/// Makes `learning` reachable from handlers that only hold the state.
pub(crate) fn of(state: &AppState) -> Option<&Arc<Learning>> {
    state.learning.as_ref()
}
