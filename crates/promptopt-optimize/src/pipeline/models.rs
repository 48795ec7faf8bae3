//! Saved models: loading, running, evaluating and copying them.

use std::path::Path;
use std::sync::Arc;

use promptopt_core::{metrics, Example, LmRegistry, Prediction, Runtime, Trace};
use promptopt_registry::{ModelArtifact, ModelRef, Registry, Version};
use serde_json::Value;

use super::Pipeline;
use crate::{Budget, BudgetLimits, EvalReport, OptimizeContext, OptimizeError};

impl Pipeline {
    /// Loads a saved model: `version` is `None` or `latest` for the highest version, a version
    /// (`1.2.0`) or an alias (`production`).
    pub fn load_model(
        &self,
        name: &str,
        version: Option<&str>,
    ) -> Result<ModelArtifact, OptimizeError> {
        let reference = match version {
            None => name.to_string(),
            Some(v) => format!("{name}@{v}"),
        };
        Ok(self.registry.load_ref(&reference)?)
    }

    /// The runtime a saved model runs with: its settings, every model name served by this
    /// pipeline's model.
    pub fn runtime_of(&self, artifact: &ModelArtifact) -> Runtime {
        Runtime::new(
            LmRegistry::new(artifact.model.model.clone(), self.lm.clone())
                .with_fallback(self.lm.clone()),
        )
        .with_settings(artifact.run_settings())
    }

    /// Runs a saved model (`name`, `name@1.2.3`, `name@latest`, `name@production`) on one
    /// input.
    pub async fn predict(
        &self,
        model_ref: &str,
        inputs: &Example,
    ) -> Result<(Prediction, Trace), OptimizeError> {
        let artifact = self.registry.load_ref(model_ref)?;
        self.predict_with(&artifact, inputs).await
    }

    /// Runs a loaded model on one input.
    pub async fn predict_with(
        &self,
        artifact: &ModelArtifact,
        inputs: &Example,
    ) -> Result<(Prediction, Trace), OptimizeError> {
        let runtime = self.runtime_of(artifact);
        Ok(artifact
            .program
            .run(&artifact.state, inputs, &runtime)
            .await?)
    }

    /// Evaluates a saved model on examples with its own metric (or `metric`).
    pub async fn evaluate_model(
        &self,
        model_ref: &str,
        examples: &[Example],
        metric: Option<&str>,
    ) -> Result<(ModelArtifact, EvalReport), OptimizeError> {
        let artifact = self.registry.load_ref(model_ref)?;
        let output_key = artifact
            .program
            .output_keys()
            .first()
            .cloned()
            .unwrap_or_default();
        let metric_name = metric
            .or_else(|| artifact.metric_name())
            .unwrap_or("exact_match")
            .to_string();
        let metric = metrics::by_name(&metric_name, &output_key)?;
        let ctx = OptimizeContext::builder(
            artifact.program.clone(),
            self.lm.clone(),
            artifact.model.model.clone(),
            metric,
        )
        .settings(artifact.run_settings())
        .concurrency(self.concurrency)
        .events(self.events.clone())
        .budget(Arc::new(Budget::with_cancel(
            BudgetLimits::default(),
            self.cancel.clone(),
        )))
        .build();
        let report = ctx.evaluate(&artifact.state, examples).await?;
        Ok((artifact, report))
    }

    /// Saves a copy of a saved model (the guide's `save_optimized_model`): as a new registry
    /// version (`version`, else the next patch; its parent is the copied version) with
    /// `metadata` merged in, and/or as a self-contained file at `output_path`.
    pub async fn save_optimized_model(
        &self,
        model_id: &str,
        output_path: Option<&Path>,
        version: Option<Version>,
        metadata: Option<serde_json::Map<String, Value>>,
    ) -> Result<ModelArtifact, OptimizeError> {
        // Without a file, a copy is a new registry version.
        let register = (version.is_some() || output_path.is_none()).then_some(version);
        let artifact = self.registry.copy(
            model_id,
            register,
            metadata.unwrap_or_default(),
            Default::default(),
        )?;
        if let Some(path) = output_path {
            Registry::write_file(&artifact, path)?;
        }
        Ok(artifact)
    }

    /// Points `alias` of a model at a version (`name@1.2.0`, or `name` for the latest).
    /// Returns the version it pointed at before.
    pub fn promote(&self, model_ref: &str, alias: &str) -> Result<Option<Version>, OptimizeError> {
        let reference: ModelRef = model_ref.parse()?;
        let version = self.registry.resolve(&reference)?;
        Ok(self.registry.set_alias(&reference.name, alias, version)?)
    }
}
