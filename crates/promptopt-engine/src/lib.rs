//! The embedded model of promptopt: llama.cpp in-process, answering [`promptopt_lm::Lm`] requests.
//!
//! ```
//! use promptopt_engine::{Engine, EngineConfig};
//! use promptopt_lm::{ChatRequest, Lm, Message};
//!
//! # fn model() -> Option<String> {
//! #     let dirs = [std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../../models")];
//! #     let path = promptopt_engine::resolve_in("local/smollm2-135m", &dirs).ok()?;
//! #     Some(format!("local/{}", path.display()))
//! # }
//! # let Some(model) = model() else { return Ok(()) };
//! # let runtime = tokio::runtime::Runtime::new()?;
//! # runtime.block_on(async {
//! // `local/smollm2-135m` after `scripts/fetch-model.sh`; here, a path to the same file.
//! let engine = Engine::load_async(EngineConfig::new(model).with_slots(2).with_ctx_per_slot(512)).await?;
//! let request = ChatRequest::new(engine.model_name(), vec![Message::user("Say hello.")])
//!     .with_temperature(0.0)
//!     .with_max_tokens(8);
//! let reply = engine.chat(&request).await?;
//! assert!(!reply.text().is_empty());
//! assert_eq!(reply.cost_usd, Some(0.0));
//! # Ok::<(), Box<dyn std::error::Error>>(())
//! # })?;
//! # Ok::<(), Box<dyn std::error::Error>>(())
//! ```
//!
//! # Models
//!
//! Models are GGUF files named `local/<name>` (see [`resolve_model`]): `local/smollm2-135m`
//! (SmolLM2-135M-Instruct Q4_1, the default) and `local/gemma3-270m` (Gemma 3 270M base Q4_K_M)
//! are fetched by `scripts/fetch-model.sh`; `local//abs/path.gguf` or `local/./rel/path.gguf`
//! load any other file. An [`Engine`] loads one model and answers requests for that name.
//!
//! # How requests run
//!
//! - **Prompts.** Messages are rendered with the GGUF's own `tokenizer.chat_template` (Jinja, via
//!   `minijinja`), or as plain text for base models without one ([`template`] says exactly how),
//!   then tokenized once as a whole.
//! - **Continuous batching.** llama.cpp runs on one OS thread of its own; requests reach it
//!   through a channel and never block the async runtime. Each active request holds a sequence
//!   slot; every decode call carries the next token of every generating request plus prompt
//!   chunks of newly admitted ones, so concurrent requests decode together
//!   ([`EngineStats::max_sequences_per_decode`] shows how many shared one call).
//! - **Prefix reuse.** The KV cache is unified: sequences share cells. A new request starts from
//!   the longest token prefix any slot holds (its own, or copied from another slot with
//!   `llama_memory_seq_cp`, which shares cells rather than copying data) and decodes only the
//!   rest; `Usage::cached_tokens` reports how many prompt tokens were reused. A request that
//!   shares a long prefix with a prompt still being decoded waits for it rather than decoding the
//!   prefix twice. Finished prompts stay cached in more sequences than there are slots
//!   ([`EngineConfig::kept_prompts`]), so an agent's next step or a program's next stage finds
//!   its own earlier prompt even after other requests used the slots; when the cache needs room,
//!   the least recently used kept prompt is dropped ([`EngineStats::kept_prompts_dropped`]).
//!   [`EngineConfig::prefix_reuse`] turns this off.
//! - **Decoding.** Temperature 0 or unset is greedy and deterministic; otherwise top-k, top-p
//!   and temperature sampling seeded by the request's `seed` (default 0, mixed with
//!   `rollout_id`). Stop strings end the reply and are cut from it; `max_tokens` (default
//!   [`EngineConfig::default_max_tokens`]) and the slot's context end it with
//!   [`promptopt_lm::FinishReason::Length`]. A prompt longer than
//!   [`EngineConfig::ctx_per_slot`] is [`promptopt_lm::LmError::ContextOverflow`].
//! - **Label sets.** A request with [`promptopt_lm::ResponseFormat::Choice`] (which the `turns`
//!   adapter sends for a single label output) decodes only tokens whose text keeps the reply a
//!   prefix of one of the choices, whatever tokens spell it, and ends as soon as the reply is a
//!   choice that no longer choice starts with. Greedy and sampled decoding both pick among those
//!   tokens only, so the reply is always a whole label (unless `max_tokens` cuts it first). A tiny
//!   model that would answer the question instead of naming its class now names a class, in a
//!   few tokens.
//! - **Determinism.** A request run again on the same cache state gives the same reply, greedy
//!   or seeded. llama.cpp's float results depend on the shape of the decode call and on which
//!   cache cells a sequence occupies, so the same request decoded from a cold prompt, from a
//!   reused prefix or together with other requests can see logits that differ by rounding. That
//!   flips near ties only: in the integration test at least 6 of 8 greedy classifications (in
//!   practice 7 or 8) match their lone run when decoded as a batch, while seeded sampling at
//!   temperature 1 diverges after a few tokens.
//!
//! # GPUs
//!
//! Build with the `cuda` feature (`cargo build --release -p promptopt-cli --features cuda`, or
//! `-p promptopt-engine` for the library; needs the CUDA toolkit, `nvcc` and its libraries, at
//! build time and an NVIDIA driver at run time) and describe the GPU with a
//! [`promptopt_lm::gpu::GpuConfig`] (device ids, layers, memory fraction, batch size);
//! [`EngineConfig::place_gpu`] turns it into [`EngineConfig::gpu_layers`],
//! [`EngineConfig::devices`], [`EngineConfig::slots`] and [`EngineConfig::gpu_memory_fraction`],
//! after checking that this build has CUDA ([`CUDA_BUILD`]) and that the devices exist
//! ([`detect_gpus`]). Without the feature a GPU that is asked for is an error that says how to
//! build one, or, with `required: false`, a warning and the CPU. Several devices split the
//! model's layers between them (llama.cpp's layer split): one engine, one batch.
//!
//! On the GPU the continuous batching is what pays: a decode step of many sequences costs
//! little more than one. [`EngineStats::mean_sequences_per_decode`] shows how full the batch was.
//! Without a GPU the CPU runs everything with [`EngineConfig::threads`] threads (default: all
//! cores).
//!
//! # Busy machines
//!
//! llama.cpp's CPU threads meet at a barrier after every operation and, by OpenMP's default,
//! spin while they wait. When other processes hold the cores, a spinning thread burns the time
//! slice its partner needs: on a 2-core machine at load average 8, `llama-bench` itself fell to
//! 10 prompt and 4.5 generated tokens/s with spinning against 68 and 25 with
//! `OMP_WAIT_POLICY=passive`. Set `OMP_WAIT_POLICY=passive` in the environment of any process
//! that runs an engine on a shared machine; the OpenMP runtime reads it when the process starts,
//! so the engine cannot set it for you. (Not measured on an idle machine, where spinning may
//! still be the faster choice.)
//!
//! # Serving
//!
//! [`server`] puts an OpenAI-compatible HTTP endpoint (`POST /v1/chat/completions`,
//! `GET /v1/models`, `GET /health`) in front of an engine; `promptopt serve-lm` runs it. It also
//! takes vLLM's `guided_choice` (a list of strings) and enforces it as above; the OpenAI-compatible
//! provider of `promptopt-lm` sends a choice that way to every server but OpenAI's own.

mod backend;
pub mod catalog;
mod choice;
mod config;
mod engine;
mod error;
mod gpu;
mod resolve;
mod router;
pub mod server;
mod stats;
mod stop;
pub mod template;
mod threads;
mod worker;

pub use config::EngineConfig;
pub use engine::{Engine, ModelInfo};
pub use error::EngineError;
pub use gpu::{detect_gpus, GpuDevice, GpuPlacement, ALL_GPU_LAYERS, CUDA_BUILD};
pub use resolve::{resolve_in, resolve_model, search_dirs, short_name};
pub use router::{model_stack, LocalModels};
pub use stats::EngineStats;
pub use template::{PromptRenderer, RenderedPrompt};
pub use threads::wait_for_engine_threads;
