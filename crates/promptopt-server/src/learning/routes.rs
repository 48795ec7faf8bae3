//! `/v1/models/{name}/learning...`: the loop's status, its history, turning it on and off,
//! rolling back by hand, and the labelled predictions as a dataset.

use std::collections::BTreeMap;

use axum::extract::{Query, State};
use axum::http::{header, HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::Json;
use promptopt_learning::config::LearningConfig;
use promptopt_learning::policy::{LoopState, Phase};
use serde::{Deserialize, Serialize};
use serde_json::{json, Value};

use super::retrain;
use crate::auth::Scope;
use crate::body::{ApiJson, ApiPath};
use crate::error::ApiError;
use crate::experiments::experiments;
use crate::models::authorize_read;
use crate::AppState;

/// A version's live metric, from the newest outcomes in the database.
#[derive(Debug, Serialize, utoipa::ToSchema)]
pub(crate) struct LiveView {
    /// `name@version`.
    model_id: String,
    /// Mean outcome score over the window.
    mean: f64,
    /// Outcomes in the window.
    outcomes: usize,
}

/// A decision of the loop.
#[derive(Debug, Serialize, utoipa::ToSchema)]
pub(crate) struct EventView {
    /// When (seconds since the epoch).
    at: f64,
    /// `enabled`, `drift`, `trigger`, `retrain_submitted`, `retrain_failed`, `validated`,
    /// `rejected`, `deployed`, `experiment_started`, `experiment_concluded`, `guard_passed`,
    /// `production_changed`, `rolled_back`, `disabled`.
    kind: String,
    /// Why, in words.
    reason: String,
    /// The figures behind it.
    #[schema(value_type = Object)]
    detail: Value,
}

/// Where a model's loop stands.
#[derive(Debug, Serialize, utoipa::ToSchema)]
pub(crate) struct LearningStatus {
    /// The model.
    model: String,
    /// Whether the loop runs.
    enabled: bool,
    /// `watching`, `retraining`, `experimenting` or `guarding`.
    phase: String,
    /// The phase's particulars (job, candidate, guarded version).
    #[schema(value_type = Object)]
    phase_detail: Value,
    /// The production version.
    production: Option<String>,
    /// Labelled outcomes since the last retraining.
    labels_since_retrain: u64,
    /// Failed retrainings in a row.
    failures: u32,
    /// No retraining before this time (backoff), if set.
    next_attempt_at: Option<f64>,
    /// Retrainings submitted.
    retrains: u64,
    /// Each version's live metric over the loop's window.
    live: Vec<LiveView>,
    /// The settings.
    #[schema(value_type = Object)]
    config: Value,
    /// The prediction log's counters on this server (`written`, `spooled`, `dropped`,
    /// `unsampled`, `spool_bytes`).
    prediction_log: BTreeMap<String, u64>,
    /// The newest decisions, oldest first.
    recent: Vec<EventView>,
}

/// The decisions of a model's loop.
#[derive(Debug, Serialize, utoipa::ToSchema)]
pub(crate) struct LearningHistory {
    /// The model.
    model: String,
    /// Oldest first.
    events: Vec<EventView>,
}

/// How many decisions.
#[derive(Debug, Deserialize, utoipa::IntoParams)]
#[into_params(parameter_in = Query)]
#[serde(deny_unknown_fields)]
pub(crate) struct HistoryQuery {
    /// The newest this many (default 200, at most 10000).
    pub(crate) limit: Option<usize>,
}

/// Which labelled predictions.
#[derive(Debug, Deserialize, utoipa::IntoParams)]
#[into_params(parameter_in = Query)]
#[serde(deny_unknown_fields)]
pub(crate) struct ExportQuery {
    /// Outcomes recorded within this long (`7d`, `24h`; default: all).
    since: Option<String>,
}

fn events_of(events: Vec<promptopt_experiments::LearningEvent>) -> Vec<EventView> {
    events
        .into_iter()
        .map(|e| EventView {
            at: e.at,
            kind: e.kind,
            reason: e.reason,
            detail: e.detail,
        })
        .collect()
}

fn not_enabled(name: &str) -> ApiError {
    ApiError::not_found(format!(
        "Model `{name}` has no continuous learning: enable it with `promptopt learn enable {name} --config FILE` or a `learning:` block in the server's configuration"
    ))
}

/// The loop of a model: phase, live metric per version, recent decisions.
#[utoipa::path(get, path = "/v1/models/{name}/learning", tag = "learning",
    params(("name" = String, Path, description = "The model's name")),
    security(("bearer" = ["predict"]), ("bearer" = ["optimize"])),
    responses(
        (status = 200, description = "The loop's status", body = LearningStatus),
        (status = 401, description = "No valid token", body = crate::ErrorBody),
        (status = 404, description = "No learning for this model", body = crate::ErrorBody),
        (status = 503, description = "No database", body = crate::ErrorBody),
    ))]
pub(crate) async fn status(
    State(state): State<AppState>,
    ApiPath(name): ApiPath<String>,
    headers: HeaderMap,
) -> Result<Json<LearningStatus>, ApiError> {
    authorize_read(&state, &headers)?;
    let exps = experiments(&state)?;
    let row = exps
        .store
        .learning(&name)
        .await?
        .ok_or_else(|| not_enabled(&name))?;
    let loop_state: LoopState = serde_json::from_value(row.state.clone()).unwrap_or_default();
    let config: LearningConfig = serde_json::from_value(row.config.clone()).unwrap_or_default();
    let now = promptopt_jobs::now();
    let outcomes = exps
        .store
        .outcomes(&name, 0.0, now, usize::MAX >> 1)
        .await?;
    let mut by_version: BTreeMap<String, Vec<f64>> = BTreeMap::new();
    for o in outcomes.iter().rev() {
        let scores = by_version.entry(o.model_id.clone()).or_default();
        if scores.len() < config.window {
            scores.push(o.score);
        }
    }
    let live = by_version
        .into_iter()
        .map(|(model_id, scores)| LiveView {
            model_id,
            mean: scores.iter().sum::<f64>() / scores.len().max(1) as f64,
            outcomes: scores.len(),
        })
        .collect();
    let production = retrain::production(&state, &name)
        .await
        .map(|v| v.to_string());
    let mut phase_detail = serde_json::to_value(&loop_state.phase).unwrap_or(Value::Null);
    if let (Phase::Retraining { holdout, .. }, Value::Object(map)) =
        (&loop_state.phase, &mut phase_detail)
    {
        map.insert("holdout".into(), json!(holdout.len()));
    }
    let recent = exps.store.learning_events(&name, 20).await?;
    Ok(Json(LearningStatus {
        model: name,
        enabled: row.enabled,
        phase: loop_state.phase.name().to_string(),
        phase_detail,
        production,
        labels_since_retrain: loop_state.labels_since_retrain,
        failures: loop_state.failures,
        next_attempt_at: loop_state.next_attempt_at,
        retrains: loop_state.retrains,
        live,
        config: row.config,
        prediction_log: exps
            .log
            .counters
            .snapshot()
            .into_iter()
            .map(|(k, v)| (k.to_string(), v))
            .collect(),
        recent: events_of(recent),
    }))
}

/// Every decision of a model's loop, with its reason.
#[utoipa::path(get, path = "/v1/models/{name}/learning/history", tag = "learning",
    params(("name" = String, Path, description = "The model's name"), HistoryQuery),
    security(("bearer" = ["predict"]), ("bearer" = ["optimize"])),
    responses(
        (status = 200, description = "The decisions, oldest first", body = LearningHistory),
        (status = 401, description = "No valid token", body = crate::ErrorBody),
        (status = 422, description = "Invalid query", body = crate::ErrorBody),
        (status = 503, description = "No database", body = crate::ErrorBody),
    ))]
pub(crate) async fn history(
    State(state): State<AppState>,
    ApiPath(name): ApiPath<String>,
    query: Result<Query<HistoryQuery>, axum::extract::rejection::QueryRejection>,
    headers: HeaderMap,
) -> Result<Json<LearningHistory>, ApiError> {
    authorize_read(&state, &headers)?;
    let Query(query) = query.map_err(|e| ApiError::invalid(e.body_text()).field("limit"))?;
    let exps = experiments(&state)?;
    let limit = query.limit.unwrap_or(200).clamp(1, 10_000);
    let events = exps.store.learning_events(&name, limit).await?;
    Ok(Json(LearningHistory {
        model: name,
        events: events_of(events),
    }))
}

/// Turns a model's loop on with these settings (the `learning:` block, as JSON).
#[utoipa::path(put, path = "/v1/models/{name}/learning", tag = "learning",
    params(("name" = String, Path, description = "The model's name")),
    request_body(content = Object, description = "The `learning:` settings"),
    security(("bearer" = ["admin"])),
    responses(
        (status = 200, description = "Enabled", body = LearningStatus),
        (status = 400, description = "The body is not JSON", body = crate::ErrorBody),
        (status = 401, description = "No valid token", body = crate::ErrorBody),
        (status = 403, description = "The token lacks the scope", body = crate::ErrorBody),
        (status = 404, description = "No such model", body = crate::ErrorBody),
        (status = 415, description = "The body is not JSON", body = crate::ErrorBody),
        (status = 422, description = "Invalid settings", body = crate::ErrorBody),
        (status = 503, description = "No database", body = crate::ErrorBody),
    ))]
pub(crate) async fn enable(
    State(state): State<AppState>,
    ApiPath(name): ApiPath<String>,
    headers: HeaderMap,
    ApiJson(body): ApiJson<Value>,
) -> Result<Json<LearningStatus>, ApiError> {
    state.tokens.authorize(&headers, Scope::Admin)?;
    let exps = experiments(&state)?;
    state.models.resolve(&name, "latest").await?;
    let config: LearningConfig = serde_json::from_value(body).map_err(|e| {
        let message = e.to_string();
        let mut error = ApiError::invalid(format!("Invalid learning settings: {message}"));
        error.field = crate::error::field_of(&message);
        error
    })?;
    config.check().map_err(|e| {
        let field = match &e {
            promptopt_learning::LearningError::Invalid { field, .. } => field.clone(),
            _ => String::new(),
        };
        ApiError::invalid(e.to_string()).field(field)
    })?;
    let value = serde_json::to_value(&config).map_err(ApiError::internal)?;
    exps.store
        .set_learning(
            &name,
            &value,
            true,
            &super::initial_state(),
            promptopt_jobs::now(),
        )
        .await?;
    super::record(&exps.store, &name, "enabled", "through the API", value).await;
    status(State(state), ApiPath(name), headers).await
}

/// Turns a model's loop off (its history and state are kept).
#[utoipa::path(delete, path = "/v1/models/{name}/learning", tag = "learning",
    params(("name" = String, Path, description = "The model's name")),
    security(("bearer" = ["admin"])),
    responses(
        (status = 200, description = "Disabled", body = LearningStatus),
        (status = 401, description = "No valid token", body = crate::ErrorBody),
        (status = 403, description = "The token lacks the scope", body = crate::ErrorBody),
        (status = 404, description = "No learning for this model", body = crate::ErrorBody),
        (status = 503, description = "No database", body = crate::ErrorBody),
    ))]
pub(crate) async fn disable(
    State(state): State<AppState>,
    ApiPath(name): ApiPath<String>,
    headers: HeaderMap,
) -> Result<Json<LearningStatus>, ApiError> {
    state.tokens.authorize(&headers, Scope::Admin)?;
    let exps = experiments(&state)?;
    if !exps
        .store
        .enable_learning(&name, false, promptopt_jobs::now())
        .await?
    {
        return Err(not_enabled(&name));
    }
    super::record(
        &exps.store,
        &name,
        "disabled",
        "through the API",
        Value::Null,
    )
    .await;
    status(State(state), ApiPath(name), headers).await
}

/// Moves `production` back to the version before it (the one the last deployment replaced).
#[utoipa::path(post, path = "/v1/models/{name}/learning/rollback", tag = "learning",
    params(("name" = String, Path, description = "The model's name")),
    security(("bearer" = ["admin"])),
    responses(
        (status = 200, description = "Rolled back", body = LearningStatus),
        (status = 401, description = "No valid token", body = crate::ErrorBody),
        (status = 403, description = "The token lacks the scope", body = crate::ErrorBody),
        (status = 404, description = "No learning for this model", body = crate::ErrorBody),
        (status = 409, description = "Nothing to roll back to", body = crate::ErrorBody),
        (status = 503, description = "No database", body = crate::ErrorBody),
    ))]
pub(crate) async fn rollback(
    State(state): State<AppState>,
    ApiPath(name): ApiPath<String>,
    headers: HeaderMap,
) -> Result<Json<LearningStatus>, ApiError> {
    state.tokens.authorize(&headers, Scope::Admin)?;
    let exps = experiments(&state)?;
    let learning = super::of(&state).ok_or_else(|| not_enabled(&name))?;
    let row = exps
        .store
        .learning(&name)
        .await?
        .ok_or_else(|| not_enabled(&name))?;
    let mut loop_state: LoopState = serde_json::from_value(row.state.clone()).unwrap_or_default();
    let current = retrain::production(&state, &name)
        .await
        .map(|v| v.to_string())
        .ok_or_else(|| not_enabled(&name))?;
    // The version the newest deployment (by the loop, an experiment or by hand) replaced.
    let events = exps.store.learning_events(&name, 10_000).await?;
    let previous = events
        .iter()
        .rev()
        .filter(|e| matches!(e.kind.as_str(), "deployed" | "production_changed"))
        .find(|e| e.detail.get("to").and_then(Value::as_str) == Some(current.as_str()))
        .and_then(|e| e.detail.get("from").and_then(Value::as_str))
        .map(str::to_string)
        .ok_or_else(|| {
            ApiError::conflict(format!(
                "No deployment of `{name}@{current}` is recorded: there is no version to roll back to (point `production` with `promptopt models promote`)"
            ))
        })?;
    {
        let mut loops = learning.loops.lock().await;
        let config: LearningConfig = serde_json::from_value(row.config.clone()).unwrap_or_default();
        let mut entry = match loops.remove(&name) {
            Some(e) => e,
            None => super::ModelLoop::new(config).map_err(|e| ApiError::internal(e.to_string()))?,
        };
        super::step::roll_back(
            &state,
            &exps.store,
            &name,
            &mut entry,
            &mut loop_state,
            &current,
            &previous,
            "asked for by hand",
            json!({"by": "api"}),
        )
        .await;
        loops.insert(name.clone(), entry);
    }
    let value = serde_json::to_value(&loop_state).map_err(ApiError::internal)?;
    exps.store
        .save_learning_state(&name, &value, promptopt_jobs::now())
        .await?;
    status(State(state), ApiPath(name), headers).await
}

/// The labelled predictions of a model as a dataset: one JSON object per line with the input
/// fields and the labelled output fields (the caller's `expected_output`, or the served outputs
/// of a full success).
#[utoipa::path(get, path = "/v1/models/{name}/learning/export", tag = "learning",
    params(("name" = String, Path, description = "The model's name"), ExportQuery),
    security(("bearer" = ["optimize"])),
    responses(
        (status = 200, description = "JSON lines", content_type = "application/x-ndjson", body = String),
        (status = 401, description = "No valid token", body = crate::ErrorBody),
        (status = 404, description = "No such model", body = crate::ErrorBody),
        (status = 422, description = "Invalid query", body = crate::ErrorBody),
        (status = 503, description = "No database", body = crate::ErrorBody),
    ))]
pub(crate) async fn export(
    State(state): State<AppState>,
    ApiPath(name): ApiPath<String>,
    query: Result<Query<ExportQuery>, axum::extract::rejection::QueryRejection>,
    headers: HeaderMap,
) -> Result<Response, ApiError> {
    state.tokens.authorize(&headers, Scope::Optimize)?;
    let Query(query) = query.map_err(|e| ApiError::invalid(e.body_text()).field("since"))?;
    let exps = experiments(&state)?;
    let now = promptopt_jobs::now();
    let after = match &query.since {
        Some(text) => {
            let span = promptopt_core::parse_duration(text)
                .map_err(|e| ApiError::invalid(format!("`since`: {e}")).field("since"))?;
            now - span.as_secs_f64()
        }
        None => 0.0,
    };
    let version = retrain::production(&state, &name)
        .await
        .ok_or_else(|| ApiError::not_found(format!("No model `{name}`")))?;
    let loaded = state.models.get(&name, version).await?;
    let input_keys = loaded.artifact.program.input_keys();
    let output_keys = loaded.artifact.program.output_keys();
    let outcomes = exps
        .store
        .outcomes(&name, after, now, usize::MAX >> 1)
        .await?;
    let mut body = String::new();
    for outcome in &outcomes {
        if let Some(l) = retrain::labelled(outcome, input_keys, output_keys) {
            body.push_str(&serde_json::to_string(&l.example).map_err(ApiError::internal)?);
            body.push('\n');
        }
    }
    Ok((
        StatusCode::OK,
        [(header::CONTENT_TYPE, "application/x-ndjson")],
        body,
    )
        .into_response())
}
