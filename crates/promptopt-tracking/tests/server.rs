//! The tracker, the client and sync against a real MLflow server (started by `scripts/test.sh`,
//! URL in `PROMPTOPT_TEST_MLFLOW_URI`), including a server that goes away mid-run.
#![allow(clippy::unwrap_used)]

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

use promptopt_core::events::{Event, TrialKind};
use promptopt_optimize::{OptimizationRequest, OptimizationResult};
use promptopt_registry::Registry;
use promptopt_tracking::{
    sync_run, KeyValue, LocalStore, MlflowClient, RunQuery, Tracker, TrackingConfig, TrackingStore,
};
use tokio::io::copy_bidirectional;
use tokio::net::{TcpListener, TcpStream};

/// The test server, or `None` to skip (outside CI).
fn server() -> Option<String> {
    match std::env::var("PROMPTOPT_TEST_MLFLOW_URI") {
        Ok(url) if !url.is_empty() => Some(url),
        _ => {
            assert!(
                std::env::var("PROMPTOPT_CI").is_err(),
                "PROMPTOPT_TEST_MLFLOW_URI must be set in CI (scripts/test.sh starts the server)"
            );
            None
        }
    }
}

fn unique(prefix: &str) -> String {
    format!("{prefix}-{:08x}", rand_u32())
}

fn rand_u32() -> u32 {
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .subsec_nanos();
    nanos ^ std::process::id().rotate_left(16)
}

fn request(name: &str) -> OptimizationRequest {
    OptimizationRequest::from_yaml_str(&format!(
        r#"name: {name}
evaluation_metric: exact_match
algorithm: miprov2
model: openai/test-model
input_keys: [text]
output_keys: [label]
algorithm_config: {{num_candidates: 3, num_iterations: 4}}
training_examples:
  - {{text: "good", label: "positive"}}
  - {{text: "bad", label: "negative"}}
"#
    ))
    .unwrap()
}

/// A result as the pipeline returns it, with an id long enough to exceed MLflow's tag limit.
fn result(optimization_id: &str) -> OptimizationResult {
    let metrics = |score: f64| {
        serde_json::json!({
            "metric": "exact_match", "score": score, "raw_score": score, "accuracy": score,
            "examples": 2, "errors": 0, "latency_p50_ms": 10.0, "latency_p95_ms": 20.0,
            "cost_usd": 0.0, "cost_per_sample": 0.0, "lm_calls": 4, "tokens": 100
        })
    };
    serde_json::from_value(serde_json::json!({
        "optimization_id": optimization_id,
        "model_id": null,
        "baseline_metrics": metrics(0.5),
        "optimized_metrics": metrics(0.75),
        "improvement_percentage": 50.0,
        "optimized_prompt": "[system]\nClassify.",
        "optimized_config": {"predictors": {}},
        "algorithm_used": "miprov2",
        "iterations_completed": 4,
        "duration_seconds": 1.5,
        "total_cost_usd": null,
        "mlflow_run_id": null,
        "stop_reason": null,
        "warnings": [],
        "constraint_failures": [],
        "analytics": null,
        "trajectory": [],
        "datasets": {"train": {"examples": 2, "sha256": "ab"}}
    }))
    .unwrap()
}

fn trial(n: usize) -> Event {
    Event::TrialScored {
        trial: n,
        score: n as f64 / 10_000.0,
        best_so_far: n as f64 / 10_000.0,
        kind: TrialKind::Full,
    }
}

fn config(uri: &str, root: &std::path::Path, experiment: &str) -> TrackingConfig {
    let mut c = TrackingConfig::new(Some(uri), root).unwrap();
    c.experiment = Some(experiment.to_string());
    c.flush_interval = Duration::from_millis(50);
    c
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_tracked_run_reads_back_from_the_server() {
    let Some(url) = server() else { return };
    let home = tempfile::tempdir().unwrap();
    let experiment = unique("tracker");
    let mut c = config(&url, home.path(), &experiment);
    // A one-slot queue: almost every event spills to disk, none may be lost.
    c.queue_capacity = 1;
    let req = request("sentiment");
    let tracker = Tracker::start(c, &req).await.unwrap();
    let sink = tracker.sink();
    for n in 1..=3000 {
        sink.emit(&trial(n));
    }
    assert!(tracker.spilled() > 0, "the queue never filled");
    let long_id = "x".repeat(9000);
    let mut res = result(&long_id);
    let registry = Registry::new(home.path().join("registry"));
    tracker.finish(&req, &mut res, &registry).await;
    let run_id = res.mlflow_run_id.clone().unwrap();

    let client = MlflowClient::new(&url).unwrap();
    let run = client.get_run(&run_id).await.unwrap();
    assert_eq!(run.params["algorithm"], "miprov2");
    assert_eq!(run.params["config.num_candidates"], "3");
    assert_eq!(run.params["dataset.train.sha256"], "ab");
    assert_eq!(run.metrics["val_score"], 0.75);
    assert_eq!(run.metrics["baseline_score"], 0.5);
    assert_eq!(run.tags["promptopt.version"], env!("CARGO_PKG_VERSION"));
    let history = client.metric_history(&run_id, "trial_score").await.unwrap();
    assert_eq!(history.len(), 3000, "every trial, spilled or queued");
    let mut steps: Vec<i64> = history.iter().map(|p| p.step).collect();
    steps.sort_unstable();
    steps.dedup();
    assert_eq!(steps.len(), 3000);

    // The too-long tag went to an artifact, with a warning naming it.
    assert!(
        run.tags["promptopt.optimization_id"].starts_with("(see artifact"),
        "{:?}",
        run.tags
            .get("promptopt.optimization_id")
            .map(|t| &t[..40.min(t.len())])
    );
    assert!(res
        .warnings
        .iter()
        .any(|w| w.contains("`promptopt.optimization_id`")));
    let stored = client
        .download_artifact(&run_id, "long_values/tag.promptopt.optimization_id.txt")
        .await
        .unwrap();
    assert_eq!(stored.len(), 9000);
    let files: Vec<String> = client
        .list_artifacts(&run_id)
        .await
        .unwrap()
        .into_iter()
        .map(|a| a.path)
        .collect();
    for expected in [
        "request.json",
        "result.json",
        "optimized_prompt.txt",
        "trajectory.svg",
        "validation_results.jsonl",
        "candidates.json",
    ] {
        assert!(
            files.iter().any(|f| f == expected),
            "{expected} in {files:?}"
        );
    }

    // Search with MLflow's syntax, run by the server.
    let exp = client
        .experiment_by_name(&experiment)
        .await
        .unwrap()
        .unwrap();
    let found = client
        .search_runs(&RunQuery {
            experiment_ids: vec![exp.experiment_id],
            filter: Some("params.algorithm = 'miprov2' and metrics.val_score > 0.7".into()),
            order_by: vec!["metrics.val_score DESC".into()],
            max_results: Some(10),
        })
        .await
        .unwrap();
    assert_eq!(found.len(), 1);
    assert_eq!(found[0].info.run_id, run_id);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn mlflow_refusals_name_the_field() {
    let Some(url) = server() else { return };
    let client = MlflowClient::new(&url).unwrap();
    let exp = client
        .get_or_create_experiment(&unique("refusals"))
        .await
        .unwrap();
    let run = client.create_run(&exp, "r", 0, &[]).await.unwrap();
    // MLflow cuts long values silently (the tracker moves them to artifacts first, see above),
    // but refuses long keys.
    let err = client
        .log_batch(
            &run.run_id,
            &[],
            &[KeyValue::new("k".repeat(300), "v")],
            &[],
        )
        .await
        .unwrap_err();
    assert!(err.is_rejected(), "{err}");
    assert!(err.to_string().contains("log-batch"), "{err}");
    assert!(
        err.to_string().contains("INVALID_PARAMETER_VALUE") || err.to_string().contains("key"),
        "{err}"
    );

    // The tracker turns a refused experiment into a warning; the run stays in the local store.
    let home = tempfile::tempdir().unwrap();
    let req = request("refused");
    let long_name = "e".repeat(600);
    let tracker = Tracker::start(config(&url, home.path(), &long_name), &req)
        .await
        .unwrap();
    tracker.sink().emit(&trial(1));
    let mut res = result("opt-refused");
    tracker
        .finish(&req, &mut res, &Registry::new(home.path().join("registry")))
        .await;
    assert!(
        res.warnings
            .iter()
            .any(|w| w.contains("refused") && w.contains("experiments/")),
        "{:?}",
        res.warnings
    );
    let local = LocalStore::open(home.path().join("mlruns")).unwrap();
    let id = res.mlflow_run_id.clone().unwrap();
    assert_eq!(
        local.get_run(&id).await.unwrap().params["algorithm"],
        "miprov2"
    );
    let missing = client.get_run("0123456789abcdef0123456789abcdef").await;
    assert!(matches!(
        missing,
        Err(promptopt_tracking::TrackingError::RunNotFound(_))
    ));
}

/// A loopback proxy to the server that can be cut: then it refuses every connection.
async fn proxy(target: String) -> (String, Arc<AtomicBool>) {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let cut = Arc::new(AtomicBool::new(false));
    let flag = cut.clone();
    let target = target.trim_start_matches("http://").to_string();
    tokio::spawn(async move {
        while let Ok((mut inbound, _)) = listener.accept().await {
            if flag.load(Ordering::SeqCst) {
                drop(inbound);
                continue;
            }
            let target = target.clone();
            let flag = flag.clone();
            tokio::spawn(async move {
                if let Ok(mut outbound) = TcpStream::connect(&target).await {
                    // Keep-alive connections are also cut once the flag is set.
                    tokio::select! {
                        _ = copy_bidirectional(&mut inbound, &mut outbound) => {}
                        _ = async {
                            while !flag.load(Ordering::SeqCst) {
                                tokio::time::sleep(Duration::from_millis(10)).await;
                            }
                        } => {}
                    }
                }
            });
        }
    });
    (format!("http://{addr}"), cut)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_server_lost_mid_run_gets_the_whole_run_by_sync_once() {
    let Some(url) = server() else { return };
    let home = tempfile::tempdir().unwrap();
    let experiment = unique("outage");
    let (proxied, cut) = proxy(url.clone()).await;
    let req = request("outage");
    let tracker = Tracker::start(config(&proxied, home.path(), &experiment), &req)
        .await
        .unwrap();
    let sink = tracker.sink();
    for n in 1..=50 {
        sink.emit(&trial(n));
    }
    tokio::time::sleep(Duration::from_millis(300)).await;
    cut.store(true, Ordering::SeqCst);
    for n in 51..=100 {
        sink.emit(&trial(n));
    }
    tokio::time::sleep(Duration::from_millis(300)).await;
    let mut res = result("opt-outage");
    let registry = Registry::new(home.path().join("registry"));
    tracker.finish(&req, &mut res, &registry).await;

    // The optimization's result is complete, with a warning that says what to do.
    let warning = res
        .warnings
        .iter()
        .find(|w| w.contains("runs sync --to"))
        .unwrap_or_else(|| panic!("{:?}", res.warnings));
    assert!(warning.contains("unreachable"), "{warning}");
    let local_id = res.mlflow_run_id.clone().unwrap();
    let local = LocalStore::open(home.path().join("mlruns")).unwrap();
    assert_eq!(
        local
            .metric_history(&local_id, "trial_score")
            .await
            .unwrap()
            .len(),
        100
    );
    assert!(!local.get_run(&local_id).await.unwrap().tags["promptopt.sync_pending"].is_empty());

    // Replaying to the server: once sends what it missed, twice sends nothing.
    let client = MlflowClient::new(&url).unwrap();
    let first = sync_run(&local, &client, &local_id).await.unwrap();
    assert!(!first.created, "the run was created before the outage");
    assert!(first.metrics >= 50, "{first:?}");
    let second = sync_run(&local, &client, &local_id).await.unwrap();
    assert_eq!(second.remote_run_id, first.remote_run_id);
    assert_eq!((second.metrics, second.params, second.artifacts), (0, 0, 0));
    let history = client
        .metric_history(&first.remote_run_id, "trial_score")
        .await
        .unwrap();
    assert_eq!(history.len(), 100, "no value twice, none missing");
    let run = client.get_run(&first.remote_run_id).await.unwrap();
    assert_eq!(run.info.status, promptopt_tracking::RunStatus::Finished);
    assert_eq!(run.metrics["val_score"], 0.75);
    assert!(local.get_run(&local_id).await.unwrap().tags["promptopt.sync_pending"].is_empty());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_server_down_from_the_start_is_a_warning() {
    // A port nothing listens on.
    let port = {
        let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        l.local_addr().unwrap().port()
    };
    let home = tempfile::tempdir().unwrap();
    let req = request("down");
    let tracker = Tracker::start(
        config(&format!("http://127.0.0.1:{port}"), home.path(), "down"),
        &req,
    )
    .await
    .unwrap();
    tracker.sink().emit(&trial(1));
    let mut res = result("opt-down");
    tracker
        .finish(&req, &mut res, &Registry::new(home.path().join("registry")))
        .await;
    let local = LocalStore::open(home.path().join("mlruns")).unwrap();
    let id = res.mlflow_run_id.clone().unwrap();
    assert_eq!(
        local.get_run(&id).await.unwrap().metrics["trial_score"],
        1e-4
    );
    assert!(
        res.warnings
            .iter()
            .any(|w| w.contains("unreachable") && w.contains(&format!("127.0.0.1:{port}"))),
        "{:?}",
        res.warnings
    );
}
