//! `promptopt runs`: search, read and sync tracked runs, on an MLflow server or in the embedded
//! store.

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::Arc;

use anyhow::{bail, Context};
use promptopt_registry::default_home;
use promptopt_tracking::{open_store, sync_run, LocalStore, Run, RunQuery, TrackingStore};

use crate::common::print_stdout;

/// Search and read tracked runs (`MLFLOW_TRACKING_URI`'s server, else the embedded store).
#[derive(Debug, clap::Args)]
pub struct RunsArgs {
    /// The tracking server (`http://host:port`) or store (`file:PATH`); default
    /// `MLFLOW_TRACKING_URI`, else `PROMPTOPT_HOME/mlruns`.
    #[arg(long, global = true)]
    pub tracking_uri: Option<String>,
    #[command(subcommand)]
    command: RunsCommand,
}

#[derive(Debug, clap::Subcommand)]
enum RunsCommand {
    /// List runs, newest first, optionally filtered and ordered with MLflow's search syntax.
    List {
        /// Only this experiment (by name).
        #[arg(long)]
        experiment: Option<String>,
        /// A filter, e.g. "params.algorithm = 'miprov2' and metrics.val_score > 0.7".
        #[arg(long)]
        filter: Option<String>,
        /// An ordering, e.g. "metrics.val_score DESC" (repeatable).
        #[arg(long)]
        order_by: Vec<String>,
        /// At most this many runs.
        #[arg(long, default_value_t = 100)]
        max: usize,
        /// JSON on stdout.
        #[arg(long)]
        json: bool,
    },
    /// Show one run: its parameters, metrics, tags and artifacts.
    Show {
        /// The run's id.
        run_id: String,
        /// JSON on stdout.
        #[arg(long)]
        json: bool,
    },
    /// The run with the best value of a metric.
    Best {
        /// Only this experiment (by name).
        #[arg(long)]
        experiment: Option<String>,
        /// The metric.
        #[arg(long, default_value = "val_score")]
        metric: String,
        /// Lowest is best (for losses, latency, cost).
        #[arg(long)]
        lowest: bool,
        /// An additional filter.
        #[arg(long)]
        filter: Option<String>,
        /// JSON on stdout.
        #[arg(long)]
        json: bool,
    },
    /// Print or save one artifact of a run (without PATH, list them).
    Artifact {
        /// The run's id.
        run_id: String,
        /// The artifact's path in the run, e.g. `optimized_prompt.txt`.
        path: Option<String>,
        /// Write it to this file instead of stdout.
        #[arg(short, long)]
        output: Option<PathBuf>,
    },
    /// Copy runs of the embedded store to a server (idempotent: replaying sends nothing twice).
    Sync {
        /// The server, `http://host:port`.
        #[arg(long)]
        to: String,
        /// Only these runs (default: every run of the embedded store).
        run_ids: Vec<String>,
    },
}

fn store_of(uri: Option<&str>) -> anyhow::Result<Arc<dyn TrackingStore>> {
    let env = std::env::var("MLFLOW_TRACKING_URI").ok();
    let uri = uri.or(env.as_deref());
    Ok(open_store(uri, &default_home())?)
}

async fn experiment_ids(
    store: &dyn TrackingStore,
    name: Option<&str>,
) -> anyhow::Result<Vec<String>> {
    let Some(name) = name else {
        return Ok(Vec::new());
    };
    match store.experiment_by_name(name).await? {
        Some(e) => Ok(vec![e.experiment_id]),
        None => bail!("Experiment `{name}` not found in `{}`", store.location()),
    }
}

fn fmt_time(ms: i64) -> String {
    // UTC, minutes precision: enough to tell runs apart in a table.
    let secs = ms / 1000;
    let days = secs.div_euclid(86_400);
    let rem = secs.rem_euclid(86_400);
    let (y, m, d) = promptopt_registry::civil_from_days(days);
    format!(
        "{y:04}-{m:02}-{d:02} {:02}:{:02}",
        rem / 3600,
        rem % 3600 / 60
    )
}

fn metric_text(run: &Run, key: &str) -> String {
    run.metrics
        .get(key)
        .map(|v| format!("{v:.4}"))
        .unwrap_or_else(|| "-".into())
}

/// The runs as a table.
pub fn render_table(runs: &[Run], experiments: &BTreeMap<String, String>) -> String {
    let header = [
        "RUN ID",
        "EXPERIMENT",
        "NAME",
        "STATUS",
        "STARTED (UTC)",
        "ALGORITHM",
        "VAL",
        "TEST",
    ];
    let rows: Vec<[String; 8]> = runs
        .iter()
        .map(|r| {
            [
                r.info.run_id.clone(),
                experiments
                    .get(&r.info.experiment_id)
                    .cloned()
                    .unwrap_or_else(|| r.info.experiment_id.clone()),
                r.info.run_name.clone(),
                r.info.status.to_string(),
                fmt_time(r.info.start_time),
                r.params
                    .get("algorithm")
                    .cloned()
                    .unwrap_or_else(|| "-".into()),
                metric_text(r, "val_score"),
                metric_text(r, "test_score"),
            ]
        })
        .collect();
    let mut widths = header.map(str::len);
    for row in &rows {
        for (w, cell) in widths.iter_mut().zip(row) {
            *w = (*w).max(cell.chars().count());
        }
    }
    let line = |cells: Vec<&str>| {
        let mut s = String::new();
        for (i, (cell, w)) in cells.iter().zip(widths).enumerate() {
            if i + 1 == cells.len() {
                s.push_str(cell);
            } else {
                s.push_str(&format!("{cell:<w$}  "));
            }
        }
        s.trim_end().to_string()
    };
    let mut out = line(header.to_vec());
    for row in &rows {
        out.push('\n');
        out.push_str(&line(row.iter().map(String::as_str).collect()));
    }
    out
}

/// One run, for `runs show`.
pub fn render_run(run: &Run, experiment: &str, artifacts: &[String]) -> String {
    let mut out = format!(
        "Run {} ({})\nExperiment: {experiment}\nStatus: {}\nStarted: {} UTC\n",
        run.info.run_id,
        run.info.run_name,
        run.info.status,
        fmt_time(run.info.start_time)
    );
    if let Some(end) = run.info.end_time {
        out.push_str(&format!(
            "Duration: {:.1} s\n",
            (end - run.info.start_time) as f64 / 1000.0
        ));
    }
    let section = |out: &mut String, title: &str, items: Vec<(String, String)>| {
        if items.is_empty() {
            return;
        }
        out.push_str(&format!("\n{title}:\n"));
        let width = items.iter().map(|(k, _)| k.len()).max().unwrap_or(0);
        for (k, v) in items {
            out.push_str(&format!("  {k:<width$}  {v}\n"));
        }
    };
    section(
        &mut out,
        "Parameters",
        run.params
            .iter()
            .map(|(k, v)| (k.clone(), v.clone()))
            .collect(),
    );
    section(
        &mut out,
        "Metrics (latest)",
        run.metrics
            .iter()
            .map(|(k, v)| (k.clone(), format!("{v}")))
            .collect(),
    );
    section(
        &mut out,
        "Tags",
        run.tags
            .iter()
            .filter(|(k, v)| !k.starts_with("mlflow.") && !v.is_empty())
            .map(|(k, v)| (k.clone(), v.clone()))
            .collect(),
    );
    if !artifacts.is_empty() {
        out.push_str("\nArtifacts:\n");
        for a in artifacts {
            out.push_str(&format!("  {a}\n"));
        }
    }
    out
}

async fn experiment_names(store: &dyn TrackingStore) -> anyhow::Result<BTreeMap<String, String>> {
    Ok(store
        .list_experiments()
        .await?
        .into_iter()
        .map(|e| (e.experiment_id, e.name))
        .collect())
}

/// Runs `promptopt runs`.
pub async fn run(args: RunsArgs) -> anyhow::Result<ExitCode> {
    let uri = args.tracking_uri.as_deref();
    match args.command {
        RunsCommand::List {
            experiment,
            filter,
            order_by,
            max,
            json,
        } => {
            let store = store_of(uri)?;
            let query = RunQuery {
                experiment_ids: experiment_ids(store.as_ref(), experiment.as_deref()).await?,
                filter,
                order_by,
                max_results: Some(max),
            };
            let runs = store.search_runs(&query).await?;
            if json {
                print_stdout(&serde_json::to_string_pretty(&runs)?);
            } else if runs.is_empty() {
                print_stdout("No runs");
            } else {
                let names = experiment_names(store.as_ref()).await?;
                print_stdout(&render_table(&runs, &names));
            }
        }
        RunsCommand::Show { run_id, json } => {
            let store = store_of(uri)?;
            let run = store.get_run(&run_id).await?;
            if json {
                print_stdout(&serde_json::to_string_pretty(&run)?);
            } else {
                let names = experiment_names(store.as_ref()).await?;
                let artifacts: Vec<String> = store
                    .list_artifacts(&run_id)
                    .await?
                    .into_iter()
                    .map(|a| match a.file_size {
                        Some(size) => format!("{} ({size} bytes)", a.path),
                        None => a.path,
                    })
                    .collect();
                let experiment = names
                    .get(&run.info.experiment_id)
                    .cloned()
                    .unwrap_or_else(|| run.info.experiment_id.clone());
                print_stdout(render_run(&run, &experiment, &artifacts).trim_end());
            }
        }
        RunsCommand::Best {
            experiment,
            metric,
            lowest,
            filter,
            json,
        } => {
            let store = store_of(uri)?;
            let key = format!("metrics.`{metric}`");
            let presence = format!("{key} > -1e308");
            let query = RunQuery {
                experiment_ids: experiment_ids(store.as_ref(), experiment.as_deref()).await?,
                filter: Some(match filter {
                    Some(f) => format!("{f} and {presence}"),
                    None => presence,
                }),
                order_by: vec![format!("{key} {}", if lowest { "ASC" } else { "DESC" })],
                max_results: Some(1),
            };
            let Some(best) = store.search_runs(&query).await?.into_iter().next() else {
                bail!("No run has metric `{metric}` in `{}`", store.location());
            };
            if json {
                print_stdout(&serde_json::to_string_pretty(&best)?);
            } else {
                let names = experiment_names(store.as_ref()).await?;
                print_stdout(&render_table(std::slice::from_ref(&best), &names));
            }
        }
        RunsCommand::Artifact {
            run_id,
            path,
            output,
        } => {
            let store = store_of(uri)?;
            match path {
                None => {
                    for a in store.list_artifacts(&run_id).await? {
                        print_stdout(&a.path);
                    }
                }
                Some(path) => {
                    let bytes = store.download_artifact(&run_id, &path).await?;
                    match output {
                        Some(file) => {
                            std::fs::write(&file, &bytes)
                                .with_context(|| format!("Cannot write `{}`", file.display()))?;
                            #[allow(clippy::print_stderr)]
                            {
                                eprintln!("Wrote `{}` ({} bytes)", file.display(), bytes.len());
                            }
                        }
                        None => {
                            use std::io::Write;
                            std::io::stdout()
                                .write_all(&bytes)
                                .context("Cannot write to stdout")?;
                        }
                    }
                }
            }
        }
        RunsCommand::Sync { to, run_ids } => return sync(uri, &to, &run_ids).await,
    }
    Ok(ExitCode::SUCCESS)
}

/// `runs sync`: from the embedded store (or `--tracking-uri file:PATH`) to a server.
async fn sync(from: Option<&str>, to: &str, run_ids: &[String]) -> anyhow::Result<ExitCode> {
    let root = match from {
        Some(f) if f.starts_with("file:") => {
            PathBuf::from(f.trim_start_matches("file://").trim_start_matches("file:"))
        }
        Some(f) if !f.contains("://") => PathBuf::from(f),
        Some(f) => bail!(
            "`runs sync` reads the embedded store; `--tracking-uri` must be `file:PATH`, not `{}`",
            promptopt_tracking::redact(f)
        ),
        None => default_home().join("mlruns"),
    };
    if !to.starts_with("http://") && !to.starts_with("https://") {
        bail!(
            "`--to` must be a server URL (`http://host:port`), not `{}`",
            promptopt_tracking::redact(to)
        );
    }
    let local = LocalStore::open(&root)?;
    let remote = open_store(Some(to), &default_home())?;
    let ids: Vec<String> = if run_ids.is_empty() {
        let mut runs = local.all_runs()?;
        runs.sort_by_key(|r| r.info.start_time);
        runs.into_iter().map(|r| r.info.run_id).collect()
    } else {
        run_ids.to_vec()
    };
    let mut failed = 0;
    for id in &ids {
        #[allow(clippy::print_stderr)]
        match sync_run(&local, remote.as_ref(), id).await {
            Ok(r) => eprintln!(
                "{id} -> {} ({}): {} metric values, {} params, {} artifacts, {} model versions sent",
                r.remote_run_id,
                if r.created { "created" } else { "updated" },
                r.metrics,
                r.params,
                r.artifacts,
                r.model_versions
            ),
            Err(e) => {
                failed += 1;
                eprintln!("error: {id}: {e}");
            }
        }
    }
    if failed > 0 {
        bail!("{failed} of {} runs were not synced", ids.len());
    }
    Ok(ExitCode::SUCCESS)
}
