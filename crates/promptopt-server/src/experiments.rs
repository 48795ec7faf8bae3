//! `/v1/experiments` and `/v1/feedback`: A/B experiments between saved versions of a model, the
//! routing of predictions by the running experiment, outcomes, decisions and promotion.

use std::collections::HashMap;
use std::sync::Arc;

use axum::extract::{Request, State};
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::Json;
use parking_lot::RwLock;
use promptopt_core::{Example, Prediction, Trace};
use promptopt_experiments::{
    assign, status, Experiment, ExperimentError, ExperimentSpec, ExperimentState, ExperimentStatus,
    ExperimentStore,
};
use promptopt_registry::{ModelRef, Selector};
use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};

use crate::auth::Scope;
use crate::body::{bytes_of, media_type, parse_json, ApiJson, ApiPath};
use crate::error::ApiError;
use crate::models::authorize_read;
use crate::predlog::PredictionLog;
use crate::AppState;

/// The experiments of one server: the store, the prediction log, the running experiments by
/// model.
pub(crate) struct Experiments {
    pub(crate) store: ExperimentStore,
    pub(crate) log: PredictionLog,
    running: RwLock<HashMap<String, Arc<Experiment>>>,
    /// Outcomes are recorded one at a time (read, replace, re-sum in one transaction).
    feedback: tokio::sync::Mutex<()>,
}

/// Where a prediction was routed.
pub(crate) struct Routed {
    pub(crate) experiment: Arc<Experiment>,
    pub(crate) variant: String,
    pub(crate) selector: String,
}

impl Experiments {
    pub(crate) async fn open(
        store: ExperimentStore,
        spool_dir: std::path::PathBuf,
        spool_max: u64,
    ) -> Result<Self, ExperimentError> {
        let experiments = Self {
            log: PredictionLog::start(store.clone(), spool_dir, spool_max),
            store,
            running: RwLock::new(HashMap::new()),
            feedback: tokio::sync::Mutex::new(()),
        };
        experiments.refresh().await?;
        Ok(experiments)
    }

    /// Re-reads the running experiments every `every`, so that several server processes on one
    /// database follow each other's starts and stops; ends when the experiments are dropped.
    pub(crate) fn follow(this: &Arc<Self>, every: std::time::Duration) {
        let weak = Arc::downgrade(this);
        tokio::spawn(async move {
            loop {
                tokio::time::sleep(every).await;
                let Some(experiments) = weak.upgrade() else {
                    return;
                };
                if let Err(e) = experiments.refresh().await {
                    tracing::warn!(error = %e, "cannot re-read the running experiments");
                }
            }
        });
    }

    /// Reloads the running experiments.
    pub(crate) async fn refresh(&self) -> Result<(), ExperimentError> {
        let running = self.store.running().await?;
        let map = running
            .into_iter()
            .map(|e| (e.model.clone(), Arc::new(e)))
            .collect();
        *self.running.write() = map;
        Ok(())
    }

    /// The variant serving `unit` (or this request, without a unit) of the experiment running on
    /// `model`, if one is.
    pub(crate) fn route(&self, model: &str, unit: Option<&str>) -> Option<Routed> {
        let experiment = self.running.read().get(model).cloned()?;
        let weights = experiment.spec.weights();
        let index = match unit {
            Some(unit) => assign::assign(&experiment.salt, unit, &weights)?,
            None => assign::assign_random(rand::random::<f64>(), &weights)?,
        };
        let variant = weights.get(index)?.0.to_string();
        let selector = experiment.spec.selector(&variant)?.to_string();
        Some(Routed {
            experiment,
            variant,
            selector,
        })
    }
}

pub(crate) fn experiments(state: &AppState) -> Result<&Experiments, ApiError> {
    state.experiments.as_deref().ok_or_else(|| {
        ApiError::new(
            StatusCode::SERVICE_UNAVAILABLE,
            "no_database",
            "This server runs without a database: experiments and feedback are off",
        )
    })
}

impl From<ExperimentError> for ApiError {
    fn from(e: ExperimentError) -> Self {
        match e {
            ExperimentError::Invalid { ref field, .. } => {
                let field = field.clone();
                ApiError::invalid(e.to_string()).field(field)
            }
            ExperimentError::NotFound(_) => ApiError::not_found(e.to_string()),
            ExperimentError::UnknownPrediction(_) => {
                ApiError::not_found(e.to_string()).field("prediction_id")
            }
            ExperimentError::WrongState { .. }
            | ExperimentError::AlreadyRunning { .. }
            | ExperimentError::NameTaken(_) => ApiError::conflict(e.to_string()),
            other => ApiError::unavailable("database_unavailable", other.to_string(), 2),
        }
    }
}

use promptopt_jobs::now;

/// An experiment with its current figures and decision.
#[derive(Debug, Serialize, utoipa::ToSchema)]
pub(crate) struct ExperimentView {
    /// The stored experiment: id, definition, model, state, times, winner.
    #[schema(value_type = Object)]
    pub(crate) experiment: Value,
    /// Per-variant counts and scores, the tests, the sample-ratio check and the decision.
    #[schema(value_type = Object)]
    pub(crate) status: Value,
}

/// Every experiment.
#[derive(Debug, Serialize, utoipa::ToSchema)]
pub(crate) struct ExperimentList {
    /// The experiments, newest first (without figures).
    #[schema(value_type = Vec<Object>)]
    pub(crate) experiments: Vec<Value>,
}

async fn view(state: &AppState, experiment: &Experiment) -> Result<ExperimentView, ApiError> {
    let exps = experiments(state)?;
    let stats = exps.store.variant_stats(&experiment.id).await?;
    let status: ExperimentStatus = status(experiment, &stats);
    Ok(ExperimentView {
        experiment: serde_json::to_value(experiment).map_err(ApiError::internal)?,
        status: serde_json::to_value(status).map_err(ApiError::internal)?,
    })
}

/// Checks what the store cannot: the metric exists and every variant's version does.
async fn check_against_registry(
    state: &AppState,
    spec: &ExperimentSpec,
    model: &str,
) -> Result<(), ApiError> {
    promptopt_core::metrics::by_name(&spec.success_metric, "output").map_err(|e| {
        ApiError::invalid(format!("Invalid experiment: `success_metric`: {e}"))
            .field("success_metric")
    })?;
    for (variant, reference) in &spec.variants {
        let Some((_, selector)) = reference.split_once('@') else {
            continue;
        };
        let found = match state.models.resolve(model, selector).await {
            // An exact version resolves without the registry: load it to know it exists.
            Ok(version) => state.models.get(model, version).await.map(drop),
            Err(e) => Err(e),
        };
        found.map_err(|e| {
            let mut e = e;
            e.message = format!("Variant `{variant}` (`{reference}`): {}", e.message);
            e.status = StatusCode::UNPROCESSABLE_ENTITY;
            e.code = "invalid_request";
            e.field(format!("variants.{variant}"))
        })?;
    }
    Ok(())
}

/// Creates an experiment (a draft; `?start=true` starts it at once).
#[utoipa::path(post, path = "/v1/experiments", tag = "experiments",
    params(("start" = Option<bool>, Query, description = "Start it at once")),
    request_body(content = Object, description = "An experiment: `name`, `variants`, `traffic_split`, `success_metric`, `minimum_sample_size`, `significance_level`, `max_duration`, `auto_promote`, `control`", content_type = "application/json"),
    security(("bearer" = ["admin"])),
    responses(
        (status = 201, description = "Created", body = ExperimentView),
        (status = 400, description = "The body cannot be read", body = crate::ErrorBody),
        (status = 401, description = "No valid token", body = crate::ErrorBody),
        (status = 403, description = "The token lacks the scope", body = crate::ErrorBody),
        (status = 409, description = "The name is taken, or another experiment runs on the model", body = crate::ErrorBody),
        (status = 413, description = "The body is too large", body = crate::ErrorBody),
        (status = 415, description = "Neither JSON nor YAML", body = crate::ErrorBody),
        (status = 422, description = "The experiment does not validate", body = crate::ErrorBody),
        (status = 503, description = "No database", body = crate::ErrorBody),
    ))]
pub(crate) async fn create(
    State(state): State<AppState>,
    query: Result<axum::extract::Query<StartQuery>, axum::extract::rejection::QueryRejection>,
    headers: HeaderMap,
    req: Request,
) -> Result<Response, ApiError> {
    state.tokens.authorize(&headers, Scope::Admin)?;
    let axum::extract::Query(query) =
        query.map_err(|e| ApiError::invalid(format!("Invalid query: {}", e.body_text())))?;
    experiments(&state)?;
    let media = media_type(&req);
    let bytes = bytes_of(req).await?;
    let spec: ExperimentSpec = match media.as_deref() {
        Some("application/json") => parse_json(&bytes)?,
        Some("application/yaml" | "application/x-yaml" | "text/yaml" | "text/x-yaml") => {
            serde_yaml::from_slice(&bytes).map_err(|e| {
                let message = e.to_string();
                let mut error = ApiError::invalid(format!("Invalid experiment: {message}"));
                error.field = crate::error::field_of(&message);
                error
            })?
        }
        other => {
            return Err(ApiError::new(
                StatusCode::UNSUPPORTED_MEDIA_TYPE,
                "unsupported_media_type",
                format!(
                    "Send the experiment as JSON or YAML, not {}",
                    other.map_or("a body without a content type".to_string(), |o| format!(
                        "`{o}`"
                    ))
                ),
            ))
        }
    };
    let experiment = insert_experiment(&state, spec, query.start.unwrap_or(false)).await?;
    Ok((StatusCode::CREATED, Json(view(&state, &experiment).await?)).into_response())
}

/// Validates and stores an experiment, started at once when `start`.
pub(crate) async fn insert_experiment(
    state: &AppState,
    spec: ExperimentSpec,
    start: bool,
) -> Result<Experiment, ApiError> {
    let exps = experiments(state)?;
    let model = spec.validate()?;
    check_against_registry(state, &spec, &model).await?;
    let experiment = Experiment {
        id: format!("exp-{:016x}", rand::random::<u64>()),
        model,
        state: ExperimentState::Draft,
        salt: format!("{:016x}", rand::random::<u64>()),
        created_at: now(),
        started_at: None,
        ended_at: None,
        winner: None,
        promoted_version: None,
        sequential_p: Default::default(),
        spec,
    };
    exps.store.insert(&experiment).await?;
    let experiment = if start {
        let started = exps.store.start(&experiment.id, now()).await?;
        exps.refresh().await?;
        started
    } else {
        experiment
    };
    tracing::info!(experiment = %experiment.spec.name, model = %experiment.model, state = %experiment.state, "experiment created");
    Ok(experiment)
}

/// `?start=true`.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct StartQuery {
    start: Option<bool>,
}

/// Every experiment, newest first.
#[utoipa::path(get, path = "/v1/experiments", tag = "experiments",
    security(("bearer" = ["predict"]), ("bearer" = ["optimize"])),
    responses(
        (status = 200, description = "The experiments", body = ExperimentList),
        (status = 401, description = "No valid token", body = crate::ErrorBody),
        (status = 503, description = "No database", body = crate::ErrorBody),
    ))]
pub(crate) async fn list(
    State(state): State<AppState>,
    headers: HeaderMap,
) -> Result<Json<ExperimentList>, ApiError> {
    authorize_read(&state, &headers)?;
    let exps = experiments(&state)?;
    let all = exps.store.list().await?;
    let experiments = all
        .iter()
        .map(serde_json::to_value)
        .collect::<Result<Vec<_>, _>>()
        .map_err(ApiError::internal)?;
    Ok(Json(ExperimentList { experiments }))
}

/// An experiment (by id or name) with its figures and decision.
#[utoipa::path(get, path = "/v1/experiments/{id}", tag = "experiments",
    params(("id" = String, Path, description = "The experiment's id or name")),
    security(("bearer" = ["predict"]), ("bearer" = ["optimize"])),
    responses(
        (status = 200, description = "The experiment", body = ExperimentView),
        (status = 401, description = "No valid token", body = crate::ErrorBody),
        (status = 404, description = "No such experiment", body = crate::ErrorBody),
        (status = 503, description = "No database", body = crate::ErrorBody),
    ))]
pub(crate) async fn get_experiment(
    State(state): State<AppState>,
    ApiPath(id): ApiPath<String>,
    headers: HeaderMap,
) -> Result<Json<ExperimentView>, ApiError> {
    authorize_read(&state, &headers)?;
    let exps = experiments(&state)?;
    let experiment = exps.store.get(&id).await?;
    let experiment = conclude_if_due(&state, experiment).await?;
    Ok(Json(view(&state, &experiment).await?))
}

/// Starts a draft experiment: predictions on its model are split from now on.
#[utoipa::path(post, path = "/v1/experiments/{id}/start", tag = "experiments",
    params(("id" = String, Path, description = "The experiment's id or name")),
    security(("bearer" = ["admin"])),
    responses(
        (status = 200, description = "Running", body = ExperimentView),
        (status = 401, description = "No valid token", body = crate::ErrorBody),
        (status = 403, description = "The token lacks the scope", body = crate::ErrorBody),
        (status = 404, description = "No such experiment", body = crate::ErrorBody),
        (status = 409, description = "Not a draft, or another experiment runs on the model", body = crate::ErrorBody),
        (status = 503, description = "No database", body = crate::ErrorBody),
    ))]
pub(crate) async fn start(
    State(state): State<AppState>,
    ApiPath(id): ApiPath<String>,
    headers: HeaderMap,
) -> Result<Json<ExperimentView>, ApiError> {
    state.tokens.authorize(&headers, Scope::Admin)?;
    let exps = experiments(&state)?;
    let experiment = exps.store.start(&id, now()).await?;
    exps.refresh().await?;
    Ok(Json(view(&state, &experiment).await?))
}

/// Stops a running experiment without a winner (traffic goes back to the model's usual
/// version).
#[utoipa::path(post, path = "/v1/experiments/{id}/stop", tag = "experiments",
    params(("id" = String, Path, description = "The experiment's id or name")),
    security(("bearer" = ["admin"])),
    responses(
        (status = 200, description = "Stopped", body = ExperimentView),
        (status = 401, description = "No valid token", body = crate::ErrorBody),
        (status = 403, description = "The token lacks the scope", body = crate::ErrorBody),
        (status = 404, description = "No such experiment", body = crate::ErrorBody),
        (status = 409, description = "Not running", body = crate::ErrorBody),
        (status = 503, description = "No database", body = crate::ErrorBody),
    ))]
pub(crate) async fn stop(
    State(state): State<AppState>,
    ApiPath(id): ApiPath<String>,
    headers: HeaderMap,
) -> Result<Json<ExperimentView>, ApiError> {
    state.tokens.authorize(&headers, Scope::Admin)?;
    let exps = experiments(&state)?;
    let mut experiment = exps.store.get(&id).await?;
    if !matches!(
        experiment.state,
        ExperimentState::Running | ExperimentState::Draft
    ) {
        return Err(ExperimentError::WrongState {
            name: experiment.spec.name.clone(),
            state: experiment.state.to_string(),
            message: "only a draft or running experiment can stop".into(),
        }
        .into());
    }
    experiment.state = ExperimentState::Stopped;
    experiment.ended_at = Some(now());
    exps.store.update(&experiment).await?;
    exps.refresh().await?;
    Ok(Json(view(&state, &experiment).await?))
}

/// Which variant to promote (default: the winner).
#[derive(Debug, Deserialize, utoipa::IntoParams)]
#[into_params(parameter_in = Query)]
#[serde(deny_unknown_fields)]
pub(crate) struct PromoteQuery {
    /// Promote this variant instead of the declared winner (an explicit decision).
    pub(crate) variant: Option<String>,
}

/// Points the model's `production` alias at the winner's version (or `?variant=`), and ends the
/// experiment.
#[utoipa::path(post, path = "/v1/experiments/{id}/promote", tag = "experiments",
    params(("id" = String, Path, description = "The experiment's id or name"), PromoteQuery),
    security(("bearer" = ["admin"])),
    responses(
        (status = 200, description = "Promoted", body = ExperimentView),
        (status = 401, description = "No valid token", body = crate::ErrorBody),
        (status = 403, description = "The token lacks the scope", body = crate::ErrorBody),
        (status = 404, description = "No such experiment", body = crate::ErrorBody),
        (status = 409, description = "No winner yet and no variant given", body = crate::ErrorBody),
        (status = 422, description = "Unknown variant", body = crate::ErrorBody),
        (status = 503, description = "No database", body = crate::ErrorBody),
    ))]
pub(crate) async fn promote(
    State(state): State<AppState>,
    ApiPath(id): ApiPath<String>,
    query: Result<axum::extract::Query<PromoteQuery>, axum::extract::rejection::QueryRejection>,
    headers: HeaderMap,
) -> Result<Json<ExperimentView>, ApiError> {
    state.tokens.authorize(&headers, Scope::Admin)?;
    let axum::extract::Query(query) = query.map_err(|e| {
        ApiError::invalid(format!("Invalid query: {}", e.body_text())).field("variant")
    })?;
    let exps = experiments(&state)?;
    let mut experiment = exps.store.get(&id).await?;
    let variant = match (&query.variant, &experiment.winner) {
        (Some(v), _) => {
            if !experiment.spec.variants.contains_key(v) {
                return Err(ApiError::invalid(format!(
                    "`{v}` is not a variant of `{}`",
                    experiment.spec.name
                ))
                .field("variant"));
            }
            v.clone()
        }
        (None, Some(w)) => w.clone(),
        (None, None) => {
            return Err(ApiError::conflict(format!(
                "Experiment `{}` has no winner yet: wait for one, or name the variant to promote (`?variant=`)",
                experiment.spec.name
            )))
        }
    };
    promote_variant(&state, &mut experiment, &variant).await?;
    Ok(Json(view(&state, &experiment).await?))
}

/// Moves `production` to `variant`'s version, records it, ends the experiment.
async fn promote_variant(
    state: &AppState,
    experiment: &mut Experiment,
    variant: &str,
) -> Result<(), ApiError> {
    let exps = experiments(state)?;
    let selector = experiment
        .spec
        .selector(variant)
        .unwrap_or("latest")
        .to_string();
    let version = state.models.resolve(&experiment.model, &selector).await?;
    let registry = state.registry.clone();
    let model = experiment.model.clone();
    tokio::task::spawn_blocking(move || registry.set_alias(&model, "production", version))
        .await
        .map_err(ApiError::internal)??;
    state.models.invalidate(&experiment.model, None);
    experiment.winner.get_or_insert_with(|| variant.to_string());
    experiment.promoted_version = Some(version.to_string());
    if experiment.state != ExperimentState::Concluded {
        experiment.state = ExperimentState::Concluded;
        experiment.ended_at = Some(now());
    }
    exps.store.update(experiment).await?;
    exps.refresh().await?;
    tracing::info!(experiment = %experiment.spec.name, variant, version = %version, "promoted to production");
    Ok(())
}

/// Re-reads the figures of a running experiment and acts on them: records the sequential
/// evidence, concludes with a winner (promoting it when `auto_promote`), or stops at
/// `max_duration`.
async fn conclude_if_due(
    state: &AppState,
    mut experiment: Experiment,
) -> Result<Experiment, ApiError> {
    if experiment.state != ExperimentState::Running {
        return Ok(experiment);
    }
    let exps = experiments(state)?;
    let stats = exps.store.variant_stats(&experiment.id).await?;
    let current = status(&experiment, &stats);
    let evidence_changed = current.sequential_p != experiment.sequential_p;
    experiment.sequential_p = current.sequential_p.clone();
    if let Some(winner) = current.decision.winner() {
        experiment.winner = Some(winner.to_string());
        experiment.state = ExperimentState::Concluded;
        experiment.ended_at = Some(now());
        tracing::info!(experiment = %experiment.spec.name, winner, "experiment concluded");
        if experiment.spec.auto_promote {
            let winner = winner.to_string();
            promote_variant(state, &mut experiment, &winner).await?;
            return Ok(experiment);
        }
        exps.store.update(&experiment).await?;
        exps.refresh().await?;
        return Ok(experiment);
    }
    let overdue = match (&experiment.spec.max_duration, experiment.started_at) {
        (Some(d), Some(started)) => promptopt_core::parse_duration(d)
            .map(|d| now() - started >= d.as_secs_f64())
            .unwrap_or(false),
        _ => false,
    };
    if overdue {
        experiment.state = ExperimentState::Stopped;
        experiment.ended_at = Some(now());
        exps.store.update(&experiment).await?;
        exps.refresh().await?;
        tracing::info!(experiment = %experiment.spec.name, "experiment stopped at its max_duration without a winner");
    } else if evidence_changed {
        exps.store.update(&experiment).await?;
    }
    Ok(experiment)
}

/// An outcome of a prediction: exactly one of `expected_output`, `score` and `success`.
#[derive(Debug, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub(crate) struct FeedbackRequest {
    /// The id a prediction returned.
    prediction_id: String,
    /// What the output should have been: the output fields, or the value of a single one; the
    /// experiment's metric (else `exact_match`) scores the prediction against it.
    #[serde(default)]
    #[schema(value_type = Option<Object>)]
    expected_output: Option<Value>,
    /// A score in the metric's terms (e.g. 0 to 1).
    #[serde(default)]
    score: Option<f64>,
    /// A binary outcome (1 or 0).
    #[serde(default)]
    success: Option<bool>,
}

/// What recording an outcome did.
#[derive(Debug, Serialize, utoipa::ToSchema)]
pub(crate) struct FeedbackResponse {
    /// The prediction.
    prediction_id: String,
    /// The score recorded.
    score: f64,
    /// Whether it was the prediction's first outcome (later ones replace it, counted once).
    first: bool,
    /// The experiment it counts for, if any.
    experiment: Option<String>,
    /// Its variant there.
    variant: Option<String>,
}

/// Records an outcome of a prediction: late and repeated outcomes replace the earlier one (the
/// last write wins) and count once.
#[utoipa::path(post, path = "/v1/feedback", tag = "experiments",
    request_body = FeedbackRequest,
    security(("bearer" = ["predict"])),
    responses(
        (status = 200, description = "Recorded", body = FeedbackResponse),
        (status = 400, description = "The body is not JSON", body = crate::ErrorBody),
        (status = 401, description = "No valid token", body = crate::ErrorBody),
        (status = 403, description = "The token lacks the scope", body = crate::ErrorBody),
        (status = 404, description = "Unknown prediction id", body = crate::ErrorBody),
        (status = 413, description = "The body is too large", body = crate::ErrorBody),
        (status = 415, description = "The body is not JSON", body = crate::ErrorBody),
        (status = 422, description = "Not exactly one outcome", body = crate::ErrorBody),
        (status = 503, description = "No database", body = crate::ErrorBody),
    ))]
pub(crate) async fn feedback(
    State(state): State<AppState>,
    headers: HeaderMap,
    ApiJson(body): ApiJson<FeedbackRequest>,
) -> Result<Json<FeedbackResponse>, ApiError> {
    state.tokens.authorize(&headers, Scope::Predict)?;
    let exps = experiments(&state)?;
    let given = [
        body.expected_output.is_some(),
        body.score.is_some(),
        body.success.is_some(),
    ]
    .iter()
    .filter(|g| **g)
    .count();
    if given != 1 {
        return Err(ApiError::invalid(
            "Give exactly one outcome: `expected_output`, `score` or `success`",
        )
        .field("expected_output"));
    }
    let mut prediction = exps.store.prediction(&body.prediction_id).await?;
    if prediction.is_none() {
        // It may still be on its way to the database.
        exps.log.flush().await;
        prediction = exps.store.prediction(&body.prediction_id).await?;
    }
    let prediction =
        prediction.ok_or_else(|| ExperimentError::UnknownPrediction(body.prediction_id.clone()))?;
    let experiment = match &prediction.experiment_id {
        Some(id) => Some(exps.store.get(id).await?),
        None => None,
    };
    let score = match (&body.expected_output, body.score, body.success) {
        (_, Some(s), _) => {
            if !s.is_finite() {
                return Err(ApiError::invalid("`score` must be a finite number").field("score"));
            }
            s
        }
        (_, _, Some(success)) => f64::from(u8::from(success)),
        (Some(expected), _, _) => {
            let metric = experiment
                .as_ref()
                .map_or("exact_match", |e| e.spec.success_metric.as_str());
            score_against(
                &state,
                &prediction.model_id,
                &prediction.outputs,
                expected,
                metric,
            )
            .await?
        }
        (None, None, None) => 0.0,
    };
    let detail = serde_json::json!({
        "expected_output": body.expected_output,
        "score": body.score,
        "success": body.success,
    });
    let recorded = {
        let _one_at_a_time = exps.feedback.lock().await;
        exps.store
            .record_feedback(&prediction, score, &detail, now())
            .await?
    };
    if let Some(experiment) = experiment {
        conclude_if_due(&state, experiment).await?;
    }
    Ok(Json(FeedbackResponse {
        prediction_id: prediction.prediction_id,
        score,
        first: recorded.first,
        experiment: prediction.experiment_id,
        variant: prediction.variant,
    }))
}

/// Scores stored outputs against the expected ones with `metric`, on the model's first output
/// field.
async fn score_against(
    state: &AppState,
    model_id: &str,
    outputs: &Value,
    expected: &Value,
    metric: &str,
) -> Result<f64, ApiError> {
    let reference: ModelRef = model_id.parse().map_err(ApiError::internal)?;
    let Selector::Version(version) = reference.selector else {
        return Err(ApiError::internal(format!(
            "stored model id `{model_id}` has no version"
        )));
    };
    let loaded = state.models.get(&reference.name, version).await?;
    let output_key = loaded
        .artifact
        .program
        .output_keys()
        .first()
        .cloned()
        .unwrap_or_else(|| "output".into());
    let expected_fields: Map<String, Value> = match expected {
        Value::Object(map) => map.clone(),
        other => {
            let mut map = Map::new();
            map.insert(output_key.clone(), other.clone());
            map
        }
    };
    let metric = promptopt_core::metrics::by_name(metric, &output_key)
        .map_err(|e| ApiError::invalid(e.to_string()).field("expected_output"))?;
    let example = Example::from_map(expected_fields);
    let prediction = Prediction {
        outputs: Example::from_map(outputs.as_object().cloned().unwrap_or_default()),
    };
    Ok(metric.score(&example, &prediction, &Trace::default()).value)
}
