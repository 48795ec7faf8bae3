//! Chat responses.

use std::time::Duration;

use serde::{Deserialize, Serialize};

/// Why generation stopped.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum FinishReason {
    /// A natural end or a stop string.
    Stop,
    /// The token limit was reached.
    Length,
    /// The provider filtered the content.
    ContentFilter,
    /// Anything else, as the provider named it.
    Other(String),
}

/// One generated reply.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Choice {
    /// The reply text.
    pub content: String,
    /// Why generation stopped.
    pub finish_reason: FinishReason,
    /// The functions the model called natively (see [`ChatRequest::tools`](crate::ChatRequest)).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub tool_calls: Vec<ToolCall>,
}

/// A native function call in a reply.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ToolCall {
    /// The function.
    pub name: String,
    /// Its arguments (a JSON object; a string when the model's arguments were not JSON).
    pub arguments: serde_json::Value,
}

impl Choice {
    /// A reply of `content` that stopped for `finish_reason` and calls no function.
    pub fn text(content: impl Into<String>, finish_reason: FinishReason) -> Self {
        Self {
            content: content.into(),
            finish_reason,
            tool_calls: Vec::new(),
        }
    }
}

/// Token counts of one call.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Usage {
    /// Tokens in the prompt, cached ones included.
    pub prompt_tokens: u64,
    /// Tokens generated.
    pub completion_tokens: u64,
    /// Prompt tokens served from the provider's (or engine's) prompt cache.
    pub cached_tokens: u64,
}

impl Usage {
    /// Prompt plus completion tokens.
    pub fn total(&self) -> u64 {
        self.prompt_tokens + self.completion_tokens
    }
}

impl std::ops::AddAssign for Usage {
    fn add_assign(&mut self, other: Self) {
        self.prompt_tokens += other.prompt_tokens;
        self.completion_tokens += other.completion_tokens;
        self.cached_tokens += other.cached_tokens;
    }
}

/// The answer to a [`crate::ChatRequest`].
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ChatResponse {
    /// The model that answered, as the provider named it.
    pub model: String,
    /// The replies (one unless `n` > 1).
    pub choices: Vec<Choice>,
    /// Token counts.
    pub usage: Usage,
    /// Wall time of the call.
    #[serde(with = "duration_ms")]
    pub latency: Duration,
    /// Cost in USD; `None` when the model's price is unknown (never reported as 0).
    pub cost_usd: Option<f64>,
    /// Whether the reply came from promptopt's own cache.
    #[serde(default)]
    pub cache_hit: bool,
    /// Failed attempts the retry layer made before this reply.
    #[serde(default, skip_serializing_if = "is_zero")]
    pub retries: u32,
}

fn is_zero(n: &u32) -> bool {
    *n == 0
}

impl ChatResponse {
    /// The first reply's text, or `""` when there is none.
    pub fn text(&self) -> &str {
        self.choices.first().map_or("", |c| c.content.as_str())
    }
}

mod duration_ms {
    use std::time::Duration;

    use serde::{Deserialize, Deserializer, Serializer};

    pub fn serialize<S: Serializer>(d: &Duration, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_f64(d.as_secs_f64() * 1000.0)
    }

    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Duration, D::Error> {
        let ms = f64::deserialize(d)?;
        Ok(Duration::from_secs_f64((ms / 1000.0).max(0.0)))
    }
}
