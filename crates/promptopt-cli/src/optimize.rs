//! `promptopt optimize REQUEST.yaml`: run an optimization request, show progress, save the model.

use std::io::IsTerminal;
use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context;
use indicatif::{ProgressBar, ProgressStyle};
use parking_lot::Mutex;
use promptopt_optimize::plot::trajectory_svg;
use promptopt_optimize::{
    CancelFlag, Event, EventSink, OptimizationRequest, OptimizationResult, Pipeline, TrialKind,
};

use crate::common::{build_lm, usable_gpu, GpuArgs};
use promptopt_core::events::FanOut;
use promptopt_registry::{default_home, Registry};
use promptopt_tracking::{Tracker, TrackingConfig};

/// Optimize a program as a request file describes, then save it in the registry.
#[derive(Debug, clap::Args)]
pub struct OptimizeArgs {
    /// The request file (YAML or JSON).
    pub request: PathBuf,
    /// Print the result as JSON on stdout (progress still goes to stderr).
    #[arg(long)]
    pub json: bool,
    /// Folder for `result.json` and `trajectory.svg` (default: `PROMPTOPT_HOME/runs/<id>`).
    #[arg(long)]
    pub output: Option<PathBuf>,
    /// The saved model's name (default: the request's `name`, else the file's stem).
    #[arg(long)]
    pub name: Option<String>,
    /// Examples evaluated at once (the request's `concurrency` wins) [default: 4, or the GPU's
    /// batch size on a GPU].
    #[arg(long)]
    pub concurrency: Option<usize>,
    /// Do not use the response cache.
    #[arg(long)]
    pub no_cache: bool,
    /// The seed of every random choice, instead of the request's `seed` (to repeat a run with
    /// other seeds).
    #[arg(long)]
    pub seed: Option<u64>,
    /// The model that proposes instructions and reflects, instead of the request's
    /// `prompt_model`.
    #[arg(long)]
    pub prompt_model: Option<String>,
    /// Stop cleanly (keeping the best so far) when this file appears.
    #[arg(long)]
    pub stop_file: Option<PathBuf>,
    /// Where the run is tracked: an MLflow server URL or `file:PATH` (default:
    /// `MLFLOW_TRACKING_URI`, else the request's `tracking_uri`, else `PROMPTOPT_HOME/mlruns`).
    #[arg(long)]
    pub tracking_uri: Option<String>,
    /// Run it as a job on this queue (`redis://...` or `sqlite:PATH`) and wait for a worker to
    /// finish it, printing the same summary (the `--gpu*` flags go into the request's `gpu:`
    /// block; the worker's own flags and environment win over them).
    #[arg(long)]
    pub queue: Option<String>,
    /// Where the embedded model runs.
    #[command(flatten)]
    pub(crate) gpu: GpuArgs,
}

impl OptimizeArgs {
    /// The flags that stand in for request fields: `--seed` and `--prompt-model` win over the
    /// request's `seed` and `prompt_model`.
    fn apply_overrides(&self, request: &mut OptimizationRequest) {
        if let Some(seed) = self.seed {
            request.seed = seed;
        }
        if let Some(prompt_model) = &self.prompt_model {
            request.prompt_model = Some(prompt_model.clone());
        }
    }
}

/// Progress bars on stderr, one per stage.
struct Progress {
    bar: Mutex<Option<ProgressBar>>,
    state: Mutex<(String, f64, u64, f64, String)>,
}

impl Progress {
    fn new() -> Self {
        Self {
            bar: Mutex::new(None),
            state: Mutex::new((String::new(), f64::NAN, 0, 0.0, String::new())),
        }
    }

    fn refresh(&self) {
        let (stage, best, calls, cost, extra) = self.state.lock().clone();
        let best = if best.is_nan() {
            "-".to_string()
        } else {
            format!("{best:.4}")
        };
        if let Some(bar) = self.bar.lock().as_ref() {
            bar.set_prefix(stage);
            bar.set_message(format!("best {best} | calls {calls} | ${cost:.4} {extra}"));
        }
    }
}

impl EventSink for Progress {
    fn emit(&self, event: &Event) {
        match event {
            Event::StageStarted { stage, .. }
                if matches!(
                    stage.as_str(),
                    "load" | "baseline" | "optimize" | "validate" | "test" | "save"
                ) =>
            {
                let bar = ProgressBar::new_spinner();
                bar.set_style(
                    ProgressStyle::with_template("{spinner} {prefix:>9} {elapsed:>4} {msg}")
                        .unwrap_or_else(|_| ProgressStyle::default_spinner()),
                );
                bar.enable_steady_tick(Duration::from_millis(120));
                if let Some(old) = self.bar.lock().replace(bar) {
                    old.finish();
                }
                let mut s = self.state.lock();
                s.0 = stage.clone();
                s.4.clear();
            }
            Event::StageStarted { stage, .. } => {
                self.state.lock().4 = format!("| {stage}");
            }
            Event::StageProgress {
                stage, done, total, ..
            } => {
                self.state.lock().4 = match total {
                    Some(t) => format!("| {stage} {done}/{t}"),
                    None => format!("| {stage} {done}"),
                };
            }
            Event::TrialScored { best_so_far, .. }
            | Event::NewBest {
                score: best_so_far, ..
            } => {
                let mut s = self.state.lock();
                if s.1.is_nan() || *best_so_far > s.1 {
                    s.1 = *best_so_far;
                }
            }
            Event::BudgetSpent {
                lm_calls, cost_usd, ..
            } => {
                let mut s = self.state.lock();
                s.2 = *lm_calls;
                s.3 = *cost_usd;
            }
            Event::Warning { message } => {
                let line = format!("warning: {message}");
                match self.bar.lock().as_ref() {
                    Some(bar) => bar.println(line),
                    #[allow(clippy::print_stderr)]
                    None => eprintln!("{line}"),
                }
            }
            Event::StageFinished { stage, .. } if stage == "save" || stage == "validate" => {
                if let Some(bar) = self.bar.lock().as_ref() {
                    bar.finish();
                }
            }
            Event::RunFinished { .. } => {
                if let Some(bar) = self.bar.lock().take() {
                    bar.finish_and_clear();
                }
            }
            _ => {}
        }
        self.refresh();
    }
}

/// Progress as plain lines on stderr, for logs (when stderr is not a terminal): each stage's
/// start and end, each trial's score, warnings.
struct ProgressLines {
    started: std::time::Instant,
}

impl ProgressLines {
    fn line(&self, text: &str) {
        #[allow(clippy::print_stderr)]
        {
            eprintln!("[{:>7.1} s] {text}", self.started.elapsed().as_secs_f64());
        }
    }
}

impl EventSink for ProgressLines {
    fn emit(&self, event: &Event) {
        match event {
            Event::StageStarted { stage, .. } => self.line(&format!("{stage} started")),
            Event::StageFinished { stage, seconds } => {
                self.line(&format!("{stage} finished in {seconds:.1} s"));
            }
            Event::TrialScored {
                trial,
                score,
                best_so_far,
                kind,
            } => self.line(&format!(
                "trial {trial} ({}): {score:.4}, best {best_so_far:.4}",
                match kind {
                    TrialKind::Full => "full",
                    TrialKind::Minibatch => "minibatch",
                }
            )),
            Event::CandidateProposed {
                candidate,
                description,
            } => self.line(&format!(
                "candidate {candidate}: {}",
                one_line(description, MAX_CANDIDATE_CHARS)
            )),
            Event::Warning { message } => self.line(&format!("warning: {message}")),
            _ => {}
        }
    }
}

/// The most characters of a candidate's description a progress line shows.
const MAX_CANDIDATE_CHARS: usize = 400;

/// `text` on one line (line breaks shown as ` / `), cut to `max` characters with an ellipsis.
fn one_line(text: &str, max: usize) -> String {
    let joined = text
        .lines()
        .map(str::trim)
        .filter(|line| !line.is_empty())
        .collect::<Vec<_>>()
        .join(" / ");
    match joined.char_indices().nth(max) {
        Some((cut, _)) => format!("{}…", &joined[..cut]),
        None => joined,
    }
}

/// The saved model's name: `name` when given, else the request's `name`, else the request
/// file's stem made safe.
pub(crate) fn default_name(
    name: Option<&str>,
    path: &std::path::Path,
    request: &OptimizationRequest,
) -> String {
    if let Some(name) = name
        .map(str::to_string)
        .or_else(|| request.model_name().map(str::to_string))
    {
        return name;
    }
    let stem = path.file_stem().and_then(|s| s.to_str()).unwrap_or("model");
    let clean: String = stem
        .chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() || matches!(c, '.' | '_' | '-') {
                c
            } else {
                '-'
            }
        })
        .collect();
    if clean
        .chars()
        .next()
        .is_some_and(|c| c.is_ascii_alphanumeric())
    {
        clean
    } else {
        format!("m{clean}")
    }
}

/// Every model a request calls: task, prompt, candidates, stage models.
pub(crate) fn request_models(request: &OptimizationRequest) -> Vec<String> {
    let mut models = vec![request.task_model().to_string()];
    models.push(request.effective_prompt_model());
    models.extend(request.candidate_models.iter().cloned());
    models.extend(request.program.iter().filter_map(|s| s.model.clone()));
    models
}

fn fmt_opt(v: Option<f64>, digits: usize) -> String {
    v.map_or_else(|| "-".to_string(), |x| format!("{x:.digits$}"))
}

/// The summary printed after a run.
pub fn render_summary(result: &OptimizationResult, run_dir: &std::path::Path) -> String {
    let b = &result.baseline_metrics;
    let o = &result.optimized_metrics;
    let mut out = String::new();
    out.push_str(&format!(
        "{:<22} {:>12} {:>12} {:>10}\n",
        "", "baseline", "optimized", "change"
    ));
    out.push_str(&format!(
        "{:<22} {:>12.4} {:>12.4} {:>+9.2}%\n",
        format!("score ({})", o.metric),
        b.score,
        o.score,
        result.improvement_percentage
    ));
    if let Some(t) = &result.test_metrics {
        out.push_str(&format!(
            "{:<22} {:>12.4} {:>12.4} {:>+9.2}%\n",
            format!("test score ({})", t.examples),
            t.baseline.score,
            t.optimized.score,
            t.improvement_percentage
        ));
    }
    out.push_str(&format!(
        "{:<22} {:>12} {:>12}\n",
        "latency p95 (ms)",
        fmt_opt(b.latency_p95_ms, 0),
        fmt_opt(o.latency_p95_ms, 0)
    ));
    out.push_str(&format!(
        "{:<22} {:>12} {:>12}\n",
        "cost per sample (USD)",
        fmt_opt(b.cost_per_sample, 6),
        fmt_opt(o.cost_per_sample, 6)
    ));
    out.push_str(&format!(
        "{:<22} {:>12} {:>12}\n",
        "errors", b.errors, o.errors
    ));
    let calls = result.analytics.as_ref().map(|a| a.lm_calls);
    out.push_str(&format!(
        "\nalgorithm {} | iterations {} | LM calls {} | cost {} | time {:.1} s{}\n",
        result.algorithm_used,
        result.iterations_completed,
        calls.map_or_else(|| "-".into(), |c| c.to_string()),
        result
            .total_cost_usd
            .map_or_else(|| "unknown".into(), |c| format!("${c:.4}")),
        result.duration_seconds,
        result
            .stop_reason
            .map(|r| format!(" | stopped: {r}"))
            .unwrap_or_default()
    ));
    for m in &result.model_reports {
        out.push_str(&format!(
            "model {:<30} score {:.4} p95 {} ms cost/sample {}{}{}\n",
            m.model,
            m.metrics.score,
            fmt_opt(m.metrics.latency_p95_ms, 0),
            fmt_opt(m.metrics.cost_per_sample, 6),
            if m.chosen { " (chosen)" } else { "" },
            if m.meets_constraints {
                ""
            } else {
                " (fails constraints)"
            }
        ));
    }
    if let Some(prompt) = &result.optimized_prompt {
        out.push_str("\nOptimized prompt:\n");
        for line in prompt.lines() {
            out.push_str("  ");
            out.push_str(line);
            out.push('\n');
        }
    }
    match &result.model_id {
        Some(id) => out.push_str(&format!("\nSaved model: {id}\n")),
        None => out.push_str("\nNo model saved\n"),
    }
    out.push_str(&format!("Run folder: {}\n", run_dir.display()));
    if let Some(id) = &result.mlflow_run_id {
        out.push_str(&format!("MLflow run: {id}\n"));
    }
    for w in &result.warnings {
        out.push_str(&format!("warning: {w}\n"));
    }
    for f in &result.constraint_failures {
        out.push_str(&format!("constraint failed: {f}\n"));
    }
    out
}

/// Runs `promptopt optimize`.
pub async fn run(args: OptimizeArgs) -> anyhow::Result<ExitCode> {
    let mut request = OptimizationRequest::from_path(&args.request)?;
    args.apply_overrides(&mut request);
    request.name = Some(default_name(args.name.as_deref(), &args.request, &request));
    request.validate(Some(&args.request))?;
    if let Some(queue) = &args.queue {
        request.gpu = args.gpu.overrides().apply(request.gpu.take());
        if let Some(gpu) = &request.gpu {
            gpu.check()?;
        }
        return crate::jobs_cmd::optimize_on_queue(&args, request, queue).await;
    }
    let models = request_models(&request);
    // Flags, then `PROMPTOPT_GPU_*`, then the request's `gpu:` block; checked before anything
    // is written.
    let gpu = usable_gpu(args.gpu.resolve(request.gpu.as_ref())?, &models)?;
    // On a GPU the batch is what pays: evaluate as many examples at once as it holds.
    let concurrency = request
        .concurrency
        .or(args.concurrency)
        .unwrap_or_else(|| gpu.as_ref().map_or(4, |g| g.batch_size))
        .max(1);
    let lm = build_lm(&models, concurrency, args.no_cache, gpu.as_ref()).await?;

    let cancel = CancelFlag::new();
    {
        let cancel = cancel.clone();
        tokio::spawn(async move {
            if tokio::signal::ctrl_c().await.is_ok() {
                #[allow(clippy::print_stderr)]
                {
                    eprintln!("\nStopping after the calls in flight; the best so far is kept (Ctrl-C again to abort)");
                }
                cancel.cancel();
                if tokio::signal::ctrl_c().await.is_ok() {
                    std::process::exit(130);
                }
            }
        });
    }
    if let Some(stop_file) = args.stop_file.clone() {
        let cancel = cancel.clone();
        tokio::spawn(async move {
            loop {
                if stop_file.exists() {
                    cancel.cancel();
                    break;
                }
                tokio::time::sleep(Duration::from_millis(500)).await;
            }
        });
    }
    let progress: Arc<dyn EventSink> = if std::io::stderr().is_terminal() {
        Arc::new(Progress::new())
    } else {
        Arc::new(ProgressLines {
            started: std::time::Instant::now(),
        })
    };
    let tracker =
        match TrackingConfig::for_request(&request, &default_home(), args.tracking_uri.as_deref())?
        {
            Some(config) => Some(Tracker::start(config, &request).await?),
            None => None,
        };
    let events: Arc<dyn EventSink> = match &tracker {
        Some(t) => Arc::new(FanOut(vec![progress, t.sink()])),
        None => progress,
    };
    let registry = Registry::from_env();
    let pipeline = Pipeline::new(lm, registry.clone())
        .with_events(events)
        .with_cancel(cancel)
        .with_concurrency(concurrency);
    let mut result = pipeline.optimize(&request).await?;
    if let Some(tracker) = tracker {
        tracker.finish(&request, &mut result, &registry).await;
    }

    report(
        &result,
        request.model_name(),
        args.output.clone(),
        args.json,
    )
}

/// Writes `result.json` and `trajectory.svg` into the run folder (`output`, else
/// `PROMPTOPT_HOME/runs/<id>`), prints the summary (or the JSON) and returns the exit code: 1
/// when the result fails its constraints.
pub(crate) fn report(
    result: &OptimizationResult,
    name: Option<&str>,
    output: Option<PathBuf>,
    json_out: bool,
) -> anyhow::Result<ExitCode> {
    let run_dir =
        output.unwrap_or_else(|| default_home().join("runs").join(&result.optimization_id));
    std::fs::create_dir_all(&run_dir)
        .with_context(|| format!("Cannot create `{}`", run_dir.display()))?;
    let json = serde_json::to_string_pretty(result)?;
    std::fs::write(run_dir.join("result.json"), &json)
        .with_context(|| format!("Cannot write `{}`", run_dir.join("result.json").display()))?;
    let title = format!(
        "{} — {} ({})",
        name.unwrap_or("model"),
        result.algorithm_used,
        result.optimized_metrics.metric
    );
    std::fs::write(
        run_dir.join("trajectory.svg"),
        trajectory_svg(&title, &result.trajectory),
    )
    .with_context(|| {
        format!(
            "Cannot write `{}`",
            run_dir.join("trajectory.svg").display()
        )
    })?;

    #[allow(clippy::print_stdout)]
    if json_out {
        println!("{json}");
    } else {
        print!("{}", render_summary(result, &run_dir));
    }
    if result.passed() {
        Ok(ExitCode::SUCCESS)
    } else {
        #[allow(clippy::print_stderr)]
        {
            eprintln!(
                "error: The result fails its constraints: {}",
                result.constraint_failures.join("; ")
            );
        }
        Ok(ExitCode::from(1))
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    #[test]
    fn summary_snapshot() {
        let metrics = |score: f64, p95: f64| {
            serde_json::json!({
                "metric": "accuracy", "score": score, "raw_score": score, "accuracy": score,
                "examples": 100, "errors": 0, "latency_p50_ms": p95 / 2.0, "latency_p95_ms": p95,
                "cost_usd": 0.0, "cost_per_sample": 0.0, "lm_calls": 100, "tokens": 12000
            })
        };
        let result: OptimizationResult = serde_json::from_value(serde_json::json!({
            "optimization_id": "opt-0123456789ab",
            "model_id": "sst2-sentiment@1.0.0",
            "baseline_metrics": metrics(0.5, 410.0),
            "optimized_metrics": metrics(0.78, 620.0),
            "improvement_percentage": 56.0,
            "optimized_prompt": "[system]\nClassify the sentiment.\n\n[user]\n[[ ## text ## ]]\n{text}",
            "optimized_config": {"predictors": {}},
            "algorithm_used": "bootstrapfewshot",
            "iterations_completed": 1,
            "duration_seconds": 93.25,
            "total_cost_usd": 0.0,
            "mlflow_run_id": null,
            "stop_reason": null,
            "warnings": ["Only 24 training examples"],
            "constraint_failures": [],
            "analytics": null,
            "trajectory": []
        }))
        .unwrap();
        insta::assert_snapshot!(render_summary(
            &result,
            std::path::Path::new("/runs/opt-0123456789ab")
        ));
    }
}

#[cfg(test)]
mod progress_tests {
    use super::one_line;

    #[test]
    fn a_candidate_shows_on_one_line_and_is_cut_at_the_limit() {
        let text = "instruction 1 for `predict`:\n  Read the review.\n\n  Answer with one label.";
        assert_eq!(
            one_line(text, 400),
            "instruction 1 for `predict`: / Read the review. / Answer with one label."
        );
        assert_eq!(one_line("ééééé", 3), "ééé…");
        assert_eq!(one_line("short", 5), "short");
    }
}

#[cfg(test)]
mod override_tests {
    #![allow(clippy::unwrap_used)]
    use super::*;
    use clap::Parser;

    #[derive(Parser)]
    struct Cli {
        #[command(flatten)]
        args: OptimizeArgs,
    }

    fn request() -> OptimizationRequest {
        OptimizationRequest::from_yaml_str(
            "algorithm: miprov2\nevaluation_metric: accuracy\nmodel: local/gemma3-270m\n\
             prompt_model: local/smollm2-135m\n\
             seed: 0\ninput_keys: [text]\noutput_keys: [label]\n\
             training_examples:\n  - {text: fine, label: positive}\n",
        )
        .unwrap()
    }

    #[test]
    fn seed_and_prompt_model_flags_win_over_the_request() {
        let cli = Cli::parse_from([
            "optimize",
            "run.yaml",
            "--seed",
            "7",
            "--prompt-model",
            "local/qwen2.5-coder-1.5b",
        ]);
        let mut request = request();
        cli.args.apply_overrides(&mut request);
        assert_eq!(request.seed, 7);
        assert_eq!(
            request.prompt_model.as_deref(),
            Some("local/qwen2.5-coder-1.5b")
        );
    }

    #[test]
    fn without_the_flags_the_request_keeps_its_own() {
        let cli = Cli::parse_from(["optimize", "run.yaml"]);
        let mut request = request();
        cli.args.apply_overrides(&mut request);
        assert_eq!(request.seed, 0);
        assert_eq!(request.prompt_model.as_deref(), Some("local/smollm2-135m"));
    }
}
