//! A two-stage program through the command line: `optimize`, then `models list`, `promote`,
//! `predict NAME@ALIAS`, `save --version --metadata`, `import`, `export`, against the loopback
//! OpenAI-compatible server.
#![allow(clippy::unwrap_used)]

use std::path::Path;
use std::process::{Command, Output};

use promptopt_lm::testing::FixedReplyServer;
use serde_json::Value;

/// The two stages in compact turns: the evidence stage (a `Context:` line) quotes the context's
/// first sentence after a line of reasoning; the answer stage (an `Evidence:` line) answers with
/// its first two words.
fn server() -> FixedReplyServer {
    FixedReplyServer::with_responder(|request| {
        let last = request.messages.last().map_or("", |m| m.content.as_str());
        let line = |prefix: &str| last.lines().find_map(|l| l.strip_prefix(prefix));
        if let Some(context) = line("Context: ") {
            let sentence = context.split(". ").next().unwrap_or_default();
            format!("Reasoning: It says so.\nEvidence: {sentence}")
        } else if let Some(evidence) = line("Evidence: ") {
            evidence
                .split_whitespace()
                .take(2)
                .collect::<Vec<_>>()
                .join(" ")
        } else {
            "I cannot help.".to_string()
        }
    })
    .unwrap()
}

const REQUEST: &str = r#"name: qa
evaluation_metric: token_f1
algorithm: bootstrapfewshot
model: openai/test-model
adapter: turns
input_keys: [context, question]
output_keys: [answer]
program:
  - name: evidence
    module: chain_of_thought
    signature: "question, context -> evidence"
    instructions: Quote the sentence of the context that answers the question.
  - name: answer
    signature: "question, evidence -> answer"
algorithm_config: {max_bootstrapped_demos: 1, max_labeled_demos: 0}
training_examples:
  - {context: "Oslo is in Norway. It is cold.", question: "Where is Oslo?", answer: "Oslo is"}
  - {context: "Rome is old. It has ruins.", question: "What is old?", answer: "Rome is"}
  - {context: "Lima is in Peru. It is big.", question: "Where is Lima?", answer: "Lima is"}
validation_examples:
  - {context: "Kyiv is in Ukraine. It is green.", question: "Where is Kyiv?", answer: "Kyiv is"}
  - {context: "Cairo is hot. It is large.", question: "What is hot?", answer: "Cairo is"}
"#;

fn promptopt(home: &Path, url: &str, args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_promptopt"))
        .args(args)
        .env("PROMPTOPT_HOME", home)
        .env("OPENAI_BASE_URL", url)
        .env("OPENAI_API_KEY", "sk-test-not-a-real-key")
        .env_remove("MLFLOW_TRACKING_URI")
        .output()
        .unwrap()
}

fn text(bytes: &[u8]) -> String {
    String::from_utf8_lossy(bytes).into_owned()
}

fn ok(output: &Output) -> (String, String) {
    let (out, err) = (text(&output.stdout), text(&output.stderr));
    assert!(output.status.success(), "stdout: {out}\nstderr: {err}");
    (out, err)
}

#[test]
fn a_two_stage_program_is_optimized_promoted_predicted_saved_imported_and_exported() {
    let server = server();
    let url = server.base_url();
    let home = tempfile::tempdir().unwrap();
    let work = tempfile::tempdir().unwrap();
    let request = work.path().join("qa.yaml");
    std::fs::write(&request, REQUEST).unwrap();
    let h = home.path();

    let (out, _) = ok(&promptopt(
        h,
        &url,
        &[
            "optimize",
            request.to_str().unwrap(),
            "--json",
            "--no-cache",
        ],
    ));
    let result: Value = serde_json::from_str(&out).unwrap();
    assert_eq!(result["model_id"], "qa@1.0.0");
    assert_eq!(result["optimized_metrics"]["score"], 1.0);

    let (out, err) = ok(&promptopt(
        h,
        &url,
        &["models", "promote", "qa@1.0.0", "--alias", "production"],
    ));
    let mut lines = err.lines();
    assert_eq!(
        (out.as_str(), lines.next()),
        ("", Some("`qa@production` is now 1.0.0"))
    );
    // The alias is mirrored in the tracking store's model registry (here the embedded one).
    assert!(
        lines
            .next()
            .is_some_and(|l| l.starts_with("MLflow `qa@production` now points at")),
        "{err}"
    );
    let (out, _) = ok(&promptopt(h, &url, &["models", "list"]));
    insta::assert_snapshot!("models_list", out);

    let input =
        r#"{"context": "Bern is in Switzerland. It is calm.", "question": "Where is Bern?"}"#;
    let (out, _) = ok(&promptopt(
        h,
        &url,
        &["predict", "qa@production", "--input", input, "--json"],
    ));
    let prediction: Value = serde_json::from_str(&out).unwrap();
    assert_eq!(prediction["outputs"]["answer"], "Bern is");
    assert_eq!(prediction["lm_calls"], 2);

    // A copy as a new version with metadata, written to a file; imported into another home.
    let copy = work.path().join("qa-2.json");
    ok(&promptopt(
        h,
        &url,
        &[
            "models",
            "save",
            "qa@production",
            "--output",
            copy.to_str().unwrap(),
            "--version",
            "2.0.0",
            "--metadata",
            "team=search",
            "--tag",
            "stage=two",
        ],
    ));
    let (out, _) = ok(&promptopt(h, &url, &["models", "show", "qa@2.0.0"]));
    let saved: Value = serde_json::from_str(&out).unwrap();
    assert_eq!(saved["metadata"]["team"], "search");
    assert_eq!(saved["tags"]["stage"], "two");
    assert_eq!(saved["provenance"]["parent_version"], "1.0.0");
    let file: Value = serde_json::from_str(&std::fs::read_to_string(&copy).unwrap()).unwrap();
    assert_eq!(file, saved);
    assert!(!text(copy.as_os_str().as_encoded_bytes()).is_empty());
    assert!(!std::fs::read_to_string(&copy).unwrap().contains("sk-test"));

    let other = tempfile::tempdir().unwrap();
    let (_, err) = ok(&promptopt(
        other.path(),
        &url,
        &["models", "import", copy.to_str().unwrap()],
    ));
    assert!(err.contains("Imported `qa@2.0.0`"), "{err}");
    let again = promptopt(
        other.path(),
        &url,
        &["models", "import", copy.to_str().unwrap()],
    );
    assert!(!again.status.success());
    assert!(
        text(&again.stderr).contains("Model `qa` version `2.0.0` already exists"),
        "{}",
        text(&again.stderr)
    );

    let (out, _) = ok(&promptopt(
        other.path(),
        &url,
        &["models", "export", "qa@2.0.0", "--format", "dspy"],
    ));
    let dspy: Value = serde_json::from_str(&out).unwrap();
    assert!(dspy.get("evidence.predict").is_some(), "{dspy}");
    assert!(dspy.get("answer").is_some(), "{dspy}");
    let (out, _) = ok(&promptopt(
        other.path(),
        &url,
        &["models", "export", "qa@2.0.0", "--format", "messages"],
    ));
    assert!(out.contains("{evidence}"), "{out}");

    // Bad references and formats: a clear error and a non-zero exit.
    for (args, needle) in [
        (
            vec!["models", "export", "qa@2.0.0", "--format", "yaml"],
            "Unknown export format `yaml`",
        ),
        (
            vec!["models", "promote", "qa@9.9.9", "--alias", "production"],
            "No model `qa` at `9.9.9`",
        ),
        (
            vec!["models", "promote", "qa@2.0.0", "--alias", "latest"],
            "`latest` always means the highest version",
        ),
        (
            vec!["predict", "qa@staging", "--input", input],
            "No model `qa` at `staging`",
        ),
    ] {
        let output = promptopt(other.path(), &url, &args);
        assert!(!output.status.success(), "{args:?}");
        assert!(
            text(&output.stderr).contains(needle),
            "{args:?}: {}",
            text(&output.stderr)
        );
    }
}
