//! Saved models: loading, running, evaluating and copying them.

use std::path::Path;
use std::sync::Arc;

use promptopt_core::adapter::AdapterKind;
use promptopt_core::metrics;
use promptopt_core::{Example, Prediction, RunSettings, SinglePredictor, Trace};
use serde_json::Value;

use super::Pipeline;
use crate::registry::{now_rfc3339, ModelArtifact, VersionSpec};
use crate::{
    Budget, BudgetLimits, CoreProgram, EvalReport, OptimizeContext, OptimizeError, ProgramRunner,
    TaskModel, Version,
};

impl Pipeline {
    /// Loads a saved model and the program it describes.
    pub fn load_model(
        &self,
        name: &str,
        version: Option<&str>,
    ) -> Result<ModelArtifact, OptimizeError> {
        let version = match version {
            None | Some("latest") => None,
            Some(v) => Some(v.parse()?),
        };
        self.registry.load(name, version)
    }

    /// The program of a saved model.
    pub fn program_of(artifact: &ModelArtifact) -> Result<CoreProgram, OptimizeError> {
        let predictor = artifact.program.predictors.first().ok_or_else(|| {
            OptimizeError::Program(format!("Model `{}` has no predictor", artifact.id()))
        })?;
        let adapter = AdapterKind::from_name(&artifact.model.adapter).unwrap_or_default();
        let settings = RunSettings {
            adapter,
            temperature: artifact.model.temperature,
            max_tokens: artifact.model.max_tokens,
            ..RunSettings::default()
        };
        let module = SinglePredictor {
            name: predictor.name.clone(),
            signature: predictor.signature.clone(),
        };
        Ok(CoreProgram::new(Arc::new(module)).with_settings(settings))
    }

    /// Runs a saved model (`name`, `name@1.2.3`, `name@latest`) on one input.
    pub async fn predict(
        &self,
        model_ref: &str,
        inputs: &Example,
    ) -> Result<(Prediction, Trace), OptimizeError> {
        let artifact = self.registry.load_ref(model_ref)?;
        let program = Self::program_of(&artifact)?;
        let task = TaskModel {
            lm: self.lm.clone(),
            model: artifact.model.model.clone(),
            temperature: artifact.model.temperature,
            max_tokens: artifact.model.max_tokens,
            seed: None,
        };
        program.run(&task, &artifact.state, inputs).await
    }

    /// Evaluates a saved model on examples with its own metric (or `metric`).
    pub async fn evaluate_model(
        &self,
        model_ref: &str,
        examples: &[Example],
        metric: Option<&str>,
    ) -> Result<(ModelArtifact, EvalReport), OptimizeError> {
        let artifact = self.registry.load_ref(model_ref)?;
        let program = Arc::new(Self::program_of(&artifact)?);
        let output_key = artifact
            .program
            .predictors
            .first()
            .and_then(|p| p.signature.outputs.first())
            .map(|f| f.name.clone())
            .unwrap_or_default();
        let metric_name = metric
            .map(str::to_string)
            .or_else(|| {
                artifact
                    .metrics
                    .get("metric")
                    .and_then(Value::as_str)
                    .map(str::to_string)
            })
            .unwrap_or_else(|| "exact_match".to_string());
        let metric = metrics::by_name(&metric_name, &output_key)?;
        let ctx = OptimizeContext::builder(
            program,
            self.lm.clone(),
            artifact.model.model.clone(),
            metric,
        )
        .max_tokens(artifact.model.max_tokens)
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

    /// Saves a copy of a saved model: as a new registry version (`version`, else the next
    /// patch) with `metadata` merged in, and/or as a file at `output_path`.
    pub async fn save_optimized_model(
        &self,
        model_id: &str,
        output_path: Option<&Path>,
        version: Option<Version>,
        metadata: Option<serde_json::Map<String, Value>>,
    ) -> Result<ModelArtifact, OptimizeError> {
        let mut artifact = self.registry.load_ref(model_id)?;
        if let Some(extra) = metadata {
            artifact.metadata.extend(extra);
        }
        if version.is_some() || output_path.is_none() {
            artifact.created_at = now_rfc3339();
            let spec = version.map_or(VersionSpec::NextPatch, VersionSpec::Exact);
            artifact = self.registry.save(artifact, spec)?;
        }
        if let Some(path) = output_path {
            let json = serde_json::to_string_pretty(&artifact)?;
            let tmp = path.with_extension("tmp");
            std::fs::write(&tmp, json).map_err(|e| OptimizeError::io(&tmp, e))?;
            std::fs::rename(&tmp, path).map_err(|e| OptimizeError::io(path, e))?;
        }
        Ok(artifact)
    }
}
