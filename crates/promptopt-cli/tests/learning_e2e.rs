//! Continuous learning end to end, unattended: the real `promptopt serve` (embedded queue, an
//! in-process worker, SQLite database) with a fake model server whose world shifts mid-stream.
//!
//! The fake model classifies support tickets by their topic (money, login, crash) and answers
//! with the label its prompt's demos use for that topic (their majority), `billing` / `account` /
//! `bug` when no demo covers it. Mid-stream the billing tickets' label becomes `payments`: the
//! deployed prompt (whose demos say `billing`) starts failing. The test checks, through the API
//! and `promptopt learn`, that:
//! - drift is detected within a bounded number of outcomes;
//! - a first retraining fails (the fake model refuses every prompt but the deployed version's
//!   until told otherwise), is recorded, the current version stays, and the next attempt waits
//!   for the backoff;
//! - the next retraining runs on the queue, validates better than production on held-out recent
//!   data and is promoted; the guard passes it;
//! - a forced bad version put in production by hand is rolled back automatically;
//! - unknown feedback is refused; `learn export` writes the labelled predictions.
#![allow(clippy::unwrap_used)]

mod common;

use std::process::{Command, Stdio};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use promptopt_lm::testing::{FixedReplyServer, Reply};
use promptopt_lm::Role;
use serde_json::{json, Value};

const MONEY: [&str; 8] = [
    "my invoice shows the wrong amount",
    "i was charged twice for one order",
    "please refund the duplicate charge",
    "the card payment did not go through",
    "why is my monthly bill higher",
    "the price on the receipt is wrong",
    "cancel the pending payment please",
    "a refund never reached my card",
];
const LOGIN: [&str; 8] = [
    "cannot log in to the site",
    "the password reset mail never arrives",
    "my login is locked after three tries",
    "two factor code is not accepted at login",
    "how do i change my password",
    "the sign in page keeps reloading",
    "my username is not recognised at login",
    "locked out after the password change",
];
const CRASH: [&str; 8] = [
    "the app crashes when i open settings",
    "error 500 on the checkout page",
    "the screen freezes after the update",
    "the export button throws an error",
    "search crashes with long queries",
    "the upload fails with a timeout error",
    "the app freezes on the start screen",
    "crash when i rotate the phone",
];

fn topic(text: &str) -> usize {
    let has = |words: &[&str]| words.iter().any(|w| text.contains(w));
    if has(&[
        "invoice", "charge", "refund", "payment", "bill", "price", "receipt",
    ]) {
        0
    } else if has(&["log", "password", "sign in", "username", "locked"]) {
        1
    } else {
        2
    }
}

/// The text of the `text` field in a rendered user turn.
fn field_text(content: &str) -> Option<String> {
    let start = content.find("[[ ## text ## ]]\n")? + "[[ ## text ## ]]\n".len();
    let rest = &content[start..];
    Some(rest.split("\n\n").next().unwrap_or(rest).trim().to_string())
}

/// The fake model (see the module documentation). While `refuse_new` is set, only prompts whose
/// demos teach `billing` (the deployed version's) are answered; any other is refused as
/// unauthorised, so an optimization cannot run.
fn fake_lm(refuse_new: Arc<AtomicBool>) -> FixedReplyServer {
    FixedReplyServer::with_handler(move |request| {
        let messages = &request.messages;
        let Some(query) = messages.last().and_then(|m| field_text(&m.content)) else {
            return Reply::text("billing");
        };
        let mut votes: [std::collections::BTreeMap<String, usize>; 3] = Default::default();
        let mut teaches_billing = false;
        for pair in messages.windows(2) {
            if pair[0].role == Role::User && pair[1].role == Role::Assistant {
                if let Some(text) = field_text(&pair[0].content) {
                    let label = pair[1].content.trim().to_string();
                    teaches_billing |= label == "billing";
                    *votes[topic(&text)].entry(label).or_insert(0) += 1;
                }
            }
        }
        if !teaches_billing && refuse_new.load(Ordering::SeqCst) {
            return Reply::error(401, "the key is not allowed to use this model");
        }
        let t = topic(&query);
        let label = votes[t]
            .iter()
            .max_by_key(|(label, n)| (**n, std::cmp::Reverse((*label).clone())))
            .map(|(label, _)| label.clone())
            .unwrap_or_else(|| ["billing", "account", "bug"][t].to_string());
        Reply::text(label)
    })
    .unwrap()
}

fn serve(
    home: &std::path::Path,
    lm: &FixedReplyServer,
    config: &std::path::Path,
) -> common::ServeProcess {
    let config = config.to_str().unwrap();
    common::spawn_serve(
        home,
        &lm.base_url(),
        "learn-admin",
        &["--workers", "1", "--config", config],
        &[],
        Stdio::null(),
    )
}

/// Every ticket with its label; `shifted` renames `billing` to `payments`.
fn tickets(shifted: bool) -> Vec<(String, String)> {
    let money = if shifted { "payments" } else { "billing" };
    let mut out = Vec::new();
    for i in 0..8 {
        out.push((MONEY[i].to_string(), money.to_string()));
        out.push((LOGIN[i].to_string(), "account".to_string()));
        out.push((CRASH[i].to_string(), "bug".to_string()));
    }
    out
}

fn examples(labelled: &[(String, String)]) -> Vec<Value> {
    labelled
        .iter()
        .map(|(text, label)| json!({"text": text, "label": label}))
        .collect()
}

struct Api {
    client: reqwest::Client,
    url: String,
}

impl Api {
    async fn call(&self, method: reqwest::Method, path: &str, body: Option<Value>) -> (u16, Value) {
        let mut request = self
            .client
            .request(method, format!("{}{path}", self.url))
            .header("authorization", "Bearer learn-admin");
        if let Some(body) = body {
            request = request.json(&body);
        }
        let response = request.send().await.unwrap();
        let status = response.status().as_u16();
        let text = response.text().await.unwrap();
        (
            status,
            serde_json::from_str(&text).unwrap_or(Value::String(text)),
        )
    }

    async fn optimize(&self, name: &str, train: &[(String, String)]) -> String {
        let body = json!({
            "name": name,
            "evaluation_metric": "exact_match",
            "algorithm": "labeledfewshot",
            "model": "openai/fake",
            "input_keys": ["text"],
            "output_keys": ["label"],
            "algorithm_config": {"k": 12},
            "seed": 7,
            "training_examples": examples(train),
        });
        let (status, job) = self
            .call(reqwest::Method::POST, "/v1/optimizations", Some(body))
            .await;
        assert_eq!(status, 201, "{job:#}");
        let id = job["job_id"].as_str().unwrap().to_string();
        let started = Instant::now();
        loop {
            let (_, record) = self
                .call(reqwest::Method::GET, &format!("/v1/jobs/{id}"), None)
                .await;
            match record["state"].as_str().unwrap() {
                "succeeded" => return record["model_id"].as_str().unwrap().to_string(),
                "queued" | "running" => {}
                other => panic!("the job ended {other}: {record:#}"),
            }
            assert!(started.elapsed() < Duration::from_secs(120), "{record:#}");
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }

    /// Predicts `text` with production and reports the true label; returns whether it was right.
    async fn serve_one(&self, text: &str, label: &str) -> (bool, String) {
        let (status, p) = self
            .call(
                reqwest::Method::POST,
                "/v1/models/tickets/predict",
                Some(json!({"inputs": {"text": text}})),
            )
            .await;
        assert_eq!(status, 200, "{p:#}");
        let (status, f) = self
            .call(
                reqwest::Method::POST,
                "/v1/feedback",
                Some(json!({"prediction_id": p["prediction_id"], "expected_output": label})),
            )
            .await;
        assert_eq!(status, 200, "{f:#}");
        (
            p["outputs"]["label"] == label,
            p["model_id"].as_str().unwrap().to_string(),
        )
    }

    async fn history(&self) -> Vec<Value> {
        let (status, h) = self
            .call(
                reqwest::Method::GET,
                "/v1/models/tickets/learning/history",
                None,
            )
            .await;
        assert_eq!(status, 200, "{h:#}");
        h["events"].as_array().unwrap().clone()
    }

    /// Serves the tickets in a loop until `kind` is in the history; returns the outcomes served.
    async fn stream_until(&self, shifted: bool, kind: &str, most: usize) -> usize {
        let all = tickets(shifted);
        for n in 0..most {
            let (text, label) = &all[(n * 5) % all.len()];
            self.serve_one(text, label).await;
            if n % 8 == 7 {
                tokio::time::sleep(Duration::from_millis(150)).await;
                if self.history().await.iter().any(|e| e["kind"] == kind) {
                    return n + 1;
                }
            }
        }
        let history = self.history().await;
        panic!("no `{kind}` after {most} outcomes: {history:#?}");
    }
}

fn kinds(history: &[Value]) -> Vec<String> {
    history
        .iter()
        .map(|e| e["kind"].as_str().unwrap().to_string())
        .collect()
}

fn learn_cli(url: &str, args: &[&str]) -> (bool, String) {
    let out = Command::new(env!("CARGO_BIN_EXE_promptopt"))
        .args(["learn", "--server", url, "--token", "learn-admin"])
        .args(args)
        .output()
        .unwrap();
    (
        out.status.success(),
        format!(
            "{}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        ),
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn drift_retrain_validate_promote_and_roll_back_unattended() {
    let refuse_new = Arc::new(AtomicBool::new(false));
    let lm = fake_lm(Arc::clone(&refuse_new));
    let home = tempfile::tempdir().unwrap();
    let config = home.path().join("serve.yaml");
    std::fs::write(
        &config,
        "models:\n  tickets:\n    learning:\n      check_every: '0.2'\n      window: 40\n      \
         min_new_labels: 20\n      psi_threshold: 0\n      \
         data: {holdout_fraction: 0.3, min_holdout: 8}\n      deploy: {policy: promote, margin: 0.05}\n      \
         guard: {min_outcomes: 30, margin: 0.1}\n      retry: {initial: 2s, max: 10s}\n",
    )
    .unwrap();
    let mut served = serve(home.path(), &lm, &config);
    let url = served.url.clone();
    let api = Api {
        client: reqwest::Client::new(),
        url: url.clone(),
    };

    // Version 1 learns the world as it is, and goes to production.
    let v1 = api.optimize("tickets", &tickets(false)).await;
    assert_eq!(v1, "tickets@1.0.0");
    let (status, _) = api
        .call(
            reqwest::Method::PUT,
            "/v1/models/tickets/aliases/production",
            Some(json!({"version": "1.0.0"})),
        )
        .await;
    assert_eq!(status, 200);

    // From now on the model answers only version 1's prompts, until it recovers below.
    refuse_new.store(true, Ordering::SeqCst);

    // Unknown feedback is refused.
    let (status, e) = api
        .call(
            reqwest::Method::POST,
            "/v1/feedback",
            Some(json!({"prediction_id": "pred-0000000000000000", "success": true})),
        )
        .await;
    assert_eq!(status, 404, "{e:#}");

    // Before the shift: production is right, no drift.
    let mut right = 0;
    for (text, label) in tickets(false).iter().cycle().take(48) {
        right += usize::from(api.serve_one(text, label).await.0);
    }
    assert_eq!(right, 48, "version 1 answers the old world");
    tokio::time::sleep(Duration::from_millis(1500)).await;
    assert!(
        !kinds(&api.history().await).contains(&"drift".to_string()),
        "{:#?}",
        api.history().await
    );

    // The shift: drift is seen within a bounded number of outcomes.
    let until_drift = api.stream_until(true, "drift", 200).await;
    assert!(until_drift <= 80, "drift seen after {until_drift} outcomes");

    // The first retraining fails (the model refuses to learn `payments`): recorded, production
    // stays, the next attempt waits for the backoff.
    api.stream_until(true, "retrain_failed", 200).await;
    let (_, status) = api
        .call(reqwest::Method::GET, "/v1/models/tickets/learning", None)
        .await;
    assert_eq!(status["production"], "1.0.0", "{status:#}");
    assert!(status["failures"].as_u64().unwrap() >= 1, "{status:#}");
    assert!(status["next_attempt_at"].as_f64().is_some(), "{status:#}");

    // The model recovers: the next trigger retrains, validates better and is promoted.
    refuse_new.store(false, Ordering::SeqCst);
    api.stream_until(true, "deployed", 400).await;
    let history = api.history().await;
    let validated = history
        .iter()
        .rev()
        .find(|e| e["kind"] == "validated")
        .unwrap();
    let new_score = validated["detail"]["candidate_score"].as_f64().unwrap();
    let old_score = validated["detail"]["current_score"].as_f64().unwrap();
    assert!(new_score >= old_score + 0.05, "{validated:#}");
    let candidate = validated["detail"]["candidate"]
        .as_str()
        .unwrap()
        .to_string();
    let (_, status) = api
        .call(reqwest::Method::GET, "/v1/models/tickets/learning", None)
        .await;
    assert_eq!(status["production"], candidate.as_str(), "{status:#}");

    // The new version serves the new world; the guard passes it.
    api.stream_until(true, "guard_passed", 200).await;
    let mut right = 0;
    for (text, label) in tickets(true) {
        let (ok, model_id) = api.serve_one(&text, &label).await;
        assert_eq!(model_id, format!("tickets@{candidate}"));
        right += usize::from(ok);
    }
    assert_eq!(right, 24, "the retrained version answers the new world");

    // A bad version put in production by hand is rolled back automatically.
    let mut wrong = tickets(true);
    for (_, label) in wrong.iter_mut().filter(|(_, l)| l == "payments") {
        *label = "bug".to_string();
    }
    let bad = api.optimize("tickets", &wrong).await;
    let bad_version = bad.split_once('@').unwrap().1.to_string();
    let (status, _) = api
        .call(
            reqwest::Method::PUT,
            "/v1/models/tickets/aliases/production",
            Some(json!({"version": bad_version})),
        )
        .await;
    assert_eq!(status, 200);
    api.stream_until(true, "rolled_back", 300).await;
    let (_, status) = api
        .call(reqwest::Method::GET, "/v1/models/tickets/learning", None)
        .await;
    assert_eq!(status["production"], candidate.as_str(), "{status:#}");

    // Every decision is in `learn history`, in order, with its reason.
    let (ok, text) = learn_cli(&url, &["history", "tickets"]);
    assert!(ok, "{text}");
    let order = [
        "enabled",
        "drift",
        "trigger",
        "retrain_submitted",
        "retrain_failed",
        "validated",
        "deployed",
        "guard_passed",
        "production_changed",
        "rolled_back",
    ];
    let mut at = 0;
    for kind in order {
        let found = text[at..]
            .find(&format!(" {kind} "))
            .unwrap_or_else(|| panic!("`{kind}` missing or out of order in:\n{text}"));
        at += found;
    }
    let (ok, text) = learn_cli(&url, &["status", "tickets"]);
    assert!(ok, "{text}");
    assert!(text.contains(&format!("Production: {candidate}")), "{text}");
    let export = home.path().join("labelled.jsonl");
    let (ok, text) = learn_cli(
        &url,
        &["export", "tickets", "--output", export.to_str().unwrap()],
    );
    assert!(ok, "{text}");
    let lines = std::fs::read_to_string(&export).unwrap();
    let first: Value = serde_json::from_str(lines.lines().next().unwrap()).unwrap();
    assert!(
        first["text"].is_string() && first["label"].is_string(),
        "{first}"
    );
    assert!(lines.lines().count() > 100);
    let (ok, text) = learn_cli(&url, &["status", "nothing-here"]);
    assert!(!ok && text.contains("no continuous learning"), "{text}");

    served.child.kill().unwrap();
    let _ = served.child.wait();
}

/// The `experiment` policy, with the loop turned on by `promptopt learn enable`: the validated
/// candidate goes into an A/B experiment against production, which concludes for it and
/// promotes it; the guard then watches it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_experiment_policy_lets_an_ab_test_decide() {
    let lm = fake_lm(Arc::new(AtomicBool::new(false)));
    let home = tempfile::tempdir().unwrap();
    let config = home.path().join("serve.yaml");
    std::fs::write(&config, "max_batch: 64\n").unwrap();
    let mut served = serve(home.path(), &lm, &config);
    let url = served.url.clone();
    let api = Api {
        client: reqwest::Client::new(),
        url: url.clone(),
    };
    let v1 = api.optimize("tickets", &tickets(false)).await;
    assert_eq!(v1, "tickets@1.0.0");

    // Bad settings are refused with the setting named; good ones turn the loop on.
    let learning = home.path().join("learning.yaml");
    std::fs::write(&learning, "learning:\n  deploy: {policy: sometimes}\n").unwrap();
    let (ok, text) = learn_cli(
        &url,
        &["enable", "tickets", "--config", learning.to_str().unwrap()],
    );
    assert!(!ok && text.contains("sometimes"), "{text}");
    std::fs::write(
        &learning,
        "learning:\n  check_every: '0.2'\n  window: 40\n  min_new_labels: 20\n  psi_threshold: 0\n  \
         data: {holdout_fraction: 0.3, min_holdout: 8}\n  \
         deploy: {policy: experiment, traffic: 0.5, margin: 0.05}\n  guard: {min_outcomes: 20}\n",
    )
    .unwrap();
    let (ok, text) = learn_cli(
        &url,
        &["enable", "tickets", "--config", learning.to_str().unwrap()],
    );
    assert!(ok, "{text}");
    assert!(text.contains("is on"), "{text}");

    for (text, label) in tickets(false).iter().cycle().take(40) {
        api.serve_one(text, label).await;
    }
    api.stream_until(true, "experiment_started", 300).await;
    let history = api.history().await;
    let started = history
        .iter()
        .find(|e| e["kind"] == "experiment_started")
        .unwrap();
    let experiment = started["detail"]["experiment"]
        .as_str()
        .unwrap()
        .to_string();
    let candidate = started["detail"]["candidate"].as_str().unwrap().to_string();
    let (_, view) = api
        .call(
            reqwest::Method::GET,
            &format!("/v1/experiments/{experiment}"),
            None,
        )
        .await;
    assert_eq!(view["experiment"]["state"], "running", "{view:#}");

    // The experiment splits production traffic, concludes for the candidate and promotes it.
    api.stream_until(true, "experiment_concluded", 1500).await;
    let (_, view) = api
        .call(
            reqwest::Method::GET,
            &format!("/v1/experiments/{experiment}"),
            None,
        )
        .await;
    assert_eq!(
        view["experiment"]["promoted_version"],
        candidate.as_str(),
        "{view:#}"
    );
    api.stream_until(true, "guard_passed", 300).await;
    let (_, status) = api
        .call(reqwest::Method::GET, "/v1/models/tickets/learning", None)
        .await;
    assert_eq!(status["production"], candidate.as_str(), "{status:#}");
    assert_eq!(status["phase"], "watching", "{status:#}");

    let (ok, text) = learn_cli(&url, &["disable", "tickets"]);
    assert!(ok && text.contains("is off"), "{text}");
    served.child.kill().unwrap();
    let _ = served.child.wait();
}
