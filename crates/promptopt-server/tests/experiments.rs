//! A/B experiments through the server: sticky routing of predictions, outcomes, the decision,
//! promotion, restarts; on SQLite and, when `PROMPTOPT_TEST_POSTGRES_URL` is set (by
//! `scripts/test.sh`), on a real PostgreSQL too.
#![allow(clippy::unwrap_used)]

mod common;

use std::collections::HashMap;
use std::sync::Arc;

use async_trait::async_trait;
use axum::body::Body;
use axum::http::{header, Request, StatusCode};
use axum::Router;
use http_body_util::BodyExt;
use promptopt_jobs::{JobQueue, SqliteQueue};
use promptopt_lm::{ScriptedLm, SharedLm};
use promptopt_registry::Registry;
use promptopt_server::{ModelLms, ServeConfig, Server, Tokens};
use serde_json::{json, Value};
use sha2::{Digest, Sha256};
use tower::ServiceExt;

/// A bucket in 0..100 from a text.
fn bucket(text: &str) -> u8 {
    Sha256::digest(text.as_bytes())[0] % 100
}

/// The fake model: the true label is in the text (`good` or `bad`); the version whose
/// instructions say "careful" errs on 20% of texts, the other on 30%.
struct TwoQualities;

#[async_trait]
impl ModelLms for TwoQualities {
    async fn lm_for(&self, _models: &[String]) -> Result<SharedLm, String> {
        Ok(Arc::new(ScriptedLm::new(|request| {
            let system = request.messages.first().map_or("", |m| m.content.as_str());
            let last = request.messages.last().map_or("", |m| m.content.as_str());
            let truth = if last.contains("bad") {
                "negative"
            } else {
                "positive"
            };
            let wrong = if truth == "negative" {
                "positive"
            } else {
                "negative"
            };
            let error_rate = if system.contains("careful") { 20 } else { 30 };
            Ok(if bucket(last) < error_rate {
                wrong
            } else {
                truth
            }
            .to_string())
        })))
    }
}

struct World {
    home: tempfile::TempDir,
    database: String,
    model: String,
}

/// The databases the suite runs on: SQLite, and PostgreSQL when one is given.
fn databases(home: &std::path::Path) -> Vec<String> {
    let mut list = vec![format!("sqlite:{}", home.join("server.sqlite").display())];
    match std::env::var("PROMPTOPT_TEST_POSTGRES_URL") {
        Ok(url) => list.push(url),
        Err(_) => assert!(
            std::env::var("PROMPTOPT_CI").is_err(),
            "PROMPTOPT_TEST_POSTGRES_URL must be set in CI (scripts/test.sh starts PostgreSQL)"
        ),
    }
    list
}

impl World {
    fn new(database: String, home: tempfile::TempDir) -> Self {
        // A model name of its own: a PostgreSQL database is shared by the tests.
        let model = format!("tickets-{:08x}", rand::random::<u32>());
        let registry = Registry::new(home.path());
        common::save(&registry, &model, "Classify the sentiment.");
        common::save(&registry, &model, "Classify the sentiment; be careful.");
        Self {
            home,
            database,
            model,
        }
    }

    /// A server over the world's registry and database (a new one is a restart).
    async fn server(&self) -> Router {
        self.server_with(ServeConfig::default()).await
    }

    /// The same with `config`.
    async fn server_with(&self, config: ServeConfig) -> Router {
        let queue = Arc::new(SqliteQueue::open(self.home.path().join("queue.sqlite")).unwrap());
        let mut tokens = Tokens::default();
        tokens.add_list("adm,app:predict", "test").unwrap();
        Server::new(
            Registry::new(self.home.path()),
            queue as Arc<dyn JobQueue>,
            Arc::new(TwoQualities),
            tokens,
            config,
        )
        .with_database(&self.database)
        .await
        .unwrap()
        .router()
    }
}

async fn send(
    router: &Router,
    method: &str,
    uri: &str,
    token: &str,
    body: Option<Value>,
) -> (StatusCode, Value) {
    let mut builder = Request::builder()
        .method(method)
        .uri(uri)
        .header(header::AUTHORIZATION, format!("Bearer {token}"));
    let body = match body {
        Some(b) => {
            builder = builder.header(header::CONTENT_TYPE, "application/json");
            Body::from(b.to_string())
        }
        None => Body::empty(),
    };
    let response = router
        .clone()
        .oneshot(builder.body(body).unwrap())
        .await
        .unwrap();
    let status = response.status();
    let bytes = response.into_body().collect().await.unwrap().to_bytes();
    let value = serde_json::from_slice(&bytes)
        .unwrap_or_else(|_| json!({"raw": String::from_utf8_lossy(&bytes)}));
    (status, value)
}

fn experiment(world: &World, name: &str, auto_promote: bool) -> Value {
    json!({
        "name": name,
        "variants": {"control": format!("{}@1.0.0", world.model), "treatment": format!("{}@1.0.1", world.model)},
        "traffic_split": {"control": 0.5, "treatment": 0.5},
        "success_metric": "exact_match",
        "minimum_sample_size": 200,
        "significance_level": 0.05,
        "auto_promote": auto_promote
    })
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_better_version_wins_is_promoted_and_serves_production() {
    let home = tempfile::tempdir().unwrap();
    for database in databases(home.path()) {
        let world = World::new(database, tempfile::tempdir().unwrap());
        let router = world.server().await;
        let name = format!("ab-{}", world.model);
        let (status, created) = send(
            &router,
            "POST",
            "/v1/experiments?start=true",
            "adm",
            Some(experiment(&world, &name, true)),
        )
        .await;
        assert_eq!(status, StatusCode::CREATED, "{created}");
        assert_eq!(created["experiment"]["state"], "running");

        // 2,000 predictions from 500 users, 4 each; the outcome of each is posted.
        let predict = format!("/v1/models/{}/predict", world.model);
        let mut seen: HashMap<String, String> = HashMap::new();
        let mut concluded_at = None;
        for i in 0..2000 {
            let user = format!("user-{}", i % 500);
            let good = i % 2 == 0;
            let text = format!("{} ticket {i}", if good { "good" } else { "bad" });
            let (status, p) = send(
                &router,
                "POST",
                &predict,
                "app",
                Some(json!({"inputs": {"text": text}, "user_id": user})),
            )
            .await;
            assert_eq!(status, StatusCode::OK, "{p}");
            let Some(variant) = p["variant"].as_str() else {
                // Concluded and promoted: no more splitting.
                concluded_at.get_or_insert(i);
                assert_eq!(p["model_id"], format!("{}@1.0.1", world.model));
                continue;
            };
            // Sticky: a user always gets the same variant.
            let first = seen
                .entry(user.clone())
                .or_insert_with(|| variant.to_string());
            assert_eq!(first, variant, "{user} moved");
            let expected = if good { "positive" } else { "negative" };
            let (status, f) = send(
                &router,
                "POST",
                "/v1/feedback",
                "app",
                Some(json!({"prediction_id": p["prediction_id"], "expected_output": expected})),
            )
            .await;
            assert_eq!(status, StatusCode::OK, "{f}");
        }
        let (_, view) = send(
            &router,
            "GET",
            &format!("/v1/experiments/{name}"),
            "app",
            None,
        )
        .await;
        assert_eq!(view["experiment"]["state"], "concluded", "{view:#}");
        assert_eq!(view["experiment"]["winner"], "treatment", "{view:#}");
        assert_eq!(view["experiment"]["promoted_version"], "1.0.1");
        assert_eq!(view["status"]["decision"]["outcome"], "winner");
        assert_eq!(view["status"]["kind"], "binary");
        assert!(
            concluded_at.is_some(),
            "the experiment never concluded: {view:#}"
        );
        let treatment_share =
            seen.values().filter(|v| *v == "treatment").count() as f64 / seen.len() as f64;
        assert!((0.4..0.6).contains(&treatment_share), "{treatment_share}");

        // Later predictions by `production` go to the winner.
        let (_, p) = send(
            &router,
            "POST",
            &format!("{predict}?version=production"),
            "app",
            Some(json!({"inputs": {"text": "good"}, "user_id": "user-1"})),
        )
        .await;
        assert_eq!(p["model_id"], format!("{}@1.0.1", world.model));
        assert!(p.get("variant").is_none());
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn assignment_is_sticky_across_restarts_and_outcomes_count_once() {
    let home = tempfile::tempdir().unwrap();
    for database in databases(home.path()) {
        let world = World::new(database, tempfile::tempdir().unwrap());
        let name = format!("sticky-{}", world.model);
        let first = world.server().await;
        let (status, _) = send(
            &first,
            "POST",
            "/v1/experiments?start=true",
            "adm",
            Some(experiment(&world, &name, false)),
        )
        .await;
        assert_eq!(status, StatusCode::CREATED);
        let predict = format!("/v1/models/{}/predict", world.model);
        let mut before = Vec::new();
        let mut last_prediction = String::new();
        for u in 0..40 {
            let (_, p) = send(
                &first,
                "POST",
                &predict,
                "app",
                Some(json!({"inputs": {"text": "good"}, "user_id": format!("u{u}")})),
            )
            .await;
            before.push(p["variant"].as_str().unwrap().to_string());
            last_prediction = p["prediction_id"].as_str().unwrap().to_string();
        }
        // Late and repeated feedback: the last write wins, counted once.
        for success in [true, false, true] {
            let (status, f) = send(
                &first,
                "POST",
                "/v1/feedback",
                "app",
                Some(json!({"prediction_id": last_prediction, "success": success})),
            )
            .await;
            assert_eq!(status, StatusCode::OK, "{f}");
        }
        drop(first);
        let second = world.server().await;
        for (u, variant) in before.iter().enumerate() {
            let (_, p) = send(
                &second,
                "POST",
                &predict,
                "app",
                Some(json!({"inputs": {"text": "good"}, "user_id": format!("u{u}")})),
            )
            .await;
            assert_eq!(
                p["variant"].as_str(),
                Some(variant.as_str()),
                "u{u} moved after a restart"
            );
        }
        let (_, view) = send(
            &second,
            "GET",
            &format!("/v1/experiments/{name}"),
            "app",
            None,
        )
        .await;
        let outcomes: u64 = view["status"]["variants"]
            .as_array()
            .unwrap()
            .iter()
            .map(|v| v["outcomes"].as_u64().unwrap())
            .sum();
        assert_eq!(outcomes, 1, "{view:#}");
        let units: u64 = view["status"]["variants"]
            .as_array()
            .unwrap()
            .iter()
            .map(|v| v["units"].as_u64().unwrap())
            .sum();
        assert_eq!(units, 40, "{view:#}");
        assert_eq!(view["status"]["decision"]["outcome"], "continue");

        // No winner yet: promote needs one (or an explicit variant); stop ends it.
        let (status, _) = send(
            &second,
            "POST",
            &format!("/v1/experiments/{name}/promote"),
            "adm",
            None,
        )
        .await;
        assert_eq!(status, StatusCode::CONFLICT);
        let (status, view) = send(
            &second,
            "POST",
            &format!("/v1/experiments/{name}/stop"),
            "adm",
            None,
        )
        .await;
        assert_eq!(status, StatusCode::OK);
        assert_eq!(view["experiment"]["state"], "stopped");
        let (_, p) = send(
            &second,
            "POST",
            &predict,
            "app",
            Some(json!({"inputs": {"text": "good"}, "user_id": "u1"})),
        )
        .await;
        assert!(p.get("variant").is_none(), "{p}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_experiments_and_feedback_are_refused() {
    let home = tempfile::tempdir().unwrap();
    for database in databases(home.path()) {
        let world = World::new(database, tempfile::tempdir().unwrap());
        let router = world.server().await;
        let name = format!("bad-{}", world.model);
        let with = |key: &str, value: Value| {
            let mut e = experiment(&world, &name, false);
            e[key] = value;
            e
        };
        let cases = [
            (
                with("traffic_split", json!({"control": 0, "treatment": 0})),
                "traffic_split",
            ),
            (
                with(
                    "variants",
                    json!({"control": format!("{}@1.0.0", world.model), "treatment": format!("{}@9.9.9", world.model)}),
                ),
                "variants.treatment",
            ),
            (
                with(
                    "variants",
                    json!({"control": format!("{}@1.0.0", world.model)}),
                ),
                "variants",
            ),
            (with("success_metric", json!("vibes")), "success_metric"),
            (with("significance_level", json!(2)), "significance_level"),
            (with("unknown", json!(1)), "unknown"),
        ];
        for (body, field) in cases {
            let (status, e) = send(&router, "POST", "/v1/experiments", "adm", Some(body)).await;
            assert_eq!(status, StatusCode::UNPROCESSABLE_ENTITY, "{e}");
            assert_eq!(e["error"]["field"], field, "{e}");
        }
        let (_, list) = send(&router, "GET", "/v1/experiments", "app", None).await;
        assert!(
            !list["experiments"]
                .as_array()
                .unwrap()
                .iter()
                .any(|e| e["spec"]["name"] == name.as_str()),
            "a refused experiment was stored"
        );
        // Two running experiments on one model.
        let (status, _) = send(
            &router,
            "POST",
            "/v1/experiments?start=true",
            "adm",
            Some(experiment(&world, &name, false)),
        )
        .await;
        assert_eq!(status, StatusCode::CREATED);
        let other = format!("{name}-2");
        let (status, e) = send(
            &router,
            "POST",
            "/v1/experiments?start=true",
            "adm",
            Some(experiment(&world, &other, false)),
        )
        .await;
        assert_eq!(status, StatusCode::CONFLICT, "{e}");
        assert!(e["error"]["message"]
            .as_str()
            .unwrap()
            .contains("already has the running experiment"));
        let (status, _) = send(
            &router,
            "POST",
            "/v1/experiments",
            "adm",
            Some(experiment(&world, &name, false)),
        )
        .await;
        assert_eq!(status, StatusCode::CONFLICT);
        // A version under a running experiment is not deleted.
        let (status, e) = send(
            &router,
            "DELETE",
            &format!("/v1/models/{}/versions/1.0.1", world.model),
            "adm",
            None,
        )
        .await;
        assert_eq!(status, StatusCode::CONFLICT, "{e}");
        // Feedback for an unknown prediction, or without exactly one outcome.
        let (status, e) = send(
            &router,
            "POST",
            "/v1/feedback",
            "app",
            Some(json!({"prediction_id": "pred-0000000000000000", "success": true})),
        )
        .await;
        assert_eq!(status, StatusCode::NOT_FOUND, "{e}");
        assert_eq!(e["error"]["field"], "prediction_id");
        let (status, _) = send(
            &router,
            "POST",
            "/v1/feedback",
            "app",
            Some(json!({"prediction_id": "x", "success": true, "score": 1.0})),
        )
        .await;
        assert_eq!(status, StatusCode::UNPROCESSABLE_ENTITY);
        let (status, _) = send(
            &router,
            "POST",
            "/v1/experiments",
            "app",
            Some(experiment(&world, "x", false)),
        )
        .await;
        assert_eq!(status, StatusCode::FORBIDDEN);
    }
}

/// The continuous-learning API on each database: settings checked and stored, the prediction
/// log joined to outcomes (live metric per version, labelled export), history, disabling, and
/// the loop lock that lets one server at a time run a model's loop.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn learning_settings_status_history_and_export() {
    let home = tempfile::tempdir().unwrap();
    for database in databases(home.path()) {
        let world = World::new(database.clone(), tempfile::tempdir().unwrap());
        let router = world.server().await;
        let learning = format!("/v1/models/{}/learning", world.model);
        let (status, e) = send(&router, "GET", &learning, "app", None).await;
        assert_eq!(status, StatusCode::NOT_FOUND, "{e}");
        assert!(e["error"]["message"]
            .as_str()
            .unwrap()
            .contains("promptopt learn enable"));
        let (status, e) = send(
            &router,
            "PUT",
            &learning,
            "adm",
            Some(json!({"data": {"holdout_fraction": 2.0}})),
        )
        .await;
        assert_eq!(status, StatusCode::UNPROCESSABLE_ENTITY, "{e}");
        assert_eq!(e["error"]["field"], "data.holdout_fraction", "{e}");
        let (status, e) = send(&router, "PUT", &learning, "app", Some(json!({}))).await;
        assert_eq!(status, StatusCode::FORBIDDEN, "{e}");
        let (status, enabled) = send(
            &router,
            "PUT",
            &learning,
            "adm",
            Some(json!({"window": 10, "triggers": {"new_labels": 50}})),
        )
        .await;
        assert_eq!(status, StatusCode::OK, "{enabled}");
        assert_eq!(enabled["phase"], "watching");
        assert_eq!(enabled["config"]["window"], 10);

        // Ten predictions of the latest version (no `production` alias yet), each judged.
        let predict = format!("/v1/models/{}/predict", world.model);
        let mut right = 0;
        for i in 0..10 {
            let good = i % 2 == 0;
            let text = format!("{} ticket {i}", if good { "good" } else { "bad" });
            let (status, p) = send(
                &router,
                "POST",
                &predict,
                "app",
                Some(json!({"inputs": {"text": text}})),
            )
            .await;
            assert_eq!(status, StatusCode::OK, "{p}");
            assert_eq!(p["model_id"], format!("{}@1.0.1", world.model));
            let expected = if good { "positive" } else { "negative" };
            right += usize::from(p["outputs"]["label"] == expected);
            let (status, _) = send(
                &router,
                "POST",
                "/v1/feedback",
                "app",
                Some(json!({"prediction_id": p["prediction_id"], "expected_output": expected})),
            )
            .await;
            assert_eq!(status, StatusCode::OK);
        }
        let (_, status_view) = send(&router, "GET", &learning, "app", None).await;
        let live = &status_view["live"][0];
        assert_eq!(
            live["model_id"],
            format!("{}@1.0.1", world.model),
            "{status_view:#}"
        );
        assert_eq!(live["outcomes"], 10);
        assert!((live["mean"].as_f64().unwrap() - right as f64 / 10.0).abs() < 1e-9);
        assert_eq!(
            status_view["prediction_log"]["written"], 10,
            "{status_view:#}"
        );

        // The labelled predictions as a dataset: the inputs with the expected outputs.
        let (status, text) = send(
            &router,
            "GET",
            &format!("{learning}/export?since=1h"),
            "adm",
            None,
        )
        .await;
        assert_eq!(status, StatusCode::OK);
        let lines: Vec<Value> = text["raw"]
            .as_str()
            .unwrap()
            .lines()
            .map(|l| serde_json::from_str(l).unwrap())
            .collect();
        assert_eq!(lines.len(), 10);
        for line in &lines {
            let good = line["text"].as_str().unwrap().starts_with("good");
            assert_eq!(line["label"], if good { "positive" } else { "negative" });
        }
        let (status, e) = send(
            &router,
            "GET",
            &format!("{learning}/export?since=soon"),
            "adm",
            None,
        )
        .await;
        assert_eq!(status, StatusCode::UNPROCESSABLE_ENTITY, "{e}");

        // Nothing was deployed: nothing to roll back to.
        let (status, e) = send(
            &router,
            "POST",
            &format!("{learning}/rollback"),
            "adm",
            None,
        )
        .await;
        assert_eq!(status, StatusCode::CONFLICT, "{e}");
        let (status, disabled) = send(&router, "DELETE", &learning, "adm", None).await;
        assert_eq!(status, StatusCode::OK, "{disabled}");
        assert_eq!(disabled["enabled"], false);
        let (_, history) = send(&router, "GET", &format!("{learning}/history"), "app", None).await;
        let kinds: Vec<_> = history["events"]
            .as_array()
            .unwrap()
            .iter()
            .map(|e| e["kind"].as_str().unwrap())
            .collect();
        assert_eq!(kinds, ["enabled", "disabled"], "{history:#}");

        // Two servers race for the model's loop: one wins, the other waits for expiry.
        let a = promptopt_experiments::ExperimentStore::open(&database)
            .await
            .unwrap();
        let b = promptopt_experiments::ExperimentStore::open(&database)
            .await
            .unwrap();
        let (x, y) = tokio::join!(
            a.lock_learning(&world.model, "a", 100.0, 30.0),
            b.lock_learning(&world.model, "b", 100.0, 30.0)
        );
        assert!(
            x.unwrap() ^ y.unwrap(),
            "{database}: exactly one holds the loop"
        );
        assert!(a
            .lock_learning(&world.model, "a", 131.0, 30.0)
            .await
            .unwrap());
        assert!(!b
            .lock_learning(&world.model, "b", 132.0, 30.0)
            .await
            .unwrap());
    }
}

/// A model's log policy: hashed fields are stored as digests, unsampled predictions are not
/// logged (their feedback is 404) and are counted.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_prediction_log_hashes_and_samples_per_model() {
    let home = tempfile::tempdir().unwrap();
    let database = format!("sqlite:{}", home.path().join("server.sqlite").display());
    let world = World::new(database.clone(), tempfile::tempdir().unwrap());
    let config = |yaml: &str| -> ServeConfig {
        let path = world.home.path().join("serve.yaml");
        std::fs::write(&path, yaml).unwrap();
        ServeConfig::from_path(&path).unwrap()
    };
    let predict = format!("/v1/models/{}/predict", world.model);
    let hashed = world
        .server_with(config(&format!(
            "models: {{{}: {{log: {{hash: [text]}}}}}}\n",
            world.model
        )))
        .await;
    let (_, p) = send(
        &hashed,
        "POST",
        &predict,
        "app",
        Some(json!({"inputs": {"text": "good service, card 4111"}})),
    )
    .await;
    let (status, _) = send(
        &hashed,
        "POST",
        "/v1/feedback",
        "app",
        Some(json!({"prediction_id": p["prediction_id"], "success": true})),
    )
    .await;
    assert_eq!(status, StatusCode::OK);
    let store = promptopt_experiments::ExperimentStore::open(&database)
        .await
        .unwrap();
    let logged = store
        .prediction(p["prediction_id"].as_str().unwrap())
        .await
        .unwrap()
        .unwrap();
    let text = logged.inputs["text"].as_str().unwrap();
    assert!(
        text.starts_with("sha256:") && !text.contains("4111"),
        "{text}"
    );
    assert!(logged.latency_ms.is_some());
    assert!(logged.prompt_tokens.is_some());

    let unsampled = world
        .server_with(config(&format!(
            "models: {{{}: {{log: {{sample_rate: 0.0}}}}}}\n",
            world.model
        )))
        .await;
    let (_, p) = send(
        &unsampled,
        "POST",
        &predict,
        "app",
        Some(json!({"inputs": {"text": "good"}})),
    )
    .await;
    let (status, e) = send(
        &unsampled,
        "POST",
        "/v1/feedback",
        "app",
        Some(json!({"prediction_id": p["prediction_id"], "success": true})),
    )
    .await;
    assert_eq!(status, StatusCode::NOT_FOUND, "{e}");
}
