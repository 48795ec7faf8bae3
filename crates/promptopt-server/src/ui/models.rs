//! The console's models: names, versions, aliases and scores; a version's exact prompts (the
//! messages each stage sends, rendered by the same code that sends them), its demos, its MLflow
//! run; promoting a version to an alias.

use axum::extract::{Query, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Redirect, Response};
use axum::{Form, Json};
use maud::{html, Markup};
use promptopt_jobs::JobState;
use promptopt_registry::export::{export, ExportFormat};
use promptopt_registry::ModelArtifact;
use serde::Deserialize;
use serde_json::Value;

use super::page::{self, layout, notice_block, respond, segment, text, Confirm, Done, Nav};
use super::session::Viewer;
use crate::auth::Scope;
use crate::body::{ApiJson, ApiPath};
use crate::error::ApiError;
use crate::models::AliasRequest;
use crate::AppState;

/// Versions shown on a model's page, newest first.
const MAX_VERSIONS: usize = 50;

/// `GET /ui/models`.
pub(crate) async fn list(State(state): State<AppState>, viewer: Viewer) -> Response {
    let result = async {
        let Json(models) = crate::models::list(State(state), viewer.headers()).await?;
        let body = html! {
            @if models.models.is_empty() {
                p.empty { "No saved models yet. A finished optimization job saves one." }
            } @else {
                table {
                    caption.visually-hidden { "Saved models" }
                    thead { tr { th scope="col" { "Model" } th scope="col" { "Versions" } th scope="col" { "Latest" } th scope="col" { "Aliases" } } }
                    tbody {
                        @for m in &models.models {
                            tr {
                                td { a href=(format!("/ui/models/{}", segment(&m.name))) { (m.name) } }
                                td { (m.versions.len()) }
                                td { (m.latest.as_deref().unwrap_or("–")) }
                                td { (aliases(&m.aliases)) }
                            }
                        }
                    }
                }
            }
        };
        Ok::<_, ApiError>(layout(&viewer, Some(Nav::Models), "Models", body).into_response())
    }
    .await;
    respond(&viewer, result)
}

fn aliases(aliases: &std::collections::BTreeMap<String, String>) -> Markup {
    html! {
        @for (alias, version) in aliases {
            span.alias { (alias) " → " (version) } " "
        }
    }
}

/// `GET /ui/models/{name}`: versions with their scores and aliases.
pub(crate) async fn model(
    State(state): State<AppState>,
    viewer: Viewer,
    ApiPath(name): ApiPath<String>,
) -> Response {
    let result = async {
        let Json(info) =
            crate::models::get_model(State(state.clone()), ApiPath(name.clone()), viewer.headers())
                .await?;
        let mut rows = Vec::new();
        for version in info.versions.iter().rev().take(MAX_VERSIONS) {
            let Json(v) = crate::models::get_version(
                State(state.clone()),
                ApiPath((name.clone(), version.clone())),
                viewer.headers(),
            )
            .await?;
            rows.push((version.clone(), v));
        }
        let body = html! {
            dl.facts {
                dt { "Versions" } dd { (info.versions.len()) }
                dt { "Aliases" } dd { @if info.aliases.is_empty() { "none" } @else { (aliases(&info.aliases)) } }
            }
            table {
                caption.visually-hidden { "Versions, newest first" }
                thead { tr { th scope="col" { "Version" } th scope="col" { "Saved (UTC)" } th scope="col" { "Metric" } th scope="col" { "Baseline" } th scope="col" { "Optimized" } th scope="col" { "Algorithm" } th scope="col" { "Aliases" } } }
                tbody {
                    @for (version, v) in &rows {
                        tr {
                            td { a href=(format!("/ui/models/{}/versions/{}", segment(&name), segment(version))) { (version) } }
                            td { (text(&v.artifact["created_at"])) }
                            td { (text(&v.artifact["metrics"]["metric"])) }
                            td { (text(&v.artifact["metrics"]["baseline_score"])) }
                            td { (text(&v.artifact["metrics"]["optimized_score"])) }
                            td { (text(&v.artifact["provenance"]["algorithm"])) }
                            td { @for a in &v.aliases { span.alias { (a) } " " } }
                        }
                    }
                }
            }
            @if info.versions.len() > MAX_VERSIONS {
                p.hint { "The newest " (MAX_VERSIONS) " versions are shown; " code { "promptopt models list" } " lists them all." }
            }
        };
        Ok::<_, ApiError>(layout(&viewer, Some(Nav::Models), &name, body).into_response())
    }
    .await;
    respond(&viewer, result)
}

/// One stage's rendered request, as the `messages` export writes it.
#[derive(Debug, Deserialize)]
struct StageMessages {
    stage: String,
    module: String,
    model: String,
    adapter: String,
    messages: Vec<MessageText>,
}

#[derive(Debug, Deserialize)]
struct MessageText {
    role: String,
    content: String,
}

/// The MLflow run of the job that saved `model_id`, if a recent job did and was tracked.
async fn mlflow_run(state: &AppState, model_id: &str) -> Option<String> {
    let jobs = state
        .queue
        .list(Some(JobState::Succeeded), 1000)
        .await
        .ok()?;
    let job = jobs
        .iter()
        .find(|j| j.model_id.as_deref() == Some(model_id))?;
    let result = state.queue.result(&job.job_id).await.ok()??;
    result["mlflow_run_id"].as_str().map(str::to_string)
}

/// `GET /ui/models/{name}/versions/{version}`: settings, scores, each stage's exact prompt and
/// demos, the MLflow run, and (for admins) promotion.
pub(crate) async fn version(
    State(state): State<AppState>,
    viewer: Viewer,
    ApiPath((name, version)): ApiPath<(String, String)>,
    Done(done): Done,
) -> Response {
    let result = async {
        let Json(v) = crate::models::get_version(
            State(state.clone()),
            ApiPath((name.clone(), version.clone())),
            viewer.headers(),
        )
        .await?;
        let artifact: ModelArtifact =
            serde_json::from_value(v.artifact.clone()).map_err(ApiError::internal)?;
        let exact = artifact.version.to_string();
        let stages: Vec<StageMessages> = export(&artifact, ExportFormat::Messages)
            .map_err(ApiError::from)
            .and_then(|text| serde_json::from_str(&text).map_err(ApiError::internal))?;
        let run = mlflow_run(&state, &v.model_id).await;
        let run_link = run.as_ref().and_then(|id| {
            state
                .config
                .mlflow_ui
                .as_deref()
                .map(|base| format!("{}/#/runs/{id}", base.trim_end_matches('/')))
        });
        let body = html! {
            (notice_block(done.as_deref()))
            dl.facts {
                dt { "Model id" } dd { (v.model_id) }
                dt { "Aliases" } dd #aliases { @if v.aliases.is_empty() { "none" } @else { @for a in &v.aliases { span.alias { (a) } " " } } }
                dt { "Language model" } dd { code { (artifact.model.model) } }
                dt { "Adapter" } dd { (artifact.model.adapter.name()) }
                dt { "Saved (UTC)" } dd { (artifact.created_at) }
                @for (key, value) in artifact.metrics.iter().filter(|(_, v)| !v.is_object()) {
                    dt { (key.replace('_', " ")) } dd { (text(value)) }
                }
                @if let Some(alg) = &artifact.provenance.algorithm { dt { "Algorithm" } dd { (alg) } }
                @if let Some(seed) = artifact.provenance.seed { dt { "Seed" } dd { (seed) } }
                @if let Some(parent) = &artifact.provenance.parent_version { dt { "Parent version" } dd { (parent) } }
                dt { "MLflow run" }
                dd #mlflow-run {
                    @match (&run, &run_link) {
                        (Some(_), Some(link)) => a href=(link) { (run.as_deref().unwrap_or_default()) },
                        (Some(id), None) => { code { (id) } " (set " code { "mlflow_ui" } " in the server's configuration to link it)" },
                        (None, _) => "none recorded (tracking off, or the job that saved it is no longer in the queue)",
                    }
                }
            }
            (measurements(&artifact.metrics))
            @if viewer.can(Scope::Admin) {
                form.inline method="get" action=(format!("/ui/models/{}/promote", segment(&name))) {
                    input type="hidden" name="version" value=(exact);
                    label for="alias" { "Alias" }
                    input #alias type="text" name="alias" value="production" required pattern="[A-Za-z][A-Za-z0-9_-]*";
                    button type="submit" { "Promote…" }
                }
            }
            @for stage in &stages {
                section.stage {
                    h2 { "Stage " code { (stage.stage) } }
                    p.hint { (stage.module) " · " code { (stage.model) } " · " (stage.adapter) " adapter · inputs shown as " code { "{field}" } }
                    @for m in &stage.messages {
                        div.message {
                            h3.role { (m.role) }
                            pre { (m.content) }
                        }
                    }
                    (demos(&v.artifact, &stage.stage))
                }
            }
            p { a href=(format!("/v1/models/{}/versions/{}", segment(&name), segment(&exact))) { "This version as JSON" } }
        };
        Ok::<_, ApiError>(
            layout(&viewer, Some(Nav::Models), &v.model_id, body).into_response(),
        )
    }
    .await;
    respond(&viewer, result)
}

/// The measurements saved as objects (`baseline`, `optimized`, `test`: score, accuracy,
/// latency...) side by side, one row per figure.
fn measurements(metrics: &serde_json::Map<String, Value>) -> Markup {
    let sets: Vec<(&String, &serde_json::Map<String, Value>)> = metrics
        .iter()
        .filter_map(|(k, v)| v.as_object().map(|o| (k, o)))
        .collect();
    let mut rows: Vec<&String> = Vec::new();
    for (_, set) in &sets {
        for (k, v) in set.iter() {
            if !v.is_object() && !v.is_array() && !rows.contains(&k) {
                rows.push(k);
            }
        }
    }
    html! {
        @if !sets.is_empty() {
            h2 { "Measurements" }
            table.measurements {
                thead { tr { th scope="col" { "Figure" } @for (name, _) in &sets { th scope="col" { (name) } } } }
                tbody {
                    @for row in &rows {
                        tr {
                            th scope="row" { (row.replace('_', " ")) }
                            @for (_, set) in &sets { td { (set.get(row.as_str()).map_or_else(|| "–".into(), text)) } }
                        }
                    }
                }
            }
        }
    }
}

/// A stage's demos as a table of their fields.
fn demos(artifact: &Value, stage: &str) -> Markup {
    let demos = artifact["state"]["predictors"][stage]["demos"]
        .as_array()
        .cloned()
        .unwrap_or_default();
    let mut keys: Vec<String> = Vec::new();
    for d in &demos {
        if let Some(map) = d.as_object() {
            for k in map.keys() {
                if !keys.contains(k) {
                    keys.push(k.clone());
                }
            }
        }
    }
    html! {
        h3 { "Demos (" (demos.len()) ")" }
        @if !demos.is_empty() {
            table.demos {
                thead { tr { @for k in &keys { th scope="col" { (k) } } } }
                tbody {
                    @for d in &demos {
                        tr { @for k in &keys { td { (text(&d[k.as_str()])) } } }
                    }
                }
            }
        }
    }
}

/// Which version goes to which alias.
#[derive(Debug, Deserialize)]
pub(crate) struct PromoteQuery {
    version: String,
    alias: String,
}

/// The promotion form.
#[derive(Debug, Deserialize)]
pub(crate) struct PromoteForm {
    #[serde(default)]
    csrf: String,
    version: String,
    alias: String,
}

async fn promote_form(
    state: &AppState,
    viewer: &Viewer,
    name: &str,
    version: &str,
    alias: &str,
    problem: Option<String>,
    status: StatusCode,
) -> Response {
    let current = crate::models::get_model(
        State(state.clone()),
        ApiPath(name.to_string()),
        viewer.headers(),
    )
    .await
    .ok()
    .and_then(|Json(info)| info.aliases.get(alias).cloned());
    Confirm {
        title: "Promote this version?",
        question: html! {
            "Point " strong { (alias) } " of " strong { (name) } " at version " strong { (version) } "? "
            @match &current {
                Some(c) => { "It points at " (c) " now. " }
                None => { "The alias is new. " }
            }
            "New requests use the new version at once; requests in flight finish on the old one."
        },
        action: format!("/ui/models/{}/promote", segment(name)),
        fields: vec![("version", version.to_string()), ("alias", alias.to_string())],
        button: "Promote",
        back: format!("/ui/models/{}/versions/{}", segment(name), segment(version)),
        problem,
    }
    .render(viewer, Nav::Models, status)
}

/// `GET /ui/models/{name}/promote?version=&alias=`: asks before moving the alias.
pub(crate) async fn confirm_promote(
    State(state): State<AppState>,
    viewer: Viewer,
    ApiPath(name): ApiPath<String>,
    query: Result<Query<PromoteQuery>, axum::extract::rejection::QueryRejection>,
) -> Response {
    match query {
        Ok(Query(q)) => {
            promote_form(
                &state,
                &viewer,
                &name,
                &q.version,
                &q.alias,
                None,
                StatusCode::OK,
            )
            .await
        }
        Err(e) => page::error_page(
            &viewer,
            StatusCode::UNPROCESSABLE_ENTITY,
            "Invalid",
            &format!(
                "Name the version and the alias to promote: {}",
                e.body_text()
            ),
        ),
    }
}

/// `POST /ui/models/{name}/promote`: moves the alias (admins), or shows why not.
pub(crate) async fn promote(
    State(state): State<AppState>,
    viewer: Viewer,
    ApiPath(name): ApiPath<String>,
    Form(form): Form<PromoteForm>,
) -> Response {
    if let Some(page) = viewer.csrf_refusal(&form.csrf) {
        return page;
    }
    let outcome = crate::models::set_alias(
        State(state.clone()),
        ApiPath((name.clone(), form.alias.clone())),
        viewer.headers(),
        ApiJson(AliasRequest {
            version: form.version.clone(),
        }),
    )
    .await;
    match outcome {
        Ok(Json(moved)) => Redirect::to(&format!(
            "/ui/models/{}/versions/{}?done=promoted",
            segment(&name),
            segment(&moved.version)
        ))
        .into_response(),
        Err(e) => {
            let status = e.status;
            promote_form(
                &state,
                &viewer,
                &name,
                &form.version,
                &form.alias,
                Some(format!("The alias did not move: {}", e.message)),
                status,
            )
            .await
        }
    }
}
