//! Minimal HTTP/1.1 message framing: where one request (or response) in a byte buffer ends.
//!
//! Only what a benchmark server and load generator need: a start line, headers, and a body
//! delimited by `Content-Length` or chunked transfer encoding.

use std::fmt;

/// The largest header block accepted, in bytes.
const MAX_HEADER_BYTES: usize = 64 * 1024;

/// What [`frame`] found at the start of a buffer.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Framing {
    /// The buffer does not yet hold a whole message.
    Incomplete,
    /// The first `total_len` bytes are one whole message.
    Complete {
        /// Length of the message: start line, headers and body.
        total_len: usize,
        /// Whether the connection stays open after this message (HTTP/1.1 default).
        keep_alive: bool,
    },
}

/// Why a buffer is not a valid HTTP/1.1 message.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum FrameError {
    /// The header block is larger than the limit.
    HeadersTooLarge,
    /// A header line could not be read.
    BadHeader(String),
    /// A chunk size line in a chunked body could not be read.
    BadChunk(String),
}

impl fmt::Display for FrameError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::HeadersTooLarge => write!(f, "Header block exceeds {MAX_HEADER_BYTES} bytes"),
            Self::BadHeader(line) => write!(f, "Malformed header line `{line}`"),
            Self::BadChunk(line) => write!(f, "Malformed chunk size line `{line}`"),
        }
    }
}

impl std::error::Error for FrameError {}

/// Finds the end of the first HTTP/1.1 message in `buf`.
///
/// Returns [`Framing::Incomplete`] when more bytes are needed.
pub fn frame(buf: &[u8]) -> Result<Framing, FrameError> {
    let Some(head_end) = find(buf, b"\r\n\r\n") else {
        if buf.len() > MAX_HEADER_BYTES {
            return Err(FrameError::HeadersTooLarge);
        }
        return Ok(Framing::Incomplete);
    };
    let head = &buf[..head_end];
    let body_start = head_end + 4;
    let mut lines = head.split(|&b| b == b'\n').map(trim_cr);
    let start_line = lines.next().unwrap_or_default();
    // HTTP/1.0 closes by default; HTTP/1.1 keeps alive.
    let mut keep_alive = !contains_ignore_case(start_line, b"HTTP/1.0");
    let mut content_length = 0usize;
    let mut chunked = false;
    for line in lines {
        let Some(colon) = line.iter().position(|&b| b == b':') else {
            return Err(FrameError::BadHeader(
                String::from_utf8_lossy(line).into_owned(),
            ));
        };
        let name = &line[..colon];
        let value = trim_spaces(&line[colon + 1..]);
        if name.eq_ignore_ascii_case(b"content-length") {
            content_length = std::str::from_utf8(value)
                .ok()
                .and_then(|v| v.parse().ok())
                .ok_or_else(|| FrameError::BadHeader(String::from_utf8_lossy(line).into_owned()))?;
        } else if name.eq_ignore_ascii_case(b"transfer-encoding") {
            chunked = contains_ignore_case(value, b"chunked");
        } else if name.eq_ignore_ascii_case(b"connection") {
            if contains_ignore_case(value, b"close") {
                keep_alive = false;
            } else if contains_ignore_case(value, b"keep-alive") {
                keep_alive = true;
            }
        }
    }
    let body_len = if chunked {
        match chunked_len(&buf[body_start..])? {
            Some(len) => len,
            None => return Ok(Framing::Incomplete),
        }
    } else {
        content_length
    };
    let total_len = body_start + body_len;
    if buf.len() < total_len {
        return Ok(Framing::Incomplete);
    }
    Ok(Framing::Complete {
        total_len,
        keep_alive,
    })
}

/// Length of a complete chunked body (including the final empty chunk and trailers), or `None`
/// when the buffer ends before it.
fn chunked_len(body: &[u8]) -> Result<Option<usize>, FrameError> {
    let mut pos = 0;
    loop {
        let Some(line_end) = find(&body[pos..], b"\r\n") else {
            return Ok(None);
        };
        let line = &body[pos..pos + line_end];
        let size_text = line.split(|&b| b == b';').next().unwrap_or_default();
        let size = std::str::from_utf8(trim_spaces(size_text))
            .ok()
            .and_then(|s| usize::from_str_radix(s, 16).ok())
            .ok_or_else(|| FrameError::BadChunk(String::from_utf8_lossy(line).into_owned()))?;
        pos += line_end + 2;
        if size == 0 {
            // Optional trailers, then an empty line.
            return Ok(find_trailer_end(&body[pos..]).map(|end| pos + end));
        }
        pos += size + 2;
        if pos > body.len() {
            return Ok(None);
        }
    }
}

/// End of the trailer section (which ends with an empty line), relative to `rest`.
fn find_trailer_end(rest: &[u8]) -> Option<usize> {
    if rest.starts_with(b"\r\n") {
        return Some(2);
    }
    find(rest, b"\r\n\r\n").map(|i| i + 4)
}

fn find(haystack: &[u8], needle: &[u8]) -> Option<usize> {
    haystack.windows(needle.len()).position(|w| w == needle)
}

fn trim_cr(line: &[u8]) -> &[u8] {
    line.strip_suffix(b"\r").unwrap_or(line)
}

fn trim_spaces(mut s: &[u8]) -> &[u8] {
    while let [b' ' | b'\t', rest @ ..] = s {
        s = rest;
    }
    while let [rest @ .., b' ' | b'\t'] = s {
        s = rest;
    }
    s
}

fn contains_ignore_case(haystack: &[u8], needle: &[u8]) -> bool {
    haystack
        .windows(needle.len())
        .any(|w| w.eq_ignore_ascii_case(needle))
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]

    use super::*;

    #[test]
    fn incomplete_headers_need_more_bytes() {
        assert_eq!(
            frame(b"POST /v1/chat/completions HTTP/1.1\r\nHost: x\r\n").unwrap(),
            Framing::Incomplete
        );
    }

    #[test]
    fn content_length_body_is_framed() {
        let msg = b"POST / HTTP/1.1\r\nContent-Length: 5\r\n\r\nhelloNEXT";
        assert_eq!(
            frame(msg).unwrap(),
            Framing::Complete {
                total_len: msg.len() - 4,
                keep_alive: true
            }
        );
        assert_eq!(frame(&msg[..msg.len() - 6]).unwrap(), Framing::Incomplete);
    }

    #[test]
    fn header_names_are_case_insensitive_and_close_is_honoured() {
        let msg = b"POST / HTTP/1.1\r\ncontent-LENGTH:  2\r\nConnection: Close\r\n\r\n{}";
        assert_eq!(
            frame(msg).unwrap(),
            Framing::Complete {
                total_len: msg.len(),
                keep_alive: false
            }
        );
    }

    #[test]
    fn http10_closes_unless_keep_alive() {
        let close = b"GET / HTTP/1.0\r\n\r\n";
        assert_eq!(
            frame(close).unwrap(),
            Framing::Complete {
                total_len: close.len(),
                keep_alive: false
            }
        );
        let keep = b"GET / HTTP/1.0\r\nConnection: keep-alive\r\n\r\n";
        assert_eq!(
            frame(keep).unwrap(),
            Framing::Complete {
                total_len: keep.len(),
                keep_alive: true
            }
        );
    }

    #[test]
    fn chunked_body_is_framed() {
        let msg = b"POST / HTTP/1.1\r\nTransfer-Encoding: chunked\r\n\r\n5\r\nhello\r\n3;x=y\r\nabc\r\n0\r\n\r\n";
        assert_eq!(
            frame(msg).unwrap(),
            Framing::Complete {
                total_len: msg.len(),
                keep_alive: true
            }
        );
        for cut in [msg.len() - 1, msg.len() - 3, msg.len() - 10] {
            assert_eq!(
                frame(&msg[..cut]).unwrap(),
                Framing::Incomplete,
                "cut at {cut}"
            );
        }
    }

    #[test]
    fn malformed_input_is_an_error() {
        assert_eq!(
            frame(b"POST / HTTP/1.1\r\nno colon here\r\n\r\n").unwrap_err(),
            FrameError::BadHeader("no colon here".into())
        );
        assert!(matches!(
            frame(b"POST / HTTP/1.1\r\nContent-Length: x\r\n\r\n").unwrap_err(),
            FrameError::BadHeader(_)
        ));
        assert!(matches!(
            frame(b"POST / HTTP/1.1\r\nTransfer-Encoding: chunked\r\n\r\nzz\r\n").unwrap_err(),
            FrameError::BadChunk(_)
        ));
        assert_eq!(
            frame(&vec![b'a'; MAX_HEADER_BYTES + 1]).unwrap_err(),
            FrameError::HeadersTooLarge
        );
    }
}
