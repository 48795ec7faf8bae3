//! A canary API key planted in the environment of every process of a full run (optimize with
//! tracking, a job through the queue and its worker, serve, predictions, an A/B experiment with
//! feedback, a model server that refuses the key and quotes it back) appears nowhere the run
//! wrote: files under `PROMPTOPT_HOME` (registry, caches, tracking store, queue, server database,
//! spool), the MLflow run when a server is given, the server's log, and every command's output,
//! failures included.
#![allow(clippy::unwrap_used)]

mod common;

use std::path::Path;
use std::process::{Command, Output, Stdio};
use std::time::{Duration, Instant};

use promptopt_lm::testing::{FixedReplyServer, Reply};
use serde_json::{json, Value};

const CANARY: &str = "sk-canary-7c31e0d5a9b2f4";

/// Labels by keyword; a request for the model `refuse` is answered 401 quoting the key, as
/// OpenAI does.
fn lm() -> FixedReplyServer {
    FixedReplyServer::with_handler(|request| {
        if request.model == "refuse" {
            return Reply::error(
                401,
                format!(
                    "{{\"error\": {{\"message\": \"Incorrect API key provided: {CANARY}\", \"type\": \"invalid_request_error\", \"code\": \"invalid_api_key\"}}}}"
                ),
            );
        }
        let last = request.messages.last().map_or("", |m| m.content.as_str());
        Reply::text(if last.contains("bad") || last.contains("dull") {
            "negative"
        } else {
            "positive"
        })
    })
    .unwrap()
}

fn request(name: &str, model: &str) -> Value {
    json!({
        "name": name,
        "evaluation_metric": "exact_match",
        "algorithm": "bootstrapfewshot",
        "model": model,
        "input_keys": ["text"],
        "output_keys": ["label"],
        "algorithm_config": {"max_bootstrapped_demos": 1, "max_labeled_demos": 1},
        "training_examples": [
            {"text": "a good film", "label": "positive"},
            {"text": "a bad film", "label": "negative"},
            {"text": "lovely", "label": "positive"},
            {"text": "dull and long", "label": "negative"}
        ],
        "validation_examples": [
            {"text": "bad acting", "label": "negative"},
            {"text": "great fun", "label": "positive"}
        ]
    })
}

fn mlflow() -> Option<String> {
    std::env::var("PROMPTOPT_TEST_MLFLOW_URI")
        .ok()
        .filter(|u| !u.is_empty())
}

fn promptopt(home: &Path, lm_url: &str, args: &[&str]) -> Output {
    let mut command = Command::new(env!("CARGO_BIN_EXE_promptopt"));
    command
        .args(args)
        .env("PROMPTOPT_HOME", home)
        .env("OPENAI_BASE_URL", lm_url)
        .env("OPENAI_API_KEY", CANARY)
        .env("PROMPTOPT_LM_MAX_RETRIES", "0")
        .env_remove("DISABLE_MLFLOW")
        .env_remove("PROMPTOPT_QUEUE")
        .env_remove("PROMPTOPT_SERVER");
    match mlflow() {
        Some(uri) => command.env("MLFLOW_TRACKING_URI", uri),
        None => command.env_remove("MLFLOW_TRACKING_URI"),
    };
    command.output().unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_canary_key_is_written_nowhere_in_a_full_run() {
    let lm = lm();
    let url = lm.base_url();
    let home = tempfile::tempdir().unwrap();
    let h = home.path();
    let mut outputs = Vec::new();

    // 1. Optimize from the command line, tracked (the MLflow server when given, else the
    //    embedded store), with the response cache on.
    let file = h.join("canary.json");
    std::fs::write(&file, request("canary", "openai/test-model").to_string()).unwrap();
    let out = promptopt(h, &url, &["optimize", file.to_str().unwrap(), "--json"]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let result: Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(result["model_id"], "canary@1.0.0");
    outputs.push(out);

    // 2. A model server that refuses the key and quotes it: the failure names the problem, not
    //    the key, and nothing is saved.
    std::fs::write(&file, request("refused", "openai/refuse").to_string()).unwrap();
    let out = promptopt(h, &url, &["optimize", file.to_str().unwrap(), "--no-cache"]);
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr).into_owned();
    assert!(err.contains("401"), "{err}");
    outputs.push(out);

    // 3. The server with an in-process worker: a job through the queue, predictions, an A/B
    //    experiment between the two versions, feedback. Its log goes to a file outside the home.
    let logs = tempfile::tempdir().unwrap();
    let log_path = logs.path().join("serve.log");
    let log = std::fs::File::create(&log_path).unwrap();
    let mut served = common::spawn_serve(
        h,
        &url,
        "canary-admin",
        &["--workers", "1"],
        &[
            ("OPENAI_API_KEY", CANARY),
            ("PROMPTOPT_LOG", "debug"),
            ("RUST_LOG", "debug"),
        ],
        Stdio::from(log),
    );
    let base = served.url.clone();
    let client = reqwest::Client::new();
    let admin = "Bearer canary-admin";
    let submitted: Value = client
        .post(format!("{base}/v1/optimizations"))
        .header("authorization", admin)
        .json(&request("canary", "openai/test-model"))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let id = submitted["job_id"].as_str().unwrap().to_string();
    let started = Instant::now();
    let job = loop {
        let job: Value = client
            .get(format!("{base}/v1/jobs/{id}"))
            .header("authorization", admin)
            .send()
            .await
            .unwrap()
            .json()
            .await
            .unwrap();
        if job["state"] != "queued" && job["state"] != "running" {
            break job;
        }
        assert!(started.elapsed() < Duration::from_secs(120), "{job:#}");
        tokio::time::sleep(Duration::from_millis(200)).await;
    };
    assert_eq!(job["state"], "succeeded", "{job:#}");
    assert_eq!(job["model_id"], "canary@1.0.1");

    let created = client
        .post(format!("{base}/v1/experiments?start=true"))
        .header("authorization", admin)
        .json(&json!({
            "name": "canary-ab",
            "variants": {"control": "canary@1.0.0", "treatment": "canary@1.0.1"},
            "success_metric": "exact_match",
            "minimum_sample_size": 10
        }))
        .send()
        .await
        .unwrap();
    assert_eq!(created.status(), 201, "{}", created.text().await.unwrap());
    for i in 0..12 {
        let text = if i % 2 == 0 {
            "a bad day"
        } else {
            "a fine day"
        };
        let prediction: Value = client
            .post(format!("{base}/v1/models/canary/predict"))
            .header("authorization", admin)
            .json(&json!({"inputs": {"text": text}, "user_id": format!("user-{i}")}))
            .send()
            .await
            .unwrap()
            .json()
            .await
            .unwrap();
        assert_eq!(prediction["experiment"], "canary-ab", "{prediction:#}");
        let feedback = client
            .post(format!("{base}/v1/feedback"))
            .header("authorization", admin)
            .json(&json!({
                "prediction_id": prediction["prediction_id"],
                "expected_output": if i % 2 == 0 { "negative" } else { "positive" }
            }))
            .send()
            .await
            .unwrap();
        assert!(feedback.status().is_success());
    }
    Command::new("kill")
        .args(["-TERM", &served.child.id().to_string()])
        .status()
        .unwrap();
    let _ = served.child.wait();

    // Nothing written anywhere carries the key, and there was plenty written.
    let written = common::files_under(h).len();
    assert!(written > 10, "{written} files");
    assert_eq!(common::files_containing(h, CANARY), Vec::<String>::new());
    let server_log = std::fs::read_to_string(&log_path).unwrap();
    assert!(server_log.contains("request"), "{server_log}");
    assert!(
        !server_log.contains(CANARY),
        "the server's log: {server_log}"
    );
    for out in &outputs {
        for stream in [&out.stdout, &out.stderr] {
            let text = String::from_utf8_lossy(stream);
            assert!(!text.contains(CANARY), "{text}");
        }
    }
    if let Some(uri) = mlflow() {
        let run_id = result["mlflow_run_id"].as_str().unwrap();
        let run = reqwest::get(format!("{uri}/api/2.0/mlflow/runs/get?run_id={run_id}"))
            .await
            .unwrap()
            .text()
            .await
            .unwrap();
        assert!(run.contains(run_id), "{run}");
        assert!(!run.contains(CANARY), "{run}");
    }
}
