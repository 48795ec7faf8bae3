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
    pub kept_prompts_dropped: Counter,
    decode_calls: Counter,
    batched_decode_calls: Counter,
    decoded_tokens: Counter,
    decoded_sequences: Counter,
    max_sequences: AtomicU64,
}

impl Stats {
    pub(crate) fn record_decode(&self, sequences: u64, tokens: u64) {
        self.decode_calls.inc(1);
        self.decoded_tokens.inc(tokens);
        self.decoded_sequences.inc(sequences);
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
            kept_prompts_dropped: self.kept_prompts_dropped.get(),
            decode_calls: self.decode_calls.get(),
            batched_decode_calls: self.batched_decode_calls.get(),
            decoded_tokens: self.decoded_tokens.get(),
            decoded_sequences: self.decoded_sequences.get(),
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
    /// Kept prompts dropped from the KV cache to make room (see
    /// [`crate::EngineConfig::kept_prompts`]).
    #[serde(default)]
    pub kept_prompts_dropped: u64,
    /// Calls to llama.cpp's decode.
    pub decode_calls: u64,
    /// Decode calls that carried more than one request.
    pub batched_decode_calls: u64,
    /// Tokens sent to decode (prompt suffixes plus generated tokens).
    pub decoded_tokens: u64,
    /// Requests summed over decode calls: each call adds the requests it carried.
    #[serde(default)]
    pub decoded_sequences: u64,
    /// The most requests that shared one decode call.
    pub max_sequences_per_decode: u64,
}

impl EngineStats {
    /// The mean number of requests per decode call (the batch occupancy); 0 before the first
    /// call. Divided by the engine's slots it is the share of the batch that was filled.
    pub fn mean_sequences_per_decode(&self) -> f64 {
        if self.decode_calls == 0 {
            0.0
        } else {
            self.decoded_sequences as f64 / self.decode_calls as f64
        }
    }

    /// What happened between `earlier` and this snapshot (the maximum stays this snapshot's).
    pub fn since(&self, earlier: &EngineStats) -> EngineStats {
        EngineStats {
            requests: self.requests.saturating_sub(earlier.requests),
            prompt_tokens: self.prompt_tokens.saturating_sub(earlier.prompt_tokens),
            cached_tokens: self.cached_tokens.saturating_sub(earlier.cached_tokens),
            completion_tokens: self
                .completion_tokens
                .saturating_sub(earlier.completion_tokens),
            kept_prompts_dropped: self
                .kept_prompts_dropped
                .saturating_sub(earlier.kept_prompts_dropped),
            decode_calls: self.decode_calls.saturating_sub(earlier.decode_calls),
            batched_decode_calls: self
                .batched_decode_calls
                .saturating_sub(earlier.batched_decode_calls),
            decoded_tokens: self.decoded_tokens.saturating_sub(earlier.decoded_tokens),
            decoded_sequences: self
                .decoded_sequences
                .saturating_sub(earlier.decoded_sequences),
            max_sequences_per_decode: self.max_sequences_per_decode,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn occupancy_is_the_mean_of_sequences_per_call() {
        let stats = Stats::default();
        assert_eq!(stats.snapshot().mean_sequences_per_decode(), 0.0);
        stats.record_decode(1, 30);
        let first = stats.snapshot();
        stats.record_decode(3, 3);
        stats.record_decode(8, 8);
        let all = stats.snapshot();
        assert_eq!(all.decoded_sequences, 12);
        assert!((all.mean_sequences_per_decode() - 4.0).abs() < 1e-12);
        assert_eq!(all.max_sequences_per_decode, 8);
        let later = all.since(&first);
        assert_eq!((later.decode_calls, later.decoded_sequences), (2, 11));
        assert!((later.mean_sequences_per_decode() - 5.5).abs() < 1e-12);
    }
}
