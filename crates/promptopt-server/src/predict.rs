//! `POST /v1/models/{name}/predict`: calling a saved model, one input or a batch; and the cache
//! of loaded programs and their LMs.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

use async_trait::async_trait;
use axum::extract::{Query, State};
use axum::http::{HeaderMap, StatusCode};
use axum::Json;
use parking_lot::Mutex;
use promptopt_core::Example;
use promptopt_lm::{LmConfig, LmStack, SharedLm};
use promptopt_optimize::Pipeline;
use promptopt_registry::{ModelArtifact, ModelRef, Registry, Selector, Version};
use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};

use crate::auth::Scope;
use crate::body::{ApiJson, ApiPath};
use crate::error::ApiError;
use crate::experiments::Routed;
use crate::metrics::PredictionFigures;
use crate::AppState;
use promptopt_experiments::PredictionRecord;

/// How long an alias or `latest` resolution is reused before the registry is read again (a
/// promotion through this server takes effect at once; one made elsewhere within this time).
const RESOLVE_TTL: Duration = Duration::from_millis(500);

/// Builds the LM that serves a saved model's model names.
#[async_trait]
pub trait ModelLms: Send + Sync {
    /// An LM that can call every name in `models`.
    async fn lm_for(&self, models: &[String]) -> Result<SharedLm, String>;
}

/// A [`ModelLms`] over the providers of [`LmStack`] (no embedded engine): OpenAI, Anthropic,
/// Gemini and OpenAI-compatible servers, configured from the environment.
#[derive(Debug, Clone)]
pub struct LmsFromStack {
    config: LmConfig,
}

impl LmsFromStack {
    /// Providers with `config`.
    pub fn new(config: LmConfig) -> Self {
        Self { config }
    }
}

#[async_trait]
impl ModelLms for LmsFromStack {
    async fn lm_for(&self, _models: &[String]) -> Result<SharedLm, String> {
        LmStack::new(self.config.clone())
            .assemble()
            .map_err(|e| e.to_string())
    }
}

/// A saved model ready to run.
pub(crate) struct Loaded {
    pub(crate) artifact: ModelArtifact,
    pub(crate) pipeline: Pipeline,
}

/// Loaded programs by exact version (versions are immutable), LMs by model set, and recent
/// resolutions of aliases and `latest`.
pub(crate) struct ModelCache {
    registry: Registry,
    lms: Arc<dyn ModelLms>,
    loaded: Mutex<HashMap<(String, Version), Arc<Loaded>>>,
    stacks: tokio::sync::Mutex<HashMap<Vec<String>, SharedLm>>,
    /// Recent resolutions, and recent "no such alias or version" answers (so that a model
    /// without a `production` alias does not cost every unversioned prediction a registry read).
    resolved: Mutex<HashMap<(String, String), Resolution>>,
}

/// What a selector resolved to, and when.
type Resolution = (Result<Version, ApiError>, Instant);

impl ModelCache {
    pub(crate) fn new(registry: Registry, lms: Arc<dyn ModelLms>) -> Self {
        Self {
            registry,
            lms,
            loaded: Mutex::new(HashMap::new()),
            stacks: tokio::sync::Mutex::new(HashMap::new()),
            resolved: Mutex::new(HashMap::new()),
        }
    }

    /// Versions held in memory.
    pub(crate) fn loaded(&self) -> usize {
        self.loaded.lock().len()
    }

    /// Forgets the resolutions of `name` (its aliases moved) and, when given, a deleted version.
    pub(crate) fn invalidate(&self, name: &str, deleted: Option<Version>) {
        self.resolved.lock().retain(|(n, _), _| n != name);
        if let Some(version) = deleted {
            self.loaded.lock().remove(&(name.to_string(), version));
        }
    }

    /// The exact version `selector` (`1.2.0`, `latest`, an alias) means for `name`.
    pub(crate) async fn resolve(&self, name: &str, selector: &str) -> Result<Version, ApiError> {
        promptopt_registry::check_name(name).map_err(|e| ApiError::from(e).field("name"))?;
        let text = if selector == "latest" {
            name.to_string()
        } else {
            format!("{name}@{selector}")
        };
        let reference: ModelRef =
            text.parse()
                .map_err(|e: promptopt_registry::RegistryError| {
                    ApiError::from(e).field(if selector.is_empty() {
                        "name"
                    } else {
                        "version"
                    })
                })?;
        if let Selector::Version(v) = reference.selector {
            return Ok(v);
        }
        let key = (name.to_string(), selector.to_string());
        if let Some((answer, at)) = self.resolved.lock().get(&key) {
            if at.elapsed() < RESOLVE_TTL {
                return answer.clone();
            }
        }
        let registry = self.registry.clone();
        let answer = tokio::task::spawn_blocking(move || registry.resolve(&reference))
            .await
            .map_err(ApiError::internal)?
            .map_err(ApiError::from);
        if answer.is_ok() || matches!(&answer, Err(e) if e.status == StatusCode::NOT_FOUND) {
            self.resolved
                .lock()
                .insert(key, (answer.clone(), Instant::now()));
        }
        answer
    }

    /// The loaded program of `name` at `version`, loading it (and its LM) on first use.
    pub(crate) async fn get(&self, name: &str, version: Version) -> Result<Arc<Loaded>, ApiError> {
        let key = (name.to_string(), version);
        if let Some(loaded) = self.loaded.lock().get(&key) {
            return Ok(Arc::clone(loaded));
        }
        let registry = self.registry.clone();
        let reference = ModelRef::exact(name, version);
        let artifact = tokio::task::spawn_blocking(move || registry.load(&reference))
            .await
            .map_err(ApiError::internal)??;
        let models = artifact.models();
        let lm = {
            let mut stacks = self.stacks.lock().await;
            match stacks.get(&models) {
                Some(lm) => Arc::clone(lm),
                None => {
                    let lm = self.lms.lm_for(&models).await.map_err(|e| {
                        ApiError::new(
                            StatusCode::BAD_GATEWAY,
                            "model_unavailable",
                            format!("Cannot set up the models of `{}`: {e}", artifact.id()),
                        )
                    })?;
                    stacks.insert(models, Arc::clone(&lm));
                    lm
                }
            }
        };
        let loaded = Arc::new(Loaded {
            pipeline: Pipeline::new(lm, self.registry.clone()),
            artifact,
        });
        self.loaded.lock().insert(key, Arc::clone(&loaded));
        Ok(loaded)
    }
}

/// Which version to call.
#[derive(Debug, Deserialize, utoipa::IntoParams)]
#[into_params(parameter_in = Query)]
#[serde(deny_unknown_fields)]
pub(crate) struct PredictQuery {
    /// `1.2.0`, `latest`, or an alias such as `production`. Without it: `production` when the
    /// model has that alias, else `latest`.
    pub(crate) version: Option<String>,
}

/// One input (`inputs`) or a batch (`instances`).
#[derive(Debug, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub(crate) struct PredictRequest {
    /// The input fields of one prediction.
    #[serde(default)]
    pub(crate) inputs: Option<Map<String, Value>>,
    /// Several inputs, predicted together.
    #[serde(default)]
    pub(crate) instances: Option<Vec<Map<String, Value>>>,
    /// Who the prediction is for: the unit of assignment for experiments.
    #[serde(default)]
    pub(crate) user_id: Option<String>,
}

/// Tokens spent.
#[derive(Debug, Clone, Copy, Default, Serialize, utoipa::ToSchema)]
pub(crate) struct UsageBody {
    /// Prompt tokens.
    pub(crate) prompt_tokens: u64,
    /// Generated tokens.
    pub(crate) completion_tokens: u64,
    /// Prompt tokens served from a prompt cache.
    pub(crate) cached_tokens: u64,
}

impl UsageBody {
    fn add(&mut self, other: UsageBody) {
        self.prompt_tokens += other.prompt_tokens;
        self.completion_tokens += other.completion_tokens;
        self.cached_tokens += other.cached_tokens;
    }
}

/// One prediction of a batch.
#[derive(Debug, Serialize, utoipa::ToSchema)]
pub(crate) struct InstancePrediction {
    /// Refer to this prediction when reporting its outcome.
    pub(crate) prediction_id: String,
    /// The output fields.
    #[schema(value_type = Object)]
    pub(crate) outputs: Map<String, Value>,
    /// Time taken, in milliseconds.
    pub(crate) latency_ms: f64,
    /// Tokens spent.
    pub(crate) usage: UsageBody,
    /// Cost in USD, when the model's price is known.
    pub(crate) cost_usd: Option<f64>,
}

/// What a prediction returns: `prediction_id` and `outputs` for one input, `predictions` for a
/// batch; the totals either way.
#[derive(Debug, Serialize, utoipa::ToSchema)]
pub(crate) struct PredictResponse {
    /// The version used, `name@version`.
    pub(crate) model_id: String,
    /// The id of a single prediction.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub(crate) prediction_id: Option<String>,
    /// The output fields of a single prediction.
    #[serde(skip_serializing_if = "Option::is_none")]
    #[schema(value_type = Option<Object>)]
    pub(crate) outputs: Option<Map<String, Value>>,
    /// The predictions of a batch, in the order of `instances`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub(crate) predictions: Option<Vec<InstancePrediction>>,
    /// Time taken, in milliseconds.
    pub(crate) latency_ms: f64,
    /// Tokens spent.
    pub(crate) usage: UsageBody,
    /// Cost in USD, when the model's price is known.
    pub(crate) cost_usd: Option<f64>,
    /// The experiment that routed the request, if one runs on the model.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub(crate) experiment: Option<String>,
    /// The experiment's variant that served it.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub(crate) variant: Option<String>,
}

fn prediction_id() -> String {
    format!("pred-{:016x}", rand::random::<u64>())
}

/// Checks one input against the program's input fields.
fn check_inputs(
    artifact: &ModelArtifact,
    inputs: &Map<String, Value>,
    field: &str,
) -> Result<Example, ApiError> {
    let keys = artifact.program.input_keys();
    let takes = || {
        keys.iter()
            .map(|k| format!("`{k}`"))
            .collect::<Vec<_>>()
            .join(", ")
    };
    if let Some(missing) = keys.iter().find(|k| !inputs.contains_key(k.as_str())) {
        return Err(ApiError::invalid(format!(
            "Missing input field `{missing}`; `{}` takes {}",
            artifact.id(),
            takes()
        ))
        .field(format!("{field}.{missing}")));
    }
    if let Some(extra) = inputs.keys().find(|k| !keys.contains(k)) {
        return Err(ApiError::invalid(format!(
            "Unknown input field `{extra}`; `{}` takes {}",
            artifact.id(),
            takes()
        ))
        .field(format!("{field}.{extra}")));
    }
    Ok(Example::from_map(inputs.clone()))
}

/// Runs one input; an LM failure or an unparsable reply is 502.
async fn run_one(loaded: &Loaded, input: &Example) -> Result<InstancePrediction, ApiError> {
    let started = Instant::now();
    let (prediction, trace) = loaded
        .pipeline
        .predict_with(&loaded.artifact, input)
        .await
        .map_err(ApiError::from)?;
    if prediction.outputs.is_empty() {
        if let Some(step) = trace.steps.iter().rev().find(|s| s.parse_error.is_some()) {
            return Err(ApiError::new(
                StatusCode::BAD_GATEWAY,
                "unparsable_reply",
                format!(
                    "The model's reply could not be parsed ({}): {}",
                    step.predictor,
                    step.parse_error.clone().unwrap_or_default()
                ),
            ));
        }
    }
    let usage = trace.usage();
    Ok(InstancePrediction {
        prediction_id: prediction_id(),
        outputs: prediction.outputs.fields().clone(),
        latency_ms: started.elapsed().as_secs_f64() * 1000.0,
        usage: UsageBody {
            prompt_tokens: usage.prompt_tokens,
            completion_tokens: usage.completion_tokens,
            cached_tokens: usage.cached_tokens,
        },
        cost_usd: trace.cost_usd(),
    })
}

/// Calls a saved model.
#[utoipa::path(post, path = "/v1/models/{name}/predict", tag = "predictions",
    params(("name" = String, Path, description = "The model's name"), PredictQuery),
    request_body = PredictRequest,
    security(("bearer" = ["predict"])),
    responses(
        (status = 200, description = "The prediction(s)", body = PredictResponse),
        (status = 400, description = "The body is not JSON", body = crate::ErrorBody),
        (status = 401, description = "No valid token", body = crate::ErrorBody),
        (status = 403, description = "The token lacks the scope", body = crate::ErrorBody),
        (status = 404, description = "No such model or version", body = crate::ErrorBody),
        (status = 413, description = "The body is too large", body = crate::ErrorBody),
        (status = 415, description = "The body is not JSON", body = crate::ErrorBody),
        (status = 422, description = "Invalid inputs", body = crate::ErrorBody),
        (status = 502, description = "The model failed or replied unparsably", body = crate::ErrorBody),
        (status = 503, description = "Saturated", body = crate::ErrorBody),
    ))]
pub(crate) async fn predict(
    State(state): State<AppState>,
    ApiPath(name): ApiPath<String>,
    query: Result<Query<PredictQuery>, axum::extract::rejection::QueryRejection>,
    headers: HeaderMap,
    body: ApiJson<PredictRequest>,
) -> Result<Json<PredictResponse>, ApiError> {
    state.tokens.authorize(&headers, Scope::Predict)?;
    let Query(query) = query.map_err(|e| ApiError::invalid(e.body_text()).field("version"))?;
    let ApiJson(request) = body;
    // Without a version, or for `production`, a running experiment on the model routes the
    // request to a variant (sticky by `user_id`).
    let routed = match query.version.as_deref() {
        None | Some("production") => state
            .experiments
            .as_ref()
            .and_then(|e| e.route(&name, request.user_id.as_deref())),
        Some(_) => None,
    };
    let version = match routed
        .as_ref()
        .map(|r| r.selector.as_str())
        .or(query.version.as_deref())
    {
        Some(selector) => state.models.resolve(&name, selector).await?,
        // No version: `production` when the model has that alias, else the latest version.
        None => match state.models.resolve(&name, "production").await {
            Ok(version) => version,
            Err(e) if e.status == StatusCode::NOT_FOUND => {
                state.models.resolve(&name, "latest").await?
            }
            Err(e) => return Err(e),
        },
    };
    let loaded = state.models.get(&name, version).await?;
    let artifact = &loaded.artifact;
    let model_id = artifact.id();
    let version_text = artifact.version.to_string();
    let started = Instant::now();
    let record = |figures: PredictionFigures| {
        state
            .metrics
            .prediction(&artifact.name, &version_text, figures);
    };
    match (request.inputs, request.instances) {
        (Some(inputs), None) => {
            let input = check_inputs(artifact, &inputs, "inputs")?;
            let one = run_one(&loaded, &input).await;
            let figures = figures_of(one.as_ref().ok(), started.elapsed());
            record(figures);
            let one = one?;
            tracing::debug!(prediction_id = %one.prediction_id, model_id = %model_id,
                user_id = request.user_id.as_deref().unwrap_or(""), "prediction");
            log(
                &state,
                &model_id,
                routed.as_ref(),
                request.user_id.as_deref(),
                &inputs,
                &one,
            )
            .await;
            Ok(Json(PredictResponse {
                model_id,
                prediction_id: Some(one.prediction_id),
                outputs: Some(one.outputs),
                predictions: None,
                latency_ms: one.latency_ms,
                usage: one.usage,
                cost_usd: one.cost_usd,
                experiment: routed.as_ref().map(|r| r.experiment.spec.name.clone()),
                variant: routed.map(|r| r.variant),
            }))
        }
        (None, Some(instances)) => {
            if instances.is_empty() || instances.len() > state.config.max_batch {
                return Err(ApiError::invalid(format!(
                    "`instances` must hold 1 to {} inputs, not {}",
                    state.config.max_batch,
                    instances.len()
                ))
                .field("instances"));
            }
            let inputs = instances
                .iter()
                .enumerate()
                .map(|(i, inputs)| check_inputs(artifact, inputs, &format!("instances[{i}]")))
                .collect::<Result<Vec<_>, _>>()?;
            let results =
                futures::future::join_all(inputs.iter().map(|input| run_one(&loaded, input))).await;
            let mut predictions = Vec::with_capacity(results.len());
            let mut usage = UsageBody::default();
            let mut cost: Option<f64> = None;
            for (result, input) in results.into_iter().zip(&instances) {
                let figures = figures_of(result.as_ref().ok(), Duration::ZERO);
                record(figures);
                let one = result?;
                tracing::debug!(prediction_id = %one.prediction_id, model_id = %model_id,
                    user_id = request.user_id.as_deref().unwrap_or(""), "prediction");
                log(
                    &state,
                    &model_id,
                    routed.as_ref(),
                    request.user_id.as_deref(),
                    input,
                    &one,
                )
                .await;
                usage.add(one.usage);
                if let Some(c) = one.cost_usd {
                    cost = Some(cost.unwrap_or(0.0) + c);
                }
                predictions.push(one);
            }
            Ok(Json(PredictResponse {
                model_id,
                prediction_id: None,
                outputs: None,
                predictions: Some(predictions),
                latency_ms: started.elapsed().as_secs_f64() * 1000.0,
                usage,
                cost_usd: cost,
                experiment: routed.as_ref().map(|r| r.experiment.spec.name.clone()),
                variant: routed.map(|r| r.variant),
            }))
        }
        (Some(_), Some(_)) => Err(ApiError::invalid(
            "Give either `inputs` (one prediction) or `instances` (a batch), not both",
        )
        .field("instances")),
        (None, None) => Err(ApiError::invalid(
            "Give `inputs` (one prediction) or `instances` (a batch)",
        )
        .field("inputs")),
    }
}

/// Queues the prediction for the server's prediction log (when it has a database).
async fn log(
    state: &AppState,
    model_id: &str,
    routed: Option<&Routed>,
    unit: Option<&str>,
    inputs: &Map<String, Value>,
    one: &InstancePrediction,
) {
    let Some(experiments) = &state.experiments else {
        return;
    };
    let name = model_id.split_once('@').map_or(model_id, |(n, _)| n);
    let policy = state.config.models.get(name).map(|m| &m.log);
    if policy.is_some_and(|p| !p.sampled(rand::random::<f64>(), routed.is_some())) {
        experiments
            .log
            .counters
            .unsampled
            .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        return;
    }
    let record = PredictionRecord {
        prediction_id: one.prediction_id.clone(),
        model_id: model_id.to_string(),
        experiment_id: routed.map(|r| r.experiment.id.clone()),
        variant: routed.map(|r| r.variant.clone()),
        unit_id: unit.map(str::to_string),
        inputs: Value::Object(policy.map_or_else(|| inputs.clone(), |p| p.redact(inputs))),
        outputs: Value::Object(one.outputs.clone()),
        created_at: promptopt_jobs::now(),
        latency_ms: Some(one.latency_ms),
        prompt_tokens: Some(one.usage.prompt_tokens),
        completion_tokens: Some(one.usage.completion_tokens),
        cost_usd: one.cost_usd,
    };
    experiments.log.record(record).await;
}

fn figures_of(one: Option<&InstancePrediction>, fallback: Duration) -> PredictionFigures {
    match one {
        Some(p) => PredictionFigures {
            failed: false,
            prompt_tokens: p.usage.prompt_tokens,
            completion_tokens: p.usage.completion_tokens,
            cost_usd: p.cost_usd.unwrap_or(0.0),
            latency: Duration::from_secs_f64(p.latency_ms / 1000.0),
        },
        None => PredictionFigures {
            failed: true,
            latency: fallback,
            ..PredictionFigures::default()
        },
    }
}
