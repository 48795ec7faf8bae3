//! The Gemini provider against a loopback server that speaks `generateContent`.
#![allow(clippy::unwrap_used)]

mod common;

use std::time::Duration;

use common::{fast_config, MockServer, Reply};
use promptopt_lm::{
    open_provider, ChatRequest, FinishReason, LmConfig, LmError, LmStack, Message, ResponseFormat,
    ToolCall, ToolDefinition,
};
use serde_json::json;

fn generated() -> serde_json::Value {
    json!({
        "candidates": [{
            "content": {"parts": [{"text": "{\"label\": "}, {"text": "\"positive\"}"}], "role": "model"},
            "finishReason": "STOP",
            "index": 0
        }, {
            "content": {"parts": [{"text": "{\"la"}], "role": "model"},
            "finishReason": "MAX_TOKENS",
            "index": 1
        }],
        "usageMetadata": {
            "promptTokenCount": 50,
            "candidatesTokenCount": 9,
            "totalTokenCount": 59,
            "cachedContentTokenCount": 32
        },
        "modelVersion": "gemini-2.0-flash"
    })
}

fn google_error(code: u16, status: &str, text: &str) -> serde_json::Value {
    json!({"error": {"code": code, "message": text, "status": status}})
}

fn config(server: &MockServer) -> LmConfig {
    fast_config(5_000)
        .with_base_url("gemini", server.url())
        .with_api_key("gemini", "AIza-test")
}

fn request() -> ChatRequest {
    let mut request = ChatRequest::new(
        "gemini/gemini-2.0-flash",
        vec![
            Message::system("Classify."),
            Message::user("I loved it"),
            Message::assistant("positive"),
            Message::user("I hated it"),
        ],
    )
    .with_temperature(0.5)
    .with_max_tokens(20)
    .with_seed(3)
    .with_stop(vec!["END".into()]);
    request.top_p = Some(0.5);
    request.top_k = Some(10);
    request.n = 2;
    request.response_format = Some(ResponseFormat::JsonSchema {
        name: "answer".into(),
        schema: json!({"type": "object", "properties": {"label": {"type": "string"}}}),
    });
    request
}

#[tokio::test]
async fn sends_the_exact_request_and_reads_the_reply() {
    let server = MockServer::start(vec![Reply::json(200, generated())]).await;
    let lm = open_provider("gemini/gemini-2.0-flash", &config(&server)).unwrap();
    assert!(lm.supports_json_schema("gemini/gemini-2.0-flash"));
    let response = lm.chat(&request()).await.unwrap();

    let seen = &server.requests()[0];
    assert_eq!(seen.path, "/v1beta/models/gemini-2.0-flash:generateContent");
    assert_eq!(seen.header("x-goog-api-key").as_deref(), Some("AIza-test"));
    assert_eq!(
        seen.json(),
        json!({
            "contents": [
                {"role": "user", "parts": [{"text": "I loved it"}]},
                {"role": "model", "parts": [{"text": "positive"}]},
                {"role": "user", "parts": [{"text": "I hated it"}]}
            ],
            "systemInstruction": {"parts": [{"text": "Classify."}]},
            "generationConfig": {
                "temperature": 0.5,
                "topP": 0.5,
                "topK": 10,
                "maxOutputTokens": 20,
                "stopSequences": ["END"],
                "candidateCount": 2,
                "seed": 3,
                "responseMimeType": "application/json",
                "responseSchema": {"type": "object", "properties": {"label": {"type": "string"}}}
            }
        })
    );
    assert!(
        !seen.path.contains("key="),
        "the key never travels in the URL"
    );
    assert_eq!(response.text(), "{\"label\": \"positive\"}");
    assert_eq!(response.choices[1].finish_reason, FinishReason::Length);
    assert_eq!(response.usage.prompt_tokens, 50);
    assert_eq!(response.usage.completion_tokens, 9);
    assert_eq!(response.usage.cached_tokens, 32);
    assert_eq!(response.model, "gemini-2.0-flash");
}

#[tokio::test]
async fn quota_errors_carry_the_retry_delay() {
    let mut body = google_error(429, "RESOURCE_EXHAUSTED", "Quota exceeded");
    body["error"]["details"] = json!([{
        "@type": "type.googleapis.com/google.rpc.RetryInfo",
        "retryDelay": "21s"
    }]);
    let server = MockServer::start(vec![Reply::json(429, body)]).await;
    let lm = open_provider("gemini/gemini-2.0-flash", &config(&server)).unwrap();
    let error = lm.chat(&request()).await.unwrap_err();
    assert_eq!(error.retry_after(), Some(Duration::from_secs(21)));
    assert!(error.to_string().contains("RESOURCE_EXHAUSTED"), "{error}");
}

#[tokio::test]
async fn server_errors_are_retried_and_client_errors_are_not() {
    let server = MockServer::start(vec![
        Reply::json(
            503,
            google_error(503, "UNAVAILABLE", "The model is overloaded"),
        ),
        Reply::json(500, google_error(500, "INTERNAL", "Internal error")),
        Reply::json(200, generated()),
    ])
    .await;
    let lm = LmStack::build(config(&server)).unwrap();
    assert!(lm.chat(&request()).await.is_ok());
    assert_eq!(server.hits(), 3);

    for (status, kind) in [(400, "INVALID_ARGUMENT"), (401, "UNAUTHENTICATED")] {
        let server =
            MockServer::start(vec![Reply::json(status, google_error(status, kind, "Bad"))]).await;
        let error = LmStack::build(config(&server))
            .unwrap()
            .chat(&request())
            .await
            .unwrap_err();
        assert!(matches!(&error, LmError::Http { status: s, .. } if *s == status));
        assert_eq!(server.hits(), 1);
    }
}

#[tokio::test]
async fn malformed_bodies_and_hung_connections_fail_cleanly() {
    let server = MockServer::start(vec![Reply::raw(200, "<html>")]).await;
    let lm = open_provider("gemini/gemini-2.0-flash", &config(&server)).unwrap();
    let error = lm.chat(&request()).await.unwrap_err();
    assert!(
        matches!(error, LmError::MalformedResponse { .. }),
        "{error:?}"
    );

    let server = MockServer::start(vec![Reply::Hang]).await;
    let mut config = config(&server);
    config.timeout_ms = Some(150);
    config.retry.max_retries = 0;
    let error = LmStack::build(config)
        .unwrap()
        .chat(&request())
        .await
        .unwrap_err();
    assert!(matches!(error, LmError::Timeout { .. }), "{error:?}");
}

#[test]
fn either_key_variable_works_and_a_missing_key_names_both() {
    let env = |name: &str| (name == "GEMINI_API_KEY").then(|| "AIza-env".to_owned());
    assert!(promptopt_lm::open_provider_with_env(
        "gemini/gemini-2.5-flash",
        &LmConfig::default(),
        &env
    )
    .is_ok());
    let none = |_: &str| None;
    let error = promptopt_lm::open_provider_with_env(
        "gemini/gemini-2.5-flash",
        &LmConfig::default(),
        &none,
    )
    .err()
    .unwrap();
    assert!(error
        .to_string()
        .contains("`GOOGLE_API_KEY` or `GEMINI_API_KEY`"));
}

#[tokio::test]
async fn tools_are_sent_as_function_declarations_and_calls_are_read() {
    let reply = json!({
        "candidates": [{
            "content": {"role": "model", "parts": [
                {"text": "Computing."},
                {"functionCall": {"name": "calculator", "args": {"expression": "6 * 7"}}}
            ]},
            "finishReason": "STOP"
        }],
        "usageMetadata": {"promptTokenCount": 20, "candidatesTokenCount": 8},
        "modelVersion": "gemini-2.0-flash"
    });
    let server = MockServer::start(vec![Reply::json(200, reply)]).await;
    let lm = open_provider("gemini/gemini-2.0-flash", &config(&server)).unwrap();
    let request = ChatRequest::new("gemini/gemini-2.0-flash", vec![Message::user("6 times 7?")])
        .with_tools(vec![ToolDefinition {
            name: "calculator".into(),
            description: "Evaluates arithmetic.".into(),
            parameters: json!({"type": "object", "properties": {"expression": {"type": "string"}}}),
        }]);
    let response = lm.chat(&request).await.unwrap();
    assert_eq!(
        server.requests()[0].json()["tools"],
        json!([{"functionDeclarations": [{
            "name": "calculator",
            "description": "Evaluates arithmetic.",
            "parameters": {"type": "object", "properties": {"expression": {"type": "string"}}}
        }]}])
    );
    assert_eq!(response.text(), "Computing.");
    assert_eq!(
        response.choices[0].tool_calls,
        [ToolCall {
            name: "calculator".into(),
            arguments: json!({"expression": "6 * 7"})
        }]
    );
}
