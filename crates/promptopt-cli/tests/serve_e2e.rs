//! `promptopt serve` end to end, as a newcomer runs it: the real binary on a free loopback port
//! with the embedded queue and an in-process worker, the fake model server behind it. An
//! optimization submitted over HTTP is followed on its event stream to the end, the saved model
//! predicts, is promoted and predicts again by alias; SIGTERM drains a request in flight.
#![allow(clippy::unwrap_used)]

mod common;

use std::io::{BufRead, BufReader};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use promptopt_lm::testing::{FixedReplyServer, Reply};
use serde_json::{json, Value};

/// The fake model; `slow` is set when a request asking for a slow answer arrives.
fn fake_lm(slow: Arc<AtomicBool>) -> FixedReplyServer {
    FixedReplyServer::with_handler(move |request| {
        let last = request.messages.last().map_or("", |m| m.content.as_str());
        let label = if last.contains("bad") || last.contains("awful") || last.contains("dull") {
            "negative"
        } else {
            "positive"
        };
        let delay = if last.contains("slow") {
            slow.store(true, Ordering::SeqCst);
            1500
        } else {
            0
        };
        Reply::text(label).after(Duration::from_millis(delay))
    })
    .unwrap()
}

/// Starts the server with one in-process worker; its log is piped (read at the end).
fn serve(home: &std::path::Path, lm: &FixedReplyServer) -> common::ServeProcess {
    common::spawn_serve(
        home,
        &lm.base_url(),
        "e2e-admin,e2e-user:predict",
        &["--workers", "1"],
        &[],
        Stdio::piped(),
    )
}

fn request_body() -> Value {
    json!({
        "name": "e2e",
        "evaluation_metric": "exact_match",
        "algorithm": "bootstrapfewshot_random_search",
        "model": "openai/test-model",
        "input_keys": ["text"],
        "output_keys": ["label"],
        "algorithm_config": {"max_bootstrapped_demos": 1, "max_labeled_demos": 1, "num_candidate_programs": 2},
        "training_examples": [
            {"text": "a good film", "label": "positive"},
            {"text": "a bad film", "label": "negative"},
            {"text": "lovely", "label": "positive"},
            {"text": "dull and long", "label": "negative"}
        ],
        "validation_examples": [
            {"text": "awful acting", "label": "negative"},
            {"text": "great fun", "label": "positive"}
        ]
    })
}

fn wait_exit(child: &mut Child, within: Duration) -> Option<std::process::ExitStatus> {
    let started = Instant::now();
    while started.elapsed() < within {
        if let Some(status) = child.try_wait().unwrap() {
            return Some(status);
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    None
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn optimize_follow_predict_promote_over_http() {
    let slow_arrived = Arc::new(AtomicBool::new(false));
    let lm = fake_lm(Arc::clone(&slow_arrived));
    let home = tempfile::tempdir().unwrap();
    let mut served = serve(home.path(), &lm);
    let url = served.url.clone();
    let child = &mut served.child;
    let client = reqwest::Client::new();
    let admin = "Bearer e2e-admin";

    // Submit over HTTP.
    let response = client
        .post(format!("{url}/v1/optimizations?priority=high"))
        .header("authorization", admin)
        .json(&request_body())
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 201);
    let job: Value = response.json().await.unwrap();
    let id = job["job_id"].as_str().unwrap().to_string();
    assert_eq!(job["state"], "queued");

    // Follow the event stream to its end.
    let stream = tokio::time::timeout(
        Duration::from_secs(120),
        client
            .get(format!("{url}/v1/jobs/{id}/events"))
            .header("authorization", admin)
            .send(),
    )
    .await
    .unwrap()
    .unwrap();
    assert_eq!(stream.status(), 200);
    let text = tokio::time::timeout(Duration::from_secs(120), stream.text())
        .await
        .unwrap()
        .unwrap();
    assert!(text.contains("event: stage_started"), "{text}");
    assert!(text.contains("event: trial_scored"), "{text}");
    let end = text
        .split("event: end\ndata: ")
        .nth(1)
        .and_then(|rest| rest.lines().next())
        .unwrap_or_else(|| panic!("no end event: {text}"));
    let end: Value = serde_json::from_str(end).unwrap();
    assert_eq!(end["state"], "succeeded", "{end:#}");
    assert_eq!(end["model_id"], "e2e@1.0.0");

    let record: Value = client
        .get(format!("{url}/v1/jobs/{id}"))
        .header("authorization", admin)
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(record, end);
    let result: Value = client
        .get(format!("{url}/v1/jobs/{id}/result"))
        .header("authorization", admin)
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(result["model_id"], "e2e@1.0.0", "{result:#}");
    assert!(
        result["optimized_metrics"]["score"].as_f64().is_some(),
        "{result:#}"
    );

    // Predict with the saved model, promote it, predict by alias.
    let predict = |version: &'static str, text: &'static str| {
        client
            .post(format!("{url}/v1/models/e2e/predict?version={version}"))
            .header("authorization", "Bearer e2e-user")
            .json(&json!({"inputs": {"text": text}}))
            .send()
    };
    let first: Value = predict("latest", "a bad film")
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(first["outputs"]["label"], "negative", "{first:#}");
    assert_eq!(first["model_id"], "e2e@1.0.0");
    let response = predict("production", "fine").await.unwrap();
    assert_eq!(response.status(), 404);
    let promoted = client
        .put(format!("{url}/v1/models/e2e/aliases/production"))
        .header("authorization", admin)
        .json(&json!({"version": "1.0.0"}))
        .send()
        .await
        .unwrap();
    assert_eq!(promoted.status(), 200);
    let second: Value = predict("production", "a lovely film")
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(second["outputs"]["label"], "positive", "{second:#}");
    assert_eq!(second["model_id"], "e2e@1.0.0");
    assert_ne!(first["prediction_id"], second["prediction_id"]);

    let metrics = client
        .get(format!("{url}/metrics"))
        .header("authorization", admin)
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    assert!(
        metrics.contains("promptopt_predictions_total{model=\"e2e\",version=\"1.0.0\"} 2"),
        "{metrics}"
    );
    assert!(
        metrics.contains("promptopt_queue_jobs{state=\"succeeded\"} 1"),
        "{metrics}"
    );

    // SIGTERM while a prediction is in flight: it is answered, then the server exits.
    let slow = tokio::spawn(predict("production", "slow but fine"));
    let waiting = Instant::now();
    while !slow_arrived.load(Ordering::SeqCst) {
        assert!(
            waiting.elapsed() < Duration::from_secs(30),
            "the slow call never arrived"
        );
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    Command::new("kill")
        .args(["-TERM", &child.id().to_string()])
        .status()
        .unwrap();
    let slow = slow.await.unwrap().unwrap();
    assert_eq!(slow.status(), 200);
    let status = wait_exit(child, Duration::from_secs(15));
    if status.is_none() {
        let _ = child.kill();
    }
    assert!(status.is_some_and(|s| s.success()), "{status:?}");
    let mut log = String::new();
    std::io::Read::read_to_string(&mut child.stderr.take().unwrap(), &mut log).unwrap();
    assert!(log.contains("request_id="), "{log}");
    assert!(
        !log.contains("e2e-admin") && !log.contains("sk-test"),
        "{log}"
    );
}

#[test]
fn no_token_and_no_auth_off_loopback_are_refused() {
    let home = tempfile::tempdir().unwrap();
    let run = |args: &[&str], tokens: Option<&str>| {
        let mut command = Command::new(env!("CARGO_BIN_EXE_promptopt"));
        command
            .arg("serve")
            .args(args)
            .env("PROMPTOPT_HOME", home.path());
        match tokens {
            Some(t) => command.env("PROMPTOPT_API_TOKENS", t),
            None => command.env_remove("PROMPTOPT_API_TOKENS"),
        };
        command.output().unwrap()
    };
    let out = run(&["--bind", "127.0.0.1:0"], None);
    assert_eq!(out.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&out.stderr).contains("No API token is configured"));
    let out = run(&["--bind", "0.0.0.0:0", "--no-auth"], None);
    assert_eq!(out.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&out.stderr).contains("only on a loopback address"));
    let out = run(&["--bind", "127.0.0.1:0"], Some("s3cret:superuser"));
    assert_eq!(out.status.code(), Some(2));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("unknown scope `superuser`"), "{err}");
    assert!(!err.contains("s3cret"), "{err}");
    let out = run(&["--bind", "not-an-address"], Some("t"));
    assert_eq!(out.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&out.stderr).contains("`not-an-address`"));
}

#[tokio::test]
async fn access_logs_are_json_lines_with_request_ids_when_asked() {
    let home = tempfile::tempdir().unwrap();
    let mut child = Command::new(env!("CARGO_BIN_EXE_promptopt"))
        .args(["serve", "--bind", "127.0.0.1:0", "--no-auth"])
        .env("PROMPTOPT_HOME", home.path())
        .env("PROMPTOPT_LOG_FORMAT", "json")
        .env_remove("PROMPTOPT_QUEUE")
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let mut line = String::new();
    BufReader::new(child.stdout.take().unwrap())
        .read_line(&mut line)
        .unwrap();
    let url = line
        .trim()
        .rsplit_once("listening on ")
        .unwrap()
        .1
        .to_string();
    let response = reqwest::Client::new()
        .get(format!("{url}/healthz"))
        .header("x-request-id", "client-42")
        .send()
        .await
        .unwrap();
    assert_eq!(response.headers()["x-request-id"], "client-42");
    Command::new("kill")
        .args(["-TERM", &child.id().to_string()])
        .status()
        .unwrap();
    assert!(wait_exit(&mut child, Duration::from_secs(15)).is_some_and(|s| s.success()));
    let mut log = String::new();
    std::io::Read::read_to_string(&mut child.stderr.take().unwrap(), &mut log).unwrap();
    let access: Vec<Value> = log
        .lines()
        .map(|l| serde_json::from_str::<Value>(l).unwrap_or_else(|e| panic!("{e}: {l}")))
        .filter(|v| v["target"] == "promptopt_server::access")
        .collect();
    assert_eq!(access.len(), 1, "{log}");
    assert_eq!(access[0]["fields"]["request_id"], "client-42");
    assert_eq!(access[0]["fields"]["status"], 200);
    assert_eq!(access[0]["fields"]["path"], "/healthz");
}
