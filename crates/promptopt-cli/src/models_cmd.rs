//! `promptopt models list|show|delete`: the local model registry; and the model stack the
//! commands share (the embedded engine for `local/…` models, providers for the rest).

#[cfg(feature = "engine")]
use std::collections::BTreeMap;
use std::process::ExitCode;
#[cfg(feature = "engine")]
use std::sync::Arc;

#[cfg(feature = "engine")]
use anyhow::Context;
#[cfg(feature = "engine")]
use async_trait::async_trait;
#[cfg(feature = "engine")]
use promptopt_engine::{Engine, EngineConfig};
#[cfg(feature = "engine")]
use promptopt_lm::{ChatRequest, ChatResponse, Lm, LmError};
use promptopt_lm::{LmConfig, LmStack, SharedLm};
use promptopt_optimize::registry::default_home;
use promptopt_optimize::{ModelRef, Registry};

/// Manage saved models.
#[derive(Debug, clap::Args)]
pub struct ModelsArgs {
    #[command(subcommand)]
    command: ModelsCommand,
}

#[derive(Debug, clap::Subcommand)]
enum ModelsCommand {
    /// List saved models and their versions.
    List {
        /// Print JSON.
        #[arg(long)]
        json: bool,
    },
    /// Show a saved model (`NAME`, `NAME@VERSION`, `NAME@latest`).
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
}

/// Runs `promptopt models`.
pub async fn run(args: ModelsArgs) -> anyhow::Result<ExitCode> {
    let registry = Registry::from_env();
    match args.command {
        ModelsCommand::List { json } => {
            let models = registry.list()?;
            #[allow(clippy::print_stdout)]
            if json {
                println!("{}", serde_json::to_string_pretty(&models)?);
            } else if models.is_empty() {
                println!("No saved models in `{}`", registry.home().display());
            } else {
                println!("{:<32} {:<10} versions", "name", "latest");
                for m in models {
                    let latest = m
                        .versions
                        .last()
                        .map(ToString::to_string)
                        .unwrap_or_default();
                    let all: Vec<String> = m.versions.iter().map(ToString::to_string).collect();
                    println!("{:<32} {:<10} {}", m.name, latest, all.join(", "));
                }
            }
        }
        ModelsCommand::Show { model } => {
            let artifact = registry.load_ref(&model)?;
            #[allow(clippy::print_stdout)]
            {
                println!("{}", serde_json::to_string_pretty(&artifact)?);
            }
        }
        ModelsCommand::Delete { model, all } => {
            let r: ModelRef = model.parse()?;
            if r.version.is_none() && !all {
                anyhow::bail!(
                    "Give a version (`{}@1.0.0`) or `--all` to delete every version",
                    r.name
                );
            }
            registry.delete(&r.name, r.version)?;
            #[allow(clippy::print_stderr)]
            {
                eprintln!("Deleted `{r}`");
            }
        }
    }
    Ok(ExitCode::SUCCESS)
}

/// Serves `local/…` models by name, each from its own engine.
#[cfg(feature = "engine")]
struct LocalModels {
    engines: BTreeMap<String, Arc<Engine>>,
}

#[cfg(feature = "engine")]
#[async_trait]
impl Lm for LocalModels {
    async fn chat(&self, request: &ChatRequest) -> Result<ChatResponse, LmError> {
        match self.engines.get(&request.model) {
            Some(engine) => engine.chat(request).await,
            None => Err(LmError::InvalidRequest(format!(
                "The local model `{}` is not loaded; loaded: {}",
                request.model,
                self.engines.keys().cloned().collect::<Vec<_>>().join(", ")
            ))),
        }
    }
}

/// The model stack for `models`: an engine per distinct `local/…` model, providers for the
/// others, with the response cache on disk under `PROMPTOPT_HOME/cache` unless `no_cache`.
pub async fn build_lm(
    models: &[String],
    concurrency: usize,
    no_cache: bool,
) -> anyhow::Result<SharedLm> {
    let local: Vec<&String> = models.iter().filter(|m| m.starts_with("local/")).collect();
    #[cfg(not(feature = "engine"))]
    if let Some(model) = local.first() {
        anyhow::bail!("The local model `{model}` needs the `engine` feature of promptopt-cli");
    }
    #[cfg(feature = "engine")]
    let mut engines = BTreeMap::new();
    #[cfg(feature = "engine")]
    for model in local {
        if engines.contains_key(model) {
            continue;
        }
        let config = EngineConfig::new(model.clone())
            .with_slots(u32::try_from(concurrency.clamp(1, 16)).unwrap_or(4))
            .with_ctx_per_slot(4096);
        let engine = Engine::load_async(config).await.with_context(|| {
            format!("Could not load the local model `{model}` (run `scripts/fetch-model.sh`)")
        })?;
        engines.insert(model.clone(), Arc::new(engine));
    }
    let mut config = LmConfig::default();
    if no_cache {
        config.cache.enabled = false;
    } else {
        config.cache.disk_dir = Some(default_home().join("cache"));
    }
    #[allow(unused_mut)]
    let mut stack = LmStack::new(config);
    #[cfg(feature = "engine")]
    if !engines.is_empty() {
        stack = stack.with_backend("local", Arc::new(LocalModels { engines }));
    }
    #[cfg(not(feature = "engine"))]
    let _ = concurrency;
    Ok(stack.assemble()?)
}

/// Loads a saved model (`NAME`, `NAME@VERSION`, `NAME@latest`) for `predict` and `evaluate`, and
/// points `lm` at the model, adapter, temperature and reply bound it was optimized with.
pub(crate) fn load_saved(
    reference: &str,
    lm: &mut crate::evaluate::LmArgs,
) -> anyhow::Result<promptopt_optimize::ModelArtifact> {
    let artifact = Registry::from_env().load_ref(reference)?;
    lm.model.clone_from(&artifact.model.model);
    lm.adapter = Some(match artifact.model.adapter.as_str() {
        "json" => crate::evaluate::AdapterArg::Json,
        "completion" => crate::evaluate::AdapterArg::Completion,
        "turns" => crate::evaluate::AdapterArg::Turns,
        _ => crate::evaluate::AdapterArg::Chat,
    });
    if let Some(t) = artifact.model.temperature {
        lm.temperature = t;
    }
    if lm.max_tokens.is_none() {
        lm.max_tokens = artifact.model.max_tokens;
    }
    Ok(artifact)
}

/// The signature of a saved model's (single) predictor.
pub(crate) fn saved_signature(
    artifact: &promptopt_optimize::ModelArtifact,
) -> anyhow::Result<promptopt_core::Signature> {
    artifact
        .program
        .predictors
        .first()
        .map(|p| p.signature.clone())
        .ok_or_else(|| anyhow::anyhow!("Model `{}` has no predictor", artifact.id()))
}
