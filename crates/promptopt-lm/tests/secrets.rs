//! Keys never show in debug output, errors or cache files.
//!
//! One test in its own binary, because it sets process environment variables.
#![allow(clippy::unwrap_used)]

mod common;

use common::{MockServer, Reply};
use promptopt_lm::{open_provider, ChatRequest, LmConfig, LmStack, Message};
use serde_json::json;

const OPENAI_KEY: &str = "sk-LEAKCHECK-openai-0123456789";
const ANTHROPIC_KEY: &str = "sk-ant-LEAKCHECK-abcdef";
const GEMINI_KEY: &str = "AIza-LEAKCHECK-gemini";

fn assert_clean(text: &str) {
    for key in [OPENAI_KEY, ANTHROPIC_KEY, GEMINI_KEY] {
        assert!(!text.contains(key), "a key leaked into: {text}");
    }
    assert!(
        !text.contains("LEAKCHECK"),
        "part of a key leaked into: {text}"
    );
}

#[tokio::test]
async fn keys_stay_out_of_debug_errors_and_cache_files() {
    let openai_ok = json!({
        "model": "gpt-4o-mini",
        "choices": [{"index": 0, "message": {"role": "assistant", "content": "fine"}, "finish_reason": "stop"}],
        "usage": {"prompt_tokens": 3, "completion_tokens": 1, "total_tokens": 4}
    });
    // Like OpenAI's own 401, the error body quotes the key it was given.
    let openai_401 = json!({"error": {
        "message": format!("Incorrect API key provided: {OPENAI_KEY}."),
        "type": "invalid_request_error", "param": null, "code": "invalid_api_key"}});
    let openai = MockServer::start(vec![
        Reply::json(200, openai_ok),
        Reply::json(401, openai_401),
    ])
    .await;
    let anthropic = MockServer::start(vec![Reply::json(
        401,
        json!({"type": "error", "error": {"type": "authentication_error",
            "message": format!("invalid x-api-key {ANTHROPIC_KEY}")}}),
    )])
    .await;
    let gemini = MockServer::start(vec![Reply::raw(
        400,
        &format!("API key not valid: {GEMINI_KEY}"),
    )])
    .await;

    std::env::set_var("OPENAI_API_KEY", OPENAI_KEY);
    std::env::set_var("OPENAI_BASE_URL", format!("{}/v1", openai.url()));
    std::env::set_var("GEMINI_API_KEY", GEMINI_KEY);

    let cache_dir = tempfile::tempdir().unwrap();
    let mut config = LmConfig::default()
        .with_api_key("anthropic", ANTHROPIC_KEY)
        .with_base_url("anthropic", anthropic.url())
        .with_base_url("gemini", gemini.url());
    config.cache.disk_dir = Some(cache_dir.path().to_owned());
    config.retry.max_retries = 0;
    assert_clean(&format!("{config:?}"));
    assert_clean(&serde_json::to_string(&config).unwrap());

    let builder = LmStack::new(config.clone());
    assert_clean(&format!("{builder:?}"));
    let lm = builder.assemble().unwrap();

    let ok = lm
        .chat(&ChatRequest::new(
            "openai/gpt-4o-mini",
            vec![Message::user("hi")],
        ))
        .await
        .unwrap();
    assert_eq!(ok.text(), "fine");
    let mut texts = Vec::new();
    for model in [
        "openai/gpt-4o",
        "anthropic/claude-3-5-haiku-latest",
        "gemini/gemini-2.0-flash",
    ] {
        let error = lm
            .chat(&ChatRequest::new(model, vec![Message::user("hi")]))
            .await
            .unwrap_err();
        texts.push(error.to_string());
        texts.push(format!("{error:?}"));
        assert!(open_provider(model, &config).is_ok());
    }
    assert!(
        texts[0].contains("Incorrect API key provided: [redacted]"),
        "{}",
        texts[0]
    );
    for text in &texts {
        assert_clean(text);
    }

    let files: Vec<_> = walk(cache_dir.path());
    assert!(!files.is_empty(), "the successful call was cached on disk");
    for file in files {
        assert_clean(&std::fs::read_to_string(file).unwrap());
    }

    // The keys did travel where they belong.
    assert_eq!(
        openai.requests()[0].header("authorization").unwrap(),
        format!("Bearer {OPENAI_KEY}")
    );
    assert_eq!(
        anthropic.requests()[0].header("x-api-key").unwrap(),
        ANTHROPIC_KEY
    );
    assert_eq!(
        gemini.requests()[0].header("x-goog-api-key").unwrap(),
        GEMINI_KEY
    );
}

fn walk(dir: &std::path::Path) -> Vec<std::path::PathBuf> {
    let mut files = Vec::new();
    for entry in std::fs::read_dir(dir).unwrap().flatten() {
        if entry.path().is_dir() {
            files.extend(walk(&entry.path()));
        } else {
            files.push(entry.path());
        }
    }
    files
}
