//! A scripted language model for deterministic tests of logic built on [`Lm`].

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;

use crate::{ChatRequest, ChatResponse, Choice, FinishReason, Lm, LmError, ToolCall, Usage};

type Responder = dyn Fn(&ChatRequest) -> Result<(String, Vec<ToolCall>), LmError> + Send + Sync;

/// A language model whose replies come from a function of the request.
///
/// It is the test double for code that calls models: the reply is computed from the request, so
/// tests stay deterministic under any concurrency. Usage counts whitespace-separated words.
///
/// ```
/// # tokio_test_block(async {
/// use promptopt_lm::{ChatRequest, Lm, Message, ScriptedLm};
///
/// let lm = ScriptedLm::new(|request| {
///     let last = request.messages.last().map(|m| m.content.as_str()).unwrap_or("");
///     Ok(if last.contains("loved") { "positive".into() } else { "negative".into() })
/// });
/// let reply = lm.chat(&ChatRequest::new("scripted/test", vec![Message::user("I loved it")])).await?;
/// assert_eq!(reply.text(), "positive");
/// assert_eq!(lm.calls(), 1);
/// # Ok::<(), promptopt_lm::LmError>(())
/// # });
/// # fn tokio_test_block<F: std::future::Future<Output = Result<(), promptopt_lm::LmError>>>(f: F) {
/// #     tokio::runtime::Builder::new_current_thread().build().unwrap().block_on(f).unwrap();
/// # }
/// ```
#[derive(Clone)]
pub struct ScriptedLm {
    responder: Arc<Responder>,
    calls: Arc<AtomicU64>,
    cost_per_call: Option<f64>,
    context_tokens: Option<u64>,
}

impl std::fmt::Debug for ScriptedLm {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ScriptedLm")
            .field("calls", &self.calls())
            .finish()
    }
}

impl ScriptedLm {
    /// A model that answers each request with `responder(request)`.
    pub fn new(
        responder: impl Fn(&ChatRequest) -> Result<String, LmError> + Send + Sync + 'static,
    ) -> Self {
        Self::calling(move |request| responder(request).map(|text| (text, Vec::new())))
    }

    /// A model that answers each request with text and native function calls (see
    /// [`ChatRequest::tools`]).
    pub fn calling(
        responder: impl Fn(&ChatRequest) -> Result<(String, Vec<ToolCall>), LmError>
            + Send
            + Sync
            + 'static,
    ) -> Self {
        Self {
            responder: Arc::new(responder),
            calls: Arc::new(AtomicU64::new(0)),
            cost_per_call: None,
            context_tokens: None,
        }
    }

    /// A model that always answers `reply`.
    pub fn constant(reply: impl Into<String>) -> Self {
        let reply = reply.into();
        Self::new(move |_| Ok(reply.clone()))
    }

    /// Reports `cost` USD for every call (the default reports an unknown cost).
    pub fn with_cost_per_call(mut self, cost: f64) -> Self {
        self.cost_per_call = Some(cost);
        self
    }

    /// Holds `tokens` words per request, as an engine's context holds tokens: a longer prompt is
    /// refused with [`LmError::ContextOverflow`], and [`Lm::context_tokens`] reports the size.
    pub fn with_context_tokens(mut self, tokens: u64) -> Self {
        self.context_tokens = Some(tokens);
        self
    }

    /// How many calls were made.
    pub fn calls(&self) -> u64 {
        self.calls.load(Ordering::Relaxed)
    }
}

fn words(text: &str) -> u64 {
    text.split_whitespace().count() as u64
}

#[async_trait]
impl Lm for ScriptedLm {
    async fn chat(&self, request: &ChatRequest) -> Result<ChatResponse, LmError> {
        self.calls.fetch_add(1, Ordering::Relaxed);
        let prompt_tokens = request.messages.iter().map(|m| words(&m.content)).sum();
        if let Some(context_tokens) = self.context_tokens {
            if prompt_tokens > context_tokens {
                return Err(LmError::ContextOverflow {
                    prompt_tokens,
                    context_tokens,
                });
            }
        }
        let (content, tool_calls) = (self.responder)(request)?;
        let (content, finish_reason) = match request.max_tokens {
            Some(max) if words(&content) > u64::from(max) => {
                let cut: Vec<&str> = content.split_whitespace().take(max as usize).collect();
                (cut.join(" "), FinishReason::Length)
            }
            _ => (content, FinishReason::Stop),
        };
        let usage = Usage {
            prompt_tokens,
            completion_tokens: words(&content),
            cached_tokens: 0,
        };
        let choices = (0..request.n.max(1))
            .map(|_| Choice {
                content: content.clone(),
                finish_reason: finish_reason.clone(),
                tool_calls: tool_calls.clone(),
            })
            .collect();
        Ok(ChatResponse {
            model: request.model.clone(),
            choices,
            usage,
            latency: Duration::ZERO,
            cost_usd: self.cost_per_call,
            cache_hit: false,
            retries: 0,
        })
    }

    fn context_tokens(&self, _model: &str) -> Option<u64> {
        self.context_tokens
    }
}
