//! `promptopt worker`: claims queued optimizations and runs them.

use std::process::ExitCode;
use std::sync::Arc;

use async_trait::async_trait;
use promptopt_jobs::{open_queue, parse_duration, LmFactory, Priority, Worker, WorkerConfig};
use promptopt_lm::SharedLm;
use promptopt_optimize::OptimizationRequest;
use promptopt_registry::{default_home, Registry};
use tokio::sync::watch;

use crate::common::{build_lm, usable_gpu, GpuArgs};
use crate::gpu_args::{check_at_start, GpuSources};
use crate::optimize::request_models;

/// Run queued optimizations.
#[derive(Debug, clap::Args)]
pub struct WorkerArgs {
    /// The queue: `redis://...`, `rediss://...` or `sqlite:PATH` (default: `PROMPTOPT_QUEUE`,
    /// else the embedded queue `PROMPTOPT_HOME/queue.sqlite`).
    #[arg(long)]
    pub queue: Option<String>,
    /// Jobs run at once.
    #[arg(long, default_value_t = 1)]
    pub concurrency: usize,
    /// The worker's name in job records and logs (default: host name and process id).
    #[arg(long)]
    pub name: Option<String>,
    /// The priorities it takes, comma-separated.
    #[arg(long, default_value = "high,normal,low")]
    pub queues: String,
    /// How long a job stays claimed without a heartbeat; after it, another worker takes the job
    /// over (heartbeats come every third of it).
    #[arg(long, default_value = "30s")]
    pub lease: String,
    /// On SIGTERM or Ctrl-C, how long running jobs may go on before they are handed back.
    #[arg(long, default_value = "10s")]
    pub grace: String,
    /// Examples evaluated at once inside a job (unless its request says otherwise) [default: 4,
    /// or the GPU's batch size when the job runs on a GPU].
    #[arg(long)]
    pub eval_concurrency: Option<usize>,
    /// Exit once nothing is ready to run.
    #[arg(long)]
    pub exit_when_empty: bool,
    /// Do not use the response cache (a resumed job then repeats the calls its checkpoint lacks).
    #[arg(long)]
    pub no_cache: bool,
    /// Where the embedded model runs (over each job's `gpu:` block).
    #[command(flatten)]
    pub gpu: GpuArgs,
}

/// Builds each job's models with the same stack as `promptopt optimize`.
pub(crate) struct CliModels {
    pub(crate) no_cache: bool,
    /// The worker's GPU settings, layered over each request's `gpu:` block.
    pub(crate) gpu: GpuSources,
    /// Whether the examples a job evaluates at once were set explicitly (`--eval-concurrency`):
    /// then a GPU's batch size does not change them.
    pub(crate) fixed_concurrency: bool,
}

#[async_trait]
impl LmFactory for CliModels {
    async fn lm_for(
        &self,
        request: &OptimizationRequest,
        concurrency: usize,
    ) -> Result<SharedLm, String> {
        let models = request_models(request);
        let gpu = self
            .gpu
            .resolve(request.gpu.as_ref())
            .and_then(|gpu| usable_gpu(gpu, &models))
            .map_err(|e| format!("{e:#}"))?;
        build_lm(&models, concurrency, self.no_cache, gpu.as_ref())
            .await
            .map_err(|e| format!("{e:#}"))
    }

    fn concurrency_for(&self, request: &OptimizationRequest, default: usize) -> usize {
        if self.fixed_concurrency {
            return default;
        }
        match self.gpu.resolve(request.gpu.as_ref()) {
            Ok(Some(gpu)) => gpu.batch_size,
            _ => default,
        }
    }
}

fn default_worker_name() -> String {
    let host = std::fs::read_to_string("/proc/sys/kernel/hostname")
        .ok()
        .or_else(|| std::env::var("HOSTNAME").ok())
        .map(|h| h.trim().to_string())
        .filter(|h| !h.is_empty())
        .unwrap_or_else(|| "worker".into());
    format!("{host}-{}", std::process::id())
}

/// Turns SIGTERM and Ctrl-C into a shutdown; a second one exits at once.
fn shutdown_on_signals() -> watch::Receiver<bool> {
    let (tx, rx) = watch::channel(false);
    let mut signals = Signals::listen();
    tokio::spawn(async move {
        let mut seen = 0;
        loop {
            signals.recv().await;
            seen += 1;
            if seen > 1 {
                std::process::exit(130);
            }
            tracing::info!("shutting down: no new jobs; running ones finish or are handed back");
            let _ = tx.send(true);
        }
    });
    rx
}

/// SIGTERM and Ctrl-C, listened for from the moment this is made: a signal that arrives before
/// anyone awaits [`Signals::recv`] is kept, not lost to the default action (which would kill
/// the process without its graceful shutdown).
pub(crate) struct Signals {
    #[cfg(unix)]
    term: Option<tokio::signal::unix::Signal>,
    #[cfg(unix)]
    interrupt: Option<tokio::signal::unix::Signal>,
}

impl Signals {
    /// Installs the handlers; call inside the runtime, before the process says it is ready.
    pub(crate) fn listen() -> Self {
        #[cfg(unix)]
        {
            use tokio::signal::unix::{signal, SignalKind};
            Signals {
                term: signal(SignalKind::terminate()).ok(),
                interrupt: signal(SignalKind::interrupt()).ok(),
            }
        }
        #[cfg(not(unix))]
        Signals {}
    }

    /// Waits for the next SIGTERM or Ctrl-C.
    pub(crate) async fn recv(&mut self) {
        #[cfg(unix)]
        {
            async fn next(signal: &mut Option<tokio::signal::unix::Signal>) {
                match signal {
                    Some(signal) => {
                        signal.recv().await;
                    }
                    None => std::future::pending::<()>().await,
                }
            }
            tokio::select! {
                () = next(&mut self.term) => {}
                () = next(&mut self.interrupt) => {}
            }
        }
        #[cfg(not(unix))]
        {
            let _ = tokio::signal::ctrl_c().await;
        }
    }
}

/// Runs `promptopt worker`.
pub async fn run(args: WorkerArgs) -> anyhow::Result<ExitCode> {
    let home = default_home();
    let queue = open_queue(args.queue.as_deref(), &home).await?;
    let mut config = WorkerConfig::new(args.name.unwrap_or_else(default_worker_name), &home);
    config.concurrency = args.concurrency.max(1);
    config.priorities = Priority::parse_list(&args.queues)?;
    config.lease = parse_duration(&args.lease)?;
    config.grace = parse_duration(&args.grace)?;
    // The worker's own GPU settings (flags, environment) are checked before it claims a job.
    let gpu = args.gpu.sources(None)?;
    let own = check_at_start(gpu.resolve(None)?)?;
    config.eval_concurrency = args
        .eval_concurrency
        .or(own.as_ref().map(|g| g.batch_size))
        .unwrap_or(4)
        .max(1);
    config.exit_when_empty = args.exit_when_empty;
    tracing::info!(
        worker = %config.name, queue = %queue.url(), concurrency = config.concurrency,
        priorities = %args.queues, lease_s = config.lease.as_secs_f64(), "worker started"
    );
    let worker = Arc::new(Worker::new(
        queue,
        Arc::new(CliModels {
            no_cache: args.no_cache,
            gpu,
            fixed_concurrency: args.eval_concurrency.is_some(),
        }),
        Registry::from_env(),
        config,
    ));
    let stats = worker.run(shutdown_on_signals()).await?;
    tracing::info!(
        claimed = stats.claimed,
        finished = stats.finished,
        lost = stats.lost,
        handed_back = stats.released,
        "worker stopped"
    );
    Ok(ExitCode::SUCCESS)
}
