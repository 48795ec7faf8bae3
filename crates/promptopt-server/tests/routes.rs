//! The routes as a client sees them, through `tower::ServiceExt::oneshot` on the router: auth,
//! predictions and hot swaps, models, jobs and their event stream, limits, bad input.
#![allow(clippy::unwrap_used)]

mod common;

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use axum::body::Body;
use axum::http::{header, Request, StatusCode};
use axum::Router;
use http_body_util::BodyExt;
use promptopt_jobs::{JobQueue, SqliteQueue};
use promptopt_lm::{ChatRequest, ChatResponse, Lm, LmError, ScriptedLm, SharedLm};
use promptopt_registry::Registry;
use promptopt_server::{ModelLms, ServeConfig, Server, Tokens};
use serde_json::{json, Value};
use tower::ServiceExt;

/// Answers `negative` for texts with "bad", else `positive`; waits 600 ms first when the text
/// says "slow" (to hold a request in flight), counting the slow calls that began.
struct Scripted(Arc<AtomicU64>);

struct SlowWhenAsked(ScriptedLm, Arc<AtomicU64>);

#[async_trait]
impl Lm for SlowWhenAsked {
    async fn chat(&self, request: &ChatRequest) -> Result<ChatResponse, LmError> {
        let last = request.messages.last().map_or("", |m| m.content.as_str());
        if last.contains("slow") {
            self.1.fetch_add(1, Ordering::SeqCst);
            tokio::time::sleep(Duration::from_millis(600)).await;
        }
        self.0.chat(request).await
    }
}

#[async_trait]
impl ModelLms for Scripted {
    async fn lm_for(&self, _models: &[String]) -> Result<SharedLm, String> {
        let scripted = ScriptedLm::new(|request| {
            let last = request.messages.last().map_or("", |m| m.content.as_str());
            Ok(if last.contains("bad") {
                "negative"
            } else {
                "positive"
            }
            .into())
        })
        .with_cost_per_call(0.001);
        Ok(Arc::new(SlowWhenAsked(scripted, Arc::clone(&self.0))))
    }
}

struct World {
    _home: tempfile::TempDir,
    slow_started: Arc<AtomicU64>,
    registry: Registry,
    queue: Arc<SqliteQueue>,
    router: Router,
}

fn world(config: ServeConfig) -> World {
    let home = tempfile::tempdir().unwrap();
    let registry = Registry::new(home.path());
    common::save(&registry, "sentiment", "Classify the sentiment.");
    let queue = Arc::new(SqliteQueue::open(home.path().join("queue.sqlite")).unwrap());
    let mut tokens = Tokens::default();
    tokens
        .add_list("adm,pred:predict,opt:optimize", "test")
        .unwrap();
    let slow_started = Arc::new(AtomicU64::new(0));
    let server = Server::new(
        registry.clone(),
        Arc::clone(&queue) as Arc<dyn JobQueue>,
        Arc::new(Scripted(Arc::clone(&slow_started))),
        tokens,
        config,
    );
    World {
        slow_started,
        router: server.router(),
        registry,
        queue,
        _home: home,
    }
}

struct Reply {
    status: StatusCode,
    headers: axum::http::HeaderMap,
    text: String,
}

impl World {
    /// Waits until `n` slow calls have begun.
    async fn slow_calls_began(&self, n: u64) {
        let started = std::time::Instant::now();
        while self.slow_started.load(Ordering::SeqCst) < n {
            assert!(
                started.elapsed() < Duration::from_secs(30),
                "the slow call never began"
            );
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
    }
}

impl Reply {
    fn json(&self) -> Value {
        serde_json::from_str(&self.text).unwrap_or_else(|e| panic!("{e}: {}", self.text))
    }

    fn error_code(&self) -> String {
        self.json()["error"]["code"]
            .as_str()
            .unwrap_or("")
            .to_string()
    }
}

async fn send(router: &Router, request: Request<Body>) -> Reply {
    let response = router.clone().oneshot(request).await.unwrap();
    let status = response.status();
    let headers = response.headers().clone();
    let bytes = response.into_body().collect().await.unwrap().to_bytes();
    Reply {
        status,
        headers,
        text: String::from_utf8_lossy(&bytes).into_owned(),
    }
}

fn call(method: &str, uri: &str, token: Option<&str>, body: Option<Value>) -> Request<Body> {
    let mut builder = Request::builder().method(method).uri(uri);
    if let Some(token) = token {
        builder = builder.header(header::AUTHORIZATION, format!("Bearer {token}"));
    }
    match body {
        Some(body) => builder
            .header(header::CONTENT_TYPE, "application/json")
            .body(Body::from(body.to_string()))
            .unwrap(),
        None => builder.body(Body::empty()).unwrap(),
    }
}

fn raw(method: &str, uri: &str, content_type: &str, body: impl Into<Body>) -> Request<Body> {
    Request::builder()
        .method(method)
        .uri(uri)
        .header(header::AUTHORIZATION, "Bearer adm")
        .header(header::CONTENT_TYPE, content_type)
        .body(body.into())
        .unwrap()
}

fn optimization(name: &str) -> Value {
    json!({
        "name": name,
        "evaluation_metric": "exact_match",
        "algorithm": "bootstrapfewshot",
        "model": "openai/test-model",
        "input_keys": ["text"],
        "output_keys": ["label"],
        "training_examples": [
            {"text": "a good film", "label": "positive"},
            {"text": "a bad film", "label": "negative"}
        ],
        "validation_examples": [
            {"text": "awful", "label": "negative"},
            {"text": "great fun", "label": "positive"}
        ]
    })
}

#[tokio::test]
async fn tokens_and_scopes_guard_every_api_route() {
    let w = world(ServeConfig::default());
    let r = send(&w.router, call("GET", "/v1/models", None, None)).await;
    assert_eq!(r.status, StatusCode::UNAUTHORIZED);
    assert_eq!(r.error_code(), "unauthorized");
    assert_eq!(r.headers[header::WWW_AUTHENTICATE], "Bearer");
    let r = send(&w.router, call("GET", "/v1/models", Some("wrong"), None)).await;
    assert_eq!(r.status, StatusCode::UNAUTHORIZED);
    assert!(!r.text.contains("wrong"), "{}", r.text);
    let r = send(&w.router, call("GET", "/v1/jobs", Some("pred"), None)).await;
    assert_eq!(r.status, StatusCode::FORBIDDEN);
    assert!(r.text.contains("`optimize` scope"), "{}", r.text);
    let body = json!({"version": "1.0.0"});
    let r = send(
        &w.router,
        call(
            "PUT",
            "/v1/models/sentiment/aliases/production",
            Some("opt"),
            Some(body),
        ),
    )
    .await;
    assert_eq!(r.status, StatusCode::FORBIDDEN);
    let r = send(&w.router, call("GET", "/metrics", Some("pred"), None)).await;
    assert_eq!(r.status, StatusCode::FORBIDDEN);
    for open in ["/healthz", "/readyz", "/openapi.json"] {
        let r = send(&w.router, call("GET", open, None, None)).await;
        assert_eq!(r.status, StatusCode::OK, "{open}: {}", r.text);
    }
    // Reading models needs any scope; every response carries a request id.
    let r = send(&w.router, call("GET", "/v1/models", Some("opt"), None)).await;
    assert_eq!(r.status, StatusCode::OK);
    assert!(r.headers["x-request-id"]
        .to_str()
        .unwrap()
        .starts_with("req-"));
    assert_eq!(r.json()["models"][0]["name"], "sentiment");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn predictions_one_or_a_batch_and_an_alias_move_swaps_the_version() {
    let w = world(ServeConfig::default());
    let r = send(
        &w.router,
        call(
            "POST",
            "/v1/models/sentiment/predict",
            Some("pred"),
            Some(json!({"inputs": {"text": "a bad film"}, "user_id": "u1"})),
        ),
    )
    .await;
    assert_eq!(r.status, StatusCode::OK, "{}", r.text);
    let body = r.json();
    assert_eq!(body["outputs"]["label"], "negative");
    assert_eq!(body["model_id"], "sentiment@1.0.0");
    assert!(body["prediction_id"].as_str().unwrap().starts_with("pred-"));
    assert!(body["usage"]["prompt_tokens"].as_u64().unwrap() > 0);
    assert!((body["cost_usd"].as_f64().unwrap() - 0.001).abs() < 1e-9);

    let batch = json!({"instances": [{"text": "good"}, {"text": "bad"}]});
    let r = send(
        &w.router,
        call(
            "POST",
            "/v1/models/sentiment/predict?version=1.0.0",
            Some("pred"),
            Some(batch),
        ),
    )
    .await;
    assert_eq!(r.status, StatusCode::OK, "{}", r.text);
    let body = r.json();
    let labels: Vec<&str> = body["predictions"]
        .as_array()
        .unwrap()
        .iter()
        .map(|p| p["outputs"]["label"].as_str().unwrap())
        .collect();
    assert_eq!(labels, ["positive", "negative"]);

    // `production` points at 1.0.0; a request in flight when it moves to 1.0.1 finishes on 1.0.0.
    common::save(&w.registry, "sentiment", "Classify the sentiment, briefly.");
    let promote = |v: &str| {
        call(
            "PUT",
            "/v1/models/sentiment/aliases/production",
            Some("adm"),
            Some(json!({"version": v})),
        )
    };
    let r = send(&w.router, promote("1.0.0")).await;
    assert_eq!(r.status, StatusCode::OK, "{}", r.text);
    assert_eq!(r.json()["previous"], Value::Null);
    let slow = {
        let router = w.router.clone();
        tokio::spawn(async move {
            send(
                &router,
                call(
                    "POST",
                    "/v1/models/sentiment/predict?version=production",
                    Some("pred"),
                    Some(json!({"inputs": {"text": "slow"}})),
                ),
            )
            .await
        })
    };
    w.slow_calls_began(1).await;
    let r = send(&w.router, promote("1.0.1")).await;
    assert_eq!(r.json()["previous"], "1.0.0");
    let fast = send(
        &w.router,
        call(
            "POST",
            "/v1/models/sentiment/predict?version=production",
            Some("pred"),
            Some(json!({"inputs": {"text": "ok"}})),
        ),
    )
    .await;
    assert_eq!(fast.json()["model_id"], "sentiment@1.0.1");
    let slow = slow.await.unwrap();
    assert_eq!(slow.status, StatusCode::OK, "{}", slow.text);
    assert_eq!(slow.json()["model_id"], "sentiment@1.0.0");

    // The metrics count predictions by model and version.
    let r = send(&w.router, call("GET", "/metrics", Some("adm"), None)).await;
    assert!(
        r.text
            .contains("promptopt_predictions_total{model=\"sentiment\",version=\"1.0.0\"} 4"),
        "{}",
        r.text
    );
    assert!(r
        .text
        .contains("promptopt_predictions_total{model=\"sentiment\",version=\"1.0.1\"} 1"));
    assert!(r.text.contains("promptopt_queue_up 1"));
}

#[tokio::test]
async fn bad_predictions_get_4xx_naming_the_field() {
    let config = ServeConfig {
        max_body_bytes: 2048,
        max_batch: 3,
        ..ServeConfig::default()
    };
    let w = world(config);
    let predict = "/v1/models/sentiment/predict";
    let cases: Vec<(Request<Body>, StatusCode, &str, Option<&str>)> = vec![
        (
            call("POST", predict, Some("pred"), Some(json!({"inputs": {}}))),
            StatusCode::UNPROCESSABLE_ENTITY,
            "invalid_request",
            Some("inputs.text"),
        ),
        (
            call(
                "POST",
                predict,
                Some("pred"),
                Some(json!({"inputs": {"text": "x", "extra": 1}})),
            ),
            StatusCode::UNPROCESSABLE_ENTITY,
            "invalid_request",
            Some("inputs.extra"),
        ),
        (
            call(
                "POST",
                predict,
                Some("pred"),
                Some(json!({"input": {"text": "x"}})),
            ),
            StatusCode::UNPROCESSABLE_ENTITY,
            "invalid_request",
            Some("input"),
        ),
        (
            call(
                "POST",
                predict,
                Some("pred"),
                Some(json!({"inputs": "text"})),
            ),
            StatusCode::UNPROCESSABLE_ENTITY,
            "invalid_request",
            Some("inputs"),
        ),
        (
            call("POST", predict, Some("pred"), Some(json!({}))),
            StatusCode::UNPROCESSABLE_ENTITY,
            "invalid_request",
            Some("inputs"),
        ),
        (
            call(
                "POST",
                predict,
                Some("pred"),
                Some(
                    json!({"instances": [{"text": "a"}, {"text": "b"}, {"text": "c"}, {"text": "d"}]}),
                ),
            ),
            StatusCode::UNPROCESSABLE_ENTITY,
            "invalid_request",
            Some("instances"),
        ),
        (
            raw("POST", predict, "application/json", "{\"inputs\": "),
            StatusCode::BAD_REQUEST,
            "bad_request",
            None,
        ),
        (
            raw("POST", predict, "text/plain", "hello"),
            StatusCode::UNSUPPORTED_MEDIA_TYPE,
            "unsupported_media_type",
            None,
        ),
        (
            raw("POST", predict, "application/json", "x".repeat(5000)),
            StatusCode::PAYLOAD_TOO_LARGE,
            "payload_too_large",
            None,
        ),
        (
            call(
                "POST",
                "/v1/models/sentiment/predict?version=9.9.9",
                Some("pred"),
                Some(json!({"inputs": {"text": "x"}})),
            ),
            StatusCode::NOT_FOUND,
            "not_found",
            None,
        ),
        (
            call(
                "POST",
                "/v1/models/sentiment/predict?version=nope",
                Some("pred"),
                Some(json!({"inputs": {"text": "x"}})),
            ),
            StatusCode::NOT_FOUND,
            "not_found",
            None,
        ),
        (
            call(
                "POST",
                "/v1/models/sentiment/predict?versoin=1.0.0",
                Some("pred"),
                Some(json!({"inputs": {"text": "x"}})),
            ),
            StatusCode::UNPROCESSABLE_ENTITY,
            "invalid_request",
            Some("version"),
        ),
        (
            call(
                "POST",
                "/v1/models/..%2F..%2Fetc/predict",
                Some("pred"),
                Some(json!({"inputs": {"text": "x"}})),
            ),
            StatusCode::UNPROCESSABLE_ENTITY,
            "invalid_request",
            Some("name"),
        ),
        (
            call(
                "GET",
                "/v1/models/..%2Fsecrets/versions/1.0.0",
                Some("pred"),
                None,
            ),
            StatusCode::UNPROCESSABLE_ENTITY,
            "invalid_request",
            Some("name"),
        ),
        (
            call("GET", "/v1/models/nobody", Some("pred"), None),
            StatusCode::NOT_FOUND,
            "not_found",
            None,
        ),
        (
            call("GET", "/v1/nowhere", Some("pred"), None),
            StatusCode::NOT_FOUND,
            "not_found",
            None,
        ),
        (
            call("DELETE", "/v1/models", Some("adm"), None),
            StatusCode::METHOD_NOT_ALLOWED,
            "method_not_allowed",
            None,
        ),
    ];
    for (i, (request, status, code, field)) in cases.into_iter().enumerate() {
        let r = send(&w.router, request).await;
        assert_eq!(r.status, status, "case {i}: {}", r.text);
        assert_eq!(r.error_code(), code, "case {i}: {}", r.text);
        assert_eq!(
            r.json()["error"]["field"].as_str(),
            field,
            "case {i}: {}",
            r.text
        );
        assert!(!r.json()["error"]["message"].as_str().unwrap().is_empty());
    }
}

#[tokio::test]
async fn versions_under_an_alias_are_not_deleted() {
    let w = world(ServeConfig::default());
    common::save(&w.registry, "sentiment", "Second.");
    let r = send(
        &w.router,
        call(
            "PUT",
            "/v1/models/sentiment/aliases/production",
            Some("adm"),
            Some(json!({"version": "latest"})),
        ),
    )
    .await;
    assert_eq!(r.json()["version"], "1.0.1");
    let r = send(
        &w.router,
        call(
            "GET",
            "/v1/models/sentiment/versions/production",
            Some("pred"),
            None,
        ),
    )
    .await;
    assert_eq!(r.json()["model_id"], "sentiment@1.0.1");
    assert_eq!(r.json()["aliases"], json!(["production"]));
    assert_eq!(r.json()["artifact"]["model"]["model"], "scripted/test");
    let r = send(
        &w.router,
        call(
            "DELETE",
            "/v1/models/sentiment/versions/1.0.1",
            Some("adm"),
            None,
        ),
    )
    .await;
    assert_eq!(r.status, StatusCode::CONFLICT, "{}", r.text);
    assert!(r.text.contains("`production`"));
    let r = send(
        &w.router,
        call(
            "DELETE",
            "/v1/models/sentiment/aliases/production",
            Some("adm"),
            None,
        ),
    )
    .await;
    assert_eq!(r.status, StatusCode::NO_CONTENT);
    let r = send(
        &w.router,
        call(
            "DELETE",
            "/v1/models/sentiment/versions/1.0.1",
            Some("adm"),
            None,
        ),
    )
    .await;
    assert_eq!(r.status, StatusCode::NO_CONTENT, "{}", r.text);
    let r = send(
        &w.router,
        call("GET", "/v1/models/sentiment", Some("pred"), None),
    )
    .await;
    assert_eq!(r.json()["versions"], json!(["1.0.0"]));
    let r = send(
        &w.router,
        call(
            "DELETE",
            "/v1/models/sentiment/versions/latest",
            Some("adm"),
            None,
        ),
    )
    .await;
    assert_eq!(r.status, StatusCode::UNPROCESSABLE_ENTITY);
    assert_eq!(r.json()["error"]["field"], "version");
}

#[tokio::test]
async fn optimizations_are_queued_followed_cancelled_and_retried() {
    let w = world(ServeConfig::default());
    let r = send(
        &w.router,
        call(
            "POST",
            "/v1/optimizations?priority=high&timeout=10m",
            Some("opt"),
            Some(optimization("sst")),
        ),
    )
    .await;
    assert_eq!(r.status, StatusCode::CREATED, "{}", r.text);
    let job = r.json();
    let id = job["job_id"].as_str().unwrap().to_string();
    assert_eq!(job["state"], "queued");
    assert_eq!(job["priority"], "high");
    assert_eq!(job["timeout_seconds"], 600.0);
    assert_eq!(r.headers[header::LOCATION], format!("/v1/jobs/{id}"));
    // The job holds the request as submitted.
    let spec = w.queue.spec(&id).await.unwrap();
    assert_eq!(spec.request["name"], "sst");

    // YAML is accepted too.
    let yaml = "name: sst-yaml\nevaluation_metric: exact_match\nalgorithm: bootstrapfewshot\nmodel: openai/test-model\ninput_keys: [text]\noutput_keys: [label]\ntraining_examples:\n  - {text: good, label: positive}\n";
    let r = send(
        &w.router,
        raw("POST", "/v1/optimizations", "application/yaml", yaml),
    )
    .await;
    assert_eq!(r.status, StatusCode::CREATED, "{}", r.text);

    let r = send(
        &w.router,
        call("GET", "/v1/jobs?state=queued&limit=10", Some("opt"), None),
    )
    .await;
    assert_eq!(r.json()["jobs"].as_array().unwrap().len(), 2);
    let r = send(
        &w.router,
        call("GET", &format!("/v1/jobs/{id}/result"), Some("opt"), None),
    )
    .await;
    assert_eq!(r.status, StatusCode::CONFLICT);
    let r = send(
        &w.router,
        call("POST", &format!("/v1/jobs/{id}/cancel"), Some("opt"), None),
    )
    .await;
    assert_eq!(r.json()["state"], "cancelled");
    let r = send(
        &w.router,
        call("POST", &format!("/v1/jobs/{id}/cancel"), Some("opt"), None),
    )
    .await;
    assert_eq!(r.status, StatusCode::CONFLICT);

    // The event stream of an ended job gives its record and ends.
    let r = tokio::time::timeout(
        Duration::from_secs(10),
        send(
            &w.router,
            call("GET", &format!("/v1/jobs/{id}/events"), Some("opt"), None),
        ),
    )
    .await
    .unwrap();
    assert_eq!(r.status, StatusCode::OK);
    assert!(r.headers[header::CONTENT_TYPE]
        .to_str()
        .unwrap()
        .starts_with("text/event-stream"));
    assert!(r.text.contains("event: job\n"), "{}", r.text);
    assert!(r.text.contains("event: end\n"), "{}", r.text);
    assert!(r.text.contains("\"state\":\"cancelled\""), "{}", r.text);

    let r = send(
        &w.router,
        call("POST", &format!("/v1/jobs/{id}/retry"), Some("opt"), None),
    )
    .await;
    assert_eq!(r.json()["state"], "queued");
    let r = send(
        &w.router,
        call("GET", "/v1/jobs/job-0000000000000000", Some("opt"), None),
    )
    .await;
    assert_eq!(r.status, StatusCode::NOT_FOUND);
    let r = send(
        &w.router,
        call("GET", "/v1/jobs/..%2Fetc", Some("opt"), None),
    )
    .await;
    assert_eq!(r.status, StatusCode::NOT_FOUND);
}

#[tokio::test]
async fn bad_optimization_requests_are_refused_and_nothing_is_queued() {
    let w = world(ServeConfig::default());
    let with = |key: &str, value: Value| {
        let mut body = optimization("bad");
        body[key] = value;
        body
    };
    let mut nameless = optimization("x");
    nameless.as_object_mut().unwrap().remove("name");
    let cases: Vec<(Request<Body>, StatusCode, Option<&str>)> = vec![
        (
            call(
                "POST",
                "/v1/optimizations",
                Some("opt"),
                Some(with("algoritm", json!("gepa"))),
            ),
            StatusCode::UNPROCESSABLE_ENTITY,
            Some("algoritm"),
        ),
        (
            call(
                "POST",
                "/v1/optimizations",
                Some("opt"),
                Some(with("algorithm", json!("annealing"))),
            ),
            StatusCode::UNPROCESSABLE_ENTITY,
            Some("algorithm"),
        ),
        (
            call(
                "POST",
                "/v1/optimizations",
                Some("opt"),
                Some(with("seed", json!("many"))),
            ),
            StatusCode::UNPROCESSABLE_ENTITY,
            Some("seed"),
        ),
        (
            call(
                "POST",
                "/v1/optimizations",
                Some("opt"),
                Some(with("training_examples", json!("/etc/passwd"))),
            ),
            StatusCode::UNPROCESSABLE_ENTITY,
            Some("training_examples"),
        ),
        (
            call(
                "POST",
                "/v1/optimizations",
                Some("opt"),
                Some(with(
                    "custom_metrics",
                    json!([{"name": "m", "command": "rm -rf /"}]),
                )),
            ),
            StatusCode::UNPROCESSABLE_ENTITY,
            Some("custom_metrics"),
        ),
        (
            call(
                "POST",
                "/v1/optimizations",
                Some("opt"),
                Some(with("tracking_uri", json!("http://10.0.0.1:5000"))),
            ),
            StatusCode::UNPROCESSABLE_ENTITY,
            Some("tracking_uri"),
        ),
        (
            call("POST", "/v1/optimizations", Some("opt"), Some(nameless)),
            StatusCode::UNPROCESSABLE_ENTITY,
            Some("name"),
        ),
        (
            call(
                "POST",
                "/v1/optimizations?priority=urgent",
                Some("opt"),
                Some(optimization("p")),
            ),
            StatusCode::UNPROCESSABLE_ENTITY,
            None,
        ),
        (
            call(
                "POST",
                "/v1/optimizations?timeout=soon",
                Some("opt"),
                Some(optimization("p")),
            ),
            StatusCode::UNPROCESSABLE_ENTITY,
            Some("timeout"),
        ),
        (
            call(
                "POST",
                "/v1/optimizations?max_attempts=0",
                Some("opt"),
                Some(optimization("p")),
            ),
            StatusCode::UNPROCESSABLE_ENTITY,
            Some("max_attempts"),
        ),
        (
            call(
                "POST",
                "/v1/optimizations?prio=high",
                Some("opt"),
                Some(optimization("p")),
            ),
            StatusCode::UNPROCESSABLE_ENTITY,
            Some("prio"),
        ),
        (
            raw(
                "POST",
                "/v1/optimizations",
                "application/yaml",
                "name: [unclosed",
            ),
            StatusCode::UNPROCESSABLE_ENTITY,
            None,
        ),
        (
            raw("POST", "/v1/optimizations", "application/json", "{"),
            StatusCode::BAD_REQUEST,
            None,
        ),
        (
            raw("POST", "/v1/optimizations", "text/csv", "a,b"),
            StatusCode::UNSUPPORTED_MEDIA_TYPE,
            None,
        ),
        (
            call("GET", "/v1/jobs?limit=0", Some("opt"), None),
            StatusCode::UNPROCESSABLE_ENTITY,
            Some("limit"),
        ),
        (
            call("GET", "/v1/jobs?state=sleeping", Some("opt"), None),
            StatusCode::UNPROCESSABLE_ENTITY,
            None,
        ),
    ];
    for (i, (request, status, field)) in cases.into_iter().enumerate() {
        let r = send(&w.router, request).await;
        assert_eq!(r.status, status, "case {i}: {}", r.text);
        if field.is_some() {
            assert_eq!(
                r.json()["error"]["field"].as_str(),
                field,
                "case {i}: {}",
                r.text
            );
        }
    }
    assert!(w.queue.list(None, 10).await.unwrap().is_empty());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn saturation_is_503_with_retry_after_and_slow_requests_time_out() {
    let config = ServeConfig {
        max_concurrent_requests: 1,
        request_timeout_seconds: 5.0,
        ..ServeConfig::default()
    };
    let w = world(config);
    let slow = {
        let router = w.router.clone();
        tokio::spawn(async move {
            send(
                &router,
                call(
                    "POST",
                    "/v1/models/sentiment/predict",
                    Some("pred"),
                    Some(json!({"inputs": {"text": "slow"}})),
                ),
            )
            .await
        })
    };
    w.slow_calls_began(1).await;
    let r = send(&w.router, call("GET", "/v1/models", Some("pred"), None)).await;
    assert_eq!(r.status, StatusCode::SERVICE_UNAVAILABLE, "{}", r.text);
    assert_eq!(r.headers[header::RETRY_AFTER], "1");
    assert_eq!(r.error_code(), "overloaded");
    // Health and metrics still answer.
    let r = send(&w.router, call("GET", "/healthz", None, None)).await;
    assert_eq!(r.status, StatusCode::OK);
    assert_eq!(slow.await.unwrap().status, StatusCode::OK);

    let w = world(ServeConfig {
        request_timeout_seconds: 0.2,
        ..ServeConfig::default()
    });
    let r = send(
        &w.router,
        call(
            "POST",
            "/v1/models/sentiment/predict",
            Some("pred"),
            Some(json!({"inputs": {"text": "slow"}})),
        ),
    )
    .await;
    assert_eq!(r.status, StatusCode::GATEWAY_TIMEOUT, "{}", r.text);
    assert_eq!(r.error_code(), "timeout");
}

#[tokio::test]
async fn guessing_tokens_locks_the_client_out_for_the_minute() {
    let w = world(ServeConfig {
        max_failed_auth_per_minute: 5,
        ..ServeConfig::default()
    });
    for i in 0..5 {
        let guess = format!("guess-{i}");
        let r = send(&w.router, call("GET", "/v1/models", Some(&guess), None)).await;
        assert_eq!(r.status, StatusCode::UNAUTHORIZED, "{i}");
    }
    // Past the limit even the right token is refused until the minute is over, so a guess
    // that happens to be right gives nothing away.
    for token in ["guess-5", "pred"] {
        let r = send(&w.router, call("GET", "/v1/models", Some(token), None)).await;
        assert_eq!(r.status, StatusCode::TOO_MANY_REQUESTS, "{}", r.text);
        assert_eq!(r.error_code(), "too_many_failed_authentications");
        let wait: u64 = r.headers[header::RETRY_AFTER]
            .to_str()
            .unwrap()
            .parse()
            .unwrap();
        assert!((1..=60).contains(&wait), "{wait}");
    }
    // Health probes still answer.
    let r = send(&w.router, call("GET", "/healthz", None, None)).await;
    assert_eq!(r.status, StatusCode::OK);

    // Refusals for a missing scope (403) are not guesses.
    let w = world(ServeConfig {
        max_failed_auth_per_minute: 2,
        ..ServeConfig::default()
    });
    for _ in 0..5 {
        let r = send(&w.router, call("GET", "/v1/jobs", Some("pred"), None)).await;
        assert_eq!(r.status, StatusCode::FORBIDDEN);
    }
    let r = send(&w.router, call("GET", "/v1/models", Some("pred"), None)).await;
    assert_eq!(r.status, StatusCode::OK, "{}", r.text);
}
