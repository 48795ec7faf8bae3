//! What the command-line tests share: starting the real `promptopt serve` on a free loopback
//! port against a fake model server, saving a model without optimizing, and reading back what a run
//! wrote.
#![allow(dead_code, clippy::unwrap_used)]

pub mod webdriver;

use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Child, ChildStdout, Command, Stdio};

/// A running `promptopt serve`.
pub struct ServeProcess {
    /// The process.
    pub child: Child,
    /// Its base URL (`http://127.0.0.1:PORT`).
    pub url: String,
    /// Its stdout, kept open so that a later line cannot break its pipe.
    _stdout: BufReader<ChildStdout>,
}

impl Drop for ServeProcess {
    /// Stops the server when a test ends, panicking or not.
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Starts `promptopt serve --bind 127.0.0.1:0` with `args` after it, `PROMPTOPT_HOME` at
/// `home`, `tokens` as `PROMPTOPT_API_TOKENS`, OpenAI-compatible models answered by `lm_url`,
/// tracking off, no queue, database, server or token from the environment, and `envs` on top;
/// its log goes to `stderr`.
pub fn spawn_serve(
    home: &Path,
    lm_url: &str,
    tokens: &str,
    args: &[&str],
    envs: &[(&str, &str)],
    stderr: Stdio,
) -> ServeProcess {
    let mut child = Command::new(env!("CARGO_BIN_EXE_promptopt"))
        .args(["serve", "--bind", "127.0.0.1:0"])
        .args(args)
        .env("PROMPTOPT_HOME", home)
        .env("PROMPTOPT_API_TOKENS", tokens)
        .env("OPENAI_BASE_URL", lm_url)
        .env("OPENAI_API_KEY", "sk-test")
        .env("DISABLE_MLFLOW", "1")
        .env_remove("MLFLOW_TRACKING_URI")
        .env_remove("PROMPTOPT_QUEUE")
        .env_remove("PROMPTOPT_DATABASE")
        .env_remove("PROMPTOPT_SERVER")
        .env_remove("PROMPTOPT_TOKEN")
        .envs(envs.iter().copied())
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(stderr)
        .spawn()
        .unwrap();
    let mut stdout = BufReader::new(child.stdout.take().unwrap());
    let mut first = String::new();
    stdout.read_line(&mut first).unwrap();
    let url = first
        .trim()
        .strip_prefix("promptopt serve: listening on ")
        .unwrap_or_else(|| panic!("unexpected first line of `promptopt serve`: {first:?}"))
        .to_string();
    ServeProcess {
        child,
        url,
        _stdout: stdout,
    }
}

/// Saves the next patch version of `name`: a one-stage `text -> label` program on
/// `openai/test-model` with `instructions`, without optimizing.
pub fn save_classifier(registry: &promptopt_registry::Registry, name: &str, instructions: &str) {
    use promptopt_core::{Field, Program, Signature};
    let program = Program::single(
        Signature::new(vec![Field::text("text")], vec![Field::text("label")])
            .with_instructions(instructions),
    );
    let settings = promptopt_registry::ModelSettings {
        model: "openai/test-model".into(),
        adapter: promptopt_core::adapter::AdapterKind::Turns,
        temperature: Some(0.0),
        max_tokens: None,
    };
    let artifact = promptopt_registry::ModelArtifact::new(
        name,
        program.clone(),
        program.initial_state(),
        settings,
    );
    registry
        .save(artifact, promptopt_registry::VersionSpec::NextPatch)
        .unwrap();
}

/// Every file under `dir`, at any depth.
pub fn files_under(dir: &Path) -> Vec<PathBuf> {
    let mut files = Vec::new();
    let mut stack = vec![dir.to_path_buf()];
    while let Some(d) = stack.pop() {
        for entry in std::fs::read_dir(&d).unwrap() {
            let path = entry.unwrap().path();
            if path.is_dir() {
                stack.push(path);
            } else {
                files.push(path);
            }
        }
    }
    files
}

/// Every file under `dir` whose bytes contain `needle`.
pub fn files_containing(dir: &Path, needle: &str) -> Vec<String> {
    files_under(dir)
        .into_iter()
        .filter(|path| {
            std::fs::read(path)
                .unwrap_or_default()
                .windows(needle.len())
                .any(|w| w == needle.as_bytes())
        })
        .map(|path| path.display().to_string())
        .collect()
}

/// The embedded model `file` (such as `smollm2-135m.gguf`) in the checkout's `models/`, made
/// absolute; `None` when it is not there, which CI (`PROMPTOPT_CI`) does not allow.
pub fn embedded_model(file: &str) -> Option<PathBuf> {
    let model = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../../models")
        .join(file);
    if !model.exists() {
        assert!(
            std::env::var("PROMPTOPT_CI").is_err(),
            "models/{file} must exist in CI (scripts/fetch-model.sh)"
        );
        return None;
    }
    Some(std::fs::canonicalize(model).unwrap())
}
