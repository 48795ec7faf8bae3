//! A small HTTP/1.1 keep-alive loop that serves chat completions.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};

use super::{Answer, ServedRequest};
use crate::{Message, Role};

/// Longest accepted request head.
const MAX_HEAD: usize = 64 * 1024;
/// Longest accepted request body.
const MAX_BODY: usize = 64 * 1024 * 1024;

pub(crate) struct State {
    pub answer: Answer,
    pub served: Arc<AtomicU64>,
}

pub(crate) async fn serve(
    listener: std::net::TcpListener,
    state: Arc<State>,
    shutdown: Arc<tokio::sync::Notify>,
) {
    let Ok(listener) = TcpListener::from_std(listener) else {
        return;
    };
    loop {
        tokio::select! {
            _ = shutdown.notified() => return,
            accepted = listener.accept() => {
                if let Ok((stream, _)) = accepted {
                    tokio::spawn(connection(stream, Arc::clone(&state)));
                }
            }
        }
    }
}

/// The parts of a request head the server needs.
struct Head {
    len: usize,
    method_post: bool,
    path_ok: bool,
    content_length: Option<usize>,
    close: bool,
}

fn parse_head(buf: &[u8]) -> Option<Head> {
    let end = buf.windows(4).position(|w| w == b"\r\n\r\n")?;
    let text = String::from_utf8_lossy(&buf[..end]);
    let mut lines = text.split("\r\n");
    let request_line = lines.next().unwrap_or("");
    let mut parts = request_line.split(' ');
    let method = parts.next().unwrap_or("");
    let path = parts.next().unwrap_or("");
    let version = parts.next().unwrap_or("");
    let path = path.split('?').next().unwrap_or("");
    let mut head = Head {
        len: end + 4,
        method_post: method == "POST",
        path_ok: matches!(path, "/v1/chat/completions" | "/chat/completions"),
        content_length: None,
        close: version == "HTTP/1.0",
    };
    for line in lines {
        let Some((name, value)) = line.split_once(':') else {
            continue;
        };
        let value = value.trim();
        if name.eq_ignore_ascii_case("content-length") {
            head.content_length = value.parse().ok();
        } else if name.eq_ignore_ascii_case("connection") {
            head.close = value.eq_ignore_ascii_case("close");
        }
    }
    Some(head)
}

async fn connection(mut stream: TcpStream, state: Arc<State>) {
    // Latency matters more than packet count on loopback; a failure only costs speed.
    let _ = stream.set_nodelay(true);
    let mut buf: Vec<u8> = Vec::with_capacity(16 * 1024);
    let mut out: Vec<u8> = Vec::with_capacity(4 * 1024);
    loop {
        let head = loop {
            if let Some(head) = parse_head(&buf) {
                break head;
            }
            if buf.len() > MAX_HEAD {
                let _ = stream
                    .write_all(&error(431, "Request head too large"))
                    .await;
                return;
            }
            match stream.read_buf(&mut buf).await {
                Ok(0) | Err(_) => return,
                Ok(_) => {}
            }
        };
        let body_len = match head.content_length {
            Some(len) if len <= MAX_BODY => len,
            Some(_) => {
                let _ = stream
                    .write_all(&error(413, "Request body too large"))
                    .await;
                return;
            }
            None if head.method_post => {
                let _ = stream
                    .write_all(&error(411, "Content-Length required"))
                    .await;
                return;
            }
            None => 0,
        };
        while buf.len() < head.len + body_len {
            match stream.read_buf(&mut buf).await {
                Ok(0) | Err(_) => return,
                Ok(_) => {}
            }
        }
        let body = &buf[head.len..head.len + body_len];
        let response: &[u8] = if !head.path_ok {
            out = error(404, "Unknown path; use `/v1/chat/completions`");
            &out
        } else if !head.method_post {
            out = error(405, "Use POST");
            &out
        } else {
            match &state.answer {
                Answer::Fixed(rendered) => {
                    state.served.fetch_add(1, Ordering::Relaxed);
                    rendered
                }
                Answer::Computed(responder) => {
                    out.clear();
                    match computed(body, responder.as_ref(), &mut out) {
                        Ok(()) => state.served.fetch_add(1, Ordering::Relaxed),
                        Err(message) => {
                            out = error(400, &message);
                            0
                        }
                    };
                    &out
                }
                Answer::Handled(handler) => {
                    out.clear();
                    match parse_request(body) {
                        Ok((request, prompt_tokens)) => {
                            let reply = handler(&request);
                            if !reply.delay.is_zero() {
                                tokio::time::sleep(reply.delay).await;
                            }
                            state.served.fetch_add(1, Ordering::Relaxed);
                            if reply.status == 200 {
                                let json =
                                    completion_json(&request.model, &reply.text, prompt_tokens);
                                render(200, "OK", &json, &mut out);
                            } else {
                                out = error(reply.status, &reply.text);
                            }
                        }
                        Err(message) => out = error(400, &message),
                    }
                    &out
                }
            }
        };
        if stream.write_all(response).await.is_err() {
            return;
        }
        buf.drain(..head.len + body_len);
        if head.close {
            return;
        }
    }
}

fn computed(body: &[u8], responder: &super::Responder, out: &mut Vec<u8>) -> Result<(), String> {
    let (request, prompt_tokens) = parse_request(body)?;
    let reply = responder(&request);
    let json = completion_json(&request.model, &reply, prompt_tokens);
    render(200, "OK", &json, out);
    Ok(())
}

/// The request as responders see it, and its prompt's word count (the usage's prompt tokens).
fn parse_request(body: &[u8]) -> Result<(ServedRequest, usize), String> {
    let value: serde_json::Value =
        serde_json::from_slice(body).map_err(|e| format!("Invalid JSON body: {e}"))?;
    let model = value
        .get("model")
        .and_then(|m| m.as_str())
        .ok_or("Missing `model`")?
        .to_owned();
    let messages = value
        .get("messages")
        .and_then(|m| m.as_array())
        .ok_or("Missing `messages`")?
        .iter()
        .map(|m| {
            let role = match m.get("role").and_then(|r| r.as_str()) {
                Some("system" | "developer") => Role::System,
                Some("assistant") => Role::Assistant,
                _ => Role::User,
            };
            let content = m
                .get("content")
                .and_then(|c| c.as_str())
                .unwrap_or("")
                .to_owned();
            Message { role, content }
        })
        .collect::<Vec<_>>();
    let prompt_tokens: usize = messages
        .iter()
        .map(|m| m.content.split_whitespace().count())
        .sum();
    let request = ServedRequest {
        model,
        messages,
        body: value,
    };
    Ok((request, prompt_tokens))
}

fn completion_json(model: &str, reply: &str, prompt_tokens: usize) -> Vec<u8> {
    let completion_tokens = reply.split_whitespace().count();
    let body = serde_json::json!({
        "id": "chatcmpl-fixed",
        "object": "chat.completion",
        "created": 0,
        "model": model,
        "choices": [{
            "index": 0,
            "message": {"role": "assistant", "content": reply},
            "finish_reason": "stop",
        }],
        "usage": {
            "prompt_tokens": prompt_tokens,
            "completion_tokens": completion_tokens,
            "total_tokens": prompt_tokens + completion_tokens,
        },
    });
    serde_json::to_vec(&body).unwrap_or_default()
}

/// The complete response of fixed mode.
pub(crate) fn fixed_response(reply: &str) -> Vec<u8> {
    let json = completion_json("fixed-reply", reply, 10);
    let mut out = Vec::with_capacity(json.len() + 128);
    render(200, "OK", &json, &mut out);
    out
}

fn render(status: u16, reason: &str, body: &[u8], out: &mut Vec<u8>) {
    out.extend_from_slice(
        format!(
            "HTTP/1.1 {status} {reason}\r\ncontent-type: application/json\r\ncontent-length: {}\r\n\r\n",
            body.len()
        )
        .as_bytes(),
    );
    out.extend_from_slice(body);
}

fn error(status: u16, message: &str) -> Vec<u8> {
    let body = serde_json::json!({
        "error": {"message": message, "type": "invalid_request_error", "code": null}
    });
    let body = serde_json::to_vec(&body).unwrap_or_default();
    let reason = match status {
        400 => "Bad Request",
        404 => "Not Found",
        405 => "Method Not Allowed",
        411 => "Length Required",
        413 => "Payload Too Large",
        429 => "Too Many Requests",
        500 => "Internal Server Error",
        502 => "Bad Gateway",
        503 => "Service Unavailable",
        431 => "Request Header Fields Too Large",
        _ => "Error",
    };
    let mut out = Vec::with_capacity(body.len() + 128);
    render(status, reason, &body, &mut out);
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn heads_are_parsed() {
        let head = parse_head(
            b"POST /v1/chat/completions HTTP/1.1\r\nContent-Length: 12\r\nConnection: close\r\n\r\n{}",
        );
        let head = head.map(|h| (h.len, h.method_post, h.path_ok, h.content_length, h.close));
        assert_eq!(head, Some((77, true, true, Some(12), true)));
        assert!(parse_head(b"POST / HTTP/1.1\r\n").is_none());
    }
}
