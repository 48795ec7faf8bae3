//! `promptopt jobs|models|predict --server URL`: the CLI talking to a real `promptopt serve`
//! (with one in-process worker) over HTTP, against a fake model server.
#![allow(clippy::unwrap_used)]

use std::io::{BufRead, BufReader};
use std::path::PathBuf;
use std::process::{Child, ChildStdout, Command, Output, Stdio};
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

/// A small request with inline examples.
fn request(name: &str) -> String {
    format!(
        r#"name: {name}
evaluation_metric: exact_match
algorithm: bootstrapfewshot_random_search
model: openai/test-model
input_keys: [text]
output_keys: [label]
concurrency: 1
algorithm_config: {{max_bootstrapped_demos: 1, max_labeled_demos: 1, num_candidate_programs: 1}}
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

/// A running `promptopt serve` with its home folder and fake model.
struct Served {
    /// The server's home (`PROMPTOPT_HOME`).
    home: tempfile::TempDir,
    /// The client's home, apart from the server's: nothing may go through the local registry.
    client_home: tempfile::TempDir,
    /// Kept alive for the server's whole life.
    _lm: FixedReplyServer,
    child: Child,
    /// The server's stdout, kept open so that a later line cannot break its pipe.
    _stdout: BufReader<ChildStdout>,
    url: String,
}

impl Served {
    fn start() -> Self {
        let home = tempfile::tempdir().unwrap();
        let client_home = tempfile::tempdir().unwrap();
        let lm = FixedReplyServer::with_handler(|request| Reply::text(label_for(request))).unwrap();
        let log = std::fs::File::create(home.path().join("serve.log")).unwrap();
        let mut child = Command::new(env!("CARGO_BIN_EXE_promptopt"))
            .args(["serve", "--bind", "127.0.0.1:0", "--workers", "1"])
            .env("PROMPTOPT_HOME", home.path())
            .env("PROMPTOPT_API_TOKENS", "tok-admin,tok-predict:predict")
            .env("DISABLE_MLFLOW", "1")
            .env("OPENAI_BASE_URL", lm.base_url())
            .env("OPENAI_API_KEY", "sk-test")
            .env("PROMPTOPT_LM_MAX_RETRIES", "0")
            .env_remove("MLFLOW_TRACKING_URI")
            .env_remove("PROMPTOPT_QUEUE")
            .env_remove("PROMPTOPT_SERVER")
            .env_remove("PROMPTOPT_TOKEN")
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(log)
            .spawn()
            .unwrap();
        let stdout = child.stdout.take().unwrap();
        let mut stdout = BufReader::new(stdout);
        let mut first = String::new();
        stdout.read_line(&mut first).unwrap();
        let url = first
            .trim()
            .strip_prefix("promptopt serve: listening on ")
            .unwrap_or_else(|| {
                let log = std::fs::read_to_string(home.path().join("serve.log"));
                panic!("unexpected first line {first:?}; log: {log:?}")
            })
            .to_string();
        Self {
            home,
            client_home,
            _lm: lm,
            child,
            _stdout: stdout,
            url,
        }
    }

    /// `promptopt ARGS --server URL --token TOKEN`, in an environment without the server's.
    fn run_with(&self, server: &str, token: &str, args: &[&str]) -> Output {
        Command::new(env!("CARGO_BIN_EXE_promptopt"))
            .args(args)
            .args(["--server", server, "--token", token])
            .env("PROMPTOPT_HOME", self.client_home.path())
            .env("DISABLE_MLFLOW", "1")
            .env_remove("MLFLOW_TRACKING_URI")
            .env_remove("PROMPTOPT_QUEUE")
            .env_remove("PROMPTOPT_SERVER")
            .env_remove("PROMPTOPT_TOKEN")
            .env_remove("OPENAI_BASE_URL")
            .env_remove("PROMPTOPT_API_TOKENS")
            .stdin(Stdio::null())
            .output()
            .unwrap()
    }

    fn run(&self, token: &str, args: &[&str]) -> Output {
        self.run_with(&self.url, token, args)
    }

    fn ok(&self, args: &[&str]) -> String {
        let output = self.run("tok-admin", args);
        let out = String::from_utf8_lossy(&output.stdout).into_owned();
        assert!(
            output.status.success(),
            "{args:?}\nstdout: {out}\nstderr: {}\nserver log: {}",
            String::from_utf8_lossy(&output.stderr),
            self.log()
        );
        out
    }

    fn json(&self, args: &[&str]) -> Value {
        let out = self.ok(args);
        serde_json::from_str(&out).unwrap_or_else(|e| panic!("{args:?}: {e}: {out}"))
    }

    fn write_request(&self, name: &str) -> PathBuf {
        let path = self.client_home.path().join(format!("{name}.yaml"));
        std::fs::write(&path, request(name)).unwrap();
        path
    }

    fn log(&self) -> String {
        std::fs::read_to_string(self.home.path().join("serve.log")).unwrap_or_default()
    }

    /// SIGTERM; the server must be gone within 10 s.
    fn stop(mut self) {
        let status = Command::new("kill")
            .args(["-TERM", &self.child.id().to_string()])
            .status()
            .unwrap();
        assert!(status.success());
        let started = Instant::now();
        loop {
            if let Some(status) = self.child.try_wait().unwrap() {
                assert!(status.success(), "{status:?}; log: {}", self.log());
                return;
            }
            if started.elapsed() > Duration::from_secs(10) {
                let _ = self.child.kill();
                let _ = self.child.wait();
                panic!("the server did not stop within 10 s of SIGTERM");
            }
            std::thread::sleep(Duration::from_millis(50));
        }
    }
}

fn stderr_of(output: &Output) -> String {
    String::from_utf8_lossy(&output.stderr).into_owned()
}

#[test]
fn jobs_models_and_predict_go_through_the_server() {
    let served = Served::start();
    let path = served.write_request("reviews");
    let path = path.to_str().unwrap();

    // Submitted and followed through the API: the job id on stdout, then the local summary.
    let out = served.ok(&["jobs", "submit", path, "--wait"]);
    let id = out.lines().next().unwrap().trim().to_string();
    assert!(id.starts_with("job-"), "{out}");
    assert!(out.contains("Saved model: reviews@"), "{out}");
    assert!(out.contains("baseline"), "{out}");

    let status = served.json(&["jobs", "status", &id, "--json"]);
    assert_eq!(status["state"], "succeeded", "{status:#}");
    let model_id = status["model_id"].as_str().unwrap();
    assert!(model_id.starts_with("reviews@"), "{status:#}");
    let text = served.ok(&["jobs", "status", &id]);
    assert!(text.contains("succeeded"), "{text}");

    let listed = served.json(&["jobs", "list", "--json"]);
    assert!(
        listed
            .as_array()
            .unwrap()
            .iter()
            .any(|job| job["job_id"] == id.as_str()),
        "{listed:#}"
    );
    let watched = served.ok(&["jobs", "watch", &id]);
    assert!(
        watched.contains(&id) && watched.contains("succeeded"),
        "{watched}"
    );
    let result = served.json(&["jobs", "result", &id, "--json"]);
    assert_eq!(result["model_id"], model_id, "{result:#}");

    // The model is on the server, not in the client's registry.
    let models = served.json(&["models", "list", "--json"]);
    let reviews = models
        .as_array()
        .unwrap()
        .iter()
        .find(|m| m["name"] == "reviews")
        .unwrap_or_else(|| panic!("{models:#}"));
    assert_eq!(reviews["versions"][0], "1.0.0", "{models:#}");
    assert!(!served.client_home.path().join("registry").exists());

    let promoted = served.run(
        "tok-admin",
        &[
            "models",
            "promote",
            "reviews@1.0.0",
            "--alias",
            "production",
        ],
    );
    assert!(promoted.status.success(), "{}", stderr_of(&promoted));
    assert!(
        stderr_of(&promoted).contains("`reviews@production` is now 1.0.0"),
        "{}",
        stderr_of(&promoted)
    );
    let shown = served.json(&["models", "show", "reviews@production"]);
    assert_eq!(shown["name"], "reviews", "{shown:#}");

    let prediction = served.json(&[
        "predict",
        "reviews@production",
        "--input",
        r#"{"text": "a bad film"}"#,
        "--json",
    ]);
    assert_eq!(prediction["outputs"]["label"], "negative", "{prediction:#}");
    let lines = served.ok(&[
        "predict",
        "reviews@production",
        "--input",
        r#"{"text": "a good film"}"#,
    ]);
    assert_eq!(lines.trim(), "label: positive");

    // A version an alias points at is not deleted; save stays local-only.
    let refused = served.run("tok-admin", &["models", "delete", "reviews@1.0.0"]);
    assert_eq!(refused.status.code(), Some(2), "{}", stderr_of(&refused));
    assert!(
        stderr_of(&refused).contains("409"),
        "{}",
        stderr_of(&refused)
    );
    let save = served.run(
        "tok-admin",
        &["models", "save", "reviews", "--output", "x.json"],
    );
    assert_eq!(save.status.code(), Some(2));
    assert!(stderr_of(&save).contains("local registry only"));

    // A predict-only token cannot submit; a wrong token is refused without being printed.
    let scoped = served.run("tok-predict", &["jobs", "submit", path]);
    assert_eq!(scoped.status.code(), Some(2), "{}", stderr_of(&scoped));
    let err = stderr_of(&scoped);
    assert!(
        err.contains("403") && err.contains("`optimize` scope"),
        "{err}"
    );
    let wrong = served.run("tok-wrong-s3cret", &["jobs", "list"]);
    assert_eq!(wrong.status.code(), Some(2));
    let err = stderr_of(&wrong);
    assert!(err.contains("The token is not valid"), "{err}");
    assert!(!err.contains("tok-wrong-s3cret"), "{err}");
    assert!(!String::from_utf8_lossy(&wrong.stdout).contains("tok-wrong-s3cret"));

    // Nothing listening: a clear error naming the URL.
    let down = served.run_with("http://127.0.0.1:1", "tok-admin", &["jobs", "list"]);
    assert_ne!(down.status.code(), Some(0));
    let err = stderr_of(&down);
    assert!(
        err.contains("Cannot reach the server at `http://127.0.0.1:1`"),
        "{err}"
    );
    assert!(!err.contains("tok-admin"), "{err}");

    served.stop();
}
