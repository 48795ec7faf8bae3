//! Benchmark tools for promptopt.
//!
//! Two small binaries use this library: `fake-openai`, an OpenAI-compatible chat completions
//! server that answers every request at once with the same reply, and `loadgen`, a tight
//! keep-alive load generator that measures how many requests per second that server sustains.
//! Both frameworks under comparison talk to the same server, so the server must never be the
//! bottleneck; `loadgen` shows its capacity.
//!
//! ```
//! use promptopt_bench::{frame, Framing, ReplyTemplate};
//!
//! let reply = ReplyTemplate::new("bench", "[[ ## label ## ]]\npositive\n\n[[ ## completed ## ]]");
//! let response = reply.http_response(false);
//! match frame(&response).unwrap() {
//!     Framing::Complete { total_len, keep_alive } => {
//!         assert_eq!(total_len, response.len());
//!         assert!(keep_alive);
//!     }
//!     Framing::Incomplete => panic!("a built response is complete"),
//! }
//! ```

mod http;
mod reply;
mod rusage;

pub use http::{frame, FrameError, Framing};
pub use reply::{json_response, ReplyTemplate};
pub use rusage::{process_usage, ProcessUsage};

/// The reply the fake server sends by default: DSPy's chat adapter format for one output field
/// named `label` with the value `positive`.
pub const DEFAULT_REPLY: &str = "[[ ## label ## ]]\npositive\n\n[[ ## completed ## ]]";
