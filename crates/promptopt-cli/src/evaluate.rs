//! `promptopt evaluate`: score a prompt (instructions, demos, strategy) on a dataset.

use std::io::IsTerminal;
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::sync::Arc;

use anyhow::Context;
use promptopt_core::events::{EventSink, FnSink, NullSink};
use promptopt_core::{
    evaluate, metrics, CoreError, Dataset, EvalReport, EvalSettings, Event, Example, Program,
    ProgramState, Strategy,
};
use promptopt_registry::Registry;
use serde_json::json;

use crate::common::{print_stdout, Exit, LmArgs, ProgramFile, StrategyArg};

/// Score a prompt on a dataset.
#[derive(Debug, clap::Args)]
pub struct EvaluateArgs {
    /// The examples (`.jsonl`, `.json` or `.csv`).
    #[arg(long)]
    data: PathBuf,
    /// Input fields, comma-separated (inferred when omitted).
    #[arg(long, value_delimiter = ',')]
    input_keys: Option<Vec<String>>,
    /// Output fields, comma-separated (inferred when omitted).
    #[arg(long, value_delimiter = ',')]
    output_keys: Option<Vec<String>>,
    /// The metric (`accuracy`, `f1`, `exact_match`, `token_f1`, `rouge`, `bleu`, ...; default:
    /// the saved model's metric with `--model`, else `accuracy`).
    #[arg(long)]
    metric: Option<String>,
    /// A saved model (`NAME`, `NAME@VERSION`, `NAME@latest`): its signature, state, model and
    /// metric replace the prompt options.
    #[arg(long, conflicts_with_all = ["instructions", "demos", "train"])]
    model: Option<String>,
    #[command(flatten)]
    lm: LmArgs,
    /// Instructions (default: "Given the fields …, produce the fields …").
    #[arg(long)]
    instructions: Option<String>,
    /// Use the first N examples of `--train` as demos.
    #[arg(long, default_value_t = 0)]
    demos: usize,
    /// Where demos come from.
    #[arg(long)]
    train: Option<PathBuf>,
    /// Answer directly or reason first.
    #[arg(long, value_enum, default_value = "predict")]
    strategy: StrategyArg,
    /// Examples evaluated at once [default: 16, or the GPU's batch size on a GPU].
    #[arg(long)]
    concurrency: Option<usize>,
    /// Evaluate only the first N examples.
    #[arg(long)]
    limit: Option<usize>,
    /// Stop (exit 1) once more examples than this fail with an error.
    #[arg(long, default_value_t = 10)]
    max_errors: usize,
    /// Also write the program (signature and state) to this file, for `promptopt predict`.
    #[arg(long)]
    save_program: Option<PathBuf>,
    /// Print a JSON report instead of a table.
    #[arg(long)]
    json: bool,
}

/// Runs `promptopt evaluate`.
pub async fn run(args: EvaluateArgs) -> anyhow::Result<ExitCode> {
    match evaluate_cmd(args).await {
        Ok(code) => Ok(code),
        Err(exit) => Ok(exit.report()),
    }
}

fn data_error(error: CoreError) -> Exit {
    match error {
        CoreError::UnknownMetric { .. } | CoreError::Invalid { .. } => Exit::usage(error),
        other => Exit::failed(other),
    }
}

async fn evaluate_cmd(mut args: EvaluateArgs) -> Result<ExitCode, Exit> {
    let saved = match args.model.clone() {
        Some(reference) => {
            let artifact = Registry::from_env()
                .load_ref(&reference)
                .map_err(Exit::usage)?;
            args.lm.apply_saved(&artifact);
            args.input_keys
                .get_or_insert_with(|| artifact.program.input_keys().to_vec());
            args.output_keys
                .get_or_insert_with(|| artifact.program.output_keys().to_vec());
            if args.metric.is_none() {
                args.metric = artifact.metric_name().map(str::to_string);
            }
            Some(artifact)
        }
        None => None,
    };
    let dataset = Dataset::load(
        &args.data,
        args.input_keys.clone(),
        args.output_keys.clone(),
    )
    .map_err(data_error)?;
    let output_key = dataset.output_keys.first().cloned().unwrap_or_default();
    let metric_name = args
        .metric
        .clone()
        .unwrap_or_else(|| "accuracy".to_string());
    let metric = metrics::by_name(&metric_name, &output_key).map_err(data_error)?;
    let (program, state, models) = match saved {
        Some(artifact) => {
            let models = artifact.models();
            (artifact.program, artifact.state, models)
        }
        None => {
            let mut signature = dataset.signature();
            if let Some(instructions) = &args.instructions {
                signature.instructions.clone_from(instructions);
            }
            let demos = load_demos(&args, &dataset)?;
            let program = Program::single(signature);
            let mut state = program.initial_state();
            for predictor in state.predictors.values_mut() {
                predictor.demos.clone_from(&demos);
                predictor.strategy = args.strategy.into();
            }
            (program, state, vec![args.lm.model.clone()])
        }
    };
    // The GPU is checked before anything is written.
    let gpu = args.lm.gpu_for(&models)?;
    if let Some(path) = &args.save_program {
        save_program(path, &program, &state)?;
    }
    // On a GPU the batch is what pays: send as many examples at once as it holds.
    let concurrency = args
        .concurrency
        .unwrap_or_else(|| gpu.as_ref().map_or(16, |g| g.batch_size))
        .max(1);
    let runtime = args.lm.runtime(&models, concurrency, gpu.as_ref()).await?;
    let examples: &[Example] = match args.limit {
        Some(limit) => &dataset.examples[..limit.min(dataset.examples.len())],
        None => &dataset.examples,
    };
    let (events, bar) = progress(examples.len());
    let settings = EvalSettings {
        concurrency,
        max_errors: Some(args.max_errors),
        keep_traces: false,
        events,
        memo: None,
    };
    let report = evaluate(&program, &state, examples, &metric, &runtime, &settings).await;
    if let Some(bar) = bar {
        bar.finish_and_clear();
    }
    let report = report.map_err(Exit::failed)?;
    let output = if args.json {
        serde_json::to_string_pretty(&json_report(&args, &program, &state, &report))
            .context("Could not write the JSON report")
            .map_err(Exit::failed)?
    } else {
        table(&args, &program, &state, &report)
    };
    print_stdout(&output);
    Ok(ExitCode::SUCCESS)
}

fn load_demos(args: &EvaluateArgs, dataset: &Dataset) -> Result<Vec<Example>, Exit> {
    if args.demos == 0 {
        return Ok(Vec::new());
    }
    let Some(train) = &args.train else {
        return Err(Exit::usage(anyhow::anyhow!(
            "`--demos {}` needs `--train FILE` to take them from",
            args.demos
        )));
    };
    let train = Dataset::load(
        train,
        Some(dataset.input_keys.clone()),
        Some(dataset.output_keys.clone()),
    )
    .map_err(data_error)?;
    let keys: Vec<String> = dataset
        .input_keys
        .iter()
        .chain(&dataset.output_keys)
        .cloned()
        .collect();
    Ok(train
        .examples
        .iter()
        .take(args.demos)
        .map(|e| e.project(&keys))
        .collect())
}

fn save_program(path: &Path, program: &Program, state: &ProgramState) -> Result<(), Exit> {
    let file = ProgramFile {
        program: Some(program.clone()),
        signature: None,
        state: state.clone(),
    };
    let text = serde_json::to_string_pretty(&file)
        .context("Could not serialize the program")
        .map_err(Exit::failed)?;
    std::fs::write(path, text)
        .with_context(|| format!("Could not write `{}`", path.display()))
        .map_err(Exit::failed)
}

/// A progress bar on stderr when it is a terminal; no events otherwise.
fn progress(total: usize) -> (Arc<dyn EventSink>, Option<indicatif::ProgressBar>) {
    if !std::io::stderr().is_terminal() {
        return (Arc::new(NullSink), None);
    }
    let bar = indicatif::ProgressBar::new(total as u64);
    let style = indicatif::ProgressStyle::with_template(
        "{spinner} evaluating {bar:30} {pos}/{len} {msg} [{elapsed_precise}<{eta_precise}]",
    )
    .unwrap_or_else(|_| indicatif::ProgressStyle::default_bar());
    bar.set_style(style);
    let handle = bar.clone();
    let sink = FnSink(move |event: &Event| {
        if let Event::EvaluationProgress { done, score, .. } = event {
            handle.set_position(*done);
            handle.set_message(format!("score {score:.3}"));
        }
    });
    (Arc::new(sink), Some(bar))
}

/// Each stage as evaluated: its name, module and number of demos.
fn stages(program: &Program, state: &ProgramState) -> Vec<(String, &'static str, usize)> {
    program
        .stages()
        .iter()
        .map(|stage| {
            let predictor = state.predictor(&stage.name);
            let module = match predictor.map(|p| p.strategy) {
                Some(Strategy::ChainOfThought) => "chain_of_thought",
                _ => "predict",
            };
            (
                stage.name.clone(),
                module,
                predictor.map_or(0, |p| p.demos.len()),
            )
        })
        .collect()
}

fn json_report(
    args: &EvaluateArgs,
    program: &Program,
    state: &ProgramState,
    report: &EvalReport,
) -> serde_json::Value {
    let stages: Vec<serde_json::Value> = stages(program, state)
        .into_iter()
        .map(|(name, module, demos)| json!({"name": name, "module": module, "demos": demos}))
        .collect();
    let results: Vec<serde_json::Value> = report
        .results
        .iter()
        .map(|r| {
            json!({
                "index": r.index,
                "id": r.id,
                "score": finite(r.score),
                "prediction": r.prediction.as_ref().map(|p| &p.outputs),
                "feedback": r.feedback,
                "parse_error": r.parse_error,
                "error": r.error,
            })
        })
        .collect();
    json!({
        "score": finite(report.score),
        "raw_score": finite(report.raw_score),
        "metric": report.metric.name,
        "corpus": report.corpus,
        "normalized": report.normalized,
        "model": args.lm.model,
        "adapter": args.lm.adapter_kind().name(),
        "stages": stages,
        "examples": report.examples,
        "errors": report.errors,
        "parse_failures": report.parse_failures,
        "lm_calls": report.lm_calls,
        "cache_hits": report.cache_hits,
        "tokens": {
            "prompt": report.usage.prompt_tokens,
            "completion": report.usage.completion_tokens,
            "total": report.usage.total(),
        },
        "cost_usd": report.cost_usd,
        "latency_ms": report.latency,
        "wall_ms": report.wall_ms,
        "results": results,
    })
}

fn finite(value: f64) -> Option<f64> {
    value.is_finite().then_some(value)
}

fn table(
    args: &EvaluateArgs,
    program: &Program,
    state: &ProgramState,
    report: &EvalReport,
) -> String {
    let described: Vec<String> = stages(program, state)
        .into_iter()
        .map(|(name, module, demos)| {
            let module = module.replace('_', " ");
            if program.stages().len() == 1 {
                format!("{module}, {demos} demos")
            } else {
                format!("{name} ({module}, {demos} demos)")
            }
        })
        .collect();
    let mut rows: Vec<(&str, String)> = vec![
        ("data", args.data.display().to_string()),
        ("model", args.lm.model.clone()),
        (
            "prompt",
            format!(
                "{} adapter, {}",
                args.lm.adapter_kind().name(),
                described.join("; ")
            ),
        ),
        ("examples", report.examples.to_string()),
        ("metric", report.metric.name.clone()),
    ];
    let score = if report.normalized {
        format!("{:.4}", report.score)
    } else {
        format!("{:.4} (unbounded metric, raw)", report.score)
    };
    rows.push(("score", score));
    if report.corpus || (report.raw_score - report.score).abs() > 1e-12 {
        rows.push(("raw score", format!("{:.4}", report.raw_score)));
    }
    rows.push(("parse failures", report.parse_failures.to_string()));
    rows.push(("errors", report.errors.to_string()));
    rows.push((
        "LM calls",
        format!("{} ({} from cache)", report.lm_calls, report.cache_hits),
    ));
    rows.push((
        "tokens",
        format!(
            "{} prompt + {} completion",
            report.usage.prompt_tokens, report.usage.completion_tokens
        ),
    ));
    rows.push((
        "cost",
        report
            .cost_usd
            .map_or_else(|| "unknown".to_string(), |c| format!("${c:.6}")),
    ));
    rows.push((
        "latency",
        format!(
            "p50 {:.1} ms · p95 {:.1} ms · p99 {:.1} ms",
            report.latency.p50_ms, report.latency.p95_ms, report.latency.p99_ms
        ),
    ));
    rows.push(("wall time", format!("{:.2} s", report.wall_ms / 1000.0)));
    let width = rows.iter().map(|(k, _)| k.len()).max().unwrap_or(0);
    rows.iter()
        .map(|(k, v)| format!("{k:<width$}  {v}"))
        .collect::<Vec<_>>()
        .join("\n")
}
