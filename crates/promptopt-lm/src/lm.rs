//! The [`Lm`] trait every model backend implements.

use std::sync::Arc;

use async_trait::async_trait;

use crate::{ChatRequest, ChatResponse, LmError};

/// A language model that answers chat requests.
///
/// The trait is object safe: backends and layers are used as `Arc<dyn Lm>` ([`SharedLm`]).
/// Implementations must never block the async runtime.
#[async_trait]
pub trait Lm: Send + Sync {
    /// Sends one request and waits for its response.
    async fn chat(&self, request: &ChatRequest) -> Result<ChatResponse, LmError>;

    /// Whether the backend honours [`crate::ResponseFormat::JsonSchema`] natively.
    fn supports_json_schema(&self) -> bool {
        false
    }
}

/// A shared, dynamically dispatched language model.
pub type SharedLm = Arc<dyn Lm>;

#[async_trait]
impl<T: Lm + ?Sized> Lm for Arc<T> {
    async fn chat(&self, request: &ChatRequest) -> Result<ChatResponse, LmError> {
        (**self).chat(request).await
    }

    fn supports_json_schema(&self) -> bool {
        (**self).supports_json_schema()
    }
}
