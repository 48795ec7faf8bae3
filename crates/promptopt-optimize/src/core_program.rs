//! Programs of `promptopt-core` (a [`Module`] rendered through an adapter) as optimizer targets.

use std::sync::Arc;

use async_trait::async_trait;
use promptopt_core::adapter::{
    Adapter, AdapterKind, ChatAdapter, CompletionAdapter, JsonAdapter, TurnsAdapter,
};
use promptopt_core::{
    Example, LmRegistry, Module, Prediction, Program, ProgramState, RunSettings, Runtime,
    Signature, Trace,
};
use promptopt_lm::ChatRequest;

use crate::{OptimizeError, PredictorInfo, ProgramRunner, TaskModel};

/// A core [`Program`] run with the task model of the optimization context.
///
/// Every predictor's model name resolves to the context's (budgeted) task model, which routes
/// by provider; the adapter and its JSON fallback come from `settings`, temperature and
/// `max_tokens` from the [`TaskModel`] when it sets them.
#[derive(Debug, Clone)]
pub struct CoreProgram {
    program: Program,
    settings: RunSettings,
}

impl CoreProgram {
    /// Wraps a module with the default run settings (chat adapter, JSON fallback, temperature 0).
    pub fn new(module: Arc<dyn Module>) -> Self {
        Self {
            program: Program::new(module),
            settings: RunSettings::default(),
        }
    }

    /// A single predictor named `predict`.
    pub fn single(signature: Signature) -> Self {
        Self {
            program: Program::single(signature),
            settings: RunSettings::default(),
        }
    }

    /// Builder: the run settings.
    pub fn with_settings(mut self, settings: RunSettings) -> Self {
        self.settings = settings;
        self
    }

    /// The core program.
    pub fn program(&self) -> &Program {
        &self.program
    }

    /// The run settings.
    pub fn settings(&self) -> &RunSettings {
        &self.settings
    }

    /// The runtime for a task model.
    pub fn runtime(&self, task: &TaskModel) -> Runtime {
        let lms =
            LmRegistry::new(task.model.clone(), task.lm.clone()).with_fallback(task.lm.clone());
        let mut settings = self.settings.clone();
        if task.temperature.is_some() {
            settings.temperature = task.temperature;
        }
        if task.max_tokens.is_some() {
            settings.max_tokens = task.max_tokens;
        }
        if task.seed.is_some() {
            settings.seed = task.seed;
        }
        Runtime::new(lms).with_settings(settings)
    }
}

#[async_trait]
impl ProgramRunner for CoreProgram {
    fn predictors(&self) -> Vec<PredictorInfo> {
        self.program
            .signatures()
            .iter()
            .map(|(name, signature)| PredictorInfo {
                name: name.clone(),
                signature: signature.clone(),
            })
            .collect()
    }

    fn initial_state(&self) -> ProgramState {
        self.program.initial_state()
    }

    async fn run(
        &self,
        task: &TaskModel,
        state: &ProgramState,
        example: &Example,
    ) -> Result<(Prediction, Trace), OptimizeError> {
        let runtime = self.runtime(task);
        Ok(self.program.run(state, example, &runtime).await?)
    }

    fn render(
        &self,
        task: &TaskModel,
        state: &ProgramState,
        example: &Example,
    ) -> Result<Vec<ChatRequest>, OptimizeError> {
        let runtime = self.runtime(task);
        let mut requests = Vec::new();
        for (name, signature) in self.program.signatures() {
            let Some(predictor) = state.predictor(name) else {
                continue;
            };
            let adapter: Box<dyn Adapter> = match self.settings.adapter {
                AdapterKind::Chat => Box::new(ChatAdapter),
                AdapterKind::Json => Box::new(JsonAdapter::new(false)),
                AdapterKind::Completion => Box::new(CompletionAdapter),
                AdapterKind::Turns => Box::new(TurnsAdapter),
            };
            let inputs = example.project(&signature.input_names());
            let rendered = adapter.render(signature, predictor, &inputs);
            let model = predictor
                .model
                .clone()
                .unwrap_or_else(|| runtime.lms.default_model().to_string());
            let mut request = ChatRequest::new(model, rendered.messages);
            request.temperature = runtime.settings.temperature;
            request.max_tokens = runtime.settings.max_tokens;
            request.stop = rendered.stop;
            request.response_format = rendered.response_format;
            requests.push(request);
        }
        Ok(requests)
    }
}
