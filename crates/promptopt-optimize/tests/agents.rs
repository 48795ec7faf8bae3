//! Agent programs through the pipeline: a `react` stage with the built-in calculator, optimized
//! with BootstrapFewShot against a scripted model, saved with its tools, and run again by
//! `predict`; requests whose tools do not fit are refused before any model call.
#![allow(clippy::unwrap_used)]

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;

use promptopt_core::Example;
use promptopt_lm::{ChatRequest, ScriptedLm};
use promptopt_optimize::{OptimizationRequest, Pipeline};
use promptopt_registry::Registry;

/// The field `name`'s value in a chat-adapter message.
fn field<'a>(text: &'a str, name: &str) -> Option<&'a str> {
    let marker = format!("[[ ## {name} ## ]]\n");
    let start = text.rfind(&marker)? + marker.len();
    let rest = &text[start..];
    Some(rest.split("\n\n[[ ##").next().unwrap_or(rest).trim())
}

/// An agent that reads "What is A times B?", calls the calculator, then finishes and answers
/// with the last observation; it asks the calculator only when its prompt has no demos, and
/// answers from the demos' habit (A times B) otherwise.
fn agent_lm(calls: Arc<AtomicU64>) -> ScriptedLm {
    ScriptedLm::new(move |request: &ChatRequest| {
        calls.fetch_add(1, Ordering::SeqCst);
        Ok(agent_reply(request))
    })
}

/// The agent's reply to `request`.
fn agent_reply(request: &ChatRequest) -> String {
    let system = &request.messages[0].content;
    let last = &request.messages.last().unwrap().content;
    let trajectory = field(last, "trajectory").unwrap_or_default();
    if system.contains("You are an agent") {
        if trajectory.contains("Observation 1:") {
            return "[[ ## next_thought ## ]]\nDone.\n\n[[ ## next_tool_name ## ]]\nfinish\n\n[[ ## next_tool_args ## ]]\n{}\n\n[[ ## completed ## ]]".into();
        }
        let question = field(last, "question").unwrap_or_default();
        let numbers: Vec<&str> = question
            .split(|c: char| !c.is_ascii_digit())
            .filter(|s| !s.is_empty())
            .collect();
        // With the MCP fixture's `add`, sums; else products with the calculator.
        if system.contains("`add`") {
            let (a, b) = (numbers[0], numbers[1]);
            return format!("[[ ## next_thought ## ]]\nAdd.\n\n[[ ## next_tool_name ## ]]\nadd\n\n[[ ## next_tool_args ## ]]\n{{\"a\": {a}, \"b\": {b}}}\n\n[[ ## completed ## ]]");
        }
        let expression = numbers.join(" * ");
        return format!("[[ ## next_thought ## ]]\nMultiply.\n\n[[ ## next_tool_name ## ]]\ncalculator\n\n[[ ## next_tool_args ## ]]\n{{\"expression\": \"{expression}\"}}\n\n[[ ## completed ## ]]");
    }
    // The extraction: the answer is the observation.
    let observation = trajectory
        .lines()
        .find_map(|l| l.strip_prefix("Observation 1: "))
        .unwrap_or("unknown");
    format!(
            "[[ ## reasoning ## ]]\nThe calculator said {observation}.\n\n[[ ## answer ## ]]\n{observation}\n\n[[ ## completed ## ]]"
        )
}

fn request(extra: &str) -> OptimizationRequest {
    request_of("bootstrapfewshot", extra, "times", |a, b| a * b)
}

fn request_of(
    algorithm: &str,
    extra: &str,
    verb: &str,
    op: fn(u32, u32) -> u32,
) -> OptimizationRequest {
    let mut examples = String::new();
    for (a, b) in [
        (12, 4),
        (7, 8),
        (15, 3),
        (9, 9),
        (21, 2),
        (6, 7),
        (13, 5),
        (8, 11),
    ] {
        examples.push_str(&format!(
            "  - {{question: \"What is {a} {verb} {b}?\", answer: \"{}\"}}\n",
            op(a, b)
        ));
    }
    let text = format!(
        "name: multiply\nevaluation_metric: exact_match\nalgorithm: {algorithm}\nmodel: scripted/agent\nadapter: chat\nseed: 3\ninput_keys: [question]\noutput_keys: [answer]\n{extra}\ntraining_examples:\n{examples}"
    );
    OptimizationRequest::from_yaml_str(&text).unwrap()
}

const AGENT: &str = "tools: [{builtin: calculator}]\nprogram:\n  - {name: solve, module: react, signature: \"question -> answer\", tools: [calculator], max_iters: 3, instructions: Answer the arithmetic question.}";

#[tokio::test]
async fn a_react_program_optimizes_saves_its_tools_and_predicts() {
    let dir = tempfile::tempdir().unwrap();
    let calls = Arc::new(AtomicU64::new(0));
    let pipeline = Pipeline::new(
        Arc::new(agent_lm(Arc::clone(&calls))),
        Registry::new(dir.path()),
    )
    .with_concurrency(2);
    let result = pipeline.optimize(&request(AGENT)).await.unwrap();
    assert_eq!(result.optimized_metrics.score, 1.0, "{result:#?}");
    let model = result.model_id.clone().unwrap();
    let artifact = pipeline.load_model("multiply", None).unwrap();
    assert_eq!(artifact.tools.len(), 1);
    assert_eq!(artifact.tools[0].builtin.as_deref(), Some("calculator"));
    // Successful trajectories are the stage's demos.
    let demos = &artifact.state.predictor("solve").unwrap().demos;
    assert!(!demos.is_empty());
    assert!(
        demos.iter().any(|d| d
            .text("trajectory")
            .is_some_and(|t| t.contains("Tool 1: calculator"))),
        "{demos:?}"
    );
    // `predict` rebuilds the calculator from the saved model.
    let (prediction, trace) = pipeline
        .predict(
            &model,
            &Example::new().with("question", "What is 17 times 3?"),
        )
        .await
        .unwrap();
    assert_eq!(prediction.text("answer").as_deref(), Some("51"));
    assert!(trace.steps.iter().any(|s| s.predictor == "solve.react"));
}

#[tokio::test]
async fn tools_that_do_not_fit_are_refused_before_any_model_call() {
    let dir = tempfile::tempdir().unwrap();
    let calls = Arc::new(AtomicU64::new(0));
    let pipeline = Pipeline::new(
        Arc::new(agent_lm(Arc::clone(&calls))),
        Registry::new(dir.path()),
    );
    for (extra, expected) in [
        (
            "program:\n  - {name: solve, module: react, signature: \"question -> answer\", tools: [calculator]}",
            "it names the tool `calculator`, which the request's `tools` do not declare (none are)",
        ),
        (
            "tools: [{builtin: calculator}]\nprogram:\n  - {name: solve, module: react, signature: \"question -> answer\"}",
            "a `react` stage needs `tools`",
        ),
        (
            "tools: [{builtin: search}]\nprogram:\n  - {name: solve, module: react, signature: \"question -> answer\", tools: [search]}",
            "`search` needs a `corpus`",
        ),
        (
            "tools: [{builtin: search, corpus: missing-docs.jsonl}]\nprogram:\n  - {name: solve, module: react, signature: \"question -> answer\", tools: [search]}",
            "missing-docs.jsonl",
        ),
        ("tools: [{builtin: shell}]", "no such built-in tool"),
    ] {
        let error = pipeline.optimize(&request(extra)).await.unwrap_err().to_string();
        assert!(error.contains(expected), "{extra}: {error}");
    }
    assert_eq!(calls.load(Ordering::SeqCst), 0);
    assert!(Registry::new(dir.path()).list().unwrap().is_empty());
}

/// The `mcp_fixture` server of promptopt-core's examples (built by `cargo test --workspace`;
/// built here when this crate's tests run alone).
fn mcp_fixture() -> String {
    let exe = std::env::current_exe().unwrap();
    let path = exe
        .parent()
        .and_then(|d| d.parent())
        .unwrap()
        .join("examples/mcp_fixture");
    if !path.is_file() {
        let built = std::process::Command::new(env!("CARGO"))
            .args(["build", "-p", "promptopt-core", "--example", "mcp_fixture"])
            .status()
            .unwrap();
        assert!(built.success());
    }
    path.to_string_lossy().into_owned()
}

#[tokio::test]
async fn a_react_program_with_an_mcp_tool_optimizes_saves_and_predicts() {
    let dir = tempfile::tempdir().unwrap();
    let calls = Arc::new(AtomicU64::new(0));
    let pipeline = Pipeline::new(
        Arc::new(agent_lm(Arc::clone(&calls))),
        Registry::new(dir.path()),
    );
    let fixture = mcp_fixture();
    let agent = format!(
        "tools: [{{mcp: {{command: \"{fixture}\", tools: [add, capital]}}}}]\nprogram:\n  - {{name: solve, module: react, signature: \"question -> answer\", tools: [add], max_iters: 3, instructions: Answer the arithmetic question.}}"
    );
    let result = pipeline
        .optimize(&request_of("bootstrapfewshot", &agent, "plus", |a, b| {
            a + b
        }))
        .await
        .unwrap();
    assert_eq!(result.optimized_metrics.score, 1.0, "{result:#?}");
    let artifact = pipeline.load_model("multiply", None).unwrap();
    let server = artifact.tools[0].mcp.as_ref().unwrap();
    assert_eq!(server.command.as_deref(), Some(fixture.as_str()));
    assert_eq!(server.tools, ["add", "capital"]);
    let (prediction, trace) = pipeline
        .predict(
            &result.model_id.unwrap(),
            &Example::new().with("question", "What is 17 plus 30?"),
        )
        .await
        .unwrap();
    assert_eq!(prediction.text("answer").as_deref(), Some("47"));
    assert!(trace.steps.iter().any(|s| s.predictor == "solve.react"));
    // A stage naming a tool the server does not give, and a server that does not start, are
    // refused before any model call.
    let before = calls.load(Ordering::SeqCst);
    let wrong = format!(
        "tools: [{{mcp: {{command: \"{fixture}\"}}}}]\nprogram:\n  - {{name: solve, module: react, signature: \"question -> answer\", tools: [weather]}}"
    );
    let e = pipeline
        .optimize(&request(&wrong))
        .await
        .unwrap_err()
        .to_string();
    assert!(
        e.contains("`weather`") && e.contains("add, capital, fails, slow"),
        "{e}"
    );
    let missing = "tools: [{mcp: {command: ./no-such-server}}]\nprogram:\n  - {name: solve, module: react, signature: \"question -> answer\", tools: [add]}";
    let e = pipeline
        .optimize(&request(missing))
        .await
        .unwrap_err()
        .to_string();
    assert!(
        e.contains("no-such-server") && e.contains("could not be started"),
        "{e}"
    );
    assert_eq!(calls.load(Ordering::SeqCst), before);
}

/// An agent misled by a distractor: while the MCP fixture's `capital` is offered it asks it
/// (and answers its "unknown"); with the calculator alone it multiplies. As the prompt model,
/// it describes the calculator anew and hides `capital` when asked about the tools, and writes
/// plain instructions otherwise.
fn misled_lm() -> ScriptedLm {
    ScriptedLm::new(move |request: &ChatRequest| {
        let system = &request.messages[0].content;
        let last = &request.messages.last().unwrap().content;
        if system.contains("rewrite the descriptions") {
            return Ok("```\ncalculator: Evaluates an arithmetic expression such as 12 * 4 exactly.\ncapital: UNUSED\n```".into());
        }
        if system.contains("You are an agent") {
            if system.contains("`capital`") && !last.contains("Observation 1:") {
                return Ok("[[ ## next_thought ## ]]\nLook it up.\n\n[[ ## next_tool_name ## ]]\ncapital\n\n[[ ## next_tool_args ## ]]\n{\"country\": \"Numbers\"}\n\n[[ ## completed ## ]]".into());
            }
            return Ok(agent_reply(request));
        }
        if field(last, "trajectory").is_some() {
            return Ok(agent_reply(request));
        }
        Ok("```\nAnswer the arithmetic question with the calculator.\n```".into())
    })
}

#[tokio::test]
async fn tool_selection_hides_a_misleading_tool_with_miprov2_and_gepa() {
    let fixture = mcp_fixture();
    for (algorithm, config) in [
        (
            "miprov2",
            "{num_candidates: 2, num_iterations: 8, max_bootstrapped_demos: 0, max_labeled_demos: 0, minibatch: false}",
        ),
        ("gepa", "{max_metric_calls: 120, reflection_minibatch_size: 3}"),
    ] {
        let dir = tempfile::tempdir().unwrap();
        let pipeline = Pipeline::new(Arc::new(misled_lm()), Registry::new(dir.path()));
        let agent = format!(
            "target: tool_selection\nalgorithm_config: {config}\ntools: [{{builtin: calculator}}, {{mcp: {{command: \"{fixture}\", tools: [capital]}}}}]\nprogram:\n  - {{name: solve, module: react, signature: \"question -> answer\", tools: [calculator, capital], max_iters: 3, instructions: Answer the arithmetic question.}}"
        );
        let request = request_of(algorithm, &agent, "times", |a, b| a * b);
        let result = pipeline.optimize(&request).await.unwrap();
        assert_eq!(result.baseline_metrics.score, 0.0, "{algorithm}");
        assert_eq!(result.optimized_metrics.score, 1.0, "{algorithm}: {result:#?}");
        let artifact = pipeline.load_model("multiply", None).unwrap();
        let solve = artifact.state.predictor("solve").unwrap();
        assert_eq!(solve.tools, ["calculator"], "{algorithm}");
        // The saved model offers the chosen tools: `predict` multiplies.
        let (prediction, _) = pipeline
            .predict(
                result.model_id.as_deref().unwrap(),
                &Example::new().with("question", "What is 17 times 3?"),
            )
            .await
            .unwrap();
        assert_eq!(prediction.text("answer").as_deref(), Some("51"), "{algorithm}");
        if algorithm == "gepa" {
            // GEPA's reflection rewrote the calculator's description too.
            assert!(
                solve.tool_descriptions["calculator"].starts_with("Evaluates an arithmetic"),
                "{solve:?}"
            );
        }
    }
}

#[tokio::test]
async fn a_tool_call_budget_limits_the_whole_run_and_is_reported() {
    let dir = tempfile::tempdir().unwrap();
    let calls = Arc::new(AtomicU64::new(0));
    let pipeline = Pipeline::new(
        Arc::new(agent_lm(Arc::clone(&calls))),
        Registry::new(dir.path()),
    );
    // Eight examples, one calculator call each for the baseline alone: a budget of 1 runs out.
    let budgeted = format!("{AGENT}\nconstraints: {{max_tool_calls: 1}}");
    let result = pipeline.optimize(&request(&budgeted)).await.unwrap();
    assert!(result.baseline_metrics.score < 1.0, "{result:#?}");
    let warning = result
        .warnings
        .iter()
        .find(|w| w.contains("budget of 1 tool calls was spent"))
        .unwrap_or_else(|| panic!("{:?}", result.warnings));
    assert!(warning.contains("later calls were answered"), "{warning}");
    // Without the budget the same run scores every example.
    let free = pipeline.optimize(&request(AGENT)).await.unwrap();
    assert_eq!(free.baseline_metrics.score, 1.0);
}
