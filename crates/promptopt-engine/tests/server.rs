//! The OpenAI-compatible server on loopback, checked with plain HTTP and with the official
//! `openai` Python client from `.venv-ci` (created by `.ci/run`).
#![allow(clippy::unwrap_used, clippy::print_stderr)]

mod common;

use std::net::SocketAddr;
use std::path::Path;

use promptopt_engine::server::Server;
use promptopt_engine::{Engine, EngineConfig};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

async fn start() -> (SocketAddr, String, tokio::sync::oneshot::Sender<()>) {
    let engine = Engine::load_async(common::on_test_device(
        EngineConfig::new(common::smollm2())
            .with_slots(4)
            .with_ctx_per_slot(1024),
    ))
    .await
    .unwrap();
    let model = engine.model_name().to_string();
    let server = Server::bind(engine, "127.0.0.1", 0).await.unwrap();
    let addr = server.local_addr();
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    tokio::spawn(server.run_until(async move {
        let _ = stopped.await;
    }));
    (addr, model, stop)
}

/// One HTTP/1.1 exchange; returns the status code and the body.
async fn http(addr: SocketAddr, method: &str, path: &str, body: &str) -> (u16, serde_json::Value) {
    let mut stream = TcpStream::connect(addr).await.unwrap();
    let request = format!(
        "{method} {path} HTTP/1.1\r\nHost: {addr}\r\nContent-Type: application/json\r\n\
         Content-Length: {}\r\nConnection: close\r\n\r\n{body}",
        body.len()
    );
    stream.write_all(request.as_bytes()).await.unwrap();
    let mut response = String::new();
    stream.read_to_string(&mut response).await.unwrap();
    let status = response[9..12].parse().unwrap();
    let (_, body) = response.split_once("\r\n\r\n").unwrap();
    (status, serde_json::from_str(body).unwrap())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn serves_chat_completions_models_health_and_openai_errors() {
    let (addr, model, _stop) = start().await;

    let (status, health) = http(addr, "GET", "/health", "").await;
    assert_eq!((status, health["status"].as_str()), (200, Some("ok")));

    let (status, models) = http(addr, "GET", "/v1/models", "").await;
    assert_eq!(status, 200);
    assert_eq!(models["data"][0]["id"].as_str(), Some(model.as_str()));

    let body = serde_json::json!({
        "model": model,
        "messages": [{"role": "user", "content": "What is 2+2?"}],
        "temperature": 0,
        "max_tokens": 12,
    });
    let (status, reply) = http(addr, "POST", "/v1/chat/completions", &body.to_string()).await;
    assert_eq!(status, 200, "{reply}");
    assert_eq!(reply["object"], "chat.completion");
    assert!(
        reply["choices"][0]["message"]["content"]
            .as_str()
            .unwrap()
            .contains('4'),
        "{reply}"
    );
    assert!(
        reply["usage"]["prompt_tokens_details"]["cached_tokens"].is_u64(),
        "{reply}"
    );
    assert_eq!(
        reply["usage"]["total_tokens"].as_u64(),
        Some(
            reply["usage"]["prompt_tokens"].as_u64().unwrap()
                + reply["usage"]["completion_tokens"].as_u64().unwrap()
        )
    );

    let (status, error) = http(addr, "POST", "/v1/chat/completions", "{not json").await;
    assert_eq!(status, 400);
    assert_eq!(error["error"]["type"], "invalid_request_error");

    let wrong =
        serde_json::json!({"model": "local/nope", "messages": [{"role": "user", "content": "x"}]});
    let (status, error) = http(addr, "POST", "/v1/chat/completions", &wrong.to_string()).await;
    assert_eq!(status, 404);
    assert_eq!(error["error"]["code"], "model_not_found");

    let stream = serde_json::json!({"model": model, "stream": true, "messages": []});
    let (status, error) = http(addr, "POST", "/v1/chat/completions", &stream.to_string()).await;
    assert_eq!(status, 400);
    assert_eq!(error["error"]["param"], "stream");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn answers_the_official_openai_python_client() {
    let python = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../.venv-ci/bin/python");
    if !python.exists() {
        if std::env::var_os("PROMPTOPT_CI").is_some() {
            panic!("`{}` is missing; `.ci/run` creates it", python.display());
        }
        eprintln!(
            "skipped: `{}` not found (run `.ci/run` or create it with `python3 -m venv .venv-ci && .venv-ci/bin/pip install openai`)",
            python.display()
        );
        return;
    }
    let (addr, model, _stop) = start().await;
    let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/openai_client.py");
    let output = tokio::process::Command::new(&python)
        .arg(&script)
        .arg(format!("http://{addr}/v1"))
        .arg(&model)
        .output()
        .await
        .unwrap();
    let stdout = String::from_utf8_lossy(&output.stdout);
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(
        output.status.success(),
        "stdout: {stdout}\nstderr: {stderr}"
    );
    assert!(stdout.starts_with("ok:"), "{stdout}");
}
