//! The OpenAI provider against a loopback server that speaks the Chat Completions API.
#![allow(clippy::unwrap_used)]

mod common;

use std::time::Duration;

use common::{fast_config, MockServer, Reply};
use promptopt_lm::{
    open_provider, ChatRequest, FinishReason, LmConfig, LmError, LmStack, Message, ResponseFormat,
    ToolCall, ToolDefinition,
};
use serde_json::json;

fn completion() -> serde_json::Value {
    json!({
        "id": "chatcmpl-123",
        "object": "chat.completion",
        "created": 1_700_000_000,
        "model": "gpt-4o-mini-2024-07-18",
        "choices": [{
            "index": 0,
            "message": {"role": "assistant", "content": "positive", "refusal": null},
            "logprobs": null,
            "finish_reason": "stop"
        }, {
            "index": 1,
            "message": {"role": "assistant", "content": "posi"},
            "logprobs": null,
            "finish_reason": "length"
        }],
        "usage": {
            "prompt_tokens": 120,
            "completion_tokens": 3,
            "total_tokens": 123,
            "prompt_tokens_details": {"cached_tokens": 64, "audio_tokens": 0},
            "completion_tokens_details": {"reasoning_tokens": 0}
        },
        "system_fingerprint": "fp_1"
    })
}

fn openai_error(message: &str, kind: &str, code: &str) -> serde_json::Value {
    json!({"error": {"message": message, "type": kind, "param": null, "code": code}})
}

fn official(server: &MockServer) -> LmConfig {
    // A key plus a base URL: the request must carry the key.
    LmConfig::default()
        .with_base_url("openai", format!("{}/v1", server.url()))
        .with_api_key("openai", "sk-test-key")
}

fn request() -> ChatRequest {
    let mut request = ChatRequest::new(
        "openai/gpt-4o-mini",
        vec![Message::system("Classify."), Message::user("I loved it")],
    )
    .with_temperature(0.0)
    .with_max_tokens(5)
    .with_seed(7)
    .with_stop(vec!["\n".into()]);
    request.n = 2;
    request.top_p = Some(0.9);
    request.rollout_id = Some(3);
    request
}

#[tokio::test]
async fn sends_the_exact_request_and_reads_the_reply() {
    let server = MockServer::start(vec![Reply::json(200, completion())]).await;
    let lm = open_provider("openai/gpt-4o-mini", &official(&server)).unwrap();
    let response = lm.chat(&request()).await.unwrap();

    let seen = &server.requests()[0];
    assert_eq!(seen.method, "POST");
    assert_eq!(seen.path, "/v1/chat/completions");
    assert_eq!(
        seen.header("authorization").as_deref(),
        Some("Bearer sk-test-key")
    );
    assert_eq!(
        seen.header("content-type").as_deref(),
        Some("application/json")
    );
    assert_eq!(
        seen.json(),
        json!({
            "model": "gpt-4o-mini",
            "messages": [
                {"role": "system", "content": "Classify."},
                {"role": "user", "content": "I loved it"}
            ],
            "temperature": 0.0,
            "top_p": 0.9,
            "max_tokens": 5,
            "stop": ["\n"],
            "seed": 7,
            "n": 2
        })
    );

    assert_eq!(response.text(), "positive");
    assert_eq!(response.choices[1].finish_reason, FinishReason::Length);
    assert_eq!(response.model, "gpt-4o-mini-2024-07-18");
    assert_eq!(response.usage.prompt_tokens, 120);
    assert_eq!(response.usage.completion_tokens, 3);
    assert_eq!(response.usage.cached_tokens, 64);
    assert_eq!(
        response.cost_usd, None,
        "the provider itself does not price"
    );
    assert!(!response.cache_hit);
}

#[tokio::test]
async fn a_custom_server_needs_no_key_and_gets_json_schema() {
    let server = MockServer::start(vec![Reply::json(200, completion())]).await;
    let config = LmConfig::default().with_base_url("openai", format!("{}/v1/", server.url()));
    let lm = open_provider("openai/qwen2.5", &config).unwrap();
    assert!(lm.supports_json_schema("openai/qwen2.5"));
    let mut request = ChatRequest::new("openai/qwen2.5", vec![Message::user("hi")]);
    request.response_format = Some(ResponseFormat::JsonSchema {
        name: "answer".into(),
        schema: json!({"type": "object", "properties": {"label": {"type": "string"}}}),
    });
    lm.chat(&request).await.unwrap();
    let seen = &server.requests()[0];
    assert_eq!(seen.header("authorization"), None);
    assert_eq!(
        seen.json()["response_format"],
        json!({"type": "json_schema", "json_schema": {"name": "answer", "schema":
            {"type": "object", "properties": {"label": {"type": "string"}}}}})
    );
}

#[tokio::test]
async fn the_stack_answers_for_the_provider_of_each_model() {
    // The stack's router must ask the backend that serves the model, so the JSON adapter sends a
    // schema to OpenAI-compatible servers rather than the weaker `json_object` hint.
    let server = MockServer::start(vec![]).await;
    let config = LmConfig::default().with_base_url("openai", format!("{}/v1", server.url()));
    let lm = LmStack::build(config).unwrap();
    assert!(lm.supports_json_schema("openai/qwen2.5"));
    assert!(
        !lm.supports_json_schema("nowhere/model"),
        "an unknown provider takes no schema"
    );
    assert!(
        !lm.supports_json_schema("qwen2.5"),
        "a model without a provider takes no schema"
    );
    assert_eq!(server.hits(), 0, "answering needs no request");
}

#[tokio::test]
async fn a_custom_server_gets_a_choice_as_guided_choice() {
    let server = MockServer::start(vec![Reply::json(200, completion())]).await;
    let config = LmConfig::default().with_base_url("openai", format!("{}/v1", server.url()));
    let lm = open_provider("openai/qwen2.5", &config).unwrap();
    let mut request = ChatRequest::new("openai/qwen2.5", vec![Message::user("hi")]);
    request.response_format = Some(ResponseFormat::Choice {
        choices: vec!["positive".into(), "negative".into()],
    });
    lm.chat(&request).await.unwrap();
    let seen = server.requests()[0].json();
    assert_eq!(seen["guided_choice"], json!(["positive", "negative"]));
    assert!(seen.get("response_format").is_none(), "{seen}");
}

#[tokio::test]
async fn client_errors_are_reported_and_not_retried() {
    for (status, kind, code) in [
        (401, "invalid_request_error", "invalid_api_key"),
        (400, "invalid_request_error", "unsupported_parameter"),
    ] {
        let server = MockServer::start(vec![Reply::json(
            status,
            openai_error("Something is wrong", kind, code),
        )])
        .await;
        let config = fast_config(5_000).with_base_url("openai", format!("{}/v1", server.url()));
        let lm = LmStack::build(config).unwrap();
        let error = lm.chat(&request()).await.unwrap_err();
        match &error {
            LmError::Http {
                status: got,
                message,
                ..
            } => {
                assert_eq!(*got, status);
                assert!(message.contains("Something is wrong"), "{message}");
            }
            other => panic!("unexpected {other:?}"),
        }
        assert!(!error.is_retryable());
        assert_eq!(server.hits(), 1, "a {status} must not be retried");
    }
}

#[tokio::test]
async fn a_prompt_longer_than_the_context_is_its_own_error() {
    let server = MockServer::start(vec![Reply::json(
        400,
        openai_error(
            "The prompt has 2483 tokens but the context holds 2048",
            "invalid_request_error",
            "context_length_exceeded",
        ),
    )])
    .await;
    let config = fast_config(5_000).with_base_url("openai", format!("{}/v1", server.url()));
    let error = LmStack::build(config)
        .unwrap()
        .chat(&request())
        .await
        .unwrap_err();
    assert!(error.is_context_overflow(), "{error:?}");
    assert!(!error.is_retryable());
    assert_eq!(server.hits(), 1);
    assert_eq!(
        error.to_string(),
        "openai refused the prompt as longer than the model's context: \
         The prompt has 2483 tokens but the context holds 2048 (invalid_request_error)"
    );
}

#[tokio::test]
async fn throttling_carries_retry_after_and_is_retried() {
    let throttled = Reply::json(
        429,
        openai_error("Rate limit reached", "requests", "rate_limit_exceeded"),
    )
    .with_header("retry-after", "2");
    let server = MockServer::start(vec![throttled.clone()]).await;
    let config = LmConfig::default().with_base_url("openai", format!("{}/v1", server.url()));
    let error = open_provider("openai/m", &config)
        .unwrap()
        .chat(&request())
        .await
        .unwrap_err();
    assert_eq!(error.retry_after(), Some(Duration::from_secs(2)));
    assert!(error.is_retryable());

    let server = MockServer::start(vec![
        Reply::json(500, openai_error("Server error", "server_error", "x")),
        Reply::json(503, openai_error("Overloaded", "server_error", "x")),
        Reply::json(200, completion()),
    ])
    .await;
    let config = fast_config(5_000).with_base_url("openai", format!("{}/v1", server.url()));
    let response = LmStack::build(config)
        .unwrap()
        .chat(&request())
        .await
        .unwrap();
    assert_eq!(response.text(), "positive");
    assert_eq!(server.hits(), 3);
}

#[tokio::test]
async fn a_malformed_body_is_a_malformed_response() {
    let server = MockServer::start(vec![Reply::raw(200, "{\"choices\": [")]).await;
    let config = LmConfig::default().with_base_url("openai", format!("{}/v1", server.url()));
    let error = open_provider("openai/m", &config)
        .unwrap()
        .chat(&request())
        .await
        .unwrap_err();
    assert!(
        matches!(error, LmError::MalformedResponse { .. }),
        "{error:?}"
    );
}

#[tokio::test]
async fn a_hung_connection_is_ended_by_the_timeout_layer() {
    let server = MockServer::start(vec![Reply::Hang]).await;
    let mut config = fast_config(200).with_base_url("openai", format!("{}/v1", server.url()));
    config.retry.max_retries = 1;
    let started = std::time::Instant::now();
    let error = LmStack::build(config)
        .unwrap()
        .chat(&request())
        .await
        .unwrap_err();
    assert!(
        matches!(error.last_attempt(), LmError::Timeout { .. }),
        "{error:?}"
    );
    assert_eq!(error.retries(), 1);
    assert!(error.is_retryable(), "a job may try the run again later");
    assert!(
        error.to_string().ends_with("(gave up after 1 retry)"),
        "{error}"
    );
    assert_eq!(server.hits(), 2, "a timeout is retried once");
    assert!(started.elapsed() < Duration::from_secs(5));
    assert!(
        error.to_string().contains("timed out after 0.2 s"),
        "{error}"
    );
}

#[tokio::test]
async fn key_and_base_url_come_from_the_environment() {
    let server = MockServer::start(vec![Reply::json(200, completion())]).await;
    let url = format!("{}/v1", server.url());
    let env = move |name: &str| match name {
        "OPENAI_API_KEY" => Some("sk-from-env".to_owned()),
        "OPENAI_BASE_URL" => Some(url.clone()),
        _ => None,
    };
    let lm =
        promptopt_lm::open_provider_with_env("openai/gpt-4.1", &LmConfig::default(), &env).unwrap();
    lm.chat(&request()).await.unwrap();
    let seen = &server.requests()[0];
    assert_eq!(
        seen.header("authorization").as_deref(),
        Some("Bearer sk-from-env")
    );
    assert_eq!(seen.json()["model"], json!("gpt-4o-mini"));
}

#[tokio::test]
async fn tools_are_sent_as_functions_and_calls_are_read() {
    let reply = json!({
        "model": "gpt-4o-mini",
        "choices": [{
            "index": 0,
            "message": {"role": "assistant", "content": null, "tool_calls": [{
                "id": "call_1",
                "type": "function",
                "function": {"name": "calculator", "arguments": "{\"expression\": \"6 * 7\"}"}
            }, {
                "id": "call_2",
                "type": "function",
                "function": {"name": "search", "arguments": "not json"}
            }]},
            "finish_reason": "tool_calls"
        }]
    });
    let server = MockServer::start(vec![Reply::json(200, reply)]).await;
    let lm = open_provider("openai/gpt-4o-mini", &official(&server)).unwrap();
    let request = ChatRequest::new("openai/gpt-4o-mini", vec![Message::user("6 times 7?")])
        .with_tools(vec![ToolDefinition {
            name: "calculator".into(),
            description: "Evaluates arithmetic.".into(),
            parameters: json!({"type": "object", "properties": {"expression": {"type": "string"}}}),
        }]);
    let response = lm.chat(&request).await.unwrap();
    assert_eq!(
        server.requests()[0].json()["tools"],
        json!([{"type": "function", "function": {
            "name": "calculator",
            "description": "Evaluates arithmetic.",
            "parameters": {"type": "object", "properties": {"expression": {"type": "string"}}}
        }}])
    );
    let choice = &response.choices[0];
    assert_eq!(choice.content, "");
    assert_eq!(choice.finish_reason, FinishReason::Stop);
    assert_eq!(
        choice.tool_calls,
        [
            ToolCall {
                name: "calculator".into(),
                arguments: json!({"expression": "6 * 7"})
            },
            ToolCall {
                name: "search".into(),
                arguments: json!("not json")
            }
        ]
    );
}
