//! `/v1/optimizations` and `/v1/jobs...`: queueing optimization requests and following them.

use std::collections::VecDeque;
use std::convert::Infallible;
use std::time::Duration;

use axum::extract::{Query, Request, State};
use axum::http::{header, HeaderMap, HeaderValue, StatusCode};
use axum::response::sse::{Event, KeepAlive, Sse};
use axum::response::{IntoResponse, Response};
use axum::Json;
use futures::Stream;
use promptopt_jobs::{JobRecord, JobSpec, JobState};
use promptopt_optimize::{DataSource, OptimizationRequest};
use serde::{Deserialize, Serialize};
use serde_json::Value;

use crate::auth::Scope;
use crate::body::{bytes_of, media_type, parse_json, ApiPath};
use crate::error::ApiError;
use crate::AppState;

/// How often an event stream looks for new events.
const POLL: Duration = Duration::from_millis(250);

/// How to queue the request.
#[derive(Debug, Deserialize, utoipa::IntoParams)]
#[into_params(parameter_in = Query)]
#[serde(deny_unknown_fields)]
pub(crate) struct SubmitQuery {
    /// `high`, `normal` (the default) or `low`.
    pub(crate) priority: Option<String>,
    /// Stop the optimization after this long, keeping the best so far (`90s`, `30m`, `2h`).
    pub(crate) timeout: Option<String>,
    /// Attempts before the job is `dead` (default 3).
    pub(crate) max_attempts: Option<u32>,
}

/// Which jobs to list.
#[derive(Debug, Deserialize, utoipa::IntoParams)]
#[into_params(parameter_in = Query)]
#[serde(deny_unknown_fields)]
pub(crate) struct ListQuery {
    /// Only jobs in this state.
    pub(crate) state: Option<JobState>,
    /// At most this many (default 50, at most 1000).
    pub(crate) limit: Option<usize>,
}

/// Jobs, newest first.
#[derive(Debug, Serialize, utoipa::ToSchema)]
pub(crate) struct JobList {
    /// The jobs.
    pub(crate) jobs: Vec<JobRecord>,
}

fn checked_id(id: &str) -> Result<(), ApiError> {
    let ok =
        id.len() == 20 && id.starts_with("job-") && id[4..].chars().all(|c| c.is_ascii_hexdigit());
    if ok {
        Ok(())
    } else {
        Err(ApiError::not_found(format!(
            "No job `{id}` (job ids look like `job-` and 16 hex digits)"
        )))
    }
}

fn query_error(e: &axum::extract::rejection::QueryRejection) -> ApiError {
    let text = e.body_text();
    let mut error = ApiError::invalid(format!("Invalid query: {text}"));
    error.field = crate::error::field_of(&text);
    error
}

/// Over HTTP a request is data: no files on the server, no commands, no tracking server of its
/// own, unless the configuration trusts requests.
fn check_untrusted(request: &OptimizationRequest) -> Result<(), ApiError> {
    let sources = [
        ("training_examples", Some(&request.training_examples)),
        ("validation_examples", request.validation_examples.as_ref()),
        ("test_examples", request.test_examples.as_ref()),
    ];
    for (field, source) in sources {
        if let Some(DataSource::Path(path)) = source {
            return Err(ApiError::invalid(format!(
                "`{field}` names the file `{}`: over HTTP give the examples inline (a list of objects); files on the server need `trusted_requests: true` in the server's configuration",
                path.display()
            ))
            .field(field));
        }
    }
    if !request.custom_metrics.is_empty() {
        return Err(ApiError::invalid(
            "`custom_metrics` run commands on the server: they need `trusted_requests: true` in the server's configuration",
        )
        .field("custom_metrics"));
    }
    if request.tracking_uri.is_some() {
        return Err(ApiError::invalid(
            "`tracking_uri` makes workers call another server: it needs `trusted_requests: true` in the server's configuration (the workers' `MLFLOW_TRACKING_URI` applies otherwise)",
        )
        .field("tracking_uri"));
    }
    Ok(())
}

/// Reads the request body: JSON, or YAML with a YAML content type.
fn parse_request(media: Option<&str>, bytes: &[u8]) -> Result<OptimizationRequest, ApiError> {
    let request = match media {
        Some("application/json") => {
            let request: OptimizationRequest = parse_json(bytes)?;
            request.validate(None)?;
            request
        }
        Some("application/yaml" | "application/x-yaml" | "text/yaml" | "text/x-yaml") => {
            let text = std::str::from_utf8(bytes)
                .map_err(|_| ApiError::bad_request("The YAML body is not UTF-8"))?;
            OptimizationRequest::from_yaml_str(text)?
        }
        other => {
            return Err(ApiError::new(
                StatusCode::UNSUPPORTED_MEDIA_TYPE,
                "unsupported_media_type",
                format!(
                    "Send the request as JSON (`application/json`) or YAML (`application/yaml`), not {}",
                    other.map_or("a body without a content type".to_string(), |o| format!("`{o}`"))
                ),
            ))
        }
    };
    Ok(request)
}

/// Queues an optimization request (the same request `promptopt optimize` reads, as JSON or YAML);
/// workers run it.
#[utoipa::path(post, path = "/v1/optimizations", tag = "optimizations",
    params(SubmitQuery),
    request_body(content = Object, description = "An optimization request, as `promptopt optimize` reads it", content_type = "application/json"),
    security(("bearer" = ["optimize"])),
    responses(
        (status = 201, description = "Queued", body = JobRecord),
        (status = 400, description = "The body cannot be read", body = crate::ErrorBody),
        (status = 401, description = "No valid token", body = crate::ErrorBody),
        (status = 403, description = "The token lacks the scope", body = crate::ErrorBody),
        (status = 413, description = "The body is too large", body = crate::ErrorBody),
        (status = 415, description = "Neither JSON nor YAML", body = crate::ErrorBody),
        (status = 422, description = "The request does not validate", body = crate::ErrorBody),
        (status = 503, description = "The queue is unreachable", body = crate::ErrorBody),
    ))]
pub(crate) async fn submit(
    State(state): State<AppState>,
    query: Result<Query<SubmitQuery>, axum::extract::rejection::QueryRejection>,
    headers: HeaderMap,
    req: Request,
) -> Result<Response, ApiError> {
    state.tokens.authorize(&headers, Scope::Optimize)?;
    let Query(query) = query.map_err(|e| query_error(&e))?;
    let media = media_type(&req);
    let bytes = bytes_of(req).await?;
    let request = parse_request(media.as_deref(), &bytes)?;
    if request.name.as_deref().is_none_or(str::is_empty) {
        return Err(
            ApiError::invalid("The request needs a `name`: the saved model's name").field("name"),
        );
    }
    if !state.config.trusted_requests {
        check_untrusted(&request)?;
    }
    let priority = query.priority.as_deref().unwrap_or("normal");
    let spec = JobSpec::for_request(
        request,
        priority,
        query.timeout.as_deref(),
        query.max_attempts.unwrap_or(3),
    )?;
    let record = state.queue.submit(&spec).await?;
    tracing::info!(job_id = %record.job_id, name = record.name.as_deref().unwrap_or(""), "optimization queued");
    let mut response = (StatusCode::CREATED, Json(&record)).into_response();
    if let Ok(location) = HeaderValue::from_str(&format!("/v1/jobs/{}", record.job_id)) {
        response.headers_mut().insert(header::LOCATION, location);
    }
    Ok(response)
}

/// Jobs, newest first.
#[utoipa::path(get, path = "/v1/jobs", tag = "optimizations",
    params(ListQuery),
    security(("bearer" = ["optimize"])),
    responses(
        (status = 200, description = "The jobs", body = JobList),
        (status = 401, description = "No valid token", body = crate::ErrorBody),
        (status = 403, description = "The token lacks the scope", body = crate::ErrorBody),
        (status = 422, description = "Invalid query", body = crate::ErrorBody),
    ))]
pub(crate) async fn list(
    State(state): State<AppState>,
    query: Result<Query<ListQuery>, axum::extract::rejection::QueryRejection>,
    headers: HeaderMap,
) -> Result<Json<JobList>, ApiError> {
    state.tokens.authorize(&headers, Scope::Optimize)?;
    let Query(query) = query.map_err(|e| query_error(&e))?;
    let limit = query.limit.unwrap_or(50);
    if !(1..=1000).contains(&limit) {
        return Err(
            ApiError::invalid(format!("`limit` must be 1 to 1000, not {limit}")).field("limit"),
        );
    }
    let jobs = state.queue.list(query.state, limit).await?;
    Ok(Json(JobList { jobs }))
}

/// A job's record: state, attempts, progress, the saved model once it succeeded.
#[utoipa::path(get, path = "/v1/jobs/{id}", tag = "optimizations",
    params(("id" = String, Path, description = "The job id")),
    security(("bearer" = ["optimize"])),
    responses(
        (status = 200, description = "The job", body = JobRecord),
        (status = 401, description = "No valid token", body = crate::ErrorBody),
        (status = 403, description = "The token lacks the scope", body = crate::ErrorBody),
        (status = 404, description = "No such job", body = crate::ErrorBody),
    ))]
pub(crate) async fn get_job(
    State(state): State<AppState>,
    ApiPath(id): ApiPath<String>,
    headers: HeaderMap,
) -> Result<Json<JobRecord>, ApiError> {
    state.tokens.authorize(&headers, Scope::Optimize)?;
    checked_id(&id)?;
    Ok(Json(state.queue.get(&id).await?))
}

/// A finished job's result: the same JSON as `promptopt optimize --json`.
#[utoipa::path(get, path = "/v1/jobs/{id}/result", tag = "optimizations",
    params(("id" = String, Path, description = "The job id")),
    security(("bearer" = ["optimize"])),
    responses(
        (status = 200, description = "The optimization result", body = Object),
        (status = 401, description = "No valid token", body = crate::ErrorBody),
        (status = 403, description = "The token lacks the scope", body = crate::ErrorBody),
        (status = 404, description = "No such job", body = crate::ErrorBody),
        (status = 409, description = "The job has no result (yet)", body = crate::ErrorBody),
    ))]
pub(crate) async fn result(
    State(state): State<AppState>,
    ApiPath(id): ApiPath<String>,
    headers: HeaderMap,
) -> Result<Json<Value>, ApiError> {
    state.tokens.authorize(&headers, Scope::Optimize)?;
    checked_id(&id)?;
    match state.queue.result(&id).await? {
        Some(result) => Ok(Json(result)),
        None => {
            let record = state.queue.get(&id).await?;
            Err(ApiError::conflict(if record.state.is_final() {
                format!("Job `{id}` is {} and has no result", record.state)
            } else {
                format!(
                    "Job `{id}` is {}: its result comes when it ends",
                    record.state
                )
            }))
        }
    }
}

/// Cancels a job: a queued one at once, a running one within a heartbeat (keeping its best so
/// far).
#[utoipa::path(post, path = "/v1/jobs/{id}/cancel", tag = "optimizations",
    params(("id" = String, Path, description = "The job id")),
    security(("bearer" = ["optimize"])),
    responses(
        (status = 200, description = "Cancelled, or asked to stop", body = JobRecord),
        (status = 401, description = "No valid token", body = crate::ErrorBody),
        (status = 403, description = "The token lacks the scope", body = crate::ErrorBody),
        (status = 404, description = "No such job", body = crate::ErrorBody),
        (status = 409, description = "The job has ended", body = crate::ErrorBody),
    ))]
pub(crate) async fn cancel(
    State(state): State<AppState>,
    ApiPath(id): ApiPath<String>,
    headers: HeaderMap,
) -> Result<Json<JobRecord>, ApiError> {
    state.tokens.authorize(&headers, Scope::Optimize)?;
    checked_id(&id)?;
    Ok(Json(state.queue.cancel(&id).await?))
}

/// Queues a failed, dead, cancelled or timed-out job again with fresh attempts.
#[utoipa::path(post, path = "/v1/jobs/{id}/retry", tag = "optimizations",
    params(("id" = String, Path, description = "The job id")),
    security(("bearer" = ["optimize"])),
    responses(
        (status = 200, description = "Queued again", body = JobRecord),
        (status = 401, description = "No valid token", body = crate::ErrorBody),
        (status = 403, description = "The token lacks the scope", body = crate::ErrorBody),
        (status = 404, description = "No such job", body = crate::ErrorBody),
        (status = 409, description = "The job cannot be retried in its state", body = crate::ErrorBody),
    ))]
pub(crate) async fn retry(
    State(state): State<AppState>,
    ApiPath(id): ApiPath<String>,
    headers: HeaderMap,
) -> Result<Json<JobRecord>, ApiError> {
    state.tokens.authorize(&headers, Scope::Optimize)?;
    checked_id(&id)?;
    Ok(Json(state.queue.retry(&id).await?))
}

/// Where an event stream is.
struct Follow {
    state: AppState,
    id: String,
    after: u64,
    last: Option<JobRecord>,
    pending: VecDeque<Event>,
    ended: bool,
}

impl Follow {
    /// The next SSE event: the job's own events in order, a `job` event whenever its record
    /// changes, and `end` with the final record.
    async fn next(&mut self) -> Option<Event> {
        loop {
            if let Some(event) = self.pending.pop_front() {
                return Some(event);
            }
            if self.ended {
                return None;
            }
            match self.state.queue.events(&self.id, self.after, 200).await {
                Ok(events) if !events.is_empty() => {
                    for (n, value) in events {
                        self.after = n;
                        let kind = value
                            .get("event")
                            .and_then(Value::as_str)
                            .unwrap_or("event")
                            .to_string();
                        self.pending.push_back(
                            Event::default()
                                .id(n.to_string())
                                .event(kind)
                                .data(value.to_string()),
                        );
                    }
                    continue;
                }
                Ok(_) => {}
                Err(e) => {
                    self.ended = true;
                    let body = serde_json::json!({"error": {"code": "queue_unavailable", "message": e.to_string()}});
                    return Some(Event::default().event("error").data(body.to_string()));
                }
            }
            match self.state.queue.get(&self.id).await {
                Ok(record) => {
                    let changed = self.last.as_ref() != Some(&record);
                    let final_state = record.state.is_final();
                    if changed {
                        let data = serde_json::to_string(&record).unwrap_or_default();
                        self.pending
                            .push_back(Event::default().event("job").data(data.clone()));
                        self.last = Some(record);
                        if final_state {
                            self.pending
                                .push_back(Event::default().event("end").data(data));
                            self.ended = true;
                        }
                        continue;
                    }
                    if final_state {
                        let data = serde_json::to_string(&record).unwrap_or_default();
                        self.pending
                            .push_back(Event::default().event("end").data(data));
                        self.ended = true;
                        continue;
                    }
                }
                Err(e) => {
                    self.ended = true;
                    let body = serde_json::json!({"error": {"code": "queue_unavailable", "message": e.to_string()}});
                    return Some(Event::default().event("error").data(body.to_string()));
                }
            }
            let mut shutdown = self.state.shutdown.clone();
            if *shutdown.borrow() {
                return None;
            }
            tokio::select! {
                () = tokio::time::sleep(POLL) => {}
                _ = shutdown.changed() => return None,
            }
        }
    }
}

/// The job's progress as Server-Sent Events: `job` (the record, whenever it changes), the
/// pipeline's own events (`stage_started`, `trial_completed`, ...; numbered, so a client that
/// reconnects with `Last-Event-ID` resumes after the last one it saw) and `end` with the final
/// record.
#[utoipa::path(get, path = "/v1/jobs/{id}/events", tag = "optimizations",
    params(("id" = String, Path, description = "The job id")),
    security(("bearer" = ["optimize"])),
    responses(
        (status = 200, description = "An event stream", content_type = "text/event-stream", body = String),
        (status = 401, description = "No valid token", body = crate::ErrorBody),
        (status = 403, description = "The token lacks the scope", body = crate::ErrorBody),
        (status = 404, description = "No such job", body = crate::ErrorBody),
    ))]
pub(crate) async fn events(
    State(state): State<AppState>,
    ApiPath(id): ApiPath<String>,
    headers: HeaderMap,
) -> Result<Sse<impl Stream<Item = Result<Event, Infallible>>>, ApiError> {
    state.tokens.authorize(&headers, Scope::Optimize)?;
    checked_id(&id)?;
    state.queue.get(&id).await?;
    let after = headers
        .get("last-event-id")
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.trim().parse::<u64>().ok())
        .unwrap_or(0);
    let follow = Follow {
        state,
        id,
        after,
        last: None,
        pending: VecDeque::new(),
        ended: false,
    };
    let stream = futures::stream::unfold(follow, |mut follow| async move {
        follow.next().await.map(|event| (Ok(event), follow))
    });
    Ok(Sse::new(stream).keep_alive(KeepAlive::default()))
}
