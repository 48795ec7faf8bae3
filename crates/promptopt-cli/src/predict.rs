//! `promptopt predict`: run a saved program on one input.

use std::path::{Path, PathBuf};
use std::process::ExitCode;

use anyhow::Context;
use promptopt_core::{CoreError, Example, Program, ProgramState, Signature};
use serde_json::{json, Value};

use crate::evaluate::{print_stdout, Exit, LmArgs, ProgramFile};

/// Run a program on one input.
#[derive(Debug, clap::Args)]
pub struct PredictArgs {
    /// A saved model: `NAME`, `NAME@VERSION` or `NAME@latest` (instead of `--state`).
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

fn load_program(args: &mut PredictArgs) -> Result<(Signature, ProgramState), Exit> {
    if let Some(reference) = args.model.clone() {
        let artifact =
            crate::models_cmd::load_saved(&reference, &mut args.lm).map_err(Exit::usage)?;
        let signature = crate::models_cmd::saved_signature(&artifact).map_err(Exit::usage)?;
        return Ok((signature, artifact.state));
    }
    let Some(state_path) = args.state.clone() else {
        return Err(Exit::usage(anyhow::anyhow!(
            "Give a saved model (`NAME[@VERSION]`) or `--state FILE`"
        )));
    };
    let value = read_json(&state_path)?;
    if value.get("signature").is_some() {
        let file: ProgramFile = serde_json::from_value(value)
            .with_context(|| format!("`{}` is not a program file", state_path.display()))
            .map_err(Exit::usage)?;
        return Ok((file.signature, file.state));
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
    Ok((signature, state))
}

async fn predict_cmd(mut args: PredictArgs) -> Result<ExitCode, Exit> {
    let (signature, state) = load_program(&mut args)?;
    let input: Example = match serde_json::from_str::<Value>(&args.input) {
        Ok(Value::Object(map)) => Example::from_map(map),
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
    let program = Program::single(signature);
    program.check_state(&state).map_err(Exit::usage)?;
    let runtime = args.lm.runtime(1).await?;
    let output = program.run_traced(&state, &input, &runtime).await;
    let trace = output.trace;
    let (outputs, parse_error) = match output.result {
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
