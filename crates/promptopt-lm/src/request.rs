//! Chat requests.

use serde::{Deserialize, Serialize};

/// Who wrote a message.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Role {
    /// Instructions for the model.
    System,
    /// The user's turn.
    User,
    /// The model's turn.
    Assistant,
}

/// One chat message.
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct Message {
    /// Who wrote it.
    pub role: Role,
    /// Its text.
    pub content: String,
}

impl Message {
    /// A system message.
    pub fn system(content: impl Into<String>) -> Self {
        Self {
            role: Role::System,
            content: content.into(),
        }
    }

    /// A user message.
    pub fn user(content: impl Into<String>) -> Self {
        Self {
            role: Role::User,
            content: content.into(),
        }
    }

    /// An assistant message.
    pub fn assistant(content: impl Into<String>) -> Self {
        Self {
            role: Role::Assistant,
            content: content.into(),
        }
    }
}

/// The shape the reply must take.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "type", rename_all = "snake_case")]
pub enum ResponseFormat {
    /// Free text (the default).
    Text,
    /// Any JSON object.
    JsonObject,
    /// JSON that follows a schema.
    JsonSchema {
        /// A name for the schema, as OpenAI requires.
        name: String,
        /// The JSON schema.
        schema: serde_json::Value,
    },
    /// Exactly one of these strings, nothing before or after it.
    ///
    /// The embedded engine (and so `promptopt serve-lm`) decodes only tokens that keep the reply
    /// a prefix of one of the strings; OpenAI-compatible servers other than OpenAI's own get it as
    /// vLLM's `guided_choice`; the other providers ignore it, so the reply is still parsed as text.
    Choice {
        /// The allowed replies.
        choices: Vec<String>,
    },
}

/// A request for a chat completion.
///
/// The model is named `provider/model` (`openai/gpt-4o-mini`, `anthropic/claude-3-5-haiku-latest`,
/// `gemini/gemini-2.0-flash`, `local/smollm2-135m`). Everything that changes the reply is part of
/// the serialized request, which is why the cache keys on it; [`ChatRequest::use_cache`] is not.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ChatRequest {
    /// `provider/model`.
    pub model: String,
    /// The conversation.
    pub messages: Vec<Message>,
    /// Sampling temperature; `None` leaves the provider's default.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub temperature: Option<f32>,
    /// Nucleus sampling; `None` leaves the provider's default.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub top_p: Option<f32>,
    /// Top-k sampling (local engines and Gemini); `None` leaves the default.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub top_k: Option<u32>,
    /// Upper bound on generated tokens.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_tokens: Option<u32>,
    /// Strings that end generation.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub stop: Vec<String>,
    /// Seed for sampling.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub seed: Option<u64>,
    /// Number of choices to generate.
    #[serde(default = "one", skip_serializing_if = "is_one")]
    pub n: u32,
    /// Structured output.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub response_format: Option<ResponseFormat>,
    /// Distinguishes otherwise identical requests that must not share a cache entry
    /// (several proposals at the same temperature). Never sent to the provider.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub rollout_id: Option<u64>,
    /// Per-call cache opt-out. Not part of the cache key.
    #[serde(skip, default = "yes")]
    pub use_cache: bool,
    /// Functions the model may call natively (OpenAI, Anthropic and Gemini); a reply that calls
    /// one carries it in [`Choice::tool_calls`](crate::Choice::tool_calls).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub tools: Vec<ToolDefinition>,
}

/// A function offered to the model for native function calling.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ToolDefinition {
    /// Its name.
    pub name: String,
    /// What it does.
    pub description: String,
    /// The JSON schema of its arguments (an object).
    pub parameters: serde_json::Value,
}

fn one() -> u32 {
    1
}

fn is_one(n: &u32) -> bool {
    *n == 1
}

fn yes() -> bool {
    true
}

impl ChatRequest {
    /// A request with default settings.
    pub fn new(model: impl Into<String>, messages: Vec<Message>) -> Self {
        Self {
            model: model.into(),
            messages,
            temperature: None,
            top_p: None,
            top_k: None,
            max_tokens: None,
            stop: Vec::new(),
            seed: None,
            n: 1,
            response_format: None,
            rollout_id: None,
            use_cache: true,
            tools: Vec::new(),
        }
    }

    /// Sets the temperature.
    pub fn with_temperature(mut self, temperature: f32) -> Self {
        self.temperature = Some(temperature);
        self
    }

    /// Sets the bound on generated tokens.
    pub fn with_max_tokens(mut self, max_tokens: u32) -> Self {
        self.max_tokens = Some(max_tokens);
        self
    }

    /// Sets the stop strings.
    pub fn with_stop(mut self, stop: Vec<String>) -> Self {
        self.stop = stop;
        self
    }

    /// Sets the seed.
    pub fn with_seed(mut self, seed: u64) -> Self {
        self.seed = Some(seed);
        self
    }

    /// Builder: functions the model may call natively.
    pub fn with_tools(mut self, tools: Vec<ToolDefinition>) -> Self {
        self.tools = tools;
        self
    }

    /// Turns the cache off for this call.
    pub fn without_cache(mut self) -> Self {
        self.use_cache = false;
        self
    }

    /// The provider part of `provider/model`, if there is one.
    pub fn provider(&self) -> Option<&str> {
        split_model(&self.model).0
    }

    /// The model part of `provider/model` (the whole name when there is no provider).
    pub fn model_name(&self) -> &str {
        split_model(&self.model).1
    }
}

/// Splits `provider/model` at its first `/`: the provider, if there is one, and the model part
/// (the whole name when there is no provider).
pub(crate) fn split_model(model: &str) -> (Option<&str>, &str) {
    model
        .split_once('/')
        .map_or((None, model), |(provider, name)| (Some(provider), name))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cache_opt_out_is_not_serialized() {
        let a = ChatRequest::new("openai/x", vec![Message::user("hi")]);
        let b = a.clone().without_cache();
        assert_eq!(
            serde_json::to_string(&a).ok(),
            serde_json::to_string(&b).ok()
        );
        assert!(!b.use_cache);
    }

    #[test]
    fn provider_and_model_are_split_once() {
        let r = ChatRequest::new("openai/org/model", vec![]);
        assert_eq!(r.provider(), Some("openai"));
        assert_eq!(r.model_name(), "org/model");
    }
}
