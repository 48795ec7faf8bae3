//! `promptopt evaluate` and `promptopt predict` against the loopback fixed-reply server.
#![allow(clippy::unwrap_used)]

use std::path::{Path, PathBuf};
use std::process::{Command, Output};

use promptopt_lm::testing::FixedReplyServer;
use serde_json::Value;

/// Answers `positive` (with markers) when the last message mentions "good", otherwise a
/// sentence that holds `negative`; "???" gets a reply that cannot be parsed.
fn server() -> FixedReplyServer {
    FixedReplyServer::with_responder(|request| {
        let last = request.messages.last().map_or("", |m| m.content.as_str());
        if last.contains("???") {
            "I do not know.".to_string()
        } else if last.contains("good") {
            "[[ ## label ## ]]\npositive\n\n[[ ## completed ## ]]".to_string()
        } else {
            "The sentiment is Negative.".to_string()
        }
    })
    .unwrap()
}

fn write(dir: &Path, name: &str, text: &str) -> PathBuf {
    let path = dir.join(name);
    std::fs::write(&path, text).unwrap();
    path
}

fn dataset(dir: &Path) -> PathBuf {
    write(
        dir,
        "dev.jsonl",
        r#"{"id": "a", "text": "a good film", "label": "positive"}
{"id": "b", "text": "a dull film", "label": "negative"}
{"id": "c", "text": "good grief, no", "label": "negative"}
{"id": "d", "text": "??? film", "label": "positive"}
"#,
    )
}

/// Runs the binary with a fresh, empty `PROMPTOPT_HOME` (so no cache is shared).
fn promptopt(args: &[&str]) -> Output {
    let home = tempfile::tempdir().unwrap();
    promptopt_in(home.path(), args)
}

fn promptopt_in(home: &Path, args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_promptopt"))
        .args(args)
        .env("PROMPTOPT_HOME", home)
        .output()
        .unwrap()
}

fn text(bytes: &[u8]) -> String {
    String::from_utf8_lossy(bytes).into_owned()
}

#[test]
fn evaluate_prints_a_json_report() {
    let server = server();
    let dir = tempfile::tempdir().unwrap();
    let data = dataset(dir.path());
    let url = server.base_url();
    let out = promptopt(&[
        "evaluate",
        "--data",
        data.to_str().unwrap(),
        "--lm-model",
        "openai/test",
        "--base-url",
        &url,
        "--no-cache",
        "--no-json-fallback",
        "--json",
    ]);
    assert!(out.status.success(), "{}", text(&out.stderr));
    let mut report: Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(report["score"], Value::from(0.5));
    for key in ["wall_ms", "latency_ms"] {
        report[key] = Value::from("[redacted]");
    }
    insta::assert_json_snapshot!(report);
}

#[test]
fn evaluate_prints_a_table_with_demos_and_saves_the_program() {
    let server = server();
    let dir = tempfile::tempdir().unwrap();
    let data = dataset(dir.path());
    let program = dir.path().join("program.json");
    let url = server.base_url();
    let out = promptopt(&[
        "evaluate",
        "--data",
        data.to_str().unwrap(),
        "--train",
        data.to_str().unwrap(),
        "--demos",
        "2",
        "--strategy",
        "cot",
        "--lm-model",
        "openai/test",
        "--base-url",
        &url,
        "--instructions",
        "Classify the review.",
        "--save-program",
        program.to_str().unwrap(),
        "--no-cache",
    ]);
    assert!(out.status.success(), "{}", text(&out.stderr));
    let table: Vec<String> = text(&out.stdout)
        .lines()
        .map(|line| match line.split_once("  ") {
            // Paths and timings vary; keep the key column (16 characters wide).
            Some((key, _)) if ["data", "latency", "wall time"].contains(&key) => {
                format!("{key:<16}[redacted]")
            }
            _ => line.to_string(),
        })
        .collect();
    insta::assert_snapshot!(table.join("\n"));
    // The two replies without markers (chain of thought needs `reasoning` and `label`) were
    // retried once through the JSON adapter.
    assert_eq!(server.requests_served(), 4 + 2);

    let out = promptopt(&[
        "predict",
        "--state",
        program.to_str().unwrap(),
        "--input",
        r#"{"text": "so good"}"#,
        "--lm-model",
        "openai/test",
        "--base-url",
        &url,
        "--json",
    ]);
    assert!(out.status.success(), "{}", text(&out.stderr));
    let reply: Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(reply["outputs"]["label"], "positive");
    let out = promptopt(&[
        "predict",
        "--state",
        program.to_str().unwrap(),
        "--input",
        r#"{"text": "meh"}"#,
        "--lm-model",
        "openai/test",
        "--base-url",
        &url,
    ]);
    // Chain of thought needs both fields; a bare sentence is a parse failure, reported with
    // the raw reply.
    assert_eq!(out.status.code(), Some(1));
    let err = text(&out.stderr);
    assert!(
        err.contains("could not be parsed") && err.contains("The sentiment is Negative."),
        "{err}"
    );
    let out = promptopt(&[
        "predict",
        "--state",
        program.to_str().unwrap(),
        "--input",
        r#"{"text": "good"}"#,
        "--lm-model",
        "openai/test",
        "--base-url",
        &url,
    ]);
    assert!(out.status.success(), "{}", text(&out.stderr));
    assert_eq!(text(&out.stdout), "reasoning: \nlabel: positive\n");
}

#[test]
fn a_rerun_with_a_warm_cache_replays_exactly() {
    let server = server();
    let dir = tempfile::tempdir().unwrap();
    let data = dataset(dir.path());
    let url = server.base_url();
    let args = [
        "evaluate",
        "--data",
        data.to_str().unwrap(),
        "--lm-model",
        "openai/test",
        "--base-url",
        &url,
        "--json",
    ];
    let run = || {
        let out = promptopt_in(dir.path(), &args);
        assert!(out.status.success(), "{}", text(&out.stderr));
        let mut report: Value = serde_json::from_slice(&out.stdout).unwrap();
        let spent = std::mem::take(&mut report["cost_usd"]);
        for key in ["wall_ms", "latency_ms", "cache_hits"] {
            report[key] = Value::Null;
        }
        (report, spent)
    };
    let (cold, cold_cost) = run();
    let served = server.requests_served();
    let (warm, warm_cost) = run();
    // The test model has no price (unknown cost); answers from the cache cost nothing.
    assert_eq!((cold_cost, warm_cost), (Value::Null, Value::from(0.0)));
    assert_eq!(
        server.requests_served(),
        served,
        "the warm run reached the server"
    );
    assert_eq!(cold, warm);
}

#[test]
fn bad_inputs_get_clear_errors_and_exit_codes() {
    let dir = tempfile::tempdir().unwrap();
    let data = dataset(dir.path());
    let data = data.to_str().unwrap();
    let base = [
        "--lm-model",
        "openai/test",
        "--base-url",
        "http://127.0.0.1:9/v1",
    ];

    let out = promptopt(
        &[
            &["evaluate", "--data", data, "--metric", "accurcy"][..],
            &base[..],
        ]
        .concat(),
    );
    assert_eq!(out.status.code(), Some(2));
    let err = text(&out.stderr);
    assert!(
        err.contains("Unknown metric `accurcy`") && err.contains("`accuracy`, `f1`"),
        "{err}"
    );

    let out = promptopt(
        &[
            &["evaluate", "--data", data, "--output-keys", "answer"][..],
            &base[..],
        ]
        .concat(),
    );
    assert_eq!(out.status.code(), Some(1));
    let err = text(&out.stderr);
    assert!(
        err.contains("`answer` is in no example") && err.contains("label"),
        "{err}"
    );

    let empty = write(dir.path(), "empty.jsonl", "");
    let out = promptopt(
        &[
            &["evaluate", "--data", empty.to_str().unwrap()][..],
            &base[..],
        ]
        .concat(),
    );
    assert_eq!(out.status.code(), Some(1));
    assert!(
        text(&out.stderr).contains("has no examples"),
        "{}",
        text(&out.stderr)
    );

    let out = promptopt(&[&["evaluate", "--data", data, "--demos", "2"][..], &base[..]].concat());
    assert_eq!(out.status.code(), Some(2));
    assert!(text(&out.stderr).contains("needs `--train FILE`"));

    let out = promptopt(&["evaluate", "--data", data, "--adapter", "xml"]);
    assert_eq!(out.status.code(), Some(2));

    let state = write(dir.path(), "state.json", r#"{"predictors": {}}"#);
    let out = promptopt(
        &[
            &[
                "predict",
                "--state",
                state.to_str().unwrap(),
                "--input",
                "{}",
            ][..],
            &base[..],
        ]
        .concat(),
    );
    assert_eq!(out.status.code(), Some(2));
    assert!(
        text(&out.stderr).contains("--signature FILE"),
        "{}",
        text(&out.stderr)
    );
}
