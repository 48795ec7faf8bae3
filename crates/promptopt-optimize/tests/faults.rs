//! Optimization under provider faults: each algorithm on the shipped SST-2 sample, with a fifth of
//! the model attempts failing the ways providers fail (throttling with and without `Retry-After`,
//! 5xx, connection resets, hung calls, truncated JSON, empty replies, replies in no format, slow
//! replies). The run completes, scores like the fault-free run, stays within its budget, counts
//! every retry, and replays from its cache without the model.
#![allow(clippy::unwrap_used)]

use std::path::{Path, PathBuf};
use std::sync::Arc;

use promptopt_lm::layers::{FaultCounts, FaultLayer};
use promptopt_lm::{
    ChatRequest, FaultConfig, LmConfig, LmError, LmStack, ResponseCache, RetryConfig, Role,
    ScriptedLm, SharedLm,
};
use promptopt_optimize::{OptimizationRequest, OptimizationResult, Pipeline};
use promptopt_registry::Registry;

fn data(name: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../../examples/data")
        .join(name)
}

const POSITIVE: [&str; 8] = [
    "good",
    "great",
    "best",
    "love",
    "fun",
    "beautiful",
    "funny",
    "charm",
];
const NEGATIVE: [&str; 8] = [
    "bad", "dull", "worst", "boring", "mess", "fails", "flat", "tired",
];
/// Words the model only "knows" once it has seen demos.
const POSITIVE_WITH_DEMOS: [&str; 6] = ["moving", "smart", "solid", "enjoy", "fresh", "wonderful"];
const NEGATIVE_WITH_DEMOS: [&str; 6] = ["stupid", "too", "lacks", "never", "nothing", "problem"];

/// A lexicon "model" for SST-2 that answers in the adapter's format (chat fields, or JSON when
/// the request asks for it); demos in the prompt widen its lexicon. Anything that is not a
/// classification (instruction proposals, reflections) gets a fenced instruction.
fn model() -> ScriptedLm {
    ScriptedLm::new(|request: &ChatRequest| {
        let user = request
            .messages
            .iter()
            .rev()
            .find(|m| m.role == Role::User)
            .map(|m| m.content.clone())
            .unwrap_or_default();
        let Some((_, rest)) = user.split_once("[[ ## text ## ]]") else {
            return Ok("```\nDecide whether the review is positive or negative.\n```".into());
        };
        let text = rest.split("[[ ##").next().unwrap_or_default().to_lowercase();
        let with_demos = request.messages.len() > 2;
        let count = |words: &[&str]| words.iter().filter(|w| text.contains(*w)).count();
        let mut score = count(&POSITIVE) as i64 - count(&NEGATIVE) as i64;
        if with_demos {
            score += count(&POSITIVE_WITH_DEMOS) as i64 - count(&NEGATIVE_WITH_DEMOS) as i64;
        }
        let label = if score >= 0 { "positive" } else { "negative" };
        let reasoning = request
            .messages
            .first()
            .is_some_and(|m| m.content.contains("`reasoning`"));
        Ok(if request.response_format.is_some() {
            if reasoning {
                format!("{{\"reasoning\": \"The words decide.\", \"label\": \"{label}\"}}")
            } else {
                format!("{{\"label\": \"{label}\"}}")
            }
        } else if reasoning {
            format!("[[ ## reasoning ## ]]\nThe words decide.\n\n[[ ## label ## ]]\n{label}\n\n[[ ## completed ## ]]")
        } else {
            format!("[[ ## label ## ]]\n{label}\n\n[[ ## completed ## ]]")
        })
    })
    .with_cost_per_call(0.001)
}

fn request(algorithm: &str, extra: &str) -> OptimizationRequest {
    let config = match algorithm {
        "miprov2" => "algorithm_config: {num_candidates: 3, num_iterations: 6, minibatch: false, max_bootstrapped_demos: 2, max_labeled_demos: 2}",
        "gepa" => "algorithm_config: {max_metric_calls: 300, reflection_minibatch_size: 3}",
        _ => "algorithm_config: {max_bootstrapped_demos: 3, max_labeled_demos: 3}",
    };
    let target = if algorithm == "bootstrapfewshot" {
        "few_shot_examples"
    } else {
        "prompt_template"
    };
    let text = format!(
        "name: sst2-faults\ntarget: {target}\nevaluation_metric: accuracy\nalgorithm: {algorithm}\n\
         model: openai/gpt-4o-mini\nseed: 3\ninput_keys: [text]\noutput_keys: [label]\n\
         instructions: Classify the sentiment of the movie review as positive or negative.\n\
         training_examples: {}\nvalidation_examples: {}\n{config}\n{extra}\n",
        data("sst2-train.jsonl").display(),
        data("sst2/dev50.jsonl").display(),
    );
    OptimizationRequest::from_yaml_str(&text).unwrap()
}

/// The stack a provider would get, over `base`: short timeouts and backoffs so the test is quick.
fn stack(base: SharedLm, cache: Option<Arc<ResponseCache>>) -> SharedLm {
    let config = LmConfig {
        timeout_ms: Some(100),
        retry: RetryConfig {
            max_retries: 6,
            initial_backoff_ms: 1,
            max_backoff_ms: 4,
            max_retry_after_ms: 1_000,
            seed: 0,
        },
        ..LmConfig::default()
    };
    LmStack::new(config)
        .with_base(base)
        .with_cache(cache)
        .assemble()
        .unwrap()
}

fn faulty(rate: f64) -> (SharedLm, Arc<FaultCounts>) {
    let config = FaultConfig {
        rate,
        seed: 11,
        slow_ms: 2,
        retry_after_ms: 2,
        ..FaultConfig::default()
    };
    let layer = FaultLayer::new(model(), config, true);
    let counts = layer.counts();
    (Arc::new(layer), counts)
}

async fn run(lm: SharedLm, request: &OptimizationRequest) -> OptimizationResult {
    let home = tempfile::tempdir().unwrap();
    Pipeline::new(lm, Registry::new(home.path()))
        .with_concurrency(4)
        .optimize(request)
        .await
        .unwrap()
}

fn retried(counts: &FaultCounts) -> u64 {
    // Slow replies, empty replies and replies in no format are answers, not failed attempts.
    counts
        .by_kind()
        .iter()
        .filter(|(k, _)| !matches!(*k, "slow" | "empty_reply" | "wrong_format"))
        .map(|(_, n)| n)
        .sum()
}

#[tokio::test]
async fn every_algorithm_completes_under_a_fifth_of_attempts_failing() {
    let mut kinds = std::collections::BTreeSet::new();
    for algorithm in ["bootstrapfewshot", "miprov2", "gepa"] {
        let request = request(algorithm, "");
        let clean = run(stack(Arc::new(model()), None), &request).await;

        let (lm, counts) = faulty(0.2);
        let cache = Arc::new(ResponseCache::new(100_000, None, 0));
        let faulted = run(stack(lm, Some(Arc::clone(&cache))), &request).await;
        let analytics = faulted.analytics.clone().unwrap();
        assert!(counts.total() > 20, "{algorithm}: {:?}", counts.by_kind());
        kinds.extend(counts.by_kind().iter().map(|(k, _)| *k));
        // Every failed attempt was retried and counted; none was lost.
        assert_eq!(
            analytics.retries,
            retried(&counts),
            "{algorithm}: {:?}",
            counts.by_kind()
        );
        assert_eq!(analytics.failed_calls, 0, "{algorithm}");
        // Empty and unformatted replies cost a JSON retry of that example at worst: within
        // noise of the clean run on 50 validation examples.
        let gap = (faulted.optimized_metrics.score - clean.optimized_metrics.score).abs();
        assert!(
            gap <= 0.06,
            "{algorithm}: {} with faults, {} without",
            faulted.optimized_metrics.score,
            clean.optimized_metrics.score
        );
        assert!(faulted.optimized_metrics.score >= faulted.baseline_metrics.score - 0.04);

        // The cache replays the whole run without the model.
        let dead = ScriptedLm::new(|_: &ChatRequest| {
            Err(LmError::InvalidRequest("the model is gone".into()))
        });
        let replayed = run(stack(Arc::new(dead), Some(cache)), &request).await;
        assert_eq!(replayed.optimized_config, faulted.optimized_config);
        for (again, first) in [
            (&replayed.optimized_metrics, &faulted.optimized_metrics),
            (&replayed.baseline_metrics, &faulted.baseline_metrics),
        ] {
            assert_eq!(again.score, first.score, "{algorithm}");
            assert_eq!(again.errors, first.errors, "{algorithm}");
            assert_eq!(again.lm_calls, first.lm_calls, "{algorithm}");
            assert_eq!(again.tokens, first.tokens, "{algorithm}");
        }
        let replay = replayed.analytics.unwrap();
        assert_eq!(replay.lm_calls, replay.cache_hits, "{algorithm}");
        assert_eq!(replay.retries, 0);
    }
    assert_eq!(kinds.len(), 9, "every kind of fault occurred: {kinds:?}");
}

#[tokio::test]
async fn faults_never_push_spending_past_the_budget_by_more_than_the_calls_in_flight() {
    let concurrency = 4;
    for algorithm in ["bootstrapfewshot", "miprov2", "gepa"] {
        for (limit, key) in [
            ("max_lm_calls: 40", "calls"),
            ("max_total_tokens: 4000", "tokens"),
            ("max_cost_usd: 0.2", "cost"),
        ] {
            let request = request(algorithm, &format!("constraints: {{{limit}}}"));
            let (lm, counts) = faulty(0.2);
            let result = run(stack(lm, None), &request).await;
            let stage = |name: &str| {
                result
                    .analytics
                    .as_ref()
                    .unwrap()
                    .stages
                    .iter()
                    .find(|s| s.stage == name)
                    .unwrap()
                    .clone()
            };
            let optimize = stage("optimize");
            assert!(counts.total() > 0);
            let slack = concurrency as f64;
            match key {
                "calls" => assert!(
                    optimize.lm_calls as f64 <= 40.0 + slack,
                    "{algorithm}: {} calls",
                    optimize.lm_calls
                ),
                "tokens" => {
                    // The largest call of this task is well under 400 tokens.
                    assert!(
                        optimize.tokens as f64 <= 4000.0 + slack * 400.0,
                        "{algorithm}: {} tokens",
                        optimize.tokens
                    )
                }
                _ => {
                    // The cost limit is for the whole run: the baseline spends from it first.
                    let spent = stage("baseline").cost_usd + optimize.cost_usd;
                    assert!(
                        spent <= 0.2 + slack * 0.001 + 1e-9,
                        "{algorithm}: {spent} USD"
                    )
                }
            }
        }
    }
}
