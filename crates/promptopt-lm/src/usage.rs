//! Shared counters of calls, tokens and cost.

use std::sync::atomic::{AtomicU64, Ordering};

use serde::{Deserialize, Serialize};

use crate::{ChatResponse, LmError};

/// Counters shared by everything that calls models through one stack.
///
/// All counters are atomic, so a tracker behind an `Arc` can be read at any time (for budgets
/// and analytics) while calls are running.
///
/// ```
/// use promptopt_lm::UsageTracker;
///
/// let tracker = UsageTracker::new();
/// assert_eq!(tracker.snapshot().calls, 0);
/// ```
#[derive(Debug, Default)]
pub struct UsageTracker {
    calls: AtomicU64,
    errors: AtomicU64,
    prompt_tokens: AtomicU64,
    completion_tokens: AtomicU64,
    cached_tokens: AtomicU64,
    cost_bits: AtomicU64,
    cache_hits: AtomicU64,
    unknown_cost_calls: AtomicU64,
    retries: AtomicU64,
}

/// A copy of a [`UsageTracker`]'s counters at one moment.
#[derive(Debug, Clone, Copy, Default, PartialEq, Serialize, Deserialize)]
pub struct UsageSnapshot {
    /// Successful calls, cache hits included.
    pub calls: u64,
    /// Failed calls.
    pub errors: u64,
    /// Prompt tokens of calls that reached a model (cache hits excluded).
    pub prompt_tokens: u64,
    /// Completion tokens of calls that reached a model.
    pub completion_tokens: u64,
    /// Prompt tokens served from a provider's prompt cache.
    pub cached_tokens: u64,
    /// Total known cost in USD.
    pub cost_usd: f64,
    /// Calls answered from promptopt's own cache.
    pub cache_hits: u64,
    /// Calls whose cost is unknown (not included in `cost_usd`).
    pub unknown_cost_calls: u64,
    /// Failed attempts that were retried, of successful and failed calls.
    #[serde(default)]
    pub retries: u64,
}

impl UsageTracker {
    /// A tracker with all counters at zero.
    pub fn new() -> Self {
        Self::default()
    }

    /// Counts one successful call.
    pub fn record(&self, response: &ChatResponse) {
        self.calls.fetch_add(1, Ordering::Relaxed);
        self.retries
            .fetch_add(u64::from(response.retries), Ordering::Relaxed);
        if response.cache_hit {
            self.cache_hits.fetch_add(1, Ordering::Relaxed);
            return;
        }
        let usage = response.usage;
        self.prompt_tokens
            .fetch_add(usage.prompt_tokens, Ordering::Relaxed);
        self.completion_tokens
            .fetch_add(usage.completion_tokens, Ordering::Relaxed);
        self.cached_tokens
            .fetch_add(usage.cached_tokens, Ordering::Relaxed);
        match response.cost_usd {
            Some(cost) => self.add_cost(cost),
            None => {
                self.unknown_cost_calls.fetch_add(1, Ordering::Relaxed);
            }
        }
    }

    /// Counts one failed call, with the retries made before it failed.
    pub fn record_error(&self, error: &LmError) {
        self.errors.fetch_add(1, Ordering::Relaxed);
        self.retries
            .fetch_add(u64::from(error.retries()), Ordering::Relaxed);
    }

    fn add_cost(&self, cost: f64) {
        if cost == 0.0 {
            return;
        }
        // An f64 kept as bits; the closure never returns `None`, so the update always succeeds.
        let _ = self
            .cost_bits
            .fetch_update(Ordering::Relaxed, Ordering::Relaxed, |bits| {
                Some((f64::from_bits(bits) + cost).to_bits())
            });
    }

    /// Total known cost in USD so far.
    pub fn cost_usd(&self) -> f64 {
        f64::from_bits(self.cost_bits.load(Ordering::Relaxed))
    }

    /// Successful calls so far.
    pub fn calls(&self) -> u64 {
        self.calls.load(Ordering::Relaxed)
    }

    /// Prompt plus completion tokens so far.
    pub fn total_tokens(&self) -> u64 {
        self.prompt_tokens.load(Ordering::Relaxed) + self.completion_tokens.load(Ordering::Relaxed)
    }

    /// All counters.
    pub fn snapshot(&self) -> UsageSnapshot {
        UsageSnapshot {
            calls: self.calls.load(Ordering::Relaxed),
            errors: self.errors.load(Ordering::Relaxed),
            prompt_tokens: self.prompt_tokens.load(Ordering::Relaxed),
            completion_tokens: self.completion_tokens.load(Ordering::Relaxed),
            cached_tokens: self.cached_tokens.load(Ordering::Relaxed),
            cost_usd: self.cost_usd(),
            cache_hits: self.cache_hits.load(Ordering::Relaxed),
            unknown_cost_calls: self.unknown_cost_calls.load(Ordering::Relaxed),
            retries: self.retries.load(Ordering::Relaxed),
        }
    }
}
