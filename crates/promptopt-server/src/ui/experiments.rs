//! The console's experiments: per-variant counts, the metric with its confidence interval, each
//! treatment against the control, the sequential evidence over time, the sample-ratio check and
//! the decision; starting, stopping and promoting.

use axum::extract::{Query, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Redirect, Response};
use axum::{Form, Json};
use maud::{html, Markup};
use promptopt_experiments::{evidence_history, Experiment};
use serde::Deserialize;
use serde_json::Value;

use super::chart::{self, Interval, LineChart, Series, Style, XAxis};
use super::page::{
    self, badge, layout, notice_block, render_error, respond, segment, text, Confirm, Done, Nav,
};
use super::session::Viewer;
use crate::auth::Scope;
use crate::body::ApiPath;
use crate::error::ApiError;
use crate::experiments::PromoteQuery;
use crate::AppState;

/// Outcomes replayed for the evidence chart, at most.
const MAX_OUTCOMES: usize = 200_000;
/// Looks drawn on the evidence chart.
const LOOKS: usize = 60;

/// `GET /ui/experiments`.
pub(crate) async fn list(State(state): State<AppState>, viewer: Viewer) -> Response {
    let result = async {
        let Json(list) = crate::experiments::list(State(state), viewer.headers()).await?;
        let body = html! {
            @if list.experiments.is_empty() {
                p.empty { "No experiments. Create one with " code { "promptopt experiments create FILE.yaml" } "." }
            } @else {
                table {
                    caption.visually-hidden { "Experiments, newest first" }
                    thead { tr { th scope="col" { "Experiment" } th scope="col" { "Model" } th scope="col" { "State" } th scope="col" { "Variants" } th scope="col" { "Started (UTC)" } th scope="col" { "Winner" } } }
                    tbody {
                        @for e in &list.experiments {
                            tr {
                                td { a href=(format!("/ui/experiments/{}", segment(e["spec"]["name"].as_str().unwrap_or_default()))) { (text(&e["spec"]["name"])) } }
                                td { (text(&e["model"])) }
                                td { (badge(e["state"].as_str().unwrap_or("unknown"))) }
                                td { (e["spec"]["variants"].as_object().map_or(0, serde_json::Map::len)) }
                                td { (e["started_at"].as_f64().map_or_else(|| "–".into(), chart::clock)) }
                                td { (text(&e["winner"])) }
                            }
                        }
                    }
                }
            }
        };
        Ok::<_, ApiError>(layout(&viewer, Some(Nav::Experiments), "Experiments", body).into_response())
    }
    .await;
    respond(&viewer, result)
}

fn decision(status: &Value) -> Markup {
    let d = &status["decision"];
    html! {
        @match d["outcome"].as_str() {
            Some("winner") => p.decision.winner #decision { "Winner: " strong { (text(&d["variant"])) } " (difference from the control " (text(&d["difference"])) ")" },
            Some("ended") => p.decision #decision { "Ended: " (text(&d["reason"])) },
            _ => p.decision #decision { "No decision yet: " (text(&d["reason"])) },
        }
    }
}

/// The sequential p-values as they fell, replayed from the stored outcomes.
async fn evidence(state: &AppState, experiment: &Experiment) -> Result<Markup, ApiError> {
    let exps = crate::experiments::experiments(state)?;
    let outcomes = exps
        .store
        .experiment_outcomes(&experiment.id, MAX_OUTCOMES)
        .await?;
    let points = evidence_history(experiment, &outcomes, LOOKS);
    let mut chart = LineChart::new(
        "Always-valid p-value against the control, by outcomes",
        "outcomes",
        "p-value",
    );
    chart.x_axis = XAxis::Number;
    chart.reference = Some((
        experiment.spec.significance_level,
        format!("significance level {}", experiment.spec.significance_level),
    ));
    for variant in experiment.spec.variants.keys() {
        if variant == experiment.spec.control() {
            continue;
        }
        let series: Vec<(f64, f64)> = points
            .iter()
            .filter_map(|p| p.p_values.get(variant).map(|v| (p.outcomes as f64, *v)))
            .collect();
        chart.series.push(Series {
            label: variant.clone(),
            points: series,
            style: Style::Line,
        });
    }
    Ok(chart.render())
}

/// `GET /ui/experiments/{id}`.
pub(crate) async fn page(
    State(state): State<AppState>,
    viewer: Viewer,
    ApiPath(id): ApiPath<String>,
    Done(done): Done,
) -> Response {
    let result = async {
        let Json(view) = crate::experiments::get_experiment(
            State(state.clone()),
            ApiPath(id.clone()),
            viewer.headers(),
        )
        .await?;
        let experiment: Experiment =
            serde_json::from_value(view.experiment.clone()).map_err(ApiError::internal)?;
        let status = &view.status;
        let variants = status["variants"].as_array().cloned().unwrap_or_default();
        let means: Vec<Interval> = variants
            .iter()
            .filter_map(|v| {
                let range = v["interval"].as_array()?;
                Some(Interval {
                    label: v["name"].as_str()?.to_string(),
                    value: v["mean"].as_f64()?,
                    range: [range.first()?.as_f64()?, range.get(1)?.as_f64()?],
                })
            })
            .collect();
        let comparisons = status["comparisons"].as_array().cloned().unwrap_or_default();
        let differences: Vec<Interval> = comparisons
            .iter()
            .filter_map(|c| {
                let s = &c["sequential"];
                Some(Interval {
                    label: format!("{} − control", c["variant"].as_str()?),
                    value: s["difference"].as_f64()?,
                    range: [s["ci_low"].as_f64()?, s["ci_high"].as_f64()?],
                })
            })
            .collect();
        let level = 1.0 - experiment.spec.significance_level;
        let evidence = evidence(&state, &experiment).await?;
        let name = experiment.spec.name.clone();
        let running = experiment.state.as_str() == "running";
        let draft = experiment.state.as_str() == "draft";
        let body = html! {
            (notice_block(done.as_deref()))
            (decision(status))
            dl.facts {
                dt { "State" } dd #experiment-state { (badge(experiment.state.as_str())) }
                dt { "Model" } dd { a href=(format!("/ui/models/{}", segment(&experiment.model))) { (experiment.model) } }
                dt { "Metric" } dd { (experiment.spec.success_metric) " (" (text(&status["kind"])) ")" }
                dt { "Minimum outcomes per variant" } dd { (experiment.spec.minimum_sample_size) }
                dt { "Significance level" } dd { (experiment.spec.significance_level) }
                dt { "Auto-promote" } dd { (if experiment.spec.auto_promote { "yes" } else { "no" }) }
                @if let Some(t) = experiment.started_at { dt { "Started (UTC)" } dd { (chart::clock(t)) } }
                @if let Some(t) = experiment.ended_at { dt { "Ended (UTC)" } dd { (chart::clock(t)) } }
                dt { "Sample-ratio check" }
                dd #srm {
                    @match status["srm"].as_object() {
                        Some(srm) if srm.get("flagged").and_then(Value::as_bool) == Some(true) => span.bad { "Mismatch (p = " (text(&srm["p_value"])) "): the split does not match the traffic split" },
                        Some(srm) => span { "OK (p = " (text(&srm["p_value"])) ")" },
                        None => span { "Not enough units yet" },
                    }
                }
            }
            h2 { "Variants" }
            table #variants {
                caption.visually-hidden { "Per-variant figures" }
                thead { tr { th scope="col" { "Variant" } th scope="col" { "Version" } th scope="col" { "Share" } th scope="col" { "Units" } th scope="col" { "Outcomes" } th scope="col" { "Mean" } th scope="col" { (format!("{:.0}% interval", level * 100.0)) } } }
                tbody {
                    @for v in &variants {
                        tr {
                            th scope="row" { (text(&v["name"])) }
                            td { (text(&v["model"])) }
                            td { (v["share"].as_f64().map_or_else(|| "–".into(), |s| format!("{:.0}%", s * 100.0))) }
                            td { (text(&v["units"])) }
                            td { (text(&v["outcomes"])) }
                            td { (text(&v["mean"])) }
                            td { @match v["interval"].as_array() { Some(r) if r.len() == 2 => { (text(&r[0])) " to " (text(&r[1])) }, _ => "–" } }
                        }
                    }
                }
            }
            @if !means.is_empty() {
                (chart::intervals(&format!("Mean {} by variant with its {:.0}% interval", experiment.spec.success_metric, level * 100.0), &means, None))
            }
            h2 { "Against the control" }
            @if comparisons.is_empty() { p.empty { "No comparison yet." } } @else {
                table {
                    thead { tr { th scope="col" { "Treatment" } th scope="col" { "Difference" } th scope="col" { "Always-valid interval" } th scope="col" { "Always-valid p-value" } th scope="col" { "Significant (Holm)" } } }
                    tbody {
                        @for c in &comparisons {
                            tr {
                                th scope="row" { (text(&c["variant"])) }
                                td { (text(&c["sequential"]["difference"])) }
                                td { (text(&c["sequential"]["ci_low"])) " to " (text(&c["sequential"]["ci_high"])) }
                                td { (text(&c["sequential"]["p_value"])) }
                                td { (if c["significant"].as_bool() == Some(true) { "yes" } else { "no" }) }
                            }
                        }
                    }
                }
                @if !differences.is_empty() {
                    (chart::intervals("Difference from the control with its always-valid interval", &differences, Some(0.0)))
                }
            }
            h2 { "Evidence over time" }
            (evidence)
            @if viewer.can(Scope::Admin) && (running || draft || experiment.winner.is_some() && experiment.promoted_version.is_none()) {
                h2 { "Actions" }
                div.actions {
                    @if draft { a.button href=(format!("/ui/experiments/{}/start", segment(&name))) { "Start…" } " " }
                    @if running || draft { a.button.danger href=(format!("/ui/experiments/{}/stop", segment(&name))) { "Stop…" } " " }
                    @if experiment.promoted_version.is_none() && !draft {
                        form.inline method="get" action=(format!("/ui/experiments/{}/promote", segment(&name))) {
                            label for="variant" { "Variant" }
                            select #variant name="variant" {
                                @for v in experiment.spec.variants.keys() {
                                    option value=(v) selected[experiment.winner.as_deref() == Some(v.as_str())] { (v) }
                                }
                            }
                            button type="submit" { "Promote…" }
                        }
                    }
                }
            }
        };
        Ok::<_, ApiError>(
            layout(&viewer, Some(Nav::Experiments), &format!("Experiment {name}"), body).into_response(),
        )
    }
    .await;
    respond(&viewer, result)
}

/// What an action is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Action {
    Start,
    Stop,
    Promote,
}

impl Action {
    fn parse(text: &str) -> Option<Self> {
        match text {
            "start" => Some(Action::Start),
            "stop" => Some(Action::Stop),
            "promote" => Some(Action::Promote),
            _ => None,
        }
    }

    fn name(self) -> &'static str {
        match self {
            Action::Start => "start",
            Action::Stop => "stop",
            Action::Promote => "promote",
        }
    }
}

/// `?variant=` of a promotion.
#[derive(Debug, Default, Deserialize)]
pub(crate) struct VariantQuery {
    variant: Option<String>,
}

/// An action's form.
#[derive(Debug, Deserialize)]
pub(crate) struct ActionForm {
    #[serde(default)]
    csrf: String,
    #[serde(default)]
    variant: Option<String>,
}

fn confirm_form(
    viewer: &Viewer,
    id: &str,
    action: Action,
    variant: Option<&str>,
    problem: Option<String>,
    status: StatusCode,
) -> Response {
    let (title, question, button) = match action {
        Action::Start => (
            "Start the experiment?",
            html! { "Start " strong { (id) } "? Predictions on its model are split between its variants from now on." },
            "Start",
        ),
        Action::Stop => (
            "Stop the experiment?",
            html! { "Stop " strong { (id) } " without a winner? Traffic goes back to the model's usual version." },
            "Stop",
        ),
        Action::Promote => (
            "Promote the variant?",
            html! {
                "Point " strong { "production" } " at the version of variant " strong { (variant.unwrap_or("the winner")) } " and end " strong { (id) } "?"
            },
            "Promote",
        ),
    };
    let mut fields = Vec::new();
    if let Some(v) = variant {
        fields.push(("variant", v.to_string()));
    }
    Confirm {
        title,
        question,
        action: format!("/ui/experiments/{}/{}", segment(id), action.name()),
        fields,
        button,
        back: format!("/ui/experiments/{}", segment(id)),
        problem,
    }
    .render(viewer, Nav::Experiments, status)
}

fn unknown_action(viewer: &Viewer, action: &str) -> Response {
    page::error_page(
        viewer,
        StatusCode::NOT_FOUND,
        "Not found",
        &format!("Experiments have no action `{action}` (start, stop or promote)."),
    )
}

/// `GET /ui/experiments/{id}/{action}`: asks first.
pub(crate) async fn confirm(
    State(state): State<AppState>,
    viewer: Viewer,
    ApiPath((id, action)): ApiPath<(String, String)>,
    query: Result<Query<VariantQuery>, axum::extract::rejection::QueryRejection>,
) -> Response {
    let Some(action) = Action::parse(&action) else {
        return unknown_action(&viewer, &action);
    };
    // The experiment must exist before anything is offered.
    if let Err(e) =
        crate::experiments::get_experiment(State(state), ApiPath(id.clone()), viewer.headers())
            .await
    {
        return render_error(&viewer, e);
    }
    let variant = query.ok().and_then(|Query(q)| q.variant);
    confirm_form(
        &viewer,
        &id,
        action,
        variant.as_deref(),
        None,
        StatusCode::OK,
    )
}

/// `POST /ui/experiments/{id}/{action}`: does it, or shows why not.
pub(crate) async fn act(
    State(state): State<AppState>,
    viewer: Viewer,
    ApiPath((id, action)): ApiPath<(String, String)>,
    Form(form): Form<ActionForm>,
) -> Response {
    let Some(action) = Action::parse(&action) else {
        return unknown_action(&viewer, &action);
    };
    if let Some(page) = viewer.csrf_refusal(&form.csrf) {
        return page;
    }
    let (s, path, headers) = (State(state), ApiPath(id.clone()), viewer.headers());
    let outcome = match action {
        Action::Start => crate::experiments::start(s, path, headers).await.map(drop),
        Action::Stop => crate::experiments::stop(s, path, headers).await.map(drop),
        Action::Promote => {
            let query = PromoteQuery {
                variant: form.variant.clone().filter(|v| !v.is_empty()),
            };
            crate::experiments::promote(s, path, Ok(Query(query)), headers)
                .await
                .map(drop)
        }
    };
    match outcome {
        Ok(()) => {
            let done = match action {
                Action::Start => "started",
                Action::Stop => "stopped",
                Action::Promote => "experiment-promoted",
            };
            Redirect::to(&format!("/ui/experiments/{}?done={done}", segment(&id))).into_response()
        }
        Err(e) => confirm_form(
            &viewer,
            &id,
            action,
            form.variant.as_deref(),
            Some(format!("Nothing changed: {}", e.message)),
            e.status,
        ),
    }
}
