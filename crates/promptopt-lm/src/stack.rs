//! Assembling providers and layers from an [`LmConfig`].

use std::collections::{BTreeMap, HashMap};
use std::sync::Arc;

use async_trait::async_trait;
use parking_lot::RwLock;

use crate::config::LmConfig;
use crate::layers::{
    CacheLayer, ConcurrencyLimit, CostLayer, FaultLayer, RateLimit, ResponseCache, RetryLayer,
    RetryPolicy, TimeoutLayer,
};
use crate::pricing::PriceTable;
use crate::providers::{open_provider, KNOWN_PROVIDERS};
use crate::request::split_model;
use crate::usage::UsageTracker;
use crate::{ChatRequest, ChatResponse, Lm, LmError, SharedLm};

/// Sends each request to the backend of its `provider/` prefix: a backend registered for that
/// provider (such as the embedded engine for `local`), else a remote provider opened on first use
/// with [`open_provider`].
pub struct ProviderRouter {
    config: LmConfig,
    backends: BTreeMap<String, SharedLm>,
    opened: RwLock<HashMap<String, SharedLm>>,
}

impl std::fmt::Debug for ProviderRouter {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ProviderRouter")
            .field("config", &self.config)
            .field("backends", &self.backends.keys().collect::<Vec<_>>())
            .finish()
    }
}

impl ProviderRouter {
    /// A router over remote providers configured by `config` and the given `backends`, keyed by
    /// provider name.
    pub fn new(config: LmConfig, backends: BTreeMap<String, SharedLm>) -> Self {
        Self {
            config,
            backends,
            opened: RwLock::new(HashMap::new()),
        }
    }

    /// The backend that serves `model`, opening its remote provider on first use.
    fn backend(&self, model: &str) -> Result<SharedLm, LmError> {
        let (Some(provider), _) = split_model(model) else {
            return Err(self.unknown(model, ""));
        };
        if let Some(lm) = self.backends.get(provider) {
            return Ok(Arc::clone(lm));
        }
        if let Some(lm) = self.opened.read().get(provider) {
            return Ok(Arc::clone(lm));
        }
        if !KNOWN_PROVIDERS.contains(&provider) {
            return Err(self.unknown(model, provider));
        }
        let lm = open_provider(model, &self.config)?;
        self.opened
            .write()
            .insert(provider.to_owned(), Arc::clone(&lm));
        Ok(lm)
    }

    fn unknown(&self, model: &str, provider: &str) -> LmError {
        let mut known: Vec<&str> = KNOWN_PROVIDERS.to_vec();
        known.extend(self.backends.keys().map(String::as_str));
        LmError::UnknownProvider {
            provider: provider.to_owned(),
            model: model.to_owned(),
            known: known.join(", "),
        }
    }
}

#[async_trait]
impl Lm for ProviderRouter {
    async fn chat(&self, request: &ChatRequest) -> Result<ChatResponse, LmError> {
        self.backend(&request.model)?.chat(request).await
    }

    /// Asks the backend that serves `model`. A model whose provider is unknown, or whose
    /// provider cannot be opened (a missing key), gets `false`: the request that follows fails
    /// with that error anyway.
    fn supports_json_schema(&self, model: &str) -> bool {
        self.backend(model)
            .is_ok_and(|lm| lm.supports_json_schema(model))
    }

    fn context_tokens(&self, model: &str) -> Option<u64> {
        self.backend(model).ok()?.context_tokens(model)
    }
}

/// Builds the full stack: accounting, cache, retry, concurrency limit, rate limit, timeout and
/// (when configured) injected faults around a base model.
///
/// The base is a [`ProviderRouter`] over the remote providers unless [`LmStack::with_base`]
/// gives one; [`LmStack::with_backend`] plugs a backend (the embedded engine for `local`) into
/// the router.
///
/// ```
/// # fn main() -> Result<(), promptopt_lm::LmError> {
/// # tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap().block_on(async {
/// use std::sync::Arc;
/// use promptopt_lm::{ChatRequest, LmConfig, LmStack, Message, ScriptedLm, UsageTracker};
///
/// let tracker = Arc::new(UsageTracker::new());
/// let lm = LmStack::new(LmConfig::default())
///     .with_backend("local", Arc::new(ScriptedLm::constant("positive")))
///     .with_tracker(Arc::clone(&tracker))
///     .assemble()?;
/// let request = ChatRequest::new("local/smollm2-135m", vec![Message::user("I loved it")]);
/// let first = lm.chat(&request).await?;
/// let second = lm.chat(&request).await?;
/// assert_eq!(first.cost_usd, Some(0.0));
/// assert!(second.cache_hit);
/// assert_eq!(tracker.snapshot().cache_hits, 1);
/// # Ok(())
/// # })
/// # }
/// ```
pub struct LmStack {
    config: LmConfig,
    base: Option<SharedLm>,
    backends: BTreeMap<String, SharedLm>,
    tracker: Arc<UsageTracker>,
    cache: Option<Arc<ResponseCache>>,
}

impl std::fmt::Debug for LmStack {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("LmStack")
            .field("config", &self.config)
            .field("base", &self.base.is_some())
            .field("backends", &self.backends.keys().collect::<Vec<_>>())
            .field("cache", &self.cache)
            .finish()
    }
}

impl LmStack {
    /// The stack of `config` over the remote providers, with a fresh tracker.
    pub fn build(config: LmConfig) -> Result<SharedLm, LmError> {
        Self::new(config).assemble()
    }

    /// A builder for the stack of `config`.
    pub fn new(config: LmConfig) -> Self {
        let cache = config
            .cache
            .enabled
            .then(|| Arc::new(ResponseCache::from_config(&config.cache)));
        Self {
            config,
            base: None,
            backends: BTreeMap::new(),
            tracker: Arc::new(UsageTracker::new()),
            cache,
        }
    }

    /// Uses `lm` as the base instead of the provider router.
    pub fn with_base(mut self, lm: SharedLm) -> Self {
        self.base = Some(lm);
        self
    }

    /// Sends requests for `provider/…` models to `lm` (for example `local` to the engine).
    pub fn with_backend(mut self, provider: impl Into<String>, lm: SharedLm) -> Self {
        self.backends.insert(provider.into(), lm);
        self
    }

    /// Counts calls in `tracker` (shared with budgets and analytics).
    pub fn with_tracker(mut self, tracker: Arc<UsageTracker>) -> Self {
        self.tracker = tracker;
        self
    }

    /// Uses `cache` instead of one built from the configuration (`None` turns caching off).
    pub fn with_cache(mut self, cache: Option<Arc<ResponseCache>>) -> Self {
        self.cache = cache;
        self
    }

    /// The tracker the stack counts in.
    pub fn tracker(&self) -> Arc<UsageTracker> {
        Arc::clone(&self.tracker)
    }

    /// The cache of the stack, if caching is on.
    pub fn cache(&self) -> Option<Arc<ResponseCache>> {
        self.cache.clone()
    }

    /// Builds the stack.
    pub fn assemble(self) -> Result<SharedLm, LmError> {
        let config = self.config;
        let mut lm: SharedLm = match self.base {
            Some(base) => base,
            None => Arc::new(ProviderRouter::new(config.clone(), self.backends)),
        };
        if let Some(faults) = config.faults.clone().filter(|f| f.rate > 0.0) {
            faults.validate().map_err(LmError::InvalidRequest)?;
            let hang = config.timeout().is_some();
            lm = Arc::new(FaultLayer::new(lm, faults, hang));
        }
        if let Some(limit) = config.timeout() {
            lm = Arc::new(TimeoutLayer::new(lm, limit));
        }
        if config.requests_per_minute.is_some() || config.tokens_per_minute.is_some() {
            lm = Arc::new(RateLimit::new(
                lm,
                config.requests_per_minute,
                config.tokens_per_minute,
            ));
        }
        if let Some(limit) = config.concurrency {
            lm = Arc::new(ConcurrencyLimit::new(lm, limit));
        }
        if config.retry.max_retries > 0 {
            lm = Arc::new(RetryLayer::new(lm, RetryPolicy::from(&config.retry)));
        }
        if let Some(cache) = self.cache {
            lm = Arc::new(CacheLayer::new(lm, cache));
        }
        let prices = PriceTable::with_overrides(&config.prices);
        Ok(Arc::new(CostLayer::new(lm, prices, self.tracker)))
    }
}
