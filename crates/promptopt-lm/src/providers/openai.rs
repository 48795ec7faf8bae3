//! OpenAI Chat Completions and any OpenAI-compatible server.

use async_trait::async_trait;
use serde::{Deserialize, Serialize};

use super::{model_part, Settings};
use crate::http::{join_url, Endpoint};
use crate::{
    ChatRequest, ChatResponse, Choice, FinishReason, Lm, LmError, Message, ResponseFormat,
    ToolCall, Usage,
};

const DEFAULT_BASE_URL: &str = "https://api.openai.com/v1";

/// A client of `POST {base}/chat/completions`.
///
/// With no base URL it talks to OpenAI and needs `OPENAI_API_KEY`; with a base URL (vLLM,
/// Ollama, llama.cpp's server, `promptopt serve-lm`) a key is sent only if one is set. Against
/// OpenAI itself the token bound is sent as `max_completion_tokens`; other servers get the
/// widely supported `max_tokens` and also `top_k`.
#[derive(Debug)]
pub struct OpenAiLm {
    endpoint: Endpoint,
    official: bool,
}

impl OpenAiLm {
    pub(crate) fn new(settings: Settings) -> Result<Self, LmError> {
        let official = settings.custom_base_url.is_none();
        let key = if official {
            Some(settings.require_key("openai")?)
        } else {
            settings.key.clone()
        };
        let base = settings
            .custom_base_url
            .as_deref()
            .unwrap_or(DEFAULT_BASE_URL);
        let headers: Vec<(&'static str, String)> = key
            .iter()
            .map(|k| ("authorization", format!("Bearer {}", k.expose())))
            .collect();
        let endpoint = Endpoint::new("openai", join_url(base, "chat/completions"), key, &headers)?;
        Ok(Self { endpoint, official })
    }
}

#[derive(Serialize)]
struct WireRequest<'a> {
    model: &'a str,
    messages: &'a [Message],
    #[serde(skip_serializing_if = "Option::is_none")]
    temperature: Option<f32>,
    #[serde(skip_serializing_if = "Option::is_none")]
    top_p: Option<f32>,
    #[serde(skip_serializing_if = "Option::is_none")]
    top_k: Option<u32>,
    #[serde(skip_serializing_if = "Option::is_none")]
    max_tokens: Option<u32>,
    #[serde(skip_serializing_if = "Option::is_none")]
    max_completion_tokens: Option<u32>,
    #[serde(skip_serializing_if = "<[String]>::is_empty")]
    stop: &'a [String],
    #[serde(skip_serializing_if = "Option::is_none")]
    seed: Option<u64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    n: Option<u32>,
    #[serde(skip_serializing_if = "Option::is_none")]
    response_format: Option<serde_json::Value>,
    #[serde(skip_serializing_if = "Option::is_none")]
    guided_choice: Option<&'a [String]>,
    /// Native function calling: `[{"type": "function", "function": {...}}]`.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    tools: Vec<serde_json::Value>,
}

#[derive(Deserialize)]
struct WireResponse {
    #[serde(default)]
    model: Option<String>,
    #[serde(default)]
    choices: Vec<WireChoice>,
    #[serde(default)]
    usage: Option<WireUsage>,
}

#[derive(Deserialize)]
struct WireChoice {
    #[serde(default)]
    message: Option<WireMessage>,
    #[serde(default)]
    finish_reason: Option<String>,
}

#[derive(Deserialize)]
struct WireMessage {
    #[serde(default)]
    content: Option<String>,
    #[serde(default)]
    refusal: Option<String>,
    #[serde(default)]
    tool_calls: Vec<WireToolCall>,
}

#[derive(Deserialize)]
struct WireToolCall {
    function: WireFunction,
}

#[derive(Deserialize)]
struct WireFunction {
    name: String,
    /// JSON text.
    #[serde(default)]
    arguments: String,
}

impl WireToolCall {
    fn into_call(self) -> ToolCall {
        let text = self.function.arguments;
        ToolCall {
            name: self.function.name,
            arguments: if text.trim().is_empty() {
                serde_json::json!({})
            } else {
                serde_json::from_str(&text).unwrap_or(serde_json::Value::String(text))
            },
        }
    }
}

#[derive(Deserialize)]
struct WireUsage {
    #[serde(default)]
    prompt_tokens: u64,
    #[serde(default)]
    completion_tokens: u64,
    #[serde(default)]
    prompt_tokens_details: Option<WireTokenDetails>,
}

#[derive(Deserialize)]
struct WireTokenDetails {
    #[serde(default)]
    cached_tokens: Option<u64>,
}

fn response_format(format: &ResponseFormat) -> Option<serde_json::Value> {
    match format {
        ResponseFormat::Text | ResponseFormat::Choice { .. } => None,
        ResponseFormat::JsonObject => Some(serde_json::json!({"type": "json_object"})),
        ResponseFormat::JsonSchema { name, schema } => Some(serde_json::json!({
            "type": "json_schema",
            "json_schema": {"name": name, "schema": schema},
        })),
    }
}

/// The labels to send as `guided_choice`: only to servers other than OpenAI's own.
fn guided_choice(format: Option<&ResponseFormat>, official: bool) -> Option<&[String]> {
    match format {
        Some(ResponseFormat::Choice { choices }) if !official => Some(choices),
        _ => None,
    }
}

/// Whether OpenAI's own API takes a `json_schema` response format for `model`: every model
/// except the families released before structured outputs (GPT-3.5, GPT-4 and GPT-4 Turbo, the
/// first GPT-4o snapshot, and the o1 previews), so that newer models need no update here.
fn takes_json_schema(model: &str) -> bool {
    const OLDER: &[&str] = &[
        "gpt-3.5",
        "gpt-4-",
        "gpt-4o-2024-05-13",
        "o1-preview",
        "o1-mini",
    ];
    model != "gpt-4" && !OLDER.iter().any(|prefix| model.starts_with(prefix))
}

pub(crate) fn finish_reason(reason: Option<&str>) -> FinishReason {
    match reason {
        Some("stop") | None => FinishReason::Stop,
        Some("length") => FinishReason::Length,
        Some("content_filter") => FinishReason::ContentFilter,
        Some(other) => FinishReason::Other(other.to_owned()),
    }
}

#[async_trait]
impl Lm for OpenAiLm {
    async fn chat(&self, request: &ChatRequest) -> Result<ChatResponse, LmError> {
        let wire = WireRequest {
            model: model_part(&request.model),
            messages: &request.messages,
            temperature: request.temperature,
            top_p: request.top_p,
            top_k: request.top_k.filter(|_| !self.official),
            max_tokens: request.max_tokens.filter(|_| !self.official),
            max_completion_tokens: request.max_tokens.filter(|_| self.official),
            stop: &request.stop,
            seed: request.seed,
            n: (request.n != 1).then_some(request.n),
            response_format: request.response_format.as_ref().and_then(response_format),
            guided_choice: guided_choice(request.response_format.as_ref(), self.official),
            tools: request
                .tools
                .iter()
                .map(|t| {
                    serde_json::json!({
                        "type": "function",
                        "function": {
                            "name": t.name,
                            "description": t.description,
                            "parameters": t.parameters,
                        },
                    })
                })
                .collect(),
        };
        let body = serde_json::to_vec(&wire)
            .map_err(|e| LmError::InvalidRequest(format!("Could not encode the request: {e}")))?;
        let reply = self.endpoint.post(None, body).await?;
        let wire: WireResponse =
            serde_json::from_slice(&reply.body).map_err(|e| self.endpoint.malformed(e))?;
        if wire.choices.is_empty() {
            return Err(self.endpoint.malformed("the reply has no `choices`"));
        }
        let choices = wire
            .choices
            .into_iter()
            .map(|c| {
                let (content, refusal, calls) = c.message.map_or((None, None, Vec::new()), |m| {
                    (m.content, m.refusal, m.tool_calls)
                });
                let reason = match c.finish_reason.as_deref() {
                    Some("tool_calls" | "function_call") => FinishReason::Stop,
                    other => finish_reason(other),
                };
                let tool_calls = calls.into_iter().map(WireToolCall::into_call).collect();
                match (content, refusal) {
                    (Some(content), _) => Choice {
                        content,
                        finish_reason: reason,
                        tool_calls,
                    },
                    (None, Some(refusal)) => Choice {
                        content: refusal,
                        finish_reason: FinishReason::ContentFilter,
                        tool_calls,
                    },
                    (None, None) => Choice {
                        content: String::new(),
                        finish_reason: reason,
                        tool_calls,
                    },
                }
            })
            .collect();
        let usage = wire.usage.map_or_else(Usage::default, |u| Usage {
            prompt_tokens: u.prompt_tokens,
            completion_tokens: u.completion_tokens,
            cached_tokens: u
                .prompt_tokens_details
                .and_then(|d| d.cached_tokens)
                .unwrap_or(0),
        });
        Ok(ChatResponse {
            model: wire.model.unwrap_or_else(|| request.model.clone()),
            choices,
            usage,
            latency: reply.latency,
            cost_usd: None,
            cache_hit: false,
            retries: 0,
        })
    }

    /// Other servers are trusted to take a schema (vLLM, llama.cpp's server and Ollama do; one
    /// that ignores it still gets the field descriptions in the prompt). OpenAI's own API rejects
    /// it for the models that predate structured outputs.
    fn supports_json_schema(&self, model: &str) -> bool {
        !self.official || takes_json_schema(model_part(model))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_older_openai_models_refuse_a_schema() {
        for model in [
            "gpt-4o-mini",
            "gpt-4o-2024-08-06",
            "gpt-4.1-nano",
            "gpt-5",
            "o3-mini",
        ] {
            assert!(takes_json_schema(model), "{model}");
        }
        for model in [
            "gpt-3.5-turbo",
            "gpt-4",
            "gpt-4-turbo",
            "gpt-4-0613",
            "gpt-4o-2024-05-13",
            "o1-mini",
        ] {
            assert!(!takes_json_schema(model), "{model}");
        }
    }

    #[test]
    fn a_choice_goes_to_compatible_servers_only() {
        let format = ResponseFormat::Choice {
            choices: vec!["positive".into(), "negative".into()],
        };
        assert_eq!(response_format(&format), None);
        assert_eq!(
            guided_choice(Some(&format), false),
            Some(&["positive".to_string(), "negative".to_string()][..])
        );
        assert_eq!(guided_choice(Some(&format), true), None);
        assert_eq!(
            guided_choice(Some(&ResponseFormat::JsonObject), false),
            None
        );
    }
}
