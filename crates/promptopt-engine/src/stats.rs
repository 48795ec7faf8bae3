//! Counters of what the engine has done.

use std::sync::atomic::{AtomicU64, Ordering};

use serde::{Deserialize, Serialize};

#[derive(Debug, Default)]
pub(crate) struct Counter(AtomicU64);

impl Counter {
    pub(crate) fn inc(&self, by: u64) {
        self.0.fetch_add(by, Ordering::Relaxed);
    }

    fn get(&self) -> u64 {
        self.0.load(Ordering::Relaxed)
    }
}

#[derive(Debug, Default)]
pub(crate) struct Stats {
    pub requests: Counter,
    pub prompt_tokens: Counter,
    pub cached_tokens: Counter,
    pub completion_tokens: Counter,
    decode_calls: Counter,
    batched_decode_calls: Counter,
    decoded_tokens: Counter,
    max_sequences: AtomicU64,
}

impl Stats {
    pub(crate) fn record_decode(&self, sequences: u64, tokens: u64) {
        self.decode_calls.inc(1);
        self.decoded_tokens.inc(tokens);
        if sequences > 1 {
            self.batched_decode_calls.inc(1);
        }
        self.max_sequences.fetch_max(sequences, Ordering::Relaxed);
    }

    pub(crate) fn snapshot(&self) -> EngineStats {
        EngineStats {
            requests: self.requests.get(),
            prompt_tokens: self.prompt_tokens.get(),
            cached_tokens: self.cached_tokens.get(),
            completion_tokens: self.completion_tokens.get(),
            decode_calls: self.decode_calls.get(),
            batched_decode_calls: self.batched_decode_calls.get(),
            decoded_tokens: self.decoded_tokens.get(),
            max_sequences_per_decode: self.max_sequences.load(Ordering::Relaxed),
        }
    }
}

/// What an engine has done since it was loaded.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct EngineStats {
    /// Replies asked for (one per choice).
    pub requests: u64,
    /// Prompt tokens of admitted requests, cached ones included.
    pub prompt_tokens: u64,
    /// Prompt tokens served from the KV cache instead of being decoded.
    pub cached_tokens: u64,
    /// Tokens generated.
    pub completion_tokens: u64,
    /// Calls to llama.cpp's decode.
    pub decode_calls: u64,
    /// Decode calls that carried more than one request.
    pub batched_decode_calls: u64,
    /// Tokens sent to decode (prompt suffixes plus generated tokens).
    pub decoded_tokens: u64,
    /// The most requests that shared one decode call.
    pub max_sequences_per_decode: u64,
}
