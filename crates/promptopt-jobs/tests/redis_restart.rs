//! Redis restarted mid-run: no job is lost and the queue reconnects. Its own test binary, since
//! restarting the server would disturb the other tests' connections.
#![allow(clippy::unwrap_used)]

use std::sync::Arc;
use std::time::Duration;

use promptopt_jobs::{JobSpec, Outcome, Priority, RedisQueue, SharedQueue};
use serde_json::json;

const LEASE: Duration = Duration::from_secs(30);

fn spec(name: &str) -> JobSpec {
    JobSpec::new(json!({"name": name}))
}

/// Redis restarted (from its append-only file) while jobs wait and one runs: nothing is lost, and
/// the queue reconnects by itself.
#[tokio::test]
async fn redis_restarted_mid_run_loses_no_job() {
    let (Ok(url), Ok(dir)) = (
        std::env::var("PROMPTOPT_TEST_REDIS_URL"),
        std::env::var("PROMPTOPT_TEST_REDIS_DIR"),
    ) else {
        assert!(
            std::env::var("PROMPTOPT_CI").is_err(),
            "PROMPTOPT_TEST_REDIS_URL and PROMPTOPT_TEST_REDIS_DIR must be set in CI"
        );
        #[allow(clippy::print_stderr)]
        {
            eprintln!(
                "note: PROMPTOPT_TEST_REDIS_URL or PROMPTOPT_TEST_REDIS_DIR is not set; skipped"
            );
        }
        return;
    };
    // Database 5 of the test server (its URL ends in a database number, or not).
    let base = url.trim_end_matches('/');
    let base = match base.rsplit_once('/') {
        Some((b, db)) if db.chars().all(|c| c.is_ascii_digit()) => b,
        _ => base,
    };
    let url = format!("{base}/5");
    let client = redis::Client::open(url.as_str()).unwrap();
    let mut con = client.get_multiplexed_async_connection().await.unwrap();
    redis::cmd("FLUSHDB")
        .query_async::<()>(&mut con)
        .await
        .unwrap();
    let q: SharedQueue = Arc::new(RedisQueue::connect(&url).await.unwrap());
    let mut ids = Vec::new();
    for i in 0..5 {
        ids.push(q.submit(&spec(&format!("p{i}"))).await.unwrap().job_id);
    }
    // One job waits out its backoff after a transient failure while the server restarts.
    std::env::set_var("PROMPTOPT_RETRY_BACKOFF_SCALE", "0.05");
    let flaky = q.claim("w", &Priority::ALL, LEASE).await.unwrap().unwrap();
    let failed = Outcome::Failed {
        error: "HTTP 503".into(),
        transient: true,
    };
    let waiting = q.finish(&flaky, failed).await.unwrap().unwrap();
    assert!(waiting.not_before.is_some());
    let running = q.claim("w", &Priority::ALL, LEASE).await.unwrap().unwrap();
    assert_ne!(running.job_id, flaky.job_id);
    let script = concat!(env!("CARGO_MANIFEST_DIR"), "/../../scripts/redis-server.sh");
    let status = std::process::Command::new(script)
        .args(["restart", &dir])
        .stdout(std::process::Stdio::null())
        .status()
        .unwrap();
    assert!(status.success());
    // The first commands after the restart may fail while the connection is re-established.
    let mut heartbeat = None;
    for _ in 0..50 {
        match q.heartbeat(&running, LEASE, None).await {
            Ok(hb) => {
                heartbeat = Some(hb);
                break;
            }
            Err(_) => tokio::time::sleep(Duration::from_millis(100)).await,
        }
    }
    assert!(!heartbeat.expect("the queue reconnects").lost);
    let mut done = vec![running.job_id.clone()];
    q.finish(
        &running,
        Outcome::Succeeded {
            result: json!({}),
            model_id: None,
        },
    )
    .await
    .unwrap()
    .unwrap();
    // The restart took longer than the backoff: the waiting job is due again.
    tokio::time::sleep(Duration::from_millis(200)).await;
    while let Some(claim) = q.claim("w", &Priority::ALL, LEASE).await.unwrap() {
        done.push(claim.job_id);
    }
    done.sort();
    ids.sort();
    assert_eq!(done, ids);
}
