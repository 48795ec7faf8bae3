//! Errors of the embedded engine.

use std::path::PathBuf;

use promptopt_lm::LmError;

/// What went wrong while loading or running the embedded model.
#[derive(Debug, Clone, thiserror::Error)]
#[non_exhaustive]
pub enum EngineError {
    /// The model name is not `local/<name>`, a known short name or a path to a GGUF file.
    #[error(
        "Unknown model `{name}`: use one of {known}, or a GGUF file as `local//path/to/model.gguf`"
    )]
    UnknownModel {
        /// The name as given.
        name: String,
        /// The catalog's names, comma separated.
        known: String,
    },
    /// The model stack around the engines could not be assembled.
    #[error("Cannot set up the models: {0}")]
    Stack(#[source] promptopt_lm::LmError),
    /// The model file is not where the name points.
    #[error("Model file for `{name}` not found (looked in {searched}){hint}")]
    ModelNotFound {
        /// The name as given.
        name: String,
        /// The places searched, comma separated.
        searched: String,
        /// How to get it, for a catalog model (`; run \`promptopt models pull …\``), else empty.
        hint: String,
    },
    /// llama.cpp could not load the file.
    #[error("Could not load the model `{path}`: not a valid GGUF model file, or it is truncated")]
    ModelLoad {
        /// The file.
        path: PathBuf,
    },
    /// The llama.cpp backend could not start.
    #[error("Could not initialise the llama.cpp backend: {0}")]
    Backend(String),
    /// The inference context could not be created.
    #[error("Could not create a context of {tokens} tokens for `{path}`: {message}")]
    Context {
        /// The model file.
        path: PathBuf,
        /// The KV cache size asked for.
        tokens: u32,
        /// What failed.
        message: String,
    },
    /// A setting is out of range.
    #[error("Invalid engine setting `{field}`: {message}")]
    InvalidConfig {
        /// The setting.
        field: &'static str,
        /// What is wrong with it.
        message: String,
    },
    /// A GPU setting is out of range.
    #[error(transparent)]
    GpuConfig(#[from] promptopt_lm::gpu::GpuConfigError),
    /// A GPU was asked for, but this build has no GPU support.
    #[error("A GPU was asked for (`gpu.device_ids`: {devices}) but this build of promptopt has no CUDA support: build it with `cargo build --release --features cuda` (needs the CUDA toolkit, `nvcc` and its libraries, and an NVIDIA driver to run), or set `gpu.required: false` (`--gpu-optional`, `PROMPTOPT_GPU_REQUIRED=false`) to run on the CPU")]
    GpuNotBuilt {
        /// The device ids asked for, comma separated.
        devices: String,
    },
    /// A GPU setting cannot be met on this machine: a device that does not exist, a model that
    /// does not fit in the memory fraction.
    #[error("Cannot use the GPU as `{setting}` asks: {message}")]
    Gpu {
        /// The setting (`gpu.device_ids`, `gpu.memory_fraction`).
        setting: &'static str,
        /// What is wrong.
        message: String,
    },
    /// The model's chat template could not be parsed or rendered.
    #[error("Chat template of `{model}` failed: {message}")]
    Template {
        /// The model.
        model: String,
        /// What failed.
        message: String,
    },
    /// The engine thread could not be started or has stopped.
    #[error("The engine thread is not running: {0}")]
    Stopped(String),
    /// The HTTP server could not bind or serve.
    #[error("HTTP server on `{addr}` failed: {message}")]
    Server {
        /// The address.
        addr: String,
        /// What failed.
        message: String,
    },
}

impl From<EngineError> for LmError {
    fn from(error: EngineError) -> Self {
        LmError::Engine(error.to_string())
    }
}
