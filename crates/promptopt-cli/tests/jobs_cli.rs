//! `promptopt jobs` and `promptopt worker` as a user runs them: worker processes draining a
//! queue, timeouts, retries, dead jobs, a worker killed mid-job, cancels, bad input. Every test
//! runs on the embedded queue and, when `PROMPTOPT_TEST_REDIS_URL` is set (by `scripts/test.sh`),
//! on a real Redis too (each test on its own database number).
#![allow(clippy::unwrap_used)]

use std::path::PathBuf;
use std::process::{Child, Command, Output, Stdio};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use promptopt_lm::testing::{FixedReplyServer, Reply};
use serde_json::Value;

/// Answers `negative` when the text mentions something bad, else `positive`.
fn label_for(request: &promptopt_lm::testing::ServedRequest) -> String {
    let last = request.messages.last().map_or("", |m| m.content.as_str());
    if last.contains("bad") || last.contains("awful") || last.contains("dull") {
        "negative".into()
    } else {
        "positive".into()
    }
}

/// The fake model server: each reply after `delay_ms`; 503 while `down` is set.
struct Lm {
    server: FixedReplyServer,
    down: Arc<AtomicBool>,
    delay_ms: Arc<AtomicU64>,
}

fn lm() -> Lm {
    let down = Arc::new(AtomicBool::new(false));
    let delay_ms = Arc::new(AtomicU64::new(0));
    let (d, ms) = (Arc::clone(&down), Arc::clone(&delay_ms));
    let server = FixedReplyServer::with_handler(move |request| {
        let delay = Duration::from_millis(ms.load(Ordering::SeqCst));
        if d.load(Ordering::SeqCst) {
            Reply::error(503, "The model is overloaded").after(delay)
        } else {
            Reply::text(label_for(request)).after(delay)
        }
    })
    .unwrap();
    Lm {
        server,
        down,
        delay_ms,
    }
}

/// A small request; `candidates` random-search candidates make it longer.
fn request(name: &str, candidates: usize) -> String {
    format!(
        r#"name: {name}
evaluation_metric: exact_match
algorithm: bootstrapfewshot_random_search
model: openai/test-model
input_keys: [text]
output_keys: [label]
concurrency: 1
algorithm_config: {{max_bootstrapped_demos: 1, max_labeled_demos: 1, num_candidate_programs: {candidates}}}
training_examples:
  - {{text: "a good film", label: "positive"}}
  - {{text: "a bad film", label: "negative"}}
  - {{text: "lovely", label: "positive"}}
  - {{text: "dull and long", label: "negative"}}
validation_examples:
  - {{text: "awful acting", label: "negative"}}
  - {{text: "great fun", label: "positive"}}
  - {{text: "a bad script", label: "negative"}}
  - {{text: "warm and funny", label: "positive"}}
"#
    )
}

/// One test's world: a home folder, a queue URL and the fake model.
struct World {
    home: tempfile::TempDir,
    queue: String,
    lm: Lm,
}

impl World {
    fn new(queue: Option<String>) -> Self {
        let home = tempfile::tempdir().unwrap();
        let queue =
            queue.unwrap_or_else(|| format!("sqlite:{}", home.path().join("q.sqlite").display()));
        Self {
            home,
            queue,
            lm: lm(),
        }
    }

    fn command(&self) -> Command {
        let mut command = Command::new(env!("CARGO_BIN_EXE_promptopt"));
        command
            .env("PROMPTOPT_HOME", self.home.path())
            .env("PROMPTOPT_QUEUE", &self.queue)
            .env("OPENAI_BASE_URL", self.lm.server.base_url())
            .env("OPENAI_API_KEY", "sk-test")
            .env("DISABLE_MLFLOW", "1")
            .env("PROMPTOPT_LM_MAX_RETRIES", "0")
            .env("PROMPTOPT_RETRY_BACKOFF_SCALE", "0.25")
            .env_remove("MLFLOW_TRACKING_URI");
        command
    }

    fn run(&self, args: &[&str]) -> Output {
        self.command().args(args).output().unwrap()
    }

    fn ok(&self, args: &[&str]) -> String {
        let output = self.run(args);
        let out = String::from_utf8_lossy(&output.stdout).into_owned();
        assert!(
            output.status.success(),
            "{args:?}\nstdout: {out}\nstderr: {}",
            String::from_utf8_lossy(&output.stderr)
        );
        out
    }

    fn write_request(&self, name: &str, candidates: usize) -> PathBuf {
        let path = self.home.path().join(format!("{name}.yaml"));
        std::fs::write(&path, request(name, candidates)).unwrap();
        path
    }

    fn submit_text(&self, name: &str, text: &str, extra: &[&str]) -> String {
        let path = self.home.path().join(format!("{name}.yaml"));
        std::fs::write(&path, text).unwrap();
        let mut args = vec!["jobs", "submit", path.to_str().unwrap()];
        args.extend_from_slice(extra);
        self.ok(&args).trim().to_string()
    }

    fn submit(&self, name: &str, candidates: usize, extra: &[&str]) -> String {
        let path = self.write_request(name, candidates);
        let mut args = vec!["jobs", "submit", path.to_str().unwrap()];
        args.extend_from_slice(extra);
        self.ok(&args).trim().to_string()
    }

    fn worker(&self, name: &str, extra: &[&str]) -> Child {
        let log = std::fs::File::create(self.home.path().join(format!("{name}.log"))).unwrap();
        let mut command = self.command();
        command
            .args(["worker", "--name", name, "--lease", "2s", "--grace", "1s"])
            .args(extra)
            .stdout(Stdio::null())
            .stderr(log);
        command.spawn().unwrap()
    }

    fn log(&self, name: &str) -> String {
        std::fs::read_to_string(self.home.path().join(format!("{name}.log"))).unwrap_or_default()
    }

    fn status(&self, id: &str) -> Value {
        serde_json::from_str(&self.ok(&["jobs", "status", id, "--json"])).unwrap()
    }

    fn wait_for(
        &self,
        id: &str,
        what: &str,
        timeout: Duration,
        done: impl Fn(&Value) -> bool,
    ) -> Value {
        let started = Instant::now();
        loop {
            let status = self.status(id);
            if done(&status) {
                return status;
            }
            assert!(
                started.elapsed() < timeout,
                "job {id} never got {what}; last status: {status:#}"
            );
            std::thread::sleep(Duration::from_millis(150));
        }
    }

    fn versions(&self, name: &str) -> usize {
        let dir = self.home.path().join("registry").join(name);
        std::fs::read_dir(&dir)
            .map(|entries| {
                entries
                    .filter_map(Result::ok)
                    .filter(|e| e.path().is_dir() && e.file_name() != "aliases")
                    .count()
            })
            .unwrap_or(0)
    }
}

fn state(status: &Value) -> &str {
    status["state"].as_str().unwrap_or("?")
}

fn stop(mut child: Child) {
    #[cfg(unix)]
    {
        let _ = Command::new("kill")
            .args(["-TERM", &child.id().to_string()])
            .status();
        let started = Instant::now();
        while started.elapsed() < Duration::from_secs(10) {
            if child.try_wait().ok().flatten().is_some() {
                return;
            }
            std::thread::sleep(Duration::from_millis(50));
        }
    }
    let _ = child.kill();
    let _ = child.wait();
}

/// The Redis URL for database `db`, when a Redis is available; in CI it must be.
fn redis(db: u32) -> Option<String> {
    match std::env::var("PROMPTOPT_TEST_REDIS_URL") {
        Ok(url) => {
            let base = url.trim_end_matches('/');
            let base = match base.rsplit_once('/') {
                Some((b, last)) if last.chars().all(|c| c.is_ascii_digit()) => b.to_string(),
                _ => base.to_string(),
            };
            let url = format!("{base}/{db}");
            let flushed = Command::new("redis-cli")
                .args(["-u", &url, "FLUSHDB"])
                .output()
                .map(|o| o.status.success())
                .unwrap_or(false);
            assert!(flushed, "cannot flush Redis database {db} at {url}");
            Some(url)
        }
        Err(_) => {
            assert!(
                std::env::var("PROMPTOPT_CI").is_err(),
                "PROMPTOPT_TEST_REDIS_URL must be set in CI (scripts/test.sh starts Redis)"
            );
            None
        }
    }
}

/// Runs `test` on the embedded queue and, when available, on Redis database `db`.
fn on_both(db: u32, test: impl Fn(&World)) {
    test(&World::new(None));
    if let Some(url) = redis(db) {
        test(&World::new(Some(url)));
    }
}

#[test]
fn three_workers_drain_thirty_jobs_high_priority_first() {
    on_both(1, |w| {
        let mut ids = Vec::new();
        for i in 0..30 {
            let priority = ["low", "normal", "high"][i % 3];
            let id = w.submit(&format!("job{i}"), 2, &["--priority", priority]);
            ids.push((priority, id, format!("job{i}")));
        }
        let workers: Vec<Child> = (0..3)
            .map(|i| w.worker(&format!("w{i}"), &["--exit-when-empty"]))
            .collect();
        for mut worker in workers {
            let status = worker.wait().unwrap();
            assert!(status.success());
        }
        let mut starts: Vec<(f64, &str)> = Vec::new();
        for (priority, id, name) in &ids {
            let status = w.status(id);
            assert_eq!(state(&status), "succeeded", "{status:#}");
            assert_eq!(status["attempts"], 1, "{status:#}");
            assert!(status["model_id"]
                .as_str()
                .unwrap()
                .starts_with(name.as_str()));
            assert_eq!(w.versions(name), 1, "{name} saved once");
            starts.push((status["started_at"].as_f64().unwrap(), priority));
        }
        starts.sort_by(|a, b| a.0.total_cmp(&b.0));
        let rank = |p: &str| -> f64 {
            let r: Vec<usize> = starts
                .iter()
                .enumerate()
                .filter(|(_, s)| s.1 == p)
                .map(|(i, _)| i)
                .collect();
            r.iter().sum::<usize>() as f64 / r.len() as f64
        };
        assert!(starts[..3].iter().all(|s| s.1 == "high"), "{starts:?}");
        assert!(
            rank("high") < rank("normal") && rank("normal") < rank("low"),
            "{starts:?}"
        );
        let listed = w.ok(&["jobs", "list", "--state", "succeeded"]);
        assert_eq!(listed.lines().count(), 31, "{listed}");
    });
}

#[test]
fn a_job_over_its_timeout_keeps_its_best_so_far() {
    on_both(2, |w| {
        w.lm.delay_ms.store(150, Ordering::SeqCst);
        let id = w.submit("slow", 40, &["--timeout", "3s"]);
        let worker = w.worker("w", &[]);
        let status = w.wait_for(&id, "timed_out", Duration::from_secs(60), |s| {
            state(s) == "timed_out"
        });
        stop(worker);
        // A timed-out job's result prints, and exits 1 (it did not succeed).
        let output = w.run(&["jobs", "result", &id, "--json"]);
        assert_eq!(output.status.code(), Some(1));
        let result: Value = serde_json::from_slice(&output.stdout).unwrap();
        assert!(result["optimized_metrics"]["score"].as_f64().is_some());
        assert!(
            status["progress"]["trial"].as_u64().unwrap() >= 1,
            "{status:#}"
        );
        assert_eq!(status["model_id"], result["model_id"]);
    });
}

#[test]
fn a_transient_failure_is_retried_then_succeeds() {
    on_both(3, |w| {
        w.lm.down.store(true, Ordering::SeqCst);
        let id = w.submit("flaky", 1, &["--max-attempts", "5"]);
        let worker = w.worker("w", &[]);
        let failed = w.wait_for(&id, "a failed attempt", Duration::from_secs(30), |s| {
            s["error"].as_str().is_some_and(|e| e.contains("503"))
        });
        assert_ne!(state(&failed), "dead", "{failed:#}");
        w.lm.down.store(false, Ordering::SeqCst);
        let done = w.wait_for(&id, "success", Duration::from_secs(30), |s| {
            state(s) == "succeeded"
        });
        stop(worker);
        let watched = w.ok(&["jobs", "watch", &id]);
        assert!(watched.contains("succeeded"), "{watched}");
        let attempts = done["attempts"].as_u64().unwrap();
        assert!((2..=5).contains(&attempts), "{done:#}");
        assert_eq!(done["error"], Value::Null, "{done:#}");
        assert!(done["model_id"].is_string());
    });
}

#[test]
fn a_permanent_failure_ends_dead_with_its_error() {
    on_both(4, |w| {
        w.lm.down.store(true, Ordering::SeqCst);
        let id = w.submit("broken", 1, &["--max-attempts", "2"]);
        let worker = w.worker("w", &[]);
        let dead = w.wait_for(&id, "dead", Duration::from_secs(40), |s| state(s) == "dead");
        stop(worker);
        assert_eq!(dead["attempts"], 2);
        let error = dead["error"].as_str().unwrap();
        assert!(
            error.contains("503") && error.contains("baseline"),
            "{error}"
        );
        let output = w.run(&["jobs", "result", &id]);
        assert_eq!(output.status.code(), Some(2));
        let err = String::from_utf8_lossy(&output.stderr);
        assert!(err.contains("has no result (dead"), "{err}");
        // `retry` queues it again with fresh attempts.
        w.lm.down.store(false, Ordering::SeqCst);
        w.ok(&["jobs", "retry", &id]);
        let worker = w.worker("w2", &[]);
        w.wait_for(&id, "success after retry", Duration::from_secs(30), |s| {
            state(s) == "succeeded"
        });
        stop(worker);
    });
}

#[test]
fn a_killed_worker_job_is_finished_by_another_once() {
    on_both(5, |w| {
        w.lm.delay_ms.store(60, Ordering::SeqCst);
        let id = w.submit("resumed", 12, &[]);
        let mut first = w.worker("first", &[]);
        w.wait_for(&id, "two trials", Duration::from_secs(60), |s| {
            s["progress"]["trial"].as_u64().unwrap_or(0) >= 3
        });
        first.kill().unwrap();
        first.wait().unwrap();
        let served_at_kill = w.lm.server.requests_served();
        let second = w.worker("second", &[]);
        let done = w.wait_for(&id, "success", Duration::from_secs(90), |s| {
            state(s) == "succeeded"
        });
        stop(second);
        assert_eq!(done["attempts"], 2, "{done:#}");
        assert_eq!(done["worker"], "second");
        assert_eq!(w.versions("resumed"), 1);
        let log = w.log("second");
        assert!(log.contains("resuming from the job's checkpoint"), "{log}");
        // No call was made twice: both attempts together made as many calls as one uninterrupted
        // run of the same request, give or take the one call in flight when the worker died
        // (the resumed attempt reads the completed evaluations from the checkpoint and the
        // answered calls from the shared response cache).
        let both = w.lm.server.requests_served();
        let once = uninterrupted_calls(12);
        assert!(
            both <= once + 1,
            "{both} calls over both attempts ({served_at_kill} before the kill), {once} for one run"
        );
    });
}

#[test]
fn a_worker_killed_twenty_times_at_random_points_loses_and_repeats_nothing() {
    use rand::{Rng, SeedableRng};

    const KILLS: u64 = 20;
    let text = long_request("battered");
    let once = {
        let w = World::new(None);
        let id = w.submit_text("battered", &text, &[]);
        let worker = w.worker("alone", &["--exit-when-empty"]);
        w.wait_for(&id, "success", Duration::from_secs(120), |s| {
            state(s) == "succeeded"
        });
        stop(worker);
        w.lm.server.requests_served()
    };
    assert!(
        once >= 150,
        "the run is too short to kill {KILLS} times: {once} calls"
    );
    on_both(8, |w| {
        w.lm.delay_ms.store(20, Ordering::SeqCst);
        let id = w.submit_text("battered", &text, &["--max-attempts", "25"]);
        let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(8);
        for k in 0..KILLS {
            let mut worker = w.worker(&format!("w{k}"), &[]);
            // Once this worker has taken the job over...
            w.wait_for(&id, "its next attempt", Duration::from_secs(60), |s| {
                s["attempts"].as_u64() == Some(k + 1) && state(s) == "running"
            });
            // ...a random point of its attempt: after 1 to 6 new model calls.
            let target = w.lm.server.requests_served() + rng.gen_range(1..=6);
            let started = Instant::now();
            while w.lm.server.requests_served() < target {
                assert!(
                    started.elapsed() < Duration::from_secs(60),
                    "kill {k}: the attempt made no progress; {}",
                    w.log(&format!("w{k}"))
                );
                std::thread::sleep(Duration::from_millis(3));
            }
            worker.kill().unwrap();
            worker.wait().unwrap();
        }
        let last = w.worker("last", &[]);
        let done = w.wait_for(&id, "success", Duration::from_secs(120), |s| {
            state(s) == "succeeded"
        });
        stop(last);
        assert_eq!(done["attempts"], KILLS + 1, "{done:#}");
        assert_eq!(w.versions("battered"), 1);
        // Each kill may repeat the one call it interrupted (the request's concurrency is 1);
        // nothing else is asked twice.
        let all = w.lm.server.requests_served();
        assert!(
            all <= once + KILLS,
            "{all} calls over {} attempts, {once} for one run",
            KILLS + 1
        );
    });
}

/// A request long enough to be killed many times: 24 training and 16 validation examples,
/// 8 random-search candidates.
fn long_request(name: &str) -> String {
    let mut text = format!(
        "name: {name}\nevaluation_metric: exact_match\nalgorithm: bootstrapfewshot_random_search\n\
         model: openai/test-model\ninput_keys: [text]\noutput_keys: [label]\nconcurrency: 1\n\
         algorithm_config: {{max_bootstrapped_demos: 2, max_labeled_demos: 2, num_candidate_programs: 8}}\n"
    );
    let words = [
        "good", "bad", "great", "dull", "fine", "awful", "lovely", "boring",
    ];
    for (key, count) in [("training_examples", 24), ("validation_examples", 16)] {
        text.push_str(&format!("{key}:\n"));
        for i in 0..count {
            let word = words[i % words.len()];
            let label = if matches!(word, "bad" | "dull" | "awful" | "boring") {
                "negative"
            } else {
                "positive"
            };
            text.push_str(&format!(
                "  - {{text: \"a {word} film, {key} {i}\", label: {label}}}\n"
            ));
        }
    }
    text
}

/// How many model calls one uninterrupted run of `request("resumed", candidates)` makes.
fn uninterrupted_calls(candidates: usize) -> u64 {
    let w = World::new(None);
    let id = w.submit("resumed", candidates, &[]);
    let worker = w.worker("alone", &["--exit-when-empty"]);
    w.wait_for(&id, "success", Duration::from_secs(90), |s| {
        state(s) == "succeeded"
    });
    stop(worker);
    w.lm.server.requests_served()
}

#[test]
fn sigterm_hands_a_running_job_back_to_the_queue() {
    on_both(7, |w| {
        w.lm.delay_ms.store(150, Ordering::SeqCst);
        let id = w.submit("handed-back", 40, &[]);
        let worker = w.worker("leaving", &[]);
        w.wait_for(&id, "running", Duration::from_secs(30), |s| {
            s["progress"]["trial"].as_u64().unwrap_or(0) >= 1
        });
        stop(worker);
        let back = w.status(&id);
        assert_eq!(state(&back), "queued", "{back:#}");
        assert_eq!(back["attempts"], 0, "the attempt is not counted: {back:#}");
        assert!(w.log("leaving").contains("handing the job back"));
        w.lm.delay_ms.store(0, Ordering::SeqCst);
        let next = w.worker("next", &[]);
        let done = w.wait_for(&id, "success", Duration::from_secs(60), |s| {
            state(s) == "succeeded"
        });
        stop(next);
        assert_eq!(done["attempts"], 1);
    });
}

#[test]
fn cancelling_a_running_job_stops_it_within_seconds() {
    on_both(6, |w| {
        w.lm.delay_ms.store(150, Ordering::SeqCst);
        let id = w.submit("cancelled", 40, &[]);
        let worker = w.worker("w", &[]);
        w.wait_for(&id, "running", Duration::from_secs(30), |s| {
            state(s) == "running"
        });
        let out = w.ok(&["jobs", "cancel", &id]);
        assert!(out.contains("Asked job"), "{out}");
        let asked = Instant::now();
        w.wait_for(&id, "cancelled", Duration::from_secs(15), |s| {
            state(s) == "cancelled"
        });
        assert!(
            asked.elapsed() < Duration::from_secs(10),
            "{:?}",
            asked.elapsed()
        );
        stop(worker);
        // A queued job is cancelled at once; a final one cannot be.
        let queued = w.submit("never-run", 1, &[]);
        assert!(w.ok(&["jobs", "cancel", &queued]).contains("Cancelled job"));
        let again = w.run(&["jobs", "cancel", &queued]);
        assert_eq!(again.status.code(), Some(2));
        assert!(String::from_utf8_lossy(&again.stderr).contains("is cancelled"));
    });
}

#[test]
fn bad_input_is_refused_in_one_line_and_nothing_is_queued() {
    let w = World::new(None);
    let bad = w.home.path().join("bad.yaml");
    std::fs::write(
        &bad,
        request("bad", 1).replace("exact_match", "no_such_metric"),
    )
    .unwrap();
    let output = w.run(&["jobs", "submit", bad.to_str().unwrap()]);
    assert_eq!(output.status.code(), Some(2));
    let err = String::from_utf8_lossy(&output.stderr);
    assert!(err.contains("no_such_metric"), "{err}");
    assert!(w.ok(&["jobs", "list"]).contains("No jobs"));

    let missing = w.home.path().join("missing.yaml");
    std::fs::write(
        &missing,
        "name: m\nevaluation_metric: exact_match\nalgorithm: bootstrapfewshot\nmodel: openai/x\ninput_keys: [text]\noutput_keys: [label]\ntraining_examples: nowhere.jsonl\n",
    )
    .unwrap();
    let output = w.run(&["jobs", "submit", missing.to_str().unwrap()]);
    assert_eq!(output.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&output.stderr).contains("nowhere.jsonl"));

    let path = w.write_request("ok", 1);
    for (args, expected) in [
        (
            vec!["jobs", "status", "job-0000000000000000"],
            "No job `job-0000000000000000`",
        ),
        (
            vec![
                "jobs",
                "submit",
                path.to_str().unwrap(),
                "--priority",
                "urgent",
            ],
            "`urgent`",
        ),
        (
            vec![
                "jobs",
                "submit",
                path.to_str().unwrap(),
                "--timeout",
                "soon",
            ],
            "`soon`",
        ),
        (
            vec!["jobs", "list", "--queue", "amqp://host/x"],
            "Invalid queue URL `amqp://host/x`",
        ),
        (
            vec!["jobs", "list", "--queue", "redis://:hunter2@127.0.0.1:1/0"],
            "127.0.0.1:1",
        ),
        (vec!["jobs", "list", "--state", "done"], "`done`"),
    ] {
        let output = w.run(&args);
        let err = String::from_utf8_lossy(&output.stderr);
        assert_eq!(output.status.code(), Some(2), "{args:?}: {err}");
        assert!(err.contains(expected), "{args:?}: {err}");
        assert_eq!(err.trim().lines().count(), 1, "{args:?}: {err}");
        assert!(!err.contains("hunter2"), "{err}");
    }
    assert!(w.ok(&["jobs", "list"]).contains("No jobs"));
}

#[test]
fn optimize_on_a_queue_prints_the_local_summary() {
    let w = World::new(None);
    let path = w.write_request("remote", 1);
    let worker = w.worker("w", &[]);
    let out = w.ok(&["optimize", path.to_str().unwrap(), "--queue", &w.queue]);
    stop(worker);
    assert!(out.contains("Saved model: remote@"), "{out}");
    assert!(out.contains("baseline"), "{out}");
}
