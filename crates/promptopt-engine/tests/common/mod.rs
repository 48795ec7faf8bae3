//! Finding the test model.

use std::path::{Path, PathBuf};

use promptopt_engine::{resolve_in, search_dirs};

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
