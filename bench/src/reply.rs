//! The fixed chat completion reply and its HTTP framing, built once and reused for every request.

use serde_json::json;

/// A fixed OpenAI chat completion reply.
#[derive(Debug, Clone)]
pub struct ReplyTemplate {
    body: Vec<u8>,
}

impl ReplyTemplate {
    /// A chat completion from `model` whose only choice's message content is `content`.
    pub fn new(model: &str, content: &str) -> Self {
        let body = json!({
            "id": "chatcmpl-bench",
            "object": "chat.completion",
            "created": 1_700_000_000u64,
            "model": model,
            "choices": [{
                "index": 0,
                "message": {"role": "assistant", "content": content},
                "finish_reason": "stop"
            }],
            "usage": {"prompt_tokens": 64, "completion_tokens": 12, "total_tokens": 76}
        });
        Self {
            body: body.to_string().into_bytes(),
        }
    }

    /// The JSON body of the reply.
    pub fn body(&self) -> &[u8] {
        &self.body
    }

    /// The whole HTTP/1.1 response (status line, headers and body) in one buffer, so that it can
    /// be written with one call.
    pub fn http_response(&self, close: bool) -> Vec<u8> {
        json_response(200, "OK", &self.body, close)
    }
}

/// An HTTP/1.1 response with a JSON body, in one buffer.
pub fn json_response(status: u16, reason: &str, body: &[u8], close: bool) -> Vec<u8> {
    let connection = if close { "close" } else { "keep-alive" };
    let mut out = format!(
        "HTTP/1.1 {status} {reason}\r\ncontent-type: application/json\r\ncontent-length: {}\r\nconnection: {connection}\r\n\r\n",
        body.len()
    )
    .into_bytes();
    out.extend_from_slice(body);
    out
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]

    use super::*;
    use crate::{frame, Framing, DEFAULT_REPLY};

    #[test]
    fn body_is_an_openai_chat_completion_with_the_content() {
        let reply = ReplyTemplate::new("m", DEFAULT_REPLY);
        let value: serde_json::Value = serde_json::from_slice(reply.body()).unwrap();
        assert_eq!(value["choices"][0]["message"]["content"], DEFAULT_REPLY);
        assert_eq!(value["choices"][0]["finish_reason"], "stop");
        assert_eq!(value["usage"]["total_tokens"], 76);
        assert_eq!(value["model"], "m");
    }

    #[test]
    fn response_frames_to_its_own_length() {
        let reply = ReplyTemplate::new("m", "x\"y\n");
        for close in [false, true] {
            let bytes = reply.http_response(close);
            assert_eq!(
                frame(&bytes).unwrap(),
                Framing::Complete {
                    total_len: bytes.len(),
                    keep_alive: !close
                }
            );
            assert!(bytes.ends_with(reply.body()));
        }
    }
}
