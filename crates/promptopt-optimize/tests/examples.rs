//! The shipped request files: every one parses, and the guide's examples and the two-stage program
//! run end to end (optimize, save, load, predict, export) against a scripted model.
#![allow(clippy::unwrap_used)]

use std::path::{Path, PathBuf};
use std::sync::Arc;

use promptopt_core::Example;
use promptopt_lm::ScriptedLm;
use promptopt_optimize::{
    build_optimizer, Algorithm, AlgorithmConfig, CollectSink, Event, OptimizationRequest,
    OptimizeError, Pipeline,
};
use promptopt_registry::export::{export, ExportFormat};
use promptopt_registry::Registry;

fn examples_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../../examples")
}

fn line_after(text: &str, prefix: &str) -> Option<String> {
    text.lines()
        .find_map(|l| l.strip_prefix(prefix))
        .map(str::to_string)
}

/// Answers the two-stage QA program, the summarization prompt, and proposals/reflections:
/// - evidence stage (a `Context:` line): the context's first sentence, after one line of reasoning;
/// - answer stage (an `Evidence:` line): the evidence's first three words;
/// - a summary (an `Input:` or `Document:` line): its first six words;
/// - anything else (instruction proposals, reflections): a fenced instruction.
fn scripted() -> ScriptedLm {
    ScriptedLm::new(|request| {
        // The turns adapter ends every request with the user turn of the current inputs.
        let user = request
            .messages
            .last()
            .map(|m| m.content.clone())
            .unwrap_or_default();
        if let Some(context) = line_after(&user, "Context: ") {
            let sentence = context.split(". ").next().unwrap_or_default().to_string();
            return Ok(format!(
                "Reasoning: The context states it.\nEvidence: {sentence}"
            ));
        }
        if let Some(evidence) = line_after(&user, "Evidence: ") {
            let words: Vec<&str> = evidence.split_whitespace().take(3).collect();
            return Ok(words.join(" "));
        }
        if let Some(text) = line_after(&user, "Input: ").or_else(|| line_after(&user, "Document: "))
        {
            let words: Vec<&str> = text.split_whitespace().take(6).collect();
            return Ok(words.join(" "));
        }
        Ok("```\nQuote the exact words of the context that answer the question.\n```".into())
    })
}

fn pipeline(home: &Path, events: &CollectSink) -> Pipeline {
    Pipeline::new(Arc::new(scripted()), Registry::new(home))
        .with_concurrency(4)
        .with_events(Arc::new(events.clone()))
}

#[test]
fn every_shipped_request_parses_and_its_data_loads() {
    let mut files = Vec::new();
    for dir in [examples_dir(), examples_dir().join("results")] {
        for entry in std::fs::read_dir(&dir).unwrap() {
            let path = entry.unwrap().path();
            // `ab-testing.yaml` is an A/B experiment, not an optimization request (the
            // experiments crate checks it).
            let experiment = path.file_name().is_some_and(|n| n == "ab-testing.yaml");
            if path.extension().is_some_and(|e| e == "yaml" || e == "json") && !experiment {
                files.push(path);
            }
        }
    }
    assert!(files.len() >= 20, "{files:?}");
    for path in files {
        let request = OptimizationRequest::from_path(&path);
        assert!(request.is_ok(), "{}: {request:?}", path.display());
        let request = request.unwrap();
        // Every data file it names loads.
        let data = request.clone().inline_data();
        assert!(data.is_ok(), "{}: {data:?}", path.display());
        // Its algorithm settings make an optimizer.
        let optimizer = build_optimizer(
            request.algorithm,
            &request.effective_algorithm_config(),
            &request.target_kinds(),
        );
        assert!(
            optimizer.is_ok(),
            "{}: {:?}",
            path.display(),
            optimizer.err()
        );
    }
}

#[tokio::test]
async fn the_guide_summarization_request_runs_as_written() {
    let home = tempfile::tempdir().unwrap();
    let events = CollectSink::new();
    let mut request =
        OptimizationRequest::from_path(examples_dir().join("guide-summarization.yaml")).unwrap();
    // Inline `{input, expected_output}` examples: the keys are inferred.
    assert!(request.input_keys.is_none() && request.output_keys.is_none());
    request.algorithm_config =
        AlgorithmConfig::from_json(serde_json::json!({"auto": "light"})).unwrap();
    let result = pipeline(home.path(), &events)
        .optimize(&request)
        .await
        .unwrap();
    // The free-form target names the saved model.
    assert_eq!(
        result.model_id.as_deref(),
        Some("summarization_prompt@1.0.0")
    );
    assert!(result.baseline_metrics.score > 0.0);
    let saved = Registry::new(home.path())
        .load_ref("summarization_prompt@latest")
        .unwrap();
    assert_eq!(saved.program.input_keys(), ["input"]);
    assert_eq!(saved.program.output_keys(), ["expected_output"]);
}

#[cfg(unix)]
#[tokio::test]
async fn a_custom_metric_command_is_the_objective() {
    let home = tempfile::tempdir().unwrap();
    let events = CollectSink::new();
    let mut request =
        OptimizationRequest::from_path(examples_dir().join("guide-custom-metric.yaml")).unwrap();
    request.algorithm = Algorithm::Bootstrapfewshot;
    request.algorithm_config = AlgorithmConfig::new();
    let result = pipeline(home.path(), &events)
        .optimize(&request)
        .await
        .unwrap();
    assert_eq!(result.optimized_metrics.metric, "relevance_score");
    // The first six words of the document share some words with its headline.
    assert!(
        result.baseline_metrics.score > 0.0,
        "{:?}",
        result.baseline_metrics
    );
    assert_eq!(result.model_id.as_deref(), Some("content_generator@1.0.0"));

    // A command that is missing, prints something else or dies is an error before any model
    // call, and nothing is saved.
    for (command, needle) in [
        ("./no-such-metric", "./no-such-metric: not found"),
        ("echo oops; cat > /dev/null", "it answered `oops`"),
    ] {
        let mut bad = request.clone();
        bad.custom_metrics[0].command = command.into();
        let events = CollectSink::new();
        let other_home = tempfile::tempdir().unwrap();
        let error = pipeline(other_home.path(), &events)
            .optimize(&bad)
            .await
            .unwrap_err()
            .to_string();
        assert!(
            error.contains("custom metric `relevance_score` failed on the first training example"),
            "{error}"
        );
        assert!(error.contains(needle), "{error}");
        assert!(Registry::new(other_home.path()).list().unwrap().is_empty());
    }
}

async fn two_stage(
    algorithm: Algorithm,
    config: serde_json::Value,
) -> (tempfile::TempDir, CollectSink) {
    let home = tempfile::tempdir().unwrap();
    let events = CollectSink::new();
    let mut request =
        OptimizationRequest::from_path(examples_dir().join("qa-two-stage.yaml")).unwrap();
    request.algorithm = algorithm;
    request.algorithm_config = AlgorithmConfig::from_json(config).unwrap();
    request.test_examples = None;
    let p = pipeline(home.path(), &events);
    let result = p.optimize(&request).await.unwrap();
    assert_eq!(result.model_id.as_deref(), Some("qa-two-stage@1.0.0"));
    // Both stages are in the saved state and the shown prompt.
    assert!(result.optimized_config.predictor("evidence").is_some());
    assert!(result.optimized_config.predictor("answer").is_some());
    let prompt = result.optimized_prompt.clone().unwrap_or_default();
    assert!(prompt.contains("## stage `evidence`") && prompt.contains("## stage `answer`"));

    // Load, predict and export the saved program.
    let artifact = p.load_model("qa-two-stage", Some("latest")).unwrap();
    assert_eq!(artifact.program.stages().len(), 2);
    let input = Example::new()
        .with("context", "Paris is the capital of France. It is large.")
        .with("question", "What is the capital of France?");
    let (prediction, trace) = p.predict("qa-two-stage@1.0.0", &input).await.unwrap();
    assert_eq!(prediction.text("answer").as_deref(), Some("Paris is the"));
    assert_eq!(trace.steps.len(), 2);
    let dspy: serde_json::Value =
        serde_json::from_str(&export(&artifact, ExportFormat::Dspy).unwrap()).unwrap();
    assert!(dspy.get("answer").is_some(), "{dspy}");
    let messages = export(&artifact, ExportFormat::Messages).unwrap();
    assert!(messages.contains("{evidence}"), "{messages}");
    (home, events)
}

#[tokio::test]
async fn a_two_stage_program_optimizes_with_bootstrap_and_keeps_demos_per_stage() {
    let (home, _) = two_stage(
        Algorithm::Bootstrapfewshot,
        serde_json::json!({"max_bootstrapped_demos": 2, "max_labeled_demos": 0}),
    )
    .await;
    let artifact = Registry::new(home.path()).load_ref("qa-two-stage").unwrap();
    for stage in ["evidence", "answer"] {
        let demos = &artifact.state.predictor(stage).unwrap().demos;
        assert!(!demos.is_empty(), "{stage} has no demos");
    }
    // The evidence demos come from traces: they hold the stage's reasoning and its output.
    let demo = &artifact.state.predictor("evidence").unwrap().demos[0];
    assert!(demo.contains("reasoning") && demo.contains("evidence") && demo.contains("context"));
    let demo = &artifact.state.predictor("answer").unwrap().demos[0];
    assert!(demo.contains("evidence") && demo.contains("answer") && !demo.contains("context"));
}

#[tokio::test]
async fn a_two_stage_program_optimizes_with_mipro_over_both_stages() {
    let (_home, events) = two_stage(Algorithm::Miprov2, serde_json::json!({"auto": "light"})).await;
    let proposed: Vec<String> = events
        .events()
        .into_iter()
        .filter_map(|e| match e {
            Event::CandidateProposed { description, .. } => Some(description),
            _ => None,
        })
        .collect();
    assert!(!proposed.is_empty());
    // Every scored trial was announced first, with the same number.
    let mut started = Vec::new();
    let mut scored = 0;
    for event in events.events() {
        match event {
            Event::TrialStarted { trial, .. } => started.push(trial),
            Event::TrialScored { trial, .. } => {
                assert_eq!(started.last(), Some(&trial));
                scored += 1;
            }
            _ => {}
        }
    }
    assert!(scored > 1);
    assert_eq!(started.len(), scored);
}

/// The stages each GEPA reflection rewrote, in order.
fn reflections(events: &CollectSink) -> Vec<Vec<String>> {
    events
        .events()
        .into_iter()
        .filter_map(|e| match e {
            Event::GepaIteration {
                kind, predictors, ..
            } if kind == "reflection" => Some(predictors),
            _ => None,
        })
        .collect()
}

#[tokio::test]
async fn a_two_stage_program_optimizes_with_gepa_reflecting_on_each_stage() {
    let (_home, events) = two_stage(
        Algorithm::Gepa,
        serde_json::json!({"max_metric_calls": 200, "reflection_minibatch_size": 2}),
    )
    .await;
    let mut reflected: Vec<String> = reflections(&events).into_iter().flatten().collect();
    reflected.sort();
    reflected.dedup();
    assert_eq!(reflected, ["answer", "evidence"]);

    // With `module_selector: blame` the stage is read from the traces: the scripted evidence
    // (the context's first sentence) mostly loses the answer, so that stage is rewritten.
    let (_home, events) = two_stage(
        Algorithm::Gepa,
        serde_json::json!({"max_metric_calls": 120, "reflection_minibatch_size": 3, "module_selector": "blame"}),
    )
    .await;
    let blamed = reflections(&events);
    assert!(!blamed.is_empty());
    assert!(blamed.iter().all(|p| p.len() == 1));
    assert!(blamed.iter().any(|p| p[0] == "evidence"), "{blamed:?}");
}

#[tokio::test]
async fn a_stage_that_reads_a_field_nobody_writes_is_an_error_before_any_call() {
    let home = tempfile::tempdir().unwrap();
    let text = std::fs::read_to_string(examples_dir().join("qa-two-stage.yaml"))
        .unwrap()
        .replace(
            "\"question, evidence -> answer\"",
            "\"question, quote -> answer\"",
        );
    let mut request = OptimizationRequest::from_yaml_str(&text).unwrap();
    request.base_dir = Some(examples_dir());
    let lm = scripted();
    let p = Pipeline::new(Arc::new(lm.clone()), Registry::new(home.path()));
    let error = p.optimize(&request).await.unwrap_err();
    assert!(matches!(error, OptimizeError::Core(_)), "{error:?}");
    assert_eq!(
        error.to_string(),
        "Invalid program, stage `answer`: it reads `quote`, which is not an input (`context`, `question`) and no earlier stage writes"
    );
    assert_eq!(lm.calls(), 0);
}

/// An agent that calls the first tool it is offered once, then finishes and answers "42"; as
/// the prompt model it keeps the tools and writes plain instructions.
fn agent() -> ScriptedLm {
    ScriptedLm::new(|request| {
        let system = &request.messages[0].content;
        let all: String = request
            .messages
            .iter()
            .map(|m| m.content.as_str())
            .collect();
        if system.contains("rewrite the descriptions") {
            return Ok("```\ncalculator: Evaluates an arithmetic expression exactly.\n```".into());
        }
        if system.contains("You are an agent") {
            // The turns adapter asks for each field in turn; a reply carries all three.
            return Ok(if all.contains("Observation 1:") {
                "next_thought: Done.\nnext_tool_name: finish\nnext_tool_args: {}".into()
            } else {
                "next_thought: Compute.\nnext_tool_name: calculator\nnext_tool_args: {\"expression\": \"6 * 7\"}".into()
            });
        }
        if all.contains("trajectory") {
            return Ok("reasoning: The tool said 42.\nanswer: 42".into());
        }
        Ok("Solve the problem step by step.".into())
    })
}

#[tokio::test]
async fn the_agent_examples_load_their_tools_and_run_as_written() {
    for (file, stage, tools) in [
        ("tools-math.yaml", "solve", 3),
        ("tools-search.yaml", "answer", 2),
    ] {
        let home = tempfile::tempdir().unwrap();
        let request = OptimizationRequest::from_path(examples_dir().join(file)).unwrap();
        let p = Pipeline::new(Arc::new(agent()), Registry::new(home.path())).with_concurrency(4);
        let result = p.optimize(&request).await;
        let result = result.unwrap_or_else(|e| panic!("{file}: {e}"));
        assert!(result.test_metrics.is_some(), "{file}");
        let artifact = p.load_model(&request.name.clone().unwrap(), None).unwrap();
        assert_eq!(artifact.tools.len(), tools, "{file}");
        // The winner offers a non-empty subset of the declared tools.
        let offered = &artifact.state.predictor(stage).unwrap().tools;
        assert!(
            !offered.is_empty() && offered.len() <= tools,
            "{file}: {offered:?}"
        );
    }
}
