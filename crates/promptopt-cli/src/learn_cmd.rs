//! `promptopt learn`: continuous learning of a model on a `promptopt serve` API: turn the loop
//! on or off, follow it, read its decisions, roll back, export the labelled predictions.

use std::fmt::Write as _;
use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::Context;
use promptopt_learning::config::LearningConfig;
use serde_json::Value;

use crate::common::{print_stdout, Exit};
use crate::remote::{exit_of, Remote, ServerArgs};

/// Continuous learning of a saved model on a `promptopt serve` API.
#[derive(Debug, clap::Args)]
pub struct LearnArgs {
    #[command(flatten)]
    server: ServerArgs,
    #[command(subcommand)]
    command: LearnCommand,
}

#[derive(Debug, clap::Subcommand)]
enum LearnCommand {
    /// Turn the loop on with the settings of a YAML or JSON file (a `learning:` block).
    Enable {
        /// The model.
        name: String,
        /// The settings file.
        #[arg(long)]
        config: PathBuf,
    },
    /// Turn the loop off (its state and history are kept).
    Disable {
        /// The model.
        name: String,
    },
    /// Where the loop stands: phase, live metric per version, recent decisions.
    Status {
        /// The model.
        name: String,
        /// Print JSON.
        #[arg(long)]
        json: bool,
    },
    /// Every decision of the loop with its reason: triggers, jobs, validation scores,
    /// deployments, rollbacks.
    History {
        /// The model.
        name: String,
        /// The newest this many.
        #[arg(long, default_value_t = 200)]
        limit: usize,
        /// Print JSON.
        #[arg(long)]
        json: bool,
    },
    /// Move `production` back to the version the last deployment replaced.
    Rollback {
        /// The model.
        name: String,
    },
    /// Write the labelled predictions as a dataset (JSON lines).
    Export {
        /// The model.
        name: String,
        /// Where to write (`-` for standard output).
        #[arg(long, short, default_value = "-")]
        output: PathBuf,
        /// Only outcomes recorded within this long (`7d`, `24h`).
        #[arg(long)]
        since: Option<String>,
    },
}

/// Runs `promptopt learn`.
pub async fn run(args: LearnArgs) -> anyhow::Result<ExitCode> {
    match learn(args).await {
        Ok(code) => Ok(code),
        Err(exit) => Ok(exit.report()),
    }
}

fn read_config(path: &PathBuf) -> Result<LearningConfig, Exit> {
    let text = std::fs::read_to_string(path)
        .with_context(|| format!("Cannot read `{}`", path.display()))
        .map_err(Exit::usage)?;
    LearningConfig::from_yaml(&text)
        .with_context(|| format!("`{}`", path.display()))
        .map_err(Exit::usage)
}

async fn learn(args: LearnArgs) -> Result<ExitCode, Exit> {
    let remote: Remote = args.server.remote_or_default().map_err(Exit::usage)?;
    match args.command {
        LearnCommand::Enable { name, config } => {
            let config = read_config(&config)?;
            let body = serde_json::to_value(&config).map_err(Exit::failed)?;
            let status: Value = remote
                .put(&["v1", "models", &name, "learning"], &body)
                .await
                .map_err(exit_of)?;
            print_stdout(&format!(
                "Continuous learning of `{name}` is on ({})",
                status["phase"].as_str().unwrap_or("")
            ));
        }
        LearnCommand::Disable { name } => {
            let builder: Result<(), _> = remote.delete(&["v1", "models", &name, "learning"]).await;
            builder.map_err(exit_of)?;
            print_stdout(&format!("Continuous learning of `{name}` is off"));
        }
        LearnCommand::Status { name, json } => {
            let status: Value = remote
                .get(&["v1", "models", &name, "learning"], &[])
                .await
                .map_err(exit_of)?;
            if json {
                print_stdout(&serde_json::to_string_pretty(&status).map_err(Exit::failed)?);
            } else {
                print_stdout(&render_status(&status));
            }
        }
        LearnCommand::History { name, limit, json } => {
            let history: Value = remote
                .get(
                    &["v1", "models", &name, "learning", "history"],
                    &[("limit", limit.to_string())],
                )
                .await
                .map_err(exit_of)?;
            if json {
                print_stdout(
                    &serde_json::to_string_pretty(&history["events"]).map_err(Exit::failed)?,
                );
            } else {
                print_stdout(&render_events(&history["events"]));
            }
        }
        LearnCommand::Rollback { name } => {
            let status: Value = remote
                .post(&["v1", "models", &name, "learning", "rollback"], &[], None)
                .await
                .map_err(exit_of)?;
            print_stdout(&format!(
                "`production` of `{name}` is {}",
                status["production"].as_str().unwrap_or("?")
            ));
        }
        LearnCommand::Export {
            name,
            output,
            since,
        } => {
            let query: Vec<(&str, String)> = since.map(|s| ("since", s)).into_iter().collect();
            let text = remote
                .get_text(&["v1", "models", &name, "learning", "export"], &query)
                .await
                .map_err(exit_of)?;
            let lines = text.lines().count();
            if output.as_os_str() == "-" {
                print_stdout(text.trim_end());
            } else {
                // Written whole to a temporary file, then renamed: no partial dataset.
                let tmp = output.with_extension("jsonl.partial");
                std::fs::write(&tmp, &text)
                    .and_then(|()| std::fs::rename(&tmp, &output))
                    .with_context(|| format!("Cannot write `{}`", output.display()))
                    .map_err(Exit::failed)?;
                print_stdout(&format!(
                    "Wrote {lines} labelled examples to `{}`",
                    output.display()
                ));
            }
        }
    }
    Ok(ExitCode::SUCCESS)
}

fn time_of(at: f64) -> String {
    let secs = at as i64;
    let (days, rest) = (secs.div_euclid(86_400), secs.rem_euclid(86_400));
    let (y, m, d) = promptopt_registry::civil_from_days(days);
    format!(
        "{y:04}-{m:02}-{d:02} {:02}:{:02}:{:02}",
        rest / 3600,
        rest % 3600 / 60,
        rest % 60
    )
}

fn render_events(events: &Value) -> String {
    let mut out = String::new();
    let empty = Vec::new();
    let events = events.as_array().unwrap_or(&empty);
    if events.is_empty() {
        return "No decisions yet".to_string();
    }
    for e in events {
        let _ = writeln!(
            out,
            "{}  {:<20} {}",
            time_of(e["at"].as_f64().unwrap_or(0.0)),
            e["kind"].as_str().unwrap_or(""),
            e["reason"].as_str().unwrap_or("")
        );
    }
    out.trim_end().to_string()
}

fn render_status(status: &Value) -> String {
    let mut out = String::new();
    let _ = writeln!(
        out,
        "Model `{}`: learning {}, {}",
        status["model"].as_str().unwrap_or(""),
        if status["enabled"].as_bool().unwrap_or(false) {
            "on"
        } else {
            "off"
        },
        status["phase"].as_str().unwrap_or("")
    );
    let _ = writeln!(
        out,
        "Production: {}   labels since the last retraining: {}   retrainings: {}   failures in a row: {}",
        status["production"].as_str().unwrap_or("-"),
        status["labels_since_retrain"],
        status["retrains"],
        status["failures"]
    );
    let empty = Vec::new();
    let live = status["live"].as_array().unwrap_or(&empty);
    if !live.is_empty() {
        let _ = writeln!(out, "Live metric (rolling window):");
        for l in live {
            let _ = writeln!(
                out,
                "  {:<30} {:.3} over {} outcomes",
                l["model_id"].as_str().unwrap_or(""),
                l["mean"].as_f64().unwrap_or(0.0),
                l["outcomes"]
            );
        }
    }
    let _ = writeln!(out, "Recent decisions:");
    out.push_str(&render_events(&status["recent"]));
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn times_render_in_utc() {
        assert_eq!(time_of(0.0), "1970-01-01 00:00:00");
        assert_eq!(time_of(1_796_385_600.0), "2026-12-04 12:00:00");
    }
}
