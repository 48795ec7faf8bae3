//! `promptopt serve`: the HTTP API over the queue, the registry and saved models.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::Arc;

use anyhow::Context;
use async_trait::async_trait;
use promptopt_jobs::{open_queue, Worker, WorkerConfig};
use promptopt_lm::SharedLm;
use promptopt_registry::{default_home, Registry};
use promptopt_server::{ModelLms, ServeConfig, Server, ServerError, Tokens};
use tokio::sync::watch;

use crate::common::{build_lm, print_stdout, GpuArgs};
use crate::gpu_args::{check_at_start, usable_gpu, GpuSources};
use crate::worker_cmd::{CliModels, Signals};

/// Serve the HTTP API: optimizations, jobs, models, predictions.
#[derive(Debug, clap::Args)]
pub struct ServeArgs {
    /// Where to listen (default: the configuration's `bind`, else `127.0.0.1:8000`).
    #[arg(long)]
    bind: Option<String>,
    /// A YAML configuration: tokens, body limit, timeout, concurrency limit, batch size.
    #[arg(long)]
    config: Option<PathBuf>,
    /// The job queue (default: `PROMPTOPT_QUEUE`, else the embedded queue).
    #[arg(long)]
    queue: Option<String>,
    /// The database of experiments, feedback and the prediction log: `sqlite:PATH` or
    /// `postgres://...` (default: the configuration's `database`, else
    /// `sqlite:PROMPTOPT_HOME/server.sqlite`).
    #[arg(long, env = "PROMPTOPT_DATABASE", hide_env_values = true)]
    database: Option<String>,
    /// Run this many workers inside the server, so that submitted optimizations run without a
    /// separate `promptopt worker`.
    #[arg(long, default_value_t = 0)]
    workers: usize,
    /// Accept requests without a token (only on a loopback address).
    #[arg(long)]
    no_auth: bool,
    /// Do not use the response cache for predictions and in-process workers.
    #[arg(long)]
    no_cache: bool,
    /// Print the OpenAPI document and exit.
    #[arg(long)]
    print_openapi: bool,
    /// Where the embedded model runs, for predictions and in-process workers (over the
    /// configuration's `gpu:` block).
    #[command(flatten)]
    gpu: GpuArgs,
}

/// Predictions use the same model stack as `promptopt predict`.
struct CliLms {
    no_cache: bool,
    /// The server's GPU, checked at start; `None` on the CPU.
    gpu: Option<promptopt_lm::gpu::GpuConfig>,
}

#[async_trait]
impl ModelLms for CliLms {
    async fn lm_for(&self, models: &[String]) -> Result<SharedLm, String> {
        let gpu = usable_gpu(self.gpu.clone(), models).map_err(|e| format!("{e:#}"))?;
        let slots = gpu.as_ref().map_or(8, |g| g.batch_size);
        build_lm(models, slots, self.no_cache, gpu.as_ref())
            .await
            .map_err(|e| format!("{e:#}"))
    }
}

fn tokens(args: &ServeArgs, config: &ServeConfig, addr: SocketAddr) -> Result<Tokens, ServerError> {
    if args.no_auth {
        if !addr.ip().is_loopback() {
            return Err(ServerError::NoAuthNotLoopback { addr });
        }
        return Ok(Tokens::disabled());
    }
    let mut tokens = Tokens::default();
    if let Ok(list) = std::env::var("PROMPTOPT_API_TOKENS") {
        tokens.add_list(&list, "`PROMPTOPT_API_TOKENS`")?;
    }
    let source = args
        .config
        .as_ref()
        .map_or_else(String::new, |p| format!("`{}`", p.display()));
    tokens.add_specs(&config.tokens, &source)?;
    if tokens.is_empty() {
        return Err(ServerError::NoTokens);
    }
    Ok(tokens)
}

/// Runs `promptopt serve`.
pub async fn run(args: ServeArgs) -> anyhow::Result<ExitCode> {
    if args.print_openapi {
        print_stdout(&promptopt_server::openapi_json());
        return Ok(ExitCode::SUCCESS);
    }
    let mut config = match &args.config {
        Some(path) => ServeConfig::from_path(path)?,
        None => ServeConfig::default(),
    };
    // The console links saved versions to their MLflow runs on the tracking server's UI.
    if config.mlflow_ui.is_none() {
        config.mlflow_ui = std::env::var("MLFLOW_TRACKING_URI")
            .ok()
            .filter(|u| u.starts_with("http://") || u.starts_with("https://"))
            .map(|u| redact_userinfo(&u));
    }
    let bind = args
        .bind
        .clone()
        .or_else(|| config.bind.clone())
        .unwrap_or_else(|| "127.0.0.1:8000".into());
    let addr: SocketAddr = tokio::net::lookup_host(&bind)
        .await
        .ok()
        .and_then(|mut a| a.next())
        .with_context(|| {
            format!("`{bind}` is not an address to listen on (e.g. `127.0.0.1:8000`)")
        })?;
    let tokens = tokens(&args, &config, addr)?;
    // Flags, then `PROMPTOPT_GPU_*`, then the configuration's `gpu:` block; a GPU that cannot be
    // used stops the server here.
    let gpu: GpuSources = args.gpu.sources(config.gpu.clone())?;
    let server_gpu = check_at_start(gpu.resolve(None)?)?;
    let home = default_home();
    let queue = open_queue(args.queue.as_deref(), &home).await?;
    let listener = tokio::net::TcpListener::bind(addr)
        .await
        .map_err(|source| ServerError::Bind {
            addr: bind.clone(),
            source,
        })?;
    let local = listener.local_addr().unwrap_or(addr);
    let (stop_tx, stop_rx) = watch::channel(false);
    let mut workers = Vec::new();
    for i in 0..args.workers {
        let mut worker_config =
            WorkerConfig::new(format!("serve-{}-{i}", std::process::id()), &home);
        worker_config.concurrency = 1;
        let worker = Arc::new(Worker::new(
            Arc::clone(&queue),
            Arc::new(CliModels {
                no_cache: args.no_cache,
                gpu: gpu.clone(),
                fixed_concurrency: false,
            }),
            Registry::new(&home),
            worker_config,
        ));
        let rx = stop_rx.clone();
        workers.push(tokio::spawn(async move { worker.run(rx).await }));
    }
    tracing::info!(
        address = %local, queue = %queue.url(), registry = %home.display(),
        database = %promptopt_experiments::redact(args.database.as_deref().or(config.database.as_deref()).unwrap_or("sqlite (default)")),
        auth = if tokens.is_disabled() { "off" } else { "bearer tokens" },
        tokens = tokens.len(), workers = args.workers, "serving"
    );
    // Listen for SIGTERM before saying we are up: a script that reads the address and signals
    // at once must get the graceful shutdown, not the default action.
    let mut signals = Signals::listen();
    // The address on stdout, for scripts that start the server on port 0.
    print_stdout(&format!("promptopt serve: listening on http://{local}"));
    tracing::info!(url = %format!("http://{local}/ui"), "web console");
    let database = args
        .database
        .clone()
        .or_else(|| config.database.clone())
        .unwrap_or_else(|| format!("sqlite:{}", home.join("server.sqlite").display()));
    let server = Server::new(
        Registry::new(&home),
        queue,
        Arc::new(CliLms {
            no_cache: args.no_cache,
            gpu: server_gpu,
        }),
        tokens,
        config,
    )
    .with_database(&database)
    .await?;
    let shutdown = async move {
        signals.recv().await;
        tracing::info!("shutting down: draining in-flight requests");
        let _ = stop_tx.send(true);
    };
    server.serve(listener, shutdown).await?;
    for worker in workers {
        match worker.await {
            Ok(Ok(_)) => {}
            Ok(Err(e)) => tracing::warn!(error = %e, "an in-process worker stopped with an error"),
            Err(e) => tracing::warn!(error = %e, "an in-process worker panicked"),
        }
    }
    tracing::info!("stopped");
    Ok(ExitCode::SUCCESS)
}

/// `https://user:secret@host/` without its user information (the console shows the address).
fn redact_userinfo(url: &str) -> String {
    match url.split_once("://") {
        Some((scheme, rest)) => {
            let (authority, path) = rest.split_at(rest.find('/').unwrap_or(rest.len()));
            let host = authority.rsplit_once('@').map_or(authority, |(_, h)| h);
            format!("{scheme}://{host}{path}")
        }
        None => url.to_string(),
    }
}

#[cfg(test)]
mod tests {
    #[test]
    fn the_mlflow_address_loses_its_credentials() {
        assert_eq!(
            super::redact_userinfo("https://me:s3cret@mlflow.example:5000/x"),
            "https://mlflow.example:5000/x"
        );
        assert_eq!(
            super::redact_userinfo("http://127.0.0.1:5000"),
            "http://127.0.0.1:5000"
        );
    }
}
