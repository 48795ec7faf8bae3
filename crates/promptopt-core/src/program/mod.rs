//! Programs: a module plus its signatures, run against a state.
//!
//! [`Program::run`] runs a [`Module`] on one example with a [`ProgramState`] and a [`Runtime`];
//! the module calls [`RunContext::predict`] for each stage, which renders the predictor through
//! the run's adapter, calls the model, parses the reply and records a [`TraceStep`].
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
//! let examples = vec![
//!     Example::new().with("text", "Lovely.").with("label", "positive"),
//!     Example::new().with("text", "Awful.").with("label", "negative"),
//! ];
//! let report =
//!     evaluate(&program, &state, &examples, &Accuracy, &runtime, &EvalSettings::default()).await?;
//! assert_eq!(report.score, 0.5);
//! # Ok::<(), promptopt_core::CoreError>(())
//! # }).unwrap();
//! ```

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};
use std::time::Instant;

use promptopt_lm::{ChatRequest, ChatResponse, Lm};

use crate::adapter::{
    Adapter, AdapterKind, ChatAdapter, CompletionAdapter, JsonAdapter, Rendered, TurnsAdapter,
};
use crate::module::{initial_state, Module, SinglePredictor};
use crate::TraceStep;
use crate::{CoreError, Example, Prediction, PredictorState, ProgramState, Signature, Trace};

mod runtime;

pub use runtime::{LmRegistry, RunSettings, Runtime};

/// A module with its predictors' signatures looked up once.
#[derive(Clone)]
pub struct Program {
    module: Arc<dyn Module>,
    signatures: Arc<BTreeMap<String, Signature>>,
}

impl std::fmt::Debug for Program {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Program")
            .field("predictors", &self.signatures.keys().collect::<Vec<_>>())
            .finish()
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

impl Program {
    /// A program of this module.
    pub fn new(module: Arc<dyn Module>) -> Self {
        let signatures = module.predictors().into_iter().collect();
        Self {
            module,
            signatures: Arc::new(signatures),
        }
    }

    /// A program of one predictor named `predict`.
    pub fn single(signature: Signature) -> Self {
        Self::new(Arc::new(SinglePredictor::new(signature)))
    }

    /// The module.
    pub fn module(&self) -> &dyn Module {
        self.module.as_ref()
    }

    /// The predictors' signatures, by name.
    pub fn signatures(&self) -> &BTreeMap<String, Signature> {
        &self.signatures
    }

    /// One predictor's signature.
    pub fn signature(&self, name: &str) -> Option<&Signature> {
        self.signatures.get(name)
    }

    /// A fresh state: each predictor with its signature's instructions.
    pub fn initial_state(&self) -> ProgramState {
        initial_state(self.module.as_ref())
    }

    /// Checks that the state has an entry for every predictor.
    pub fn check_state(&self, state: &ProgramState) -> Result<(), CoreError> {
        for name in self.signatures.keys() {
            if state.predictor(name).is_none() {
                return Err(CoreError::MissingPredictorState { name: name.clone() });
            }
        }
        Ok(())
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
    pub async fn run_traced(
        &self,
        state: &ProgramState,
        inputs: &Example,
        runtime: &Runtime,
    ) -> RunOutput {
        let ctx = RunContext {
            program: self,
            state,
            runtime,
            trace: Mutex::new(Trace::default()),
        };
        let result = self.module.forward(&ctx, inputs).await;
        RunOutput {
            result,
            trace: ctx.into_trace(),
        }
    }
}

/// What a module sees while it runs: the state, the models and the trace so far.
pub struct RunContext<'a> {
    program: &'a Program,
    state: &'a ProgramState,
    runtime: &'a Runtime,
    trace: Mutex<Trace>,
}

impl std::fmt::Debug for RunContext<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RunContext")
            .field("program", &self.program)
            .field("steps", &self.trace().steps.len())
            .finish()
    }
}

impl<'a> RunContext<'a> {
    /// The state being run.
    pub fn state(&self) -> &'a ProgramState {
        self.state
    }

    /// The models and settings.
    pub fn runtime(&self) -> &'a Runtime {
        self.runtime
    }

    /// A copy of the trace so far.
    pub fn trace(&self) -> Trace {
        self.lock_trace().clone()
    }

    fn lock_trace(&self) -> std::sync::MutexGuard<'_, Trace> {
        self.trace
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    fn into_trace(self) -> Trace {
        self.trace
            .into_inner()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    /// Runs predictor `name` on the input fields its signature names (other fields of `inputs`
    /// are ignored) and returns its outputs (with `reasoning` for chain of thought).
    ///
    /// A reply that cannot be parsed gives [`CoreError::Parse`]; with the chat adapter and
    /// [`RunSettings::json_fallback`] the call is first repeated once through the JSON adapter.
    pub async fn predict(&self, name: &str, inputs: &Example) -> Result<Example, CoreError> {
        let signature =
            self.program
                .signature(name)
                .ok_or_else(|| CoreError::UnknownPredictor {
                    name: name.to_string(),
                    known: self
                        .program
                        .signatures
                        .keys()
                        .cloned()
                        .collect::<Vec<_>>()
                        .join(", "),
                })?;
        let predictor =
            self.state
                .predictor(name)
                .ok_or_else(|| CoreError::MissingPredictorState {
                    name: name.to_string(),
                })?;
        let mut projected = Example::new();
        for field in &signature.inputs {
            match inputs.get(&field.name) {
                Some(value) => projected.insert(field.name.clone(), value.clone()),
                None => {
                    return Err(CoreError::MissingInput {
                        predictor: name.to_string(),
                        field: field.name.clone(),
                    })
                }
            }
        }
        let settings = &self.runtime.settings;
        let model = predictor
            .model
            .as_deref()
            .unwrap_or_else(|| self.runtime.lms.default_model());
        let lm = self.runtime.lms.resolve(model)?.as_ref();
        let structured = lm.supports_json_schema(model);
        let first = match settings.adapter {
            kind @ (AdapterKind::Chat | AdapterKind::Turns) => {
                let adapter: &dyn Adapter = if kind == AdapterKind::Turns {
                    &TurnsAdapter
                } else {
                    &ChatAdapter
                };
                self.call(
                    name,
                    adapter,
                    signature,
                    predictor,
                    projected.clone(),
                    model,
                    lm,
                )
                .await?
            }
            AdapterKind::Json => {
                let adapter = JsonAdapter::new(structured);
                return self
                    .call(name, &adapter, signature, predictor, projected, model, lm)
                    .await?;
            }
            AdapterKind::Completion => {
                return self
                    .call(
                        name,
                        &CompletionAdapter,
                        signature,
                        predictor,
                        projected,
                        model,
                        lm,
                    )
                    .await?;
            }
        };
        match first {
            Ok(outputs) => Ok(outputs),
            Err(error) if settings.json_fallback => {
                drop(error);
                let adapter = JsonAdapter::new(structured);
                self.call(name, &adapter, signature, predictor, projected, model, lm)
                    .await?
            }
            Err(error) => Err(error),
        }
    }

    /// One model call: render, send, record, parse. The outer error is a model failure; the inner
    /// one a reply that could not be parsed.
    #[allow(clippy::too_many_arguments)]
    async fn call(
        &self,
        name: &str,
        adapter: &dyn Adapter,
        signature: &Signature,
        predictor: &PredictorState,
        inputs: Example,
        model: &str,
        lm: &dyn Lm,
    ) -> Result<Result<Example, CoreError>, CoreError> {
        let Rendered {
            messages,
            response_format,
            stop,
        } = adapter.render(signature, predictor, &inputs);
        let request = self.request(model, messages, response_format, stop);
        let started = Instant::now();
        let response = lm.chat(&request).await;
        let latency = started.elapsed();
        let response: ChatResponse = match response {
            Ok(response) => response,
            Err(source) => {
                return Err(CoreError::Lm {
                    predictor: name.to_string(),
                    source,
                })
            }
        };
        let raw = response.text().to_string();
        let parsed = adapter.parse(signature, predictor.strategy, &raw);
        let (outputs, parse_error) = match &parsed {
            Ok(outputs) => (Some(outputs.clone()), None),
            Err(failure) => (None, Some(failure.message.clone())),
        };
        let step = TraceStep {
            predictor: name.to_string(),
            inputs,
            request,
            raw,
            outputs,
            parse_error,
            usage: response.usage,
            latency,
            cost_usd: response.cost_usd,
            cache_hit: response.cache_hit,
        };
        let result = match parsed {
            Ok(outputs) => Ok(outputs),
            Err(failure) => Err(CoreError::Parse {
                predictor: name.to_string(),
                message: failure.message,
                raw: step.raw.clone(),
            }),
        };
        self.lock_trace().steps.push(step);
        Ok(result)
    }

    fn request(
        &self,
        model: &str,
        messages: Vec<promptopt_lm::Message>,
        response_format: Option<promptopt_lm::ResponseFormat>,
        stop: Vec<String>,
    ) -> ChatRequest {
        let settings = &self.runtime.settings;
        let mut request = ChatRequest::new(model, messages);
        request.temperature = settings.temperature;
        request.max_tokens = settings.max_tokens;
        request.seed = settings.seed;
        request.response_format = response_format;
        request.stop = stop;
        request.use_cache = settings.use_cache;
        request
    }
}

#[cfg(test)]
mod tests;
