//! What a run needs besides the program and its state: models and request settings.

use std::collections::BTreeMap;

use promptopt_lm::SharedLm;
use serde::{Deserialize, Serialize};

use crate::adapter::AdapterKind;
use crate::CoreError;

/// Resolves model names (`provider/model`) to language models.
///
/// A predictor uses its state's `model` when set, else the registry's default model. A name is
/// looked up exactly first, then the fallback (an `Lm` that serves any name, e.g. a router over
/// providers) answers.
#[derive(Clone)]
pub struct LmRegistry {
    default_model: String,
    models: BTreeMap<String, SharedLm>,
    fallback: Option<SharedLm>,
}

impl std::fmt::Debug for LmRegistry {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("LmRegistry")
            .field("default_model", &self.default_model)
            .field("models", &self.models.keys().collect::<Vec<_>>())
            .field("fallback", &self.fallback.is_some())
            .finish()
    }
}

impl LmRegistry {
    /// A registry whose default model `model` is served by `lm`.
    pub fn new(model: impl Into<String>, lm: SharedLm) -> Self {
        let model = model.into();
        let mut models = BTreeMap::new();
        models.insert(model.clone(), lm);
        Self {
            default_model: model,
            models,
            fallback: None,
        }
    }

    /// Builder: `lm` serves `model` too.
    pub fn with_model(mut self, model: impl Into<String>, lm: SharedLm) -> Self {
        self.models.insert(model.into(), lm);
        self
    }

    /// Builder: `lm` serves every name not registered explicitly.
    pub fn with_fallback(mut self, lm: SharedLm) -> Self {
        self.fallback = Some(lm);
        self
    }

    /// The default (task) model's name.
    pub fn default_model(&self) -> &str {
        &self.default_model
    }

    /// The model for a name.
    pub fn resolve(&self, model: &str) -> Result<&SharedLm, CoreError> {
        self.models
            .get(model)
            .or(self.fallback.as_ref())
            .ok_or_else(|| CoreError::UnknownModel {
                model: model.to_string(),
                known: self.models.keys().cloned().collect::<Vec<_>>().join(", "),
            })
    }
}

/// Request settings shared by every predictor call of a run.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default)]
pub struct RunSettings {
    /// How predictors are rendered and parsed.
    pub adapter: AdapterKind,
    /// Whether a chat reply that cannot be parsed is asked again through the JSON adapter (a
    /// second model call).
    pub json_fallback: bool,
    /// Sampling temperature (`0` by default: deterministic where the model allows).
    pub temperature: Option<f32>,
    /// Upper bound on generated tokens.
    pub max_tokens: Option<u32>,
    /// Sampling seed passed to the model.
    pub seed: Option<u64>,
    /// Whether calls may be answered from the cache.
    pub use_cache: bool,
    /// The tools `react` stages may call, as declared (built once per process).
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub tools: Vec<crate::tools::ToolSpec>,
}

impl Default for RunSettings {
    fn default() -> Self {
        Self {
            adapter: AdapterKind::Chat,
            json_fallback: true,
            temperature: Some(0.0),
            max_tokens: None,
            seed: None,
            use_cache: true,
            tools: Vec::new(),
        }
    }
}

/// Models plus settings: everything a program run needs besides the program and its state.
#[derive(Debug, Clone)]
pub struct Runtime {
    /// Model resolution.
    pub lms: LmRegistry,
    /// Request settings.
    pub settings: RunSettings,
    /// The tools `react` stages may call (each stage sees the ones it names).
    pub tools: Option<std::sync::Arc<crate::tools::Toolbox>>,
}

impl Runtime {
    /// A runtime with default settings.
    pub fn new(lms: LmRegistry) -> Self {
        Self {
            lms,
            settings: RunSettings::default(),
            tools: None,
        }
    }

    /// The toolbox of `react` stages: the one given, else the one the settings declare (built
    /// once per process; `None` without tools).
    pub async fn toolbox(
        &self,
    ) -> Result<Option<std::sync::Arc<crate::tools::Toolbox>>, crate::CoreError> {
        match &self.tools {
            Some(tools) => Ok(Some(std::sync::Arc::clone(tools))),
            None if self.settings.tools.is_empty() => Ok(None),
            None => crate::tools::Toolbox::shared(&self.settings.tools)
                .await
                .map(Some),
        }
    }

    /// Builder: the tools of `react` stages.
    pub fn with_tools(mut self, tools: std::sync::Arc<crate::tools::Toolbox>) -> Self {
        self.tools = Some(tools);
        self
    }

    /// Builder: sets the settings.
    pub fn with_settings(mut self, settings: RunSettings) -> Self {
        self.settings = settings;
        self
    }
}
