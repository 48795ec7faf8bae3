//! Client overhead of an evaluation: rendering, the HTTP client, parsing and scoring.
//!
//! Evaluates 10,000 examples (SST-2 train, dev and test concatenated and repeated) through the
//! whole model stack against the instant loopback server of `promptopt-lm` (cache off), and
//! prints evaluations per second and client CPU per evaluation. The server runs on its own
//! thread and its CPU time is subtracted from the process's.
//!
//! ```text
//! cargo run --release -p promptopt-core --example eval_bench -- \
//!     [--data DIR] [--examples 10000] [--concurrency 32] [--demos 5]
//! ```
#![allow(clippy::print_stdout, clippy::print_stderr)]

use std::path::PathBuf;
use std::time::{Duration, Instant};

use promptopt_core::dataset::load_examples;
use promptopt_core::{evaluate, metrics, EvalSettings, LmRegistry, Program, RunSettings, Runtime};
use promptopt_lm::testing::{process_cpu_time, FixedReplyServer};
use promptopt_lm::{LmConfig, LmStack};

struct Args {
    data: PathBuf,
    examples: usize,
    concurrency: usize,
    demos: usize,
}

fn args() -> Result<Args, String> {
    let mut args = Args {
        data: PathBuf::from("/work/shared/datasets/sst2"),
        examples: 10_000,
        concurrency: 32,
        demos: 5,
    };
    let mut it = std::env::args().skip(1);
    while let Some(flag) = it.next() {
        let value = it.next().ok_or_else(|| format!("`{flag}` needs a value"))?;
        let number = || {
            value
                .parse::<usize>()
                .map_err(|e| format!("`{flag} {value}`: {e}"))
        };
        match flag.as_str() {
            "--data" => args.data = PathBuf::from(&value),
            "--examples" => args.examples = number()?,
            "--concurrency" => args.concurrency = number()?,
            "--demos" => args.demos = number()?,
            other => return Err(format!("Unknown flag `{other}`")),
        }
    }
    Ok(args)
}

#[tokio::main]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    let args = args()?;
    let mut pool = Vec::new();
    for split in ["train", "dev", "test"] {
        pool.extend(load_examples(args.data.join(format!("{split}.jsonl")))?);
    }
    let dataset = promptopt_core::Dataset::new(
        pool.clone(),
        Some(vec!["text".into()]),
        Some(vec!["label".into()]),
        "sst2",
    )?;
    let examples: Vec<_> = pool.iter().cycle().take(args.examples).cloned().collect();

    let server = FixedReplyServer::start("[[ ## label ## ]]\npositive\n\n[[ ## completed ## ]]")?;
    let mut config = LmConfig::default().with_base_url("openai", server.base_url());
    config.cache.enabled = false;
    let lm = LmStack::new(config).with_cache(None).assemble()?;
    let runtime = Runtime::new(LmRegistry::new("openai/bench", lm)).with_settings(RunSettings {
        use_cache: false,
        ..RunSettings::default()
    });
    let program = Program::single(
        dataset
            .signature()
            .with_instructions("Classify the sentiment of the movie review."),
    );
    let mut state = program.initial_state();
    if let Some(predictor) = state.predictor_mut("predict") {
        predictor.demos = pool.iter().take(args.demos).cloned().collect();
    }
    let metric = metrics::by_name("accuracy", "label")?;
    let settings = EvalSettings {
        concurrency: args.concurrency,
        max_errors: Some(0),
        keep_traces: false,
        ..EvalSettings::default()
    };

    // Warm up connections and allocators.
    evaluate(
        &program,
        &state,
        &examples[..200.min(examples.len())],
        &metric,
        &runtime,
        &settings,
    )
    .await?;

    let server_before = server.cpu_time().unwrap_or_default();
    let cpu_before = process_cpu_time().unwrap_or_default();
    let started = Instant::now();
    let report = evaluate(&program, &state, &examples, &metric, &runtime, &settings).await?;
    let wall = started.elapsed();
    let cpu = process_cpu_time()
        .unwrap_or_default()
        .saturating_sub(cpu_before);
    let server_cpu = server
        .cpu_time()
        .unwrap_or_default()
        .saturating_sub(server_before);
    let client = cpu.saturating_sub(server_cpu);
    let n = report.examples as f64;
    let per_eval = |d: Duration| d.as_secs_f64() * 1e6 / n;
    println!(
        "examples {} · concurrency {} · demos {} · score {:.3} · errors {} · parse failures {}",
        report.examples,
        args.concurrency,
        args.demos,
        report.score,
        report.errors,
        report.parse_failures
    );
    println!(
        "wall {:.2} s · {:.0} evaluations/s",
        wall.as_secs_f64(),
        n / wall.as_secs_f64()
    );
    println!(
        "client CPU {:.1} µs/evaluation (process {:.1} − server thread {:.1})",
        per_eval(client),
        per_eval(cpu),
        per_eval(server_cpu)
    );
    Ok(())
}
