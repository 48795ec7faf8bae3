//! The `promptopt` command line: a thin layer over the promptopt libraries.

use std::process::ExitCode;

use clap::{Parser, Subcommand};

mod common;
mod evaluate;
mod experiments_cmd;
mod gpu_args;
mod jobs_cmd;
mod learn_cmd;
mod models_cmd;
mod optimize;
mod predict;
#[cfg(feature = "engine")]
mod pull;
mod remote;
mod runs_cmd;
mod serve_cmd;
#[cfg(feature = "engine")]
mod serve_lm;
mod worker_cmd;

/// Automatic prompt optimization.
#[derive(Debug, Parser)]
#[command(name = "promptopt", version, about, long_about = None)]
struct Cli {
    /// More log output on stderr (repeat for more).
    #[arg(short, long, global = true, action = clap::ArgAction::Count)]
    verbose: u8,
    #[command(subcommand)]
    command: Command,
}

/// The subcommands. Each lives in its own module.
#[derive(Debug, Subcommand)]
enum Command {
    /// Optimize a program as a request file describes and save it in the registry.
    Optimize(optimize::OptimizeArgs),
    /// Manage saved models (list, show, delete, save, import, promote, export).
    Models(models_cmd::ModelsArgs),
    /// Score a prompt (instructions, demos, strategy) on a dataset.
    Evaluate(evaluate::EvaluateArgs),
    /// Run a saved program on one input.
    Predict(predict::PredictArgs),
    /// Search, read and sync tracked runs (MLflow server or the embedded store).
    Runs(runs_cmd::RunsArgs),
    /// Queue optimizations for workers (submit, status, watch, result, cancel, list, retry).
    Jobs(jobs_cmd::JobsArgs),
    /// Run queued optimizations (Redis or the embedded queue) until stopped.
    Worker(worker_cmd::WorkerArgs),
    /// Serve the HTTP API: optimizations, jobs, models and predictions, behind tokens.
    Serve(serve_cmd::ServeArgs),
    /// A/B experiments between versions of a model on a `promptopt serve` API.
    Experiments(experiments_cmd::ExperimentsArgs),
    /// Continuous learning of a model on a `promptopt serve` API (enable, status, history,
    /// rollback, export).
    Learn(learn_cmd::LearnArgs),
    /// Serve a local GGUF model over an OpenAI-compatible HTTP API.
    #[cfg(feature = "engine")]
    ServeLm(serve_lm::ServeLmArgs),
}

fn init_tracing(verbose: u8) {
    let default = match verbose {
        0 => "warn",
        1 => "info",
        2 => "debug",
        _ => "trace",
    };
    let filter = tracing_subscriber::EnvFilter::try_from_env("PROMPTOPT_LOG")
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new(default));
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr);
    // `PROMPTOPT_LOG_FORMAT=json`: one JSON object per line, for log collectors.
    let json = std::env::var("PROMPTOPT_LOG_FORMAT").is_ok_and(|f| f.eq_ignore_ascii_case("json"));
    let _ = if json {
        builder.json().try_init()
    } else {
        builder
            .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
            .try_init()
    };
}

#[allow(clippy::print_stderr)]
fn main() -> ExitCode {
    let cli = Cli::parse();
    // A worker's and a server's log is their output: info by default.
    let verbose = if matches!(cli.command, Command::Worker(_) | Command::Serve(_)) {
        cli.verbose.max(1)
    } else {
        cli.verbose
    };
    init_tracing(verbose);
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
    {
        Ok(runtime) => runtime,
        Err(error) => {
            eprintln!("error: Could not start the async runtime: {error}");
            return ExitCode::from(2);
        }
    };
    let result: anyhow::Result<ExitCode> = runtime.block_on(async move {
        match cli.command {
            Command::Optimize(args) => optimize::run(args).await,
            Command::Models(args) => models_cmd::run(args).await,
            Command::Evaluate(args) => evaluate::run(args).await,
            Command::Predict(args) => predict::run(args).await,
            Command::Runs(args) => runs_cmd::run(args).await,
            Command::Jobs(args) => jobs_cmd::run(args).await,
            Command::Worker(args) => worker_cmd::run(args).await,
            Command::Serve(args) => serve_cmd::run(args).await,
            Command::Experiments(args) => experiments_cmd::run(args).await,
            Command::Learn(args) => learn_cmd::run(args).await,
            #[cfg(feature = "engine")]
            Command::ServeLm(args) => serve_lm::run(args).await,
        }
    });
    // Tasks still in the runtime may hold an engine; dropping them closes its queue. Its thread
    // then returns after the decode step in progress, which the process waits for: exiting during
    // that step would run llama.cpp's global destructors under a running decode.
    runtime.shutdown_timeout(std::time::Duration::from_secs(5));
    #[cfg(feature = "engine")]
    if !promptopt_engine::wait_for_engine_threads(std::time::Duration::from_secs(30)) {
        tracing::warn!("An engine thread was still decoding 30 s after the command ended");
    }
    match result {
        Ok(code) => code,
        Err(error) => {
            eprintln!("error: {}", error_text(&error));
            ExitCode::from(2)
        }
    }
}

/// An error and its causes joined by `: `, leaving out a cause whose text the message already
/// holds (library errors often name their cause in their own message too).
fn error_text(error: &anyhow::Error) -> String {
    let mut text = error.to_string();
    for cause in error.chain().skip(1) {
        let cause = cause.to_string();
        if !text.contains(&cause) {
            text.push_str(": ");
            text.push_str(&cause);
        }
    }
    text
}

#[cfg(test)]
mod tests {
    use super::error_text;

    /// An error that names its cause in its message and also returns it as its source.
    #[derive(Debug)]
    struct Outer {
        source: std::io::Error,
    }

    impl std::fmt::Display for Outer {
        fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
            write!(f, "The model call failed: {}", self.source)
        }
    }

    impl std::error::Error for Outer {
        fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
            Some(&self.source)
        }
    }

    #[test]
    fn a_cause_the_message_already_names_is_not_repeated() {
        let io = || std::io::Error::other("connection refused");
        let error = anyhow::Error::new(Outer { source: io() }).context("Optimizing `req.yaml`");
        assert_eq!(
            error_text(&error),
            "Optimizing `req.yaml`: The model call failed: connection refused"
        );
        let plain = anyhow::Error::new(io()).context("Reading `data.jsonl`");
        assert_eq!(
            error_text(&plain),
            "Reading `data.jsonl`: connection refused"
        );
    }
}
