//! A minimal single-predictor program with a plain `field: value` line format.

use std::time::Instant;

use async_trait::async_trait;
use promptopt_core::{
    value_to_text, Example, Prediction, PredictorState, ProgramState, Signature, Strategy, Trace,
    TraceStep,
};
use promptopt_lm::{ChatRequest, Message};
use serde_json::Value;

use crate::{OptimizeError, PredictorInfo, ProgramRunner, TaskModel};

/// One predictor whose prompt lists each field as a `name: value` line.
///
/// The system message holds the instructions and the expected reply format; each demo is a
/// user turn (its inputs) followed by an assistant turn (its outputs); the last user turn holds
/// the example's inputs. Replies are parsed line by line; with a single output field, a reply
/// without any `name:` marker is taken whole. It needs nothing but a model, so it serves tests of
/// optimizers with a scripted model.
///
/// ```
/// use promptopt_core::{Example, Field, Signature};
/// use promptopt_optimize::{FieldProgram, ProgramRunner};
///
/// let program = FieldProgram::new("predict", Signature::new(vec![Field::text("text")], vec![Field::text("label")]));
/// assert_eq!(program.predictors()[0].name, "predict");
/// assert_eq!(FieldProgram::parse_reply(&program.signature().output_names(), "label: positive")
///     .ok().and_then(|e| e.text("label")), Some("positive".to_string()));
/// ```
#[derive(Debug, Clone)]
pub struct FieldProgram {
    name: String,
    signature: Signature,
}

impl FieldProgram {
    /// A program with one predictor called `name`.
    pub fn new(name: impl Into<String>, signature: Signature) -> Self {
        Self {
            name: name.into(),
            signature,
        }
    }

    /// The predictor's signature.
    pub fn signature(&self) -> &Signature {
        &self.signature
    }

    fn predictor<'a>(&self, state: &'a ProgramState) -> Result<&'a PredictorState, OptimizeError> {
        state.predictor(&self.name).ok_or_else(|| {
            OptimizeError::Program(format!("The state has no predictor `{}`", self.name))
        })
    }

    fn lines(example: &Example, names: &[String]) -> String {
        names
            .iter()
            .filter_map(|n| example.get(n).map(|v| format!("{n}: {}", value_to_text(v))))
            .collect::<Vec<_>>()
            .join("\n")
    }

    fn output_names(&self, strategy: Strategy) -> Vec<String> {
        let mut names = Vec::new();
        if strategy == Strategy::ChainOfThought {
            names.push("reasoning".to_string());
        }
        names.extend(self.signature.output_names());
        names
    }

    /// The request for one example.
    pub fn request(
        &self,
        task: &TaskModel,
        predictor: &PredictorState,
        example: &Example,
    ) -> ChatRequest {
        let inputs = self.signature.input_names();
        let outputs = self.output_names(predictor.strategy);
        let format = outputs
            .iter()
            .map(|n| format!("{n}: ..."))
            .collect::<Vec<_>>()
            .join("\n");
        let mut messages = vec![Message::system(format!(
            "{}\n\nReply with one line per field:\n{format}",
            predictor.instructions
        ))];
        for demo in &predictor.demos {
            messages.push(Message::user(Self::lines(demo, &inputs)));
            messages.push(Message::assistant(Self::lines(demo, &outputs)));
        }
        messages.push(Message::user(Self::lines(example, &inputs)));
        let model = predictor
            .model
            .clone()
            .unwrap_or_else(|| task.model.clone());
        let mut request = ChatRequest::new(model, messages);
        request.temperature = task.temperature;
        request.max_tokens = task.max_tokens;
        request.seed = task.seed;
        request
    }

    /// Parses a reply into the named fields.
    pub fn parse_reply(names: &[String], reply: &str) -> Result<Example, String> {
        let mut out = Example::new();
        let mut current: Option<String> = None;
        for line in reply.lines() {
            let marker = line.split_once(':').and_then(|(k, v)| {
                let k = k.trim().to_lowercase();
                names
                    .iter()
                    .find(|n| **n == k)
                    .map(|n| (n.clone(), v.trim()))
            });
            match marker {
                Some((name, value)) => {
                    out.insert(name.clone(), Value::String(value.to_string()));
                    current = Some(name);
                }
                None => {
                    if let Some(name) = &current {
                        let previous = out.text(name).unwrap_or_default();
                        out.insert(name.clone(), Value::String(format!("{previous}\n{line}")));
                    }
                }
            }
        }
        if out.is_empty() && names.len() == 1 && !reply.trim().is_empty() {
            out.insert(names[0].clone(), Value::String(reply.trim().to_string()));
        }
        match names.iter().find(|n| !out.contains(n)) {
            Some(missing) => Err(format!("The reply has no `{missing}` field")),
            None => Ok(out),
        }
    }
}

#[async_trait]
impl ProgramRunner for FieldProgram {
    fn predictors(&self) -> Vec<PredictorInfo> {
        vec![PredictorInfo {
            name: self.name.clone(),
            signature: self.signature.clone(),
        }]
    }

    fn initial_state(&self) -> ProgramState {
        ProgramState::single(
            self.name.clone(),
            PredictorState::new(self.signature.instructions.clone()),
        )
    }

    async fn run(
        &self,
        task: &TaskModel,
        state: &ProgramState,
        example: &Example,
    ) -> Result<(Prediction, Trace), OptimizeError> {
        let predictor = self.predictor(state)?;
        let request = self.request(task, predictor, example);
        let started = Instant::now();
        let response = task.lm.chat(&request).await?;
        let latency = if response.latency.is_zero() {
            started.elapsed()
        } else {
            response.latency
        };
        let names = self.output_names(predictor.strategy);
        let parsed = Self::parse_reply(&names, response.text());
        let (outputs, parse_error) = match parsed {
            Ok(o) => (Some(o), None),
            Err(e) => (None, Some(e)),
        };
        let step = TraceStep {
            predictor: self.name.clone(),
            inputs: example.project(&self.signature.input_names()),
            request,
            raw: response.text().to_string(),
            outputs: outputs.clone(),
            parse_error,
            usage: response.usage,
            latency,
            cost_usd: response.cost_usd,
            cache_hit: response.cache_hit,
        };
        let prediction = Prediction {
            outputs: outputs.unwrap_or_default(),
        };
        Ok((prediction, Trace { steps: vec![step] }))
    }

    fn render(
        &self,
        task: &TaskModel,
        state: &ProgramState,
        example: &Example,
    ) -> Result<Vec<ChatRequest>, OptimizeError> {
        let predictor = self.predictor(state)?;
        Ok(vec![self.request(task, predictor, example)])
    }
}
