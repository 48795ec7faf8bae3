//! The engine on the real SmolLM2 model (fetched by `scripts/fetch-model.sh`).
//!
//! One engine per test binary; tests take turns (a lock) so that batching, caching and
//! determinism are observed on an otherwise idle engine.
#![allow(clippy::unwrap_used)]

mod common;

use std::sync::OnceLock;

use promptopt_engine::{Engine, EngineConfig, EngineError};
use promptopt_lm::{ChatRequest, FinishReason, Lm, LmError, Message, ResponseFormat};
use tokio::sync::{Mutex, MutexGuard};

const CTX: u32 = 1024;

fn engine() -> &'static Engine {
    static ENGINE: OnceLock<Engine> = OnceLock::new();
    ENGINE.get_or_init(|| {
        Engine::load(common::on_test_device(
            EngineConfig::new(common::smollm2())
                .with_slots(8)
                .with_ctx_per_slot(CTX),
        ))
        .unwrap()
    })
}

async fn turn() -> MutexGuard<'static, ()> {
    static TURN: Mutex<()> = Mutex::const_new(());
    TURN.lock().await
}

fn ask(question: &str) -> ChatRequest {
    ChatRequest::new(engine().model_name(), vec![Message::user(question)])
        .with_temperature(0.0)
        .with_max_tokens(24)
}

const REVIEWS: [&str; 8] = [
    "A gorgeous, moving film.",
    "Two hours I will never get back.",
    "The acting was wooden and the plot made no sense.",
    "I laughed from start to finish.",
    "A masterpiece of quiet storytelling.",
    "Dull, dull, dull.",
    "The soundtrack alone is worth the ticket.",
    "It falls apart in the last act.",
];

fn classify(review: &str) -> ChatRequest {
    ChatRequest::new(
        engine().model_name(),
        vec![
            Message::system("Classify the sentiment of the review as positive or negative."),
            Message::user("What a wonderful movie."),
            Message::assistant("positive"),
            Message::user("Boring and far too long."),
            Message::assistant("negative"),
            Message::user(review),
        ],
    )
    .with_temperature(0.0)
    .with_max_tokens(4)
}

#[tokio::test]
async fn answers_a_chat_request() {
    let _turn = turn().await;
    let reply = engine().chat(&ask("What is 2+2?")).await.unwrap();
    assert!(reply.text().contains('4'), "{:?}", reply.text());
    assert!(reply.usage.prompt_tokens > 20, "{:?}", reply.usage);
    assert!(reply.usage.completion_tokens > 0);
    assert_eq!(reply.cost_usd, Some(0.0));
    assert_eq!(reply.model, engine().model_name());
}

#[tokio::test]
async fn a_choice_format_keeps_every_reply_to_one_label() {
    let _turn = turn().await;
    let labels = [
        "DESCRIPTION",
        "ENTITY",
        "HUMAN",
        "LOCATION",
        "NUMBER",
        "NUM",
    ];
    let format = ResponseFormat::Choice {
        choices: labels.iter().map(|l| (*l).to_string()).collect(),
    };
    // Without the format the model answers the question instead of naming its kind.
    let mut requests = Vec::new();
    for question in [
        "Who wrote Hamlet?",
        "How far is the moon?",
        "What is a virus?",
    ] {
        let mut request = ChatRequest::new(
            engine().model_name(),
            vec![
                Message::system("Name the kind of answer the question asks for."),
                Message::user(question),
            ],
        )
        .with_max_tokens(16);
        request.response_format = Some(format.clone());
        requests.push(request.clone());
        let mut warm = request.with_temperature(1.5).with_seed(9);
        warm.n = 3;
        requests.push(warm);
    }
    let replies = futures_all(requests.into_iter()).await;
    for reply in replies {
        for choice in &reply.choices {
            assert!(
                labels.contains(&choice.content.as_str()),
                "{:?}",
                choice.content
            );
            assert_eq!(choice.finish_reason, FinishReason::Stop);
        }
        // Every token adds at least one byte, and the reply ends at the label.
        let longest = labels.iter().map(|l| l.len()).max().unwrap() as u64;
        assert!(reply.usage.completion_tokens <= longest * reply.choices.len() as u64);
    }
    let mut empty = ask("Hi");
    empty.response_format = Some(ResponseFormat::Choice {
        choices: vec![String::new()],
    });
    let error = engine().chat(&empty).await.unwrap_err();
    assert!(matches!(error, LmError::InvalidRequest(_)), "{error:?}");
}

#[tokio::test]
async fn greedy_replies_repeat_alone_and_mostly_agree_in_a_batch() {
    let _turn = turn().await;
    let mut alone = Vec::new();
    for review in REVIEWS {
        alone.push(
            engine()
                .chat(&classify(review))
                .await
                .unwrap()
                .text()
                .to_string(),
        );
    }
    // The same request on the same cache state gives the same reply.
    for (review, first) in REVIEWS.iter().zip(&alone) {
        assert_eq!(
            &engine().chat(&classify(review)).await.unwrap().text(),
            first
        );
    }
    assert!(
        alone
            .iter()
            .all(|r| r.contains("positive") || r.contains("negative")),
        "{alone:?}"
    );
    // Decoded together, a sequence's logits may differ from the lone run by float rounding
    // (other batch shapes, other cache cells), which can flip a near tie: most replies agree.
    let batched = futures_all(REVIEWS.iter().map(|r| classify(r))).await;
    let agree = batched
        .iter()
        .zip(&alone)
        .filter(|(b, a)| b.text() == a.as_str())
        .count();
    assert!(
        agree >= 6,
        "only {agree} of 8 batched replies match the lone ones"
    );
}

#[tokio::test]
async fn concurrent_requests_are_decoded_together() {
    let _turn = turn().await;
    let questions = [
        "Name a color.",
        "Name an animal.",
        "Name a fruit.",
        "Name a country.",
        "Name a planet.",
        "Name a tree.",
        "Name a metal.",
        "Name a river.",
    ];
    let replies = futures_all(questions.iter().map(|q| ask(q))).await;
    assert_eq!(replies.len(), 8);
    assert!(replies.iter().all(|r| r.usage.completion_tokens > 0));
    let stats = engine().stats();
    assert!(stats.max_sequences_per_decode >= 8, "{stats:?}");
    assert!(stats.batched_decode_calls > 0, "{stats:?}");
}

#[tokio::test]
async fn a_shared_prefix_is_reused() {
    let _turn = turn().await;
    let system = "You are a careful assistant who answers in one short sentence. \
                  Never use lists. Always be polite and precise.";
    let first = ChatRequest::new(
        engine().model_name(),
        vec![
            Message::system(system),
            Message::user("What is two plus two?"),
        ],
    )
    .with_temperature(0.0)
    .with_max_tokens(8);
    let mut second = first.clone();
    second.messages[1] = Message::user("What is the largest ocean?");
    let first = engine().chat(&first).await.unwrap();
    let second = engine().chat(&second).await.unwrap();
    // Everything up to the user's question is shared: the system turn plus the user header.
    assert!(second.usage.cached_tokens >= 25, "{:?}", second.usage);
    assert!(second.usage.cached_tokens < second.usage.prompt_tokens);
    assert!(first.usage.prompt_tokens > 0);
}

#[tokio::test]
async fn stop_strings_end_the_reply_and_are_cut() {
    let _turn = turn().await;
    let request = ask("List the days of the week, separated by commas.");
    let full = engine().chat(&request).await.unwrap();
    let text = full.text().to_string();
    // The stop string is the first separator the reply holds (its exact wording may vary with
    // the build of llama.cpp): a comma, a line break or a dash.
    let (stop, cut) = [",", "\n", " -"]
        .iter()
        .filter_map(|s| text.find(s).map(|i| (s.to_string(), i)))
        .min_by_key(|(_, i)| *i)
        .unwrap_or_else(|| panic!("the reply has no separator: {text:?}"));
    let stopped = engine()
        .chat(&request.clone().with_stop(vec![stop]))
        .await
        .unwrap();
    assert_eq!(stopped.text(), &text[..cut]);
    assert_eq!(stopped.choices[0].finish_reason, FinishReason::Stop);
}

#[tokio::test]
async fn max_tokens_ends_the_reply_with_length() {
    let _turn = turn().await;
    let reply = engine()
        .chat(&ask("Write a long story about a dragon.").with_max_tokens(3))
        .await
        .unwrap();
    assert_eq!(reply.usage.completion_tokens, 3);
    assert_eq!(reply.choices[0].finish_reason, FinishReason::Length);
}

#[tokio::test]
async fn seeded_sampling_repeats_per_seed_and_n_gives_several_choices() {
    let _turn = turn().await;
    let request = ask("Invent a name for a cat.")
        .with_temperature(1.0)
        .with_seed(7);
    // The first run decodes the whole prompt; later runs reuse it from the cache, which can
    // change the logits by float rounding. Runs on the same cache state sample the same reply.
    engine().chat(&request).await.unwrap();
    let a = engine().chat(&request).await.unwrap();
    let b = engine().chat(&request).await.unwrap();
    assert_eq!(a.text(), b.text());
    let mut several = request.clone();
    several.n = 4;
    let many = engine().chat(&several).await.unwrap();
    assert_eq!(many.choices.len(), 4);
    let distinct: std::collections::BTreeSet<&str> =
        many.choices.iter().map(|c| c.content.as_str()).collect();
    assert!(distinct.len() > 1, "{distinct:?}");
}

#[tokio::test]
async fn a_prompt_longer_than_the_slot_is_a_context_overflow() {
    let _turn = turn().await;
    // The engine reports the context it holds, so that optimizers can keep prompts within it.
    assert_eq!(
        engine().context_tokens(engine().model_name()),
        Some(u64::from(CTX))
    );
    assert_eq!(engine().context_tokens("local/gemma3-270m"), None);
    let long = "word ".repeat(3000);
    let error = engine().chat(&ask(&long)).await.unwrap_err();
    match error {
        LmError::ContextOverflow {
            prompt_tokens,
            context_tokens,
        } => {
            assert!(prompt_tokens > u64::from(CTX));
            assert_eq!(context_tokens, u64::from(CTX));
        }
        other => panic!("expected a context overflow, got {other}"),
    }
}

#[tokio::test]
async fn requests_for_another_model_are_refused() {
    let request = ChatRequest::new("local/gemma3-270m", vec![Message::user("hi")]);
    let error = engine().chat(&request).await.unwrap_err();
    assert!(matches!(error, LmError::InvalidRequest(_)), "{error}");
    assert!(error.to_string().contains("local/gemma3-270m"), "{error}");
}

#[test]
fn a_missing_model_file_names_where_it_was_looked_for() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("absent.gguf");
    let error = Engine::load(EngineConfig::new(format!("local/{}", path.display()))).unwrap_err();
    assert!(
        matches!(error, EngineError::ModelNotFound { .. }),
        "{error}"
    );
    let message = error.to_string();
    assert!(
        message.contains(&format!("`{}`", path.display())),
        "{message}"
    );
    // A file given by path is not in the catalog: there is nothing to pull.
    assert!(!message.contains("models pull"), "{message}");
}

#[test]
fn a_corrupt_model_file_is_a_clear_error() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("garbage.gguf");
    std::fs::write(
        &path,
        b"this is not a gguf file at all, just some bytes".repeat(100),
    )
    .unwrap();
    let error = Engine::load(EngineConfig::new(format!("local/{}", path.display()))).unwrap_err();
    assert!(matches!(error, EngineError::ModelLoad { .. }), "{error}");
    assert!(error.to_string().contains("garbage.gguf"), "{error}");
}

#[test]
fn the_engine_runs_where_the_environment_says() {
    let config = engine().config();
    // With `PROMPTOPT_GPU_REQUIRED=false` a GPU that is asked for but absent leaves it on the CPU.
    let on_gpu = common::gpu_asked()
        && promptopt_engine::CUDA_BUILD
        && !promptopt_engine::detect_gpus().is_empty();
    if on_gpu {
        assert!(config.gpu_layers > 0, "{config:?}");
        assert!(!config.devices.is_empty(), "{config:?}");
    } else {
        assert_eq!(config.gpu_layers, 0, "{config:?}");
    }
}

/// On a CUDA build with a GPU: the memory fraction caps the slots, and a fraction too small for
/// the weights is an error naming it. Elsewhere: asking for a GPU is the build error.
#[test]
fn the_memory_fraction_caps_the_batch_or_refuses_the_model() {
    let gpu = |fraction: f64, batch_size: usize| promptopt_lm::gpu::GpuConfig {
        memory_fraction: fraction,
        batch_size,
        ..promptopt_lm::gpu::GpuConfig::default()
    };
    let base = EngineConfig::new(common::smollm2()).with_ctx_per_slot(4096);
    let gpus = promptopt_engine::detect_gpus();
    let Some(device) = gpus.first() else {
        let error = base.place_gpu(Some(&gpu(0.5, 8))).unwrap_err().to_string();
        if promptopt_engine::CUDA_BUILD {
            assert!(error.contains("`gpu.device_ids`"), "{error}");
        } else {
            assert!(error.contains("--features cuda"), "{error}");
        }
        return;
    };
    // About 40 MiB of the device: room for the weights (98 MiB in Q4_1)? No: an error.
    let tiny = 40.0 * 1024.0 * 1024.0 / device.memory_total as f64;
    let placed = base.clone().place_gpu(Some(&gpu(tiny, 8))).unwrap().config;
    let error = Engine::load(placed).unwrap_err().to_string();
    assert!(error.contains("`gpu.memory_fraction`"), "{error}");
    // About 1.5 GiB: the weights and buffers fit, 256 sequences of 4,096 tokens (22 GiB) do not.
    let small = 1536.0 * 1024.0 * 1024.0 / device.memory_total as f64;
    let placed = base.place_gpu(Some(&gpu(small, 256))).unwrap().config;
    let engine = Engine::load(placed).unwrap();
    let slots = engine.config().slots;
    assert!((1..256).contains(&slots), "{slots}");
    assert_eq!(engine.info().slots, slots);
}

async fn futures_all(
    requests: impl Iterator<Item = ChatRequest>,
) -> Vec<promptopt_lm::ChatResponse> {
    let handles: Vec<_> = requests
        .map(|request| tokio::spawn(async move { engine().chat(&request).await }))
        .collect();
    let mut replies = Vec::new();
    for handle in handles {
        replies.push(handle.await.unwrap().unwrap());
    }
    replies
}
