//! The GPU settings on every command that runs the embedded model, on a build without CUDA:
//! asking for a GPU is an error that says how to build one and writes nothing; with
//! `--gpu-optional` (or `PROMPTOPT_GPU_REQUIRED=false`) the run goes on on the CPU; bad values
//! name their setting; flags win over the environment, which wins over the file.
//!
//! The runs that go on on the CPU then fail for an expected, unrelated reason (a model that does
//! not exist), so no model runs, except one evaluation of two examples on the embedded model.
#![cfg(all(feature = "engine", not(feature = "cuda")))]
#![allow(clippy::unwrap_used)]

mod common;

use std::path::{Path, PathBuf};
use std::process::{Command, Output};

const BUILD_HINT: &str = "cargo build --release --features cuda";
const CPU_FALLBACK: &str = "runs on the CPU";

fn write(dir: &Path, name: &str, text: &str) -> PathBuf {
    let path = dir.join(name);
    std::fs::write(&path, text).unwrap();
    path
}

fn dataset(dir: &Path) -> PathBuf {
    write(
        dir,
        "dev.jsonl",
        "{\"text\": \"a good film\", \"label\": \"positive\"}\n{\"text\": \"a dull film\", \"label\": \"negative\"}\n",
    )
}

/// A request for `model` with an optional extra YAML block.
fn request(dir: &Path, model: &str, extra: &str) -> PathBuf {
    write(
        dir,
        "request.yaml",
        &format!(
            "name: gpu-check\ntarget: few_shot_examples\nevaluation_metric: accuracy\nalgorithm: labeledfewshot\nmodel: {model}\ntraining_examples:\n  - {{text: a good film, label: positive}}\n  - {{text: a dull film, label: negative}}\ninput_keys: [text]\noutput_keys: [label]\n{extra}"
        ),
    )
}

/// Runs the binary in `home` (`PROMPTOPT_HOME`) with no `PROMPTOPT_GPU_*` variable but `env`.
fn run(home: &Path, args: &[&str], env: &[(&str, &str)]) -> Output {
    let mut command = Command::new(env!("CARGO_BIN_EXE_promptopt"));
    command.args(args).env("PROMPTOPT_HOME", home);
    for name in [
        "PROMPTOPT_GPU_DEVICES",
        "PROMPTOPT_GPU_LAYERS",
        "PROMPTOPT_GPU_MEMORY_FRACTION",
        "PROMPTOPT_GPU_BATCH_SIZE",
        "PROMPTOPT_GPU_REQUIRED",
        "PROMPTOPT_LOG",
    ] {
        command.env_remove(name);
    }
    for (name, value) in env {
        command.env(name, value);
    }
    command.output().unwrap()
}

fn stderr(output: &Output) -> String {
    String::from_utf8_lossy(&output.stderr).into_owned()
}

/// The files under `dir`, relative, sorted.
fn files(dir: &Path) -> Vec<String> {
    let mut out = Vec::new();
    let mut stack = vec![dir.to_path_buf()];
    while let Some(d) = stack.pop() {
        let Ok(entries) = std::fs::read_dir(&d) else {
            continue;
        };
        for entry in entries.flatten() {
            let path = entry.path();
            if path.is_dir() {
                stack.push(path);
            } else {
                out.push(
                    path.strip_prefix(dir)
                        .unwrap()
                        .to_string_lossy()
                        .into_owned(),
                );
            }
        }
    }
    out.sort();
    out
}

/// Fails with the build command, exit code not 0.
fn assert_needs_cuda(output: &Output) {
    let err = stderr(output);
    assert!(!output.status.success(), "{err}");
    assert!(err.contains(BUILD_HINT), "{err}");
    assert!(err.contains("CUDA toolkit"), "{err}");
    assert!(!err.contains("panicked"), "{err}");
}

#[test]
fn evaluate_with_a_gpu_on_a_cpu_build_fails_with_the_build_command_and_writes_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let home = dir.path().join("home");
    let data = dataset(dir.path());
    let saved = dir.path().join("program.json");
    let output = run(
        &home,
        &[
            "evaluate",
            "--data",
            data.to_str().unwrap(),
            "--save-program",
            saved.to_str().unwrap(),
            "--gpu",
            "0",
        ],
        &[],
    );
    assert_needs_cuda(&output);
    assert!(stderr(&output).contains("`gpu.device_ids`: 0"));
    assert!(!saved.exists(), "the program file was written");
    assert_eq!(files(&home), Vec::<String>::new());
    // The same from the environment alone.
    let output = run(
        &home,
        &["evaluate", "--data", data.to_str().unwrap()],
        &[("PROMPTOPT_GPU_DEVICES", "0,1")],
    );
    assert_needs_cuda(&output);
    assert!(stderr(&output).contains("`gpu.device_ids`: 0,1"));
}

#[test]
fn optimize_with_a_gpu_on_a_cpu_build_fails_with_the_build_command_and_writes_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let home = dir.path().join("home");
    let out = dir.path().join("out");
    let req = request(dir.path(), "local/smollm2-135m", "");
    let output = run(
        &home,
        &[
            "optimize",
            req.to_str().unwrap(),
            "--output",
            out.to_str().unwrap(),
            "--gpu",
            "0",
        ],
        &[],
    );
    assert_needs_cuda(&output);
    assert!(!out.exists(), "the run folder was written");
    assert_eq!(files(&home), Vec::<String>::new());
    // The request's own `gpu:` block asks for it too.
    let req = request(
        dir.path(),
        "local/smollm2-135m",
        "gpu: {device_ids: [0], batch_size: 16}\n",
    );
    let output = run(&home, &["optimize", req.to_str().unwrap()], &[]);
    assert_needs_cuda(&output);
    assert_eq!(files(&home), Vec::<String>::new());
}

#[test]
fn out_of_range_values_name_their_setting() {
    let dir = tempfile::tempdir().unwrap();
    let home = dir.path().join("home");
    let data = dataset(dir.path());
    let data = data.to_str().unwrap();
    for (args, setting) in [
        (
            vec!["evaluate", "--data", data, "--gpu-memory-fraction", "1.5"],
            "--gpu-memory-fraction",
        ),
        (
            vec!["evaluate", "--data", data, "--gpu-batch-size", "0"],
            "--gpu-batch-size",
        ),
        (vec!["evaluate", "--data", data, "--gpu", "0,0"], "--gpu"),
        (
            vec![
                "predict",
                "m",
                "--input",
                "{}",
                "--gpu-memory-fraction",
                "0",
            ],
            "--gpu-memory-fraction",
        ),
        (
            vec!["serve-lm", "--gpu-memory-fraction", "1.01"],
            "--gpu-memory-fraction",
        ),
        (
            vec!["worker", "--gpu-batch-size", "257"],
            "--gpu-batch-size",
        ),
    ] {
        let output = run(&home, &args, &[]);
        let err = stderr(&output);
        assert_eq!(output.status.code(), Some(2), "{args:?}: {err}");
        assert!(err.contains(&format!("`{setting}`")), "{args:?}: {err}");
    }
    let output = run(
        &home,
        &["evaluate", "--data", data],
        &[("PROMPTOPT_GPU_MEMORY_FRACTION", "1.5")],
    );
    let err = stderr(&output);
    assert!(!output.status.success());
    assert!(err.contains("`PROMPTOPT_GPU_MEMORY_FRACTION`"), "{err}");
    assert_eq!(files(&home), Vec::<String>::new());
}

#[test]
fn a_bad_gpu_block_in_a_request_names_the_setting() {
    let dir = tempfile::tempdir().unwrap();
    let home = dir.path().join("home");
    for (block, setting) in [
        ("gpu: {memory_fraction: 1.5}\n", "`gpu.memory_fraction`"),
        ("gpu: {batch_size: 0}\n", "`gpu.batch_size`"),
        ("gpu: {device_ids: []}\n", "`gpu.device_ids`"),
        ("gpu: {memory: 0.5}\n", "unknown field `memory`"),
    ] {
        let req = request(dir.path(), "local/smollm2-135m", block);
        let output = run(&home, &["optimize", req.to_str().unwrap()], &[]);
        let err = stderr(&output);
        assert!(!output.status.success(), "{block}: {err}");
        assert!(err.contains(setting), "{block}: {err}");
    }
    // Also when it is only submitted to a queue.
    let req = request(
        dir.path(),
        "local/smollm2-135m",
        "gpu: {memory_fraction: 1.5}\n",
    );
    let queue = format!("sqlite:{}", dir.path().join("q.sqlite").display());
    let output = run(
        &home,
        &["jobs", "submit", req.to_str().unwrap(), "--queue", &queue],
        &[],
    );
    assert!(!output.status.success());
    assert!(stderr(&output).contains("`gpu.memory_fraction`"));
    assert_eq!(files(&home), Vec::<String>::new());
}

#[test]
fn an_optional_gpu_goes_on_on_the_cpu_with_a_warning() {
    let dir = tempfile::tempdir().unwrap();
    let home = dir.path().join("home");
    let data = dataset(dir.path());
    let data = data.to_str().unwrap();
    // The run goes past the GPU and stops at the model, which does not exist.
    let missing = "local/no-such-model";
    let past_gpu = |output: &Output| {
        let err = stderr(output);
        assert!(!output.status.success(), "{err}");
        assert!(err.contains("Unknown model `local/no-such-model`"), "{err}");
        assert!(
            !err.contains(BUILD_HINT) || err.contains(CPU_FALLBACK),
            "{err}"
        );
        err
    };
    let output = run(
        &home,
        &[
            "evaluate",
            "--data",
            data,
            "--lm-model",
            missing,
            "--gpu",
            "0",
            "--gpu-optional",
        ],
        &[],
    );
    let err = past_gpu(&output);
    assert!(err.contains(CPU_FALLBACK), "{err}");
    assert!(err.contains("no CUDA support"), "{err}");
    // The environment's `required: false` beats the request's block (which requires it).
    let req = request(dir.path(), missing, "gpu: {device_ids: [0]}\n");
    let output = run(
        &home,
        &["optimize", req.to_str().unwrap()],
        &[("PROMPTOPT_GPU_REQUIRED", "false")],
    );
    assert!(past_gpu(&output).contains(CPU_FALLBACK));
    // A flag beats the environment: `--gpu none` runs on the CPU without a word.
    let output = run(
        &home,
        &[
            "evaluate",
            "--data",
            data,
            "--lm-model",
            missing,
            "--gpu",
            "none",
        ],
        &[("PROMPTOPT_GPU_DEVICES", "0")],
    );
    assert!(!past_gpu(&output).contains(CPU_FALLBACK));
    // ... and `--gpu 0` beats `PROMPTOPT_GPU_DEVICES=none`.
    let output = run(
        &home,
        &[
            "evaluate",
            "--data",
            data,
            "--lm-model",
            missing,
            "--gpu",
            "0",
        ],
        &[("PROMPTOPT_GPU_DEVICES", "none")],
    );
    assert_needs_cuda(&output);
    // GPU settings with a remote model are ignored, with a warning, not refused.
    let output = run(
        &home,
        &[
            "evaluate",
            "--data",
            data,
            "--lm-model",
            "openai/gpt-4o-mini",
            "--base-url",
            "http://127.0.0.1:9/v1",
            "--limit",
            "1",
            "--max-errors",
            "0",
            "--gpu",
            "0",
        ],
        &[
            ("OPENAI_API_KEY", "none"),
            ("PROMPTOPT_LM_MAX_RETRIES", "0"),
        ],
    );
    let err = stderr(&output);
    assert!(err.contains("the GPU settings are ignored"), "{err}");
    assert!(!err.contains(BUILD_HINT), "{err}");
}

#[test]
fn workers_servers_and_serve_lm_check_the_gpu_at_start() {
    let dir = tempfile::tempdir().unwrap();
    let home = dir.path().join("home");
    let queue = format!("sqlite:{}", dir.path().join("q.sqlite").display());
    let output = run(
        &home,
        &[
            "worker",
            "--queue",
            &queue,
            "--exit-when-empty",
            "--gpu",
            "0",
        ],
        &[],
    );
    assert_needs_cuda(&output);
    let output = run(
        &home,
        &["worker", "--queue", &queue, "--exit-when-empty"],
        &[
            ("PROMPTOPT_GPU_DEVICES", "0"),
            ("PROMPTOPT_GPU_REQUIRED", "no"),
        ],
    );
    let err = stderr(&output);
    assert!(output.status.success(), "{err}");
    assert!(err.contains(CPU_FALLBACK), "{err}");
    let output = run(
        &home,
        &[
            "serve",
            "--bind",
            "127.0.0.1:0",
            "--no-auth",
            "--queue",
            &queue,
            "--gpu",
            "0",
        ],
        &[],
    );
    assert_needs_cuda(&output);
    let config = write(dir.path(), "serve.yaml", "gpu: {memory_fraction: 1.5}\n");
    let output = run(
        &home,
        &[
            "serve",
            "--bind",
            "127.0.0.1:0",
            "--no-auth",
            "--queue",
            &queue,
            "--config",
            config.to_str().unwrap(),
        ],
        &[],
    );
    let err = stderr(&output);
    assert!(!output.status.success());
    assert!(err.contains("`gpu.memory_fraction`"), "{err}");
    let output = run(
        &home,
        &["serve-lm", "--model", "local/no-such-model", "--gpu", "0"],
        &[],
    );
    assert_needs_cuda(&output);
    let output = run(
        &home,
        &[
            "serve-lm",
            "--model",
            "local/no-such-model",
            "--gpu-layers",
            "10",
            "--gpu-optional",
        ],
        &[],
    );
    let err = stderr(&output);
    assert!(err.contains(CPU_FALLBACK), "{err}");
    assert!(err.contains("Unknown model"), "{err}");
    // A program file for `predict`, written by `evaluate` before it fails to reach its model.
    let data = dataset(dir.path());
    let state = dir.path().join("program.json");
    run(
        &home,
        &[
            "evaluate",
            "--data",
            data.to_str().unwrap(),
            "--save-program",
            state.to_str().unwrap(),
            "--lm-model",
            "openai/test",
            "--base-url",
            "http://127.0.0.1:9/v1",
            "--limit",
            "1",
            "--max-errors",
            "0",
        ],
        &[
            ("OPENAI_API_KEY", "none"),
            ("PROMPTOPT_LM_MAX_RETRIES", "0"),
        ],
    );
    assert!(state.exists());
    let output = run(
        &home,
        &[
            "predict",
            "--state",
            state.to_str().unwrap(),
            "--input",
            r#"{"text": "a good film"}"#,
            "--gpu",
            "0",
        ],
        &[],
    );
    assert_needs_cuda(&output);
}

/// The embedded model, on the CPU, after an optional GPU that this build cannot use.
#[test]
fn an_optional_gpu_evaluates_on_the_cpu() {
    let Some(model) = common::embedded_model("smollm2-135m.gguf") else {
        return;
    };
    let dir = tempfile::tempdir().unwrap();
    let home = dir.path().join("home");
    let data = dataset(dir.path());
    let lm = format!("local/{}", model.display());
    let output = run(
        &home,
        &[
            "evaluate",
            "--data",
            data.to_str().unwrap(),
            "--lm-model",
            &lm,
            "--max-tokens",
            "4",
            "--no-cache",
            "--json",
            "--gpu",
            "0",
            "--gpu-batch-size",
            "4",
            "--gpu-optional",
        ],
        &[("PROMPTOPT_THREADS", "2")],
    );
    let err = stderr(&output);
    assert!(output.status.success(), "{err}");
    assert!(err.contains(CPU_FALLBACK), "{err}");
    let report: serde_json::Value = serde_json::from_slice(&output.stdout).unwrap();
    assert_eq!(report["examples"], 2, "{report}");
}
