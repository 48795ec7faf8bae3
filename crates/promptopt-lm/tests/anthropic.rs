//! The Anthropic provider against a loopback server that speaks the Messages API.
#![allow(clippy::unwrap_used)]

mod common;

use std::time::Duration;

use common::{fast_config, MockServer, Reply};
use promptopt_lm::{
    open_provider, ChatRequest, FinishReason, LmConfig, LmError, LmStack, Message, ToolCall,
    ToolDefinition,
};
use serde_json::json;

fn message(stop_reason: &str) -> serde_json::Value {
    json!({
        "id": "msg_01",
        "type": "message",
        "role": "assistant",
        "model": "claude-3-5-haiku-20241022",
        "content": [{"type": "text", "text": "posi"}, {"type": "text", "text": "tive"}],
        "stop_reason": stop_reason,
        "stop_sequence": null,
        "usage": {
            "input_tokens": 20,
            "output_tokens": 2,
            "cache_creation_input_tokens": 0,
            "cache_read_input_tokens": 100
        }
    })
}

fn anthropic_error(kind: &str, text: &str) -> serde_json::Value {
    json!({"type": "error", "error": {"type": kind, "message": text}})
}

fn config(server: &MockServer) -> LmConfig {
    fast_config(5_000)
        .with_base_url("anthropic", server.url())
        .with_api_key("anthropic", "sk-ant-test")
}

fn request() -> ChatRequest {
    let mut request = ChatRequest::new(
        "anthropic/claude-3-5-haiku-latest",
        vec![
            Message::system("Classify."),
            Message::user("I loved it"),
            Message::assistant("positive"),
            Message::user("I hated it"),
        ],
    )
    .with_temperature(0.2)
    .with_stop(vec!["END".into()]);
    request.top_k = Some(40);
    request
}

#[tokio::test]
async fn sends_the_exact_request_and_reads_the_reply() {
    let server = MockServer::start(vec![Reply::json(200, message("end_turn"))]).await;
    let lm = open_provider("anthropic/claude-3-5-haiku-latest", &config(&server)).unwrap();
    assert!(!lm.supports_json_schema("anthropic/claude-3-5-haiku-latest"));
    let response = lm.chat(&request()).await.unwrap();

    let seen = &server.requests()[0];
    assert_eq!(seen.path, "/v1/messages");
    assert_eq!(seen.header("x-api-key").as_deref(), Some("sk-ant-test"));
    assert_eq!(
        seen.header("anthropic-version").as_deref(),
        Some("2023-06-01")
    );
    assert_eq!(seen.header("authorization"), None);
    assert_eq!(
        seen.json(),
        json!({
            "model": "claude-3-5-haiku-latest",
            "max_tokens": 1024,
            "system": "Classify.",
            "messages": [
                {"role": "user", "content": [{"type": "text", "text": "I loved it"}]},
                {"role": "assistant", "content": [{"type": "text", "text": "positive"}]},
                {"role": "user", "content": [{"type": "text", "text": "I hated it"}]}
            ],
            "temperature": 0.2,
            "top_k": 40,
            "stop_sequences": ["END"]
        })
    );
    assert_eq!(response.text(), "positive");
    assert_eq!(response.choices[0].finish_reason, FinishReason::Stop);
    assert_eq!(response.usage.prompt_tokens, 120);
    assert_eq!(response.usage.cached_tokens, 100);
    assert_eq!(response.usage.completion_tokens, 2);
}

#[tokio::test]
async fn max_tokens_maps_to_length_and_n_makes_several_calls() {
    let server = MockServer::start(vec![Reply::json(200, message("max_tokens"))]).await;
    let lm = open_provider("anthropic/claude-sonnet-4-5", &config(&server)).unwrap();
    let mut request = request().with_max_tokens(2);
    request.n = 3;
    let response = lm.chat(&request).await.unwrap();
    assert_eq!(response.choices.len(), 3);
    assert_eq!(response.choices[2].finish_reason, FinishReason::Length);
    assert_eq!(response.usage.completion_tokens, 6);
    assert_eq!(server.hits(), 3);
    assert_eq!(server.requests()[0].json()["max_tokens"], json!(2));
}

#[tokio::test]
async fn overloaded_and_server_errors_are_retried() {
    let server = MockServer::start(vec![
        Reply::json(529, anthropic_error("overloaded_error", "Overloaded")),
        Reply::json(500, anthropic_error("api_error", "Internal server error")),
        Reply::json(200, message("end_turn")),
    ])
    .await;
    let lm = LmStack::build(config(&server)).unwrap();
    assert_eq!(lm.chat(&request()).await.unwrap().text(), "positive");
    assert_eq!(server.hits(), 3);
}

#[tokio::test]
async fn errors_keep_status_message_and_retry_after() {
    let server = MockServer::start(vec![Reply::json(
        429,
        anthropic_error(
            "rate_limit_error",
            "Number of request tokens has exceeded your rate limit",
        ),
    )
    .with_header("retry-after", "13")])
    .await;
    let lm = open_provider("anthropic/claude-3-5-haiku-latest", &config(&server)).unwrap();
    let error = lm.chat(&request()).await.unwrap_err();
    assert_eq!(error.retry_after(), Some(Duration::from_secs(13)));
    assert!(error.to_string().contains("rate_limit_error"), "{error}");

    for (status, kind) in [
        (401, "authentication_error"),
        (400, "invalid_request_error"),
    ] {
        let server =
            MockServer::start(vec![Reply::json(status, anthropic_error(kind, "Nope"))]).await;
        let error = LmStack::build(config(&server))
            .unwrap()
            .chat(&request())
            .await
            .unwrap_err();
        assert!(
            matches!(&error, LmError::Http { status: s, .. } if *s == status),
            "{error:?}"
        );
        assert_eq!(server.hits(), 1);
    }
}

#[tokio::test]
async fn malformed_bodies_and_hung_connections_fail_cleanly() {
    let server = MockServer::start(vec![Reply::raw(200, "{\"content\": 5}")]).await;
    let lm = open_provider("anthropic/claude-3-5-haiku-latest", &config(&server)).unwrap();
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
fn a_missing_key_names_the_variable() {
    let env = |_: &str| None;
    let error = promptopt_lm::open_provider_with_env(
        "anthropic/claude-3-5-haiku-latest",
        &LmConfig::default(),
        &env,
    )
    .err()
    .unwrap();
    assert_eq!(
        error.to_string(),
        "Missing API key for `anthropic`: set the environment variable `ANTHROPIC_API_KEY`"
    );
}

#[tokio::test]
async fn tools_are_sent_with_input_schemas_and_tool_use_blocks_are_read() {
    let reply = json!({
        "id": "msg_02",
        "type": "message",
        "role": "assistant",
        "model": "claude-3-5-haiku-20241022",
        "content": [
            {"type": "text", "text": "I will compute it."},
            {"type": "tool_use", "id": "toolu_1", "name": "calculator", "input": {"expression": "6 * 7"}}
        ],
        "stop_reason": "tool_use",
        "usage": {"input_tokens": 30, "output_tokens": 12}
    });
    let server = MockServer::start(vec![Reply::json(200, reply)]).await;
    let lm = open_provider("anthropic/claude-3-5-haiku-latest", &config(&server)).unwrap();
    let request = request().with_tools(vec![ToolDefinition {
        name: "calculator".into(),
        description: "Evaluates arithmetic.".into(),
        parameters: json!({"type": "object", "properties": {"expression": {"type": "string"}}}),
    }]);
    let response = lm.chat(&request).await.unwrap();
    assert_eq!(
        server.requests()[0].json()["tools"],
        json!([{
            "name": "calculator",
            "description": "Evaluates arithmetic.",
            "input_schema": {"type": "object", "properties": {"expression": {"type": "string"}}}
        }])
    );
    assert_eq!(response.text(), "I will compute it.");
    assert_eq!(response.choices[0].finish_reason, FinishReason::Stop);
    assert_eq!(
        response.choices[0].tool_calls,
        [ToolCall {
            name: "calculator".into(),
            arguments: json!({"expression": "6 * 7"})
        }]
    );
}
