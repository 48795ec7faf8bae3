//! `promptopt predict`: run a saved program on one input, here or with `--server URL` on a
//! `promptopt serve` API.

use std::path::{Path, PathBuf};
use std::process::ExitCode;

use anyhow::Context;
use promptopt_core::{CoreError, Example, Prediction, Program, ProgramState, Signature, Trace};
use promptopt_optimize::{OptimizeError, Pipeline};
use promptopt_registry::Registry;
use serde_json::{json, Map, Value};

use crate::common::{build_lm, print_stdout, Exit, LmArgs, ProgramFile};
use crate::remote::{Remote, ServerArgs};

/// Run a program on one input.
#[derive(Debug, clap::Args)]
pub struct PredictArgs {
    /// A saved model: `NAME`, `NAME@VERSION`, `NAME@latest` or `NAME@ALIAS` (e.g.
    /// `NAME@production`), instead of `--state`.
    #[arg(required_unless_present = "state")]
    model: Option<String>,
    /// The program: a file with `signature` and `state` (as `evaluate --save-program` writes),
    /// or a bare program state together with `--signature`.
    #[arg(long, conflicts_with = "model")]
    state: Option<PathBuf>,
    /// The signature (JSON), when `--state` holds a bare state.
    #[arg(long)]
    signature: Option<PathBuf>,
    /// The input fields as a JSON object, e.g. `{"text": "I loved it"}`.
    #[arg(long)]
    input: String,
    #[command(flatten)]
    lm: LmArgs,
    /// Print JSON (outputs, usage, raw reply) instead of `field: value` lines.
    #[arg(long)]
    json: bool,
    /// `--server URL` and `--token`: call the saved model on a `promptopt serve` API (its own
    /// model settings apply; the model flags are not used).
    #[command(flatten)]
    server: ServerArgs,
}

/// Runs `promptopt predict`.
pub async fn run(args: PredictArgs) -> anyhow::Result<ExitCode> {
    match predict_cmd(args).await {
        Ok(code) => Ok(code),
        Err(exit) => Ok(exit.report()),
    }
}

fn read_json(path: &Path) -> Result<Value, Exit> {
    let text = std::fs::read_to_string(path)
        .with_context(|| format!("Cannot read `{}`", path.display()))
        .map_err(Exit::usage)?;
    serde_json::from_str(&text)
        .with_context(|| format!("`{}` is not valid JSON", path.display()))
        .map_err(Exit::usage)
}

/// The program and state of `--state` (and `--signature` for a bare state).
fn load_file(args: &PredictArgs) -> Result<(Program, ProgramState), Exit> {
    let Some(state_path) = args.state.clone() else {
        return Err(Exit::usage(anyhow::anyhow!(
            "Give a saved model (`NAME[@VERSION]`) or `--state FILE`"
        )));
    };
    let value = read_json(&state_path)?;
    if value.get("signature").is_some() || value.get("program").is_some() {
        let file: ProgramFile = serde_json::from_value(value)
            .with_context(|| format!("`{}` is not a program file", state_path.display()))
            .map_err(Exit::usage)?;
        let program = file.program().map_err(Exit::usage)?;
        return Ok((program, file.state));
    }
    let state: ProgramState = serde_json::from_value(value)
        .with_context(|| format!("`{}` is not a program state", state_path.display()))
        .map_err(Exit::usage)?;
    let Some(path) = &args.signature else {
        return Err(Exit::usage(anyhow::anyhow!(
            "`{}` holds a bare program state: pass its signature with `--signature FILE`",
            state_path.display()
        )));
    };
    let signature: Signature = serde_json::from_value(read_json(path)?)
        .with_context(|| format!("`{}` is not a signature", path.display()))
        .map_err(Exit::usage)?;
    Ok((Program::single(signature), state))
}

/// Runs a saved model through the pipeline (its own model, adapter and settings).
async fn run_saved(
    args: &mut PredictArgs,
    reference: &str,
    input: &Example,
) -> Result<(Result<Prediction, CoreError>, Trace), Exit> {
    let registry = Registry::from_env();
    let mut artifact = registry.load_ref(reference).map_err(Exit::usage)?;
    if args.lm.max_tokens.is_some() {
        artifact.model.max_tokens = args.lm.max_tokens;
    }
    args.lm.model.clone_from(&artifact.model.model);
    let models = artifact.models();
    let gpu = args.lm.gpu_for(&models)?;
    let lm = build_lm(&models, 1, args.lm.no_cache, gpu.as_ref())
        .await
        .map_err(Exit::failed)?;
    let pipeline = Pipeline::new(lm, registry);
    match pipeline.predict_with(&artifact, input).await {
        Ok((prediction, trace)) => {
            // An unparsable reply leaves an empty prediction; its step says why.
            let failed = trace.steps.iter().rev().find(|s| s.parse_error.is_some());
            match failed {
                Some(step) if prediction.outputs.is_empty() => Ok((
                    Err(CoreError::Parse {
                        predictor: step.predictor.clone(),
                        message: step.parse_error.clone().unwrap_or_default(),
                        raw: step.raw.clone(),
                    }),
                    trace,
                )),
                _ => Ok((Ok(prediction), trace)),
            }
        }
        Err(OptimizeError::Core(error @ CoreError::MissingInput { .. })) => Err(Exit::usage(error)),
        Err(error) => Err(Exit::failed(error)),
    }
}

/// What the server answers for one prediction.
#[derive(Debug, serde::Deserialize)]
struct RemotePrediction {
    model_id: String,
    #[serde(default)]
    prediction_id: Option<String>,
    #[serde(default)]
    outputs: Map<String, Value>,
    #[serde(default)]
    latency_ms: f64,
    #[serde(default)]
    usage: Option<Value>,
    #[serde(default)]
    cost_usd: Option<f64>,
}

/// `predict --server URL NAME[@VERSION|@ALIAS]`: one prediction through the API, printed as a
/// local one is.
async fn predict_remote(
    remote: &Remote,
    args: &PredictArgs,
    inputs: Map<String, Value>,
) -> Result<ExitCode, Exit> {
    if args.state.is_some() {
        return Err(Exit::usage(anyhow::anyhow!(
            "`--state` runs a local program file and cannot be used with `--server`: give a saved model (`NAME[@VERSION|@ALIAS]`)"
        )));
    }
    let Some(reference) = &args.model else {
        return Err(Exit::usage(anyhow::anyhow!(
            "Give a saved model (`NAME[@VERSION|@ALIAS]`) to call on the server"
        )));
    };
    let r: promptopt_registry::ModelRef = reference.parse().map_err(Exit::usage)?;
    let answer: RemotePrediction = remote
        .post(
            &["v1", "models", &r.name, "predict"],
            &[("version", r.selector.to_string())],
            Some(&json!({ "inputs": inputs })),
        )
        .await
        .map_err(crate::remote::exit_of)?;
    if args.json {
        let usage = answer.usage.unwrap_or(Value::Null);
        let report = json!({
            "outputs": answer.outputs,
            "parse_error": Value::Null,
            "model_id": answer.model_id,
            "prediction_id": answer.prediction_id,
            "tokens": {"prompt": usage.get("prompt_tokens"), "completion": usage.get("completion_tokens")},
            "cost_usd": answer.cost_usd,
            "latency_ms": answer.latency_ms,
        });
        let text = serde_json::to_string_pretty(&report)
            .context("Could not write the JSON output")
            .map_err(Exit::failed)?;
        print_stdout(&text);
    } else {
        let lines: Vec<String> = answer
            .outputs
            .iter()
            .map(|(k, v)| format!("{k}: {}", promptopt_core::value_to_text(v)))
            .collect();
        print_stdout(&lines.join("\n"));
    }
    Ok(ExitCode::SUCCESS)
}

async fn predict_cmd(mut args: PredictArgs) -> Result<ExitCode, Exit> {
    let inputs = match serde_json::from_str::<Value>(&args.input) {
        Ok(Value::Object(map)) => map,
        Ok(_) => {
            return Err(Exit::usage(anyhow::anyhow!(
                "`--input` must be a JSON object of input fields"
            )))
        }
        Err(error) => {
            return Err(Exit::usage(anyhow::anyhow!(
                "`--input` is not valid JSON: {error}"
            )))
        }
    };
    if let Some(remote) = args.server.remote().map_err(Exit::usage)? {
        return predict_remote(&remote, &args, inputs).await;
    }
    let input = Example::from_map(inputs);
    let (result, trace) = match args.model.clone() {
        Some(reference) => run_saved(&mut args, &reference, &input).await?,
        None => {
            let (program, state) = load_file(&args)?;
            program.check_state(&state).map_err(Exit::usage)?;
            let models = std::slice::from_ref(&args.lm.model);
            let gpu = args.lm.gpu_for(models)?;
            let runtime = args.lm.runtime(models, 1, gpu.as_ref()).await?;
            let output = program.run_traced(&state, &input, &runtime).await;
            (output.result, output.trace)
        }
    };
    let (outputs, parse_error) = match result {
        Ok(prediction) => (Some(prediction.outputs), None),
        Err(CoreError::Parse { message, .. }) => (None, Some(message)),
        Err(error @ CoreError::MissingInput { .. }) => return Err(Exit::usage(error)),
        Err(error) => return Err(Exit::failed(error)),
    };
    if args.json {
        let usage = trace.usage();
        let report = json!({
            "outputs": outputs,
            "parse_error": parse_error,
            "raw": trace.steps.last().map(|s| s.raw.as_str()),
            "model": args.lm.model,
            "lm_calls": trace.steps.len(),
            "tokens": {"prompt": usage.prompt_tokens, "completion": usage.completion_tokens},
            "cost_usd": trace.cost_usd(),
            "latency_ms": trace.latency().as_secs_f64() * 1000.0,
        });
        let text = serde_json::to_string_pretty(&report)
            .context("Could not write the JSON output")
            .map_err(Exit::failed)?;
        print_stdout(&text);
    } else if let Some(outputs) = &outputs {
        let lines: Vec<String> = outputs
            .keys()
            .map(|k| format!("{k}: {}", outputs.text(k).unwrap_or_default()))
            .collect();
        print_stdout(&lines.join("\n"));
    }
    match parse_error {
        None => Ok(ExitCode::SUCCESS),
        Some(message) => {
            let raw = trace.steps.last().map_or("", |s| s.raw.as_str());
            Err(Exit::failed(anyhow::anyhow!(
                "The reply could not be parsed: {message}; it was: {raw}"
            )))
        }
    }
}
