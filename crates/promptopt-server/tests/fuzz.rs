//! Property tests of the request parsers: whatever the body, path or query, the answer is a
//! well-formed JSON error or success, never a 5xx and never a panic.
#![allow(clippy::unwrap_used)]

use std::sync::Arc;

use async_trait::async_trait;
use axum::body::Body;
use axum::http::{header, Request};
use axum::Router;
use http_body_util::BodyExt;
use promptopt_core::adapter::AdapterKind;
use promptopt_core::{Field, Program, Signature};
use promptopt_jobs::{JobQueue, SqliteQueue};
use promptopt_lm::{ScriptedLm, SharedLm};
use promptopt_registry::{ModelArtifact, ModelSettings, Registry, VersionSpec};
use promptopt_server::{ModelLms, ServeConfig, Server, Tokens};
use proptest::prelude::*;
use serde_json::Value;
use tower::ServiceExt;

struct Echo;

#[async_trait]
impl ModelLms for Echo {
    async fn lm_for(&self, _models: &[String]) -> Result<SharedLm, String> {
        Ok(Arc::new(ScriptedLm::constant("positive")))
    }
}

fn router(home: &std::path::Path) -> Router {
    let registry = Registry::new(home);
    let program = Program::single(Signature::new(
        vec![Field::text("text")],
        vec![Field::text("label")],
    ));
    let settings = ModelSettings {
        model: "scripted/test".into(),
        adapter: AdapterKind::Turns,
        temperature: None,
        max_tokens: None,
    };
    let artifact = ModelArtifact::new("m", program.clone(), program.initial_state(), settings);
    registry.save(artifact, VersionSpec::NextPatch).unwrap();
    let queue = Arc::new(SqliteQueue::open(home.join("queue.sqlite")).unwrap());
    let mut tokens = Tokens::default();
    tokens.add_list("t", "test").unwrap();
    let config = ServeConfig {
        max_body_bytes: 64 * 1024,
        ..ServeConfig::default()
    };
    Server::new(
        registry,
        queue as Arc<dyn JobQueue>,
        Arc::new(Echo),
        tokens,
        config,
    )
    .router()
}

fn check(
    rt: &tokio::runtime::Runtime,
    router: &Router,
    request: Request<Body>,
) -> Result<(), TestCaseError> {
    let (status, bytes) = rt.block_on(async {
        let response = router.clone().oneshot(request).await.unwrap();
        let status = response.status();
        (
            status,
            response.into_body().collect().await.unwrap().to_bytes(),
        )
    });
    prop_assert!(
        !status.is_server_error(),
        "{status}: {}",
        String::from_utf8_lossy(&bytes)
    );
    let body: Value = serde_json::from_slice(&bytes).map_err(|e| {
        TestCaseError::fail(format!(
            "not JSON ({e}): {}",
            String::from_utf8_lossy(&bytes)
        ))
    })?;
    if !status.is_success() {
        prop_assert!(body["error"]["code"].is_string(), "{body}");
        prop_assert!(body["error"]["message"].is_string(), "{body}");
    }
    Ok(())
}

fn post(uri: &str, content_type: &str, body: Vec<u8>) -> Request<Body> {
    Request::post(uri)
        .header(header::AUTHORIZATION, "Bearer t")
        .header(header::CONTENT_TYPE, content_type)
        .body(Body::from(body))
        .unwrap()
}

fn json_value() -> impl Strategy<Value = Value> {
    let leaf = prop_oneof![
        Just(Value::Null),
        any::<bool>().prop_map(Value::Bool),
        any::<i64>().prop_map(Value::from),
        any::<f64>()
            .prop_filter("finite", |f| f.is_finite())
            .prop_map(Value::from),
        "[a-z_ ]{0,12}".prop_map(Value::from),
    ];
    leaf.prop_recursive(3, 24, 6, |inner| {
        prop_oneof![
            prop::collection::vec(inner.clone(), 0..4).prop_map(Value::Array),
            prop::collection::btree_map(
                prop_oneof![
                    Just("inputs".to_string()),
                    Just("instances".to_string()),
                    Just("text".to_string()),
                    Just("name".to_string()),
                    Just("model".to_string()),
                    Just("training_examples".to_string()),
                    Just("algorithm".to_string()),
                    "[a-z_]{1,8}"
                ],
                inner,
                0..4
            )
            .prop_map(|m| Value::Object(m.into_iter().collect())),
        ]
    })
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(96))]

    #[test]
    fn any_bytes_get_a_json_answer_without_5xx(
        body in prop::collection::vec(any::<u8>(), 0..300),
        kind in 0usize..3,
    ) {
        let rt = tokio::runtime::Runtime::new().unwrap();
        let home = tempfile::tempdir().unwrap();
        let router = router(home.path());
        let ct = ["application/json", "application/yaml", "text/plain"][kind];
        check(&rt, &router, post("/v1/optimizations", ct, body.clone()))?;
        check(&rt, &router, post("/v1/models/m/predict", ct, body))?;
    }

    #[test]
    fn any_json_gets_a_json_answer_without_5xx(value in json_value()) {
        let rt = tokio::runtime::Runtime::new().unwrap();
        let home = tempfile::tempdir().unwrap();
        let router = router(home.path());
        let bytes = value.to_string().into_bytes();
        check(&rt, &router, post("/v1/optimizations", "application/json", bytes.clone()))?;
        check(&rt, &router, post("/v1/models/m/predict", "application/json", bytes.clone()))?;
        check(&rt, &router, post("/v1/models/m/aliases/prod", "application/json", bytes))?;
    }

    #[test]
    fn any_path_segment_or_query_gets_a_json_answer_without_5xx(
        name in "[a-zA-Z0-9._%/-]{1,20}",
        query in "[a-z=&.0-9%]{0,20}",
    ) {
        let rt = tokio::runtime::Runtime::new().unwrap();
        let home = tempfile::tempdir().unwrap();
        let router = router(home.path());
        let body = br#"{"inputs": {"text": "x"}}"#.to_vec();
        check(&rt, &router, post(&format!("/v1/models/{name}/predict?{query}"), "application/json", body))?;
        let get = |uri: String| Request::get(uri).header(header::AUTHORIZATION, "Bearer t").body(Body::empty()).unwrap();
        check(&rt, &router, get(format!("/v1/models/{name}")))?;
        check(&rt, &router, get(format!("/v1/models/m/versions/{name}")))?;
        check(&rt, &router, get(format!("/v1/jobs/{name}")))?;
        check(&rt, &router, get(format!("/v1/jobs?{query}")))?;
    }
}
