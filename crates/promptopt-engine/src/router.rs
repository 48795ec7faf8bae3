//! Model routing: `local/…` names to embedded engines, every other name to the providers.

use std::collections::BTreeMap;
use std::sync::Arc;

use async_trait::async_trait;
use promptopt_lm::{ChatRequest, ChatResponse, Lm, LmConfig, LmError, LmStack, SharedLm};

use crate::{Engine, EngineConfig, EngineError};

/// Serves `local/…` models by name, each from its own [`Engine`].
#[derive(Debug, Clone, Default)]
pub struct LocalModels {
    engines: BTreeMap<String, Arc<Engine>>,
}

impl LocalModels {
    /// Loads an engine for each distinct `local/…` name in `models` (other names are skipped),
    /// each with `slots` concurrent sequences of 4,096 tokens.
    pub async fn load(models: &[String], slots: u32) -> Result<Self, EngineError> {
        let mut engines = BTreeMap::new();
        for model in models.iter().filter(|m| m.starts_with("local/")) {
            if engines.contains_key(model) {
                continue;
            }
            let config = EngineConfig::new(model.clone())
                .with_slots(slots.clamp(1, 16))
                .with_ctx_per_slot(4096);
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
}

/// The model stack for a set of model names: an engine per distinct `local/…` model and the
/// providers (OpenAI, Anthropic, Gemini, OpenAI-compatible) for the others, behind the layers
/// `config` sets (cache, retries, limits, cost).
///
/// Errors: a local model that cannot be loaded ([`EngineError`]), a configuration the stack
/// refuses.
pub async fn model_stack(
    models: &[String],
    slots: u32,
    config: LmConfig,
) -> Result<SharedLm, EngineError> {
    let local = LocalModels::load(models, slots).await?;
    let mut stack = LmStack::new(config);
    if !local.is_empty() {
        stack = stack.with_backend("local", Arc::new(local));
    }
    stack.assemble().map_err(EngineError::Stack)
}
