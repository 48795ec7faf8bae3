//! Finished prompts kept in the KV cache beyond the slots (`EngineConfig::kept_prompts`), on the
//! real SmolLM2 model: reused by a later request that shares their prefix, and dropped, oldest
//! first, when the cache needs their room.
#![allow(clippy::unwrap_used)]

mod common;

use promptopt_engine::{Engine, EngineConfig};
use promptopt_lm::{ChatRequest, Lm, Message};

/// One slot of 256 tokens: the cache holds 256 cells in all, so a few prompts fill it.
fn small_engine() -> Engine {
    Engine::load(common::on_test_device(
        EngineConfig::new(common::smollm2())
            .with_slots(1)
            .with_ctx_per_slot(256)
            .with_kept_prompts(6),
    ))
    .unwrap()
}

fn request(engine: &Engine, system: &str, question: &str) -> ChatRequest {
    ChatRequest::new(
        engine.model_name(),
        vec![Message::system(system), Message::user(question)],
    )
    .with_temperature(0.0)
    .with_max_tokens(4)
}

const AGENT: &str = "You are an agent that solves arithmetic problems step by step. At each step \
                     write a thought, then choose a tool and its arguments.";

#[tokio::test]
async fn a_kept_prompt_is_reused_after_other_requests_took_the_slot() {
    let engine = small_engine();
    engine
        .chat(&request(&engine, AGENT, "What is 12 times 7?"))
        .await
        .unwrap();
    // Two unrelated prompts pass through the only slot in between.
    for other in ["Translate to French: good morning.", "Name a large ocean."] {
        engine
            .chat(&request(&engine, "You answer briefly.", other))
            .await
            .unwrap();
    }
    let again = engine
        .chat(&request(&engine, AGENT, "What is 12 times 8?"))
        .await
        .unwrap();
    // The agent's system turn and the start of the question come from the kept prompt.
    assert!(again.usage.cached_tokens >= 30, "{:?}", again.usage);
    assert!(again.usage.cached_tokens < again.usage.prompt_tokens);
    assert_eq!(engine.stats().kept_prompts_dropped, 0);
}

#[tokio::test]
async fn a_full_cache_drops_the_oldest_kept_prompt_and_answers_every_request() {
    let engine = small_engine();
    let topics = [
        "Rivers",
        "Mountains",
        "Deserts",
        "Forests",
        "Islands",
        "Glaciers",
    ];
    // About 100 tokens each, different from the first token: three do not fit in 256 cells.
    let system = |topic: &str| {
        (1..=16)
            .map(|i| format!("{topic} note {i}."))
            .collect::<Vec<_>>()
            .join(" ")
    };
    let mut replies = Vec::new();
    for topic in topics {
        let reply = engine
            .chat(&request(&engine, &system(topic), "Summarize the notes."))
            .await
            .unwrap();
        replies.push(reply);
    }
    assert!(replies.iter().all(|r| r.usage.completion_tokens > 0));
    assert!(replies.iter().all(|r| r.usage.prompt_tokens > 90));
    let stats = engine.stats();
    assert!(stats.kept_prompts_dropped >= 3, "{stats:?}");
    // The newest prompt is still kept: asking it again decodes only its last token.
    let again = engine
        .chat(&request(
            &engine,
            &system("Glaciers"),
            "Summarize the notes.",
        ))
        .await
        .unwrap();
    assert_eq!(
        again.usage.cached_tokens + 1,
        again.usage.prompt_tokens,
        "{:?}",
        again.usage
    );
}
