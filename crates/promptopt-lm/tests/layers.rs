//! The layers around any model, driven by fakes and tokio's paused clock.
#![allow(clippy::unwrap_used)]

use std::collections::VecDeque;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use async_trait::async_trait;
use promptopt_lm::layers::{
    CacheLayer, ConcurrencyLimit, CostLayer, RateLimit, RetryLayer, RetryPolicy, TimeoutLayer,
};
use promptopt_lm::{
    ChatRequest, ChatResponse, Choice, FinishReason, Lm, LmConfig, LmError, LmStack, Message,
    ModelPrice, PriceTable, ResponseCache, ScriptedLm, Usage, UsageTracker,
};
use tokio::time::Instant;

/// Fails with the queued errors, then answers; records when each call started.
#[derive(Default)]
struct Flaky {
    errors: Mutex<VecDeque<LmError>>,
    starts: Mutex<Vec<Instant>>,
    in_flight: AtomicUsize,
    max_in_flight: AtomicUsize,
    work: Duration,
    usage: Usage,
}

impl Flaky {
    fn failing(errors: Vec<LmError>) -> Self {
        Self {
            errors: Mutex::new(errors.into()),
            ..Self::default()
        }
    }

    fn calls(&self) -> usize {
        self.starts.lock().unwrap().len()
    }

    fn gaps(&self) -> Vec<Duration> {
        let starts = self.starts.lock().unwrap();
        starts.windows(2).map(|w| w[1] - w[0]).collect()
    }
}

#[async_trait]
impl Lm for Flaky {
    async fn chat(&self, request: &ChatRequest) -> Result<ChatResponse, LmError> {
        self.starts.lock().unwrap().push(Instant::now());
        let now = self.in_flight.fetch_add(1, Ordering::SeqCst) + 1;
        self.max_in_flight.fetch_max(now, Ordering::SeqCst);
        tokio::time::sleep(self.work).await;
        self.in_flight.fetch_sub(1, Ordering::SeqCst);
        if let Some(error) = self.errors.lock().unwrap().pop_front() {
            return Err(error);
        }
        Ok(ChatResponse {
            model: request.model.clone(),
            choices: vec![Choice {
                content: "ok".into(),
                finish_reason: FinishReason::Stop,
                tool_calls: Vec::new(),
            }],
            usage: self.usage,
            latency: self.work,
            cost_usd: None,
            cache_hit: false,
            retries: 0,
        })
    }
}

fn http(status: u16, retry_after: Option<u64>) -> LmError {
    LmError::Http {
        provider: "openai".into(),
        status,
        message: "x".into(),
        retry_after: retry_after.map(Duration::from_secs),
    }
}

fn policy(max_retries: u32) -> RetryPolicy {
    RetryPolicy {
        max_retries,
        initial_backoff: Duration::from_secs(1),
        max_backoff: Duration::from_secs(8),
        max_retry_after: Duration::from_secs(60),
        seed: 42,
    }
}

fn request() -> ChatRequest {
    ChatRequest::new("openai/gpt-4o-mini", vec![Message::user("hello there")])
}

#[tokio::test(start_paused = true)]
async fn retry_backs_off_exponentially_with_jitter() {
    let flaky = Arc::new(Flaky::failing(vec![
        http(500, None),
        http(503, None),
        http(429, None),
    ]));
    let lm = RetryLayer::new(Arc::clone(&flaky), policy(5));
    lm.chat(&request()).await.unwrap();
    let gaps = flaky.gaps();
    assert_eq!(gaps.len(), 3);
    for (gap, ceiling) in gaps.iter().zip([1u64, 2, 4]) {
        let ceiling = Duration::from_secs(ceiling);
        assert!(
            *gap >= ceiling / 2 && *gap <= ceiling,
            "{gap:?} vs {ceiling:?}"
        );
    }

    // The same seed gives the same waits.
    let again = Arc::new(Flaky::failing(vec![
        http(500, None),
        http(503, None),
        http(429, None),
    ]));
    RetryLayer::new(Arc::clone(&again), policy(5))
        .chat(&request())
        .await
        .unwrap();
    assert_eq!(again.gaps(), gaps);
}

#[tokio::test(start_paused = true)]
async fn retry_honours_retry_after() {
    let flaky = Arc::new(Flaky::failing(vec![http(429, Some(30))]));
    let lm = RetryLayer::new(Arc::clone(&flaky), policy(3));
    lm.chat(&request()).await.unwrap();
    let gap = flaky.gaps()[0];
    assert!(
        gap >= Duration::from_secs(30) && gap < Duration::from_secs(31),
        "{gap:?}"
    );

    // Longer than the policy accepts: returned at once.
    let flaky = Arc::new(Flaky::failing(vec![http(429, Some(3600))]));
    let error = RetryLayer::new(Arc::clone(&flaky), policy(3))
        .chat(&request())
        .await
        .unwrap_err();
    assert_eq!(error.retry_after(), Some(Duration::from_secs(3600)));
    assert_eq!(flaky.calls(), 1);
}

#[tokio::test(start_paused = true)]
async fn retry_never_repeats_client_errors_and_stops_at_the_limit() {
    for status in [400, 401, 403, 404, 422] {
        let flaky = Arc::new(Flaky::failing(vec![http(status, None)]));
        let error = RetryLayer::new(Arc::clone(&flaky), policy(5))
            .chat(&request())
            .await
            .unwrap_err();
        assert!(matches!(error, LmError::Http { status: s, .. } if s == status));
        assert_eq!(flaky.calls(), 1, "{status}");
    }
    let flaky = Arc::new(Flaky::failing(vec![http(500, None); 10]));
    let started = Instant::now();
    RetryLayer::new(Arc::clone(&flaky), policy(2))
        .chat(&request())
        .await
        .unwrap_err();
    assert_eq!(flaky.calls(), 3);
    assert!(started.elapsed() <= Duration::from_secs(3));
}

#[tokio::test(start_paused = true)]
async fn timeout_ends_slow_calls() {
    let slow = Flaky {
        work: Duration::from_secs(100),
        ..Flaky::default()
    };
    let lm = TimeoutLayer::new(slow, Duration::from_secs(5));
    let started = Instant::now();
    let error = lm.chat(&request()).await.unwrap_err();
    assert!(matches!(error, LmError::Timeout { after, .. } if after == Duration::from_secs(5)));
    assert_eq!(started.elapsed(), Duration::from_secs(5));
    assert!(error.is_retryable());
}

#[tokio::test(start_paused = true)]
async fn concurrency_limit_bounds_calls_in_flight() {
    let inner = Arc::new(Flaky {
        work: Duration::from_millis(100),
        ..Flaky::default()
    });
    let lm = Arc::new(ConcurrencyLimit::new(Arc::clone(&inner), 3));
    let started = Instant::now();
    let calls = (0..10).map(|_| {
        let lm = Arc::clone(&lm);
        tokio::spawn(async move { lm.chat(&request()).await })
    });
    for call in futures::future::join_all(calls).await {
        call.unwrap().unwrap();
    }
    assert_eq!(inner.max_in_flight.load(Ordering::SeqCst), 3);
    assert_eq!(started.elapsed(), Duration::from_millis(400));
    assert_eq!(lm.available(), 3);
}

#[tokio::test(start_paused = true)]
async fn rate_limit_spaces_requests_and_tokens() {
    let inner = Arc::new(Flaky::default());
    let lm = RateLimit::new(Arc::clone(&inner), Some(60), None);
    let started = Instant::now();
    for _ in 0..65 {
        lm.chat(&request()).await.unwrap();
    }
    // A full bucket of 60 at once, then one per second.
    let elapsed = started.elapsed();
    assert!(
        elapsed >= Duration::from_secs(5) && elapsed < Duration::from_secs(6),
        "{elapsed:?}"
    );

    let inner = Arc::new(Flaky {
        usage: Usage {
            prompt_tokens: 400,
            completion_tokens: 100,
            cached_tokens: 0,
        },
        ..Flaky::default()
    });
    let lm = RateLimit::new(Arc::clone(&inner), None, Some(1_000));
    let started = Instant::now();
    for _ in 0..4 {
        lm.chat(&request().with_max_tokens(100)).await.unwrap();
    }
    // 500 tokens per call at 1,000 per minute, estimated at 103 before each call: two calls use
    // the full bucket; the third starts once 103 tokens are back (6.2 s) and the fourth once its
    // estimate plus the third's overshoot of 397 are back (30 s later).
    let elapsed = started.elapsed();
    assert!(
        elapsed >= Duration::from_secs(36) && elapsed <= Duration::from_secs(37),
        "{elapsed:?}"
    );
}

#[tokio::test]
async fn cache_answers_repeats_and_respects_the_opt_out() {
    let inner = Arc::new(ScriptedLm::constant("positive"));
    let cache = Arc::new(ResponseCache::new(100, None, 0));
    let lm = CacheLayer::new(Arc::clone(&inner), Arc::clone(&cache));
    let first = lm.chat(&request()).await.unwrap();
    let second = lm.chat(&request()).await.unwrap();
    assert!(!first.cache_hit);
    assert!(second.cache_hit);
    assert_eq!(second.cost_usd, Some(0.0));
    assert!(second.latency < Duration::from_millis(50));
    assert_eq!(second.text(), "positive");
    assert_eq!(inner.calls(), 1);

    let third = lm.chat(&request().without_cache()).await.unwrap();
    assert!(!third.cache_hit);
    assert_eq!(inner.calls(), 2);
    let other = lm.chat(&request().with_temperature(1.0)).await.unwrap();
    assert!(!other.cache_hit);

    let stats = cache.stats();
    assert_eq!((stats.hits, stats.misses, stats.writes), (1, 2, 2));
    assert_eq!(stats.memory_entries, 2);
}

#[tokio::test]
async fn disk_cache_survives_restarts_and_keeps_its_size_cap() {
    let dir = tempfile::tempdir().unwrap();
    {
        let cache = Arc::new(ResponseCache::new(10, Some(dir.path().to_owned()), 1 << 20));
        let lm = CacheLayer::new(ScriptedLm::constant("stored"), Arc::clone(&cache));
        lm.chat(&request()).await.unwrap();
        assert!(cache.stats().disk_bytes > 0);
    }
    // A new process: nothing in memory, the answer comes from disk.
    let inner = Arc::new(ScriptedLm::constant("fresh"));
    let cache = Arc::new(ResponseCache::new(10, Some(dir.path().to_owned()), 1 << 20));
    let lm = CacheLayer::new(Arc::clone(&inner), Arc::clone(&cache));
    let response = lm.chat(&request()).await.unwrap();
    assert!(response.cache_hit);
    assert_eq!(response.text(), "stored");
    assert_eq!(inner.calls(), 0);
    assert_eq!(cache.stats().disk_hits, 1);

    // A cap of about three entries keeps the three most recent.
    let dir = tempfile::tempdir().unwrap();
    let entry_size = {
        let probe = tempfile::tempdir().unwrap();
        let cache = Arc::new(ResponseCache::new(
            0,
            Some(probe.path().to_owned()),
            1 << 20,
        ));
        CacheLayer::new(ScriptedLm::constant("x"), Arc::clone(&cache))
            .chat(&request().with_seed(0))
            .await
            .unwrap();
        cache.stats().disk_bytes
    };
    let cache = Arc::new(ResponseCache::new(
        0,
        Some(dir.path().to_owned()),
        entry_size * 3 + entry_size / 2,
    ));
    let lm = CacheLayer::new(ScriptedLm::constant("x"), Arc::clone(&cache));
    for seed in 0..6 {
        lm.chat(&request().with_seed(seed)).await.unwrap();
    }
    assert!(cache.stats().disk_bytes <= entry_size * 3 + entry_size / 2);
    let files = walk(dir.path());
    assert_eq!(files.len(), 3, "{files:?}");
    assert!(lm.chat(&request().with_seed(5)).await.unwrap().cache_hit);
    assert!(!lm.chat(&request().with_seed(0)).await.unwrap().cache_hit);
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

#[tokio::test]
async fn cost_layer_prices_calls_and_counts_usage() {
    let usage = Usage {
        prompt_tokens: 1_000_000,
        completion_tokens: 1_000_000,
        cached_tokens: 0,
    };
    let tracker = Arc::new(UsageTracker::new());
    let inner = Arc::new(Flaky {
        usage,
        ..Flaky::default()
    });
    let mut overrides = std::collections::BTreeMap::new();
    overrides.insert("acme/custom".to_owned(), ModelPrice::new(1.0, 2.0, 0.5));
    let lm = CostLayer::new(
        Arc::clone(&inner),
        PriceTable::with_overrides(&overrides),
        Arc::clone(&tracker),
    );
    let known = lm.chat(&request()).await.unwrap();
    assert!(
        (known.cost_usd.unwrap() - 0.75).abs() < 1e-9,
        "gpt-4o-mini: 0.15 + 0.60"
    );
    let custom = lm
        .chat(&ChatRequest::new("acme/custom", vec![]))
        .await
        .unwrap();
    assert_eq!(custom.cost_usd, Some(3.0));
    let unknown = lm
        .chat(&ChatRequest::new("openai/some-future-model", vec![]))
        .await
        .unwrap();
    assert_eq!(unknown.cost_usd, None);
    let local = lm
        .chat(&ChatRequest::new("local/smollm2-135m", vec![]))
        .await
        .unwrap();
    assert_eq!(local.cost_usd, Some(0.0));

    let snapshot = tracker.snapshot();
    assert_eq!(snapshot.calls, 4);
    assert_eq!(snapshot.unknown_cost_calls, 1);
    assert_eq!(snapshot.prompt_tokens, 4_000_000);
    assert!((snapshot.cost_usd - 3.75).abs() < 1e-9);
}

#[tokio::test]
async fn the_stack_counts_cache_hits_as_free_calls() {
    let tracker = Arc::new(UsageTracker::new());
    let lm = LmStack::new(LmConfig::default())
        .with_base(Arc::new(ScriptedLm::constant("a b c")))
        .with_tracker(Arc::clone(&tracker))
        .assemble()
        .unwrap();
    let request = ChatRequest::new("openai/gpt-4o", vec![Message::user("one two")]);
    let first = lm.chat(&request).await.unwrap();
    let second = lm.chat(&request).await.unwrap();
    assert!(first.cost_usd.unwrap() > 0.0);
    assert_eq!(second.cost_usd, Some(0.0));
    assert!(second.cache_hit);
    let snapshot = tracker.snapshot();
    assert_eq!((snapshot.calls, snapshot.cache_hits), (2, 1));
    assert_eq!(snapshot.prompt_tokens, 2);
    assert_eq!(snapshot.completion_tokens, 3);
    assert_eq!(snapshot.cost_usd, first.cost_usd.unwrap());
}

#[tokio::test]
async fn unknown_providers_are_named_with_the_known_ones() {
    let lm = LmStack::new(LmConfig::default())
        .with_backend("local", Arc::new(ScriptedLm::constant("x")))
        .assemble()
        .unwrap();
    let error = lm
        .chat(&ChatRequest::new("nowhere/model", vec![]))
        .await
        .unwrap_err();
    assert!(matches!(error, LmError::UnknownProvider { .. }));
    assert_eq!(
        error.to_string(),
        "Unknown provider `nowhere` in model `nowhere/model`; known providers: openai, anthropic, gemini, local"
    );
    assert!(lm
        .chat(&ChatRequest::new("local/smollm2", vec![]))
        .await
        .is_ok());
}
