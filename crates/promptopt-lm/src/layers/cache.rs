//! The response cache: a bounded in-memory LRU in front of an optional on-disk store.

use std::num::NonZeroUsize;
use std::path::PathBuf;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Instant;

use async_trait::async_trait;
use lru::LruCache;
use parking_lot::Mutex;
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

use super::disk::DiskStore;
use crate::config::CacheConfig;
use crate::{ChatRequest, ChatResponse, Lm, LmError};

/// Versions the key scheme: a change of the request format must not replay old entries.
const KEY_PREFIX: &[u8] = b"promptopt-lm cache v1\n";

/// The cache key of `request`: the hex sha256 of its canonical JSON (object keys sorted), which
/// holds everything that changes the reply and nothing else (no per-call cache switch, no
/// credentials).
///
/// ```
/// use promptopt_lm::{cache_key, ChatRequest, Message};
///
/// let a = ChatRequest::new("openai/gpt-4o-mini", vec![Message::user("hi")]);
/// let b = a.clone().without_cache();
/// assert_eq!(cache_key(&a)?, cache_key(&b)?);
/// assert_ne!(cache_key(&a)?, cache_key(&a.clone().with_temperature(0.5))?);
/// # Ok::<(), promptopt_lm::LmError>(())
/// ```
pub fn cache_key(request: &ChatRequest) -> Result<String, LmError> {
    Ok(hex::encode(key_bytes(request)?))
}

fn key_bytes(request: &ChatRequest) -> Result<[u8; 32], LmError> {
    let value = serde_json::to_value(request)
        .map_err(|e| LmError::Cache(format!("Could not encode the request for its key: {e}")))?;
    let mut canonical = Vec::with_capacity(256);
    write_canonical(&value, &mut canonical);
    let mut hasher = Sha256::new();
    hasher.update(KEY_PREFIX);
    hasher.update(&canonical);
    Ok(hasher.finalize().into())
}

/// JSON with object keys in sorted order.
fn write_canonical(value: &serde_json::Value, out: &mut Vec<u8>) {
    match value {
        serde_json::Value::Object(map) => {
            let mut keys: Vec<&String> = map.keys().collect();
            keys.sort();
            out.push(b'{');
            for (i, key) in keys.into_iter().enumerate() {
                if i > 0 {
                    out.push(b',');
                }
                write_canonical(&serde_json::Value::String(key.clone()), out);
                out.push(b':');
                if let Some(inner) = map.get(key) {
                    write_canonical(inner, out);
                }
            }
            out.push(b'}');
        }
        serde_json::Value::Array(items) => {
            out.push(b'[');
            for (i, item) in items.iter().enumerate() {
                if i > 0 {
                    out.push(b',');
                }
                write_canonical(item, out);
            }
            out.push(b']');
        }
        scalar => {
            // Writing a scalar into a Vec cannot fail.
            let _ = serde_json::to_writer(&mut *out, scalar);
        }
    }
}

/// Counters of a [`ResponseCache`].
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct CacheStats {
    /// Lookups answered from memory or disk.
    pub hits: u64,
    /// Of the hits, those read from disk.
    pub disk_hits: u64,
    /// Lookups that found nothing.
    pub misses: u64,
    /// Responses stored.
    pub writes: u64,
    /// Responses that could not be stored on disk.
    pub write_errors: u64,
    /// Entries in memory now.
    pub memory_entries: u64,
    /// Bytes on disk now.
    pub disk_bytes: u64,
}

/// Stored responses, keyed by [`cache_key`].
#[derive(Debug)]
pub struct ResponseCache {
    memory: Option<Mutex<LruCache<[u8; 32], Arc<ChatResponse>>>>,
    disk: Option<DiskStore>,
    hits: AtomicU64,
    disk_hits: AtomicU64,
    misses: AtomicU64,
    writes: AtomicU64,
    write_errors: AtomicU64,
}

impl ResponseCache {
    /// A cache of at most `entries` responses in memory (0: none), and, when `disk_dir` is given,
    /// a store in that directory of at most `disk_max_bytes` bytes that survives restarts.
    pub fn new(entries: usize, disk_dir: Option<PathBuf>, disk_max_bytes: u64) -> Self {
        Self {
            memory: NonZeroUsize::new(entries).map(|n| Mutex::new(LruCache::new(n))),
            disk: disk_dir.map(|dir| DiskStore::new(dir, disk_max_bytes)),
            hits: AtomicU64::new(0),
            disk_hits: AtomicU64::new(0),
            misses: AtomicU64::new(0),
            writes: AtomicU64::new(0),
            write_errors: AtomicU64::new(0),
        }
    }

    /// A cache with the settings of `config`.
    pub fn from_config(config: &CacheConfig) -> Self {
        Self::new(
            config.memory_entries,
            config.disk_dir.clone(),
            config.disk_max_bytes,
        )
    }

    /// The stored response of `request`, if any.
    pub async fn get(&self, request: &ChatRequest) -> Result<Option<ChatResponse>, LmError> {
        let key = key_bytes(request)?;
        self.get_by_key(&key).await
    }

    async fn get_by_key(&self, key: &[u8; 32]) -> Result<Option<ChatResponse>, LmError> {
        if let Some(memory) = &self.memory {
            if let Some(found) = memory.lock().get(key) {
                self.hits.fetch_add(1, Ordering::Relaxed);
                return Ok(Some(ChatResponse::clone(found)));
            }
        }
        if let Some(disk) = &self.disk {
            if let Some(found) = disk.get(&hex::encode(key)).await? {
                self.hits.fetch_add(1, Ordering::Relaxed);
                self.disk_hits.fetch_add(1, Ordering::Relaxed);
                if let Some(memory) = &self.memory {
                    memory.lock().put(*key, Arc::new(found.clone()));
                }
                return Ok(Some(found));
            }
        }
        self.misses.fetch_add(1, Ordering::Relaxed);
        Ok(None)
    }

    /// Stores `response` as the answer to `request`.
    pub async fn put(&self, request: &ChatRequest, response: &ChatResponse) -> Result<(), LmError> {
        let key = key_bytes(request)?;
        self.put_by_key(&key, request, response).await
    }

    async fn put_by_key(
        &self,
        key: &[u8; 32],
        request: &ChatRequest,
        response: &ChatResponse,
    ) -> Result<(), LmError> {
        let mut stored = response.clone();
        stored.cache_hit = false;
        self.writes.fetch_add(1, Ordering::Relaxed);
        if let Some(disk) = &self.disk {
            if let Err(error) = disk.put(&hex::encode(key), request, &stored).await {
                self.write_errors.fetch_add(1, Ordering::Relaxed);
                if let Some(memory) = &self.memory {
                    memory.lock().put(*key, Arc::new(stored));
                }
                return Err(error);
            }
        }
        if let Some(memory) = &self.memory {
            memory.lock().put(*key, Arc::new(stored));
        }
        Ok(())
    }

    /// The counters.
    pub fn stats(&self) -> CacheStats {
        CacheStats {
            hits: self.hits.load(Ordering::Relaxed),
            disk_hits: self.disk_hits.load(Ordering::Relaxed),
            misses: self.misses.load(Ordering::Relaxed),
            writes: self.writes.load(Ordering::Relaxed),
            write_errors: self.write_errors.load(Ordering::Relaxed),
            memory_entries: self.memory.as_ref().map_or(0, |m| m.lock().len() as u64),
            disk_bytes: self.disk.as_ref().map_or(0, DiskStore::bytes),
        }
    }
}

/// Answers repeated requests from a [`ResponseCache`].
///
/// A hit is marked `cache_hit = true`, costs 0 and reports the lookup time as its latency.
/// Requests with `use_cache = false` go straight to the inner model and are not stored. A cache
/// that cannot be read or written never fails the call: the model answers instead, and the
/// failure shows in [`CacheStats::write_errors`].
#[derive(Debug)]
pub struct CacheLayer<L> {
    inner: L,
    cache: Arc<ResponseCache>,
}

impl<L: Lm> CacheLayer<L> {
    /// Wraps `inner` with `cache`.
    pub fn new(inner: L, cache: Arc<ResponseCache>) -> Self {
        Self { inner, cache }
    }

    /// The cache.
    pub fn cache(&self) -> &Arc<ResponseCache> {
        &self.cache
    }
}

#[async_trait]
impl<L: Lm> Lm for CacheLayer<L> {
    async fn chat(&self, request: &ChatRequest) -> Result<ChatResponse, LmError> {
        if !request.use_cache {
            return self.inner.chat(request).await;
        }
        let started = Instant::now();
        let key = key_bytes(request)?;
        if let Ok(Some(mut response)) = self.cache.get_by_key(&key).await {
            response.cache_hit = true;
            response.retries = 0;
            response.cost_usd = Some(0.0);
            response.latency = started.elapsed();
            return Ok(response);
        }
        let response = self.inner.chat(request).await?;
        // A failed store is counted in the stats; the caller still gets its answer.
        let _ = self.cache.put_by_key(&key, request, &response).await;
        Ok(response)
    }

    fn supports_json_schema(&self, model: &str) -> bool {
        self.inner.supports_json_schema(model)
    }

    fn context_tokens(&self, model: &str) -> Option<u64> {
        self.inner.context_tokens(model)
    }
}
