//! Retries with exponential backoff, seeded jitter and `Retry-After`.

use std::time::Duration;

use async_trait::async_trait;
use parking_lot::Mutex;
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;

use crate::config::RetryConfig;
use crate::{ChatRequest, ChatResponse, Lm, LmError};

/// When and how often to retry.
#[derive(Debug, Clone, PartialEq)]
pub struct RetryPolicy {
    /// Retries after the first attempt.
    pub max_retries: u32,
    /// Backoff before the first retry; it doubles with each retry.
    pub initial_backoff: Duration,
    /// Upper bound of the backoff.
    pub max_backoff: Duration,
    /// A `Retry-After` longer than this is not waited for: the error is returned at once.
    pub max_retry_after: Duration,
    /// Seed of the jitter.
    pub seed: u64,
}

impl From<&RetryConfig> for RetryPolicy {
    fn from(config: &RetryConfig) -> Self {
        Self {
            max_retries: config.max_retries,
            initial_backoff: Duration::from_millis(config.initial_backoff_ms),
            max_backoff: Duration::from_millis(config.max_backoff_ms),
            max_retry_after: Duration::from_millis(config.max_retry_after_ms),
            seed: config.seed,
        }
    }
}

impl Default for RetryPolicy {
    fn default() -> Self {
        Self::from(&RetryConfig::default())
    }
}

/// Retries calls that failed with a retryable error ([`LmError::is_retryable`]).
///
/// The wait before retry `k` (from 0) is drawn uniformly from the upper half of
/// `min(initial · 2^k, max)`, with a seeded RNG; when the provider sent `Retry-After`, the wait is
/// at least that long. Client errors such as 400 and 401 are returned at once. A reply records
/// the retries that preceded it in [`ChatResponse::retries`]; an error after retries comes back as
/// [`LmError::GaveUp`] with their number.
#[derive(Debug)]
pub struct RetryLayer<L> {
    inner: L,
    policy: RetryPolicy,
    rng: Mutex<ChaCha8Rng>,
}

impl<L: Lm> RetryLayer<L> {
    /// Wraps `inner` with `policy`.
    pub fn new(inner: L, policy: RetryPolicy) -> Self {
        let rng = Mutex::new(ChaCha8Rng::seed_from_u64(policy.seed));
        Self { inner, policy, rng }
    }

    /// The wait before retry number `retry` (from 0) after `error`, or `None` to give up.
    fn delay(&self, retry: u32, error: &LmError) -> Option<Duration> {
        if retry >= self.policy.max_retries || !error.is_retryable() {
            return None;
        }
        let hinted = error.retry_after();
        if hinted.is_some_and(|h| h > self.policy.max_retry_after) {
            return None;
        }
        let factor = 2f64.powi(retry.min(62) as i32);
        let ceiling = self
            .policy
            .initial_backoff
            .mul_f64(factor)
            .min(self.policy.max_backoff);
        let jitter: f64 = self.rng.lock().gen_range(0.5..=1.0);
        let backoff = ceiling.mul_f64(jitter);
        Some(hinted.map_or(backoff, |h| h.max(backoff)))
    }
}

#[async_trait]
impl<L: Lm> Lm for RetryLayer<L> {
    async fn chat(&self, request: &ChatRequest) -> Result<ChatResponse, LmError> {
        let mut retry = 0;
        loop {
            match self.inner.chat(request).await {
                Ok(mut response) => {
                    response.retries = retry;
                    return Ok(response);
                }
                Err(error) => match self.delay(retry, &error) {
                    Some(wait) => {
                        tokio::time::sleep(wait).await;
                        retry += 1;
                    }
                    None if retry == 0 => return Err(error),
                    None => {
                        return Err(LmError::GaveUp {
                            retries: retry,
                            last: Box::new(error),
                        })
                    }
                },
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
