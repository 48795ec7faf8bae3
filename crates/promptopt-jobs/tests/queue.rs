//! The queue's semantics, the same tests on both backends: the embedded SQLite queue, and Redis at
//! `PROMPTOPT_TEST_REDIS_URL` (started by `scripts/test.sh`; each test on its own database number).
#![allow(clippy::unwrap_used)]

use std::sync::Arc;
use std::time::Duration;

use promptopt_jobs::{
    claim_order, JobSpec, JobState, Outcome, Priority, Progress, RedisQueue, SharedQueue,
    SqliteQueue,
};
use serde_json::json;

const LEASE: Duration = Duration::from_secs(30);

fn spec(name: &str, priority: Priority) -> JobSpec {
    let mut spec = JobSpec::new(json!({"name": name}));
    spec.priority = priority;
    spec
}

fn redis_url(db: u32) -> Option<String> {
    match std::env::var("PROMPTOPT_TEST_REDIS_URL") {
        Ok(url) => {
            let base = url.trim_end_matches('/');
            let base = match base.rsplit_once('/') {
                Some((b, last)) if last.chars().all(|c| c.is_ascii_digit()) => b.to_string(),
                _ => base.to_string(),
            };
            Some(format!("{base}/{db}"))
        }
        Err(_) => {
            assert!(
                std::env::var("PROMPTOPT_CI").is_err(),
                "PROMPTOPT_TEST_REDIS_URL must be set in CI (scripts/test.sh starts Redis)"
            );
            #[allow(clippy::print_stderr)]
            {
                eprintln!(
                    "note: PROMPTOPT_TEST_REDIS_URL is not set; the Redis variant is skipped"
                );
            }
            None
        }
    }
}

async fn redis(db: u32) -> Option<SharedQueue> {
    let url = redis_url(db)?;
    let client = redis::Client::open(url.as_str()).unwrap();
    let mut con = client.get_multiplexed_async_connection().await.unwrap();
    redis::cmd("FLUSHDB")
        .query_async::<()>(&mut con)
        .await
        .unwrap();
    Some(Arc::new(RedisQueue::connect(&url).await.unwrap()))
}

fn sqlite(dir: &tempfile::TempDir) -> SharedQueue {
    Arc::new(SqliteQueue::open(dir.path().join("queue.sqlite")).unwrap())
}

/// Runs `test` against the embedded queue and, when available, Redis database `db`.
macro_rules! on_both {
    ($db:expr, $test:ident) => {{
        let dir = tempfile::tempdir().unwrap();
        $test(
            sqlite(&dir),
            Backend::Sqlite(dir.path().join("queue.sqlite")),
        )
        .await;
        if let Some(queue) = redis($db).await {
            $test(queue, Backend::Redis(redis_url($db).unwrap())).await;
        }
    }};
}

/// Which backend a test runs on, for the tests that reach under the queue.
enum Backend {
    Sqlite(std::path::PathBuf),
    Redis(String),
}

async fn basics(q: SharedQueue, _: Backend) {
    let a = q.submit(&spec("a", Priority::Normal)).await.unwrap();
    let b = q.submit(&spec("b", Priority::Low)).await.unwrap();
    let mut stored = q.get(&a.job_id).await.unwrap();
    // Times come back from JSON within a unit in the last place (serde_json parses floats fast,
    // not exactly).
    assert!((stored.created_at - a.created_at).abs() < 1e-6);
    stored.created_at = a.created_at;
    assert_eq!(stored, a);
    assert_eq!(
        q.spec(&b.job_id).await.unwrap().request,
        json!({"name": "b"})
    );
    let listed = q.list(None, 10).await.unwrap();
    assert_eq!(
        listed.iter().map(|r| r.job_id.clone()).collect::<Vec<_>>(),
        vec![b.job_id.clone(), a.job_id.clone()]
    );
    assert_eq!(q.counts().await.unwrap()[&JobState::Queued], 2);
    assert!(q.result(&a.job_id).await.unwrap().is_none());
    let missing = q.get("job-0000000000000000").await.unwrap_err().to_string();
    assert_eq!(missing, "No job `job-0000000000000000` in the queue");
    let mut bad = spec("c", Priority::High);
    bad.max_attempts = 0;
    assert!(q.submit(&bad).await.is_err());
    assert_eq!(q.list(None, 10).await.unwrap().len(), 2);
}

#[tokio::test]
async fn submit_get_list_count() {
    on_both!(7, basics);
}

async fn priorities(q: SharedQueue, _: Backend) {
    for (name, p) in [
        ("l", Priority::Low),
        ("n", Priority::Normal),
        ("h", Priority::High),
    ] {
        q.submit(&spec(name, p)).await.unwrap();
    }
    let mut names = Vec::new();
    while let Some(claim) = q.claim("w", &Priority::ALL, LEASE).await.unwrap() {
        names.push(claim.record.name.clone().unwrap());
    }
    assert_eq!(names, ["h", "n", "l"]);
    // The fairness turn looks at `low` first.
    q.submit(&spec("h2", Priority::High)).await.unwrap();
    q.submit(&spec("l2", Priority::Low)).await.unwrap();
    let order = claim_order(&Priority::ALL, promptopt_jobs::FAIRNESS_EVERY - 1);
    let claim = q.claim("w", &order, LEASE).await.unwrap().unwrap();
    assert_eq!(claim.record.name.as_deref(), Some("l2"));
    // A worker taking only `high` leaves the others.
    q.submit(&spec("n2", Priority::Normal)).await.unwrap();
    let claim = q
        .claim("w", &[Priority::High], LEASE)
        .await
        .unwrap()
        .unwrap();
    assert_eq!(claim.record.name.as_deref(), Some("h2"));
    assert!(q
        .claim("w", &[Priority::High], LEASE)
        .await
        .unwrap()
        .is_none());
}

#[tokio::test]
async fn most_urgent_first_with_a_fairness_turn() {
    on_both!(8, priorities);
}

async fn reclaim(q: SharedQueue, _: Backend) {
    let job = q.submit(&spec("r", Priority::Normal)).await.unwrap();
    let short = Duration::from_millis(300);
    let first = q
        .claim("dead-worker", &Priority::ALL, short)
        .await
        .unwrap()
        .unwrap();
    assert!(!first.resumed);
    assert!(q
        .claim("other", &Priority::ALL, short)
        .await
        .unwrap()
        .is_none());
    tokio::time::sleep(Duration::from_millis(700)).await;
    let second = q
        .claim("other", &Priority::ALL, LEASE)
        .await
        .unwrap()
        .unwrap();
    assert_eq!(second.job_id, job.job_id);
    assert!(second.resumed);
    assert_eq!(second.record.attempts, 2);
    assert_eq!(second.record.worker.as_deref(), Some("other"));
    // The first worker's lease is gone: nothing it writes counts.
    assert!(q.heartbeat(&first, LEASE, None).await.unwrap().lost);
    assert!(!q.begin_finish(&first).await.unwrap());
    let late = Outcome::Succeeded {
        result: json!({"optimization_id": "opt-first"}),
        model_id: Some("r@1.0.0".into()),
    };
    assert!(q.finish(&first, late).await.unwrap().is_none());
    // The second finishes once.
    let hb = q
        .heartbeat(
            &second,
            LEASE,
            Some(&Progress {
                stage: "optimize".into(),
                trial: 3,
                ..Progress::default()
            }),
        )
        .await
        .unwrap();
    assert!(!hb.lost && !hb.cancel_requested);
    assert_eq!(q.get(&job.job_id).await.unwrap().progress.unwrap().trial, 3);
    assert!(q.begin_finish(&second).await.unwrap());
    assert!(!q.begin_finish(&second).await.unwrap(), "only once");
    let done = Outcome::Succeeded {
        result: json!({"optimization_id": "opt-second"}),
        model_id: Some("r@1.0.0".into()),
    };
    let record = q.finish(&second, done.clone()).await.unwrap().unwrap();
    assert_eq!(record.state, JobState::Succeeded);
    assert_eq!(record.optimization_id.as_deref(), Some("opt-second"));
    assert!(
        q.finish(&second, done).await.unwrap().is_none(),
        "finished once"
    );
    assert_eq!(
        q.result(&job.job_id).await.unwrap().unwrap()["optimization_id"],
        "opt-second"
    );
    assert!(q.claim("w", &Priority::ALL, short).await.unwrap().is_none());
    // A job whose workers keep dying ends dead after its last attempt.
    let mut one = spec("one-try", Priority::Normal);
    one.max_attempts = 1;
    let job = q.submit(&one).await.unwrap();
    q.claim("dies", &Priority::ALL, short)
        .await
        .unwrap()
        .unwrap();
    tokio::time::sleep(Duration::from_millis(700)).await;
    assert!(q.claim("w", &Priority::ALL, LEASE).await.unwrap().is_none());
    let dead = q.get(&job.job_id).await.unwrap();
    assert_eq!(dead.state, JobState::Dead);
    assert!(dead.error.unwrap().contains("stopped responding"));
}

#[tokio::test]
async fn an_expired_lease_is_taken_over_and_the_old_holder_cannot_finish() {
    on_both!(9, reclaim);
}

async fn racing_finishers(q: SharedQueue, _: Backend) {
    q.submit(&spec("race", Priority::Normal)).await.unwrap();
    let claim = q.claim("w", &Priority::ALL, LEASE).await.unwrap().unwrap();
    let (a, b) = tokio::join!(q.begin_finish(&claim), q.begin_finish(&claim));
    assert!(a.unwrap() ^ b.unwrap(), "exactly one wins");
}

#[tokio::test]
async fn exactly_one_of_two_racing_finishers_wins() {
    on_both!(10, racing_finishers);
}

async fn failures(q: SharedQueue, _: Backend) {
    let mut s = spec("flaky", Priority::Normal);
    s.max_attempts = 2;
    let job = q.submit(&s).await.unwrap();
    let claim = q.claim("w", &Priority::ALL, LEASE).await.unwrap().unwrap();
    let transient = Outcome::Failed {
        error: "openai answered HTTP 503".into(),
        transient: true,
    };
    let record = q.finish(&claim, transient.clone()).await.unwrap().unwrap();
    assert_eq!(record.state, JobState::Queued);
    let wait = record.not_before.unwrap() - promptopt_jobs::now();
    assert!(wait > 0.5, "backoff {wait}");
    assert!(
        q.claim("w", &Priority::ALL, LEASE).await.unwrap().is_none(),
        "still backing off"
    );
    tokio::time::sleep(Duration::from_secs_f64(wait + 0.2)).await;
    let claim = q.claim("w", &Priority::ALL, LEASE).await.unwrap().unwrap();
    assert_eq!((claim.record.attempts, claim.resumed), (2, true));
    let record = q.finish(&claim, transient).await.unwrap().unwrap();
    assert_eq!(record.state, JobState::Dead);
    assert!(record.error.unwrap().contains("503"));
    assert!(record.finished_at.is_some());
    // A permanent failure ends `failed` at once; `retry` starts over.
    let other = q.submit(&spec("broken", Priority::Normal)).await.unwrap();
    let claim = q.claim("w", &Priority::ALL, LEASE).await.unwrap().unwrap();
    let permanent = Outcome::Failed {
        error: "Unknown metric".into(),
        transient: false,
    };
    let record = q.finish(&claim, permanent).await.unwrap().unwrap();
    assert_eq!((record.state, record.attempts), (JobState::Failed, 1));
    for id in [&job.job_id, &other.job_id] {
        let again = q.retry(id).await.unwrap();
        assert_eq!((again.state, again.attempts), (JobState::Queued, 0));
    }
    let error = q.retry(&other.job_id).await.unwrap_err().to_string();
    assert!(error.contains("is queued"), "{error}");
    assert!(q.claim("w", &Priority::ALL, LEASE).await.unwrap().is_some());
    assert!(q.claim("w", &Priority::ALL, LEASE).await.unwrap().is_some());
}

#[tokio::test]
async fn transient_failures_back_off_then_die_and_permanent_ones_fail() {
    std::env::set_var("PROMPTOPT_RETRY_BACKOFF_SCALE", "0.5");
    on_both!(11, failures);
}

async fn cancels(q: SharedQueue, _: Backend) {
    let queued = q.submit(&spec("q", Priority::Normal)).await.unwrap();
    let running = q.submit(&spec("r", Priority::Normal)).await.unwrap();
    let cancelled = q.cancel(&queued.job_id).await.unwrap();
    assert_eq!(cancelled.state, JobState::Cancelled);
    let claim = q.claim("w", &Priority::ALL, LEASE).await.unwrap().unwrap();
    assert_eq!(claim.job_id, running.job_id, "the cancelled job is skipped");
    let flagged = q.cancel(&running.job_id).await.unwrap();
    assert_eq!(flagged.state, JobState::Running);
    assert!(flagged.cancel_requested);
    assert!(
        q.heartbeat(&claim, LEASE, None)
            .await
            .unwrap()
            .cancel_requested
    );
    let record = q
        .finish(&claim, Outcome::Cancelled { result: None })
        .await
        .unwrap()
        .unwrap();
    assert_eq!(record.state, JobState::Cancelled);
    let refused = q.cancel(&running.job_id).await.unwrap_err().to_string();
    assert!(refused.contains("is cancelled"), "{refused}");
    // Handing a job back does not count the attempt.
    let back = q.submit(&spec("back", Priority::Normal)).await.unwrap();
    let claim = q.claim("w", &Priority::ALL, LEASE).await.unwrap().unwrap();
    q.release(&claim).await.unwrap();
    let record = q.get(&back.job_id).await.unwrap();
    assert_eq!((record.state, record.attempts), (JobState::Queued, 0));
    let again = q.claim("w2", &Priority::ALL, LEASE).await.unwrap().unwrap();
    assert_eq!((again.job_id, again.record.attempts), (back.job_id, 1));
}

#[tokio::test]
async fn cancel_queued_and_running_jobs_and_hand_one_back() {
    on_both!(12, cancels);
}

async fn checkpoints_and_events(q: SharedQueue, _: Backend) {
    let job = q.submit(&spec("c", Priority::Normal)).await.unwrap();
    q.save_checkpoint(&job.job_id, "k2", "{\"b\":2}")
        .await
        .unwrap();
    q.save_checkpoint(&job.job_id, "k1", "{\"a\":1}")
        .await
        .unwrap();
    q.save_checkpoint(&job.job_id, "k1", "{\"a\":3}")
        .await
        .unwrap();
    assert_eq!(
        q.checkpoint(&job.job_id).await.unwrap(),
        vec![
            ("k1".to_string(), "{\"a\":3}".to_string()),
            ("k2".to_string(), "{\"b\":2}".to_string())
        ]
    );
    for i in 0..5 {
        q.push_event(&job.job_id, &json!({"i": i})).await.unwrap();
    }
    let all = q.events(&job.job_id, 0, 100).await.unwrap();
    assert_eq!(all.iter().map(|e| e.0).collect::<Vec<_>>(), [1, 2, 3, 4, 5]);
    let later = q.events(&job.job_id, 3, 1).await.unwrap();
    assert_eq!(later, vec![(4, json!({"i": 3}))]);
    let first = q.events(&job.job_id, 0, 2).await.unwrap();
    assert_eq!(first.iter().map(|e| e.0).collect::<Vec<_>>(), [1, 2]);
    assert!(q.events(&job.job_id, 5, 10).await.unwrap().is_empty());
    assert!(q
        .events(&job.job_id, u64::MAX, 10)
        .await
        .unwrap()
        .is_empty());
    assert!(q
        .events("job-0000000000000000", 0, 10)
        .await
        .unwrap()
        .is_empty());
}

#[tokio::test]
async fn checkpoints_and_numbered_events() {
    on_both!(13, checkpoints_and_events);
}

async fn corrupt(q: SharedQueue, backend: Backend) {
    let broken = q.submit(&spec("broken", Priority::High)).await.unwrap();
    let fine = q.submit(&spec("fine", Priority::Normal)).await.unwrap();
    match backend {
        Backend::Sqlite(path) => {
            let con = rusqlite::Connection::open(path).unwrap();
            con.execute(
                "UPDATE jobs SET record = '{\"job_id\": 7, \"from\": \"v9\"}' WHERE job_id = ?1",
                [&broken.job_id],
            )
            .unwrap();
        }
        Backend::Redis(url) => {
            let client = redis::Client::open(url.as_str()).unwrap();
            let mut con = client.get_multiplexed_async_connection().await.unwrap();
            redis::cmd("HSET")
                .arg(format!("promptopt:job:{}", broken.job_id))
                .arg("record")
                .arg("{\"job_id\": 7, \"from\": \"v9\"}")
                .query_async::<()>(&mut con)
                .await
                .unwrap();
        }
    }
    let claim = q.claim("w", &Priority::ALL, LEASE).await.unwrap().unwrap();
    assert_eq!(claim.job_id, fine.job_id, "the worker goes on");
    let dead = q.get(&broken.job_id).await.unwrap();
    assert_eq!(dead.state, JobState::Dead);
    assert!(dead.error.unwrap().contains("does not parse"));
}

#[tokio::test]
async fn a_record_that_does_not_parse_goes_dead_and_the_next_job_runs() {
    on_both!(14, corrupt);
}

async fn concurrent_claims(q: SharedQueue, _: Backend) {
    for i in 0..30 {
        let p = Priority::ALL[i % 3];
        q.submit(&spec(&format!("j{i}"), p)).await.unwrap();
    }
    let mut tasks = Vec::new();
    for w in 0..3 {
        let q = Arc::clone(&q);
        tasks.push(tokio::spawn(async move {
            let mut mine = Vec::new();
            while let Some(claim) = q
                .claim(&format!("w{w}"), &Priority::ALL, LEASE)
                .await
                .unwrap()
            {
                let done = Outcome::Succeeded {
                    result: json!({}),
                    model_id: None,
                };
                assert!(q.finish(&claim, done).await.unwrap().is_some());
                mine.push(claim.job_id);
            }
            mine
        }));
    }
    let mut all = Vec::new();
    for t in tasks {
        all.extend(t.await.unwrap());
    }
    let total = all.len();
    all.sort();
    all.dedup();
    assert_eq!(
        (total, all.len()),
        (30, 30),
        "each job claimed exactly once"
    );
    assert_eq!(q.counts().await.unwrap()[&JobState::Succeeded], 30);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 3)]
async fn three_claimers_take_thirty_jobs_each_once() {
    on_both!(15, concurrent_claims);
}

async fn many_running(q: SharedQueue, _: Backend) {
    // More running jobs than one page of the pending list; the worker of the last one stops.
    for i in 0..40 {
        q.submit(&spec(&format!("m{i}"), Priority::Normal))
            .await
            .unwrap();
    }
    let mut claims = Vec::new();
    for _ in 0..39 {
        claims.push(
            q.claim("busy", &Priority::ALL, LEASE)
                .await
                .unwrap()
                .unwrap(),
        );
    }
    let short = Duration::from_millis(300);
    let last = q
        .claim("dies", &Priority::ALL, short)
        .await
        .unwrap()
        .unwrap();
    tokio::time::sleep(Duration::from_millis(700)).await;
    let taken = q
        .claim("other", &Priority::ALL, LEASE)
        .await
        .unwrap()
        .unwrap();
    assert_eq!(taken.job_id, last.job_id);
    assert!(taken.resumed);
    assert!(q
        .claim("other", &Priority::ALL, LEASE)
        .await
        .unwrap()
        .is_none());
    for claim in &claims {
        assert!(!q.heartbeat(claim, LEASE, None).await.unwrap().lost);
    }
}

#[tokio::test]
async fn an_expired_lease_is_found_among_many_running_jobs() {
    on_both!(2, many_running);
}

async fn cancel_during_heartbeats(q: SharedQueue, _: Backend) {
    let job = q.submit(&spec("busy", Priority::Normal)).await.unwrap();
    let claim = q.claim("w", &Priority::ALL, LEASE).await.unwrap().unwrap();
    let beats: Vec<_> = (0..8)
        .map(|trial| {
            let (q, claim) = (Arc::clone(&q), claim.clone());
            tokio::spawn(async move {
                let progress = Progress {
                    stage: "optimize".into(),
                    trial,
                    ..Progress::default()
                };
                q.heartbeat(&claim, LEASE, Some(&progress)).await.unwrap()
            })
        })
        .collect();
    q.cancel(&job.job_id).await.unwrap();
    for beat in beats {
        assert!(!beat.await.unwrap().lost);
    }
    // A heartbeat that stores progress never undoes the cancel.
    assert!(q.get(&job.job_id).await.unwrap().cancel_requested);
    assert!(
        q.heartbeat(&claim, LEASE, None)
            .await
            .unwrap()
            .cancel_requested
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 3)]
async fn a_cancel_is_not_lost_among_heartbeats() {
    on_both!(3, cancel_during_heartbeats);
}

#[tokio::test]
async fn redis_urls_and_errors_never_show_the_password() {
    let bad = RedisQueue::connect("redis://:s3cret@127.0.0.1:1/0")
        .await
        .unwrap_err();
    let text = bad.to_string();
    assert!(
        matches!(bad, promptopt_jobs::JobError::Redis { .. }),
        "{text}"
    );
    assert!(!text.contains("s3cret") && !format!("{bad:?}").contains("s3cret"));
    assert!(
        text.contains("redis://:***@127.0.0.1:1/0") && !text.contains('\n'),
        "{text}"
    );
    for url in [
        "redis://",
        "redis://:s3cret@h:notaport/0",
        "redis://h/notadb",
    ] {
        let bad = RedisQueue::connect(url).await.unwrap_err();
        assert!(
            matches!(bad, promptopt_jobs::JobError::InvalidUrl { .. }),
            "{url}: {bad}"
        );
        assert!(!bad.to_string().contains("s3cret"), "{bad}");
    }
    let Some(url) = redis_url(4) else { return };
    // A password the server does not expect: refused, without showing it.
    let (scheme, rest) = url.split_once("://").unwrap();
    let with_password = format!("{scheme}://:s3cret@{rest}");
    let bad = RedisQueue::connect(&with_password).await.unwrap_err();
    let text = bad.to_string();
    assert!(
        matches!(bad, promptopt_jobs::JobError::Redis { .. }),
        "{text}"
    );
    assert!(!text.contains("s3cret") && !text.contains('\n'), "{text}");
    let queue = RedisQueue::connect(&url).await.unwrap();
    let shown = format!("{queue:?}");
    assert!(shown.contains(&url), "{shown}");
}
