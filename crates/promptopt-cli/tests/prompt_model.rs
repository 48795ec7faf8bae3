//! The default prompt model of MIPROv2 and GEPA for an embedded task model, and the
//! `--prompt-model` flag, through the binary.
#![allow(clippy::unwrap_used)]

mod common;

use std::path::Path;
use std::process::{Command, Output};

/// A models folder in `dir` that holds the task model (SmolLM2) only; `None` without the model.
fn task_model_only(dir: &Path) -> Option<std::path::PathBuf> {
    let model = common::embedded_model("smollm2-135m.gguf")?;
    let models = dir.join("models");
    std::fs::create_dir_all(&models).unwrap();
    std::fs::copy(&model, models.join("smollm2-135m.gguf")).unwrap();
    Some(models)
}

/// `promptopt optimize REQUEST FLAGS` in `dir`, with its home in `dir/home` and `models` as the
/// only models folder.
fn optimize(dir: &Path, models: &Path, request: &Path, flags: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_promptopt"))
        .arg("optimize")
        .arg(request)
        .args(flags)
        .current_dir(dir)
        .env("PROMPTOPT_HOME", dir.join("home"))
        .env("PROMPTOPT_MODELS_DIR", models)
        .env(
            "MLFLOW_TRACKING_URI",
            format!("file:{}", dir.join("mlruns").display()),
        )
        .output()
        .unwrap()
}

#[test]
fn a_missing_default_prompt_model_is_an_error_naming_the_pull_command() {
    let dir = tempfile::tempdir().unwrap();
    let Some(models) = task_model_only(dir.path()) else {
        return;
    };
    for algorithm in ["miprov2", "gepa"] {
        let request = dir.path().join(format!("{algorithm}.yaml"));
        std::fs::write(
            &request,
            format!(
                "name: sentiment\nalgorithm: {algorithm}\nmodel: local/smollm2-135m\n\
                 evaluation_metric: accuracy\ninput_keys: [text]\noutput_keys: [label]\n\
                 training_examples:\n  - {{text: fine, label: positive}}\n  - {{text: dull, label: negative}}\n"
            ),
        )
        .unwrap();
        let output = optimize(dir.path(), &models, &request, &[]);
        let stderr = String::from_utf8_lossy(&output.stderr);
        assert_eq!(output.status.code(), Some(2), "{algorithm}: {stderr}");
        assert!(
            stderr.contains("`promptopt models pull local/qwen2.5-coder-1.5b`"),
            "{algorithm}: {stderr}"
        );
        // Nothing was saved.
        let saved = dir.path().join("home").join("registry").join("sentiment");
        assert!(!saved.exists(), "{algorithm}: {}", saved.display());
    }
}

#[test]
fn the_prompt_model_flag_replaces_the_requests() {
    let dir = tempfile::tempdir().unwrap();
    let Some(models) = task_model_only(dir.path()) else {
        return;
    };
    // The request names a prompt model that is present; the flag names one that is not.
    let request = dir.path().join("mipro.yaml");
    std::fs::write(
        &request,
        "name: sentiment\nalgorithm: miprov2\nmodel: local/smollm2-135m\n\
         prompt_model: local/smollm2-135m\nevaluation_metric: accuracy\n\
         input_keys: [text]\noutput_keys: [label]\n\
         training_examples:\n  - {text: fine, label: positive}\n  - {text: dull, label: negative}\n",
    )
    .unwrap();
    let flags = ["--prompt-model", "local/qwen2.5-coder-0.5b", "--seed", "3"];
    let output = optimize(dir.path(), &models, &request, &flags);
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert_eq!(output.status.code(), Some(2), "{stderr}");
    assert!(
        stderr.contains("`promptopt models pull local/qwen2.5-coder-0.5b`"),
        "{stderr}"
    );
}
