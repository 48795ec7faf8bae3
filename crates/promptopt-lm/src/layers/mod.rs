//! Layers that wrap any [`crate::Lm`] and add one concern each.
//!
//! [`crate::LmStack`] assembles them in this order, outermost first: usage and cost accounting,
//! cache, retry, concurrency limit, rate limit, timeout, injected faults (when configured, for
//! tests), then the model itself. A cache hit thus
//! skips everything below it, and every attempt of a retried call counts against the limits.

mod cache;
mod concurrency;
mod cost;
mod disk;
mod faults;
mod rate_limit;
mod retry;
mod timeout;

pub use cache::{cache_key, CacheLayer, CacheStats, ResponseCache};
pub use concurrency::ConcurrencyLimit;
pub use cost::CostLayer;
pub use faults::{FaultConfig, FaultCounts, FaultKind, FaultLayer};
pub use rate_limit::RateLimit;
pub use retry::{RetryLayer, RetryPolicy};
pub use timeout::TimeoutLayer;
