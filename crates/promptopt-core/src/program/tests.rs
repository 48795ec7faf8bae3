#![allow(clippy::unwrap_used)]

use std::sync::Arc;

use promptopt_lm::{ChatRequest, LmError, ResponseFormat, ScriptedLm, SharedLm};
use serde_json::json;

use super::*;
use crate::adapter::AdapterKind;
use crate::{Field, Strategy};

fn sentiment() -> Signature {
    Signature::new(
        vec![Field::text("text")],
        vec![Field::label(
            "label",
            vec!["positive".into(), "negative".into()],
        )],
    )
}

fn last_user(request: &ChatRequest) -> &str {
    request.messages.last().map_or("", |m| m.content.as_str())
}

fn runtime(lm: ScriptedLm) -> Runtime {
    Runtime::new(LmRegistry::new("scripted/task", Arc::new(lm)))
}

#[tokio::test]
async fn single_predictor_runs_and_traces() {
    let lm = ScriptedLm::new(|r| {
        Ok(if last_user(r).contains("loved") {
            "[[ ## label ## ]]\nPositive\n\n[[ ## completed ## ]]".into()
        } else {
            "negative".into()
        })
    });
    let program = Program::single(sentiment());
    let state = program.initial_state();
    let rt = runtime(lm);
    let input = Example::new()
        .with("text", "I loved it")
        .with("label", "positive");
    let (prediction, trace) = program.run(&state, &input, &rt).await.unwrap();
    assert_eq!(prediction.text("label").as_deref(), Some("positive"));
    assert_eq!(trace.steps.len(), 1);
    let step = &trace.steps[0];
    assert_eq!(step.predictor, "predict");
    // Labels are not leaked into the inputs.
    assert_eq!(step.inputs, Example::new().with("text", "I loved it"));
    assert_eq!(step.request.model, "scripted/task");
    assert_eq!(step.request.temperature, Some(0.0));
    let (prediction, _) = program
        .run(&state, &Example::new().with("text", "meh"), &rt)
        .await
        .unwrap();
    assert_eq!(prediction.text("label").as_deref(), Some("negative"));
}

#[tokio::test]
async fn chain_of_thought_returns_reasoning() {
    let lm = ScriptedLm::new(|r| {
        assert!(last_user(r).contains("`[[ ## reasoning ## ]]`, then `[[ ## label ## ]]`"));
        Ok("[[ ## reasoning ## ]]\nThe reviewer loved it.\n[[ ## label ## ]]\npositive".into())
    });
    let program = Program::single(sentiment());
    let mut state = program.initial_state();
    state.predictor_mut("predict").unwrap().strategy = Strategy::ChainOfThought;
    let (prediction, _) = program
        .run(
            &state,
            &Example::new().with("text", "I loved it"),
            &runtime(lm),
        )
        .await
        .unwrap();
    assert_eq!(
        prediction.outputs.keys().collect::<Vec<_>>(),
        ["reasoning", "label"]
    );
    assert_eq!(
        prediction.text("reasoning").as_deref(),
        Some("The reviewer loved it.")
    );
}

/// Summarise, then classify the summary.
fn two_stage() -> Program {
    Program::new(
        vec!["text".into()],
        vec![
            Stage::new(
                "summarize",
                Signature::new(vec![Field::text("text")], vec![Field::text("summary")])
                    .with_instructions("Summarise the review in a few words."),
            ),
            Stage::new(
                "classify",
                Signature::new(
                    vec![Field::text("summary")],
                    vec![Field::label(
                        "label",
                        vec!["positive".into(), "negative".into()],
                    )],
                ),
            ),
        ],
        vec!["label".into()],
    )
    .unwrap()
}

#[tokio::test]
async fn two_stage_program_feeds_outputs_forward_with_per_predictor_models() {
    let task = ScriptedLm::new(|_| Ok("[[ ## summary ## ]]\nloved it".into()));
    let other = ScriptedLm::new(|r| {
        Ok(if last_user(r).contains("[[ ## summary ## ]]\nloved it") {
            "[[ ## label ## ]]\npositive".into()
        } else {
            "negative".into()
        })
    });
    let rt = Runtime::new(
        LmRegistry::new("scripted/task", Arc::new(task.clone()))
            .with_model("scripted/other", Arc::new(other.clone())),
    );
    let program = two_stage();
    let mut state = program.initial_state();
    assert_eq!(
        state.predictor("summarize").unwrap().instructions,
        "Summarise the review in a few words."
    );
    state.predictor_mut("classify").unwrap().model = Some("scripted/other".into());
    let (prediction, trace) = program
        .run(&state, &Example::new().with("text", "What a film"), &rt)
        .await
        .unwrap();
    assert_eq!(prediction.text("label").as_deref(), Some("positive"));
    // Only the output keys: the intermediate summary is not part of the prediction.
    assert_eq!(prediction.outputs.keys().collect::<Vec<_>>(), ["label"]);
    let names: Vec<&str> = trace.steps.iter().map(|s| s.predictor.as_str()).collect();
    assert_eq!(names, ["summarize", "classify"]);
    assert_eq!(trace.steps[1].request.model, "scripted/other");
    assert_eq!((task.calls(), other.calls()), (1, 1));

    state.predictor_mut("classify").unwrap().model = Some("scripted/missing".into());
    let err = program
        .run(&state, &Example::new().with("text", "x"), &rt)
        .await
        .unwrap_err();
    assert!(matches!(err, CoreError::UnknownModel { .. }), "{err}");
    state.predictors.remove("classify");
    assert!(matches!(
        program.check_state(&state),
        Err(CoreError::MissingPredictorState { .. })
    ));
}

#[tokio::test]
async fn unparsable_chat_reply_falls_back_to_json_once() {
    let lm = ScriptedLm::new(|r| {
        Ok(match r.response_format {
            Some(ResponseFormat::JsonObject) => {
                "{\"label\": \"negative\", \"confidence\": 0.5}".into()
            }
            _ => "[[ ## confidence ## ]]\nvery".into(),
        })
    });
    let sig = Signature::new(
        vec![Field::text("text")],
        vec![
            Field::label("label", vec!["positive".into(), "negative".into()]),
            Field::new("confidence", crate::FieldType::Number),
        ],
    );
    let program = Program::single(sig);
    let state = program.initial_state();
    let mut rt = runtime(lm.clone());
    let input = Example::new().with("text", "bad");
    let (prediction, trace) = program.run(&state, &input, &rt).await.unwrap();
    assert_eq!(prediction.text("label").as_deref(), Some("negative"));
    assert_eq!(trace.steps.len(), 2);
    assert!(trace.steps[0].parse_error.is_some());
    assert_eq!(trace.steps[0].raw, "[[ ## confidence ## ]]\nvery");
    assert!(trace.steps[1].parse_error.is_none());

    // Without the fallback the failure is kept: an empty prediction, the raw reply in the trace.
    rt.settings.json_fallback = false;
    let output = program.run_traced(&state, &input, &rt).await;
    assert!(matches!(output.result, Err(CoreError::Parse { ref raw, .. }) if raw.contains("very")));
    let (prediction, trace) = program.run(&state, &input, &rt).await.unwrap();
    assert!(prediction.outputs.is_empty());
    assert!(trace.has_parse_failure());
    assert_eq!(lm.calls(), 4);
}

#[tokio::test]
async fn adapters_and_settings_shape_the_request() {
    let lm = ScriptedLm::new(|r| {
        Ok(match r.stop.is_empty() {
            true => "{\"label\": \"positive\"}".into(),
            false => " positive\n---".into(),
        })
    });
    let program = Program::single(sentiment());
    let state = program.initial_state();
    let settings = RunSettings {
        adapter: crate::adapter::AdapterKind::Completion,
        max_tokens: Some(5),
        seed: Some(7),
        use_cache: false,
        ..RunSettings::default()
    };
    let rt = runtime(lm.clone()).with_settings(settings.clone());
    let (prediction, trace) = program
        .run(&state, &Example::new().with("text", "good"), &rt)
        .await
        .unwrap();
    assert_eq!(prediction.outputs.get("label"), Some(&json!("positive")));
    let request = &trace.steps[0].request;
    assert_eq!(
        (request.max_tokens, request.seed, request.use_cache),
        (Some(5), Some(7), false)
    );
    assert_eq!(request.messages.len(), 1);

    let rt = runtime(lm).with_settings(RunSettings {
        adapter: crate::adapter::AdapterKind::Json,
        ..settings
    });
    let (prediction, trace) = program
        .run(&state, &Example::new().with("text", "good"), &rt)
        .await
        .unwrap();
    assert_eq!(prediction.text("label").as_deref(), Some("positive"));
    assert_eq!(
        trace.steps[0].request.response_format,
        Some(ResponseFormat::JsonObject)
    );
}

#[tokio::test]
async fn model_errors_and_missing_inputs_are_errors() {
    let failing: SharedLm = Arc::new(ScriptedLm::new(|_| {
        Err(LmError::InvalidRequest("nope".into()))
    }));
    let program = Program::single(sentiment());
    let state = program.initial_state();
    let rt = Runtime::new(LmRegistry::new("scripted/task", failing));
    let err = program
        .run(&state, &Example::new().with("text", "x"), &rt)
        .await
        .unwrap_err();
    assert!(matches!(err, CoreError::Lm { .. }), "{err}");
    let err = program
        .run(&state, &Example::new().with("body", "x"), &rt)
        .await
        .unwrap_err();
    assert_eq!(
        err.to_string(),
        "Input field `text` of predictor `predict` is missing from the example"
    );
}

#[tokio::test]
async fn render_is_the_request_that_is_sent() {
    let lm = ScriptedLm::new(|_| Ok("[[ ## summary ## ]]\nfine".into()));
    let program = two_stage();
    let mut state = program.initial_state();
    state.predictor_mut("summarize").unwrap().demos = vec![Example::new()
        .with("text", "A long review")
        .with("summary", "long")];
    for adapter in AdapterKind::ALL {
        let mut rt = runtime(lm.clone());
        rt.settings.adapter = adapter;
        rt.settings.json_fallback = false;
        let input = Example::new().with("text", "Nice").with("label", "gold");
        let output = program.run_traced(&state, &input, &rt).await;
        let first = &output.trace.steps[0];
        let shown = program.render("summarize", &state, &input, &rt).unwrap();
        assert_eq!(shown, first.request, "{adapter:?}");
        assert_eq!(
            serde_json::to_string(&shown).unwrap(),
            serde_json::to_string(&first.request).unwrap()
        );
    }
}

#[test]
fn programs_that_do_not_fit_together_name_the_stage() {
    let stage = |name: &str, sig: &str| {
        StageSpec {
            name: name.into(),
            module: Strategy::Predict,
            tools: Vec::new(),
            max_iters: None,
            signature: sig.into(),
            instructions: None,
            adapter: None,
            model: None,
        }
        .into_stage(&[])
        .unwrap()
    };
    let inputs = vec!["question".to_string(), "context".to_string()];
    let cases = [
        (
            vec![stage("a", "question -> x"), stage("b", "y -> answer")],
            "stage `b`: it reads `y`, which is not an input (`question`, `context`) and no earlier stage writes",
        ),
        (
            vec![stage("a", "question, answer -> x"), stage("b", "x -> answer")],
            "stage `a`: it reads `answer`, which only the later stage `b` writes",
        ),
        (
            vec![stage("a", "question -> x"), stage("a", "x -> answer")],
            "stage `a`: two stages have this name",
        ),
        (vec![stage("a", "question -> x")], "no stage writes the output key `answer`"),
        (vec![], "at least one stage"),
    ];
    for (stages, needle) in cases {
        let err = Program::new(inputs.clone(), stages, vec!["answer".into()])
            .unwrap_err()
            .to_string();
        assert!(err.contains(needle), "{err}");
    }
    let ok = Program::new(
        inputs,
        vec![
            stage("evidence", "question, context -> evidence"),
            stage("answer", "question, evidence -> answer"),
        ],
        vec!["answer".into()],
    )
    .unwrap();
    let json = serde_json::to_value(&ok).unwrap();
    let back: Program = serde_json::from_value(json.clone()).unwrap();
    assert_eq!(back, ok);
    // Deserializing checks the program again.
    let mut broken = json;
    broken["output_keys"] = serde_json::json!(["nope"]);
    let err = serde_json::from_value::<Program>(broken).unwrap_err();
    assert!(err.to_string().contains("`nope`"), "{err}");
}

#[test]
fn a_two_stage_prompt_renders_with_placeholders() {
    let program = two_stage();
    let mut state = program.initial_state();
    state.predictor_mut("summarize").unwrap().strategy = Strategy::ChainOfThought;
    state.predictor_mut("classify").unwrap().demos = vec![Example::new()
        .with("summary", "loved it")
        .with("label", "positive")];
    let mut rt = runtime(ScriptedLm::constant("unused"));
    rt.settings.adapter = AdapterKind::Turns;
    let mut shown = String::new();
    for stage in program.stages() {
        let mut inputs = Example::new();
        for field in &stage.signature.inputs {
            inputs.insert(field.name.clone(), format!("{{{}}}", field.name));
        }
        let request = program.render(&stage.name, &state, &inputs, &rt).unwrap();
        shown.push_str(&format!("## {}\n", stage.name));
        for m in &request.messages {
            shown.push_str(&format!("[{:?}]\n{}\n", m.role, m.content));
        }
    }
    insta::assert_snapshot!(shown);
}
