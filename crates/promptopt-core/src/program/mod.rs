//! Programs: ordered named stages, run against a state.
//!
//! A [`Program`] is an ordered list of [`Stage`]s. Fields flow by name: a stage reads the
//! program's inputs and any earlier stage's outputs, and the program's outputs are the last
//! values of its output keys. [`Program::run`] runs every stage in order with a
//! [`ProgramState`] and a [`Runtime`], recording a [`TraceStep`] per model call;
//! [`Program::render`] returns the very request a stage sends.
//!
//! ```
//! # tokio::runtime::Builder::new_current_thread().build().unwrap().block_on(async {
//! use std::sync::Arc;
//! use promptopt_core::{evaluate, EvalSettings, Example, Field, LmRegistry, Metric, MetricInfo};
//! use promptopt_core::{Prediction, Program, Runtime, Score, Signature, Strategy, Trace};
//! use promptopt_lm::ScriptedLm;
//!
//! let program = Program::single(Signature::new(
//!     vec![Field::text("text")],
//!     vec![Field::label("label", vec!["positive".into(), "negative".into()])],
//! ));
//! let mut state = program.initial_state();
//! state.predictor_mut("predict").unwrap().strategy = Strategy::ChainOfThought;
//! let lm = ScriptedLm::constant("[[ ## reasoning ## ]]\nUpbeat.\n[[ ## label ## ]]\nPositive!");
//! let runtime = Runtime::new(LmRegistry::new("scripted/demo", Arc::new(lm)));
//!
//! let (prediction, trace) =
//!     program.run(&state, &Example::new().with("text", "Lovely."), &runtime).await?;
//! assert_eq!(prediction.text("label").as_deref(), Some("positive"));
//! assert_eq!(trace.steps.len(), 1);
//!
//! struct Accuracy;
//! impl Metric for Accuracy {
//!     fn info(&self) -> MetricInfo {
//!         MetricInfo { name: "accuracy".into(), higher_is_better: true, min: 0.0, max: 1.0 }
//!     }
//!     fn score(&self, example: &Example, prediction: &Prediction, _: &Trace) -> Score {
//!         Score::new(f64::from(u8::from(example.text("label") == prediction.text("label"))))
//!     }
//! }
//! let metric: Arc<dyn Metric> = Arc::new(Accuracy);
//! let examples = vec![
//!     Example::new().with("text", "Lovely.").with("label", "positive"),
//!     Example::new().with("text", "Awful.").with("label", "negative"),
//! ];
//! let report =
//!     evaluate(&program, &state, &examples, &metric, &runtime, &EvalSettings::default()).await?;
//! assert_eq!(report.score, 0.5);
//! # Ok::<(), promptopt_core::CoreError>(())
//! # }).unwrap();
//! ```

use std::collections::BTreeSet;
use std::time::Instant;

use promptopt_lm::{ChatRequest, ChatResponse, Lm};
use serde::{Deserialize, Serialize};

use crate::adapter::{
    Adapter, AdapterKind, ChatAdapter, CompletionAdapter, JsonAdapter, Rendered, TurnsAdapter,
    REASONING_FIELD,
};
use crate::TraceStep;
use crate::{CoreError, Example, Prediction, PredictorState, ProgramState, Signature, Strategy};
use crate::{Field, Trace};

pub mod react;
mod runtime;
mod stage;

pub use runtime::{LmRegistry, RunSettings, Runtime};
pub use stage::{parse_signature, Stage, StageSpec};

/// A program: the fields it takes, its stages in order, and the fields it returns.
///
/// Build one with [`Program::single`] or [`Program::new`] (which checks that every field a
/// stage reads is an input or an earlier stage's output); it serializes as
/// `{input_keys, stages, output_keys}` and is checked again when deserialized.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(try_from = "ProgramParts")]
pub struct Program {
    input_keys: Vec<String>,
    stages: Vec<Stage>,
    output_keys: Vec<String>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct ProgramParts {
    input_keys: Vec<String>,
    stages: Vec<Stage>,
    output_keys: Vec<String>,
}

impl TryFrom<ProgramParts> for Program {
    type Error = CoreError;

    fn try_from(parts: ProgramParts) -> Result<Self, CoreError> {
        Program::new(parts.input_keys, parts.stages, parts.output_keys)
    }
}

/// The result of one run with its trace, also when the run failed.
#[derive(Debug)]
pub struct RunOutput {
    /// The prediction, or why there is none ([`CoreError::Parse`] for a reply that could not be
    /// parsed, anything else for errors).
    pub result: Result<Prediction, CoreError>,
    /// Every predictor call made, failed ones included.
    pub trace: Trace,
}

fn invalid(stage: &str, message: impl Into<String>) -> CoreError {
    CoreError::InvalidProgram {
        stage: stage.to_string(),
        message: message.into(),
    }
}

impl Program {
    /// The conventional name of a single-stage program's stage.
    pub const SINGLE: &'static str = "predict";

    /// A program of these stages. Errors name the stage at fault: no stages, a duplicate or
    /// empty name, a field read that neither the inputs nor an earlier stage provide (a later
    /// stage's output included: stages cannot form a cycle), an output key no stage writes.
    pub fn new(
        input_keys: Vec<String>,
        stages: Vec<Stage>,
        output_keys: Vec<String>,
    ) -> Result<Self, CoreError> {
        if stages.is_empty() {
            return Err(invalid("", "a program needs at least one stage"));
        }
        let mut names = BTreeSet::new();
        let mut available: BTreeSet<&str> = input_keys.iter().map(String::as_str).collect();
        for (position, stage) in stages.iter().enumerate() {
            if stage.name.trim().is_empty() {
                return Err(invalid(
                    &stage.name,
                    format!("stage {} has an empty name", position + 1),
                ));
            }
            if !names.insert(stage.name.as_str()) {
                return Err(invalid(&stage.name, "two stages have this name"));
            }
            for field in &stage.signature.inputs {
                if available.contains(field.name.as_str()) {
                    continue;
                }
                let later = stages[position + 1..]
                    .iter()
                    .find(|s| s.signature.output(&field.name).is_some());
                return Err(invalid(
                    &stage.name,
                    match later {
                        Some(later) => format!(
                            "it reads `{}`, which only the later stage `{}` writes (stages run in order, so a field cannot feed an earlier stage)",
                            field.name, later.name
                        ),
                        None => format!(
                            "it reads `{}`, which is not an input ({}) and no earlier stage writes",
                            field.name,
                            quoted(&input_keys)
                        ),
                    },
                ));
            }
            for field in &stage.signature.outputs {
                available.insert(field.name.as_str());
            }
            if matches!(stage.module, Strategy::ChainOfThought | Strategy::React) {
                available.insert(REASONING_FIELD);
            }
        }
        if let Some(key) = output_keys
            .iter()
            .find(|k| !stages.iter().any(|s| s.signature.output(k).is_some()))
        {
            return Err(invalid(
                "",
                format!("no stage writes the output key `{key}`"),
            ));
        }
        Ok(Self {
            input_keys,
            stages,
            output_keys,
        })
    }

    /// A program of one `predict` stage named `predict`: its inputs and outputs are the
    /// signature's.
    pub fn single(signature: Signature) -> Self {
        Self {
            input_keys: signature.input_names(),
            output_keys: signature.output_names(),
            stages: vec![Stage::new(Self::SINGLE, signature)],
        }
    }

    /// The fields the program takes.
    pub fn input_keys(&self) -> &[String] {
        &self.input_keys
    }

    /// The fields the program returns.
    pub fn output_keys(&self) -> &[String] {
        &self.output_keys
    }

    /// The stages, in the order they run.
    pub fn stages(&self) -> &[Stage] {
        &self.stages
    }

    /// A stage by name.
    pub fn stage(&self, name: &str) -> Option<&Stage> {
        self.stages.iter().find(|s| s.name == name)
    }

    /// One stage's signature.
    pub fn signature(&self, name: &str) -> Option<&Signature> {
        self.stage(name).map(|s| &s.signature)
    }

    /// The program's output fields, with their types, from the stages that write them last.
    pub fn output_fields(&self) -> Vec<Field> {
        self.output_keys
            .iter()
            .filter_map(|key| {
                self.stages
                    .iter()
                    .rev()
                    .find_map(|s| s.signature.output(key).cloned())
            })
            .collect()
    }

    /// A fresh state: each stage with its signature's instructions, no demos, its module.
    pub fn initial_state(&self) -> ProgramState {
        let mut state = ProgramState::default();
        for stage in &self.stages {
            let mut predictor = PredictorState::new(stage.signature.instructions.clone());
            predictor.strategy = stage.module;
            predictor.tools = stage.tools.clone();
            state.predictors.insert(stage.name.clone(), predictor);
        }
        state
    }

    /// Checks that the state has an entry for every stage.
    pub fn check_state(&self, state: &ProgramState) -> Result<(), CoreError> {
        for stage in &self.stages {
            if state.predictor(&stage.name).is_none() {
                return Err(CoreError::MissingPredictorState {
                    name: stage.name.clone(),
                });
            }
        }
        Ok(())
    }

    fn lookup<'a>(
        &'a self,
        name: &str,
        state: &'a ProgramState,
    ) -> Result<(&'a Stage, &'a PredictorState), CoreError> {
        let stage = self
            .stage(name)
            .ok_or_else(|| CoreError::UnknownPredictor {
                name: name.to_string(),
                known: quoted(
                    &self
                        .stages
                        .iter()
                        .map(|s| s.name.clone())
                        .collect::<Vec<_>>(),
                ),
            })?;
        let predictor = state
            .predictor(name)
            .ok_or_else(|| CoreError::MissingPredictorState {
                name: name.to_string(),
            })?;
        Ok((stage, predictor))
    }

    /// The request stage `name` sends for `inputs` (the fields its signature reads; others are
    /// ignored): exactly what [`Program::run`] sends on its first try.
    pub fn render(
        &self,
        name: &str,
        state: &ProgramState,
        inputs: &Example,
        runtime: &Runtime,
    ) -> Result<ChatRequest, CoreError> {
        let (stage, predictor) = self.lookup(name, state)?;
        let call = StageCall::new(stage, predictor, inputs, runtime)?;
        let adapter = call.first_adapter();
        Ok(call.request(adapter.as_ref()))
    }

    /// Runs the program on one example.
    ///
    /// A reply that cannot be parsed is not an error: the prediction is then empty and
    /// [`Trace::has_parse_failure`] is true (the step keeps the raw reply). Model errors and
    /// invalid inputs are errors.
    pub async fn run(
        &self,
        state: &ProgramState,
        inputs: &Example,
        runtime: &Runtime,
    ) -> Result<(Prediction, Trace), CoreError> {
        let output = self.run_traced(state, inputs, runtime).await;
        match output.result {
            Ok(prediction) => Ok((prediction, output.trace)),
            Err(CoreError::Parse { .. }) => Ok((Prediction::default(), output.trace)),
            Err(error) => Err(error),
        }
    }

    /// Runs the program on one example and returns its trace whatever happened.
    ///
    /// Only the program's input keys are read from `inputs` (gold outputs never reach a stage);
    /// each stage's outputs join the fields later stages read; the prediction holds the output
    /// keys, and `reasoning` when the last stage reasoned.
    pub async fn run_traced(
        &self,
        state: &ProgramState,
        inputs: &Example,
        runtime: &Runtime,
    ) -> RunOutput {
        let mut trace = Trace::default();
        let result = self.run_stages(state, inputs, runtime, &mut trace).await;
        RunOutput { result, trace }
    }

    async fn run_stages(
        &self,
        state: &ProgramState,
        inputs: &Example,
        runtime: &Runtime,
        trace: &mut Trace,
    ) -> Result<Prediction, CoreError> {
        self.check_state(state)?;
        // The first stage reads the example itself (its fields are all input keys); the fields
        // later stages read are built only when there are later stages.
        let mut fields: Option<Example> = None;
        let mut last = Example::new();
        let count = self.stages.len();
        for (position, stage) in self.stages.iter().enumerate() {
            let predictor =
                state
                    .predictor(&stage.name)
                    .ok_or_else(|| CoreError::MissingPredictorState {
                        name: stage.name.clone(),
                    })?;
            last = {
                let source = fields.as_ref().unwrap_or(inputs);
                let call = StageCall::new(stage, predictor, source, runtime)?;
                call.run(trace).await?
            };
            if position + 1 < count {
                fields
                    .get_or_insert_with(|| inputs.project(&self.input_keys))
                    .merge(&last);
            }
        }
        if self.stages.len() == 1 {
            return Ok(Prediction { outputs: last });
        }
        let mut outputs = Example::new();
        if let Some(reasoning) = last.get(REASONING_FIELD) {
            outputs.insert(REASONING_FIELD, reasoning.clone());
        }
        for key in &self.output_keys {
            let value = last
                .get(key)
                .or_else(|| fields.as_ref().and_then(|f| f.get(key)));
            if let Some(value) = value {
                outputs.insert(key.clone(), value.clone());
            }
        }
        Ok(Prediction { outputs })
    }
}

fn quoted(names: &[String]) -> String {
    if names.is_empty() {
        return "none".to_string();
    }
    names
        .iter()
        .map(|n| format!("`{n}`"))
        .collect::<Vec<_>>()
        .join(", ")
}

/// One stage about to be called: its inputs projected, its model and adapter resolved.
struct StageCall<'a> {
    stage: &'a Stage,
    predictor: &'a PredictorState,
    inputs: Example,
    model: &'a str,
    lm: &'a dyn Lm,
    runtime: &'a Runtime,
}

impl<'a> StageCall<'a> {
    fn new(
        stage: &'a Stage,
        predictor: &'a PredictorState,
        fields: &Example,
        runtime: &'a Runtime,
    ) -> Result<Self, CoreError> {
        let mut inputs = Example::new();
        for field in &stage.signature.inputs {
            match fields.get(&field.name) {
                Some(value) => inputs.insert(field.name.clone(), value.clone()),
                None => {
                    return Err(CoreError::MissingInput {
                        predictor: stage.name.clone(),
                        field: field.name.clone(),
                    })
                }
            }
        }
        let model = predictor
            .model
            .as_deref()
            .or(stage.model.as_deref())
            .unwrap_or_else(|| runtime.lms.default_model());
        let lm = runtime.lms.resolve(model)?.as_ref();
        Ok(Self {
            stage,
            predictor,
            inputs,
            model,
            lm,
            runtime,
        })
    }

    fn kind(&self) -> AdapterKind {
        self.stage.adapter.unwrap_or(self.runtime.settings.adapter)
    }

    fn first_adapter(&self) -> Box<dyn Adapter> {
        match self.kind() {
            AdapterKind::Chat => Box::new(ChatAdapter),
            AdapterKind::Turns => Box::new(TurnsAdapter),
            AdapterKind::Json => {
                Box::new(JsonAdapter::new(self.lm.supports_json_schema(self.model)))
            }
            AdapterKind::Completion => Box::new(CompletionAdapter),
        }
    }

    /// The request through `adapter`.
    fn request(&self, adapter: &dyn Adapter) -> ChatRequest {
        let Rendered {
            messages,
            response_format,
            stop,
        } = adapter.render(&self.stage.signature, self.predictor, &self.inputs);
        let settings = &self.runtime.settings;
        let mut request = ChatRequest::new(self.model, messages);
        request.temperature = settings.temperature;
        request.max_tokens = settings.max_tokens;
        request.seed = settings.seed;
        request.response_format = response_format;
        request.stop = stop;
        request.use_cache = settings.use_cache;
        request
    }

    /// Calls the model; with the chat or turns adapter and [`RunSettings::json_fallback`], a
    /// reply that cannot be parsed is asked once more through the JSON adapter.
    async fn run(&self, trace: &mut Trace) -> Result<Example, CoreError> {
        if self.predictor.strategy == Strategy::React {
            return self.run_react(trace).await;
        }
        self.run_plain(trace).await
    }

    /// One answer through the adapter (with the JSON fallback), no agent loop.
    async fn run_plain(&self, trace: &mut Trace) -> Result<Example, CoreError> {
        let first = self.first_adapter();
        let outcome = self.call(first.as_ref(), trace).await?;
        match outcome {
            Err(_)
                if self.runtime.settings.json_fallback
                    && matches!(self.kind(), AdapterKind::Chat | AdapterKind::Turns) =>
            {
                let json = JsonAdapter::new(self.lm.supports_json_schema(self.model));
                self.call(&json, trace).await?
            }
            other => other,
        }
    }

    /// One model call: render, send, record, parse. The outer error is a model failure; the
    /// inner one a reply that could not be parsed.
    async fn call(
        &self,
        adapter: &dyn Adapter,
        trace: &mut Trace,
    ) -> Result<Result<Example, CoreError>, CoreError> {
        let request = self.request(adapter);
        let started = Instant::now();
        let response = self.lm.chat(&request).await;
        let latency = started.elapsed();
        let response: ChatResponse = match response {
            Ok(response) => response,
            Err(source) => {
                return Err(CoreError::Lm {
                    predictor: self.stage.name.clone(),
                    source,
                })
            }
        };
        let raw = response.text().to_string();
        let parsed = adapter.parse(&self.stage.signature, self.predictor.strategy, &raw);
        let (outputs, parse_error) = match &parsed {
            Ok(outputs) => (Some(outputs.clone()), None),
            Err(failure) => {
                tracing::debug!(
                    predictor = %self.stage.name,
                    error = %failure.message,
                    raw = %raw,
                    "reply not parsed"
                );
                (None, Some(failure.message.clone()))
            }
        };
        let result = match parsed {
            Ok(outputs) => Ok(outputs),
            Err(failure) => Err(CoreError::Parse {
                predictor: self.stage.name.clone(),
                message: failure.message,
                raw: raw.clone(),
            }),
        };
        trace.steps.push(TraceStep {
            predictor: self.stage.name.clone(),
            inputs: self.inputs.clone(),
            request,
            raw,
            outputs,
            parse_error,
            usage: response.usage,
            latency,
            cost_usd: response.cost_usd,
            cache_hit: response.cache_hit,
        });
        Ok(result)
    }
}

#[cfg(test)]
mod tests;
