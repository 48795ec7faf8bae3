//! `promptopt serve-lm`: the embedded model behind an OpenAI-compatible HTTP endpoint.

use std::process::ExitCode;

use anyhow::Context;
use promptopt_engine::server::Server;
use promptopt_engine::{Engine, EngineConfig};

use crate::common::GpuArgs;

/// Serve a local GGUF model over an OpenAI-compatible HTTP API (`/v1/chat/completions`).
#[derive(Debug, clap::Args)]
pub struct ServeLmArgs {
    /// The model: `local/smollm2-135m`, `local/gemma3-270m` or `local//path/to/model.gguf`.
    #[arg(long, default_value = "local/smollm2-135m")]
    pub model: String,
    /// Address to bind (loopback by default).
    #[arg(long, default_value = "127.0.0.1")]
    pub host: String,
    /// Port to bind (0 picks a free one).
    #[arg(long, default_value_t = 8080)]
    pub port: u16,
    /// Requests decoded together [default: 8; on a GPU, `--gpu-batch-size`, which this sets
    /// when given].
    #[arg(long)]
    pub slots: Option<u32>,
    /// Tokens per request (prompt plus reply).
    #[arg(long, default_value_t = 2048)]
    pub ctx: u32,
    /// CPU threads (default: all cores).
    #[arg(long)]
    pub threads: Option<u32>,
    /// Do not reuse the KV cache of shared prompt prefixes.
    #[arg(long)]
    pub no_prefix_reuse: bool,
    /// Where the model runs.
    #[command(flatten)]
    pub(crate) gpu: GpuArgs,
}

/// Loads the model and serves until Ctrl-C.
pub async fn run(args: ServeLmArgs) -> anyhow::Result<ExitCode> {
    // Flags, then `PROMPTOPT_GPU_*`; `--slots` counts as `--gpu-batch-size` on a GPU.
    let mut gpu = args.gpu.resolve(None)?;
    if let (Some(gpu), Some(slots), None) = (gpu.as_mut(), args.slots, args.gpu.gpu_batch_size) {
        if !(1..=256).contains(&slots) {
            anyhow::bail!("`--slots` {slots} is not between 1 and 256");
        }
        gpu.batch_size = usize::try_from(slots).unwrap_or(usize::MAX);
    }
    let config = EngineConfig {
        model: args.model.clone(),
        slots: args.slots.unwrap_or(8),
        ctx_per_slot: args.ctx,
        threads: args.threads,
        prefix_reuse: !args.no_prefix_reuse,
        ..EngineConfig::default()
    }
    .place_gpu(gpu.as_ref())
    .context("The GPU settings cannot be used")?
    .config;
    let engine = Engine::load_async(config)
        .await
        .with_context(|| format!("Could not load `{}`", args.model))?;
    let info = engine.info().clone();
    let gpu_layers = engine.config().gpu_layers;
    let server = Server::bind(engine, &args.host, args.port).await?;
    #[allow(clippy::print_stdout)]
    {
        let placement = if gpu_layers >= promptopt_engine::ALL_GPU_LAYERS {
            "all layers on the GPU".to_string()
        } else if gpu_layers > 0 {
            format!("{gpu_layers} layers on the GPU")
        } else {
            format!("{} threads", info.threads)
        };
        println!(
            "Serving `{}` ({}, {} slots × {} tokens, {placement}) on http://{}/v1",
            info.name,
            info.path.display(),
            info.slots,
            info.ctx_per_slot,
            server.local_addr()
        );
    }
    server
        .run_until(async {
            let _ = tokio::signal::ctrl_c().await;
        })
        .await?;
    Ok(ExitCode::SUCCESS)
}
