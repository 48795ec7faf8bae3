//! How the embedded engine uses GPUs: one configuration for every path that runs a `local/…`
//! model (`optimize`, `evaluate`, `predict`, `serve-lm`, `serve` and `worker`).
//!
//! The settings come from up to three places, each setting on its own: command-line flags win
//! over environment variables, which win over a file (the `gpu:` block of a request, or of the
//! server's configuration). [`resolve_gpu`] layers them:
//!
//! ```
//! use promptopt_lm::gpu::{resolve_gpu, GpuConfig, GpuOverrides};
//!
//! // The request file asks for GPU 0 and half its memory ...
//! let file: GpuConfig = serde_json::from_str(r#"{"device_ids": [0], "memory_fraction": 0.5}"#)?;
//! // ... the environment moves it to GPUs 0 and 1 ...
//! let env = GpuOverrides::from_lookup(|name| {
//!     (name == "PROMPTOPT_GPU_DEVICES").then(|| "0,1".to_string())
//! })?;
//! // ... and a flag lets it run on the CPU when there is no GPU.
//! let flags = GpuOverrides { required: Some(false), ..GpuOverrides::default() };
//! let gpu = resolve_gpu(Some(&file), &env, &flags)?.expect("a GPU is asked for");
//! assert_eq!(gpu.device_ids, [0, 1]);
//! assert_eq!(gpu.memory_fraction, 0.5);
//! assert!(!gpu.required);
//! # Ok::<(), Box<dyn std::error::Error>>(())
//! ```
//!
//! The configuration only describes what is asked for; `promptopt-engine` turns it into engine
//! settings, checks that the build has CUDA and that the devices exist, and caps the KV cache to
//! the memory fraction.

use serde::{Deserialize, Serialize};

/// The environment variable of [`GpuConfig::device_ids`] (`0`, `0,1`, or `none` for the CPU).
pub const ENV_DEVICES: &str = "PROMPTOPT_GPU_DEVICES";
/// The environment variable of [`GpuConfig::layers`] (a number, or `all`).
pub const ENV_LAYERS: &str = "PROMPTOPT_GPU_LAYERS";
/// The environment variable of [`GpuConfig::memory_fraction`].
pub const ENV_MEMORY_FRACTION: &str = "PROMPTOPT_GPU_MEMORY_FRACTION";
/// The environment variable of [`GpuConfig::batch_size`].
pub const ENV_BATCH_SIZE: &str = "PROMPTOPT_GPU_BATCH_SIZE";
/// The environment variable of [`GpuConfig::required`] (`true` or `false`).
pub const ENV_REQUIRED: &str = "PROMPTOPT_GPU_REQUIRED";

/// The most concurrent sequences one engine holds (its KV cache's sequence limit).
pub const MAX_BATCH_SIZE: usize = 256;

/// The most devices one model may be split across (llama.cpp's limit).
pub const MAX_DEVICES: usize = 16;

/// A GPU setting that is out of range or cannot be read.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
#[non_exhaustive]
pub enum GpuConfigError {
    /// A setting's value is not allowed.
    #[error("Invalid GPU setting `{setting}`: {message}")]
    Invalid {
        /// Where the value came from: `gpu.memory_fraction`, `--gpu-memory-fraction`,
        /// `PROMPTOPT_GPU_MEMORY_FRACTION`, ...
        setting: String,
        /// What is wrong with it.
        message: String,
    },
}

impl GpuConfigError {
    fn invalid(setting: impl Into<String>, message: impl Into<String>) -> Self {
        Self::Invalid {
            setting: setting.into(),
            message: message.into(),
        }
    }

    /// The setting the error is about.
    pub fn setting(&self) -> &str {
        match self {
            Self::Invalid { setting, .. } => setting,
        }
    }
}

/// How the embedded engine runs a model on GPUs (the guide's `GPUConfig`).
///
/// In YAML (the `gpu:` block of a request or of `serve.yaml`; every key is optional, and the
/// block's presence asks for a GPU):
///
/// ```yaml
/// gpu:
///   device_ids: [0, 1]     # CUDA device ids, as nvidia-smi numbers them (default [0])
///   layers: 24             # layers offloaded (default: all of them)
///   memory_fraction: 0.8   # the share of the devices' memory the engine may use (default 0.9)
///   batch_size: 32         # sequences decoded together (default 32)
///   required: true         # false: run on the CPU, with a warning, when no GPU can be used
/// ```
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct GpuConfig {
    /// The CUDA devices to use, by the ids `nvidia-smi` shows (`CUDA_VISIBLE_DEVICES` renumbers
    /// them from 0). With several, llama.cpp's layer split puts consecutive layers (and their
    /// part of the KV cache) on each device, in proportion to its free memory: one engine, one
    /// batch, more memory. It does not run one copy of the model per device.
    pub device_ids: Vec<u32>,
    /// How many of the model's layers are offloaded; `None` (the default) offloads all of them.
    /// The rest run on the CPU.
    pub layers: Option<u32>,
    /// The share of the devices' memory, in (0, 1], the engine may use: weights, KV cache and
    /// compute buffers. At start the engine reads each device's total and free memory from the
    /// driver and sizes the KV cache (the number of sequences, then the decode batch) to fit
    /// under this share and under what is free; a model whose weights alone do not fit is an
    /// error naming this setting.
    pub memory_fraction: f64,
    /// Sequences the engine decodes together (its slots), from 1 to 256; evaluation sends this
    /// many requests at once unless a concurrency is set explicitly.
    pub batch_size: usize,
    /// Whether running without a GPU is an error (the default). When `false`, a build without
    /// CUDA or a machine without the devices logs a warning and runs on the CPU.
    pub required: bool,
}

impl Default for GpuConfig {
    fn default() -> Self {
        Self {
            device_ids: vec![0],
            layers: None,
            memory_fraction: 0.9,
            batch_size: 32,
            required: true,
        }
    }
}

impl GpuConfig {
    /// Checks the ranges, naming each setting as a file spells it (`gpu.memory_fraction`).
    ///
    /// ```
    /// use promptopt_lm::gpu::GpuConfig;
    ///
    /// let bad = GpuConfig { memory_fraction: 1.5, ..GpuConfig::default() };
    /// let error = bad.check().unwrap_err().to_string();
    /// assert!(error.contains("`gpu.memory_fraction`"), "{error}");
    /// ```
    pub fn check(&self) -> Result<(), GpuConfigError> {
        self.check_as("gpu.")
    }

    /// [`GpuConfig::check`] with the settings named `{prefix}device_ids`, ...
    pub fn check_as(&self, prefix: &str) -> Result<(), GpuConfigError> {
        check_devices(&format!("{prefix}device_ids"), &self.device_ids)?;
        check_fraction(&format!("{prefix}memory_fraction"), self.memory_fraction)?;
        check_batch_size(&format!("{prefix}batch_size"), self.batch_size)?;
        Ok(())
    }

    /// The device ids as text: `0`, `0,1`.
    pub fn devices_text(&self) -> String {
        self.device_ids
            .iter()
            .map(u32::to_string)
            .collect::<Vec<_>>()
            .join(",")
    }
}

fn check_devices(setting: &str, ids: &[u32]) -> Result<(), GpuConfigError> {
    if ids.is_empty() {
        return Err(GpuConfigError::invalid(
            setting,
            "the device list is empty; name at least one CUDA device (e.g. `0`), or leave the GPU settings out to run on the CPU",
        ));
    }
    if ids.len() > MAX_DEVICES {
        return Err(GpuConfigError::invalid(
            setting,
            format!(
                "{} devices; a model is split across at most {MAX_DEVICES}",
                ids.len()
            ),
        ));
    }
    for (i, id) in ids.iter().enumerate() {
        if ids[..i].contains(id) {
            return Err(GpuConfigError::invalid(
                setting,
                format!("device {id} is listed twice"),
            ));
        }
    }
    Ok(())
}

fn check_fraction(setting: &str, fraction: f64) -> Result<(), GpuConfigError> {
    if fraction.is_finite() && fraction > 0.0 && fraction <= 1.0 {
        Ok(())
    } else {
        Err(GpuConfigError::invalid(
            setting,
            format!("{fraction} is not in (0, 1]: give the share of GPU memory to use, e.g. `0.8`"),
        ))
    }
}

fn check_batch_size(setting: &str, batch_size: usize) -> Result<(), GpuConfigError> {
    if (1..=MAX_BATCH_SIZE).contains(&batch_size) {
        Ok(())
    } else {
        Err(GpuConfigError::invalid(
            setting,
            format!("{batch_size} is not between 1 and {MAX_BATCH_SIZE} sequences"),
        ))
    }
}

/// Which devices one source asks for.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum GpuDevices {
    /// These CUDA device ids.
    Ids(Vec<u32>),
    /// No GPU: the CPU runs the model, whatever a file below asks for (`none`).
    Cpu,
}

/// Parses a device list: CUDA ids separated by commas (`0`, `0,1`), or `none` (also `cpu`) for
/// no GPU. `setting` names the flag or variable in errors.
///
/// ```
/// use promptopt_lm::gpu::{parse_devices, GpuDevices};
///
/// assert_eq!(parse_devices("--gpu", "0, 1").unwrap(), GpuDevices::Ids(vec![0, 1]));
/// assert_eq!(parse_devices("--gpu", "none").unwrap(), GpuDevices::Cpu);
/// assert!(parse_devices("--gpu", "0,0").unwrap_err().to_string().contains("twice"));
/// ```
pub fn parse_devices(setting: &str, text: &str) -> Result<GpuDevices, GpuConfigError> {
    let text = text.trim();
    if text.eq_ignore_ascii_case("none") || text.eq_ignore_ascii_case("cpu") {
        return Ok(GpuDevices::Cpu);
    }
    let mut ids = Vec::new();
    if !text.is_empty() {
        for part in text.split(',') {
            let part = part.trim();
            let id = part.parse::<u32>().map_err(|_| {
                GpuConfigError::invalid(
                    setting,
                    format!("`{part}` is not a device id: give CUDA device ids separated by commas (`0` or `0,1`), or `none`"),
                )
            })?;
            ids.push(id);
        }
    }
    check_devices(setting, &ids)?;
    Ok(GpuDevices::Ids(ids))
}

/// Parses a layer count: a whole number, or `all` (`Ok(None)`).
pub fn parse_layers(setting: &str, text: &str) -> Result<Option<u32>, GpuConfigError> {
    let text = text.trim();
    if text.eq_ignore_ascii_case("all") {
        return Ok(None);
    }
    text.parse::<u32>().map(Some).map_err(|_| {
        GpuConfigError::invalid(
            setting,
            format!("`{text}` is not a layer count: give a whole number or `all`"),
        )
    })
}

/// Parses a memory fraction in (0, 1].
pub fn parse_memory_fraction(setting: &str, text: &str) -> Result<f64, GpuConfigError> {
    let text = text.trim();
    let fraction = text.parse::<f64>().map_err(|_| {
        GpuConfigError::invalid(
            setting,
            format!("`{text}` is not a number: give the share of GPU memory to use, e.g. `0.8`"),
        )
    })?;
    check_fraction(setting, fraction)?;
    Ok(fraction)
}

/// Parses a batch size from 1 to [`MAX_BATCH_SIZE`].
pub fn parse_batch_size(setting: &str, text: &str) -> Result<usize, GpuConfigError> {
    let text = text.trim();
    let size = text.parse::<usize>().map_err(|_| {
        GpuConfigError::invalid(
            setting,
            format!("`{text}` is not a whole number of sequences"),
        )
    })?;
    check_batch_size(setting, size)?;
    Ok(size)
}

/// Parses a yes/no setting: `true`/`false`, `1`/`0`, `yes`/`no`, `on`/`off`.
pub fn parse_required(setting: &str, text: &str) -> Result<bool, GpuConfigError> {
    match text.trim().to_ascii_lowercase().as_str() {
        "true" | "1" | "yes" | "on" => Ok(true),
        "false" | "0" | "no" | "off" => Ok(false),
        other => Err(GpuConfigError::invalid(
            setting,
            format!("`{other}` is not `true` or `false`"),
        )),
    }
}

/// The GPU settings one source (the environment, or command-line flags) gives; `None` leaves a
/// setting to the sources below.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct GpuOverrides {
    /// The devices, or `none`.
    pub devices: Option<GpuDevices>,
    /// The layers offloaded: `Some(None)` is all of them.
    pub layers: Option<Option<u32>>,
    /// The memory fraction.
    pub memory_fraction: Option<f64>,
    /// The batch size.
    pub batch_size: Option<usize>,
    /// Whether a GPU is required.
    pub required: Option<bool>,
}

impl GpuOverrides {
    /// The settings of the `PROMPTOPT_GPU_*` environment variables (an empty variable counts as
    /// unset). A value that cannot be read is an error naming the variable.
    pub fn from_env() -> Result<Self, GpuConfigError> {
        Self::from_lookup(|name| std::env::var(name).ok())
    }

    /// [`GpuOverrides::from_env`] with the variables read through `lookup`.
    pub fn from_lookup(lookup: impl Fn(&str) -> Option<String>) -> Result<Self, GpuConfigError> {
        let get = |name: &str| lookup(name).filter(|v| !v.trim().is_empty());
        Ok(Self {
            devices: get(ENV_DEVICES)
                .map(|v| parse_devices(ENV_DEVICES, &v))
                .transpose()?,
            layers: get(ENV_LAYERS)
                .map(|v| parse_layers(ENV_LAYERS, &v))
                .transpose()?,
            memory_fraction: get(ENV_MEMORY_FRACTION)
                .map(|v| parse_memory_fraction(ENV_MEMORY_FRACTION, &v))
                .transpose()?,
            batch_size: get(ENV_BATCH_SIZE)
                .map(|v| parse_batch_size(ENV_BATCH_SIZE, &v))
                .transpose()?,
            required: get(ENV_REQUIRED)
                .map(|v| parse_required(ENV_REQUIRED, &v))
                .transpose()?,
        })
    }

    /// Whether this source sets nothing.
    pub fn is_empty(&self) -> bool {
        *self == Self::default()
    }

    /// `base` with this source's settings on top.
    ///
    /// Any setting asks for a GPU: a source that sets only `batch_size` turns a `base` of `None`
    /// into the default configuration (device 0) with that batch size. Devices `none` drop
    /// `base` (the CPU runs the model) and the rest of this source.
    pub fn apply(&self, base: Option<GpuConfig>) -> Option<GpuConfig> {
        if self.devices == Some(GpuDevices::Cpu) {
            return None;
        }
        if self.is_empty() {
            return base;
        }
        let mut config = base.unwrap_or_default();
        if let Some(GpuDevices::Ids(ids)) = &self.devices {
            config.device_ids.clone_from(ids);
        }
        if let Some(layers) = self.layers {
            config.layers = layers;
        }
        if let Some(fraction) = self.memory_fraction {
            config.memory_fraction = fraction;
        }
        if let Some(batch_size) = self.batch_size {
            config.batch_size = batch_size;
        }
        if let Some(required) = self.required {
            config.required = required;
        }
        Some(config)
    }
}

/// The GPU configuration in effect: `file` (a `gpu:` block), then the environment on top, then
/// the flags on top, each setting on its own; `None` runs on the CPU.
///
/// The result is checked ([`GpuConfig::check`]): a bad value from the file is an error naming
/// `gpu.<setting>`. (Values from the environment and flags are checked as they are parsed, and
/// their errors name the variable or flag.)
pub fn resolve_gpu(
    file: Option<&GpuConfig>,
    env: &GpuOverrides,
    flags: &GpuOverrides,
) -> Result<Option<GpuConfig>, GpuConfigError> {
    let config = flags.apply(env.apply(file.cloned()));
    if let Some(config) = &config {
        config.check()?;
    }
    Ok(config)
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use std::collections::HashMap;

    use super::*;

    fn env(pairs: &[(&str, &str)]) -> Result<GpuOverrides, GpuConfigError> {
        let map: HashMap<String, String> = pairs
            .iter()
            .map(|(k, v)| ((*k).to_string(), (*v).to_string()))
            .collect();
        GpuOverrides::from_lookup(|name| map.get(name).cloned())
    }

    #[test]
    fn a_block_parses_with_defaults_and_unknown_keys_are_named() {
        let config: GpuConfig = serde_json::from_str("{}").unwrap();
        assert_eq!(config, GpuConfig::default());
        assert_eq!(config.device_ids, [0]);
        assert_eq!(config.layers, None);
        assert!((config.memory_fraction - 0.9).abs() < 1e-12);
        assert_eq!(config.batch_size, 32);
        assert!(config.required);
        let config: GpuConfig = serde_json::from_str(
            r#"{"device_ids": [0, 1], "layers": 20, "memory_fraction": 0.8, "batch_size": 64, "required": false}"#,
        )
        .unwrap();
        assert_eq!(config.device_ids, [0, 1]);
        assert_eq!(config.layers, Some(20));
        assert_eq!(config.batch_size, 64);
        assert!(!config.required);
        assert!(config.check().is_ok());
        let error = serde_json::from_str::<GpuConfig>(r#"{"devices": [0]}"#)
            .unwrap_err()
            .to_string();
        assert!(error.contains("unknown field `devices`"), "{error}");
        assert!(error.contains("`device_ids`"), "{error}");
    }

    #[test]
    fn each_range_error_names_its_setting() {
        let cases = [
            (
                GpuConfig {
                    memory_fraction: 1.5,
                    ..GpuConfig::default()
                },
                "gpu.memory_fraction",
            ),
            (
                GpuConfig {
                    memory_fraction: 0.0,
                    ..GpuConfig::default()
                },
                "gpu.memory_fraction",
            ),
            (
                GpuConfig {
                    memory_fraction: f64::NAN,
                    ..GpuConfig::default()
                },
                "gpu.memory_fraction",
            ),
            (
                GpuConfig {
                    batch_size: 0,
                    ..GpuConfig::default()
                },
                "gpu.batch_size",
            ),
            (
                GpuConfig {
                    batch_size: 257,
                    ..GpuConfig::default()
                },
                "gpu.batch_size",
            ),
            (
                GpuConfig {
                    device_ids: vec![],
                    ..GpuConfig::default()
                },
                "gpu.device_ids",
            ),
            (
                GpuConfig {
                    device_ids: vec![1, 0, 1],
                    ..GpuConfig::default()
                },
                "gpu.device_ids",
            ),
        ];
        for (config, setting) in cases {
            let error = config.check().unwrap_err();
            assert_eq!(error.setting(), setting);
            let text = error.to_string();
            assert!(
                text.starts_with(&format!("Invalid GPU setting `{setting}`: ")),
                "{text}"
            );
            assert!(!text.ends_with('.'), "{text}");
        }
        let error = GpuConfig {
            device_ids: vec![1, 0, 1],
            ..GpuConfig::default()
        }
        .check()
        .unwrap_err()
        .to_string();
        assert!(error.contains("device 1 is listed twice"), "{error}");
    }

    #[test]
    fn environment_values_are_parsed_and_bad_ones_name_the_variable() {
        let o = env(&[
            (ENV_DEVICES, "0,1"),
            (ENV_LAYERS, "all"),
            (ENV_MEMORY_FRACTION, "0.5"),
            (ENV_BATCH_SIZE, "128"),
            (ENV_REQUIRED, "false"),
        ])
        .unwrap();
        assert_eq!(o.devices, Some(GpuDevices::Ids(vec![0, 1])));
        assert_eq!(o.layers, Some(None));
        assert_eq!(o.memory_fraction, Some(0.5));
        assert_eq!(o.batch_size, Some(128));
        assert_eq!(o.required, Some(false));
        // Empty variables are unset.
        assert!(env(&[(ENV_DEVICES, " "), (ENV_BATCH_SIZE, "")])
            .unwrap()
            .is_empty());
        for (name, value) in [
            (ENV_DEVICES, "0,x"),
            (ENV_DEVICES, "2,2"),
            (ENV_LAYERS, "-1"),
            (ENV_MEMORY_FRACTION, "1.5"),
            (ENV_MEMORY_FRACTION, "half"),
            (ENV_BATCH_SIZE, "0"),
            (ENV_REQUIRED, "maybe"),
        ] {
            let error = env(&[(name, value)]).unwrap_err();
            assert_eq!(error.setting(), name, "{error}");
            assert!(error.to_string().contains(&format!("`{name}`")), "{error}");
        }
    }

    #[test]
    fn flags_win_over_the_environment_which_wins_over_the_file() {
        let file = GpuConfig {
            device_ids: vec![2],
            layers: Some(10),
            memory_fraction: 0.5,
            batch_size: 8,
            required: true,
        };
        let env = env(&[(ENV_DEVICES, "1"), (ENV_BATCH_SIZE, "16")]).unwrap();
        let flags = GpuOverrides {
            devices: Some(GpuDevices::Ids(vec![0])),
            required: Some(false),
            ..GpuOverrides::default()
        };
        let resolved = resolve_gpu(Some(&file), &env, &flags).unwrap().unwrap();
        assert_eq!(resolved.device_ids, [0], "the flag wins");
        assert_eq!(resolved.batch_size, 16, "the environment beats the file");
        assert_eq!(resolved.layers, Some(10), "the file's own setting stays");
        assert!((resolved.memory_fraction - 0.5).abs() < 1e-12);
        assert!(!resolved.required);
        // Without flags the environment decides.
        let resolved = resolve_gpu(Some(&file), &env, &GpuOverrides::default())
            .unwrap()
            .unwrap();
        assert_eq!(resolved.device_ids, [1]);
        // Nothing anywhere: the CPU.
        assert_eq!(
            resolve_gpu(None, &GpuOverrides::default(), &GpuOverrides::default()).unwrap(),
            None
        );
        // Any setting asks for a GPU, starting from the defaults.
        let only_batch = GpuOverrides {
            batch_size: Some(64),
            ..GpuOverrides::default()
        };
        let resolved = resolve_gpu(None, &GpuOverrides::default(), &only_batch)
            .unwrap()
            .unwrap();
        assert_eq!(resolved.device_ids, [0]);
        assert_eq!(resolved.batch_size, 64);
        // `none` in a higher source turns the GPU off ...
        let cpu = GpuOverrides {
            devices: Some(GpuDevices::Cpu),
            ..GpuOverrides::default()
        };
        assert_eq!(
            resolve_gpu(Some(&file), &cpu, &GpuOverrides::default()).unwrap(),
            None
        );
        // ... and a flag turns it back on.
        let resolved = resolve_gpu(Some(&file), &cpu, &only_batch)
            .unwrap()
            .unwrap();
        assert_eq!(
            (resolved.device_ids.as_slice(), resolved.batch_size),
            (&[0][..], 64)
        );
        // A bad file value is named as the file spells it.
        let bad = GpuConfig {
            memory_fraction: 2.0,
            ..GpuConfig::default()
        };
        let error = resolve_gpu(
            Some(&bad),
            &GpuOverrides::default(),
            &GpuOverrides::default(),
        )
        .unwrap_err();
        assert_eq!(error.setting(), "gpu.memory_fraction");
        // ... unless a higher source replaces it.
        let fraction = GpuOverrides {
            memory_fraction: Some(0.7),
            ..GpuOverrides::default()
        };
        assert!(resolve_gpu(Some(&bad), &GpuOverrides::default(), &fraction).is_ok());
    }

    #[test]
    fn device_lists_and_layers_parse() {
        assert_eq!(
            parse_devices("--gpu", "3").unwrap(),
            GpuDevices::Ids(vec![3])
        );
        assert_eq!(parse_devices("--gpu", "CPU").unwrap(), GpuDevices::Cpu);
        let error = parse_devices("--gpu", "").unwrap_err().to_string();
        assert!(
            error.contains("`--gpu`") && error.contains("empty"),
            "{error}"
        );
        assert_eq!(parse_layers("--gpu-layers", "ALL").unwrap(), None);
        assert_eq!(parse_layers("--gpu-layers", "12").unwrap(), Some(12));
        assert!(parse_required("x", "Yes").unwrap());
        assert_eq!(parse_batch_size("x", "256").unwrap(), 256);
        assert!(parse_batch_size("x", "257").is_err());
    }
}
