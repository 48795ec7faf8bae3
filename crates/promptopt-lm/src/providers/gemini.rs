//! Google's Gemini `generateContent` API.

use async_trait::async_trait;
use serde::{Deserialize, Serialize};

use super::{model_part, Settings};
use crate::http::{join_url, Endpoint};
use crate::{
    ChatRequest, ChatResponse, Choice, FinishReason, Lm, LmError, ResponseFormat, Role, ToolCall,
    Usage,
};

const DEFAULT_BASE_URL: &str = "https://generativelanguage.googleapis.com";

/// A client of `POST {base}/v1beta/models/{model}:generateContent`.
///
/// System messages become `systemInstruction`; user and assistant turns become `contents` with
/// the roles `user` and `model`; sampling settings go to `generationConfig`, and a JSON schema
/// to `responseMimeType` plus `responseSchema`. The key travels in the `x-goog-api-key` header.
#[derive(Debug)]
pub struct GeminiLm {
    endpoint: Endpoint,
    base: String,
}

impl GeminiLm {
    pub(crate) fn new(settings: Settings) -> Result<Self, LmError> {
        let key = settings.require_key("gemini")?;
        let base = settings
            .custom_base_url
            .clone()
            .unwrap_or_else(|| DEFAULT_BASE_URL.to_owned());
        let headers = [("x-goog-api-key", key.expose().to_owned())];
        let endpoint = Endpoint::new("gemini", base.clone(), Some(key), &headers)?;
        Ok(Self { endpoint, base })
    }

    fn url(&self, model: &str) -> Result<String, LmError> {
        let model = model.strip_prefix("models/").unwrap_or(model);
        let valid = !model.is_empty()
            && model
                .chars()
                .all(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '.' | '_'));
        if !valid {
            return Err(LmError::InvalidRequest(format!(
                "The Gemini model name `{model}` may hold only letters, digits, `-`, `.` and `_`"
            )));
        }
        Ok(join_url(
            &self.base,
            &format!("v1beta/models/{model}:generateContent"),
        ))
    }
}

#[derive(Serialize)]
#[serde(rename_all = "camelCase")]
struct WireRequest<'a> {
    contents: Vec<Content<'a>>,
    #[serde(skip_serializing_if = "Option::is_none")]
    system_instruction: Option<Content<'a>>,
    #[serde(skip_serializing_if = "GenerationConfig::is_empty")]
    generation_config: GenerationConfig<'a>,
    /// Native function calling: `[{"functionDeclarations": [...]}]`.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    tools: Vec<serde_json::Value>,
}

#[derive(Serialize)]
struct Content<'a> {
    #[serde(skip_serializing_if = "Option::is_none")]
    role: Option<&'static str>,
    parts: Vec<Part<'a>>,
}

#[derive(Serialize)]
struct Part<'a> {
    text: &'a str,
}

#[derive(Serialize, Default)]
#[serde(rename_all = "camelCase")]
struct GenerationConfig<'a> {
    #[serde(skip_serializing_if = "Option::is_none")]
    temperature: Option<f32>,
    #[serde(skip_serializing_if = "Option::is_none")]
    top_p: Option<f32>,
    #[serde(skip_serializing_if = "Option::is_none")]
    top_k: Option<u32>,
    #[serde(skip_serializing_if = "Option::is_none")]
    max_output_tokens: Option<u32>,
    #[serde(skip_serializing_if = "<[String]>::is_empty")]
    stop_sequences: &'a [String],
    #[serde(skip_serializing_if = "Option::is_none")]
    candidate_count: Option<u32>,
    #[serde(skip_serializing_if = "Option::is_none")]
    seed: Option<u64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    response_mime_type: Option<&'static str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    response_schema: Option<&'a serde_json::Value>,
}

impl GenerationConfig<'_> {
    fn is_empty(&self) -> bool {
        self.temperature.is_none()
            && self.top_p.is_none()
            && self.top_k.is_none()
            && self.max_output_tokens.is_none()
            && self.stop_sequences.is_empty()
            && self.candidate_count.is_none()
            && self.seed.is_none()
            && self.response_mime_type.is_none()
    }
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct WireResponse {
    #[serde(default)]
    candidates: Vec<Candidate>,
    #[serde(default)]
    usage_metadata: Option<UsageMetadata>,
    #[serde(default)]
    model_version: Option<String>,
    #[serde(default)]
    prompt_feedback: Option<serde_json::Value>,
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct Candidate {
    #[serde(default)]
    content: Option<CandidateContent>,
    #[serde(default)]
    finish_reason: Option<String>,
}

#[derive(Deserialize)]
struct CandidateContent {
    #[serde(default)]
    parts: Vec<CandidatePart>,
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct CandidatePart {
    #[serde(default)]
    text: Option<String>,
    #[serde(default)]
    thought: Option<bool>,
    #[serde(default)]
    function_call: Option<FunctionCall>,
}

#[derive(Deserialize)]
struct FunctionCall {
    name: String,
    #[serde(default)]
    args: Option<serde_json::Value>,
}

#[derive(Deserialize, Default)]
#[serde(rename_all = "camelCase")]
struct UsageMetadata {
    #[serde(default)]
    prompt_token_count: u64,
    #[serde(default)]
    candidates_token_count: u64,
    #[serde(default)]
    thoughts_token_count: u64,
    #[serde(default)]
    cached_content_token_count: u64,
}

fn finish_reason(reason: Option<&str>) -> FinishReason {
    match reason {
        Some("STOP") | None => FinishReason::Stop,
        Some("MAX_TOKENS") => FinishReason::Length,
        Some("SAFETY" | "RECITATION" | "BLOCKLIST" | "PROHIBITED_CONTENT" | "SPII") => {
            FinishReason::ContentFilter
        }
        Some(other) => FinishReason::Other(other.to_owned()),
    }
}

#[async_trait]
impl Lm for GeminiLm {
    async fn chat(&self, request: &ChatRequest) -> Result<ChatResponse, LmError> {
        let url = self.url(model_part(&request.model))?;
        let system: Vec<Part<'_>> = request
            .messages
            .iter()
            .filter(|m| m.role == Role::System)
            .map(|m| Part { text: &m.content })
            .collect();
        let contents = request
            .messages
            .iter()
            .filter_map(|m| {
                let role = match m.role {
                    Role::System => return None,
                    Role::User => "user",
                    Role::Assistant => "model",
                };
                Some(Content {
                    role: Some(role),
                    parts: vec![Part { text: &m.content }],
                })
            })
            .collect();
        let (mime, schema) = match &request.response_format {
            Some(ResponseFormat::JsonObject) => (Some("application/json"), None),
            Some(ResponseFormat::JsonSchema { schema, .. }) => {
                (Some("application/json"), Some(schema))
            }
            Some(ResponseFormat::Text | ResponseFormat::Choice { .. }) | None => (None, None),
        };
        let wire = WireRequest {
            contents,
            system_instruction: (!system.is_empty()).then_some(Content {
                role: None,
                parts: system,
            }),
            generation_config: GenerationConfig {
                temperature: request.temperature,
                top_p: request.top_p,
                top_k: request.top_k,
                max_output_tokens: request.max_tokens,
                stop_sequences: &request.stop,
                candidate_count: (request.n != 1).then_some(request.n),
                seed: request.seed,
                response_mime_type: mime,
                response_schema: schema,
            },
            tools: if request.tools.is_empty() {
                Vec::new()
            } else {
                vec![serde_json::json!({
                    "functionDeclarations": request
                        .tools
                        .iter()
                        .map(|t| serde_json::json!({
                            "name": t.name,
                            "description": t.description,
                            "parameters": t.parameters,
                        }))
                        .collect::<Vec<_>>()
                })]
            },
        };
        let body = serde_json::to_vec(&wire)
            .map_err(|e| LmError::InvalidRequest(format!("Could not encode the request: {e}")))?;
        let reply = self.endpoint.post(Some(&url), body).await?;
        let wire: WireResponse =
            serde_json::from_slice(&reply.body).map_err(|e| self.endpoint.malformed(e))?;
        if wire.candidates.is_empty() {
            let why = wire
                .prompt_feedback
                .map_or_else(|| "no reason given".to_owned(), |f| f.to_string());
            return Err(self
                .endpoint
                .malformed(format!("the reply has no `candidates` ({why})")));
        }
        let choices = wire
            .candidates
            .into_iter()
            .map(|c| {
                let parts: Vec<CandidatePart> = c
                    .content
                    .map(|content| content.parts)
                    .unwrap_or_default()
                    .into_iter()
                    .filter(|p| p.thought != Some(true))
                    .collect();
                let tool_calls = parts
                    .iter()
                    .filter_map(|p| p.function_call.as_ref())
                    .map(|f| ToolCall {
                        name: f.name.clone(),
                        arguments: f.args.clone().unwrap_or_else(|| serde_json::json!({})),
                    })
                    .collect();
                Choice {
                    content: parts.into_iter().filter_map(|p| p.text).collect(),
                    finish_reason: finish_reason(c.finish_reason.as_deref()),
                    tool_calls,
                }
            })
            .collect();
        let u = wire.usage_metadata.unwrap_or_default();
        Ok(ChatResponse {
            model: wire.model_version.unwrap_or_else(|| request.model.clone()),
            choices,
            usage: Usage {
                prompt_tokens: u.prompt_token_count,
                completion_tokens: u.candidates_token_count + u.thoughts_token_count,
                cached_tokens: u.cached_content_token_count,
            },
            latency: reply.latency,
            cost_usd: None,
            cache_hit: false,
            retries: 0,
        })
    }

    fn supports_json_schema(&self, _model: &str) -> bool {
        true
    }
}
