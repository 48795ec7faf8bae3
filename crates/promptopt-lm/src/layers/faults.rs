//! Injected faults, for testing what the rest of the stack and the optimizers do when a
//! provider misbehaves.
//!
//! [`FaultLayer`] sits directly above the model, below the timeout, so an injected fault goes
//! through the same retry, timeout and accounting code as a real one. Whether an attempt fails,
//! and how, is drawn from a hash of the seed, the request and the attempt's number for that
//! request: the same run meets the same faults whatever order concurrent calls take.

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use async_trait::async_trait;
use parking_lot::Mutex;
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

use crate::layers::cache_key;
use crate::{ChatRequest, ChatResponse, Choice, FinishReason, Lm, LmError, Usage};

/// One kind of fault a provider can show.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum FaultKind {
    /// HTTP 429 with a `Retry-After` header.
    ThrottledWithRetryAfter,
    /// HTTP 429 without one.
    Throttled,
    /// HTTP 500, 502 or 503.
    ServerError,
    /// The connection was reset before a reply.
    ConnectionReset,
    /// The provider never answers: the timeout layer ends the call (without one, a
    /// [`LmError::Timeout`] after [`FaultConfig::slow_ms`]).
    Timeout,
    /// A reply body cut off in the middle of its JSON.
    TruncatedJson,
    /// A successful reply with no text.
    EmptyReply,
    /// A successful reply in none of the adapters' formats.
    WrongFormat,
    /// The real reply, after [`FaultConfig::slow_ms`].
    Slow,
}

impl FaultKind {
    /// Every kind, in a fixed order.
    pub const ALL: [FaultKind; 9] = [
        FaultKind::ThrottledWithRetryAfter,
        FaultKind::Throttled,
        FaultKind::ServerError,
        FaultKind::ConnectionReset,
        FaultKind::Timeout,
        FaultKind::TruncatedJson,
        FaultKind::EmptyReply,
        FaultKind::WrongFormat,
        FaultKind::Slow,
    ];

    /// The kind's name in configuration files.
    pub fn name(self) -> &'static str {
        match self {
            FaultKind::ThrottledWithRetryAfter => "throttled_with_retry_after",
            FaultKind::Throttled => "throttled",
            FaultKind::ServerError => "server_error",
            FaultKind::ConnectionReset => "connection_reset",
            FaultKind::Timeout => "timeout",
            FaultKind::TruncatedJson => "truncated_json",
            FaultKind::EmptyReply => "empty_reply",
            FaultKind::WrongFormat => "wrong_format",
            FaultKind::Slow => "slow",
        }
    }
}

/// What to inject and how often.
///
/// ```
/// let config: promptopt_lm::FaultConfig =
///     serde_json::from_str(r#"{"rate": 0.2, "seed": 7, "kinds": ["throttled", "server_error"]}"#)
///         .unwrap();
/// assert_eq!(config.kinds.len(), 2);
/// assert_eq!(config.validate(), Ok(()));
/// ```
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct FaultConfig {
    /// Share of attempts that meet a fault, from 0 to 1.
    pub rate: f64,
    /// Seed of the draw.
    pub seed: u64,
    /// The kinds to draw from, equally likely; empty means all of them.
    pub kinds: Vec<FaultKind>,
    /// Delay of a slow reply, in milliseconds.
    pub slow_ms: u64,
    /// The `Retry-After` that a throttled reply with the header asks for, in milliseconds.
    pub retry_after_ms: u64,
}

impl Default for FaultConfig {
    fn default() -> Self {
        Self {
            rate: 0.0,
            seed: 0,
            kinds: Vec::new(),
            slow_ms: 200,
            retry_after_ms: 100,
        }
    }
}

impl FaultConfig {
    /// A rate that is not a share is refused.
    pub fn validate(&self) -> Result<(), String> {
        if !(0.0..=1.0).contains(&self.rate) {
            return Err(format!(
                "The fault `rate` must be between 0 and 1, not {}",
                self.rate
            ));
        }
        Ok(())
    }

    fn kinds(&self) -> &[FaultKind] {
        if self.kinds.is_empty() {
            &FaultKind::ALL
        } else {
            &self.kinds
        }
    }
}

/// How many faults of each kind a [`FaultLayer`] injected.
#[derive(Debug, Default)]
pub struct FaultCounts {
    counts: [AtomicU64; FaultKind::ALL.len()],
}

impl FaultCounts {
    fn add(&self, kind: FaultKind) {
        if let Some(i) = FaultKind::ALL.iter().position(|k| *k == kind) {
            self.counts[i].fetch_add(1, Ordering::Relaxed);
        }
    }

    /// The number injected of each kind that occurred, by name.
    pub fn by_kind(&self) -> Vec<(&'static str, u64)> {
        FaultKind::ALL
            .iter()
            .zip(&self.counts)
            .map(|(k, c)| (k.name(), c.load(Ordering::Relaxed)))
            .filter(|(_, n)| *n > 0)
            .collect()
    }

    /// All faults injected.
    pub fn total(&self) -> u64 {
        self.counts.iter().map(|c| c.load(Ordering::Relaxed)).sum()
    }
}

/// Makes a share of the calls to `inner` fail the ways providers fail.
#[derive(Debug)]
pub struct FaultLayer<L> {
    inner: L,
    config: FaultConfig,
    /// Whether a timeout layer sits above: then a [`FaultKind::Timeout`] hangs until it fires.
    hang_for_timeout: bool,
    /// Attempts seen per request key.
    attempts: Mutex<HashMap<String, u64>>,
    counts: std::sync::Arc<FaultCounts>,
}

impl<L: Lm> FaultLayer<L> {
    /// Wraps `inner`. With `hang_for_timeout`, a timeout fault waits for the timeout layer above
    /// to end it, as a hung connection would.
    pub fn new(inner: L, config: FaultConfig, hang_for_timeout: bool) -> Self {
        Self {
            inner,
            config,
            hang_for_timeout,
            attempts: Mutex::new(HashMap::new()),
            counts: std::sync::Arc::default(),
        }
    }

    /// The counts of injected faults, shared.
    pub fn counts(&self) -> std::sync::Arc<FaultCounts> {
        std::sync::Arc::clone(&self.counts)
    }

    /// The fault for this attempt of `request`, if it meets one.
    fn draw(&self, request: &ChatRequest) -> Option<FaultKind> {
        if self.config.rate <= 0.0 {
            return None;
        }
        let key = cache_key(request).unwrap_or_else(|_| request.model.clone());
        let attempt = {
            let mut attempts = self.attempts.lock();
            let n = attempts.entry(key.clone()).or_insert(0);
            *n += 1;
            *n
        };
        let mut hasher = Sha256::new();
        hasher.update(self.config.seed.to_le_bytes());
        hasher.update(key.as_bytes());
        hasher.update(attempt.to_le_bytes());
        let digest = hasher.finalize();
        let word = |i: usize| {
            let mut bytes = [0u8; 8];
            bytes.copy_from_slice(&digest[i * 8..i * 8 + 8]);
            u64::from_le_bytes(bytes)
        };
        let unit = (word(0) >> 11) as f64 / (1u64 << 53) as f64;
        if unit >= self.config.rate {
            return None;
        }
        let kinds = self.config.kinds();
        let pick = usize::try_from(word(1) % kinds.len() as u64).unwrap_or(0);
        kinds.get(pick).copied()
    }
}

fn provider(request: &ChatRequest) -> String {
    request.provider().unwrap_or("model").to_owned()
}

fn reply(request: &ChatRequest, text: &str) -> ChatResponse {
    ChatResponse {
        model: request.model.clone(),
        choices: vec![Choice::text(text, FinishReason::Stop)],
        usage: Usage::default(),
        latency: Duration::ZERO,
        cost_usd: Some(0.0),
        cache_hit: false,
        retries: 0,
    }
}

#[async_trait]
impl<L: Lm> Lm for FaultLayer<L> {
    async fn chat(&self, request: &ChatRequest) -> Result<ChatResponse, LmError> {
        let Some(kind) = self.draw(request) else {
            return self.inner.chat(request).await;
        };
        self.counts.add(kind);
        let http = |status: u16, retry_after: Option<Duration>| LmError::Http {
            provider: provider(request),
            status,
            message: format!("injected fault: HTTP {status}"),
            retry_after,
        };
        let slow = Duration::from_millis(self.config.slow_ms);
        match kind {
            FaultKind::ThrottledWithRetryAfter => Err(http(
                429,
                Some(Duration::from_millis(self.config.retry_after_ms)),
            )),
            FaultKind::Throttled => Err(http(429, None)),
            FaultKind::ServerError => {
                let statuses = [500, 502, 503];
                let status = statuses[request.messages.len() % statuses.len()];
                Err(http(status, None))
            }
            FaultKind::ConnectionReset => Err(LmError::Connect {
                provider: provider(request),
                url: "(injected fault)".into(),
                message: "connection reset by peer".into(),
            }),
            FaultKind::Timeout => {
                if self.hang_for_timeout {
                    std::future::pending::<()>().await;
                }
                tokio::time::sleep(slow).await;
                Err(LmError::Timeout {
                    provider: provider(request),
                    after: slow,
                })
            }
            FaultKind::TruncatedJson => {
                let body =
                    r#"{"id": "chatcmpl-1", "choices": [{"index": 0, "message": {"role": "assi"#;
                let message = match serde_json::from_str::<serde_json::Value>(body) {
                    Err(e) => format!("injected fault: {e}"),
                    Ok(_) => "injected fault: truncated body".into(),
                };
                Err(LmError::MalformedResponse {
                    provider: provider(request),
                    message,
                })
            }
            FaultKind::EmptyReply => Ok(reply(request, "")),
            FaultKind::WrongFormat => Ok(reply(
                request,
                "Sorry, I am not sure what you mean. Could you rephrase the question?",
            )),
            FaultKind::Slow => {
                tokio::time::sleep(slow).await;
                self.inner.chat(request).await
            }
        }
    }

    fn supports_json_schema(&self, model: &str) -> bool {
        self.inner.supports_json_schema(model)
    }

    fn context_tokens(&self, model: &str) -> Option<u64> {
        self.inner.context_tokens(model)
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;
    use crate::{Message, ScriptedLm};

    fn request(i: usize) -> ChatRequest {
        ChatRequest::new("local/m", vec![Message::user(format!("question {i}"))])
    }

    fn layer(rate: f64, seed: u64) -> FaultLayer<ScriptedLm> {
        let config = FaultConfig {
            rate,
            seed,
            slow_ms: 1,
            ..FaultConfig::default()
        };
        FaultLayer::new(ScriptedLm::constant("ok"), config, false)
    }

    async fn outcomes(layer: &FaultLayer<ScriptedLm>, n: usize) -> Vec<bool> {
        let mut out = Vec::new();
        for i in 0..n {
            let r = layer.chat(&request(i)).await;
            out.push(r.is_ok_and(|r| r.text() == "ok"));
        }
        out
    }

    #[tokio::test]
    async fn the_rate_is_met_and_every_kind_occurs() {
        let layer = layer(0.2, 1);
        let ok = outcomes(&layer, 2000).await;
        let injected = layer.counts().total();
        assert!((340..=460).contains(&injected), "{injected} of 2000");
        // Slow replies still answer; every other kind fails the attempt.
        let slow = layer
            .counts()
            .by_kind()
            .iter()
            .find(|(k, _)| *k == "slow")
            .map_or(0, |(_, n)| *n);
        assert_eq!(ok.iter().filter(|o| !**o).count() as u64, injected - slow);
        assert_eq!(layer.counts().by_kind().len(), FaultKind::ALL.len());
    }

    #[tokio::test]
    async fn the_same_seed_meets_the_same_faults_and_another_seed_others() {
        let a = outcomes(&layer(0.3, 5), 300).await;
        let b = outcomes(&layer(0.3, 5), 300).await;
        let c = outcomes(&layer(0.3, 6), 300).await;
        assert_eq!(a, b);
        assert_ne!(a, c);
    }

    #[tokio::test]
    async fn a_retried_attempt_draws_again() {
        // The same request sent again is a new attempt with its own draw, so a retry can pass.
        let layer = layer(0.5, 2);
        let mut results = Vec::new();
        for _ in 0..40 {
            results.push(layer.chat(&request(0)).await.is_ok());
        }
        assert!(results.iter().any(|r| *r) && results.iter().any(|r| !*r));
    }

    #[tokio::test]
    async fn injected_errors_look_like_the_real_ones() {
        let config = FaultConfig {
            rate: 1.0,
            kinds: vec![FaultKind::ThrottledWithRetryAfter],
            retry_after_ms: 250,
            ..FaultConfig::default()
        };
        let layer = FaultLayer::new(ScriptedLm::constant("ok"), config, false);
        let error = layer.chat(&request(0)).await.unwrap_err();
        assert!(error.is_retryable());
        assert_eq!(error.retry_after(), Some(Duration::from_millis(250)));
        for kind in [
            FaultKind::Throttled,
            FaultKind::ServerError,
            FaultKind::ConnectionReset,
            FaultKind::Timeout,
            FaultKind::TruncatedJson,
        ] {
            let config = FaultConfig {
                rate: 1.0,
                kinds: vec![kind],
                slow_ms: 1,
                ..FaultConfig::default()
            };
            let layer = FaultLayer::new(ScriptedLm::constant("ok"), config, false);
            let error = layer.chat(&request(0)).await.unwrap_err();
            assert!(error.is_retryable(), "{kind:?}: {error}");
        }
    }

    #[test]
    fn a_rate_outside_zero_to_one_is_refused() {
        let config = FaultConfig {
            rate: 1.5,
            ..FaultConfig::default()
        };
        assert_eq!(
            config.validate().unwrap_err(),
            "The fault `rate` must be between 0 and 1, not 1.5"
        );
    }
}
