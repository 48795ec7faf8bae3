#![allow(clippy::unwrap_used)]

use std::sync::Arc;

use tokio::io::{AsyncReadExt, AsyncWriteExt};

use super::FixedReplyServer;
use crate::{open_provider, ChatRequest, LmConfig, LmStack, Message, UsageTracker};

fn request(text: &str) -> ChatRequest {
    ChatRequest::new("openai/gpt-4o-mini", vec![Message::user(text)])
}

#[tokio::test]
async fn fixed_replies_go_through_the_openai_provider() {
    let server = FixedReplyServer::start("positive").unwrap();
    let config = LmConfig::default().with_base_url("openai", server.base_url());
    let lm = open_provider("openai/gpt-4o-mini", &config).unwrap();
    for _ in 0..5 {
        let reply = lm.chat(&request("I loved it")).await.unwrap();
        assert_eq!(reply.text(), "positive");
        assert_eq!(reply.usage.completion_tokens, 1);
    }
    assert_eq!(server.requests_served(), 5);
    assert!(server.cpu_time().is_some() || !cfg!(target_os = "linux"));
}

#[tokio::test]
async fn a_responder_sees_the_request() {
    let server = FixedReplyServer::with_responder(|request| {
        format!("{} said {}", request.model, request.messages[0].content)
    })
    .unwrap();
    let config = LmConfig::default().with_base_url("openai", server.base_url());
    let lm = open_provider("openai/m", &config).unwrap();
    let reply = lm.chat(&request("hello")).await.unwrap();
    assert_eq!(reply.text(), "gpt-4o-mini said hello");
    assert_eq!(reply.usage.prompt_tokens, 1);
}

#[tokio::test]
async fn both_paths_are_served_and_others_are_not_found() {
    let server = FixedReplyServer::start("x").unwrap();
    let mut stream = tokio::net::TcpStream::connect(server.addr()).await.unwrap();
    let body = r#"{"model":"m","messages":[]}"#;
    let mut raw = Vec::new();
    for path in ["/chat/completions", "/v1/chat/completions", "/v1/other"] {
        raw.extend_from_slice(
            format!(
                "POST {path} HTTP/1.1\r\nhost: x\r\ncontent-length: {}\r\n\r\n{body}",
                body.len()
            )
            .as_bytes(),
        );
    }
    // Three pipelined requests on one keep-alive connection; the last one closes it.
    raw.extend_from_slice(b"GET /v1/models HTTP/1.1\r\nconnection: close\r\n\r\n");
    stream.write_all(&raw).await.unwrap();
    let mut answer = String::new();
    stream.read_to_string(&mut answer).await.unwrap();
    assert_eq!(answer.matches("HTTP/1.1 200 OK").count(), 2, "{answer}");
    assert_eq!(
        answer.matches("HTTP/1.1 404 Not Found").count(),
        2,
        "{answer}"
    );
    assert_eq!(server.requests_served(), 2);
}

#[tokio::test]
async fn the_full_stack_caches_and_counts() {
    let server = FixedReplyServer::start("cached answer").unwrap();
    let tracker = Arc::new(UsageTracker::new());
    let config = LmConfig::default().with_base_url("openai", server.base_url());
    let lm = LmStack::new(config)
        .with_tracker(Arc::clone(&tracker))
        .assemble()
        .unwrap();
    for _ in 0..3 {
        assert_eq!(
            lm.chat(&request("same")).await.unwrap().text(),
            "cached answer"
        );
    }
    lm.chat(&request("same").without_cache()).await.unwrap();
    assert_eq!(server.requests_served(), 2);
    let snapshot = tracker.snapshot();
    assert_eq!((snapshot.calls, snapshot.cache_hits), (4, 2));
    assert!(snapshot.cost_usd > 0.0);
}

#[test]
fn the_shared_client_survives_a_runtime_that_ended() {
    // Pooled connections of a dropped runtime must not break calls made from the next one.
    let server = FixedReplyServer::start("again").unwrap();
    let config = LmConfig::default().with_base_url("openai", server.base_url());
    for _ in 0..3 {
        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap();
        let lm = open_provider("openai/m", &config).unwrap();
        let reply = runtime.block_on(async { lm.chat(&request("x")).await });
        assert_eq!(reply.unwrap().text(), "again");
        drop(runtime);
    }
    assert_eq!(server.requests_served(), 3);
}
