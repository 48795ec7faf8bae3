//! From a [`GpuConfig`] to engine settings: is there a CUDA build, do the devices exist, how
//! many sequences fit in the memory fraction.
//!
//! Device ids are CUDA's (`nvidia-smi`'s numbering, after `CUDA_VISIBLE_DEVICES`); llama.cpp
//! numbers its backend devices differently (the CPU is one of them), so [`detect_gpus`] maps one
//! to the other and [`EngineConfig::devices`] holds llama.cpp's indices.

use llama_cpp_2::model::LlamaModel;
use llama_cpp_2::{list_llama_ggml_backend_devices, LlamaBackendDeviceType};
use promptopt_lm::gpu::GpuConfig;

use crate::{EngineConfig, EngineError};

/// [`EngineConfig::gpu_layers`] for "every layer": more than any model has.
pub const ALL_GPU_LAYERS: u32 = 999;

/// Whether this build has llama.cpp's CUDA backend (the `cuda` feature).
pub const CUDA_BUILD: bool = cfg!(feature = "cuda");

const MIB: u64 = 1024 * 1024;

/// One GPU as llama.cpp sees it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct GpuDevice {
    /// The CUDA device id (`0` for `CUDA0`).
    pub id: u32,
    /// llama.cpp's index of the device among all its backend devices.
    pub backend_index: usize,
    /// llama.cpp's name of the device (`CUDA0`).
    pub name: String,
    /// What the driver calls it (`NVIDIA H100 80GB HBM3`).
    pub description: String,
    /// Its memory, in bytes.
    pub memory_total: u64,
    /// Its free memory when it was listed, in bytes.
    pub memory_free: u64,
}

/// The GPUs llama.cpp can use in this process, by CUDA device id. Empty on a build without the
/// `cuda` feature and on a machine without a visible NVIDIA GPU. Listing them starts the CUDA
/// runtime, and the memory figures come from the driver at the moment of the call.
pub fn detect_gpus() -> Vec<GpuDevice> {
    if !CUDA_BUILD {
        return Vec::new();
    }
    gpus_from(
        list_llama_ggml_backend_devices()
            .into_iter()
            .filter(|d| d.device_type == LlamaBackendDeviceType::Gpu)
            .map(|d| {
                (
                    d.index,
                    d.name,
                    d.description,
                    d.memory_total as u64,
                    d.memory_free as u64,
                )
            }),
    )
}

/// Numbers GPU backend devices by CUDA id: `CUDA<n>` is device `n`; a device named otherwise takes
/// its position among the GPUs.
fn gpus_from(devices: impl Iterator<Item = (usize, String, String, u64, u64)>) -> Vec<GpuDevice> {
    let mut gpus: Vec<GpuDevice> = devices
        .enumerate()
        .map(
            |(position, (index, name, description, total, free))| GpuDevice {
                id: name
                    .strip_prefix("CUDA")
                    .and_then(|n| n.parse().ok())
                    .unwrap_or_else(|| u32::try_from(position).unwrap_or(u32::MAX)),
                backend_index: index,
                name,
                description,
                memory_total: total,
                memory_free: free,
            },
        )
        .collect();
    gpus.sort_by_key(|g| g.id);
    gpus
}

/// What [`EngineConfig::place_gpu`] decided.
#[derive(Debug, Clone, PartialEq)]
pub struct GpuPlacement {
    /// The engine settings: on the GPUs, or on the CPU.
    pub config: EngineConfig,
    /// The GPUs the model goes on; empty on the CPU.
    pub devices: Vec<GpuDevice>,
    /// Why a GPU that was asked for is not used (already logged as warnings).
    pub warnings: Vec<String>,
}

impl GpuPlacement {
    /// Whether the model runs on GPUs.
    pub fn on_gpu(&self) -> bool {
        !self.devices.is_empty()
    }
}

impl EngineConfig {
    /// These settings with `gpu` applied: the layers offloaded, the devices, the slots
    /// (`gpu.batch_size`) and the memory fraction, checked against this build and this machine.
    /// `None` leaves the settings on the CPU.
    ///
    /// Errors, each naming the setting: a value out of range; a GPU asked for on a build without
    /// the `cuda` feature (the message says how to build one) or on a machine without the
    /// devices, unless `gpu.required` is `false`, in which case the settings stay on the CPU and
    /// the reason is logged and returned in [`GpuPlacement::warnings`].
    pub fn place_gpu(self, gpu: Option<&GpuConfig>) -> Result<GpuPlacement, EngineError> {
        let devices = match gpu {
            Some(_) if CUDA_BUILD => detect_gpus(),
            _ => Vec::new(),
        };
        let placement = place(self, gpu, CUDA_BUILD, &devices)?;
        for warning in &placement.warnings {
            tracing::warn!("{warning}");
        }
        if placement.on_gpu() {
            let names: Vec<String> = placement
                .devices
                .iter()
                .map(|d| {
                    format!(
                        "{} {} ({} of {} MiB free)",
                        d.id,
                        d.description,
                        d.memory_free / MIB,
                        d.memory_total / MIB
                    )
                })
                .collect();
            tracing::info!(
                model = %placement.config.model,
                slots = placement.config.slots,
                layers = placement.config.gpu_layers,
                "running on GPU {}",
                names.join(", ")
            );
        }
        Ok(placement)
    }
}

/// [`EngineConfig::place_gpu`] for a given build and list of devices.
pub(crate) fn place(
    config: EngineConfig,
    gpu: Option<&GpuConfig>,
    cuda_build: bool,
    devices: &[GpuDevice],
) -> Result<GpuPlacement, EngineError> {
    let Some(gpu) = gpu else {
        return Ok(GpuPlacement {
            config,
            devices: Vec::new(),
            warnings: Vec::new(),
        });
    };
    gpu.check()?;
    let on_cpu = |config: EngineConfig, reason: String| -> Result<GpuPlacement, EngineError> {
        let warning = format!(
            "{reason}; `gpu.required` is false, so `{}` runs on the CPU",
            config.model
        );
        Ok(GpuPlacement {
            config,
            devices: Vec::new(),
            warnings: vec![warning],
        })
    };
    if !cuda_build {
        if gpu.required {
            return Err(EngineError::GpuNotBuilt {
                devices: gpu.devices_text(),
            });
        }
        return on_cpu(
            config,
            "A GPU was asked for but this build of promptopt has no CUDA support (build it with `cargo build --release --features cuda`)".to_string(),
        );
    }
    let mut chosen = Vec::new();
    let mut missing = Vec::new();
    for id in &gpu.device_ids {
        match devices.iter().find(|d| d.id == *id) {
            Some(device) => chosen.push(device.clone()),
            None => missing.push(*id),
        }
    }
    if !missing.is_empty() {
        let have = if devices.is_empty() {
            "no CUDA device is visible to this process (check `nvidia-smi` and `CUDA_VISIBLE_DEVICES`)".to_string()
        } else {
            format!(
                "the devices here are {}",
                devices
                    .iter()
                    .map(|d| format!("{} ({})", d.id, d.description))
                    .collect::<Vec<_>>()
                    .join(", ")
            )
        };
        let missing: Vec<String> = missing.iter().map(u32::to_string).collect();
        let message = format!("no CUDA device {}; {have}", missing.join(", "));
        if gpu.required {
            return Err(EngineError::Gpu {
                setting: "gpu.device_ids",
                message,
            });
        }
        return on_cpu(config, format!("Cannot use the GPU: {message}"));
    }
    let slots = u32::try_from(gpu.batch_size).unwrap_or(u32::MAX);
    let config = EngineConfig {
        gpu_layers: gpu.layers.unwrap_or(ALL_GPU_LAYERS),
        main_gpu: 0,
        devices: chosen.iter().map(|d| d.backend_index).collect(),
        slots,
        batch_size: config.batch_size.max(slots),
        gpu_memory_fraction: Some(gpu.memory_fraction),
        ..config
    };
    Ok(GpuPlacement {
        config,
        devices: chosen,
        warnings: Vec::new(),
    })
}

/// How much of the devices' memory the engine may use.
#[derive(Debug, Clone, Copy, PartialEq)]
pub(crate) struct MemoryBudget {
    /// The devices' memory together.
    pub total: u64,
    /// Their free memory before the model was loaded.
    pub free: u64,
    /// The share of `total` allowed.
    pub fraction: f64,
}

impl MemoryBudget {
    /// The bytes the engine may use: the fraction of the total, and no more than was free.
    pub fn bytes(&self) -> u64 {
        let share = (self.total as f64 * self.fraction).floor();
        let share = if share.is_finite() && share > 0.0 {
            share as u64
        } else {
            0
        };
        share.min(self.free)
    }

    /// The memory of the devices `config` puts the model on (all GPUs when it names none), as
    /// the driver reports it now; `None` without a memory fraction, on the CPU, or when no
    /// device reports memory.
    pub fn read(config: &EngineConfig) -> Option<Self> {
        let fraction = config.gpu_memory_fraction?;
        if config.gpu_layers == 0 || !CUDA_BUILD {
            return None;
        }
        let (mut total, mut free) = (0u64, 0u64);
        for device in list_llama_ggml_backend_devices() {
            let used = if config.devices.is_empty() {
                device.device_type == LlamaBackendDeviceType::Gpu
            } else {
                config.devices.contains(&device.index)
            };
            if used {
                total = total.saturating_add(device.memory_total as u64);
                free = free.saturating_add(device.memory_free as u64);
            }
        }
        (total > 0).then_some(Self {
            total,
            free,
            fraction,
        })
    }
}

/// What a loaded model needs on the GPU, besides the KV cache.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Footprint {
    /// The weights of the offloaded layers.
    pub weights: u64,
    /// KV cache bytes per token (all layers, keys and values, f16).
    pub kv_per_token: u64,
    /// Vocabulary size (the logits of a batch are computed on the device).
    pub n_vocab: u64,
    /// Embedding width.
    pub n_embd: u64,
}

impl Footprint {
    /// Reads a loaded model's sizes from its metadata.
    pub fn of(model: &LlamaModel, gpu_layers: u32) -> Self {
        let n_layer = u64::from(model.n_layer());
        let n_head = u64::from(model.n_head().max(1));
        let n_head_kv = u64::from(model.n_head_kv());
        let n_embd = u64::try_from(model.n_embd()).unwrap_or(0);
        let arch = model
            .meta_val_str("general.architecture")
            .unwrap_or_default();
        let dim = |key: &str| {
            model
                .meta_val_str(&format!("{arch}.attention.{key}"))
                .ok()
                .and_then(|v| v.trim().parse::<u64>().ok())
                .unwrap_or(n_embd / n_head)
        };
        // The output layer counts as one more layer, as in llama.cpp's `n_gpu_layers`.
        let offloaded = u64::from(gpu_layers).min(n_layer + 1);
        let weights = if n_layer == 0 {
            model.size()
        } else {
            (u128::from(model.size()) * u128::from(offloaded) / u128::from(n_layer + 1))
                .try_into()
                .unwrap_or(u64::MAX)
        };
        Self {
            weights,
            kv_per_token: n_layer * n_head_kv * (dim("key_length") + dim("value_length")) * 2,
            n_vocab: u64::try_from(model.n_vocab()).unwrap_or(0),
            n_embd,
        }
    }

    /// A generous estimate of the compute buffers for micro-batches of `ubatch` tokens: the
    /// logits of every token, activations, and a fixed margin.
    pub fn compute(&self, ubatch: u64) -> u64 {
        ubatch * (self.n_vocab + 16 * self.n_embd) * 4 + 256 * MIB
    }
}

/// The slots and tokens per decode call that fit in `budget`: the configured ones when they fit;
/// else the most slots any smaller decode batch (halving down to 16 tokens) leaves room for.
/// An error when not even one slot fits.
pub(crate) fn plan_memory(
    budget: &MemoryBudget,
    footprint: &Footprint,
    slots: u32,
    ctx_per_slot: u32,
    batch_size: u32,
) -> Result<(u32, u32), String> {
    let available = budget.bytes();
    let per_slot = footprint.kv_per_token.max(1) * u64::from(ctx_per_slot);
    let mut best: Option<(u32, u32)> = None;
    let mut batch = batch_size.max(16);
    loop {
        let fixed = footprint.weights + footprint.compute(u64::from(batch.min(512)));
        if let Some(room) = available.checked_sub(fixed) {
            let fit = u32::try_from(room / per_slot).unwrap_or(u32::MAX);
            let planned = slots.min(fit).min(batch);
            if planned > 0 && best.is_none_or(|(b, _)| planned > b) {
                best = Some((planned, batch));
            }
            if planned == slots {
                break;
            }
        }
        if batch <= 16 {
            break;
        }
        batch = (batch / 2).max(16);
    }
    best.ok_or_else(|| {
        let needed = footprint.weights + footprint.compute(16) + per_slot;
        format!(
            "the model needs about {} MiB on the GPU (weights {} MiB, one sequence of {ctx_per_slot} tokens {} MiB, buffers), more than {} of {} MiB ({} MiB free) allows; raise `gpu.memory_fraction`, offload fewer layers (`gpu.layers`) or use a smaller model",
            needed.div_ceil(MIB),
            footprint.weights.div_ceil(MIB),
            per_slot.div_ceil(MIB),
            budget.fraction,
            budget.total / MIB,
            budget.free / MIB,
        )
    })
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    fn h100(id: u32, index: usize) -> GpuDevice {
        GpuDevice {
            id,
            backend_index: index,
            name: format!("CUDA{id}"),
            description: "NVIDIA H100 80GB HBM3".into(),
            memory_total: 80 * 1024 * MIB,
            memory_free: 79 * 1024 * MIB,
        }
    }

    fn gpu(ids: &[u32], required: bool) -> GpuConfig {
        GpuConfig {
            device_ids: ids.to_vec(),
            required,
            ..GpuConfig::default()
        }
    }

    #[test]
    fn no_gpu_asked_leaves_the_settings_alone() {
        let config = EngineConfig::new("local/smollm2-135m").with_slots(4);
        let placed = place(config.clone(), None, false, &[]).unwrap();
        assert_eq!(placed.config, config);
        assert!(!placed.on_gpu() && placed.warnings.is_empty());
    }

    #[test]
    fn without_cuda_a_required_gpu_says_how_to_build_one() {
        let error = place(EngineConfig::default(), Some(&gpu(&[0], true)), false, &[])
            .unwrap_err()
            .to_string();
        assert!(
            error.contains("`cargo build --release --features cuda`"),
            "{error}"
        );
        assert!(error.contains("CUDA toolkit"), "{error}");
        assert!(error.contains("`gpu.required: false`"), "{error}");
        assert!(
            error.starts_with("A GPU was asked for (`gpu.device_ids`: 0)"),
            "{error}"
        );
        assert!(!error.ends_with('.'), "{error}");
    }

    #[test]
    fn without_cuda_an_optional_gpu_falls_back_to_the_cpu_with_a_warning() {
        let config = EngineConfig::new("local/smollm2-135m").with_slots(4);
        let placed = place(config.clone(), Some(&gpu(&[0, 1], false)), false, &[]).unwrap();
        assert_eq!(placed.config, config, "the CPU settings, untouched");
        assert_eq!(placed.config.gpu_layers, 0);
        assert!(placed.config.devices.is_empty());
        assert!(!placed.on_gpu());
        assert_eq!(placed.warnings.len(), 1);
        assert!(
            placed.warnings[0].contains("no CUDA support"),
            "{:?}",
            placed.warnings
        );
        assert!(
            placed.warnings[0].contains("runs on the CPU"),
            "{:?}",
            placed.warnings
        );
    }

    #[test]
    fn a_cuda_build_without_the_device_fails_or_falls_back() {
        let error = place(EngineConfig::default(), Some(&gpu(&[0], true)), true, &[])
            .unwrap_err()
            .to_string();
        assert!(error.contains("`gpu.device_ids`"), "{error}");
        assert!(error.contains("no CUDA device 0"), "{error}");
        let error = place(
            EngineConfig::default(),
            Some(&gpu(&[0, 3], true)),
            true,
            &[h100(0, 0)],
        )
        .unwrap_err()
        .to_string();
        assert!(
            error.contains("no CUDA device 3; the devices here are 0 (NVIDIA H100"),
            "{error}"
        );
        let placed = place(
            EngineConfig::default(),
            Some(&gpu(&[3], false)),
            true,
            &[h100(0, 0)],
        )
        .unwrap();
        assert!(!placed.on_gpu());
        assert_eq!(placed.config.gpu_layers, 0);
        assert!(
            placed.warnings[0].contains("no CUDA device 3"),
            "{:?}",
            placed.warnings
        );
    }

    #[test]
    fn a_gpu_sets_layers_devices_slots_and_the_memory_fraction() {
        let mut config = gpu(&[1, 0], true);
        config.batch_size = 128;
        config.memory_fraction = 0.5;
        // llama.cpp lists the CPU first here: CUDA ids and backend indices differ.
        let devices = [h100(0, 1), h100(1, 2)];
        let placed = place(EngineConfig::default(), Some(&config), true, &devices).unwrap();
        assert!(placed.on_gpu());
        assert_eq!(placed.config.gpu_layers, ALL_GPU_LAYERS);
        assert_eq!(placed.config.devices, [2, 1], "in the order asked");
        assert_eq!(placed.config.main_gpu, 0);
        assert_eq!(placed.config.slots, 128);
        assert_eq!(placed.config.batch_size, 512);
        assert_eq!(placed.config.gpu_memory_fraction, Some(0.5));
        assert!(placed.config.validate().is_ok());
        config.layers = Some(12);
        config.batch_size = 1;
        let placed = place(EngineConfig::default(), Some(&config), true, &devices).unwrap();
        assert_eq!((placed.config.gpu_layers, placed.config.slots), (12, 1));
    }

    #[test]
    fn bad_values_are_errors_before_anything_else() {
        let mut config = gpu(&[0], false);
        config.batch_size = 0;
        let error = place(EngineConfig::default(), Some(&config), false, &[])
            .unwrap_err()
            .to_string();
        assert!(error.contains("`gpu.batch_size`"), "{error}");
    }

    #[test]
    fn devices_are_numbered_by_their_cuda_name() {
        let gpus = gpus_from(
            vec![
                (2, "CUDA1".to_string(), "b".to_string(), 10, 5),
                (1, "CUDA0".to_string(), "a".to_string(), 10, 5),
            ]
            .into_iter(),
        );
        assert_eq!(gpus[0].id, 0);
        assert_eq!(gpus[0].backend_index, 1);
        assert_eq!(gpus[1].id, 1);
        assert_eq!(gpus[1].backend_index, 2);
        // This build has no CUDA: nothing is listed.
        if !CUDA_BUILD {
            assert!(detect_gpus().is_empty());
        }
    }

    fn smollm2() -> Footprint {
        // SmolLM2-135M: 30 layers, 3 KV heads of 64: 23,040 bytes a token.
        Footprint {
            weights: 98 * MIB,
            kv_per_token: 30 * 3 * (64 + 64) * 2,
            n_vocab: 49_152,
            n_embd: 576,
        }
    }

    #[test]
    fn the_memory_fraction_caps_the_slots_then_the_batch() {
        let big = MemoryBudget {
            total: 80 * 1024 * MIB,
            free: 79 * 1024 * MIB,
            fraction: 0.9,
        };
        assert_eq!(
            plan_memory(&big, &smollm2(), 128, 4096, 512).unwrap(),
            (128, 512)
        );
        // 2 GiB: weights 98 MiB + buffers ~380 MiB leave room for about 16 sequences of 4,096
        // tokens (90 MiB each).
        let small = MemoryBudget {
            total: 2 * 1024 * MIB,
            free: 2 * 1024 * MIB,
            fraction: 1.0,
        };
        let (slots, batch) = plan_memory(&small, &smollm2(), 128, 4096, 512).unwrap();
        assert!((10..128).contains(&slots), "{slots}");
        assert!(batch >= slots);
        // The free memory caps too.
        let busy = MemoryBudget {
            free: 600 * MIB,
            ..big
        };
        let (slots, _) = plan_memory(&busy, &smollm2(), 128, 4096, 512).unwrap();
        assert!(slots < 10, "{slots}");
        // Nothing fits: an error naming the setting, with the sizes.
        let tiny = MemoryBudget {
            total: 80 * 1024 * MIB,
            free: 80 * 1024 * MIB,
            fraction: 0.001,
        };
        let error = plan_memory(&tiny, &smollm2(), 8, 4096, 512).unwrap_err();
        assert!(error.contains("`gpu.memory_fraction`"), "{error}");
        assert!(error.contains("weights 98 MiB"), "{error}");
    }
}
