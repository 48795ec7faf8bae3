//! What a run records: events become metric series and candidate rows as they arrive; the
//! request and the result become parameters, final metrics, tags and artifacts at the end.

use serde_json::{json, Value};

use promptopt_core::events::{Event, TrialKind};
use promptopt_optimize::{OptimizationRequest, OptimizationResult};

use crate::{KeyValue, MetricPoint};

/// MLflow's limit on a parameter value; longer values go to an artifact instead.
pub const MAX_PARAM_LENGTH: usize = 6000;
/// MLflow's limit on a tag value.
pub const MAX_TAG_LENGTH: usize = 8000;

/// Turns events into metric points and rows of the candidates table.
#[derive(Debug, Default)]
pub(crate) struct EventRecorder {
    budget_step: i64,
    /// Rows of `candidates.json`: one per proposed candidate, trial and GEPA iteration.
    pub rows: Vec<Value>,
    /// Warnings seen in the stream.
    pub warnings: Vec<String>,
}

fn point(key: &str, value: f64, timestamp: i64, step: i64) -> MetricPoint {
    MetricPoint {
        key: key.to_string(),
        value,
        timestamp,
        step,
    }
}

impl EventRecorder {
    /// The metric points of one event (received at `timestamp`, ms).
    pub fn record(&mut self, timestamp: i64, event: &Event) -> Vec<MetricPoint> {
        match event {
            Event::TrialScored {
                trial,
                score,
                best_so_far,
                kind,
            } => {
                let step = *trial as i64;
                self.rows.push(json!({
                    "event": "trial", "trial": trial, "kind": kind, "score": score,
                    "best_so_far": best_so_far,
                }));
                match kind {
                    TrialKind::Full => vec![
                        point("trial_score", *score, timestamp, step),
                        point("best_score", *best_so_far, timestamp, step),
                    ],
                    TrialKind::Minibatch => {
                        vec![point("minibatch_score", *score, timestamp, step)]
                    }
                }
            }
            Event::BudgetSpent {
                lm_calls,
                tokens,
                cost_usd,
            } => {
                self.budget_step += 1;
                let step = self.budget_step;
                vec![
                    point("spent_lm_calls", *lm_calls as f64, timestamp, step),
                    point("spent_tokens", *tokens as f64, timestamp, step),
                    point("spent_cost_usd", *cost_usd, timestamp, step),
                ]
            }
            Event::StageFinished { stage, seconds } => {
                vec![point(
                    &format!("stage_seconds.{stage}"),
                    *seconds,
                    timestamp,
                    0,
                )]
            }
            Event::CandidateProposed {
                candidate,
                description,
            } => {
                self.rows.push(json!({
                    "event": "candidate", "candidate": candidate, "description": description,
                }));
                Vec::new()
            }
            Event::GepaIteration {
                iteration,
                kind,
                parents,
                parent_score,
                child_score,
                accepted,
                candidate,
                frontier_size,
                ..
            } => {
                self.rows.push(json!({
                    "event": "gepa_iteration", "iteration": iteration, "kind": kind,
                    "parents": parents, "parent_score": parent_score, "child_score": child_score,
                    "accepted": accepted, "candidate": candidate,
                }));
                vec![point(
                    "gepa_frontier_size",
                    *frontier_size as f64,
                    timestamp,
                    *iteration as i64,
                )]
            }
            Event::Warning { message } => {
                self.warnings.push(message.clone());
                Vec::new()
            }
            _ => Vec::new(),
        }
    }

    /// The candidates table in the layout MLflow's table artifacts use (`columns` and `data`).
    pub fn candidates_table(&self) -> Value {
        let columns = [
            "event",
            "trial",
            "candidate",
            "iteration",
            "kind",
            "score",
            "best_so_far",
            "description",
            "parents",
            "parent_score",
            "child_score",
            "accepted",
        ];
        let data: Vec<Value> = self
            .rows
            .iter()
            .map(|row| Value::Array(columns.iter().map(|c| row[*c].clone()).collect()))
            .collect();
        json!({"columns": columns, "data": data})
    }
}

/// The parameters known when a run starts.
pub(crate) fn start_params(request: &OptimizationRequest) -> Vec<KeyValue> {
    let mut params = vec![
        KeyValue::new("algorithm", request.algorithm.as_str()),
        KeyValue::new("evaluation_metric", &request.evaluation_metric),
        KeyValue::new("task_model", request.task_model()),
        KeyValue::new("prompt_model", request.effective_prompt_model()),
        KeyValue::new("adapter", request.adapter.as_deref().unwrap_or("chat")),
        KeyValue::new("seed", request.seed.to_string()),
        KeyValue::new("max_iterations", request.max_iterations.to_string()),
        KeyValue::new("timeout_seconds", request.timeout_seconds.to_string()),
        KeyValue::new(
            "targets",
            request
                .target_kinds()
                .iter()
                .map(|t| t.as_str())
                .collect::<Vec<_>>()
                .join(","),
        ),
        KeyValue::new("objective", value_text(&json!(request.objective))),
    ];
    if !request.candidate_models.is_empty() {
        params.push(KeyValue::new(
            "candidate_models",
            request.candidate_models.join(","),
        ));
    }
    if !request.program.is_empty() {
        params.push(KeyValue::new(
            "program_stages",
            request
                .program
                .iter()
                .map(|s| s.name.as_str())
                .collect::<Vec<_>>()
                .join(","),
        ));
    }
    for (key, value) in request.effective_algorithm_config().0.iter() {
        params.push(KeyValue::new(format!("config.{key}"), value_text(value)));
    }
    if let Some(c) = &request.constraints {
        if let Ok(Value::Object(map)) = serde_json::to_value(c) {
            for (key, value) in map.into_iter().filter(|(_, v)| !v.is_null()) {
                params.push(KeyValue::new(
                    format!("constraints.{key}"),
                    value_text(&value),
                ));
            }
        }
    }
    params
}

fn value_text(value: &Value) -> String {
    match value {
        Value::String(s) => s.clone(),
        other => other.to_string(),
    }
}

/// The parameters, metrics and tags known when a run ends.
pub(crate) fn finish_records(
    result: &OptimizationResult,
    timestamp: i64,
) -> (Vec<KeyValue>, Vec<MetricPoint>, Vec<KeyValue>) {
    let mut params = Vec::new();
    for (split, d) in &result.datasets {
        params.push(KeyValue::new(
            format!("dataset.{split}.examples"),
            d.examples.to_string(),
        ));
        params.push(KeyValue::new(format!("dataset.{split}.sha256"), &d.sha256));
    }
    let mut metrics = Vec::new();
    let mut add = |key: &str, value: Option<f64>| {
        if let Some(v) = value.filter(|v| v.is_finite()) {
            metrics.push(point(key, v, timestamp, 0));
        }
    };
    let (b, o) = (&result.baseline_metrics, &result.optimized_metrics);
    add("baseline_score", Some(b.score));
    add("val_score", Some(o.score));
    add("val_raw_score", Some(o.raw_score));
    add("improvement_pct", Some(result.improvement_percentage));
    add("val_errors", Some(o.errors as f64));
    add("latency_p50_ms", o.latency_p50_ms);
    add("latency_p95_ms", o.latency_p95_ms);
    add("duration_s", Some(result.duration_seconds));
    add("iterations", Some(result.iterations_completed as f64));
    add("cost_usd", result.total_cost_usd);
    if let Some(t) = &result.test_metrics {
        add("test_score", Some(t.optimized.score));
        add("test_baseline_score", Some(t.baseline.score));
    }
    if let Some(a) = &result.analytics {
        add("lm_calls", Some(a.lm_calls as f64));
        add("total_tokens", Some(a.total_tokens as f64));
        add("cache_hits", Some(a.cache_hits as f64));
    }
    let mut tags = vec![
        KeyValue::new("promptopt.optimization_id", &result.optimization_id),
        KeyValue::new(
            "promptopt.stop_reason",
            result
                .stop_reason
                .map(|r| r.as_str().to_string())
                .unwrap_or_else(|| "completed".into()),
        ),
        KeyValue::new("promptopt.passed_constraints", result.passed().to_string()),
    ];
    if let Some(id) = &result.model_id {
        tags.push(KeyValue::new("promptopt.model_id", id));
        if let Some((name, version)) = id.split_once('@') {
            tags.push(KeyValue::new("promptopt.model_name", name));
            tags.push(KeyValue::new("promptopt.model_version", version));
        }
    }
    (params, metrics, tags)
}

/// Parameters and tags too long for MLflow: the value goes to an artifact, the record points
/// at it, and a warning names the key.
pub(crate) fn split_long(
    params: &mut [KeyValue],
    tags: &mut [KeyValue],
) -> (Vec<(String, String)>, Vec<String>) {
    let mut artifacts = Vec::new();
    let mut warnings = Vec::new();
    for (items, limit, what) in [
        (params, MAX_PARAM_LENGTH, "param"),
        (tags, MAX_TAG_LENGTH, "tag"),
    ] {
        for kv in items.iter_mut() {
            if kv.value.chars().count() > limit {
                let path = format!("long_values/{what}.{}.txt", kv.key);
                warnings.push(format!(
                    "MLflow {what} `{}` is {} characters, over MLflow's limit of {limit}; its value is in the artifact `{path}`",
                    kv.key,
                    kv.value.chars().count()
                ));
                artifacts.push((path.clone(), std::mem::take(&mut kv.value)));
                kv.value = format!("(see artifact {path})");
            }
        }
    }
    (artifacts, warnings)
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    #[test]
    fn trials_become_step_series() {
        let mut r = EventRecorder::default();
        let points = r.record(
            5,
            &Event::TrialScored {
                trial: 3,
                score: 0.5,
                best_so_far: 0.6,
                kind: TrialKind::Full,
            },
        );
        assert_eq!(
            points,
            vec![
                point("trial_score", 0.5, 5, 3),
                point("best_score", 0.6, 5, 3)
            ]
        );
        let points = r.record(
            6,
            &Event::TrialScored {
                trial: 4,
                score: 0.9,
                best_so_far: 0.6,
                kind: TrialKind::Minibatch,
            },
        );
        assert_eq!(points, vec![point("minibatch_score", 0.9, 6, 4)]);
        r.record(
            7,
            &Event::CandidateProposed {
                candidate: 2,
                description: "instruction 2".into(),
            },
        );
        let table = r.candidates_table();
        assert_eq!(table["data"].as_array().unwrap().len(), 3);
        assert_eq!(table["data"][2][7], "instruction 2");
    }

    #[test]
    fn long_values_move_to_artifacts() {
        let mut params = vec![
            KeyValue::new("short", "x"),
            KeyValue::new("long", "y".repeat(MAX_PARAM_LENGTH + 1)),
        ];
        let (artifacts, warnings) = split_long(&mut params, &mut []);
        assert_eq!(params[0].value, "x");
        assert_eq!(params[1].value, "(see artifact long_values/param.long.txt)");
        assert_eq!(artifacts[0].1.len(), MAX_PARAM_LENGTH + 1);
        assert!(warnings[0].contains("`long`"), "{}", warnings[0]);
    }
}
