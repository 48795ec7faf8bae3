//! A time limit per call.

use std::time::Duration;

use async_trait::async_trait;

use crate::{ChatRequest, ChatResponse, Lm, LmError};

/// Fails a call with [`LmError::Timeout`] when it takes longer than a limit.
///
/// A hung connection thus ends in a retryable error instead of waiting forever.
#[derive(Debug)]
pub struct TimeoutLayer<L> {
    inner: L,
    limit: Duration,
}

impl<L: Lm> TimeoutLayer<L> {
    /// Wraps `inner` with a limit of `limit` per call.
    pub fn new(inner: L, limit: Duration) -> Self {
        Self { inner, limit }
    }
}

#[async_trait]
impl<L: Lm> Lm for TimeoutLayer<L> {
    async fn chat(&self, request: &ChatRequest) -> Result<ChatResponse, LmError> {
        match tokio::time::timeout(self.limit, self.inner.chat(request)).await {
            Ok(result) => result,
            Err(_) => Err(LmError::Timeout {
                provider: request.provider().unwrap_or("model").to_owned(),
                after: self.limit,
            }),
        }
    }

    fn supports_json_schema(&self, model: &str) -> bool {
        self.inner.supports_json_schema(model)
    }

    fn context_tokens(&self, model: &str) -> Option<u64> {
        self.inner.context_tokens(model)
    }
}
