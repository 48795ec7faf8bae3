//! The process-wide llama.cpp backend.

use std::sync::OnceLock;

use llama_cpp_2::llama_backend::LlamaBackend;
use llama_cpp_2::{send_logs_to_tracing, LogOptions};

use crate::EngineError;

static BACKEND: OnceLock<Result<LlamaBackend, String>> = OnceLock::new();

/// The llama.cpp backend, initialised on first use. llama.cpp allows one per process; its log
/// lines go to `tracing` when `logs` is set on the first call and are dropped otherwise.
pub(crate) fn backend(logs: bool) -> Result<&'static LlamaBackend, EngineError> {
    BACKEND
        .get_or_init(|| {
            let mut backend = LlamaBackend::init().map_err(|error| error.to_string())?;
            if logs {
                send_logs_to_tracing(LogOptions::default());
            } else {
                backend.void_logs();
            }
            Ok(backend)
        })
        .as_ref()
        .map_err(|message| EngineError::Backend(message.clone()))
}
