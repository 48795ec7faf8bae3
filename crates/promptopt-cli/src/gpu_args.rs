//! The `--gpu*` flags of every command that runs the embedded model, and how they meet the
//! `PROMPTOPT_GPU_*` variables and the `gpu:` blocks of files (flags > environment > file).

use promptopt_lm::gpu::{
    parse_batch_size, parse_devices, parse_layers, parse_memory_fraction, resolve_gpu, GpuConfig,
    GpuDevices, GpuOverrides,
};

/// `--gpu-layers`: a count, or all layers (`None`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct LayersArg(Option<u32>);

fn devices_flag(text: &str) -> Result<GpuDevices, String> {
    parse_devices("--gpu", text).map_err(|e| e.to_string())
}

fn layers_flag(text: &str) -> Result<LayersArg, String> {
    parse_layers("--gpu-layers", text)
        .map(LayersArg)
        .map_err(|e| e.to_string())
}

fn fraction_flag(text: &str) -> Result<f64, String> {
    parse_memory_fraction("--gpu-memory-fraction", text).map_err(|e| e.to_string())
}

fn batch_flag(text: &str) -> Result<usize, String> {
    parse_batch_size("--gpu-batch-size", text).map_err(|e| e.to_string())
}

/// Where the embedded model runs. Any of these flags asks for a GPU; each wins over its
/// `PROMPTOPT_GPU_*` variable, which wins over the `gpu:` block of the request or configuration.
#[derive(Debug, Clone, Default, clap::Args)]
#[command(next_help_heading = "GPU (embedded `local/…` models; builds with `--features cuda`)")]
pub(crate) struct GpuArgs {
    /// Run the embedded model on these CUDA devices: ids separated by commas (`0`, `0,1`;
    /// several split the model's layers), or `none` for the CPU [env: PROMPTOPT_GPU_DEVICES].
    #[arg(long = "gpu", value_name = "DEVICE_IDS", value_parser = devices_flag)]
    pub(crate) gpu: Option<GpuDevices>,
    /// Layers offloaded to the GPU: a number or `all` [default: all] [env:
    /// PROMPTOPT_GPU_LAYERS].
    #[arg(long, value_name = "N", value_parser = layers_flag)]
    pub(crate) gpu_layers: Option<LayersArg>,
    /// The share of GPU memory, in (0, 1], the engine may use for weights, KV cache and buffers
    /// [default: 0.9] [env: PROMPTOPT_GPU_MEMORY_FRACTION].
    #[arg(long, value_name = "F", value_parser = fraction_flag)]
    pub(crate) gpu_memory_fraction: Option<f64>,
    /// Sequences decoded together on the GPU, 1 to 256; evaluation sends this many requests at
    /// once unless a concurrency is given [default: 32] [env: PROMPTOPT_GPU_BATCH_SIZE].
    #[arg(long, value_name = "N", value_parser = batch_flag)]
    pub(crate) gpu_batch_size: Option<usize>,
    /// Run on the CPU, with a warning, when no GPU can be used (a build without CUDA, a machine
    /// without the device) [env: PROMPTOPT_GPU_REQUIRED=false].
    #[arg(long)]
    pub(crate) gpu_optional: bool,
}

impl GpuArgs {
    /// What the flags set.
    pub(crate) fn overrides(&self) -> GpuOverrides {
        GpuOverrides {
            devices: self.gpu.clone(),
            layers: self.gpu_layers.map(|l| l.0),
            memory_fraction: self.gpu_memory_fraction,
            batch_size: self.gpu_batch_size,
            required: self.gpu_optional.then_some(false),
        }
    }

    /// The sources of the GPU settings, the environment read now.
    pub(crate) fn sources(&self, file: Option<GpuConfig>) -> anyhow::Result<GpuSources> {
        Ok(GpuSources {
            file,
            env: GpuOverrides::from_env()?,
            flags: self.overrides(),
        })
    }

    /// The GPU configuration of a run whose file (request, configuration) says `file`.
    pub(crate) fn resolve(&self, file: Option<&GpuConfig>) -> anyhow::Result<Option<GpuConfig>> {
        self.sources(file.cloned())?.resolve(None)
    }
}

/// The GPU settings of a long-running command (a worker, a server): its own file, its
/// environment and its flags, to be layered over each job's request.
#[derive(Debug, Clone, Default)]
pub(crate) struct GpuSources {
    /// The command's own `gpu:` block (`serve.yaml`); it replaces a request's block.
    pub(crate) file: Option<GpuConfig>,
    /// `PROMPTOPT_GPU_*`.
    pub(crate) env: GpuOverrides,
    /// `--gpu*`.
    pub(crate) flags: GpuOverrides,
}

impl GpuSources {
    /// The configuration for a job whose request has `request` as its `gpu:` block: the flags,
    /// then the environment, then the command's file, else the request's block.
    pub(crate) fn resolve(&self, request: Option<&GpuConfig>) -> anyhow::Result<Option<GpuConfig>> {
        let file = self.file.as_ref().or(request);
        Ok(resolve_gpu(file, &self.env, &self.flags)?)
    }
}

/// `gpu` when the embedded engine can use it for `models`: `None` when no `local/…` model is
/// among them (with a warning that the settings are ignored) or when the GPU is optional and
/// cannot be used (the engine logs why). An error when it is required and cannot be used: a
/// build without CUDA (the message says how to build one), a device that does not exist.
pub(crate) fn usable_gpu(
    gpu: Option<GpuConfig>,
    models: &[String],
) -> anyhow::Result<Option<GpuConfig>> {
    let Some(gpu) = gpu else {
        return Ok(None);
    };
    let Some(local) = models.iter().find(|m| m.starts_with("local/")) else {
        tracing::warn!(
            "the GPU settings are ignored: they apply to the embedded engine only, and no `local/…` model of this run uses it"
        );
        return Ok(None);
    };
    place(gpu, local)
}

/// Checks the GPU for the engine, before any model loads.
#[cfg(feature = "engine")]
fn place(gpu: GpuConfig, model: &str) -> anyhow::Result<Option<GpuConfig>> {
    use anyhow::Context;
    let placement = promptopt_engine::EngineConfig::new(model)
        .place_gpu(Some(&gpu))
        .context("The GPU settings cannot be used")?;
    Ok(placement.on_gpu().then_some(gpu))
}

#[cfg(not(feature = "engine"))]
fn place(gpu: GpuConfig, model: &str) -> anyhow::Result<Option<GpuConfig>> {
    if gpu.required {
        anyhow::bail!(
            "`{model}` needs the embedded engine, which this build of promptopt leaves out: build it with `cargo build --release -p promptopt-cli --features cuda` for GPUs"
        );
    }
    Ok(None)
}

/// The GPU settings of a command that does not name its models up front (a worker, a server):
/// checked now, so that a GPU that cannot be used stops it at start rather than at its first
/// job. `None` runs on the CPU.
pub(crate) fn check_at_start(gpu: Option<GpuConfig>) -> anyhow::Result<Option<GpuConfig>> {
    usable_gpu(gpu, &["local/smollm2-135m".to_string()])
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use clap::Parser;

    use super::*;

    #[derive(Debug, Parser)]
    struct Cli {
        #[command(flatten)]
        gpu: GpuArgs,
    }

    fn flags(args: &[&str]) -> Result<GpuArgs, String> {
        let mut all = vec!["promptopt"];
        all.extend_from_slice(args);
        Cli::try_parse_from(all)
            .map(|c| c.gpu)
            .map_err(|e| e.to_string())
    }

    #[test]
    fn flags_parse_into_overrides() {
        let args = flags(&[
            "--gpu",
            "0,1",
            "--gpu-layers",
            "all",
            "--gpu-memory-fraction",
            "0.75",
            "--gpu-batch-size",
            "64",
            "--gpu-optional",
        ])
        .unwrap();
        let o = args.overrides();
        assert_eq!(o.devices, Some(GpuDevices::Ids(vec![0, 1])));
        assert_eq!(o.layers, Some(None));
        assert_eq!(o.memory_fraction, Some(0.75));
        assert_eq!(o.batch_size, Some(64));
        assert_eq!(o.required, Some(false));
        assert!(flags(&[]).unwrap().overrides().is_empty());
        assert_eq!(
            flags(&["--gpu-layers", "20"]).unwrap().overrides().layers,
            Some(Some(20))
        );
    }

    #[test]
    fn bad_flags_name_themselves() {
        for (args, setting) in [
            (
                &["--gpu-memory-fraction", "1.5"][..],
                "`--gpu-memory-fraction`",
            ),
            (
                &["--gpu-memory-fraction", "0"][..],
                "`--gpu-memory-fraction`",
            ),
            (&["--gpu-batch-size", "0"][..], "`--gpu-batch-size`"),
            (&["--gpu", "0,0"][..], "`--gpu`"),
            (&["--gpu", "x"][..], "`--gpu`"),
            (&["--gpu-layers", "many"][..], "`--gpu-layers`"),
        ] {
            let error = flags(args).unwrap_err();
            assert!(error.contains(setting), "{args:?}: {error}");
        }
    }

    #[test]
    fn a_servers_block_replaces_the_requests_and_flags_win_over_both() {
        let request = GpuConfig {
            device_ids: vec![3],
            batch_size: 8,
            ..GpuConfig::default()
        };
        let mut sources = GpuSources::default();
        assert_eq!(
            sources.resolve(Some(&request)).unwrap(),
            Some(request.clone())
        );
        assert_eq!(sources.resolve(None).unwrap(), None);
        sources.file = Some(GpuConfig {
            device_ids: vec![1],
            ..GpuConfig::default()
        });
        assert_eq!(
            sources.resolve(Some(&request)).unwrap().unwrap().device_ids,
            [1]
        );
        sources.env.batch_size = Some(16);
        sources.flags.devices = Some(GpuDevices::Ids(vec![0]));
        let resolved = sources.resolve(Some(&request)).unwrap().unwrap();
        assert_eq!((resolved.device_ids[0], resolved.batch_size), (0, 16));
    }

    #[test]
    fn gpu_settings_for_remote_models_are_ignored() {
        let gpu = Some(GpuConfig::default());
        assert_eq!(
            usable_gpu(gpu, &["openai/gpt-4o-mini".to_string()]).unwrap(),
            None
        );
    }

    #[cfg(feature = "engine")]
    #[test]
    fn on_a_build_without_cuda_a_required_gpu_is_an_error_and_an_optional_one_the_cpu() {
        if promptopt_engine::CUDA_BUILD {
            return;
        }
        let models = ["local/smollm2-135m".to_string()];
        let error = usable_gpu(Some(GpuConfig::default()), &models).unwrap_err();
        let text = format!("{error:#}");
        assert!(
            text.contains("`cargo build --release --features cuda`"),
            "{text}"
        );
        let optional = GpuConfig {
            required: false,
            ..GpuConfig::default()
        };
        assert_eq!(usable_gpu(Some(optional), &models).unwrap(), None);
    }
}
