//! What the subcommands share: exit codes, the model flags and the model stack, program files.

use std::process::ExitCode;
use std::sync::Arc;

use promptopt_core::adapter::AdapterKind;
use promptopt_core::{
    LmRegistry, Program, ProgramState, RunSettings, Runtime, Signature, Strategy,
};
use promptopt_lm::gpu::GpuConfig;
use promptopt_lm::{LmConfig, LmStack, SharedLm};
use promptopt_registry::{default_home, ModelArtifact};
use serde::{Deserialize, Serialize};

pub(crate) use crate::gpu_args::{usable_gpu, GpuArgs};

/// Exit code: the run completed but failed (too many errors, bad data).
pub(crate) const EXIT_FAILED: u8 = 1;
/// Exit code: the command line was wrong.
pub(crate) const EXIT_USAGE: u8 = 2;

/// An error with the exit code it should end the process with.
#[derive(Debug)]
pub(crate) struct Exit {
    pub(crate) code: u8,
    pub(crate) error: anyhow::Error,
}

impl Exit {
    pub(crate) fn usage(error: impl Into<anyhow::Error>) -> Self {
        Self {
            code: EXIT_USAGE,
            error: error.into(),
        }
    }

    pub(crate) fn failed(error: impl Into<anyhow::Error>) -> Self {
        Self {
            code: EXIT_FAILED,
            error: error.into(),
        }
    }

    /// Prints the error and returns its exit code.
    #[allow(clippy::print_stderr)]
    pub(crate) fn report(self) -> ExitCode {
        eprintln!("error: {:#}", self.error);
        ExitCode::from(self.code)
    }
}

/// Which adapter renders the prompt.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub(crate) enum AdapterArg {
    /// Field markers, demos as chat turns.
    Chat,
    /// Replies as a JSON object.
    Json,
    /// One plain prompt for base models.
    Completion,
    /// Compact chat turns (`Field: value` lines, bare single values).
    Turns,
}

impl From<AdapterArg> for AdapterKind {
    fn from(arg: AdapterArg) -> Self {
        match arg {
            AdapterArg::Chat => AdapterKind::Chat,
            AdapterArg::Json => AdapterKind::Json,
            AdapterArg::Completion => AdapterKind::Completion,
            AdapterArg::Turns => AdapterKind::Turns,
        }
    }
}

/// How the model answers.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub(crate) enum StrategyArg {
    /// Directly.
    Predict,
    /// Reasoning first (chain of thought).
    Cot,
}

impl From<StrategyArg> for Strategy {
    fn from(arg: StrategyArg) -> Self {
        match arg {
            StrategyArg::Predict => Strategy::Predict,
            StrategyArg::Cot => Strategy::ChainOfThought,
        }
    }
}

/// The model and how requests are sent.
#[derive(Debug, Clone, clap::Args)]
pub(crate) struct LmArgs {
    /// The task model: `provider/model` (`openai/gpt-4o-mini`, `local/smollm2-135m`, ...).
    #[arg(
        long = "lm-model",
        id = "lm_model",
        default_value = "local/smollm2-135m"
    )]
    pub(crate) model: String,
    /// Base URL of an OpenAI-compatible server for the model's provider (e.g. a `serve-lm`).
    #[arg(long)]
    pub(crate) base_url: Option<String>,
    /// Which adapter renders the prompt [default: `turns` for `local/` models, else `chat`].
    #[arg(long, value_enum)]
    pub(crate) adapter: Option<AdapterArg>,
    /// Sampling temperature.
    #[arg(long, default_value_t = 0.0)]
    pub(crate) temperature: f32,
    /// Upper bound on generated tokens per call.
    #[arg(long)]
    pub(crate) max_tokens: Option<u32>,
    /// Do not read or write the response cache (kept under `$PROMPTOPT_HOME/cache`).
    #[arg(long)]
    pub(crate) no_cache: bool,
    /// Do not retry an unparsable chat reply through the JSON adapter.
    #[arg(long)]
    pub(crate) no_json_fallback: bool,
    /// Where the embedded model runs.
    #[command(flatten)]
    pub(crate) gpu: GpuArgs,
}

impl LmArgs {
    /// The adapter named by `--adapter`, or the model's default.
    pub(crate) fn adapter_kind(&self) -> AdapterKind {
        self.adapter
            .map_or_else(|| AdapterKind::default_for_model(&self.model), Into::into)
    }

    /// Points the flags at the model, adapter, temperature and reply bound a saved model was
    /// optimized with (an explicit `--max-tokens` wins).
    pub(crate) fn apply_saved(&mut self, artifact: &ModelArtifact) {
        self.model.clone_from(&artifact.model.model);
        self.adapter = Some(match artifact.model.adapter {
            AdapterKind::Json => AdapterArg::Json,
            AdapterKind::Completion => AdapterArg::Completion,
            AdapterKind::Turns => AdapterArg::Turns,
            AdapterKind::Chat => AdapterArg::Chat,
        });
        if let Some(t) = artifact.model.temperature {
            self.temperature = t;
        }
        if self.max_tokens.is_none() {
            self.max_tokens = artifact.model.max_tokens;
        }
    }

    /// The GPU the embedded model runs on for `models` (flags, then `PROMPTOPT_GPU_*`), checked
    /// against this build and machine; `None` on the CPU, for remote models and with
    /// `--base-url`.
    pub(crate) fn gpu_for(&self, models: &[String]) -> Result<Option<GpuConfig>, Exit> {
        let gpu = self.gpu.resolve(None).map_err(Exit::usage)?;
        if self.base_url.is_some() {
            return usable_gpu(gpu, &[]).map_err(Exit::usage);
        }
        usable_gpu(gpu, models).map_err(Exit::usage)
    }

    /// The runtime: the model stack for `models` (the task model first) and request settings.
    /// `concurrency` sizes the embedded engine's slots for `local/` models on the CPU; `gpu`
    /// (from [`LmArgs::gpu_for`]) puts them on GPUs.
    pub(crate) async fn runtime(
        &self,
        models: &[String],
        concurrency: usize,
        gpu: Option<&GpuConfig>,
    ) -> Result<Runtime, Exit> {
        let lm = self.stack(models, concurrency, gpu).await?;
        Ok(
            Runtime::new(LmRegistry::new(&self.model, Arc::clone(&lm)).with_fallback(lm))
                .with_settings(RunSettings {
                    adapter: self.adapter_kind(),
                    json_fallback: !self.no_json_fallback,
                    temperature: Some(self.temperature),
                    max_tokens: self.max_tokens,
                    seed: None,
                    use_cache: !self.no_cache,
                    tools: Vec::new(),
                }),
        )
    }

    /// `local/` models without `--base-url` run in the embedded engine; everything else goes to
    /// its provider (at `--base-url` when given).
    async fn stack(
        &self,
        models: &[String],
        concurrency: usize,
        gpu: Option<&GpuConfig>,
    ) -> Result<SharedLm, Exit> {
        let Some((provider, _)) = self.model.split_once('/') else {
            return Err(Exit::usage(anyhow::anyhow!(
                "The model `{}` has no provider; write it as `provider/model`",
                self.model
            )));
        };
        if self.base_url.is_none() && models.iter().any(|m| m.starts_with("local/")) {
            return build_lm(models, concurrency, self.no_cache, gpu)
                .await
                .map_err(Exit::failed);
        }
        let mut config = LmConfig::default()
            .with_env_overrides(|name| std::env::var(name).ok())
            .map_err(Exit::usage)?;
        if let Some(url) = &self.base_url {
            config = config.with_base_url(provider, url.clone());
        }
        if self.no_cache {
            config.cache.enabled = false;
        } else {
            config.cache.disk_dir = Some(default_home().join("cache"));
        }
        LmStack::new(config).assemble().map_err(Exit::usage)
    }
}

#[allow(clippy::print_stdout)]
pub(crate) fn print_stdout(text: &str) {
    println!("{text}");
}

/// The model stack for `models`: the embedded engine for each distinct `local/…` model (with
/// `concurrency` slots on the CPU, or on the GPUs `gpu` names with `gpu.batch_size` slots),
/// providers for the others, the response cache on disk under `PROMPTOPT_HOME/cache` unless
/// `no_cache`.
pub(crate) async fn build_lm(
    models: &[String],
    concurrency: usize,
    no_cache: bool,
    gpu: Option<&GpuConfig>,
) -> anyhow::Result<SharedLm> {
    let mut config = LmConfig::default().with_env_overrides(|name| std::env::var(name).ok())?;
    if no_cache {
        config.cache.enabled = false;
    } else {
        config.cache.disk_dir = Some(default_home().join("cache"));
    }
    let slots = u32::try_from(concurrency.clamp(1, 16)).unwrap_or(4);
    #[cfg(feature = "engine")]
    {
        use anyhow::Context;
        promptopt_engine::model_stack(models, slots, gpu, config)
            .await
            .context("Could not set up the models")
    }
    #[cfg(not(feature = "engine"))]
    {
        let _ = (slots, gpu);
        if let Some(model) = models.iter().find(|m| m.starts_with("local/")) {
            anyhow::bail!("The local model `{model}` needs the `engine` feature of promptopt-cli");
        }
        Ok(LmStack::new(config).assemble()?)
    }
}

/// A program with its state, as `evaluate --save-program` writes it and `predict --state` reads
/// it. Files with a bare `signature` instead of a `program` (a single predictor) still load.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub(crate) struct ProgramFile {
    /// The program.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub(crate) program: Option<Program>,
    /// The single predictor's signature (older files).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub(crate) signature: Option<Signature>,
    /// The learned state.
    pub(crate) state: ProgramState,
}

impl ProgramFile {
    /// The program the file describes.
    pub(crate) fn program(&self) -> anyhow::Result<Program> {
        match (&self.program, &self.signature) {
            (Some(program), _) => Ok(program.clone()),
            (None, Some(signature)) => Ok(Program::single(signature.clone())),
            (None, None) => anyhow::bail!("The file has neither `program` nor `signature`"),
        }
    }
}
