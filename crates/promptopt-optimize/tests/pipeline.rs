//! The pipeline end to end against a scripted model: data, baseline, optimization, choice,
//! registry, predict, analytics, constraints and request errors.
#![allow(clippy::unwrap_used)]

use std::sync::Arc;

use promptopt_core::Example;
use promptopt_lm::{ChatRequest, Role, ScriptedLm};
use promptopt_optimize::{OptimizationRequest, OptimizeError, Pipeline, StopReason};
use promptopt_registry::Registry;

fn last_user(request: &ChatRequest) -> String {
    request
        .messages
        .iter()
        .rev()
        .find(|m| m.role == Role::User)
        .map(|m| m.content.clone())
        .unwrap_or_default()
}

/// Answers right only when the prompt carries demos (more than system + one user turn);
/// otherwise always says "negative". `cheap/` models are right without demos too.
fn scripted() -> ScriptedLm {
    ScriptedLm::new(|request| {
        let text = last_user(request);
        let truth = if text.contains("good") || text.contains("great") {
            "positive"
        } else {
            "negative"
        };
        let with_demos = request.messages.len() > 2;
        Ok(if with_demos || request.model.starts_with("cheap/") {
            truth.to_string()
        } else {
            "negative".to_string()
        })
    })
}

fn examples_yaml(n: usize) -> String {
    let mut s = String::new();
    for i in 0..n {
        let (text, label) = if i % 2 == 0 {
            (format!("a good film number {i}"), "positive")
        } else {
            (format!("a dull film number {i}"), "negative")
        };
        s.push_str(&format!("  - {{text: \"{text}\", label: {label}}}\n"));
    }
    s
}

fn request(extra: &str) -> OptimizationRequest {
    let text = format!(
        "name: sentiment\ntarget: few_shot_examples\nevaluation_metric: accuracy\nalgorithm: bootstrapfewshot\nmodel: scripted/test\nseed: 7\n{extra}\ntraining_examples:\n{}",
        examples_yaml(30)
    );
    OptimizationRequest::from_yaml_str(&text).unwrap()
}

fn pipeline(home: &std::path::Path) -> Pipeline {
    Pipeline::new(Arc::new(scripted()), Registry::new(home)).with_concurrency(2)
}

#[tokio::test]
async fn optimize_beats_the_baseline_saves_and_predicts() {
    let dir = tempfile::tempdir().unwrap();
    let p = pipeline(dir.path());
    let result = p.optimize(&request("")).await.unwrap();
    // Zero-shot, the model always says "negative": the baseline is the share of negatives.
    assert!(result.baseline_metrics.score < 1.0);
    assert_eq!(result.optimized_metrics.score, 1.0);
    // BootstrapFewShot scores nothing itself: its one trial is the validation stage's score.
    assert_eq!(result.trajectory.len(), 1);
    assert_eq!(result.trajectory[0].score, 1.0);
    let expected = (1.0 - result.baseline_metrics.score) / result.baseline_metrics.score * 100.0;
    assert!((result.improvement_percentage - expected).abs() < 1e-9);
    assert_eq!(result.model_id.as_deref(), Some("sentiment@1.0.0"));
    assert_eq!(result.algorithm_used, "bootstrapfewshot");
    assert!(result
        .optimized_prompt
        .as_deref()
        .unwrap()
        .contains("{text}"));
    assert!(result.passed());
    // 80/20 split of 30 examples: 6 for validation.
    assert_eq!(result.optimized_metrics.examples, 6);
    let analytics = p.get_analytics(&result.optimization_id).unwrap();
    assert!(analytics.lm_calls > 0);
    let stages: Vec<&str> = analytics.stages.iter().map(|s| s.stage.as_str()).collect();
    assert_eq!(stages, ["load", "baseline", "optimize", "validate", "save"]);

    let artifact = p.load_model("sentiment", Some("latest")).unwrap();
    assert_eq!(artifact.state, result.optimized_config);
    assert_eq!(artifact.provenance.seed, Some(7));
    let (prediction, trace) = p
        .predict(
            "sentiment@1.0.0",
            &Example::new().with("text", "a great day"),
        )
        .await
        .unwrap();
    assert_eq!(prediction.text("label").as_deref(), Some("positive"));
    assert_eq!(trace.steps.len(), 1);

    // A second run gets the next patch version.
    let again = p.optimize(&request("")).await.unwrap();
    assert_eq!(again.model_id.as_deref(), Some("sentiment@1.0.1"));
    let copy = p
        .save_optimized_model(
            "sentiment@1.0.0",
            None,
            Some("2.0.0".parse().unwrap()),
            None,
        )
        .await
        .unwrap();
    assert_eq!(copy.id(), "sentiment@2.0.0");
}

#[tokio::test]
async fn test_examples_score_the_baseline_and_the_winner_after_validation() {
    let dir = tempfile::tempdir().unwrap();
    let p = pipeline(dir.path());
    let extra = format!(
        "enable_analytics: true\ntest_examples:\n{}",
        examples_yaml(10)
    );
    let result = p.optimize(&request(&extra)).await.unwrap();
    let test = result.test_metrics.as_ref().unwrap();
    assert_eq!(test.examples, 10);
    assert_eq!(test.baseline.examples, 10);
    // Zero-shot the model says "negative" for all: half the test examples are right.
    assert!((test.baseline.score - 0.5).abs() < 1e-9);
    assert_eq!(test.optimized.score, 1.0);
    assert!((test.improvement_percentage - 100.0).abs() < 1e-9);
    let analytics = p.get_analytics(&result.optimization_id).unwrap();
    let stages: Vec<&str> = analytics.stages.iter().map(|s| s.stage.as_str()).collect();
    assert_eq!(
        stages,
        ["load", "baseline", "optimize", "validate", "test", "save"]
    );
    // Without test examples there is no test score.
    assert!(p
        .optimize(&request(""))
        .await
        .unwrap()
        .test_metrics
        .is_none());
}

/// A GEPA request; `targets` and `algorithm_config` as given.
fn gepa_request(targets: &str, config: &str) -> Result<OptimizationRequest, OptimizeError> {
    OptimizationRequest::from_yaml_str(&format!(
        "name: sentiment\ntargets: {targets}\nevaluation_metric: accuracy\nalgorithm: gepa\nmodel: scripted/test\nseed: 7\nalgorithm_config: {config}\ntraining_examples:\n{}",
        examples_yaml(30)
    ))
}

#[tokio::test]
async fn gepa_with_the_few_shot_target_evolves_instructions_over_bootstrapped_demos() {
    let dir = tempfile::tempdir().unwrap();
    let p = pipeline(dir.path());
    let config = "{max_metric_calls: 24, max_bootstrapped_demos: 2, max_labeled_demos: 4}";
    let r = gepa_request("[prompt_template, few_shot_examples]", config).unwrap();
    let result = p.optimize(&r).await.unwrap();
    // The scripted model is right only with demos: GEPA's seed has them.
    assert!(result.baseline_metrics.score < 1.0);
    assert_eq!(result.optimized_metrics.score, 1.0);
    let demos = &result.optimized_config.predictors["predict"].demos;
    assert!(!demos.is_empty() && demos.len() <= 4, "{demos:?}");
    assert_eq!(result.algorithm_used, "gepa");

    // Instruction search alone keeps the zero-shot program.
    let bare = gepa_request("[prompt_template]", "{max_metric_calls: 24}").unwrap();
    let result = p.optimize(&bare).await.unwrap();
    assert!(result.optimized_config.predictors["predict"]
        .demos
        .is_empty());
    assert!(result.optimized_metrics.score < 1.0);

    // Demo settings without the target would be ignored, so they are refused.
    let err = gepa_request("[prompt_template]", config)
        .unwrap_err()
        .to_string();
    assert!(
        err.contains("algorithm_config `max_bootstrapped_demos` sets GEPA's demos")
            && err.contains("`few_shot_examples`"),
        "{err}"
    );
}

#[tokio::test]
async fn a_bad_request_is_rejected_and_nothing_is_saved() {
    let dir = tempfile::tempdir().unwrap();
    let text = format!(
        "target: few_shot_examples\nevaluation_metric: accuracy\nalgorithm: bootstrapfewshot\nalgorithm_config: {{num_candidates: 5}}\ntraining_examples:\n{}",
        examples_yaml(4)
    );
    let err = OptimizationRequest::from_yaml_str(&text).unwrap_err();
    assert!(matches!(err, OptimizeError::UnknownConfigKey { .. }));
    assert!(err
        .to_string()
        .contains("valid keys: `max_bootstrapped_demos`"));

    let p = pipeline(dir.path());
    let mut r = request("");
    r.input_keys = Some(vec!["nope".into()]);
    let err = p.optimize(&r).await.unwrap_err();
    assert!(err.to_string().contains("`nope`"), "{err}");
    let mut r = request("");
    r.target = Some(promptopt_optimize::TargetSpec::Kind(
        promptopt_optimize::Target::ToolSelection,
    ));
    let err = p.optimize(&r).await.unwrap_err();
    assert_eq!(
        err.to_string(),
        "Target `tool_selection` with algorithm `bootstrapfewshot` (tools are chosen and described by `miprov2` and `gepa`) is not supported yet"
    );
    r.algorithm = promptopt_optimize::Algorithm::Gepa;
    let err = p.optimize(&r).await.unwrap_err().to_string();
    assert!(
        err.contains(
            "`tool_selection` chooses the tools of `react` stages, and the program has none"
        ),
        "{err}"
    );
    assert!(p.registry().list().unwrap().is_empty());
}

#[tokio::test]
async fn min_accuracy_failure_is_reported_and_not_saved() {
    let dir = tempfile::tempdir().unwrap();
    let p = Pipeline::new(
        Arc::new(ScriptedLm::constant("negative")),
        Registry::new(dir.path()),
    );
    let result = p
        .optimize(&request("constraints: {min_accuracy: 0.9}"))
        .await
        .unwrap();
    assert!(!result.passed());
    assert!(result.constraint_failures[0].starts_with("min_accuracy"));
    assert_eq!(result.model_id, None);
    assert!(p.registry().list().unwrap().is_empty());
}

#[tokio::test]
async fn budgets_stop_the_optimizer_and_keep_the_best_so_far() {
    let dir = tempfile::tempdir().unwrap();
    let p = pipeline(dir.path());
    let mut r = request("constraints: {max_lm_calls: 10}");
    r.algorithm = promptopt_optimize::Algorithm::BootstrapfewshotRandomSearch;
    let result = p.optimize(&r).await.unwrap();
    assert_eq!(result.stop_reason, Some(StopReason::BudgetCalls));
    let optimize = result
        .analytics
        .as_ref()
        .unwrap()
        .stages
        .iter()
        .find(|s| s.stage == "optimize")
        .unwrap()
        .lm_calls;
    assert!(optimize <= 10, "{optimize} calls");
    assert!(result.optimized_metrics.score >= result.baseline_metrics.score);

    let mut r = request("timeout_seconds: 0");
    r.algorithm = promptopt_optimize::Algorithm::BootstrapfewshotRandomSearch;
    let result = p.optimize(&r).await.unwrap();
    assert_eq!(result.stop_reason, Some(StopReason::Timeout));
    assert_eq!(
        result.optimized_metrics.score,
        result.baseline_metrics.score
    );

    let mut r = request("max_iterations: 2");
    r.algorithm = promptopt_optimize::Algorithm::BootstrapfewshotRandomSearch;
    let result = p.optimize(&r).await.unwrap();
    assert_eq!(result.stop_reason, Some(StopReason::MaxIterations));
    assert_eq!(result.iterations_completed, 2);
}

#[tokio::test]
async fn model_selection_reports_every_model_and_picks_by_objective() {
    let dir = tempfile::tempdir().unwrap();
    let p = pipeline(dir.path());
    let mut r = request("candidate_models: [scripted/test, cheap/model]\nobjective: minimize_cost");
    r.target = Some(promptopt_optimize::TargetSpec::Kind(
        promptopt_optimize::Target::ModelSelection,
    ));
    r.algorithm = promptopt_optimize::Algorithm::Labeledfewshot;
    r.algorithm_config =
        promptopt_optimize::AlgorithmConfig::from_json(serde_json::json!({"k": 0})).unwrap();
    let result = p.optimize(&r).await.unwrap();
    assert_eq!(result.model_reports.len(), 2);
    assert_eq!(result.model_reports.iter().filter(|m| m.chosen).count(), 1);
    let chosen = result.model_reports.iter().find(|m| m.chosen).unwrap();
    // Without prices, tokens per example stand in for cost: both models see the same prompt,
    // so the tie goes to the better score.
    assert_eq!(chosen.model, "cheap/model");
    let artifact = p.load_model("sentiment", None).unwrap();
    assert_eq!(artifact.model.model, "cheap/model");
}

#[tokio::test]
async fn reasoning_strategy_is_chosen_on_validation() {
    let dir = tempfile::tempdir().unwrap();
    let p = pipeline(dir.path());
    let mut r = request("");
    r.target = Some(promptopt_optimize::TargetSpec::Kind(
        promptopt_optimize::Target::ReasoningStrategy,
    ));
    let result = p.optimize(&r).await.unwrap();
    // Two optimizer runs (Predict, ChainOfThought), each scored once.
    assert_eq!(result.trajectory.len(), 2);
    assert_eq!(result.optimized_metrics.score, 1.0);
}

#[tokio::test]
async fn small_and_imbalanced_data_get_the_guides_warnings() {
    let dir = tempfile::tempdir().unwrap();
    let p = pipeline(dir.path());
    let text = "name: tiny\ntarget: few_shot_examples\nevaluation_metric: accuracy\nalgorithm: labeledfewshot\nmodel: scripted/test\ntraining_examples:\n  - {text: good a, label: positive}\n  - {text: good b, label: positive}\n  - {text: good c, label: positive}\n  - {text: good d, label: positive}\n  - {text: good e, label: positive}\n  - {text: good f, label: positive}\n  - {text: bad g, label: negative}\n  - {text: good h, label: positive}\n";
    let result = p
        .optimize(&OptimizationRequest::from_yaml_str(text).unwrap())
        .await
        .unwrap();
    assert!(
        result.warnings.iter().any(|w| w.contains("fewer than 10")),
        "{:?}",
        result.warnings
    );
    assert!(
        result
            .warnings
            .iter()
            .any(|w| w.contains("consider `f1_score`")),
        "{:?}",
        result.warnings
    );
}

/// Like [`scripted`] without the `cheap/` models, except that the prompt for "a dull film number
/// 17" (a validation example with seed 7) does not fit the context: always, or `only_with_demos`.
fn overflowing(only_with_demos: bool) -> ScriptedLm {
    ScriptedLm::new(move |request| {
        let text = last_user(request);
        let with_demos = request.messages.len() > 2;
        if (with_demos || !only_with_demos) && text.contains("a dull film number 17\n") {
            return Err(promptopt_lm::LmError::PromptTooLong {
                provider: "openai".into(),
                message: "This model's maximum context length is 2048 tokens".into(),
            });
        }
        Ok(if with_demos && text.contains("good") {
            "positive".to_string()
        } else {
            "negative".to_string()
        })
    })
}

#[tokio::test]
async fn examples_too_long_for_the_context_fail_alone_and_are_reported() {
    // "a dull film number 17" (a validation example with seed 7) never fits the model's context.
    let lm = overflowing(false);
    let dir = tempfile::tempdir().unwrap();
    let p = Pipeline::new(Arc::new(lm), Registry::new(dir.path())).with_concurrency(2);
    // The run goes on: the example scores as wrong, and the result says why.
    let result = p.optimize(&request("")).await.unwrap();
    assert_eq!(result.baseline_metrics.examples, 6);
    assert_eq!(result.baseline_metrics.errors, 1);
    let warning = result
        .warnings
        .iter()
        .find(|w| w.contains("1 of 6 validation examples failed with the starting program"))
        .unwrap_or_else(|| panic!("{:?}", result.warnings));
    assert!(warning.contains("maximum context length"), "{warning}");
    assert!(result
        .warnings
        .iter()
        .any(|w| w.contains("1 of 6 validation examples failed with the optimized program")));
    // Whatever the server's words, an overflow is a `max_tokens` constraint failure.
    assert_eq!(
        result.constraint_failures,
        ["max_tokens: the prompt does not fit the model's context for 1 examples"]
    );
}

#[tokio::test]
async fn a_better_candidate_that_overflows_the_context_is_set_aside_with_a_warning() {
    // With demos, "a dull film number 17" (a validation example with seed 7) no longer fits the
    // context; without demos every prompt fits.
    let lm = overflowing(true);
    let dir = tempfile::tempdir().unwrap();
    let p = Pipeline::new(Arc::new(lm), Registry::new(dir.path())).with_concurrency(2);
    let result = p.optimize(&request("")).await.unwrap();
    // The starting program qualifies, so it wins over the higher-scoring program with demos,
    // and the result says what the constraint cost.
    assert!(
        result.constraint_failures.is_empty(),
        "{:?}",
        result.constraint_failures
    );
    assert_eq!(
        result.optimized_metrics.score,
        result.baseline_metrics.score
    );
    let warning = result
        .warnings
        .iter()
        .find(|w| w.contains("was set aside for breaking a constraint"))
        .unwrap_or_else(|| panic!("{:?}", result.warnings));
    assert!(
        warning
            .contains("(max_tokens: the prompt does not fit the model's context for 1 examples)"),
        "{warning}"
    );
    assert!(
        warning.ends_with(&format!(
            "the chosen program scores {:.4}",
            result.baseline_metrics.score
        )),
        "{warning}"
    );
    assert_eq!(result.model_id.as_deref(), Some("sentiment@1.0.0"));
}
