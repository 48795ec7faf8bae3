//! Engine settings.

use serde::{Deserialize, Serialize};

use crate::EngineError;

/// How the engine loads and runs a model.
///
/// The KV cache holds `slots × ctx_per_slot` tokens, shared by all sequences: a slot is one
/// request being decoded, and sequences that share a prompt prefix share its cells.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct EngineConfig {
    /// `local/<short name>` (`local/smollm2-135m`, `local/gemma3-270m`) or `local/<path to a .gguf>`.
    pub model: String,
    /// Requests decoded together (sequence slots of the KV cache).
    pub slots: u32,
    /// Tokens one request may hold: prompt plus reply.
    pub ctx_per_slot: u32,
    /// CPU threads for llama.cpp; `None` uses `PROMPTOPT_THREADS` when it holds a positive
    /// number, else all cores.
    pub threads: Option<u32>,
    /// Most tokens sent to llama.cpp in one decode call (prompt chunks plus one token per
    /// generating request).
    pub batch_size: u32,
    /// Reuse the KV cache of the longest shared prompt prefix (on by default).
    pub prefix_reuse: bool,
    /// Finished requests whose tokens stay in the KV cache beyond the `slots` being decoded, so
    /// that a later request sharing their prefix (an agent's next step, the next example of a
    /// program with demos) decodes only what is new. They take no memory of their own: when
    /// the cache needs room, the least recently used is dropped. At most `256 - slots` are
    /// kept (llama.cpp's limit on sequences).
    pub kept_prompts: u32,
    /// Reply length when a request sets no `max_tokens`.
    pub default_max_tokens: u32,
    /// Layers offloaded to the GPU (needs the `cuda` feature; 0 keeps everything on the CPU;
    /// [`crate::ALL_GPU_LAYERS`] offloads all of them).
    pub gpu_layers: u32,
    /// The GPU that holds the model when it is not split, as an index into `devices` (with the
    /// `cuda` feature).
    pub main_gpu: i32,
    /// The GPUs to use, as llama.cpp's backend device indices ([`crate::GpuDevice::backend_index`],
    /// which are not CUDA's device ids); empty uses llama.cpp's default (all GPUs). With several,
    /// the layers are split across them (llama.cpp's layer split). [`EngineConfig::place_gpu`]
    /// sets them from CUDA ids.
    pub devices: Vec<usize>,
    /// The share of the GPUs' memory, in (0, 1], the engine may use. When set (and layers are
    /// offloaded on a CUDA build), the engine reads the devices' total and free memory before it
    /// loads the model, then lowers `slots` (and, when that is not enough, `batch_size`) until
    /// the weights, the KV cache and the compute buffers fit in that share and in the free
    /// memory; a model that does not fit with one slot is an error. `None`: no cap.
    pub gpu_memory_fraction: Option<f64>,
    /// Forward llama.cpp's own log lines to `tracing` (target `llama-cpp-2`) instead of dropping
    /// them. Decided by the first engine loaded in the process.
    pub llama_logs: bool,
}

impl Default for EngineConfig {
    fn default() -> Self {
        Self {
            model: "local/smollm2-135m".to_string(),
            slots: 8,
            ctx_per_slot: 2048,
            threads: None,
            batch_size: 512,
            prefix_reuse: true,
            kept_prompts: 24,
            default_max_tokens: 256,
            gpu_layers: 0,
            main_gpu: 0,
            devices: Vec::new(),
            gpu_memory_fraction: None,
            llama_logs: false,
        }
    }
}

impl EngineConfig {
    /// Settings for `model` with every other setting at its default.
    pub fn new(model: impl Into<String>) -> Self {
        Self {
            model: model.into(),
            ..Self::default()
        }
    }

    /// Sets the number of slots.
    pub fn with_slots(mut self, slots: u32) -> Self {
        self.slots = slots;
        self
    }

    /// Sets the context per slot.
    pub fn with_ctx_per_slot(mut self, ctx_per_slot: u32) -> Self {
        self.ctx_per_slot = ctx_per_slot;
        self
    }

    /// Sets the CPU threads.
    pub fn with_threads(mut self, threads: u32) -> Self {
        self.threads = Some(threads);
        self
    }

    /// Turns prefix reuse on or off.
    pub fn with_prefix_reuse(mut self, prefix_reuse: bool) -> Self {
        self.prefix_reuse = prefix_reuse;
        self
    }

    /// Sets how many finished prompts stay cached beyond the slots.
    pub fn with_kept_prompts(mut self, kept_prompts: u32) -> Self {
        self.kept_prompts = kept_prompts;
        self
    }

    /// The sequences the KV cache tracks: the slots plus the kept prompts (none without prefix
    /// reuse), at most 256.
    pub fn sequences(&self) -> u32 {
        let kept = if self.prefix_reuse {
            self.kept_prompts
        } else {
            0
        };
        self.slots
            .saturating_add(kept)
            .min(MAX_SEQUENCES)
            .max(self.slots)
    }

    /// Sets the layers offloaded to the GPU.
    pub fn with_gpu_layers(mut self, gpu_layers: u32) -> Self {
        self.gpu_layers = gpu_layers;
        self
    }

    /// The threads llama.cpp will use: `threads`, else `PROMPTOPT_THREADS` when it holds a
    /// positive number, else all cores.
    ///
    /// On a machine whose cores other processes also use, fewer threads than cores can be much
    /// faster: llama.cpp's threads wait for each other at every step of a decode.
    pub fn effective_threads(&self) -> u32 {
        self.threads
            .or_else(|| {
                std::env::var("PROMPTOPT_THREADS")
                    .ok()
                    .and_then(|v| parse_threads(&v))
            })
            .unwrap_or_else(|| {
                std::thread::available_parallelism()
                    .map(|n| u32::try_from(n.get()).unwrap_or(1))
                    .unwrap_or(1)
            })
    }

    /// Checks the ranges of the numeric settings.
    pub fn validate(&self) -> Result<(), EngineError> {
        let invalid = |field, message: &str| {
            Err(EngineError::InvalidConfig {
                field,
                message: message.to_string(),
            })
        };
        if self.slots == 0 || self.slots > MAX_SEQUENCES {
            return invalid("slots", "must be between 1 and 256");
        }
        if self.ctx_per_slot < 16 {
            return invalid("ctx_per_slot", "must be at least 16 tokens");
        }
        if self
            .slots
            .checked_mul(self.ctx_per_slot)
            .is_none_or(|n| n > 1 << 22)
        {
            return invalid(
                "ctx_per_slot",
                "slots × ctx_per_slot must stay below 4,194,304 tokens",
            );
        }
        if self.batch_size < 16 {
            return invalid("batch_size", "must be at least 16 tokens");
        }
        if self.batch_size < self.slots {
            return invalid(
                "batch_size",
                "must be at least `slots` (every slot decodes a token per step)",
            );
        }
        if self.threads == Some(0) {
            return invalid("threads", "must be at least 1");
        }
        if self
            .gpu_memory_fraction
            .is_some_and(|f| !(f.is_finite() && f > 0.0 && f <= 1.0))
        {
            return invalid("gpu_memory_fraction", "must be in (0, 1]");
        }
        if self.default_max_tokens == 0 {
            return invalid("default_max_tokens", "must be at least 1");
        }
        Ok(())
    }
}

/// llama.cpp's limit on the sequences of one context.
const MAX_SEQUENCES: u32 = 256;

/// A thread count from text: a positive whole number, else `None`.
fn parse_threads(text: &str) -> Option<u32> {
    text.trim().parse::<u32>().ok().filter(|&n| n > 0)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn defaults_are_valid_and_zero_slots_is_not() {
        assert!(EngineConfig::default().validate().is_ok());
        let error = EngineConfig::default().with_slots(0).validate();
        assert!(matches!(
            error,
            Err(EngineError::InvalidConfig { field: "slots", .. })
        ));
    }

    #[test]
    fn kept_prompts_stay_within_llama_cpp_sequence_limit() {
        assert_eq!(EngineConfig::default().with_slots(8).sequences(), 32);
        assert_eq!(
            EngineConfig::default()
                .with_slots(8)
                .with_kept_prompts(0)
                .sequences(),
            8
        );
        assert_eq!(
            EngineConfig::default()
                .with_slots(8)
                .with_prefix_reuse(false)
                .sequences(),
            8
        );
        assert_eq!(EngineConfig::default().with_slots(250).sequences(), 256);
        assert_eq!(EngineConfig::default().with_slots(256).sequences(), 256);
    }

    #[test]
    fn thread_counts_from_text_must_be_positive() {
        assert_eq!(parse_threads(" 1 "), Some(1));
        assert_eq!(parse_threads("4"), Some(4));
        assert_eq!(parse_threads("0"), None);
        assert_eq!(parse_threads("two"), None);
        assert_eq!(parse_threads(""), None);
    }

    #[test]
    fn threads_default_to_all_cores() {
        assert!(EngineConfig::default().effective_threads() >= 1);
        assert_eq!(
            EngineConfig::default().with_threads(3).effective_threads(),
            3
        );
    }
}
