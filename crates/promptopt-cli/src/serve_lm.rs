//! `promptopt serve-lm`: the embedded model behind an OpenAI-compatible HTTP endpoint.

use std::process::ExitCode;

use anyhow::Context;
use promptopt_engine::server::Server;
use promptopt_engine::{Engine, EngineConfig};

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
    /// Requests decoded together.
    #[arg(long, default_value_t = 8)]
    pub slots: u32,
    /// Tokens per request (prompt plus reply).
    #[arg(long, default_value_t = 2048)]
    pub ctx: u32,
    /// CPU threads (default: all cores).
    #[arg(long)]
    pub threads: Option<u32>,
    /// Layers to offload to the GPU (builds with the `cuda` feature).
    #[arg(long, default_value_t = 0)]
    pub gpu_layers: u32,
    /// Do not reuse the KV cache of shared prompt prefixes.
    #[arg(long)]
    pub no_prefix_reuse: bool,
}

/// Loads the model and serves until Ctrl-C.
pub async fn run(args: ServeLmArgs) -> anyhow::Result<ExitCode> {
    let config = EngineConfig {
        model: args.model.clone(),
        slots: args.slots,
        ctx_per_slot: args.ctx,
        threads: args.threads,
        gpu_layers: args.gpu_layers,
        prefix_reuse: !args.no_prefix_reuse,
        ..EngineConfig::default()
    };
    let engine = Engine::load_async(config)
        .await
        .with_context(|| format!("Could not load `{}`", args.model))?;
    let info = engine.info().clone();
    let server = Server::bind(engine, &args.host, args.port).await?;
    #[allow(clippy::print_stdout)]
    {
        println!(
            "Serving `{}` ({}, {} slots × {} tokens, {} threads) on http://{}/v1",
            info.name,
            info.path.display(),
            info.slots,
            info.ctx_per_slot,
            info.threads,
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
