//! A bound on calls in flight.

use std::sync::Arc;

use async_trait::async_trait;
use tokio::sync::Semaphore;

use crate::{ChatRequest, ChatResponse, Lm, LmError};

/// Lets at most a fixed number of calls run at once; the others wait their turn (first come,
/// first served).
#[derive(Debug)]
pub struct ConcurrencyLimit<L> {
    inner: L,
    permits: Arc<Semaphore>,
}

impl<L: Lm> ConcurrencyLimit<L> {
    /// Wraps `inner` so that at most `limit` calls (at least 1) run at once.
    pub fn new(inner: L, limit: usize) -> Self {
        Self::with_semaphore(inner, Arc::new(Semaphore::new(limit.max(1))))
    }

    /// Wraps `inner` with a semaphore shared with other limits (one bound for several models).
    pub fn with_semaphore(inner: L, permits: Arc<Semaphore>) -> Self {
        Self { inner, permits }
    }

    /// Permits free at the moment.
    pub fn available(&self) -> usize {
        self.permits.available_permits()
    }
}

#[async_trait]
impl<L: Lm> Lm for ConcurrencyLimit<L> {
    async fn chat(&self, request: &ChatRequest) -> Result<ChatResponse, LmError> {
        let _permit = self
            .permits
            .acquire()
            .await
            .map_err(|_| LmError::BudgetExhausted("The concurrency limit was closed".into()))?;
        self.inner.chat(request).await
    }

    fn supports_json_schema(&self, model: &str) -> bool {
        self.inner.supports_json_schema(model)
    }

    fn context_tokens(&self, model: &str) -> Option<u64> {
        self.inner.context_tokens(model)
    }
}
