//! One step of a model's loop: outcomes in, decisions out.

use std::collections::BTreeMap;

use promptopt_experiments::{ExperimentState, ExperimentStore, LearningRow};
use promptopt_jobs::JobState;
use promptopt_learning::config::{DeployPolicy, LearningConfig};
use promptopt_learning::drift;
use promptopt_learning::policy::{self, LoopState, Phase, Verdict};
use promptopt_registry::Version;
use serde_json::{json, Value};

use super::retrain::{self, first_output, version_of};
use super::{record, Learning, ModelLoop};
use crate::AppState;

/// Outcomes read per step at most.
const OUTCOMES_PER_STEP: usize = 5000;
/// Outcomes younger than this are left for the next step (a transaction may still commit one
/// with an earlier time).
const SETTLE: f64 = 1.0;

/// The training data's distributions, the reference of the input and output drift checks.
pub(crate) struct Reference {
    version: Version,
    lengths: Vec<f64>,
    labels: BTreeMap<String, u64>,
}

/// Steps every enabled model that is due.
pub(crate) async fn tick(state: &AppState) {
    let (Some(exps), Some(learning)) = (&state.experiments, &state.learning) else {
        return;
    };
    let rows = match exps.store.learning_rows().await {
        Ok(rows) => rows,
        Err(e) => {
            tracing::warn!(error = %e, "cannot read the learning settings");
            return;
        }
    };
    for row in rows.into_iter().filter(|r| r.enabled) {
        if let Err(e) = step_model(state, &exps.store, learning, row).await {
            tracing::warn!(error = %e, "a learning step failed");
        }
    }
}

fn config_of(row: &LearningRow) -> Result<LearningConfig, String> {
    let config: LearningConfig = serde_json::from_value(row.config.clone())
        .map_err(|e| format!("the stored learning settings of `{}`: {e}", row.model))?;
    config.check().map_err(|e| e.to_string())?;
    Ok(config)
}

async fn step_model(
    state: &AppState,
    store: &ExperimentStore,
    learning: &Learning,
    row: LearningRow,
) -> Result<(), String> {
    let name = row.model.clone();
    let config = config_of(&row)?;
    let now = promptopt_jobs::now();
    let every = config
        .check_every
        .duration("check_every")
        .map_err(|e| e.to_string())?
        .as_secs_f64();
    let mut loops = learning.loops.lock().await;
    let entry = match loops.get_mut(&name) {
        Some(l) if l.config == config => l,
        _ => {
            let fresh = ModelLoop::new(config.clone()).map_err(|e| e.to_string())?;
            loops.insert(name.clone(), fresh);
            loops.get_mut(&name).ok_or("the loop vanished")?
        }
    };
    if now - entry.last_step < every {
        return Ok(());
    }
    entry.last_step = now;
    let ttl = (every * 3.0).max(30.0);
    if !store
        .lock_learning(&name, &learning.holder, now, ttl)
        .await
        .map_err(|e| e.to_string())?
    {
        return Ok(());
    }
    let mut loop_state: LoopState = serde_json::from_value(row.state.clone()).unwrap_or_default();
    let before = loop_state.clone();
    let production = retrain::production(state, &name).await;
    observe(store, &name, entry, &mut loop_state, production).await?;
    if let Some(current) = production {
        check_distributions(state, store, &name, &config, entry, current).await;
        production_moved(store, &name, entry, &mut loop_state, current).await;
    }
    advance(
        state,
        store,
        &name,
        &config,
        entry,
        &mut loop_state,
        production,
    )
    .await;
    if loop_state != before {
        let value = serde_json::to_value(&loop_state).map_err(|e| e.to_string())?;
        store
            .save_learning_state(&name, &value, promptopt_jobs::now())
            .await
            .map_err(|e| e.to_string())?;
    }
    Ok(())
}

/// Reads the outcomes since the cursor into the monitor.
async fn observe(
    store: &ExperimentStore,
    name: &str,
    entry: &mut ModelLoop,
    loop_state: &mut LoopState,
    production: Option<Version>,
) -> Result<(), String> {
    let until = promptopt_jobs::now() - SETTLE;
    if until <= loop_state.cursor {
        return Ok(());
    }
    let outcomes = store
        .outcomes(name, loop_state.cursor, until, OUTCOMES_PER_STEP)
        .await
        .map_err(|e| e.to_string())?;
    let production_id = production.map(|v| format!("{name}@{v}"));
    for outcome in &outcomes {
        let is_production = production_id.as_deref() == Some(outcome.model_id.as_str());
        let signals = entry
            .monitor
            .observe(&outcome.model_id, outcome.score, is_production);
        let corrected = outcome
            .detail
            .get("expected_output")
            .is_some_and(|v| !v.is_null());
        if corrected || outcome.score >= 1.0 {
            loop_state.labels_since_retrain += 1;
        }
        if entry.drift.is_none() {
            if let Some(signal) = signals.iter().find(|s| s.level == "drift") {
                let stream = if signal.detector == "adwin" {
                    "the score"
                } else {
                    "the error rate"
                };
                let reason = format!(
                    "{} detected a change in {stream} of `{}` at its outcome {}",
                    signal.detector, outcome.model_id, signal.index
                );
                let live = entry.monitor.live(&outcome.model_id);
                record(
                    store,
                    name,
                    "drift",
                    reason.clone(),
                    json!({"detector": signal.detector, "index": signal.index, "live": live}),
                )
                .await;
                entry.drift = Some(reason);
            }
        }
    }
    if let Some(last) = outcomes.last() {
        loop_state.cursor = if outcomes.len() == OUTCOMES_PER_STEP {
            last.updated_at
        } else {
            until
        };
    } else {
        loop_state.cursor = until;
    }
    Ok(())
}

/// The input-length and output-label drift of the production version's recent predictions
/// against its training data (population stability index).
async fn check_distributions(
    state: &AppState,
    store: &ExperimentStore,
    name: &str,
    config: &LearningConfig,
    entry: &mut ModelLoop,
    current: Version,
) {
    if config.psi_threshold <= 0.0 || entry.psi_reported || entry.drift.is_some() {
        return;
    }
    if entry.reference.as_ref().map(|r| r.version) != Some(current) {
        entry.reference = reference(state, name, current).await;
        entry.psi_reported = false;
    }
    let Some(reference) = &entry.reference else {
        return;
    };
    let Ok(recent) = store
        .recent_predictions(name, config.psi_min_samples.max(200))
        .await
    else {
        return;
    };
    let production_id = format!("{name}@{current}");
    let recent: Vec<_> = recent
        .into_iter()
        .filter(|p| p.model_id == production_id)
        .collect();
    if recent.len() < config.psi_min_samples {
        return;
    }
    let lengths: Vec<f64> = recent.iter().map(|p| input_length(&p.inputs)).collect();
    let mut labels = BTreeMap::new();
    for p in &recent {
        if let Some(label) = first_output(&p.outputs, None) {
            *labels.entry(label).or_insert(0u64) += 1;
        }
    }
    let length_psi = drift::psi::psi_numeric(&reference.lengths, &lengths, 10);
    let label_psi = if reference.labels.is_empty() {
        0.0
    } else {
        drift::psi::psi_categorical(&reference.labels, &labels)
    };
    let (what, value) = if length_psi >= label_psi {
        ("input length", length_psi)
    } else {
        ("output label", label_psi)
    };
    if value > config.psi_threshold {
        let reason = format!(
            "the {what} distribution of `{production_id}`'s last {} predictions moved from its training data (PSI {value:.3} > {})",
            recent.len(),
            config.psi_threshold
        );
        record(
            store,
            name,
            "drift",
            reason.clone(),
            json!({"detector": "psi", "input_length_psi": length_psi, "output_label_psi": label_psi,
                   "threshold": config.psi_threshold, "predictions": recent.len()}),
        )
        .await;
        entry.drift = Some(reason);
        entry.psi_reported = true;
    }
}

/// The total length in characters of an input's fields.
fn input_length(inputs: &Value) -> f64 {
    inputs.as_object().map_or(0.0, |m| {
        m.values()
            .map(|v| promptopt_core::value_to_text(v).chars().count() as f64)
            .sum()
    })
}

async fn reference(state: &AppState, name: &str, version: Version) -> Option<Reference> {
    let loaded = state.models.get(name, version).await.ok()?;
    let request = retrain::request_of(&loaded.artifact).ok()?;
    let home = state.registry.home().to_path_buf();
    let base = request.base_dir.clone().unwrap_or(home);
    let examples = request.training_examples.load(&base).ok()?;
    let input_keys = loaded.artifact.program.input_keys();
    let output_key = loaded.artifact.program.output_keys().first().cloned();
    let mut lengths = Vec::with_capacity(examples.len());
    let mut labels = BTreeMap::new();
    for example in &examples {
        let inputs: serde_json::Map<String, Value> = input_keys
            .iter()
            .filter_map(|k| example.get(k).map(|v| (k.clone(), v.clone())))
            .collect();
        lengths.push(input_length(&Value::Object(inputs)));
        if let Some(label) = output_key
            .as_ref()
            .and_then(|k| example.get(k))
            .map(promptopt_core::value_to_text)
        {
            *labels.entry(label).or_insert(0u64) += 1;
        }
    }
    // Free text is no label distribution: only outputs with few distinct values count.
    if labels.len() > 50 || labels.len() * 2 > examples.len() {
        labels.clear();
    }
    Some(Reference {
        version,
        lengths,
        labels,
    })
}

/// Notices a move of `production` that the loop did not make (a promotion by hand or by an
/// experiment): the new version is guarded against the old one.
async fn production_moved(
    store: &ExperimentStore,
    name: &str,
    entry: &mut ModelLoop,
    loop_state: &mut LoopState,
    current: Version,
) {
    let current_text = current.to_string();
    let Some(previous) = loop_state.production.clone() else {
        loop_state.production = Some(current_text);
        return;
    };
    if previous == current_text {
        return;
    }
    // An experiment the loop started moves `production` itself; its conclusion is handled with
    // the experiment.
    if matches!(loop_state.phase, Phase::Experimenting { .. }) {
        return;
    }
    loop_state.production = Some(current_text.clone());
    entry.restart_watch();
    if matches!(&loop_state.phase, Phase::Guarding { version, .. } if *version == current_text) {
        return;
    }
    let baseline = entry.monitor.live(&format!("{name}@{previous}"));
    let outcomes_before = entry
        .monitor
        .live(&format!("{name}@{current_text}"))
        .map_or(0, |l| l.total);
    record(
        store,
        name,
        "production_changed",
        format!("`production` moved from {previous} to {current_text}; the guard watches {current_text}"),
        json!({"from": previous, "to": current_text, "baseline": baseline}),
    )
    .await;
    if !matches!(loop_state.phase, Phase::Retraining { .. }) {
        loop_state.phase = Phase::Guarding {
            version: current_text,
            previous,
            since: promptopt_jobs::now(),
            baseline: baseline.map(|b| b.mean),
            outcomes_before,
        };
    }
}

/// Acts on the phase.
async fn advance(
    state: &AppState,
    store: &ExperimentStore,
    name: &str,
    config: &LearningConfig,
    entry: &mut ModelLoop,
    loop_state: &mut LoopState,
    production: Option<Version>,
) {
    let now = promptopt_jobs::now();
    match loop_state.phase.clone() {
        Phase::Watching => {
            let Some(current) = production else { return };
            let Some(trigger) =
                policy::due_trigger(config, loop_state, now, entry.drift.as_deref())
            else {
                return;
            };
            start_retraining(
                state, store, name, config, entry, loop_state, current, trigger,
            )
            .await;
        }
        Phase::Retraining {
            job_id,
            current,
            holdout,
            ..
        } => {
            let record_ = match state.queue.get(&job_id).await {
                Ok(r) => r,
                Err(e) => {
                    tracing::warn!(job_id, error = %e, "cannot read the retraining job");
                    return;
                }
            };
            match record_.state {
                JobState::Succeeded => {
                    let candidate = record_.model_id.as_deref().and_then(version_of);
                    let current = current.parse::<Version>().ok();
                    match (candidate, current) {
                        (Some(candidate), Some(current)) => {
                            validate(
                                state, store, name, config, entry, loop_state, current, candidate,
                                &holdout, &job_id,
                            )
                            .await;
                        }
                        _ => {
                            failed(
                                store,
                                name,
                                config,
                                loop_state,
                                &job_id,
                                "the job saved no model version",
                            )
                            .await;
                        }
                    }
                }
                JobState::Failed | JobState::Dead | JobState::Cancelled | JobState::TimedOut => {
                    let why = record_
                        .error
                        .clone()
                        .unwrap_or_else(|| format!("the job ended {}", record_.state));
                    failed(store, name, config, loop_state, &job_id, &why).await;
                }
                _ => {}
            }
        }
        Phase::Experimenting {
            experiment,
            version,
            previous,
        } => {
            let Some(exps) = &state.experiments else {
                return;
            };
            let Ok(record_) = exps.store.get(&experiment).await else {
                return;
            };
            if matches!(
                record_.state,
                ExperimentState::Concluded | ExperimentState::Stopped
            ) {
                let promoted = record_.promoted_version.clone();
                record(
                    store,
                    name,
                    "experiment_concluded",
                    match &promoted {
                        Some(v) if *v == version => format!("experiment `{experiment}` concluded: {version} won and is in production"),
                        Some(v) => format!("experiment `{experiment}` concluded: {v} stays in production"),
                        None => format!("experiment `{experiment}` ended ({}) without a promotion; {previous} stays", record_.state),
                    },
                    json!({"experiment": experiment, "winner": record_.winner, "promoted_version": promoted}),
                )
                .await;
                loop_state.phase = Phase::Watching;
                if let Some(current) = production {
                    let current = current.to_string();
                    if current == version {
                        // The candidate won and went live: the guard watches it from now on.
                        entry.restart_watch();
                        loop_state.production = Some(current.clone());
                        loop_state.phase = Phase::Guarding {
                            baseline: entry
                                .monitor
                                .live(&format!("{name}@{previous}"))
                                .map(|l| l.mean),
                            outcomes_before: entry
                                .monitor
                                .live(&format!("{name}@{version}"))
                                .map_or(0, |l| l.total),
                            version,
                            previous,
                            since: promptopt_jobs::now(),
                        };
                    }
                }
            }
        }
        Phase::Guarding {
            version,
            previous,
            baseline,
            outcomes_before,
            ..
        } => {
            let live = entry.monitor.live(&format!("{name}@{version}"));
            match policy::guard(config, live.as_ref(), outcomes_before, baseline) {
                Verdict::Wait => {}
                Verdict::Keep { live } => {
                    record(
                        store,
                        name,
                        "guard_passed",
                        format!(
                            "{version} holds up after {} outcomes: live {live:.3} against {}'s {}",
                            config.guard.min_outcomes,
                            previous,
                            baseline.map_or("(no live figure)".to_string(), |b| format!("{b:.3}"))
                        ),
                        json!({"version": version, "live": live, "baseline": baseline}),
                    )
                    .await;
                    loop_state.phase = Phase::Watching;
                }
                Verdict::RollBack { live, baseline } => {
                    roll_back(
                        state,
                        store,
                        name,
                        entry,
                        loop_state,
                        &version,
                        &previous,
                        &format!(
                            "{version}'s live metric {live:.3} is below {previous}'s {baseline:.3} by more than {}",
                            config.guard.margin
                        ),
                        json!({"live": live, "baseline": baseline, "margin": config.guard.margin}),
                    )
                    .await;
                }
            }
        }
    }
}

#[allow(clippy::too_many_arguments)]
async fn start_retraining(
    state: &AppState,
    store: &ExperimentStore,
    name: &str,
    config: &LearningConfig,
    entry: &mut ModelLoop,
    loop_state: &mut LoopState,
    current: Version,
    trigger: String,
) {
    record(
        store,
        name,
        "trigger",
        trigger.clone(),
        json!({"labels_since_retrain": loop_state.labels_since_retrain}),
    )
    .await;
    loop_state.last_retrain_at = Some(promptopt_jobs::now());
    let prepared = async {
        let loaded = state
            .models
            .get(name, current)
            .await
            .map_err(|e| e.message)?;
        let artifact = &loaded.artifact;
        let input_keys = artifact.program.input_keys();
        let output_keys = artifact.program.output_keys();
        let window = config
            .data
            .window
            .duration("data.window")
            .map_err(|e| e.to_string())?
            .as_secs_f64();
        let now = promptopt_jobs::now();
        let outcomes = store
            .outcomes(name, now - window, now, config.data.max_examples * 4)
            .await
            .map_err(|e| e.to_string())?;
        let recent: Vec<_> = outcomes
            .iter()
            .filter_map(|o| retrain::labelled(o, input_keys, output_keys))
            .collect();
        let home = state.registry.home().to_path_buf();
        retrain::build_request(artifact, &recent, config, &home, loop_state.retrains)
    }
    .await;
    let (request, data) = match prepared {
        Ok(p) => p,
        Err(why) => {
            loop_state.retry_trigger = Some(trigger);
            failed(store, name, config, loop_state, "", &why).await;
            return;
        }
    };
    match retrain::submit(state, request, config).await {
        Ok(job_id) => {
            loop_state.retrains += 1;
            loop_state.labels_since_retrain = 0;
            record(
                store,
                name,
                "retrain_submitted",
                format!("job {job_id} retrains `{name}@{current}` on {} examples ({} original, {} recent); {} recent held out", data.stats.train, data.stats.original, data.stats.recent, data.stats.holdout),
                json!({"job_id": job_id, "data": data.stats}),
            )
            .await;
            loop_state.phase = Phase::Retraining {
                job_id,
                trigger,
                started_at: promptopt_jobs::now(),
                current: current.to_string(),
                holdout: data.holdout,
            };
            entry.drift = None;
        }
        Err(why) => {
            loop_state.retry_trigger = Some(trigger);
            failed(
                store,
                name,
                config,
                loop_state,
                "",
                &format!("cannot queue the retraining: {why}"),
            )
            .await
        }
    }
}

async fn failed(
    store: &ExperimentStore,
    name: &str,
    config: &LearningConfig,
    loop_state: &mut LoopState,
    job_id: &str,
    why: &str,
) {
    if let Phase::Retraining { trigger, .. } = &loop_state.phase {
        loop_state.retry_trigger = Some(trigger.clone());
    }
    loop_state.failures += 1;
    let wait = config.backoff(loop_state.failures);
    loop_state.next_attempt_at = Some(promptopt_jobs::now() + wait.as_secs_f64());
    loop_state.phase = Phase::Watching;
    record(
        store,
        name,
        "retrain_failed",
        format!(
            "{why}; the current version stays; failure {} in a row, next attempt in {}s",
            loop_state.failures,
            wait.as_secs()
        ),
        json!({"job_id": (!job_id.is_empty()).then_some(job_id), "failures": loop_state.failures, "retry_in_seconds": wait.as_secs_f64()}),
    )
    .await;
}

#[allow(clippy::too_many_arguments)]
async fn validate(
    state: &AppState,
    store: &ExperimentStore,
    name: &str,
    config: &LearningConfig,
    entry: &mut ModelLoop,
    loop_state: &mut LoopState,
    current: Version,
    candidate: Version,
    holdout: &[promptopt_core::Example],
    job_id: &str,
) {
    let scores = async {
        let new = retrain::score(state, name, candidate, holdout).await?;
        let old = retrain::score(state, name, current, holdout).await?;
        Ok::<_, String>((new, old))
    }
    .await;
    let (new, old) = match scores {
        Ok(s) => s,
        Err(why) => {
            failed(
                store,
                name,
                config,
                loop_state,
                job_id,
                &format!("cannot validate {candidate}: {why}"),
            )
            .await;
            return;
        }
    };
    loop_state.failures = 0;
    loop_state.next_attempt_at = None;
    loop_state.retry_trigger = None;
    let detail = json!({"job_id": job_id, "candidate": candidate.to_string(), "current": current.to_string(),
        "candidate_score": new, "current_score": old, "holdout": holdout.len(), "margin": config.deploy.margin});
    if !policy::better(config, new, old) {
        record(
            store,
            name,
            "rejected",
            format!("{candidate} scored {new:.3} on {} held-out recent examples, not better than {current}'s {old:.3} by {}; {current} stays", holdout.len(), config.deploy.margin),
            detail,
        )
        .await;
        loop_state.phase = Phase::Watching;
        return;
    }
    record(
        store,
        name,
        "validated",
        format!("{candidate} scored {new:.3} on {} held-out recent examples against {current}'s {old:.3}", holdout.len()),
        detail,
    )
    .await;
    match config.deploy.policy {
        DeployPolicy::Promote => {
            let baseline = entry
                .monitor
                .live(&format!("{name}@{current}"))
                .map(|l| l.mean);
            if let Err(why) = retrain::set_production(state, name, candidate).await {
                failed(
                    store,
                    name,
                    config,
                    loop_state,
                    job_id,
                    &format!("cannot promote {candidate}: {why}"),
                )
                .await;
                return;
            }
            entry.restart_watch();
            loop_state.production = Some(candidate.to_string());
            record(
                store,
                name,
                "deployed",
                format!("`production` moved from {current} to {candidate} ({} policy)", retrain::policy_name(config.deploy.policy)),
                json!({"from": current.to_string(), "to": candidate.to_string(), "baseline": baseline}),
            )
            .await;
            loop_state.phase = Phase::Guarding {
                version: candidate.to_string(),
                previous: current.to_string(),
                since: promptopt_jobs::now(),
                baseline: baseline.or(Some(old)),
                outcomes_before: entry
                    .monitor
                    .live(&format!("{name}@{candidate}"))
                    .map_or(0, |l| l.total),
            };
        }
        DeployPolicy::Experiment => {
            let metric = state
                .models
                .get(name, candidate)
                .await
                .ok()
                .and_then(|l| l.artifact.metric_name().map(str::to_string))
                .unwrap_or_else(|| "exact_match".to_string());
            match retrain::start_experiment(state, name, current, candidate, config, &metric).await
            {
                Ok(experiment) => {
                    record(
                        store,
                        name,
                        "experiment_started",
                        format!("experiment `{experiment}` tests {candidate} against production {current} on {:.0}% of traffic", config.deploy.traffic * 100.0),
                        json!({"experiment": experiment, "candidate": candidate.to_string(), "current": current.to_string()}),
                    )
                    .await;
                    loop_state.phase = Phase::Experimenting {
                        experiment,
                        version: candidate.to_string(),
                        previous: current.to_string(),
                    };
                }
                Err(why) => {
                    failed(
                        store,
                        name,
                        config,
                        loop_state,
                        job_id,
                        &format!("cannot start the experiment: {why}"),
                    )
                    .await;
                }
            }
        }
    }
}

/// Points `production` back at `previous`.
#[allow(clippy::too_many_arguments)]
pub(crate) async fn roll_back(
    state: &AppState,
    store: &ExperimentStore,
    name: &str,
    entry: &mut ModelLoop,
    loop_state: &mut LoopState,
    version: &str,
    previous: &str,
    reason: &str,
    detail: Value,
) {
    let Ok(target) = previous.parse::<Version>() else {
        return;
    };
    if let Err(why) = retrain::set_production(state, name, target).await {
        record(
            store,
            name,
            "rollback_failed",
            format!("cannot move `production` back to {previous}: {why}"),
            detail,
        )
        .await;
        return;
    }
    entry.restart_watch();
    loop_state.production = Some(previous.to_string());
    loop_state.phase = Phase::Watching;
    record(
        store,
        name,
        "rolled_back",
        format!("`production` moved back from {version} to {previous}: {reason}"),
        detail,
    )
    .await;
}
