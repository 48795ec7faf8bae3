//! promptopt side of the overhead benchmark: evaluate one predictor over a JSONL file against an
//! OpenAI-compatible server with promptopt's evaluator and report throughput and client CPU.
//!
//! ```sh
//! cargo run --release -p promptopt-bench --example promptopt_overhead -- \
//!     --data examples.jsonl --base-url http://127.0.0.1:PORT/v1 --concurrency 32 --cache off
//! ```
//!
//! `--cache off` sends every request; `--cache memory` first fills the in-memory response cache
//! with one untimed pass, then times a second pass answered from it. Prints one JSON line.
#![allow(clippy::print_stdout, clippy::print_stderr)]

use std::process::ExitCode;
use std::sync::Arc;
use std::time::Instant;

use clap::{Parser, ValueEnum};
use promptopt_bench::process_usage;
use promptopt_core::dataset::load_examples;
use promptopt_core::events::NullSink;
use promptopt_core::metrics::by_name;
use promptopt_core::{
    evaluate, EvalSettings, Field, LmRegistry, Program, RunSettings, Runtime, Signature,
};
use promptopt_lm::{CacheConfig, LmConfig, LmStack};
use serde_json::json;

/// The same instructions the DSPy side uses (`bench/dspy/tasks.py`, task `sst2`).
const INSTRUCTIONS: &str =
    "Classify the sentiment of the sentence. Answer with one word: positive or negative.";

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
enum CacheMode {
    Off,
    Memory,
}

/// Evaluates a sentiment predictor against an OpenAI-compatible server.
#[derive(Debug, Parser)]
struct Args {
    /// JSONL file with `text` and `label`.
    #[arg(long)]
    data: std::path::PathBuf,
    /// Base URL of the server, e.g. `http://127.0.0.1:8080/v1`.
    #[arg(long)]
    base_url: String,
    /// Examples in flight at once.
    #[arg(long, default_value_t = 32)]
    concurrency: usize,
    /// Response cache.
    #[arg(long, value_enum, default_value = "off")]
    cache: CacheMode,
    /// Model name sent to the server.
    #[arg(long, default_value = "openai/bench")]
    model: String,
}

fn main() -> ExitCode {
    let args = Args::parse();
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
    {
        Ok(runtime) => runtime,
        Err(error) => {
            eprintln!("error: Could not start the runtime: {error}");
            return ExitCode::FAILURE;
        }
    };
    match runtime.block_on(run(args)) {
        Ok(report) => {
            println!("{report}");
            ExitCode::SUCCESS
        }
        Err(error) => {
            eprintln!("error: {error}");
            ExitCode::FAILURE
        }
    }
}

async fn run(args: Args) -> Result<serde_json::Value, Box<dyn std::error::Error>> {
    let examples = load_examples(&args.data)?;
    let signature = Signature::new(vec![Field::text("text")], vec![Field::text("label")])
        .with_instructions(INSTRUCTIONS);
    let program = Program::single(signature);
    let state = program.initial_state();

    let cached = args.cache == CacheMode::Memory;
    let mut config = LmConfig::default()
        .with_base_url("openai", &args.base_url)
        .with_api_key("openai", "none");
    config.cache = CacheConfig {
        enabled: cached,
        memory_entries: examples.len().max(1) * 2,
        disk_dir: None,
        ..CacheConfig::default()
    };
    let lm = LmStack::build(config)?;
    let runtime = Runtime::new(LmRegistry::new(args.model.clone(), Arc::clone(&lm))).with_settings(
        RunSettings {
            use_cache: cached,
            ..RunSettings::default()
        },
    );
    let metric = by_name("accuracy", "label")?;
    let settings = EvalSettings {
        concurrency: args.concurrency,
        max_errors: None,
        keep_traces: false,
        events: Arc::new(NullSink),
        memo: None,
    };
    if cached {
        evaluate(&program, &state, &examples, &metric, &runtime, &settings).await?;
    }
    let cpu0 = process_usage().cpu_s;
    let wall0 = Instant::now();
    let report = evaluate(&program, &state, &examples, &metric, &runtime, &settings).await?;
    let wall = wall0.elapsed().as_secs_f64();
    let usage = process_usage();
    let cpu = usage.cpu_s - cpu0;
    let n = examples.len() as f64;
    Ok(json!({
        "framework": "promptopt",
        "concurrency": args.concurrency,
        "cache": if cached { "memory" } else { "off" },
        "examples": examples.len(),
        "score": report.score,
        "eval_wall_s": wall,
        "eval_cpu_s": cpu,
        "evals_per_s": n / wall,
        "cpu_ms_per_eval": 1000.0 * cpu / n,
        "peak_rss_mb": usage.peak_rss_mb,
        "lm_calls": report.lm_calls,
        "cache_hits": report.cache_hits,
        "parse_failures": report.parse_failures,
        "errors": report.errors,
        "tokens": report.usage.total(),
    }))
}
