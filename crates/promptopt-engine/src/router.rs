//! Model routing: `local/…` names to embedded engines, every other name to the providers.

use std::collections::BTreeMap;
use std::sync::Arc;

use async_trait::async_trait;
use promptopt_lm::gpu::GpuConfig;
use promptopt_lm::{ChatRequest, ChatResponse, Lm, LmConfig, LmError, LmStack, SharedLm};

use crate::{Engine, EngineConfig, EngineError};

/// Serves `local/…` models by name, each from its own [`Engine`].
#[derive(Debug, Clone, Default)]
pub struct LocalModels {
    engines: BTreeMap<String, Arc<Engine>>,
}

impl LocalModels {
    /// Loads an engine for each distinct `local/…` name in `models` (other names are skipped),
    /// each with `slots` concurrent sequences of 4,096 tokens, on the CPU.
    pub async fn load(models: &[String], slots: u32) -> Result<Self, EngineError> {
        Self::load_on(models, slots, None).await
    }

    /// [`LocalModels::load`] on the GPUs `gpu` describes (see [`EngineConfig::place_gpu`]):
    /// then each engine holds `gpu.batch_size` sequences instead of `slots`. The GPU is checked
    /// before any model loads: a GPU that cannot be used is an error, or with `gpu.required:
    /// false` a warning and the CPU.
    pub async fn load_on(
        models: &[String],
        slots: u32,
        gpu: Option<&GpuConfig>,
    ) -> Result<Self, EngineError> {
        let mut engines = BTreeMap::new();
        for model in models.iter().filter(|m| m.starts_with("local/")) {
            if engines.contains_key(model) {
                continue;
            }
            let config = EngineConfig::new(model.clone())
                .with_slots(slots.clamp(1, 16))
                .with_ctx_per_slot(4096)
                .place_gpu(gpu)?
                .config;
            let engine = Engine::load_async(config).await?;
            engines.insert(model.clone(), Arc::new(engine));
        }
        Ok(Self { engines })
    }

    /// Whether no engine is loaded.
    pub fn is_empty(&self) -> bool {
        self.engines.is_empty()
    }

    /// The loaded model names.
    pub fn models(&self) -> Vec<String> {
        self.engines.keys().cloned().collect()
    }
}

#[async_trait]
impl Lm for LocalModels {
    async fn chat(&self, request: &ChatRequest) -> Result<ChatResponse, LmError> {
        match self.engines.get(&request.model) {
            Some(engine) => engine.chat(request).await,
            None => Err(LmError::InvalidRequest(format!(
                "The local model `{}` is not loaded; loaded: {}",
                request.model,
                self.models().join(", ")
            ))),
        }
    }

    fn context_tokens(&self, model: &str) -> Option<u64> {
        self.engines.get(model)?.context_tokens(model)
    }
}

/// The model stack for a set of model names: an engine per distinct `local/…` model (on the
/// GPUs `gpu` describes, else the CPU with `slots` sequences) and the providers (OpenAI,
/// Anthropic, Gemini, OpenAI-compatible) for the others, behind the layers `config` sets
/// (cache, retries, limits, cost).
///
/// Errors: a GPU that cannot be used or a local model that cannot be loaded ([`EngineError`]),
/// a configuration the stack refuses.
pub async fn model_stack(
    models: &[String],
    slots: u32,
    gpu: Option<&GpuConfig>,
    config: LmConfig,
) -> Result<SharedLm, EngineError> {
    let local = LocalModels::load_on(models, slots, gpu).await?;
    let mut stack = LmStack::new(config);
    if !local.is_empty() {
        stack = stack.with_backend("local", Arc::new(local));
    }
    stack.assemble().map_err(EngineError::Stack)
}
