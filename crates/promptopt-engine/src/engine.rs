//! The engine handle and its [`Lm`] implementation.

use std::path::PathBuf;
use std::sync::mpsc::Sender;
use std::sync::Arc;
use std::time::Instant;

use async_trait::async_trait;
use promptopt_lm::{ChatRequest, ChatResponse, Choice, Lm, LmError, ResponseFormat, Usage};
use serde::{Deserialize, Serialize};
use tokio::sync::oneshot;

use crate::choice::ChoiceConstraint;
use crate::resolve::{resolve_model, short_name};
use crate::stats::Stats;
use crate::template::PromptRenderer;
use crate::worker::{self, Job, JobOutput, Sampling};
use crate::{EngineConfig, EngineError, EngineStats};

/// What was loaded.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ModelInfo {
    /// The model name as configured (`local/smollm2-135m`).
    pub name: String,
    /// The GGUF file.
    pub path: PathBuf,
    /// The model's own name from its metadata.
    pub description: String,
    /// Number of parameters.
    pub parameters: u64,
    /// The context length the model was trained with.
    pub ctx_train: u32,
    /// Whether prompts go through the GGUF's chat template (else plain completion).
    pub has_chat_template: bool,
    /// Sequence slots.
    pub slots: u32,
    /// Tokens per slot.
    pub ctx_per_slot: u32,
    /// CPU threads.
    pub threads: u32,
}

struct Inner {
    jobs: Sender<Job>,
    renderer: PromptRenderer,
    info: ModelInfo,
    config: EngineConfig,
    stats: Arc<Stats>,
}

/// A loaded model, answering chat requests on its own thread.
///
/// Cloning is cheap: clones share the model, the thread and the KV cache. The thread ends when
/// the last clone is dropped and the requests in flight are answered.
#[derive(Clone)]
pub struct Engine {
    inner: Arc<Inner>,
}

impl std::fmt::Debug for Engine {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Engine")
            .field("info", &self.inner.info)
            .finish()
    }
}

impl Engine {
    /// Loads the model and starts the engine thread.
    ///
    /// This blocks while the model loads (well under a second for the small default model); in
    /// async code use [`Engine::load_async`].
    pub fn load(config: EngineConfig) -> Result<Self, EngineError> {
        config.validate()?;
        let path = resolve_model(&config.model)?;
        let stats = Arc::new(Stats::default());
        let (jobs, receiver) = std::sync::mpsc::channel();
        let loaded = worker::spawn(config, path, receiver, Arc::clone(&stats))?;
        Ok(Self {
            inner: Arc::new(Inner {
                jobs,
                renderer: loaded.renderer,
                info: loaded.info,
                config: loaded.config,
                stats,
            }),
        })
    }

    /// [`Engine::load`] on a blocking thread of the tokio runtime.
    pub async fn load_async(config: EngineConfig) -> Result<Self, EngineError> {
        tokio::task::spawn_blocking(move || Self::load(config))
            .await
            .map_err(|error| EngineError::Stopped(error.to_string()))?
    }

    /// The model name requests use (`local/smollm2-135m`).
    pub fn model_name(&self) -> &str {
        &self.inner.info.name
    }

    /// What was loaded.
    pub fn info(&self) -> &ModelInfo {
        &self.inner.info
    }

    /// The settings the engine runs with (the slots and batch after any cap of
    /// [`EngineConfig::gpu_memory_fraction`]).
    pub fn config(&self) -> &EngineConfig {
        &self.inner.config
    }

    /// Counters since the engine was loaded.
    pub fn stats(&self) -> EngineStats {
        self.inner.stats.snapshot()
    }

    /// Whether `model` names the loaded model (`local/<name>`, or `<name>` alone).
    pub fn serves(&self, model: &str) -> bool {
        short_name(model) == short_name(&self.inner.info.name)
    }
}

/// The sampling for choice `index` of a request.
fn sampling(request: &ChatRequest, index: u32) -> Sampling {
    match request.temperature {
        None => Sampling::Greedy,
        Some(t) if t <= 0.0 => Sampling::Greedy,
        Some(temperature) => {
            let base = request.seed.unwrap_or(0)
                ^ request
                    .rollout_id
                    .unwrap_or(0)
                    .wrapping_mul(0x9E37_79B9_7F4A_7C15);
            let seed = base.wrapping_add(u64::from(index));
            Sampling::Random {
                temperature,
                top_p: request.top_p,
                top_k: request.top_k,
                seed: (seed ^ (seed >> 32)) as u32,
            }
        }
    }
}

#[async_trait]
impl Lm for Engine {
    /// Answers a request for the loaded model.
    ///
    /// Temperature 0 or unset decodes greedily; otherwise tokens are sampled (top-k, top-p,
    /// temperature) from a generator seeded by `seed` (default 0) mixed with `rollout_id`.
    /// `n > 1` asks for that many replies with consecutive seeds; they are decoded together and
    /// share the prompt's KV cache. A [`ResponseFormat::Choice`] is enforced: only tokens that keep
    /// the reply a prefix of one of the choices are decoded, and the reply ends at a whole choice.
    /// The JSON formats are not enforced.
    async fn chat(&self, request: &ChatRequest) -> Result<ChatResponse, LmError> {
        let started = Instant::now();
        if !self.serves(&request.model) {
            return Err(LmError::InvalidRequest(format!(
                "This engine serves `{}`, not `{}`",
                self.inner.info.name, request.model
            )));
        }
        if request.messages.is_empty() {
            return Err(LmError::InvalidRequest("`messages` is empty".to_string()));
        }
        if request.n == 0 {
            return Err(LmError::InvalidRequest(
                "`n` must be at least 1".to_string(),
            ));
        }
        let prompt = self.inner.renderer.render(&request.messages)?;
        let max_tokens = request
            .max_tokens
            .unwrap_or(self.inner.config.default_max_tokens);
        if max_tokens == 0 {
            return Err(LmError::InvalidRequest(
                "`max_tokens` must be at least 1".to_string(),
            ));
        }
        let choices = match &request.response_format {
            Some(ResponseFormat::Choice { choices }) => Some(Arc::new(
                ChoiceConstraint::new(choices).ok_or_else(|| {
                    LmError::InvalidRequest(
                        "`choices` needs at least one non-empty string".to_string(),
                    )
                })?,
            )),
            _ => None,
        };
        let mut stop = request.stop.clone();
        stop.extend(prompt.turn_stops.iter().cloned());
        // All choices are queued before any is awaited, so the engine decodes them together.
        let mut pending = Vec::with_capacity(request.n as usize);
        for index in 0..request.n {
            let (reply, rx) = oneshot::channel();
            let job = Job {
                prompt: prompt.clone(),
                max_tokens,
                stop: stop.clone(),
                sampling: sampling(request, index),
                choices: choices.clone(),
                reply,
            };
            self.inner
                .jobs
                .send(job)
                .map_err(|_| LmError::Engine("The engine thread has stopped".to_string()))?;
            pending.push(rx);
        }
        let mut outputs: Vec<JobOutput> = Vec::with_capacity(pending.len());
        for rx in pending {
            let output = rx.await.map_err(|_| {
                LmError::Engine("The engine thread stopped before answering".to_string())
            })??;
            outputs.push(output);
        }
        let mut usage = Usage::default();
        let mut choices = Vec::with_capacity(outputs.len());
        for (index, output) in outputs.into_iter().enumerate() {
            if index == 0 {
                usage.prompt_tokens = output.prompt_tokens;
                usage.cached_tokens = output.cached_tokens;
            }
            usage.completion_tokens += output.completion_tokens;
            choices.push(Choice {
                content: output.text,
                finish_reason: output.finish_reason,
                tool_calls: Vec::new(),
            });
        }
        Ok(ChatResponse {
            model: self.inner.info.name.clone(),
            choices,
            usage,
            latency: started.elapsed(),
            cost_usd: Some(0.0),
            cache_hit: false,
            retries: 0,
        })
    }

    /// The tokens one sequence holds (prompt and reply), for the model this engine serves.
    fn context_tokens(&self, model: &str) -> Option<u64> {
        self.serves(model)
            .then_some(u64::from(self.inner.info.ctx_per_slot))
    }
}

#[cfg(test)]
mod tests {
    use promptopt_lm::Message;

    use super::*;

    #[test]
    fn temperature_zero_or_unset_is_greedy_and_seeds_differ_per_choice() {
        let request = ChatRequest::new("local/x", vec![Message::user("hi")]);
        assert_eq!(sampling(&request, 0), Sampling::Greedy);
        assert_eq!(
            sampling(&request.clone().with_temperature(0.0), 1),
            Sampling::Greedy
        );
        let warm = request.with_temperature(0.7).with_seed(5);
        assert_ne!(sampling(&warm, 0), sampling(&warm, 1));
        assert_eq!(sampling(&warm, 1), sampling(&warm, 1));
    }
}
