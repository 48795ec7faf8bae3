//! The console's jobs: the queue by state, and a job's page whose progress (stage, trial n of
//! N, best score so far as a growing chart, budget spent) follows the job's event stream live.

use std::convert::Infallible;

use axum::extract::{Query, State};
use axum::http::{HeaderMap, StatusCode};
use axum::response::sse::{Event, Sse};
use axum::response::{Html, IntoResponse, Redirect, Response};
use axum::{Form, Json};
use futures::Stream;
use maud::{html, Markup};
use promptopt_jobs::{JobRecord, JobState};
use serde::Deserialize;
use serde_json::Value;

use super::chart::{self, LineChart, Series, Style};
use super::page::{self, badge, layout, notice_block, render_error, respond, Confirm, Done, Nav};
use super::session::Viewer;
use crate::auth::Scope;
use crate::body::ApiPath;
use crate::error::ApiError;
use crate::jobs::ListQuery;
use crate::AppState;

/// Events read for a job's chart, at most.
const MAX_EVENTS: u64 = 20_000;

/// `?state=`.
#[derive(Debug, Default, Deserialize)]
pub(crate) struct JobsQuery {
    state: Option<String>,
}

/// `GET /ui/jobs`: the queue, newest first, filtered by state.
pub(crate) async fn list(
    State(state): State<AppState>,
    viewer: Viewer,
    query: Result<Query<JobsQuery>, axum::extract::rejection::QueryRejection>,
) -> Response {
    let query = query.map(|Query(q)| q).unwrap_or_default();
    let result = async {
        let filter = match query.state.as_deref().filter(|s| !s.is_empty()) {
            Some(s) => Some(s.parse::<JobState>().map_err(|_| {
                ApiError::invalid(format!(
                    "`{s}` is not a job state (one of {})",
                    JobState::ALL.map(JobState::as_str).join(", ")
                ))
            })?),
            None => None,
        };
        let Json(jobs) = crate::jobs::list(
            State(state.clone()),
            Ok(Query(ListQuery {
                state: filter,
                limit: Some(200),
            })),
            viewer.headers(),
        )
        .await?;
        let counts = state.queue.counts().await.unwrap_or_default();
        let body = html! {
            nav.filters aria-label="Job states" {
                a href="/ui/jobs" aria-current=[filter.is_none().then_some("true")] { "All" }
                @for s in JobState::ALL {
                    " "
                    a href=(format!("/ui/jobs?state={}", s.as_str()))
                        aria-current=[(filter == Some(s)).then_some("true")] {
                        (s.as_str()) " (" (counts.get(&s).copied().unwrap_or(0)) ")"
                    }
                }
            }
            @if jobs.jobs.is_empty() {
                p.empty { "No jobs" @if let Some(s) = filter { " " (s.as_str()) } ". Submit one with " code { "promptopt jobs submit REQUEST.yaml" } " or " code { "POST /v1/optimizations" } "." }
            } @else {
                table {
                    caption.visually-hidden { "Jobs, newest first" }
                    thead { tr { th scope="col" { "Job" } th scope="col" { "Name" } th scope="col" { "State" } th scope="col" { "Progress" } th scope="col" { "Best" } th scope="col" { "Submitted (UTC)" } } }
                    tbody {
                        @for job in &jobs.jobs {
                            tr {
                                td { a href=(format!("/ui/jobs/{}", job.job_id)) { (job.job_id) } }
                                td { (job.name.as_deref().unwrap_or("–")) }
                                td { (badge(job.state.as_str())) }
                                td { (progress_text(job)) }
                                td { (job.progress.as_ref().and_then(|p| p.best_score).map_or_else(|| "–".into(), chart::number)) }
                                td { (chart::clock(job.created_at)) }
                            }
                        }
                    }
                }
            }
        };
        Ok::<_, ApiError>(layout(&viewer, Some(Nav::Jobs), "Jobs", body).into_response())
    }
    .await;
    respond(&viewer, result)
}

fn progress_text(job: &JobRecord) -> String {
    match &job.progress {
        Some(p) => match p.trials_total.filter(|t| *t >= p.trial) {
            Some(total) => format!("{}: trial {} of {}", p.stage, p.trial, total),
            None if p.trial > 0 => format!("{}: trial {}", p.stage, p.trial),
            None => p.stage.clone(),
        },
        None => "–".into(),
    }
}

/// The job's stored events, oldest first.
async fn history(state: &AppState, id: &str) -> Vec<Value> {
    let mut out = Vec::new();
    let mut after = 0;
    while (out.len() as u64) < MAX_EVENTS {
        match state.queue.events(id, after, 1000).await {
            Ok(events) if !events.is_empty() => {
                let n = events.len();
                for (number, value) in events {
                    after = number;
                    out.push(value);
                }
                if n < 1000 {
                    break;
                }
            }
            _ => break,
        }
    }
    out
}

/// The progress panel: state, stage, trial n of N, best so far, budget, the chart.
async fn panel(state: &AppState, viewer: &Viewer, id: &str) -> Result<Markup, ApiError> {
    let Json(job) = crate::jobs::get_job(
        State(state.clone()),
        ApiPath(id.to_string()),
        viewer.headers(),
    )
    .await?;
    let events = history(state, id).await;
    let mut best = Vec::new();
    let mut trials = Vec::new();
    let mut warnings = Vec::new();
    for e in &events {
        match e.get("event").and_then(Value::as_str) {
            Some("trial_scored") => {
                let trial = e["trial"].as_f64().unwrap_or(0.0);
                if let Some(score) = e["score"].as_f64() {
                    trials.push((trial, score));
                }
                if let Some(b) = e["best_so_far"].as_f64().filter(|b| b.is_finite()) {
                    best.push((trial, b));
                }
            }
            Some("warning") => {
                if let Some(m) = e["message"].as_str() {
                    warnings.push(m.to_string());
                }
            }
            _ => {}
        }
    }
    // The events may be ahead of the record's last heartbeat.
    let last_trial = trials.iter().map(|t| t.0 as u64).max().unwrap_or(0);
    let mut progress = job.progress.clone();
    if let Some(p) = progress.as_mut() {
        p.trial = p.trial.max(last_trial);
        // A total smaller than the trials seen is some inner stage's: not shown.
        p.trials_total = p.trials_total.filter(|t| *t >= p.trial);
    }
    let mut chart = LineChart::new("Best score so far by trial", "trial", "score");
    if let Some(total) = progress.as_ref().and_then(|p| p.trials_total) {
        chart.x_min_range = Some((1.0, total.max(1) as f64));
    }
    chart.series.push(Series {
        label: "best so far".into(),
        points: best,
        style: Style::Step,
    });
    chart.series.push(Series {
        label: "trial score".into(),
        points: trials.clone(),
        style: Style::Dots,
    });
    let final_state = job.state.is_final();
    Ok(html! {
        div.panel data-state=(job.state.as_str()) data-final=(final_state) {
            dl.facts {
                dt { "State" } dd #job-state { (badge(job.state.as_str())) @if job.cancel_requested && !final_state { " (cancel requested)" } }
                dt { "Name" } dd { (job.name.as_deref().unwrap_or("–")) }
                dt { "Stage" } dd #job-stage { (progress.as_ref().map_or("–", |p| p.stage.as_str())) }
                dt { "Trial" } dd #job-trial {
                    @match &progress {
                        Some(p) => { (p.trial) @if let Some(t) = p.trials_total { " of " (t) } }
                        None => { "–" }
                    }
                }
                dt { "Best score so far" } dd #job-best { (progress.as_ref().and_then(|p| p.best_score).map_or_else(|| "–".into(), chart::number)) }
                dt { "Budget spent" } dd #job-budget {
                    @match &progress {
                        Some(p) => { (p.lm_calls) " model calls, $" (format!("{:.4}", p.cost_usd)) }
                        None => { "–" }
                    }
                }
                dt { "Attempts" } dd { (job.attempts) " of " (job.max_attempts) }
                dt { "Priority" } dd { (job.priority.as_str()) }
                dt { "Submitted (UTC)" } dd { (chart::clock(job.created_at)) }
                @if let Some(t) = job.started_at { dt { "Started (UTC)" } dd { (chart::clock(t)) } }
                @if let Some(t) = job.finished_at { dt { "Finished (UTC)" } dd { (chart::clock(t)) } }
                @if let Some(w) = &job.worker { dt { "Worker" } dd { (w) } }
                @if let Some(model) = &job.model_id {
                    dt { "Saved model" }
                    dd #job-model {
                        @match model.split_once('@') {
                            Some((name, version)) => a href=(format!("/ui/models/{}/versions/{}", page::segment(name), page::segment(version))) { (model) },
                            None => (model),
                        }
                    }
                }
                @if let Some(e) = &job.error { dt { "Error" } dd.error { (e) } }
            }
            (chart.render())
            @if !warnings.is_empty() {
                h2 { "Warnings" }
                ul { @for w in &warnings { li { (w) } } }
            }
            @if !final_state && viewer.can(Scope::Admin) {
                p { a.button.danger href=(format!("/ui/jobs/{id}/cancel")) { "Cancel job…" } }
            }
        }
    })
}

/// `GET /ui/jobs/{id}`: the job, following its event stream while it runs.
pub(crate) async fn page(
    State(state): State<AppState>,
    viewer: Viewer,
    ApiPath(id): ApiPath<String>,
    Done(done): Done,
) -> Response {
    let result = async {
        let panel = panel(&state, &viewer, &id).await?;
        let body = html! {
            (notice_block(done.as_deref()))
            section #live aria-live="polite" aria-label="Progress"
                data-live=(format!("/ui/jobs/{id}/live"))
                data-events=(format!("/ui/jobs/{id}/events")) {
                (panel)
            }
            p { a href=(format!("/v1/jobs/{id}")) { "This job as JSON" } " · " a href="/ui/jobs" { "All jobs" } }
        };
        Ok(layout(&viewer, Some(Nav::Jobs), &format!("Job {id}"), body).into_response())
    }
    .await;
    respond(&viewer, result)
}

/// `GET /ui/jobs/{id}/live`: the progress panel alone, which the page swaps in when the event
/// stream says something changed.
pub(crate) async fn live(
    State(state): State<AppState>,
    viewer: Viewer,
    ApiPath(id): ApiPath<String>,
) -> Response {
    match panel(&state, &viewer, &id).await {
        Ok(markup) => Html(markup.into_string()).into_response(),
        Err(e) => render_error(&viewer, e),
    }
}

/// `GET /ui/jobs/{id}/events`: the job's event stream (`GET /v1/jobs/{id}/events`) for the
/// session's token.
pub(crate) async fn events(
    State(state): State<AppState>,
    viewer: Viewer,
    ApiPath(id): ApiPath<String>,
    request_headers: HeaderMap,
) -> Result<Sse<impl Stream<Item = Result<Event, Infallible>>>, Response> {
    let mut headers = viewer.headers();
    if let Some(last) = request_headers.get("last-event-id") {
        headers.insert("last-event-id", last.clone());
    }
    crate::jobs::events(State(state), ApiPath(id), headers)
        .await
        .map_err(|e| e.into_response())
}

/// `GET /ui/jobs/{id}/cancel`: asks before cancelling.
pub(crate) async fn confirm_cancel(
    State(state): State<AppState>,
    viewer: Viewer,
    ApiPath(id): ApiPath<String>,
) -> Response {
    let result = async {
        let Json(job) =
            crate::jobs::get_job(State(state.clone()), ApiPath(id.clone()), viewer.headers())
                .await?;
        Ok(cancel_form(&viewer, &job, None, StatusCode::OK))
    }
    .await;
    respond(&viewer, result)
}

fn cancel_form(
    viewer: &Viewer,
    job: &JobRecord,
    problem: Option<String>,
    status: StatusCode,
) -> Response {
    let id = &job.job_id;
    Confirm {
        title: "Cancel the job?",
        question: html! {
            "Cancel " strong { (id) } " (" (job.name.as_deref().unwrap_or("unnamed")) ", " (job.state.as_str()) ")? "
            "A queued job ends at once; a running one stops at its next heartbeat and keeps its best so far."
        },
        action: format!("/ui/jobs/{id}/cancel"),
        fields: Vec::new(),
        button: "Cancel the job",
        back: format!("/ui/jobs/{id}"),
        problem,
    }
    .render(viewer, Nav::Jobs, status)
}

/// A form with only the anti-forgery value.
#[derive(Debug, Deserialize)]
pub(crate) struct CsrfForm {
    #[serde(default)]
    pub(crate) csrf: String,
}

/// `POST /ui/jobs/{id}/cancel`: cancels (admins only), or says why not.
pub(crate) async fn cancel(
    State(state): State<AppState>,
    viewer: Viewer,
    ApiPath(id): ApiPath<String>,
    Form(form): Form<CsrfForm>,
) -> Response {
    if let Some(page) = viewer.csrf_refusal(&form.csrf) {
        return page;
    }
    if !viewer.can(Scope::Admin) {
        return page::error_page(
            &viewer,
            StatusCode::FORBIDDEN,
            "Not allowed with this token",
            "Cancelling a job from the console needs an `admin` token.",
        );
    }
    let outcome =
        crate::jobs::cancel(State(state.clone()), ApiPath(id.clone()), viewer.headers()).await;
    match outcome {
        Ok(_) => Redirect::to(&format!("/ui/jobs/{id}?done=cancelled")).into_response(),
        Err(e) => {
            let job = crate::jobs::get_job(State(state), ApiPath(id), viewer.headers()).await;
            match job {
                Ok(Json(job)) => cancel_form(
                    &viewer,
                    &job,
                    Some(format!("The job was not cancelled: {}", e.message)),
                    e.status,
                ),
                Err(_) => render_error(&viewer, e),
            }
        }
    }
}
