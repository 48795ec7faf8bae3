//! The JSON of OpenAI's chat completions API, as far as the engine serves it.

use promptopt_lm::{ChatRequest, ChatResponse, FinishReason, Message, ResponseFormat, Role};
use serde::{Deserialize, Serialize};

/// `POST /v1/chat/completions` request body. Fields the engine does not use are ignored.
#[derive(Debug, Clone, Deserialize)]
pub struct CompletionRequest {
    /// The model name.
    pub model: String,
    /// The conversation.
    pub messages: Vec<WireMessage>,
    /// Sampling temperature (0 or absent: greedy).
    #[serde(default)]
    pub temperature: Option<f32>,
    /// Nucleus sampling.
    #[serde(default)]
    pub top_p: Option<f32>,
    /// Top-k sampling (an extension llama.cpp's server also accepts).
    #[serde(default)]
    pub top_k: Option<u32>,
    /// Reply length limit (older name).
    #[serde(default)]
    pub max_tokens: Option<u32>,
    /// Reply length limit.
    #[serde(default)]
    pub max_completion_tokens: Option<u32>,
    /// One stop string or several.
    #[serde(default)]
    pub stop: Option<Stop>,
    /// Sampling seed.
    #[serde(default)]
    pub seed: Option<u64>,
    /// Number of replies.
    #[serde(default)]
    pub n: Option<u32>,
    /// Streaming is not supported; `true` is refused.
    #[serde(default)]
    pub stream: Option<bool>,
    /// The reply must be exactly one of these strings (vLLM's extension).
    #[serde(default)]
    pub guided_choice: Option<Vec<String>>,
}

/// The `stop` field: a string or a list of strings.
#[derive(Debug, Clone, Deserialize)]
#[serde(untagged)]
pub enum Stop {
    /// One stop string.
    One(String),
    /// Several stop strings.
    Many(Vec<String>),
}

/// One message of a request.
#[derive(Debug, Clone, Deserialize)]
pub struct WireMessage {
    /// `system`, `developer`, `user` or `assistant`.
    pub role: String,
    /// A string or a list of content parts.
    #[serde(default)]
    pub content: Option<Content>,
}

/// Message content.
#[derive(Debug, Clone, Deserialize)]
#[serde(untagged)]
pub enum Content {
    /// Plain text.
    Text(String),
    /// Content parts; only `text` parts are supported.
    Parts(Vec<Part>),
}

/// One content part.
#[derive(Debug, Clone, Deserialize)]
pub struct Part {
    /// The part type (`text`).
    #[serde(rename = "type")]
    pub kind: String,
    /// The text of a `text` part.
    #[serde(default)]
    pub text: Option<String>,
}

impl CompletionRequest {
    /// The equivalent [`ChatRequest`], or a message saying which field is not supported.
    pub fn to_chat_request(&self) -> Result<ChatRequest, (String, &'static str)> {
        if self.stream == Some(true) {
            return Err((
                "Streaming is not supported: set `stream` to false".to_string(),
                "stream",
            ));
        }
        let mut messages = Vec::with_capacity(self.messages.len());
        for (i, message) in self.messages.iter().enumerate() {
            let role = match message.role.as_str() {
                "system" | "developer" => Role::System,
                "user" => Role::User,
                "assistant" => Role::Assistant,
                other => {
                    return Err((
                        format!("Unsupported role `{other}` in `messages[{i}]`: use system, user or assistant"),
                        "messages",
                    ))
                }
            };
            let content = match &message.content {
                None => String::new(),
                Some(Content::Text(text)) => text.clone(),
                Some(Content::Parts(parts)) => {
                    let mut text = String::new();
                    for part in parts {
                        match (part.kind.as_str(), &part.text) {
                            ("text", Some(t)) => text.push_str(t),
                            (kind, _) => {
                                return Err((
                                    format!("Unsupported content part `{kind}` in `messages[{i}]`: only `text` parts are supported"),
                                    "messages",
                                ))
                            }
                        }
                    }
                    text
                }
            };
            messages.push(Message { role, content });
        }
        let mut request = ChatRequest::new(self.model.clone(), messages);
        request.temperature = self.temperature;
        request.top_p = self.top_p;
        request.top_k = self.top_k;
        request.max_tokens = self.max_completion_tokens.or(self.max_tokens);
        request.stop = match &self.stop {
            None => Vec::new(),
            Some(Stop::One(s)) => vec![s.clone()],
            Some(Stop::Many(v)) => v.clone(),
        };
        request.seed = self.seed;
        request.n = self.n.unwrap_or(1);
        if let Some(choices) = &self.guided_choice {
            if choices.iter().all(String::is_empty) {
                return Err((
                    "`guided_choice` needs at least one non-empty string".to_string(),
                    "guided_choice",
                ));
            }
            request.response_format = Some(ResponseFormat::Choice {
                choices: choices.clone(),
            });
        }
        Ok(request)
    }
}

/// `POST /v1/chat/completions` response body.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct CompletionResponse {
    /// `chatcmpl-<number>`.
    pub id: String,
    /// Always `chat.completion`.
    pub object: String,
    /// Unix time in seconds.
    pub created: u64,
    /// The model that answered.
    pub model: String,
    /// The replies.
    pub choices: Vec<WireChoice>,
    /// Token counts.
    pub usage: WireUsage,
}

/// One reply.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct WireChoice {
    /// Its index.
    pub index: u32,
    /// The assistant message.
    pub message: AssistantMessage,
    /// `stop` or `length`.
    pub finish_reason: String,
    /// Always null.
    pub logprobs: Option<serde_json::Value>,
}

/// The reply message.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct AssistantMessage {
    /// Always `assistant`.
    pub role: String,
    /// The reply text.
    pub content: String,
}

/// Token counts in OpenAI's shape.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct WireUsage {
    /// Prompt tokens, cached ones included.
    pub prompt_tokens: u64,
    /// Generated tokens.
    pub completion_tokens: u64,
    /// Both.
    pub total_tokens: u64,
    /// Prompt token details.
    pub prompt_tokens_details: PromptTokensDetails,
}

/// Prompt token details.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct PromptTokensDetails {
    /// Prompt tokens reused from the KV cache.
    pub cached_tokens: u64,
}

impl CompletionResponse {
    /// The wire form of an engine response.
    pub fn from_response(id: String, created: u64, response: &ChatResponse) -> Self {
        let choices = response
            .choices
            .iter()
            .zip(0u32..)
            .map(|(choice, index)| WireChoice {
                index,
                message: AssistantMessage {
                    role: "assistant".to_string(),
                    content: choice.content.clone(),
                },
                finish_reason: match &choice.finish_reason {
                    FinishReason::Stop => "stop".to_string(),
                    FinishReason::Length => "length".to_string(),
                    FinishReason::ContentFilter => "content_filter".to_string(),
                    FinishReason::Other(other) => other.clone(),
                },
                logprobs: None,
            })
            .collect();
        Self {
            id,
            object: "chat.completion".to_string(),
            created,
            model: response.model.clone(),
            choices,
            usage: WireUsage {
                prompt_tokens: response.usage.prompt_tokens,
                completion_tokens: response.usage.completion_tokens,
                total_tokens: response.usage.total(),
                prompt_tokens_details: PromptTokensDetails {
                    cached_tokens: response.usage.cached_tokens,
                },
            },
        }
    }
}

/// OpenAI's error body: `{"error": {...}}`.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct ErrorBody {
    /// The error.
    pub error: ErrorDetail,
}

/// The error itself.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct ErrorDetail {
    /// What went wrong.
    pub message: String,
    /// `invalid_request_error`, `not_found_error` or `server_error`.
    #[serde(rename = "type")]
    pub kind: String,
    /// The request field at fault, if one is.
    pub param: Option<String>,
    /// A machine-readable code, if there is one.
    pub code: Option<String>,
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    #[test]
    fn openai_request_json_maps_onto_a_chat_request() {
        let body = r#"{"model":"local/smollm2-135m","messages":[
            {"role":"developer","content":"Be brief."},
            {"role":"user","content":[{"type":"text","text":"Hi "},{"type":"text","text":"there"}]}],
            "temperature":0,"max_completion_tokens":5,"stop":"\n","seed":3,"logprobs":false}"#;
        let request: CompletionRequest = serde_json::from_str(body).unwrap();
        let chat = request.to_chat_request().unwrap();
        assert_eq!(
            chat.messages,
            vec![Message::system("Be brief."), Message::user("Hi there")]
        );
        assert_eq!(chat.max_tokens, Some(5));
        assert_eq!(chat.stop, vec!["\n".to_string()]);
        assert_eq!(chat.seed, Some(3));
        assert_eq!(chat.temperature, Some(0.0));
    }

    #[test]
    fn guided_choice_becomes_a_choice_and_an_empty_one_is_refused() {
        let body = r#"{"model":"m","messages":[{"role":"user","content":"x"}],
            "guided_choice":["positive","negative"]}"#;
        let request: CompletionRequest = serde_json::from_str(body).unwrap();
        assert_eq!(
            request.to_chat_request().unwrap().response_format,
            Some(ResponseFormat::Choice {
                choices: vec!["positive".into(), "negative".into()]
            })
        );
        let empty: CompletionRequest = serde_json::from_str(
            r#"{"model":"m","messages":[{"role":"user","content":"x"}],"guided_choice":[""]}"#,
        )
        .unwrap();
        assert_eq!(empty.to_chat_request().unwrap_err().1, "guided_choice");
    }

    #[test]
    fn streaming_and_tool_roles_are_refused_with_the_field() {
        let stream: CompletionRequest =
            serde_json::from_str(r#"{"model":"m","messages":[],"stream":true}"#).unwrap();
        assert_eq!(stream.to_chat_request().unwrap_err().1, "stream");
        let tool: CompletionRequest =
            serde_json::from_str(r#"{"model":"m","messages":[{"role":"tool","content":"x"}]}"#)
                .unwrap();
        let (message, param) = tool.to_chat_request().unwrap_err();
        assert_eq!(param, "messages");
        assert!(message.contains("`tool`"), "{message}");
    }
}
