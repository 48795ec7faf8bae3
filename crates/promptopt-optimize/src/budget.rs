//! One budget for a whole run, checked before every language model call.
//!
//! A [`Budget`] holds limits (LM calls, tokens, cost, a deadline, iterations) and atomic counters.
//! Every model a run uses is wrapped in a [`BudgetedLm`], which refuses a call with
//! [`LmError::BudgetExhausted`] once any limit is reached, so an optimizer can overspend by at
//! most the calls already in flight. The same budget carries the run's cancellation flag
//! (Ctrl-C, a stop file).

use std::sync::atomic::{AtomicBool, AtomicU64, AtomicU8, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use async_trait::async_trait;
use promptopt_lm::{ChatRequest, ChatResponse, Lm, LmError, SharedLm};
use serde::{Deserialize, Serialize};

use crate::StopReason;

/// The limits of a run; `None` means unlimited.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct BudgetLimits {
    /// Most language model calls (task and prompt models together, cache hits included).
    pub max_lm_calls: Option<u64>,
    /// Most prompt plus completion tokens.
    pub max_tokens: Option<u64>,
    /// Most known cost in USD.
    pub max_cost_usd: Option<f64>,
    /// Longest wall time from the budget's creation.
    pub timeout: Option<Duration>,
    /// Most optimizer iterations (trials, candidates, generations: each optimizer says).
    pub max_iterations: Option<u64>,
}

/// A cancellation flag shared by a run and whoever may stop it.
#[derive(Debug, Clone, Default)]
pub struct CancelFlag(Arc<AtomicBool>);

impl CancelFlag {
    /// A flag that is not set.
    pub fn new() -> Self {
        Self::default()
    }

    /// Asks the run to stop; it finishes cleanly with its best result so far.
    pub fn cancel(&self) {
        self.0.store(true, Ordering::SeqCst);
    }

    /// Whether the run was asked to stop.
    pub fn is_cancelled(&self) -> bool {
        self.0.load(Ordering::SeqCst)
    }
}

/// Shared counters and limits of one run.
///
/// ```
/// use promptopt_optimize::{Budget, BudgetLimits, StopReason};
///
/// let budget = Budget::new(BudgetLimits { max_lm_calls: Some(1), ..Default::default() });
/// assert_eq!(budget.check(), Ok(()));
/// budget.record_call(10, None);
/// assert_eq!(budget.check(), Err(StopReason::BudgetCalls));
/// ```
#[derive(Debug)]
pub struct Budget {
    limits: BudgetLimits,
    started: Instant,
    deadline: Option<Instant>,
    calls: AtomicU64,
    tokens: AtomicU64,
    cost_bits: AtomicU64,
    iterations: AtomicU64,
    cache_hits: AtomicU64,
    retries: AtomicU64,
    failed_calls: AtomicU64,
    cancel: CancelFlag,
    /// The first reason the run stopped for, once it has (0 = none).
    stopped: AtomicU8,
}

impl Budget {
    /// A budget with these limits, its clock starting now.
    pub fn new(limits: BudgetLimits) -> Self {
        Self::with_cancel(limits, CancelFlag::new())
    }

    /// A budget that also stops when `cancel` is set.
    pub fn with_cancel(limits: BudgetLimits, cancel: CancelFlag) -> Self {
        let started = Instant::now();
        let deadline = limits.timeout.map(|t| started + t);
        Self {
            limits,
            started,
            deadline,
            calls: AtomicU64::new(0),
            tokens: AtomicU64::new(0),
            cost_bits: AtomicU64::new(0f64.to_bits()),
            iterations: AtomicU64::new(0),
            cache_hits: AtomicU64::new(0),
            retries: AtomicU64::new(0),
            failed_calls: AtomicU64::new(0),
            cancel,
            stopped: AtomicU8::new(0),
        }
    }

    /// An unlimited budget.
    pub fn unlimited() -> Self {
        Self::new(BudgetLimits::default())
    }

    /// The limits.
    pub fn limits(&self) -> &BudgetLimits {
        &self.limits
    }

    /// The cancellation flag.
    pub fn cancel_flag(&self) -> &CancelFlag {
        &self.cancel
    }

    /// Whether anything may still be spent; the reason to stop when not. Call it before each
    /// model call and each evaluation. Iterations are checked by [`Budget::next_iteration`].
    pub fn check(&self) -> Result<(), StopReason> {
        if let Some(reason) = self.stopped_reason() {
            return Err(reason);
        }
        let reason = if self.cancel.is_cancelled() {
            Some(StopReason::Cancelled)
        } else if self.deadline.is_some_and(|d| Instant::now() >= d) {
            Some(StopReason::Timeout)
        } else if self
            .limits
            .max_lm_calls
            .is_some_and(|max| self.calls() >= max)
        {
            Some(StopReason::BudgetCalls)
        } else if self
            .limits
            .max_tokens
            .is_some_and(|max| self.tokens() >= max)
        {
            Some(StopReason::BudgetTokens)
        } else if self
            .limits
            .max_cost_usd
            .is_some_and(|max| self.cost_usd() >= max)
        {
            Some(StopReason::BudgetCost)
        } else {
            None
        };
        match reason {
            Some(reason) => {
                self.stop(reason);
                Err(self.stopped_reason().unwrap_or(reason))
            }
            None => Ok(()),
        }
    }

    /// Counts one iteration and says whether it may run: `Err(MaxIterations)` once the limit is
    /// reached, or any other stop reason [`Budget::check`] gives.
    pub fn next_iteration(&self) -> Result<u64, StopReason> {
        self.check()?;
        let n = self.iterations.fetch_add(1, Ordering::SeqCst) + 1;
        if self.limits.max_iterations.is_some_and(|max| n > max) {
            self.iterations.fetch_sub(1, Ordering::SeqCst);
            self.stop(StopReason::MaxIterations);
            return Err(StopReason::MaxIterations);
        }
        Ok(n)
    }

    /// Records the first reason the run stopped for (later ones are ignored).
    pub fn stop(&self, reason: StopReason) {
        let _ = self
            .stopped
            .compare_exchange(0, reason.code(), Ordering::SeqCst, Ordering::SeqCst);
    }

    /// The first reason the run stopped for, if it has.
    pub fn stopped_reason(&self) -> Option<StopReason> {
        StopReason::from_code(self.stopped.load(Ordering::SeqCst))
    }

    /// Counts one model call with its tokens and cost (when known).
    pub fn record_call(&self, tokens: u64, cost_usd: Option<f64>) {
        self.calls.fetch_add(1, Ordering::SeqCst);
        self.tokens.fetch_add(tokens, Ordering::SeqCst);
        if let Some(cost) = cost_usd.filter(|c| *c != 0.0) {
            // The closure never returns `None`, so the update always succeeds.
            let _ = self
                .cost_bits
                .fetch_update(Ordering::SeqCst, Ordering::SeqCst, |bits| {
                    Some((f64::from_bits(bits) + cost).to_bits())
                });
        }
    }

    /// Counts one call answered from a cache (also counted by [`Budget::record_call`]).
    pub fn record_cache_hit(&self) {
        self.cache_hits.fetch_add(1, Ordering::SeqCst);
    }

    /// Counts the failed attempts the retry layer made before a call's outcome.
    pub fn record_retries(&self, retries: u32) {
        self.retries.fetch_add(u64::from(retries), Ordering::SeqCst);
    }

    /// Counts one call that failed (after any retries); it is not a spent call.
    pub fn record_failed_call(&self) {
        self.failed_calls.fetch_add(1, Ordering::SeqCst);
    }

    /// Failed attempts that were retried so far.
    pub fn retries(&self) -> u64 {
        self.retries.load(Ordering::SeqCst)
    }

    /// Calls that failed so far.
    pub fn failed_calls(&self) -> u64 {
        self.failed_calls.load(Ordering::SeqCst)
    }

    /// Calls answered from a cache so far.
    pub fn cache_hits(&self) -> u64 {
        self.cache_hits.load(Ordering::SeqCst)
    }

    /// Model calls so far.
    pub fn calls(&self) -> u64 {
        self.calls.load(Ordering::SeqCst)
    }

    /// Tokens so far.
    pub fn tokens(&self) -> u64 {
        self.tokens.load(Ordering::SeqCst)
    }

    /// Known cost in USD so far.
    pub fn cost_usd(&self) -> f64 {
        f64::from_bits(self.cost_bits.load(Ordering::SeqCst))
    }

    /// Iterations counted so far.
    pub fn iterations(&self) -> u64 {
        self.iterations.load(Ordering::SeqCst)
    }

    /// Wall time since the budget was created.
    pub fn elapsed(&self) -> Duration {
        self.started.elapsed()
    }

    /// Time left before the deadline, if there is one.
    pub fn remaining_time(&self) -> Option<Duration> {
        self.deadline
            .map(|d| d.saturating_duration_since(Instant::now()))
    }
}

/// A model layer that checks a [`Budget`] before every call and counts what each call spent.
#[derive(Clone)]
pub struct BudgetedLm {
    inner: SharedLm,
    budget: Arc<Budget>,
}

impl std::fmt::Debug for BudgetedLm {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("BudgetedLm")
            .field("budget", &self.budget)
            .finish_non_exhaustive()
    }
}

impl BudgetedLm {
    /// Wraps `inner` so that it spends from `budget`.
    pub fn new(inner: SharedLm, budget: Arc<Budget>) -> Self {
        Self { inner, budget }
    }

    /// Wraps `inner` and returns it shared.
    pub fn shared(inner: SharedLm, budget: Arc<Budget>) -> SharedLm {
        Arc::new(Self::new(inner, budget))
    }
}

#[async_trait]
impl Lm for BudgetedLm {
    async fn chat(&self, request: &ChatRequest) -> Result<ChatResponse, LmError> {
        if let Err(reason) = self.budget.check() {
            return Err(LmError::BudgetExhausted(reason.to_string()));
        }
        let response = match self.inner.chat(request).await {
            Ok(response) => response,
            Err(error) => {
                self.budget.record_retries(error.retries());
                if !matches!(error, LmError::BudgetExhausted(_)) {
                    self.budget.record_failed_call();
                }
                return Err(error);
            }
        };
        self.budget.record_retries(response.retries);
        let tokens = if response.cache_hit {
            0
        } else {
            response.usage.total()
        };
        let cost = if response.cache_hit {
            None
        } else {
            response.cost_usd
        };
        self.budget.record_call(tokens, cost);
        if response.cache_hit {
            self.budget.record_cache_hit();
        }
        Ok(response)
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
    use promptopt_lm::{Message, ScriptedLm};

    #[tokio::test]
    async fn budgeted_lm_refuses_calls_once_exhausted() {
        let budget = Arc::new(Budget::new(BudgetLimits {
            max_lm_calls: Some(2),
            ..Default::default()
        }));
        let inner = ScriptedLm::constant("ok");
        let lm = BudgetedLm::new(Arc::new(inner.clone()), budget.clone());
        let request = ChatRequest::new("scripted/x", vec![Message::user("hi")]);
        assert!(lm.chat(&request).await.is_ok());
        assert!(lm.chat(&request).await.is_ok());
        let err = lm.chat(&request).await.unwrap_err();
        assert!(matches!(err, LmError::BudgetExhausted(_)));
        assert_eq!(inner.calls(), 2);
        assert_eq!(budget.stopped_reason(), Some(StopReason::BudgetCalls));
    }

    #[test]
    fn cost_tokens_timeout_and_cancel_stop_the_budget() {
        let b = Budget::new(BudgetLimits {
            max_cost_usd: Some(0.5),
            ..Default::default()
        });
        b.record_call(5, Some(0.3));
        assert!(b.check().is_ok());
        b.record_call(5, Some(0.3));
        assert_eq!(b.check(), Err(StopReason::BudgetCost));

        let b = Budget::new(BudgetLimits {
            max_tokens: Some(10),
            ..Default::default()
        });
        b.record_call(11, None);
        assert_eq!(b.check(), Err(StopReason::BudgetTokens));

        let b = Budget::new(BudgetLimits {
            timeout: Some(Duration::ZERO),
            ..Default::default()
        });
        assert_eq!(b.check(), Err(StopReason::Timeout));

        let b = Budget::unlimited();
        b.cancel_flag().cancel();
        assert_eq!(b.check(), Err(StopReason::Cancelled));
    }

    #[test]
    fn iterations_stop_at_the_limit_and_first_reason_wins() {
        let b = Budget::new(BudgetLimits {
            max_iterations: Some(2),
            ..Default::default()
        });
        assert_eq!(b.next_iteration(), Ok(1));
        assert_eq!(b.next_iteration(), Ok(2));
        assert_eq!(b.next_iteration(), Err(StopReason::MaxIterations));
        assert_eq!(b.iterations(), 2);
        b.cancel_flag().cancel();
        assert_eq!(b.check(), Err(StopReason::MaxIterations));
    }
}
