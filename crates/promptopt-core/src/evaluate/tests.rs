#![allow(clippy::unwrap_used)]

use std::sync::Arc;

use promptopt_lm::{LmError, ScriptedLm};

use super::*;
use crate::events::CollectSink;
use crate::program::LmRegistry;
use crate::{Field, Score, Signature};

/// 1 when the label matches, with feedback.
struct LabelMatch;

impl Metric for LabelMatch {
    fn info(&self) -> MetricInfo {
        MetricInfo {
            name: "label_match".into(),
            higher_is_better: true,
            min: 0.0,
            max: 1.0,
        }
    }

    fn score(&self, example: &Example, prediction: &Prediction, _trace: &Trace) -> Score {
        let ok = example.text("label") == prediction.text("label");
        Score::with_feedback(
            f64::from(u8::from(ok)),
            format!("expected {:?}", example.text("label")),
        )
    }
}

/// A corpus metric: the share of examples predicted `positive`, whatever the labels.
struct PositiveShare;

impl Metric for PositiveShare {
    fn info(&self) -> MetricInfo {
        MetricInfo {
            name: "positive_share".into(),
            higher_is_better: true,
            min: 0.0,
            max: 100.0,
        }
    }

    fn score(&self, _: &Example, _: &Prediction, _: &Trace) -> Score {
        Score::new(0.0)
    }

    fn corpus_score(&self, pairs: &[(&Example, &Prediction)]) -> Option<f64> {
        let positive = pairs
            .iter()
            .filter(|(_, p)| p.text("label").as_deref() == Some("positive"))
            .count();
        Some(100.0 * positive as f64 / pairs.len() as f64)
    }
}

fn label_match() -> Arc<dyn Metric> {
    Arc::new(LabelMatch)
}

fn positive_share() -> Arc<dyn Metric> {
    Arc::new(PositiveShare)
}

fn program() -> Program {
    Program::single(Signature::new(
        vec![Field::text("text")],
        vec![Field::label(
            "label",
            vec!["positive".into(), "negative".into()],
        )],
    ))
}

/// Answers `positive` for "good", `negative` for "bad", gibberish for "???", fails for "boom".
fn lm() -> ScriptedLm {
    ScriptedLm::new(|r| {
        let last = r.messages.last().map_or("", |m| m.content.as_str());
        if last.contains("boom") {
            Err(LmError::InvalidRequest("boom".into()))
        } else if last.contains("???") {
            Ok("I refuse.".into())
        } else if last.contains("good") {
            Ok("[[ ## label ## ]]\npositive".into())
        } else {
            Ok("The label is negative.".into())
        }
    })
    .with_cost_per_call(0.001)
}

fn data(texts: &[(&str, &str)]) -> Vec<Example> {
    texts
        .iter()
        .enumerate()
        .map(|(i, (text, label))| {
            Example::new()
                .with("id", format!("ex{i}"))
                .with("text", *text)
                .with("label", *label)
        })
        .collect()
}

fn runtime() -> Runtime {
    let mut rt = Runtime::new(LmRegistry::new("scripted/task", Arc::new(lm())));
    rt.settings.json_fallback = false;
    rt
}

#[tokio::test]
async fn aggregates_scores_failures_usage_and_keeps_order() {
    let examples = data(&[
        ("good film", "positive"),
        ("bad film", "negative"),
        ("good but", "negative"),
        ("??? film", "positive"),
        ("boom", "positive"),
    ]);
    let p = program();
    let events = CollectSink::new();
    let settings = EvalSettings {
        concurrency: 3,
        max_errors: None,
        keep_traces: true,
        events: Arc::new(events.clone()),
        memo: None,
    };
    let report = evaluate(
        &p,
        &p.initial_state(),
        &examples,
        &label_match(),
        &runtime(),
        &settings,
    )
    .await
    .unwrap();
    assert_eq!(report.examples, 5);
    assert!((report.score - 0.4).abs() < 1e-12, "{}", report.score);
    assert_eq!((report.parse_failures, report.errors), (1, 1));
    // The failed call has no response, so no trace step: four answered calls.
    assert_eq!(report.lm_calls, 4);
    assert!((report.cost_usd.unwrap() - 0.004).abs() < 1e-12);
    assert!(report.usage.prompt_tokens > 0);
    let ids: Vec<_> = report
        .results
        .iter()
        .map(|r| r.id.clone().unwrap())
        .collect();
    assert_eq!(ids, ["ex0", "ex1", "ex2", "ex3", "ex4"]);
    let parse = &report.results[3];
    assert_eq!(parse.normalized, 0.0);
    assert!(parse.feedback.as_deref().unwrap().contains("I refuse."));
    assert_eq!(parse.trace.steps[0].raw, "I refuse.");
    let error = &report.results[4];
    assert!(error.prediction.is_none());
    assert!(error.error.as_deref().unwrap().contains("boom"));
    assert_eq!(
        report.results[1].feedback.as_deref(),
        Some("expected Some(\"negative\")")
    );

    let events = events.events();
    assert_eq!(events.len(), 5);
    assert!(events
        .iter()
        .all(|e| matches!(e, Event::EvaluationProgress { total: 5, .. })));
    assert!(
        matches!(events.last(), Some(Event::EvaluationProgress { done: 5, score, .. }) if (score - 0.4).abs() < 1e-12)
    );
}

#[tokio::test]
async fn corpus_metrics_give_the_aggregate() {
    let examples = data(&[
        ("good", "negative"),
        ("bad", "negative"),
        ("good", "x"),
        ("bad", "y"),
    ]);
    let p = program();
    let report = evaluate(
        &p,
        &p.initial_state(),
        &examples,
        &positive_share(),
        &runtime(),
        &EvalSettings::default(),
    )
    .await
    .unwrap();
    assert!(report.corpus);
    assert_eq!(report.raw_score, 50.0);
    assert_eq!(report.score, 0.5);
}

#[tokio::test]
async fn too_many_errors_stop_the_evaluation() {
    let examples = data(&[
        ("boom 1", "a"),
        ("good", "positive"),
        ("boom 2", "a"),
        ("boom 3", "a"),
    ]);
    let p = program();
    let settings = EvalSettings {
        concurrency: 1,
        max_errors: Some(1),
        ..EvalSettings::default()
    };
    let err = evaluate(
        &p,
        &p.initial_state(),
        &examples,
        &label_match(),
        &runtime(),
        &settings,
    )
    .await
    .unwrap_err();
    match err {
        CoreError::TooManyErrors {
            errors, max, index, ..
        } => {
            assert_eq!((errors, max, index), (2, 1, 2));
        }
        other => panic!("unexpected {other}"),
    }
    // Parse failures never count as errors.
    let examples = data(&[("???", "a"), ("??? 2", "a"), ("??? 3", "a")]);
    let settings = EvalSettings {
        max_errors: Some(0),
        ..EvalSettings::default()
    };
    let report = evaluate(
        &p,
        &p.initial_state(),
        &examples,
        &label_match(),
        &runtime(),
        &settings,
    )
    .await
    .unwrap();
    assert_eq!((report.parse_failures, report.errors), (3, 0));
}

#[tokio::test]
async fn reruns_are_identical_whatever_the_concurrency() {
    let examples: Vec<Example> = (0..40)
        .map(|i| {
            Example::new()
                .with(
                    "text",
                    if i % 3 == 0 {
                        format!("good {i}")
                    } else {
                        format!("bad {i}")
                    },
                )
                .with("label", "positive")
        })
        .collect();
    let p = program();
    let state = p.initial_state();
    let strip = |mut r: EvalReport| {
        r.wall_ms = 0.0;
        r.latency = LatencySummary::default();
        for result in &mut r.results {
            for step in &mut result.trace.steps {
                step.latency = std::time::Duration::ZERO;
            }
        }
        r
    };
    let one = EvalSettings {
        concurrency: 1,
        ..EvalSettings::default()
    };
    let many = EvalSettings {
        concurrency: 32,
        keep_traces: false,
        ..EvalSettings::default()
    };
    let a = strip(
        evaluate(&p, &state, &examples, &label_match(), &runtime(), &one)
            .await
            .unwrap(),
    );
    let b = strip(
        evaluate(&p, &state, &examples, &label_match(), &runtime(), &one)
            .await
            .unwrap(),
    );
    assert_eq!(a, b);
    let c = evaluate(&p, &state, &examples, &label_match(), &runtime(), &many)
        .await
        .unwrap();
    assert_eq!(a.score, c.score);
    assert!(c.results.iter().all(|r| r.trace.steps.is_empty()));
    let scores: Vec<f64> = c.results.iter().map(|r| r.score).collect();
    assert_eq!(
        scores,
        a.results.iter().map(|r| r.score).collect::<Vec<_>>()
    );
}

#[tokio::test]
async fn incomplete_states_and_empty_inputs() {
    let p = program();
    let empty = evaluate(
        &p,
        &p.initial_state(),
        &[],
        &label_match(),
        &runtime(),
        &EvalSettings::default(),
    )
    .await
    .unwrap();
    assert_eq!(
        (empty.examples, empty.score, empty.cost_usd),
        (0, 0.0, None)
    );
    let err = evaluate(
        &p,
        &ProgramState::default(),
        &[],
        &label_match(),
        &runtime(),
        &EvalSettings::default(),
    )
    .await
    .unwrap_err();
    assert!(matches!(err, CoreError::MissingPredictorState { .. }));
}
