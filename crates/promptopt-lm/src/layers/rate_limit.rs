//! Requests and tokens per minute.

use async_trait::async_trait;
use parking_lot::Mutex;
use tokio::time::{Duration, Instant};

use crate::{ChatRequest, ChatResponse, Lm, LmError};

/// Completion tokens assumed for a request without `max_tokens`, until its usage is known.
const ASSUMED_COMPLETION: u64 = 256;

/// A token bucket that refills continuously; its level may go negative when a call used more
/// tokens than estimated, which delays later calls.
#[derive(Debug)]
struct Bucket {
    capacity: f64,
    level: f64,
    per_second: f64,
    updated: Instant,
}

impl Bucket {
    fn per_minute(capacity: f64) -> Self {
        Self {
            capacity,
            level: capacity,
            per_second: capacity / 60.0,
            updated: Instant::now(),
        }
    }

    fn refill(&mut self, now: Instant) {
        let elapsed = now.saturating_duration_since(self.updated).as_secs_f64();
        self.level = (self.level + elapsed * self.per_second).min(self.capacity);
        self.updated = now;
    }

    /// How long until `amount` can be taken (a request larger than the bucket waits for a full
    /// bucket).
    fn wait_for(&self, amount: f64) -> Option<Duration> {
        let needed = amount.min(self.capacity);
        (self.level < needed)
            .then(|| Duration::from_secs_f64((needed - self.level) / self.per_second))
    }
}

#[derive(Debug)]
struct Buckets {
    requests: Option<Bucket>,
    tokens: Option<Bucket>,
}

/// Spaces calls so that at most a number of requests and of tokens (prompt plus completion)
/// start per minute.
///
/// Tokens are estimated before the call (a quarter of the prompt's characters plus `max_tokens`)
/// and corrected with the real usage afterwards. Time comes from tokio, so a paused test clock
/// drives it.
#[derive(Debug)]
pub struct RateLimit<L> {
    inner: L,
    buckets: Mutex<Buckets>,
}

impl<L: Lm> RateLimit<L> {
    /// Wraps `inner`; `None` leaves a dimension unlimited.
    pub fn new(inner: L, requests_per_minute: Option<u32>, tokens_per_minute: Option<u64>) -> Self {
        let buckets = Buckets {
            requests: requests_per_minute.map(|r| Bucket::per_minute(f64::from(r.max(1)))),
            tokens: tokens_per_minute.map(|t| Bucket::per_minute(t.max(1) as f64)),
        };
        Self {
            inner,
            buckets: Mutex::new(buckets),
        }
    }

    async fn admit(&self, tokens: f64) {
        loop {
            let wait = {
                let mut buckets = self.buckets.lock();
                let now = Instant::now();
                let Buckets {
                    requests,
                    tokens: token_bucket,
                } = &mut *buckets;
                if let Some(b) = requests.as_mut() {
                    b.refill(now);
                }
                if let Some(b) = token_bucket.as_mut() {
                    b.refill(now);
                }
                let wait = [
                    requests.as_ref().and_then(|b| b.wait_for(1.0)),
                    token_bucket.as_ref().and_then(|b| b.wait_for(tokens)),
                ]
                .into_iter()
                .flatten()
                .max();
                if wait.is_none() {
                    if let Some(b) = requests.as_mut() {
                        b.level -= 1.0;
                    }
                    if let Some(b) = token_bucket.as_mut() {
                        b.level -= tokens;
                    }
                }
                wait
            };
            match wait {
                None => return,
                Some(wait) => tokio::time::sleep(wait.max(Duration::from_millis(1))).await,
            }
        }
    }

    fn correct(&self, estimated: f64, actual: f64) {
        let mut buckets = self.buckets.lock();
        if let Some(b) = buckets.tokens.as_mut() {
            b.level = (b.level + estimated - actual).min(b.capacity);
        }
    }
}

fn estimate(request: &ChatRequest) -> u64 {
    let chars: usize = request.messages.iter().map(|m| m.content.len()).sum();
    let completion = request
        .max_tokens
        .map_or(ASSUMED_COMPLETION, u64::from)
        .saturating_mul(u64::from(request.n.max(1)));
    (chars as u64).div_ceil(4) + completion
}

#[async_trait]
impl<L: Lm> Lm for RateLimit<L> {
    async fn chat(&self, request: &ChatRequest) -> Result<ChatResponse, LmError> {
        let estimated = estimate(request) as f64;
        self.admit(estimated).await;
        let result = self.inner.chat(request).await;
        if let Ok(response) = &result {
            self.correct(estimated, response.usage.total() as f64);
        }
        result
    }

    fn supports_json_schema(&self, model: &str) -> bool {
        self.inner.supports_json_schema(model)
    }

    fn context_tokens(&self, model: &str) -> Option<u64> {
        self.inner.context_tokens(model)
    }
}
