//! `promptopt serve` killed with `kill -9` under load: predictions it acknowledged are in the
//! prediction log but for the ones still queued in memory (at most the queue plus one batch),
//! and an alias moved back and forth while it died points at one whole version when the server
//! comes back.
#![allow(clippy::unwrap_used)]

mod common;

use std::path::Path;
use std::process::{Command, Stdio};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use promptopt_lm::testing::{FixedReplyServer, Reply};
use promptopt_registry::Registry;
use serde_json::{json, Value};

/// The prediction log's in-memory queue plus one batch being written: what a crash may lose.
const LOSS_BOUND: u64 = 65_536 + 512;

/// Rows in the server database's prediction log, read with Python's `sqlite3`.
fn logged(home: &Path) -> u64 {
    let db = home.join("server.sqlite");
    let out = Command::new("python3")
        .args([
            "-c",
            "import sqlite3, sys; print(sqlite3.connect(sys.argv[1]).execute('select count(*) from predictions').fetchone()[0])",
        ])
        .arg(&db)
        .output()
        .unwrap();
    assert!(out.status.success(), "{out:?}");
    String::from_utf8_lossy(&out.stdout).trim().parse().unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_server_killed_under_load_loses_no_acknowledged_prediction_beyond_its_queue() {
    let lm = FixedReplyServer::with_handler(|_| Reply::text("positive")).unwrap();
    let home = tempfile::tempdir().unwrap();
    let registry = Registry::new(home.path());
    common::save_classifier(&registry, "kept", "Classify.");
    common::save_classifier(&registry, "kept", "Classify, carefully.");
    let served = common::spawn_serve(home.path(), &lm.base_url(), "adm", &[], &[], Stdio::null());
    let url = served.url.clone();
    let client = reqwest::Client::new();
    let put = client
        .put(format!("{url}/v1/models/kept/aliases/production"))
        .header("authorization", "Bearer adm")
        .json(&json!({"version": "1.0.0"}))
        .send()
        .await
        .unwrap();
    assert_eq!(put.status(), 200);

    // Eight clients predicting and one moving the alias back and forth, until the kill.
    let acknowledged = Arc::new(AtomicU64::new(0));
    let stop = Arc::new(AtomicBool::new(false));
    let mut tasks = Vec::new();
    for c in 0..8 {
        let (client, url) = (client.clone(), url.clone());
        let (acknowledged, stop) = (Arc::clone(&acknowledged), Arc::clone(&stop));
        tasks.push(tokio::spawn(async move {
            let mut i = 0;
            while !stop.load(Ordering::SeqCst) {
                i += 1;
                let sent = client
                    .post(format!("{url}/v1/models/kept/predict?version=production"))
                    .header("authorization", "Bearer adm")
                    .json(&json!({"inputs": {"text": format!("client {c} review {i}")}}))
                    .send()
                    .await;
                match sent {
                    Ok(r) if r.status() == 200 => {
                        acknowledged.fetch_add(1, Ordering::SeqCst);
                    }
                    Ok(r) => panic!("a prediction failed before the kill: {}", r.status()),
                    Err(_) => break,
                }
            }
        }));
    }
    {
        let (client, url, stop) = (client.clone(), url.clone(), Arc::clone(&stop));
        tasks.push(tokio::spawn(async move {
            let mut version = 0;
            while !stop.load(Ordering::SeqCst) {
                version = 1 - version;
                let moved = client
                    .put(format!("{url}/v1/models/kept/aliases/production"))
                    .header("authorization", "Bearer adm")
                    .json(&json!({"version": format!("1.0.{version}")}))
                    .send()
                    .await;
                if moved.is_err() {
                    break;
                }
            }
        }));
    }
    tokio::time::sleep(Duration::from_millis(1500)).await;
    let before_kill = acknowledged.load(Ordering::SeqCst);
    assert!(
        before_kill > 100,
        "only {before_kill} predictions before the kill"
    );
    Command::new("kill")
        .args(["-KILL", &served.child.id().to_string()])
        .status()
        .unwrap();
    stop.store(true, Ordering::SeqCst);
    for task in tasks {
        task.await.unwrap();
    }
    drop(served);
    let acknowledged = acknowledged.load(Ordering::SeqCst);
    let rows = logged(home.path());
    assert!(
        rows <= acknowledged,
        "{rows} rows for {acknowledged} predictions"
    );
    assert!(
        acknowledged - rows <= LOSS_BOUND,
        "{} of {acknowledged} acknowledged predictions lost",
        acknowledged - rows
    );

    // The alias points at one of the two whole versions, and the server starts and predicts.
    let alias = Command::new(env!("CARGO_BIN_EXE_promptopt"))
        .args(["models", "show", "kept@production"])
        .env("PROMPTOPT_HOME", home.path())
        .output()
        .unwrap();
    assert!(alias.status.success(), "{alias:?}");
    let shown: Value = serde_json::from_slice(&alias.stdout).unwrap();
    let version = shown["version"].as_str().unwrap_or_default().to_string();
    assert!(version == "1.0.0" || version == "1.0.1", "{shown:#}");
    let again = common::spawn_serve(home.path(), &lm.base_url(), "adm", &[], &[], Stdio::null());
    let r = client
        .post(format!(
            "{}/v1/models/kept/predict?version=production",
            again.url
        ))
        .header("authorization", "Bearer adm")
        .json(&json!({"inputs": {"text": "after the crash"}}))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    let body: Value = r.json().await.unwrap();
    assert_eq!(body["model_id"], format!("kept@{version}"));
}
