#![allow(clippy::unwrap_used)]
use std::path::Path;

use promptopt_core::program::parse_signature;
use promptopt_core::Program;

use super::*;
use crate::{ModelSettings, Version};

/// `evidence` (chain of thought, `question, context -> evidence`) then `answer` (predict,
/// `question, evidence -> answer`), one demo each.
fn two_stage() -> ModelArtifact {
    let evidence = Stage::new(
        "evidence",
        parse_signature("question, context -> evidence", &[]).unwrap(),
    )
    .with_module(Strategy::ChainOfThought);
    let answer = Stage::new(
        "answer",
        parse_signature("question, evidence -> answer", &[]).unwrap(),
    );
    let program = Program::new(
        vec!["question".into(), "context".into()],
        vec![evidence, answer],
        vec!["answer".into()],
    )
    .unwrap();
    let mut state = program.initial_state();
    let evidence = state.predictor_mut("evidence").unwrap();
    evidence.instructions = "Quote the sentences of the context that answer the question.".into();
    evidence.demos.push(
        Example::new()
            .with("question", "What is the capital of France?")
            .with("context", "France is in Europe.\nIts capital is Paris.")
            .with("reasoning", "The second sentence names the capital.")
            .with("evidence", "Its capital is Paris."),
    );
    let answer = state.predictor_mut("answer").unwrap();
    answer.instructions = "Answer the question in a few words, using only the evidence.".into();
    answer.demos.push(
        Example::new()
            .with("id", "hamlet-1")
            .with("question", "Who wrote Hamlet?")
            .with("evidence", "Hamlet is a tragedy by William Shakespeare.")
            .with("answer", "William Shakespeare"),
    );
    let settings = ModelSettings {
        model: "openai/gpt-4o-mini".into(),
        adapter: AdapterKind::Chat,
        temperature: Some(0.0),
        max_tokens: Some(256),
    };
    let mut artifact = ModelArtifact::new("qa", program, state, settings);
    artifact.version = Version::new(1, 2, 0);
    artifact.created_at = "2026-01-02T03:04:05Z".into();
    artifact.promptopt_version = "0.1.0".into();
    artifact
        .metrics
        .insert("metric".into(), json!("exact_match"));
    artifact.metrics.insert("baseline_score".into(), json!(0.4));
    artifact
        .metrics
        .insert("optimized_score".into(), json!(0.75));
    artifact
}

fn exported(format: ExportFormat) -> Value {
    serde_json::from_str(&export(&two_stage(), format).unwrap()).unwrap()
}

#[test]
fn formats_parse_by_name_and_unknown_ones_list_the_valid_names() {
    for format in ExportFormat::ALL {
        assert_eq!(format.name().parse::<ExportFormat>().unwrap(), format);
        assert_eq!(format.to_string(), format.name());
    }
    let error = "yaml".parse::<ExportFormat>().unwrap_err().to_string();
    assert_eq!(
        error,
        "Unknown export format `yaml`; expected `dspy`, `messages` or `markdown`"
    );
}

#[test]
fn dspy_keys_follow_named_parameters() {
    let state = exported(ExportFormat::Dspy);
    let keys: Vec<&str> = state
        .as_object()
        .unwrap()
        .keys()
        .map(String::as_str)
        .collect();
    assert_eq!(keys, ["evidence.predict", "answer", "metadata"]);
    assert_eq!(
        state["metadata"]["dependency_versions"],
        json!({ "dspy": "3.4.1" })
    );
    for key in ["evidence.predict", "answer"] {
        let predictor = state[key].as_object().unwrap();
        let fields: Vec<&str> = predictor.keys().map(String::as_str).collect();
        assert_eq!(
            fields,
            ["traces", "train", "demos", "signature", "lm"],
            "{key}"
        );
        assert_eq!(state[key]["lm"], Value::Null);
        assert_eq!(state[key]["traces"], json!([]));
    }
}

#[test]
fn dspy_fields_put_reasoning_between_inputs_and_outputs() {
    let state = exported(ExportFormat::Dspy);
    let signature = &state["evidence.predict"]["signature"];
    assert_eq!(
        signature["instructions"],
        "Quote the sentences of the context that answer the question."
    );
    assert_eq!(
        signature["fields"],
        json!([
            { "prefix": "Question:", "description": "${question}" },
            { "prefix": "Context:", "description": "${context}" },
            { "prefix": "Reasoning:", "description": "${reasoning}" },
            { "prefix": "Evidence:", "description": "${evidence}" },
        ])
    );
    let fields = state["answer"]["signature"]["fields"].as_array().unwrap();
    let prefixes: Vec<&str> = fields
        .iter()
        .map(|f| f["prefix"].as_str().unwrap())
        .collect();
    assert_eq!(prefixes, ["Question:", "Evidence:", "Answer:"]);
}

#[test]
fn dspy_demos_keep_reasoning_and_drop_unknown_fields() {
    let state = exported(ExportFormat::Dspy);
    assert_eq!(
        state["evidence.predict"]["demos"],
        json!([{
            "question": "What is the capital of France?",
            "context": "France is in Europe.\nIts capital is Paris.",
            "reasoning": "The second sentence names the capital.",
            "evidence": "Its capital is Paris.",
        }])
    );
    assert_eq!(
        state["answer"]["demos"],
        json!([{
            "question": "Who wrote Hamlet?",
            "evidence": "Hamlet is a tragedy by William Shakespeare.",
            "answer": "William Shakespeare",
        }])
    );
}

#[test]
fn dspy_prefixes_are_inferred_like_dspy() {
    // Expected values printed by DSPy 3.4.1's `infer_prefix`, plus the colon.
    for (name, prefix) in [
        ("question", "Question:"),
        ("snake_case_text", "Snake Case Text:"),
        ("camelCaseText", "Camel Case Text:"),
        ("text2number", "Text 2 Number:"),
        ("HTMLParser", "HTML Parser:"),
        ("my-field", "My-field:"),
        ("a__b", "A  B:"),
        ("_x", " X:"),
        ("ID", "ID:"),
        ("x2Y", "X 2 Y:"),
        ("ABCdef", "AB Cdef:"),
        ("2text", "2 Text:"),
        ("aB1c", "A B 1 C:"),
        ("ünï_code", "Ünï Code:"),
    ] {
        assert_eq!(dspy_prefix(name), prefix, "{name}");
    }
}

#[test]
fn messages_are_the_rendered_requests_with_placeholders() {
    let artifact = two_stage();
    let stages = exported(ExportFormat::Messages);
    let stages = stages.as_array().unwrap();
    assert_eq!(stages.len(), 2);
    let lm: SharedLm = Arc::new(ScriptedLm::constant("unused"));
    let runtime = Runtime::new(LmRegistry::new("openai/gpt-4o-mini", lm))
        .with_settings(artifact.model.run_settings());
    for (stage, (name, module, inputs)) in stages.iter().zip([
        ("evidence", "chain_of_thought", ["question", "context"]),
        ("answer", "predict", ["question", "evidence"]),
    ]) {
        assert_eq!(stage["stage"], name);
        assert_eq!(stage["module"], module);
        assert_eq!(stage["model"], "openai/gpt-4o-mini");
        assert_eq!(stage["adapter"], "chat");
        let mut example = Example::new();
        for input in inputs {
            example.insert(input, format!("{{{input}}}"));
        }
        let request = artifact
            .program
            .render(name, &artifact.state, &example, &runtime)
            .unwrap();
        assert_eq!(
            stage["messages"],
            serde_json::to_value(&request.messages).unwrap()
        );
        let last = stage["messages"].as_array().unwrap().last().unwrap();
        assert_eq!(last["role"], "user");
        for input in inputs {
            let placeholder = format!("{{{input}}}");
            assert!(
                last["content"].as_str().unwrap().contains(&placeholder),
                "{name}: {input}"
            );
        }
    }
}

#[test]
fn a_state_missing_a_stage_is_an_error() {
    let mut artifact = two_stage();
    artifact.state.predictors.remove("answer");
    for format in ExportFormat::ALL {
        let error = export(&artifact, format).unwrap_err();
        assert!(error.to_string().contains("answer"), "{format}: {error}");
    }
}

#[test]
fn fences_outgrow_backticks_in_the_text() {
    let mut out = String::new();
    fenced(&mut out, "a ```` b");
    assert_eq!(out, "`````text\na ```` b\n`````\n");
}

#[test]
fn markdown_snapshot() {
    insta::assert_snapshot!(export(&two_stage(), ExportFormat::Markdown).unwrap());
}

#[test]
fn dspy_snapshot() {
    insta::assert_snapshot!(export(&two_stage(), ExportFormat::Dspy).unwrap());
}

/// `bench/tests/test_dspy_export.py` loads this file with DSPy itself.
#[test]
fn the_dspy_fixture_is_current() {
    let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/two_stage.dspy.json");
    let text = export(&two_stage(), ExportFormat::Dspy).unwrap();
    if std::env::var_os("PROMPTOPT_UPDATE_FIXTURES").is_some_and(|v| v == "1") {
        std::fs::create_dir_all(path.parent().unwrap()).unwrap();
        std::fs::write(&path, &text).unwrap();
    }
    let committed = std::fs::read_to_string(&path).unwrap_or_else(|e| {
        panic!(
            "Cannot read `{}` ({e}); write it with `PROMPTOPT_UPDATE_FIXTURES=1`",
            path.display()
        )
    });
    assert!(
        committed == text,
        "`{}` is out of date; rewrite it with `PROMPTOPT_UPDATE_FIXTURES=1`",
        path.display()
    );
}
