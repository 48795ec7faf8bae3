//! Language model clients for promptopt.
//!
//! Everything in promptopt that talks to a language model goes through the [`Lm`] trait: one
//! async method that takes a [`ChatRequest`] and returns a [`ChatResponse`] or an [`LmError`].
//! Providers implement it; layers wrap any `Lm` and add caching, retries, rate limits,
//! concurrency limits and cost accounting.
//!
//! ```
//! use promptopt_lm::{ChatRequest, Message};
//!
//! let request = ChatRequest::new("openai/gpt-4o-mini", vec![
//!     Message::system("You classify sentiment."),
//!     Message::user("I loved it."),
//! ])
//! .with_temperature(0.0)
//! .with_max_tokens(8);
//! assert_eq!(request.provider(), Some("openai"));
//! assert_eq!(request.model_name(), "gpt-4o-mini");
//! ```
//!
//! # Providers
//!
//! [`open_provider`] opens the backend of a `provider/model` name: `openai/…` (OpenAI's Chat
//! Completions, or any OpenAI-compatible server through a base URL), `anthropic/…` (the Messages
//! API) and `gemini/…` (`generateContent`). Keys come from configuration or the providers'
//! environment variables and never appear in debug output, errors or cache files. `local/…`
//! models are served by the embedded engine, which plugs into the stack as a backend.
//!
//! # The stack
//!
//! [`LmStack`] wraps a backend in the [`layers`]: usage and cost accounting (a [`PriceTable`],
//! counted in a shared [`UsageTracker`]), a [`ResponseCache`] in memory and on disk, retries with
//! backoff and `Retry-After`, a concurrency limit, a rate limit and a timeout, all set by one
//! [`LmConfig`].
//!
//! # GPUs
//!
//! [`gpu::GpuConfig`] is how the embedded engine (`local/…` models) uses GPUs: device ids, layers
//! offloaded, a memory fraction and a batch size, from a `gpu:` block, `PROMPTOPT_GPU_*`
//! variables and command-line flags ([`gpu::resolve_gpu`]). It lives here so that requests,
//! the server and the engine share it.
//!
//! With the `testing` feature, `testing::FixedReplyServer` is a fast OpenAI-compatible server
//! for tests and benchmarks.

mod config;
mod error;
pub mod gpu;
mod http;
pub mod layers;
mod lm;
mod pricing;
pub mod providers;
mod request;
mod response;
mod scripted;
mod stack;
#[cfg(any(test, feature = "testing"))]
pub mod testing;
mod usage;

pub use config::{ApiKey, CacheConfig, LmConfig, ProviderConfig, RetryConfig};
pub use error::LmError;
pub use gpu::GpuConfig;
pub use layers::{cache_key, CacheStats, FaultConfig, FaultKind, ResponseCache};
pub use lm::{Lm, SharedLm};
pub use pricing::{ModelPrice, PriceTable};
pub use providers::{open_provider, open_provider_with_env, KNOWN_PROVIDERS};
pub use request::{ChatRequest, Message, ResponseFormat, Role, ToolDefinition};
pub use response::{ChatResponse, Choice, FinishReason, ToolCall, Usage};
pub use scripted::ScriptedLm;
pub use stack::{LmStack, ProviderRouter};
pub use usage::{UsageSnapshot, UsageTracker};
