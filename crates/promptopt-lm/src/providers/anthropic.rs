//! Anthropic's Messages API.

use std::time::Duration;

use async_trait::async_trait;
use serde::{Deserialize, Serialize};

use super::{model_part, Settings};
use crate::http::{join_url, Endpoint};
use crate::{ChatRequest, ChatResponse, Choice, FinishReason, Lm, LmError, Role, ToolCall, Usage};

const DEFAULT_BASE_URL: &str = "https://api.anthropic.com";
const API_VERSION: &str = "2023-06-01";
/// The Messages API requires a token bound; this one is used when the request has none.
pub const DEFAULT_MAX_TOKENS: u32 = 1024;

/// A client of `POST {base}/v1/messages`.
///
/// System messages go to the top-level `system` field; the others become `user` and `assistant`
/// turns with text content blocks. The API generates one reply per call, so a request with
/// `n` > 1 makes `n` calls at once. The API has no seed and no JSON schema mode: both are left to
/// the prompt.
#[derive(Debug)]
pub struct AnthropicLm {
    endpoint: Endpoint,
}

impl AnthropicLm {
    pub(crate) fn new(settings: Settings) -> Result<Self, LmError> {
        let key = settings.require_key("anthropic")?;
        let base = settings
            .custom_base_url
            .as_deref()
            .unwrap_or(DEFAULT_BASE_URL);
        let headers = [
            ("x-api-key", key.expose().to_owned()),
            ("anthropic-version", API_VERSION.to_owned()),
        ];
        let endpoint = Endpoint::new(
            "anthropic",
            join_url(base, "v1/messages"),
            Some(key),
            &headers,
        )?;
        Ok(Self { endpoint })
    }

    async fn one(
        &self,
        body: Vec<u8>,
    ) -> Result<(Choice, Usage, Option<String>, Duration), LmError> {
        let reply = self.endpoint.post(None, body).await?;
        let wire: WireResponse =
            serde_json::from_slice(&reply.body).map_err(|e| self.endpoint.malformed(e))?;
        let content = wire
            .content
            .iter()
            .filter(|b| b.kind == "text")
            .filter_map(|b| b.text.as_deref())
            .collect::<String>();
        let tool_calls = wire
            .content
            .iter()
            .filter(|b| b.kind == "tool_use")
            .filter_map(|b| {
                Some(ToolCall {
                    name: b.name.clone()?,
                    arguments: b.input.clone().unwrap_or_else(|| serde_json::json!({})),
                })
            })
            .collect();
        let finish_reason = match wire.stop_reason.as_deref() {
            Some("end_turn" | "stop_sequence" | "tool_use") | None => FinishReason::Stop,
            Some("max_tokens") => FinishReason::Length,
            Some("refusal") => FinishReason::ContentFilter,
            Some(other) => FinishReason::Other(other.to_owned()),
        };
        let u = wire.usage.unwrap_or_default();
        let cached = u.cache_read_input_tokens.unwrap_or(0);
        let usage = Usage {
            prompt_tokens: u.input_tokens + cached + u.cache_creation_input_tokens.unwrap_or(0),
            completion_tokens: u.output_tokens,
            cached_tokens: cached,
        };
        Ok((
            Choice {
                content,
                finish_reason,
                tool_calls,
            },
            usage,
            wire.model,
            reply.latency,
        ))
    }
}

#[derive(Serialize)]
struct WireRequest<'a> {
    model: &'a str,
    max_tokens: u32,
    #[serde(skip_serializing_if = "Option::is_none")]
    system: Option<String>,
    messages: Vec<WireMessage<'a>>,
    #[serde(skip_serializing_if = "Option::is_none")]
    temperature: Option<f32>,
    #[serde(skip_serializing_if = "Option::is_none")]
    top_p: Option<f32>,
    #[serde(skip_serializing_if = "Option::is_none")]
    top_k: Option<u32>,
    #[serde(skip_serializing_if = "<[String]>::is_empty")]
    stop_sequences: &'a [String],
    /// Native function calling: `[{"name", "description", "input_schema"}]`.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    tools: Vec<serde_json::Value>,
}

#[derive(Serialize)]
struct WireMessage<'a> {
    role: &'static str,
    content: [TextBlock<'a>; 1],
}

#[derive(Serialize)]
struct TextBlock<'a> {
    #[serde(rename = "type")]
    kind: &'static str,
    text: &'a str,
}

#[derive(Deserialize)]
struct WireResponse {
    #[serde(default)]
    model: Option<String>,
    content: Vec<WireBlock>,
    #[serde(default)]
    stop_reason: Option<String>,
    #[serde(default)]
    usage: Option<WireUsage>,
}

#[derive(Deserialize)]
struct WireBlock {
    #[serde(rename = "type")]
    kind: String,
    #[serde(default)]
    text: Option<String>,
    /// A `tool_use` block's function.
    #[serde(default)]
    name: Option<String>,
    /// A `tool_use` block's arguments.
    #[serde(default)]
    input: Option<serde_json::Value>,
}

#[derive(Deserialize, Default)]
struct WireUsage {
    #[serde(default)]
    input_tokens: u64,
    #[serde(default)]
    output_tokens: u64,
    #[serde(default)]
    cache_creation_input_tokens: Option<u64>,
    #[serde(default)]
    cache_read_input_tokens: Option<u64>,
}

#[async_trait]
impl Lm for AnthropicLm {
    async fn chat(&self, request: &ChatRequest) -> Result<ChatResponse, LmError> {
        let system: Vec<&str> = request
            .messages
            .iter()
            .filter(|m| m.role == Role::System)
            .map(|m| m.content.as_str())
            .collect();
        let messages = request
            .messages
            .iter()
            .filter_map(|m| {
                let role = match m.role {
                    Role::System => return None,
                    Role::User => "user",
                    Role::Assistant => "assistant",
                };
                Some(WireMessage {
                    role,
                    content: [TextBlock {
                        kind: "text",
                        text: &m.content,
                    }],
                })
            })
            .collect();
        let wire = WireRequest {
            model: model_part(&request.model),
            max_tokens: request.max_tokens.unwrap_or(DEFAULT_MAX_TOKENS),
            system: (!system.is_empty()).then(|| system.join("\n\n")),
            messages,
            temperature: request.temperature,
            top_p: request.top_p,
            top_k: request.top_k,
            stop_sequences: &request.stop,
            tools: request
                .tools
                .iter()
                .map(|t| {
                    serde_json::json!({
                        "name": t.name,
                        "description": t.description,
                        "input_schema": t.parameters,
                    })
                })
                .collect(),
        };
        let body = serde_json::to_vec(&wire)
            .map_err(|e| LmError::InvalidRequest(format!("Could not encode the request: {e}")))?;
        let calls = (0..request.n.max(1)).map(|_| self.one(body.clone()));
        let replies = futures::future::try_join_all(calls).await?;
        let mut usage = Usage::default();
        let mut latency = Duration::ZERO;
        let mut model = None;
        let mut choices = Vec::with_capacity(replies.len());
        for (choice, call_usage, call_model, call_latency) in replies {
            usage += call_usage;
            latency = latency.max(call_latency);
            model = model.or(call_model);
            choices.push(choice);
        }
        Ok(ChatResponse {
            model: model.unwrap_or_else(|| request.model.clone()),
            choices,
            usage,
            latency,
            cost_usd: None,
            cache_hit: false,
            retries: 0,
        })
    }
}
