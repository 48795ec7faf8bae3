//! What the command-line tests share: starting the real `promptopt serve` on a free loopback
//! port against a fake model server.
#![allow(dead_code, clippy::unwrap_used)]

pub mod webdriver;

use std::io::{BufRead, BufReader};
use std::path::Path;
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
