//! Settings of providers and of the layer stack.

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::time::Duration;

use serde::{Deserialize, Serialize};

use crate::layers::FaultConfig;
use crate::pricing::ModelPrice;

/// An API key. Its `Debug` output is redacted and it is never serialized.
#[derive(Clone, PartialEq, Eq, Deserialize)]
#[serde(transparent)]
pub struct ApiKey(String);

impl ApiKey {
    /// Wraps a key.
    pub fn new(key: impl Into<String>) -> Self {
        Self(key.into())
    }

    /// The key itself, for the one header that carries it.
    pub fn expose(&self) -> &str {
        &self.0
    }

    /// Replaces every occurrence of the key in `text` with `[redacted]`.
    pub fn redact(&self, text: &str) -> String {
        if self.0.is_empty() {
            text.to_owned()
        } else {
            text.replace(&self.0, "[redacted]")
        }
    }
}

impl std::fmt::Debug for ApiKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("ApiKey([redacted])")
    }
}

/// Settings of one provider.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ProviderConfig {
    /// Base URL of the API; `None` uses the provider's public endpoint (or its `*_BASE_URL`
    /// environment variable).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub base_url: Option<String>,
    /// The key; `None` reads the provider's environment variable. Never serialized.
    #[serde(default, skip_serializing)]
    pub api_key: Option<ApiKey>,
}

/// Retry settings.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct RetryConfig {
    /// Retries after the first attempt (0 turns retrying off).
    pub max_retries: u32,
    /// Backoff before the first retry, in milliseconds; it doubles with each retry.
    pub initial_backoff_ms: u64,
    /// Upper bound of the backoff, in milliseconds.
    pub max_backoff_ms: u64,
    /// A `Retry-After` longer than this many milliseconds is not waited for: the error is returned.
    pub max_retry_after_ms: u64,
    /// Seed of the jitter.
    pub seed: u64,
}

impl Default for RetryConfig {
    fn default() -> Self {
        Self {
            max_retries: 4,
            initial_backoff_ms: 500,
            max_backoff_ms: 30_000,
            max_retry_after_ms: 120_000,
            seed: 0,
        }
    }
}

/// Cache settings.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct CacheConfig {
    /// Whether the cache layer is part of the stack.
    pub enabled: bool,
    /// Entries held in memory (least recently used ones are dropped first).
    pub memory_entries: usize,
    /// Directory of the on-disk store; `None` keeps the cache in memory only.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub disk_dir: Option<PathBuf>,
    /// Upper bound of the on-disk store in bytes (least recently used entries are removed first).
    pub disk_max_bytes: u64,
}

impl Default for CacheConfig {
    fn default() -> Self {
        Self {
            enabled: true,
            memory_entries: 10_000,
            disk_dir: None,
            disk_max_bytes: 1 << 30,
        }
    }
}

/// Everything needed to assemble a model stack.
///
/// It is plain serde data, so a CLI can fill it from a YAML or JSON file; keys are better left
/// to environment variables.
///
/// ```
/// let config: promptopt_lm::LmConfig = serde_json::from_str(r#"{
///     "providers": {"openai": {"base_url": "http://127.0.0.1:8080/v1"}},
///     "timeout_ms": 30000,
///     "concurrency": 8,
///     "prices": {"openai/my-finetune": {"input": 1.0, "output": 2.0}}
/// }"#).unwrap();
/// assert_eq!(config.concurrency, Some(8));
/// ```
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct LmConfig {
    /// Per-provider settings, keyed by provider name (`openai`, `anthropic`, `gemini`).
    pub providers: BTreeMap<String, ProviderConfig>,
    /// Limit of one attempt, in milliseconds; `None` means no limit.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub timeout_ms: Option<u64>,
    /// Retry settings.
    pub retry: RetryConfig,
    /// Calls in flight at once; `None` means no limit.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub concurrency: Option<usize>,
    /// Requests per minute; `None` means no limit.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub requests_per_minute: Option<u32>,
    /// Tokens (prompt and completion) per minute; `None` means no limit.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub tokens_per_minute: Option<u64>,
    /// Cache settings.
    pub cache: CacheConfig,
    /// Prices that replace or extend the built-in table, keyed by `provider/model`.
    pub prices: BTreeMap<String, ModelPrice>,
    /// Faults to inject into a share of the calls, for reliability tests; `None` injects none.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub faults: Option<FaultConfig>,
}

impl Default for LmConfig {
    fn default() -> Self {
        Self {
            providers: BTreeMap::new(),
            timeout_ms: Some(120_000),
            retry: RetryConfig::default(),
            concurrency: None,
            requests_per_minute: None,
            tokens_per_minute: None,
            cache: CacheConfig::default(),
            prices: BTreeMap::new(),
            faults: None,
        }
    }
}

impl LmConfig {
    /// The settings of `provider` (defaults when none are given).
    pub fn provider(&self, provider: &str) -> ProviderConfig {
        self.providers.get(provider).cloned().unwrap_or_default()
    }

    /// Sets the base URL of `provider`.
    pub fn with_base_url(mut self, provider: &str, base_url: impl Into<String>) -> Self {
        self.providers
            .entry(provider.to_owned())
            .or_default()
            .base_url = Some(base_url.into());
        self
    }

    /// Sets the API key of `provider`.
    pub fn with_api_key(mut self, provider: &str, key: impl Into<String>) -> Self {
        self.providers
            .entry(provider.to_owned())
            .or_default()
            .api_key = Some(ApiKey::new(key));
        self
    }

    /// The per-attempt timeout, if any.
    pub fn timeout(&self) -> Option<Duration> {
        self.timeout_ms.map(Duration::from_millis)
    }

    /// Applies the overrides that `env` gives (a binary passes `std::env::var`):
    /// `PROMPTOPT_LM_MAX_RETRIES` (a count) and `PROMPTOPT_LM_FAULTS` (a [`FaultConfig`] as
    /// JSON, for reliability tests and benchmarks).
    ///
    /// ```
    /// let config = promptopt_lm::LmConfig::default()
    ///     .with_env_overrides(|name| match name {
    ///         "PROMPTOPT_LM_FAULTS" => Some(r#"{"rate": 0.2, "seed": 3}"#.into()),
    ///         _ => None,
    ///     })
    ///     .unwrap();
    /// assert_eq!(config.faults.unwrap().rate, 0.2);
    /// ```
    pub fn with_env_overrides(
        mut self,
        env: impl Fn(&str) -> Option<String>,
    ) -> Result<Self, crate::LmError> {
        if let Some(value) = env("PROMPTOPT_LM_MAX_RETRIES") {
            self.retry.max_retries = value.trim().parse().map_err(|_| {
                crate::LmError::InvalidRequest(format!(
                    "`PROMPTOPT_LM_MAX_RETRIES` must be a count, not `{value}`"
                ))
            })?;
        }
        if let Some(value) = env("PROMPTOPT_LM_FAULTS") {
            let faults: FaultConfig = serde_json::from_str(&value).map_err(|e| {
                crate::LmError::InvalidRequest(format!(
                    "`PROMPTOPT_LM_FAULTS` is not a fault configuration: {e}"
                ))
            })?;
            faults.validate().map_err(crate::LmError::InvalidRequest)?;
            self.faults = Some(faults);
        }
        Ok(self)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keys_are_redacted_in_debug_and_never_serialized() {
        let config = LmConfig::default().with_api_key("openai", "sk-SECRET-123");
        let debug = format!("{config:?}");
        assert!(!debug.contains("sk-SECRET-123"), "{debug}");
        let json = serde_json::to_string(&config).unwrap_or_default();
        assert!(!json.contains("sk-SECRET-123"), "{json}");
        assert!(json.contains("openai"));
    }

    #[test]
    fn redact_replaces_the_key() {
        let key = ApiKey::new("abc123");
        assert_eq!(key.redact("bad key abc123!"), "bad key [redacted]!");
    }
}
