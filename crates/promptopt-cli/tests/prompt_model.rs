//! The default prompt model of MIPROv2 and GEPA for an embedded task model, through the binary.
#![allow(clippy::unwrap_used)]

mod common;

use std::process::Command;

#[test]
fn a_missing_default_prompt_model_is_an_error_naming_the_pull_command() {
    let Some(model) = common::embedded_model("smollm2-135m.gguf") else {
        return;
    };
    // A models folder that holds the task model only, and an empty home.
    let dir = tempfile::tempdir().unwrap();
    let models = dir.path().join("models");
    std::fs::create_dir_all(&models).unwrap();
    std::fs::copy(&model, models.join("smollm2-135m.gguf")).unwrap();
    let home = dir.path().join("home");
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
        let output = Command::new(env!("CARGO_BIN_EXE_promptopt"))
            .args(["optimize", request.to_str().unwrap()])
            .current_dir(dir.path())
            .env("PROMPTOPT_HOME", &home)
            .env("PROMPTOPT_MODELS_DIR", &models)
            .env(
                "MLFLOW_TRACKING_URI",
                format!("file:{}", dir.path().join("mlruns").display()),
            )
            .output()
            .unwrap();
        let stderr = String::from_utf8_lossy(&output.stderr);
        assert_eq!(output.status.code(), Some(2), "{algorithm}: {stderr}");
        assert!(
            stderr.contains("`promptopt models pull local/qwen2.5-coder-1.5b`"),
            "{algorithm}: {stderr}"
        );
        // Nothing was saved.
        let saved = home.join("registry").join("sentiment");
        assert!(!saved.exists(), "{algorithm}: {}", saved.display());
    }
}

#[test]
fn the_prompt_model_flag_replaces_the_requests() {
    let Some(model) = common::embedded_model("smollm2-135m.gguf") else {
        return;
    };
    let dir = tempfile::tempdir().unwrap();
    let models = dir.path().join("models");
    std::fs::create_dir_all(&models).unwrap();
    std::fs::copy(&model, models.join("smollm2-135m.gguf")).unwrap();
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
    let output = Command::new(env!("CARGO_BIN_EXE_promptopt"))
        .args([
            "optimize",
            request.to_str().unwrap(),
            "--prompt-model",
            "local/qwen2.5-coder-0.5b",
            "--seed",
            "3",
        ])
        .current_dir(dir.path())
        .env("PROMPTOPT_HOME", dir.path().join("home"))
        .env("PROMPTOPT_MODELS_DIR", &models)
        .env(
            "MLFLOW_TRACKING_URI",
            format!("file:{}", dir.path().join("mlruns").display()),
        )
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert_eq!(output.status.code(), Some(2), "{stderr}");
    assert!(
        stderr.contains("`promptopt models pull local/qwen2.5-coder-0.5b`"),
        "{stderr}"
    );
}
