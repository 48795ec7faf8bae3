//! `promptopt optimize` records its run, and `promptopt runs` reads it back: in the embedded
//! store, and on a real MLflow server (`PROMPTOPT_TEST_MLFLOW_URI`, started by `scripts/test.sh`).
//! A canary API key must not appear anywhere the run is written.
#![allow(clippy::unwrap_used)]

mod common;

use std::path::Path;
use std::process::{Command, Output};

use promptopt_lm::testing::FixedReplyServer;
use promptopt_tracking::{MlflowClient, TrackingStore};
use serde_json::Value;

const CANARY: &str = "sk-canary-4f1d9b7e2c";

/// Answers `positive` unless the text mentions something bad.
fn lm() -> FixedReplyServer {
    FixedReplyServer::with_responder(|request| {
        let last = request.messages.last().map_or("", |m| m.content.as_str());
        if last.contains("bad") || last.contains("awful") {
            "negative".to_string()
        } else {
            "positive".to_string()
        }
    })
    .unwrap()
}

fn request(name: &str) -> String {
    format!(
        r#"name: {name}
evaluation_metric: exact_match
algorithm: bootstrapfewshot
model: openai/test-model
input_keys: [text]
output_keys: [label]
algorithm_config: {{max_bootstrapped_demos: 1, max_labeled_demos: 1}}
training_examples:
  - {{text: "a good film", label: "positive"}}
  - {{text: "a bad film", label: "negative"}}
  - {{text: "lovely", label: "positive"}}
validation_examples:
  - {{text: "awful acting", label: "negative"}}
  - {{text: "great fun", label: "positive"}}
"#
    )
}

fn promptopt(home: &Path, lm_url: &str, tracking: Option<&str>, args: &[&str]) -> Output {
    let mut command = Command::new(env!("CARGO_BIN_EXE_promptopt"));
    command
        .args(args)
        .env("PROMPTOPT_HOME", home)
        .env("OPENAI_BASE_URL", lm_url)
        .env("OPENAI_API_KEY", CANARY)
        .env_remove("DISABLE_MLFLOW");
    match tracking {
        Some(uri) => command.env("MLFLOW_TRACKING_URI", uri),
        None => command.env_remove("MLFLOW_TRACKING_URI"),
    };
    command.output().unwrap()
}

fn ok(output: &Output) -> (String, String) {
    let out = String::from_utf8_lossy(&output.stdout).into_owned();
    let err = String::from_utf8_lossy(&output.stderr).into_owned();
    assert!(output.status.success(), "stdout: {out}\nstderr: {err}");
    (out, err)
}

fn optimize(home: &Path, lm_url: &str, tracking: Option<&str>, name: &str) -> Value {
    let file = home.join(format!("{name}.yaml"));
    std::fs::write(&file, request(name)).unwrap();
    let (out, _) = ok(&promptopt(
        home,
        lm_url,
        tracking,
        &["optimize", file.to_str().unwrap(), "--json", "--no-cache"],
    ));
    serde_json::from_str(&out).unwrap()
}

#[test]
fn runs_are_recorded_in_the_embedded_store_and_searched() {
    let server = lm();
    let url = server.base_url();
    let home = tempfile::tempdir().unwrap();
    let h = home.path();
    let result = optimize(h, &url, None, "sentiment");
    let run_id = result["mlflow_run_id"].as_str().unwrap().to_string();
    assert!(h.join("mlruns").is_dir());

    let (out, _) = ok(&promptopt(h, &url, None, &["runs", "list", "--json"]));
    let runs: Value = serde_json::from_str(&out).unwrap();
    assert_eq!(runs[0]["info"]["run_id"], run_id.as_str());
    assert_eq!(runs[0]["params"]["algorithm"], "bootstrapfewshot");
    assert_eq!(runs[0]["info"]["status"], "FINISHED");

    let (out, _) = ok(&promptopt(
        h,
        &url,
        None,
        &["runs", "list", "--filter", "params.algorithm = 'miprov2'"],
    ));
    assert_eq!(out.trim(), "No runs");
    let (out, _) = ok(&promptopt(
        h,
        &url,
        None,
        &[
            "runs",
            "best",
            "--experiment",
            "sentiment",
            "--metric",
            "val_score",
        ],
    ));
    assert!(out.contains(&run_id), "{out}");
    assert!(out.contains("bootstrapfewshot"), "{out}");

    let (out, _) = ok(&promptopt(h, &url, None, &["runs", "show", &run_id]));
    assert!(out.contains("val_score"), "{out}");
    assert!(out.contains("optimized_prompt.txt"), "{out}");
    assert!(out.contains("model/model.json"), "{out}");

    let (out, _) = ok(&promptopt(
        h,
        &url,
        None,
        &["runs", "artifact", &run_id, "optimized_prompt.txt"],
    ));
    assert_eq!(
        out.trim(),
        result["optimized_prompt"].as_str().unwrap().trim()
    );

    // Bad input: a clear error and a non-zero exit.
    let bad = promptopt(
        h,
        &url,
        None,
        &["runs", "list", "--filter", "metrics.val_score > 'high'"],
    );
    assert!(!bad.status.success());
    let err = String::from_utf8_lossy(&bad.stderr);
    assert!(err.contains("Invalid search filter"), "{err}");
    let missing = promptopt(h, &url, None, &["runs", "show", "0123abcd"]);
    assert!(!missing.status.success());
    assert!(String::from_utf8_lossy(&missing.stderr).contains("Run `0123abcd` not found"));
    let bad_uri = promptopt(h, &url, Some("ftp://user:pw@host"), &["runs", "list"]);
    assert!(!bad_uri.status.success());
    let err = String::from_utf8_lossy(&bad_uri.stderr);
    assert!(
        err.contains("Invalid tracking URI `ftp://host`") && !err.contains("pw"),
        "{err}"
    );

    // `tracking: false` and `DISABLE_MLFLOW=1` record nothing.
    let off = tempfile::tempdir().unwrap();
    let file = off.path().join("r.yaml");
    std::fs::write(&file, request("off") + "tracking: false\n").unwrap();
    let (out, _) = ok(&promptopt(
        off.path(),
        &url,
        None,
        &["optimize", file.to_str().unwrap(), "--json", "--no-cache"],
    ));
    let r: Value = serde_json::from_str(&out).unwrap();
    assert!(r["mlflow_run_id"].is_null());
    assert!(!off.path().join("mlruns").exists());

    assert_eq!(common::files_containing(h, CANARY), Vec::<String>::new());
}

#[test]
fn runs_are_recorded_on_the_server_with_their_model_version_and_aliases() {
    let Some(server_url) = std::env::var("PROMPTOPT_TEST_MLFLOW_URI")
        .ok()
        .filter(|u| !u.is_empty())
    else {
        assert!(
            std::env::var("PROMPTOPT_CI").is_err(),
            "PROMPTOPT_TEST_MLFLOW_URI must be set in CI (scripts/test.sh starts the server)"
        );
        return;
    };
    // Basic-auth credentials in the URI are the canary too: sent, never written.
    let with_credentials = server_url.replacen("http://", &format!("http://ci:{CANARY}@"), 1);
    let lm = lm();
    let url = lm.base_url();
    let home = tempfile::tempdir().unwrap();
    let h = home.path();
    let name = format!(
        "cli-{}",
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap()
            .as_nanos()
    );
    let result = optimize(h, &url, Some(&with_credentials), &name);
    let run_id = result["mlflow_run_id"].as_str().unwrap().to_string();
    let warnings = result["warnings"].to_string();
    assert!(!warnings.contains("MLflow"), "{warnings}");

    let rt = tokio::runtime::Runtime::new().unwrap();
    let client = MlflowClient::new(&server_url).unwrap();
    rt.block_on(async {
        let run = client.get_run(&run_id).await.unwrap();
        assert_eq!(run.params["algorithm"], "bootstrapfewshot");
        assert_eq!(run.params["dataset.validation.examples"], "2");
        assert_eq!(run.tags["promptopt.model_id"], format!("{name}@1.0.0"));
        assert!(run.metrics.contains_key("val_score"));
        let history = client.metric_history(&run_id, "trial_score").await.unwrap();
        assert!(!history.is_empty());
        let versions = client.model_versions(&name).await.unwrap();
        assert_eq!(versions.len(), 1);
        assert_eq!(versions[0].run_id, run_id);
        assert_eq!(versions[0].tags["promptopt.version"], "1.0.0");
        // Nothing the run wrote carries the key.
        for (k, v) in run.params.iter().chain(run.tags.iter()) {
            assert!(!v.contains(CANARY), "{k}");
        }
        for a in client.list_artifacts(&run_id).await.unwrap() {
            let bytes = client.download_artifact(&run_id, &a.path).await.unwrap();
            assert!(
                !String::from_utf8_lossy(&bytes).contains(CANARY),
                "{}",
                a.path
            );
        }
    });

    // Promoting mirrors the alias into MLflow's registry.
    ok(&promptopt(
        h,
        &url,
        Some(&server_url),
        &[
            "models",
            "promote",
            &format!("{name}@1.0.0"),
            "--alias",
            "production",
        ],
    ));
    rt.block_on(async {
        let versions = client.model_versions(&name).await.unwrap();
        assert_eq!(versions[0].aliases, ["production"]);
    });

    // The search verbs against the server.
    let (out, _) = ok(&promptopt(
        h,
        &url,
        Some(&server_url),
        &[
            "runs",
            "list",
            "--experiment",
            &name,
            "--filter",
            "params.algorithm = 'bootstrapfewshot' and metrics.val_score >= 0",
            "--order-by",
            "metrics.val_score DESC",
            "--json",
        ],
    ));
    let runs: Value = serde_json::from_str(&out).unwrap();
    assert_eq!(runs.as_array().unwrap().len(), 1);
    assert_eq!(runs[0]["info"]["run_id"], run_id.as_str());
    let (out, _) = ok(&promptopt(
        h,
        &url,
        Some(&server_url),
        &["runs", "artifact", &run_id, "request.json"],
    ));
    let request: Value = serde_json::from_str(&out).unwrap();
    assert_eq!(request["name"], name.as_str());

    // The same run is in the embedded store, which `runs sync` can replay: nothing is new.
    let (_, err) = ok(&promptopt(
        h,
        &url,
        None,
        &["runs", "sync", "--to", &server_url],
    ));
    assert!(err.contains("0 metric values"), "{err}");
    assert!(err.contains(&run_id), "{err}");
    assert_eq!(common::files_containing(h, CANARY), Vec::<String>::new());
}
