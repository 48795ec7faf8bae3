//! Finding the test model, and the device the tests run on.

use std::path::{Path, PathBuf};

use promptopt_engine::{resolve_in, search_dirs, EngineConfig};
use promptopt_lm::gpu::{resolve_gpu, GpuOverrides};

/// `config` on the GPU the `PROMPTOPT_GPU_*` variables ask for (`scripts/gpu-check.sh` sets
/// `PROMPTOPT_GPU_DEVICES=0` to run this suite on a GPU), keeping the slots the test chose;
/// unchanged when they ask for none.
#[allow(dead_code)]
pub fn on_test_device(config: EngineConfig) -> EngineConfig {
    let env = GpuOverrides::from_env().unwrap_or_else(|e| panic!("{e}"));
    let gpu = resolve_gpu(None, &env, &GpuOverrides::default()).unwrap_or_else(|e| panic!("{e}"));
    let slots = config.slots;
    let placed = config
        .place_gpu(gpu.as_ref())
        .unwrap_or_else(|e| panic!("{e}"))
        .config;
    EngineConfig {
        slots,
        batch_size: placed.batch_size.max(slots),
        ..placed
    }
}

/// Whether the `PROMPTOPT_GPU_*` variables ask for a GPU.
#[allow(dead_code)]
pub fn gpu_asked() -> bool {
    GpuOverrides::from_env()
        .ok()
        .and_then(|env| resolve_gpu(None, &env, &GpuOverrides::default()).ok())
        .flatten()
        .is_some()
}

/// `local/<absolute path>` of the default model, searched like the engine does plus the
/// repository's `models/` (tests run in the crate directory).
pub fn smollm2() -> String {
    let mut dirs = search_dirs();
    dirs.push(Path::new(env!("CARGO_MANIFEST_DIR")).join("../../models"));
    match resolve_in("local/smollm2-135m", &dirs) {
        Ok(path) => format!("local/{}", absolute(path).display()),
        Err(error) => panic!("{error}"),
    }
}

fn absolute(path: PathBuf) -> PathBuf {
    std::fs::canonicalize(&path).unwrap_or(path)
}
