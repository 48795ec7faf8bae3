//! The console's model health: per model, the live metric over time (each version's rolling
//! mean of its outcomes, the same window the learning loop uses) with drift alarms and
//! deployments marked, and the learning loop's history.

use axum::extract::{Query, State};
use axum::response::{IntoResponse, Response};
use axum::Json;
use maud::{html, Markup};
use promptopt_learning::monitor::Monitor;
use serde_json::Value;

use super::chart::{self, LineChart, Marker, Series, Style, XAxis};
use super::page::{badge, layout, respond, segment, text, Nav};
use super::session::Viewer;
use crate::body::ApiPath;
use crate::error::ApiError;
use crate::learning::routes::HistoryQuery;
use crate::AppState;

/// Outcomes read for a chart, at most.
const MAX_OUTCOMES: usize = 50_000;
/// Points drawn per version, at most.
const MAX_POINTS: usize = 300;
/// The rolling window when the model has no learning loop.
const DEFAULT_WINDOW: usize = 100;
/// Decisions listed.
const HISTORY: usize = 200;

/// The learning loop's status as JSON, or `None` when the model has none.
async fn learning(
    state: &AppState,
    viewer: &Viewer,
    name: &str,
) -> Result<Option<Value>, ApiError> {
    match crate::learning::routes::status(
        State(state.clone()),
        ApiPath(name.to_string()),
        viewer.headers(),
    )
    .await
    {
        Ok(Json(status)) => Ok(Some(
            serde_json::to_value(status).map_err(ApiError::internal)?,
        )),
        Err(e) if e.status == axum::http::StatusCode::NOT_FOUND => Ok(None),
        Err(e) => Err(e),
    }
}

/// `GET /ui/health`: every model with its loop's phase and live metric.
pub(crate) async fn list(State(state): State<AppState>, viewer: Viewer) -> Response {
    let result = async {
        let Json(models) = crate::models::list(State(state.clone()), viewer.headers()).await?;
        let has_database = state.experiments.is_some();
        let mut rows = Vec::new();
        for m in &models.models {
            let status = if has_database {
                learning(&state, &viewer, &m.name).await?
            } else {
                None
            };
            rows.push((m.name.clone(), status));
        }
        let body = html! {
            @if !has_database {
                p.alert role="alert" { "This server runs without a database: no outcomes are recorded, so there is no live metric." }
            }
            @if rows.is_empty() {
                p.empty { "No saved models yet." }
            } @else {
                table {
                    caption.visually-hidden { "Models and their health" }
                    thead { tr { th scope="col" { "Model" } th scope="col" { "Learning" } th scope="col" { "Phase" } th scope="col" { "Production" } th scope="col" { "Live metric" } th scope="col" { "Last decision" } } }
                    tbody {
                        @for (name, status) in &rows {
                            tr {
                                td { a href=(format!("/ui/health/{}", segment(name))) { (name) } }
                                @match status {
                                    Some(s) => {
                                        td { (if s["enabled"].as_bool() == Some(true) { "on" } else { "off" }) }
                                        td { (badge(s["phase"].as_str().unwrap_or("unknown"))) }
                                        td { (text(&s["production"])) }
                                        td { (live_text(s)) }
                                        td { (s["recent"].as_array().and_then(|r| r.last()).map_or_else(|| "–".into(), |e| format!("{}: {}", text(&e["kind"]), text(&e["reason"])))) }
                                    }
                                    None => { td { "off" } td { "–" } td { "–" } td { "–" } td { "–" } }
                                }
                            }
                        }
                    }
                }
            }
        };
        Ok::<_, ApiError>(layout(&viewer, Some(Nav::Health), "Model health", body).into_response())
    }
    .await;
    respond(&viewer, result)
}

fn live_text(status: &Value) -> String {
    let production = status["production"].as_str().unwrap_or_default();
    status["live"]
        .as_array()
        .and_then(|live| {
            live.iter()
                .find(|l| {
                    l["model_id"]
                        .as_str()
                        .is_some_and(|id| id.ends_with(&format!("@{production}")))
                })
                .or_else(|| live.first())
        })
        .map_or_else(
            || "–".into(),
            |l| {
                format!(
                    "{} over {} outcomes",
                    text(&l["mean"]),
                    text(&l["outcomes"])
                )
            },
        )
}

/// Each version's rolling mean over time, from the model's outcomes.
async fn live_series(state: &AppState, name: &str, window: usize) -> Result<Vec<Series>, ApiError> {
    let exps = crate::experiments::experiments(state)?;
    let outcomes = exps
        .store
        .outcomes(name, 0.0, promptopt_jobs::now(), MAX_OUTCOMES)
        .await?;
    let mut monitor =
        Monitor::new(window.max(1), &[]).map_err(|e| ApiError::internal(e.to_string()))?;
    let mut series: Vec<Series> = Vec::new();
    for o in &outcomes {
        monitor.observe(&o.model_id, o.score, false);
        let Some(live) = monitor.live(&o.model_id) else {
            continue;
        };
        let point = (o.updated_at, live.mean);
        match series.iter_mut().find(|s| s.label == o.model_id) {
            Some(s) => s.points.push(point),
            None => series.push(Series {
                label: o.model_id.clone(),
                points: vec![point],
                style: Style::Line,
            }),
        }
    }
    for s in &mut series {
        if s.points.len() > MAX_POINTS {
            let step = s.points.len().div_ceil(MAX_POINTS);
            let last = s.points.last().copied();
            s.points = s.points.iter().step_by(step).copied().collect();
            if let (Some(last), Some(end)) = (last, s.points.last()) {
                if *end != last {
                    s.points.push(last);
                }
            }
        }
    }
    Ok(series)
}

fn markers(events: &[Value]) -> Vec<Marker> {
    events
        .iter()
        .filter_map(|e| {
            let kind = e["kind"].as_str()?;
            let alarm = kind == "drift";
            let shown = alarm || matches!(kind, "deployed" | "rolled_back" | "production_changed");
            shown.then(|| Marker {
                x: e["at"].as_f64().unwrap_or(0.0),
                label: format!(
                    "{kind} at {}: {}",
                    chart::clock(e["at"].as_f64().unwrap_or(0.0)),
                    text(&e["reason"])
                ),
                alarm,
            })
        })
        .collect()
}

fn history_table(events: &[Value]) -> Markup {
    html! {
        @if events.is_empty() {
            p.empty { "No decisions yet." }
        } @else {
            table #history {
                caption.visually-hidden { "The learning loop's decisions, newest first" }
                thead { tr { th scope="col" { "When (UTC)" } th scope="col" { "Decision" } th scope="col" { "Why" } } }
                tbody {
                    @for e in events.iter().rev() {
                        tr class=(format!("event-{}", e["kind"].as_str().unwrap_or("other"))) {
                            td { (e["at"].as_f64().map_or_else(|| "–".into(), chart::clock)) }
                            td { (text(&e["kind"])) }
                            td { (text(&e["reason"])) }
                        }
                    }
                }
            }
        }
    }
}

/// `GET /ui/health/{name}`: the live metric over time, the loop's phase and history.
pub(crate) async fn page(
    State(state): State<AppState>,
    viewer: Viewer,
    ApiPath(name): ApiPath<String>,
) -> Response {
    let result = async {
        // The model must exist (a 404 page otherwise).
        let _model = crate::models::get_model(State(state.clone()), ApiPath(name.clone()), viewer.headers()).await?;
        let status = learning(&state, &viewer, &name).await?;
        let window = status
            .as_ref()
            .and_then(|s| s["config"]["window"].as_u64())
            .map_or(DEFAULT_WINDOW, |w| usize::try_from(w).unwrap_or(DEFAULT_WINDOW));
        let events: Vec<Value> = if status.is_some() {
            let Json(h) = crate::learning::routes::history(
                State(state.clone()),
                ApiPath(name.clone()),
                Ok(Query(HistoryQuery { limit: Some(HISTORY) })),
                viewer.headers(),
            )
            .await?;
            serde_json::to_value(h).map_err(ApiError::internal)?["events"]
                .as_array()
                .cloned()
                .unwrap_or_default()
        } else {
            Vec::new()
        };
        let mut chart = LineChart::new(
            &format!("Live metric of {name} over time (rolling mean of {window} outcomes)"),
            "time (UTC)",
            "mean score",
        );
        chart.x_axis = XAxis::Time;
        chart.series = live_series(&state, &name, window).await?;
        chart.markers = markers(&events);
        let body = html! {
            @match &status {
                Some(s) => {
                    dl.facts {
                        dt { "Learning" } dd { (if s["enabled"].as_bool() == Some(true) { "on" } else { "off" }) }
                        dt { "Phase" } dd #phase { (badge(s["phase"].as_str().unwrap_or("unknown"))) }
                        dt { "Production" } dd { (text(&s["production"])) }
                        dt { "Live metric" } dd { (live_text(s)) }
                        dt { "Labels since the last retraining" } dd { (text(&s["labels_since_retrain"])) }
                        dt { "Retrainings" } dd { (text(&s["retrains"])) }
                        dt { "Failed retrainings in a row" } dd { (text(&s["failures"])) }
                        @if let Some(t) = s["next_attempt_at"].as_f64() { dt { "Next attempt after (UTC)" } dd { (chart::clock(t)) } }
                        dt { "Prediction log" }
                        dd { @for (k, v) in s["prediction_log"].as_object().into_iter().flatten() { (k) " " (text(v)) "; " } }
                    }
                }
                None => {
                    p.hint { "Continuous learning is off for this model; the chart shows its outcomes' rolling mean. Turn it on with " code { "promptopt learn enable " (name) " --config FILE" } "." }
                }
            }
            (chart.render())
            h2 { "Learning history" }
            (history_table(&events))
        };
        Ok::<_, ApiError>(layout(&viewer, Some(Nav::Health), &format!("Health of {name}"), body).into_response())
    }
    .await;
    respond(&viewer, result)
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use serde_json::json;

    #[test]
    fn drift_is_an_alarm_and_deployments_are_marked_too() {
        let events = vec![
            json!({"at": 100.0, "kind": "enabled", "reason": "through the API"}),
            json!({"at": 200.0, "kind": "drift", "reason": "DDM: error rate up"}),
            json!({"at": 300.0, "kind": "deployed", "reason": "1.0.1 beat 1.0.0"}),
            json!({"at": 400.0, "kind": "rolled_back", "reason": "live metric fell"}),
        ];
        let marks = super::markers(&events);
        assert_eq!(marks.len(), 3);
        assert!(marks[0].alarm && marks[0].x == 200.0);
        assert!(
            marks[0].label.contains("DDM: error rate up"),
            "{}",
            marks[0].label
        );
        assert!(!marks[1].alarm && !marks[2].alarm);
        let table = super::history_table(&events).into_string();
        // Newest first.
        assert!(table.find("rolled_back").unwrap() < table.find("enabled").unwrap());
    }
}
