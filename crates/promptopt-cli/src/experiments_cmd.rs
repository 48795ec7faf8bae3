//! `promptopt experiments`: A/B experiments on a `promptopt serve` API (they live in the
//! server's database, where the predictions they split are served).

use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::Context;
use promptopt_experiments::ExperimentSpec;
use serde_json::Value;

use crate::common::{print_stdout, Exit};
use crate::remote::{exit_of, Remote, ServerArgs};

/// Run A/B experiments between versions of a saved model on a `promptopt serve` API.
#[derive(Debug, clap::Args)]
pub struct ExperimentsArgs {
    #[command(flatten)]
    server: ServerArgs,
    #[command(subcommand)]
    command: ExperimentsCommand,
}

#[derive(Debug, clap::Subcommand)]
enum ExperimentsCommand {
    /// Create an experiment from a YAML or JSON file (`name`, `variants`, `traffic_split`, ...).
    Create {
        /// The file.
        file: PathBuf,
        /// Start it at once.
        #[arg(long)]
        start: bool,
    },
    /// List experiments, newest first.
    List {
        /// Print JSON.
        #[arg(long)]
        json: bool,
    },
    /// An experiment's figures and decision.
    Status {
        /// Its name or id.
        name: String,
        /// Print JSON.
        #[arg(long)]
        json: bool,
    },
    /// Start a draft experiment.
    Start {
        /// Its name or id.
        name: String,
    },
    /// Stop an experiment without a winner.
    Stop {
        /// Its name or id.
        name: String,
    },
    /// Point the model's `production` alias at the winner (or `--variant`).
    Promote {
        /// Its name or id.
        name: String,
        /// Promote this variant instead of the declared winner.
        #[arg(long)]
        variant: Option<String>,
    },
}

/// Runs `promptopt experiments`.
pub async fn run(args: ExperimentsArgs) -> anyhow::Result<ExitCode> {
    match experiments(args).await {
        Ok(code) => Ok(code),
        Err(exit) => Ok(exit.report()),
    }
}

fn read_spec(path: &PathBuf) -> Result<ExperimentSpec, Exit> {
    let text = std::fs::read_to_string(path)
        .with_context(|| format!("Cannot read `{}`", path.display()))
        .map_err(Exit::usage)?;
    let spec: ExperimentSpec = serde_yaml::from_str(&text)
        .with_context(|| format!("`{}` is not an experiment", path.display()))
        .map_err(Exit::usage)?;
    spec.validate()
        .with_context(|| format!("`{}`", path.display()))
        .map_err(Exit::usage)?;
    Ok(spec)
}

async fn experiments(args: ExperimentsArgs) -> Result<ExitCode, Exit> {
    let remote: Remote = args.server.remote_or_default().map_err(Exit::usage)?;
    match args.command {
        ExperimentsCommand::Create { file, start } => {
            let spec = read_spec(&file)?;
            let body = serde_json::to_value(&spec).map_err(Exit::failed)?;
            let query = if start {
                vec![("start", "true".to_string())]
            } else {
                Vec::new()
            };
            let view: Value = remote
                .post(&["v1", "experiments"], &query, Some(&body))
                .await
                .map_err(exit_of)?;
            let e = &view["experiment"];
            print_stdout(&format!(
                "Created experiment `{}` ({}) on `{}`: {}",
                e["spec"]["name"].as_str().unwrap_or(""),
                e["id"].as_str().unwrap_or(""),
                e["model"].as_str().unwrap_or(""),
                e["state"].as_str().unwrap_or("")
            ));
        }
        ExperimentsCommand::List { json } => {
            let list: Value = remote
                .get(&["v1", "experiments"], &[])
                .await
                .map_err(exit_of)?;
            if json {
                print_stdout(
                    &serde_json::to_string_pretty(&list["experiments"]).map_err(Exit::failed)?,
                );
            } else {
                print_stdout(&render_list(&list["experiments"]));
            }
        }
        ExperimentsCommand::Status { name, json } => {
            let view: Value = remote
                .get(&["v1", "experiments", &name], &[])
                .await
                .map_err(exit_of)?;
            if json {
                print_stdout(&serde_json::to_string_pretty(&view).map_err(Exit::failed)?);
            } else {
                print_stdout(&render_status(&view));
            }
        }
        ExperimentsCommand::Start { name } => transition(&remote, &name, "start").await?,
        ExperimentsCommand::Stop { name } => transition(&remote, &name, "stop").await?,
        ExperimentsCommand::Promote { name, variant } => {
            let query: Vec<(&str, String)> = variant.map(|v| ("variant", v)).into_iter().collect();
            let view: Value = remote
                .post(&["v1", "experiments", &name, "promote"], &query, None)
                .await
                .map_err(exit_of)?;
            let e = &view["experiment"];
            print_stdout(&format!(
                "Promoted `{}` of `{name}`: `{}@production` is version {}",
                e["winner"].as_str().unwrap_or("?"),
                e["model"].as_str().unwrap_or("?"),
                e["promoted_version"].as_str().unwrap_or("?")
            ));
        }
    }
    Ok(ExitCode::SUCCESS)
}

/// `start` or `stop`.
async fn transition(remote: &Remote, name: &str, verb: &str) -> Result<(), Exit> {
    let view: Value = remote
        .post(&["v1", "experiments", name, verb], &[], None)
        .await
        .map_err(exit_of)?;
    print_stdout(&format!(
        "Experiment `{name}` is {}",
        view["experiment"]["state"].as_str().unwrap_or("?")
    ));
    Ok(())
}

fn text(v: &Value) -> String {
    match v {
        Value::String(s) => s.clone(),
        Value::Null => "-".into(),
        other => other.to_string(),
    }
}

fn render_list(experiments: &Value) -> String {
    let mut out = format!(
        "{:<28} {:<24} {:<10} {}\n",
        "experiment", "model", "state", "winner"
    );
    for e in experiments
        .as_array()
        .map(Vec::as_slice)
        .unwrap_or_default()
    {
        out.push_str(&format!(
            "{:<28} {:<24} {:<10} {}\n",
            text(&e["spec"]["name"]),
            text(&e["model"]),
            text(&e["state"]),
            text(&e["winner"])
        ));
    }
    out.trim_end().to_string()
}

fn figure(v: &Value, digits: usize) -> String {
    v.as_f64()
        .map_or_else(|| "-".to_string(), |x| format!("{x:.digits$}"))
}

/// The status as `experiments status` prints it.
pub(crate) fn render_status(view: &Value) -> String {
    let e = &view["experiment"];
    let s = &view["status"];
    let mut out = format!(
        "experiment   {} ({})\nmodel        {}\nstate        {}\nmetric       {} ({}), α = {}, minimum {} outcomes per variant\n\n",
        text(&e["spec"]["name"]),
        text(&e["id"]),
        text(&e["model"]),
        text(&e["state"]),
        text(&s["metric"]),
        text(&s["kind"]),
        text(&s["significance_level"]),
        text(&s["minimum_sample_size"])
    );
    out.push_str(&format!(
        "{:<14} {:<26} {:>6} {:>8} {:>9} {:>8}\n",
        "variant", "model", "share", "units", "outcomes", "mean"
    ));
    for v in s["variants"]
        .as_array()
        .map(Vec::as_slice)
        .unwrap_or_default()
    {
        out.push_str(&format!(
            "{:<14} {:<26} {:>6} {:>8} {:>9} {:>8}\n",
            text(&v["name"]),
            text(&v["model"]),
            figure(&v["share"], 2),
            text(&v["units"]),
            text(&v["outcomes"]),
            figure(&v["mean"], 4)
        ));
    }
    out.push('\n');
    for c in s["comparisons"]
        .as_array()
        .map(Vec::as_slice)
        .unwrap_or_default()
    {
        let seq = &c["sequential"];
        out.push_str(&format!(
            "{} vs {}: difference {} (always-valid CI {} to {}), sequential p {}, fixed-horizon p {}{}\n",
            text(&c["variant"]),
            text(&s["control"]),
            figure(&seq["difference"], 4),
            figure(&seq["ci_low"], 4),
            figure(&seq["ci_high"], 4),
            figure(&seq["p_value"], 4),
            figure(&c["fixed"]["p_value"], 4),
            if c["significant"].as_bool() == Some(true) { ", significant" } else { "" }
        ));
    }
    if let Some(srm) = s["srm"].as_object() {
        out.push_str(&format!(
            "sample ratio: chi-square {}, p {}{}\n",
            figure(&srm["chi_square"], 3),
            figure(&srm["p_value"], 4),
            if srm["flagged"].as_bool() == Some(true) {
                " (MISMATCH)"
            } else {
                ""
            }
        ));
    }
    let d = &s["decision"];
    out.push_str(&match d["outcome"].as_str() {
        Some("winner") => format!(
            "decision: `{}` wins (difference {})",
            text(&d["variant"]),
            figure(&d["difference"], 4)
        ),
        Some(_) => format!("decision: {}", text(&d["reason"])),
        None => "decision: -".into(),
    });
    if let Some(v) = e["promoted_version"].as_str() {
        out.push_str(&format!("\npromoted: production → {v}"));
    }
    out
}
