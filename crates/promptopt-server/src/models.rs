//! `/v1/models...`: reading the registry, promoting with aliases, deleting versions.

use std::collections::BTreeMap;

use axum::extract::State;
use axum::http::{HeaderMap, StatusCode};
use axum::Json;
use promptopt_registry::{check_alias, check_name, ModelRef, ModelSummary, Version};
use serde::{Deserialize, Serialize};
use serde_json::Value;

use crate::auth::Scope;
use crate::body::{ApiJson, ApiPath};
use crate::error::ApiError;
use crate::AppState;

/// A model's versions and aliases.
#[derive(Debug, Serialize, utoipa::ToSchema)]
pub(crate) struct ModelInfo {
    /// The name.
    pub(crate) name: String,
    /// Its versions, ascending.
    pub(crate) versions: Vec<String>,
    /// The highest version.
    pub(crate) latest: Option<String>,
    /// Each alias and the version it points at.
    pub(crate) aliases: BTreeMap<String, String>,
}

impl From<ModelSummary> for ModelInfo {
    fn from(s: ModelSummary) -> Self {
        Self {
            name: s.name,
            latest: s.versions.last().map(ToString::to_string),
            versions: s.versions.iter().map(ToString::to_string).collect(),
            aliases: s
                .aliases
                .into_iter()
                .map(|(a, v)| (a, v.to_string()))
                .collect(),
        }
    }
}

/// Every model.
#[derive(Debug, Serialize, utoipa::ToSchema)]
pub(crate) struct ModelList {
    /// The models, by name.
    pub(crate) models: Vec<ModelInfo>,
}

/// One saved version.
#[derive(Debug, Serialize, utoipa::ToSchema)]
pub(crate) struct ModelVersion {
    /// `name@version`.
    pub(crate) model_id: String,
    /// The aliases pointing at it.
    pub(crate) aliases: Vec<String>,
    /// The saved artifact: program, learned state, model settings, scores, metadata, tags and
    /// provenance.
    #[schema(value_type = Object)]
    pub(crate) artifact: Value,
}

/// Where an alias points.
#[derive(Debug, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub(crate) struct AliasRequest {
    /// The version (`1.2.0`), `latest`, or another alias to copy.
    pub(crate) version: String,
}

/// An alias after it moved.
#[derive(Debug, Serialize, utoipa::ToSchema)]
pub(crate) struct AliasResponse {
    /// The model.
    pub(crate) name: String,
    /// The alias.
    pub(crate) alias: String,
    /// The version it points at now.
    pub(crate) version: String,
    /// The version it pointed at before, if any.
    pub(crate) previous: Option<String>,
}

/// Reading models (and experiments) needs any scope.
pub(crate) fn authorize_read(state: &AppState, headers: &HeaderMap) -> Result<(), ApiError> {
    state
        .tokens
        .authorize(headers, Scope::Predict)
        .or_else(|_| state.tokens.authorize(headers, Scope::Optimize))
}

async fn blocking<T: Send + 'static>(
    f: impl FnOnce() -> Result<T, ApiError> + Send + 'static,
) -> Result<T, ApiError> {
    tokio::task::spawn_blocking(f)
        .await
        .map_err(ApiError::internal)?
}

fn checked_name(name: &str) -> Result<(), ApiError> {
    check_name(name).map_err(|e| ApiError::from(e).field("name"))
}

/// Every model with its versions and aliases.
#[utoipa::path(get, path = "/v1/models", tag = "models",
    security(("bearer" = ["predict"]), ("bearer" = ["optimize"])),
    responses(
        (status = 200, description = "The models", body = ModelList),
        (status = 401, description = "No valid token", body = crate::ErrorBody),
    ))]
pub(crate) async fn list(
    State(state): State<AppState>,
    headers: HeaderMap,
) -> Result<Json<ModelList>, ApiError> {
    authorize_read(&state, &headers)?;
    let registry = state.registry.clone();
    let models = blocking(move || Ok(registry.list()?)).await?;
    Ok(Json(ModelList {
        models: models.into_iter().map(ModelInfo::from).collect(),
    }))
}

/// One model's versions and aliases.
#[utoipa::path(get, path = "/v1/models/{name}", tag = "models",
    params(("name" = String, Path, description = "The model's name")),
    security(("bearer" = ["predict"]), ("bearer" = ["optimize"])),
    responses(
        (status = 200, description = "The model", body = ModelInfo),
        (status = 401, description = "No valid token", body = crate::ErrorBody),
        (status = 404, description = "No such model", body = crate::ErrorBody),
        (status = 422, description = "Invalid name", body = crate::ErrorBody),
    ))]
pub(crate) async fn get_model(
    State(state): State<AppState>,
    ApiPath(name): ApiPath<String>,
    headers: HeaderMap,
) -> Result<Json<ModelInfo>, ApiError> {
    authorize_read(&state, &headers)?;
    checked_name(&name)?;
    let registry = state.registry.clone();
    let summary = blocking(move || {
        let versions = registry.versions(&name)?;
        if versions.is_empty() {
            return Err(ApiError::not_found(format!("No model `{name}`")));
        }
        let aliases = registry.aliases(&name)?;
        Ok(ModelSummary {
            name,
            versions,
            aliases,
        })
    })
    .await?;
    Ok(Json(ModelInfo::from(summary)))
}

/// One version (`1.2.0`, `latest` or an alias) with its artifact.
#[utoipa::path(get, path = "/v1/models/{name}/versions/{version}", tag = "models",
    params(
        ("name" = String, Path, description = "The model's name"),
        ("version" = String, Path, description = "`1.2.0`, `latest` or an alias"),
    ),
    security(("bearer" = ["predict"]), ("bearer" = ["optimize"])),
    responses(
        (status = 200, description = "The version", body = ModelVersion),
        (status = 401, description = "No valid token", body = crate::ErrorBody),
        (status = 404, description = "No such model or version", body = crate::ErrorBody),
        (status = 422, description = "Invalid name or version", body = crate::ErrorBody),
    ))]
pub(crate) async fn get_version(
    State(state): State<AppState>,
    ApiPath((name, version)): ApiPath<(String, String)>,
    headers: HeaderMap,
) -> Result<Json<ModelVersion>, ApiError> {
    authorize_read(&state, &headers)?;
    checked_name(&name)?;
    let exact = state.models.resolve(&name, &version).await?;
    let registry = state.registry.clone();
    let (artifact, aliases) = blocking(move || {
        let artifact = registry.load(&ModelRef::exact(&name, exact))?;
        let aliases = registry
            .aliases(&name)?
            .into_iter()
            .filter(|(_, v)| *v == exact)
            .map(|(a, _)| a)
            .collect::<Vec<_>>();
        Ok((artifact, aliases))
    })
    .await?;
    Ok(Json(ModelVersion {
        model_id: artifact.id(),
        aliases,
        artifact: serde_json::to_value(&artifact).map_err(ApiError::internal)?,
    }))
}

/// Points an alias (`production`, `candidate`, ...) at a version: a promotion. Servers pick the
/// new version for new requests; in-flight ones finish on the old.
#[utoipa::path(put, path = "/v1/models/{name}/aliases/{alias}", tag = "models",
    params(
        ("name" = String, Path, description = "The model's name"),
        ("alias" = String, Path, description = "The alias"),
    ),
    request_body = AliasRequest,
    security(("bearer" = ["admin"])),
    responses(
        (status = 200, description = "The alias moved", body = AliasResponse),
        (status = 400, description = "The body is not JSON", body = crate::ErrorBody),
        (status = 401, description = "No valid token", body = crate::ErrorBody),
        (status = 403, description = "The token lacks the scope", body = crate::ErrorBody),
        (status = 404, description = "No such model or version", body = crate::ErrorBody),
        (status = 413, description = "The body is too large", body = crate::ErrorBody),
        (status = 415, description = "The body is not JSON", body = crate::ErrorBody),
        (status = 422, description = "Invalid name, alias or version", body = crate::ErrorBody),
    ))]
pub(crate) async fn set_alias(
    State(state): State<AppState>,
    ApiPath((name, alias)): ApiPath<(String, String)>,
    headers: HeaderMap,
    body: ApiJson<AliasRequest>,
) -> Result<Json<AliasResponse>, ApiError> {
    state.tokens.authorize(&headers, Scope::Admin)?;
    checked_name(&name)?;
    check_alias(&alias).map_err(|m| ApiError::invalid(m).field("alias"))?;
    let ApiJson(request) = body;
    let version = state.models.resolve(&name, &request.version).await?;
    let registry = state.registry.clone();
    let (n, a) = (name.clone(), alias.clone());
    let previous = blocking(move || {
        let previous = registry
            .aliases(&n)?
            .into_iter()
            .find(|(x, _)| *x == a)
            .map(|(_, v)| v);
        registry.set_alias(&n, &a, version)?;
        Ok(previous)
    })
    .await?;
    state.models.invalidate(&name, None);
    tracing::info!(model = %name, alias = %alias, version = %version, "alias moved");
    Ok(Json(AliasResponse {
        name,
        alias,
        version: version.to_string(),
        previous: previous.map(|v: Version| v.to_string()),
    }))
}

/// Removes an alias.
#[utoipa::path(delete, path = "/v1/models/{name}/aliases/{alias}", tag = "models",
    params(
        ("name" = String, Path, description = "The model's name"),
        ("alias" = String, Path, description = "The alias"),
    ),
    security(("bearer" = ["admin"])),
    responses(
        (status = 204, description = "Removed"),
        (status = 401, description = "No valid token", body = crate::ErrorBody),
        (status = 403, description = "The token lacks the scope", body = crate::ErrorBody),
        (status = 404, description = "No such alias", body = crate::ErrorBody),
        (status = 422, description = "Invalid name or alias", body = crate::ErrorBody),
    ))]
pub(crate) async fn remove_alias(
    State(state): State<AppState>,
    ApiPath((name, alias)): ApiPath<(String, String)>,
    headers: HeaderMap,
) -> Result<StatusCode, ApiError> {
    state.tokens.authorize(&headers, Scope::Admin)?;
    checked_name(&name)?;
    check_alias(&alias).map_err(|m| ApiError::invalid(m).field("alias"))?;
    let registry = state.registry.clone();
    let n = name.clone();
    blocking(move || {
        if !registry.aliases(&n)?.iter().any(|(a, _)| *a == alias) {
            return Err(ApiError::not_found(format!(
                "Model `{n}` has no alias `{alias}`"
            )));
        }
        Ok(registry.remove_alias(&n, &alias)?)
    })
    .await?;
    state.models.invalidate(&name, None);
    Ok(StatusCode::NO_CONTENT)
}

/// Deletes one version; refused while an alias points at it.
#[utoipa::path(delete, path = "/v1/models/{name}/versions/{version}", tag = "models",
    params(
        ("name" = String, Path, description = "The model's name"),
        ("version" = String, Path, description = "The exact version, e.g. `1.2.0`"),
    ),
    security(("bearer" = ["admin"])),
    responses(
        (status = 204, description = "Deleted"),
        (status = 401, description = "No valid token", body = crate::ErrorBody),
        (status = 403, description = "The token lacks the scope", body = crate::ErrorBody),
        (status = 404, description = "No such model or version", body = crate::ErrorBody),
        (status = 409, description = "An alias points at the version", body = crate::ErrorBody),
        (status = 422, description = "Invalid name or version", body = crate::ErrorBody),
    ))]
pub(crate) async fn delete_version(
    State(state): State<AppState>,
    ApiPath((name, version)): ApiPath<(String, String)>,
    headers: HeaderMap,
) -> Result<StatusCode, ApiError> {
    state.tokens.authorize(&headers, Scope::Admin)?;
    checked_name(&name)?;
    let exact: Version = version
        .parse()
        .map_err(|e: promptopt_registry::RegistryError| {
            ApiError::invalid(format!("{e} (give an exact version such as `1.2.0`)"))
                .field("version")
        })?;
    if let Some(experiments) = &state.experiments {
        let version_text = exact.to_string();
        for experiment in experiments.store.list().await? {
            let live = matches!(
                experiment.state,
                promptopt_experiments::ExperimentState::Draft
                    | promptopt_experiments::ExperimentState::Running
            );
            let uses = experiment.model == name
                && experiment
                    .spec
                    .variants
                    .keys()
                    .any(|v| experiment.spec.selector(v) == Some(version_text.as_str()));
            if live && uses {
                return Err(ApiError::conflict(format!(
                    "Model `{name}@{exact}` is a variant of the {} experiment `{}`: stop it first",
                    experiment.state, experiment.spec.name
                )));
            }
        }
    }
    let registry = state.registry.clone();
    let n = name.clone();
    blocking(move || {
        let pointing: Vec<String> = registry
            .aliases(&n)?
            .into_iter()
            .filter(|(_, v)| *v == exact)
            .map(|(a, _)| format!("`{a}`"))
            .collect();
        if !pointing.is_empty() {
            return Err(ApiError::conflict(format!(
                "Model `{n}@{exact}` is what {} points at: move or remove the alias first",
                pointing.join(", ")
            )));
        }
        Ok(registry.delete(&n, Some(exact))?)
    })
    .await?;
    state.models.invalidate(&name, Some(exact));
    Ok(StatusCode::NO_CONTENT)
}
