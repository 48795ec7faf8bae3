//! The on-disk part of the response cache: one JSON file per key, a size cap, eviction of the
//! least recently used entries.

use std::io::ErrorKind;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::SystemTime;

use lru::LruCache;
use parking_lot::Mutex;
use serde::{Deserialize, Serialize};

use crate::{ChatRequest, ChatResponse, LmError};

const FORMAT_VERSION: u32 = 1;

/// What one cache file holds. The request is kept so that an entry can be inspected; it never
/// holds credentials (requests carry none).
#[derive(Serialize, Deserialize)]
struct Entry {
    version: u32,
    key: String,
    request: ChatRequest,
    response: ChatResponse,
}

/// Which keys are on disk, their sizes, least recently used first.
#[derive(Debug)]
struct Index {
    entries: LruCache<String, u64>,
    bytes: u64,
}

/// The on-disk store. The directory is scanned on first use (off the async threads).
#[derive(Debug)]
pub(crate) struct DiskStore {
    dir: PathBuf,
    max_bytes: u64,
    index: tokio::sync::OnceCell<Mutex<Index>>,
    temp_counter: AtomicU64,
}

impl DiskStore {
    pub fn new(dir: PathBuf, max_bytes: u64) -> Self {
        Self {
            dir,
            max_bytes,
            index: tokio::sync::OnceCell::new(),
            temp_counter: AtomicU64::new(0),
        }
    }

    fn path(&self, key: &str) -> PathBuf {
        let shard = key.get(..2).unwrap_or("00");
        self.dir.join(shard).join(format!("{key}.json"))
    }

    async fn index(&self) -> Result<&Mutex<Index>, LmError> {
        self.index
            .get_or_try_init(|| async {
                let dir = self.dir.clone();
                let index = blocking(move || scan(&dir)).await??;
                Ok(Mutex::new(index))
            })
            .await
    }

    /// Bytes on disk (after the first use; 0 before).
    pub fn bytes(&self) -> u64 {
        self.index.get().map_or(0, |index| index.lock().bytes)
    }

    /// The stored response of `key`, if any. An unreadable entry is removed and counts as absent.
    pub async fn get(&self, key: &str) -> Result<Option<ChatResponse>, LmError> {
        let index = self.index().await?;
        if index.lock().entries.get(key).is_none() {
            return Ok(None);
        }
        let path = self.path(key);
        let read = blocking(move || std::fs::read(&path)).await?;
        let entry = read
            .ok()
            .and_then(|bytes| serde_json::from_slice::<Entry>(&bytes).ok())
            .filter(|e| e.version == FORMAT_VERSION && e.key == key);
        match entry {
            Some(entry) => Ok(Some(entry.response)),
            None => {
                self.forget(index, key).await;
                Ok(None)
            }
        }
    }

    async fn forget(&self, index: &Mutex<Index>, key: &str) {
        let removed = {
            let mut index = index.lock();
            index.entries.pop(key).inspect(|size| index.bytes -= size)
        };
        if removed.is_some() {
            let path = self.path(key);
            // The entry is gone from the index either way; a file that cannot be removed is
            // overwritten by the next store of the key.
            let _ = blocking(move || std::fs::remove_file(path)).await;
        }
    }

    /// Stores `response` under `key`, then removes least recently used entries above the cap.
    pub async fn put(
        &self,
        key: &str,
        request: &ChatRequest,
        response: &ChatResponse,
    ) -> Result<(), LmError> {
        let index = self.index().await?;
        let entry = Entry {
            version: FORMAT_VERSION,
            key: key.to_owned(),
            request: request.clone(),
            response: response.clone(),
        };
        let bytes = serde_json::to_vec(&entry)
            .map_err(|e| LmError::Cache(format!("Could not encode a cache entry: {e}")))?;
        let size = bytes.len() as u64;
        if size > self.max_bytes {
            return Ok(());
        }
        let path = self.path(key);
        let temp = path.with_file_name(format!(
            ".{key}.{}.tmp",
            self.temp_counter.fetch_add(1, Ordering::Relaxed)
        ));
        blocking(move || write_atomically(&path, &temp, &bytes)).await??;
        let evicted = {
            let mut index = index.lock();
            if let Some(old) = index.entries.put(key.to_owned(), size) {
                index.bytes -= old;
            }
            index.bytes += size;
            let mut evicted = Vec::new();
            while index.bytes > self.max_bytes {
                match index.entries.pop_lru() {
                    Some((old_key, old_size)) => {
                        index.bytes -= old_size;
                        evicted.push(self.path(&old_key));
                    }
                    None => break,
                }
            }
            evicted
        };
        if !evicted.is_empty() {
            blocking(move || {
                for path in evicted {
                    // Already gone is fine: the goal is that it is gone.
                    let _ = std::fs::remove_file(path);
                }
            })
            .await?;
        }
        Ok(())
    }
}

async fn blocking<T: Send + 'static>(
    work: impl FnOnce() -> T + Send + 'static,
) -> Result<T, LmError> {
    tokio::task::spawn_blocking(work)
        .await
        .map_err(|e| LmError::Cache(format!("A cache file task failed: {e}")))
}

fn write_atomically(path: &Path, temp: &Path, bytes: &[u8]) -> Result<(), LmError> {
    let io = |what: &str, p: &Path, e: std::io::Error| {
        LmError::Cache(format!("Could not {what} `{}`: {e}", p.display()))
    };
    if let Some(parent) = path.parent() {
        std::fs::create_dir_all(parent).map_err(|e| io("create", parent, e))?;
    }
    std::fs::write(temp, bytes).map_err(|e| io("write", temp, e))?;
    std::fs::rename(temp, path).map_err(|e| {
        let _ = std::fs::remove_file(temp);
        io("write", path, e)
    })
}

/// Reads which entries exist, oldest first; leftover temporary files are removed.
fn scan(dir: &Path) -> Result<Index, LmError> {
    let mut found: Vec<(SystemTime, String, u64)> = Vec::new();
    let shards = match std::fs::read_dir(dir) {
        Ok(shards) => shards,
        Err(e) if e.kind() == ErrorKind::NotFound => {
            return Ok(Index {
                entries: LruCache::unbounded(),
                bytes: 0,
            })
        }
        Err(e) => {
            return Err(LmError::Cache(format!(
                "Could not read the cache directory `{}`: {e}",
                dir.display()
            )))
        }
    };
    for shard in shards.flatten() {
        let Ok(files) = std::fs::read_dir(shard.path()) else {
            continue;
        };
        for file in files.flatten() {
            let name = file.file_name().to_string_lossy().into_owned();
            if name.starts_with('.') && name.ends_with(".tmp") {
                let _ = std::fs::remove_file(file.path());
                continue;
            }
            let Some(key) = name.strip_suffix(".json") else {
                continue;
            };
            if let Ok(meta) = file.metadata() {
                let modified = meta.modified().unwrap_or(SystemTime::UNIX_EPOCH);
                found.push((modified, key.to_owned(), meta.len()));
            }
        }
    }
    found.sort();
    let mut index = Index {
        entries: LruCache::unbounded(),
        bytes: 0,
    };
    for (_, key, size) in found {
        index.bytes += size;
        index.entries.put(key, size);
    }
    Ok(index)
}
