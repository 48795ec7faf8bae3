//! `promptopt experiments` against the real `promptopt serve`: create and start from a file,
//! predictions split by user, outcomes, status, stop; bad files refused before any request.
#![allow(clippy::unwrap_used)]

mod common;

use std::process::{Command, Output, Stdio};
use std::time::{Duration, Instant};

use promptopt_lm::testing::{FixedReplyServer, Reply};
use promptopt_registry::Registry;
use serde_json::{json, Value};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn create_split_measure_and_stop_from_the_command_line() {
    let lm = FixedReplyServer::with_handler(|_| Reply::text("positive")).unwrap();
    let home = tempfile::tempdir().unwrap();
    let registry = Registry::new(home.path());
    common::save_classifier(&registry, "tickets", "Classify.");
    common::save_classifier(&registry, "tickets", "Classify, carefully.");
    let mut served =
        common::spawn_serve(home.path(), &lm.base_url(), "adm", &[], &[], Stdio::null());
    let url = served.url.clone();
    let cli = |args: &[&str]| -> Output {
        Command::new(env!("CARGO_BIN_EXE_promptopt"))
            .args(args)
            .args(["--server", &url, "--token", "adm"])
            .env("PROMPTOPT_HOME", home.path())
            .output()
            .unwrap()
    };
    let file = home.path().join("ab.yaml");
    std::fs::write(
        &file,
        "name: ab\nvariants: {control: tickets@1.0.0, treatment: tickets@1.0.1}\nsuccess_metric: exact_match\nminimum_sample_size: 50\n",
    )
    .unwrap();
    let out = cli(&["experiments", "create", file.to_str().unwrap(), "--start"]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(String::from_utf8_lossy(&out.stdout).contains("Created experiment `ab`"));

    let client = reqwest::Client::new();
    for u in 0..60 {
        let p: Value = client
            .post(format!("{url}/v1/models/tickets/predict"))
            .bearer_auth("adm")
            .json(&json!({"inputs": {"text": "fine"}, "user_id": format!("u{u}")}))
            .send()
            .await
            .unwrap()
            .json()
            .await
            .unwrap();
        assert_eq!(p["experiment"], "ab", "{p}");
        let f = client
            .post(format!("{url}/v1/feedback"))
            .bearer_auth("adm")
            .json(&json!({"prediction_id": p["prediction_id"], "expected_output": "positive"}))
            .send()
            .await
            .unwrap();
        assert_eq!(f.status(), 200);
    }
    let out = cli(&["experiments", "status", "ab", "--json"]);
    let view: Value = serde_json::from_slice(&out.stdout).unwrap();
    let units: u64 = view["status"]["variants"]
        .as_array()
        .unwrap()
        .iter()
        .map(|v| v["units"].as_u64().unwrap())
        .sum();
    assert_eq!(units, 60, "{view:#}");
    let out = cli(&["experiments", "status", "ab"]);
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(text.contains("treatment vs control"), "{text}");
    assert!(text.contains("decision:"), "{text}");
    let out = cli(&["experiments", "list"]);
    assert!(String::from_utf8_lossy(&out.stdout).contains("ab "));
    let out = cli(&["experiments", "stop", "ab"]);
    assert!(String::from_utf8_lossy(&out.stdout).contains("is stopped"));
    let out = cli(&["experiments", "promote", "ab"]);
    assert_eq!(out.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&out.stderr).contains("no winner"));

    // A bad file is refused before any request, naming the field.
    std::fs::write(&file, "name: bad\nvariants: {control: tickets@1.0.0}\n").unwrap();
    let out = cli(&["experiments", "create", file.to_str().unwrap()]);
    assert_eq!(out.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&out.stderr).contains("`variants`"));

    let _ = Command::new("kill")
        .args(["-TERM", &served.child.id().to_string()])
        .status();
    let started = Instant::now();
    while served.child.try_wait().unwrap().is_none() && started.elapsed() < Duration::from_secs(10)
    {
        std::thread::sleep(Duration::from_millis(50));
    }
    let _ = served.child.kill();
}
