//! Model names and where their files are.
//!
//! A model is named `local/<name>`:
//!
//! - a short name from the [catalog](crate::catalog): `local/smollm2-135m` (file
//!   `smollm2-135m.gguf`), `local/gemma3-270m`, `local/qwen2.5-coder-0.5b`,
//!   `local/qwen2.5-coder-1.5b`, each downloaded by `promptopt models pull NAME` (or
//!   `scripts/fetch-model.sh`);
//! - a path to any GGUF file: `local//abs/path/model.gguf` (absolute) or `local/./rel/model.gguf`
//!   (relative to the working directory). Any name that contains a `/` or ends in `.gguf` is a path.
//!
//! Short names are looked up, in order, in `$PROMPTOPT_MODELS_DIR`, `./models` and the home's
//! `models` folder (`$PROMPTOPT_HOME/models`, else `~/.promptopt/models`), where
//! `promptopt models pull` puts them.

use std::path::{Path, PathBuf};

use crate::EngineError;

/// The part of `local/<name>` after the provider (names without `local/` are taken as they are).
pub fn short_name(model: &str) -> &str {
    model.strip_prefix("local/").unwrap_or(model)
}

/// The directories searched for short names, in order.
pub fn search_dirs() -> Vec<PathBuf> {
    let mut dirs = Vec::new();
    if let Some(dir) = std::env::var_os("PROMPTOPT_MODELS_DIR").filter(|d| !d.is_empty()) {
        dirs.push(PathBuf::from(dir));
    }
    dirs.push(PathBuf::from("models"));
    if let Some(home) = std::env::var_os("PROMPTOPT_HOME").filter(|d| !d.is_empty()) {
        dirs.push(Path::new(&home).join("models"));
    } else if let Some(home) = std::env::var_os("HOME").filter(|d| !d.is_empty()) {
        dirs.push(Path::new(&home).join(".promptopt").join("models"));
    }
    dirs
}

/// Finds the GGUF file a model name refers to.
///
/// ```
/// let error = promptopt_engine::resolve_model("local/no-such-model").unwrap_err();
/// assert!(error.to_string().contains("Unknown model"));
/// ```
pub fn resolve_model(model: &str) -> Result<PathBuf, EngineError> {
    resolve_in(model, &search_dirs())
}

/// [`resolve_model`] with an explicit list of directories.
pub fn resolve_in(model: &str, dirs: &[PathBuf]) -> Result<PathBuf, EngineError> {
    let name = short_name(model);
    if name.is_empty() {
        return Err(EngineError::UnknownModel {
            name: model.to_string(),
            known: crate::catalog::names(),
        });
    }
    if name.contains('/') || name.ends_with(".gguf") {
        let path = PathBuf::from(name);
        return if path.is_file() {
            Ok(path)
        } else {
            Err(EngineError::ModelNotFound {
                name: model.to_string(),
                searched: format!("`{}`", path.display()),
                hint: String::new(),
            })
        };
    }
    let Some(entry) = crate::catalog::find(name) else {
        return Err(EngineError::UnknownModel {
            name: model.to_string(),
            known: crate::catalog::names(),
        });
    };
    let file = entry.file;
    for dir in dirs {
        let candidate = dir.join(file);
        if candidate.is_file() {
            return Ok(candidate);
        }
    }
    Err(EngineError::ModelNotFound {
        name: model.to_string(),
        searched: dirs
            .iter()
            .map(|d| format!("`{}`", d.join(file).display()))
            .collect::<Vec<_>>()
            .join(", "),
        hint: format!("; run `promptopt models pull local/{name}` to download it"),
    })
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    #[test]
    fn short_names_are_found_in_the_first_dir_that_has_them() {
        let a = tempfile::tempdir().unwrap();
        let b = tempfile::tempdir().unwrap();
        std::fs::write(b.path().join("smollm2-135m.gguf"), b"x").unwrap();
        let dirs = vec![a.path().to_path_buf(), b.path().to_path_buf()];
        let found = resolve_in("local/smollm2-135m", &dirs).unwrap();
        assert_eq!(found, b.path().join("smollm2-135m.gguf"));
    }

    #[test]
    fn a_missing_file_names_the_places_searched_and_the_pull_command() {
        let a = tempfile::tempdir().unwrap();
        let error = resolve_in("local/gemma3-270m", &[a.path().to_path_buf()]).unwrap_err();
        let message = error.to_string();
        assert!(message.contains("gemma3-270m.gguf"), "{message}");
        assert!(
            message.contains("`promptopt models pull local/gemma3-270m`"),
            "{message}"
        );
    }

    #[test]
    fn paths_are_taken_as_they_are() {
        let a = tempfile::tempdir().unwrap();
        let file = a.path().join("any.gguf");
        std::fs::write(&file, b"x").unwrap();
        let name = format!("local/{}", file.display());
        assert_eq!(resolve_in(&name, &[]).unwrap(), file);
        assert!(matches!(
            resolve_in("local/./nowhere/x.gguf", &[]),
            Err(EngineError::ModelNotFound { .. })
        ));
    }

    #[test]
    fn unknown_short_names_are_an_error() {
        assert!(matches!(
            resolve_in("local/gpt-5", &[]),
            Err(EngineError::UnknownModel { .. })
        ));
        assert!(matches!(
            resolve_in("local/", &[]),
            Err(EngineError::UnknownModel { .. })
        ));
    }
}
