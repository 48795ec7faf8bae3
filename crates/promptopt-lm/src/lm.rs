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

    /// Whether requests for `model` (`provider/model`) may carry a
    /// [`crate::ResponseFormat::JsonSchema`], which the backend then honours natively.
    ///
    /// The model matters where one value serves several backends: a router answers for the
    /// backend that would serve `model`. A backend of a single provider may ignore it.
    fn supports_json_schema(&self, model: &str) -> bool {
        let _ = model;
        false
    }

    /// The most tokens a request for `model` may hold, prompt and reply together, when the
    /// backend knows it (the embedded engine's context per sequence); `None` when unknown.
    ///
    /// Optimizers use it to keep what they write into prompts (a proposed instruction) within
    /// the task model's context. As with [`Lm::supports_json_schema`], a router answers for the
    /// backend that would serve `model`.
    fn context_tokens(&self, model: &str) -> Option<u64> {
        let _ = model;
        None
    }
}

/// A shared, dynamically dispatched language model.
pub type SharedLm = Arc<dyn Lm>;

#[async_trait]
impl<T: Lm + ?Sized> Lm for Arc<T> {
    async fn chat(&self, request: &ChatRequest) -> Result<ChatResponse, LmError> {
        (**self).chat(request).await
    }

    fn supports_json_schema(&self, model: &str) -> bool {
        (**self).supports_json_schema(model)
    }

    fn context_tokens(&self, model: &str) -> Option<u64> {
        (**self).context_tokens(model)
    }
}
