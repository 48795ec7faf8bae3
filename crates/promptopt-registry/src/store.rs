//! The registry on disk: immutable versions, aliases that move atomically, safe with
//! concurrent writers.
//!
//! Layout under the home folder (`PROMPTOPT_HOME`, else `~/.promptopt`):
//!
//! ```text
//! registry/<name>/<version>/model.json     one folder per version, never rewritten
//! registry/<name>/aliases/<alias>          the version an alias points at, one file per alias
//! ```
//!
//! A version is written into a private temporary folder and renamed into place: a failed save
//! leaves nothing, a reader never sees half a file, and of two writers that race for the same
//! version exactly one wins (the other takes the next one, or fails for an exact version). An
//! alias file is replaced by a rename, so it always names a whole version.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{SystemTime, UNIX_EPOCH};

use serde::{Deserialize, Serialize};

use crate::artifact::{ModelArtifact, ARTIFACT_FILE};
use crate::version::{check_alias, check_name, ModelRef, Selector, Version, VersionSpec};
use crate::RegistryError;

/// How many times a save retries when concurrent writers take the version it chose.
const SAVE_ATTEMPTS: usize = 64;

/// A model's name, versions and aliases.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ModelSummary {
    /// The name.
    pub name: String,
    /// Its versions, ascending.
    pub versions: Vec<Version>,
    /// Its aliases and the versions they point at, by alias.
    pub aliases: Vec<(String, Version)>,
}

/// The registry under a home folder.
#[derive(Debug, Clone)]
pub struct Registry {
    home: PathBuf,
}

/// `PROMPTOPT_HOME`, else `~/.promptopt`, else `./.promptopt`.
pub fn default_home() -> PathBuf {
    if let Some(home) = std::env::var_os("PROMPTOPT_HOME").filter(|h| !h.is_empty()) {
        return PathBuf::from(home);
    }
    match std::env::var_os("HOME").filter(|h| !h.is_empty()) {
        Some(home) => PathBuf::from(home).join(".promptopt"),
        None => PathBuf::from(".promptopt"),
    }
}

/// A name for a temporary file or folder that no other writer (process or thread) uses.
fn unique_tmp(dir: &Path, stem: &str) -> PathBuf {
    static COUNTER: AtomicU64 = AtomicU64::new(0);
    let nanos = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_nanos())
        .unwrap_or(0);
    dir.join(format!(
        ".tmp-{stem}-{}-{nanos}-{}",
        std::process::id(),
        COUNTER.fetch_add(1, Ordering::Relaxed)
    ))
}

/// Writes `text` to `path` through a temporary file and a rename (readers see the old file or
/// the new one, never a part).
pub fn write_atomic(path: &Path, text: &str) -> Result<(), RegistryError> {
    let dir = path.parent().unwrap_or_else(|| Path::new("."));
    let dir = if dir.as_os_str().is_empty() {
        Path::new(".")
    } else {
        dir
    };
    let tmp = unique_tmp(dir, "file");
    if let Err(e) = std::fs::write(&tmp, text) {
        // A full disk leaves a partial temporary file: remove it, keep the old file.
        let _ = std::fs::remove_file(&tmp);
        return Err(RegistryError::io(path, e));
    }
    std::fs::rename(&tmp, path).map_err(|e| {
        let _ = std::fs::remove_file(&tmp);
        RegistryError::io(path, e)
    })
}

impl Registry {
    /// A registry under `home` (models live in `home/registry`).
    pub fn new(home: impl Into<PathBuf>) -> Self {
        Self { home: home.into() }
    }

    /// The registry under [`default_home`].
    pub fn from_env() -> Self {
        Self::new(default_home())
    }

    /// The home folder.
    pub fn home(&self) -> &Path {
        &self.home
    }

    fn root(&self) -> PathBuf {
        self.home.join("registry")
    }

    /// The folder of one version.
    pub fn version_dir(&self, name: &str, version: Version) -> PathBuf {
        self.root().join(name).join(version.to_string())
    }

    fn alias_dir(&self, name: &str) -> PathBuf {
        self.root().join(name).join("aliases")
    }

    fn not_found(&self, name: &str, selector: Option<String>) -> RegistryError {
        RegistryError::NotFound {
            name: name.to_string(),
            selector,
            home: self.home.clone(),
        }
    }

    /// Versions of `name`, ascending (empty when there is no such model).
    pub fn versions(&self, name: &str) -> Result<Vec<Version>, RegistryError> {
        check_name(name)?;
        let dir = self.root().join(name);
        let entries = match std::fs::read_dir(&dir) {
            Ok(e) => e,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(Vec::new()),
            Err(e) => return Err(RegistryError::io(dir, e)),
        };
        let mut versions: Vec<Version> = entries
            .filter_map(Result::ok)
            .filter(|e| e.path().join(ARTIFACT_FILE).is_file())
            .filter_map(|e| e.file_name().to_str().and_then(|s| s.parse().ok()))
            .collect();
        versions.sort();
        Ok(versions)
    }

    /// The aliases of `name` and their versions, by alias.
    pub fn aliases(&self, name: &str) -> Result<Vec<(String, Version)>, RegistryError> {
        check_name(name)?;
        let dir = self.alias_dir(name);
        let entries = match std::fs::read_dir(&dir) {
            Ok(e) => e,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(Vec::new()),
            Err(e) => return Err(RegistryError::io(dir, e)),
        };
        let mut aliases = Vec::new();
        for entry in entries.filter_map(Result::ok) {
            let Some(alias) = entry.file_name().to_str().map(str::to_string) else {
                continue;
            };
            if check_alias(&alias).is_err() {
                continue;
            }
            let path = entry.path();
            let text = std::fs::read_to_string(&path).map_err(|e| RegistryError::io(&path, e))?;
            if let Ok(version) = text.trim().parse() {
                aliases.push((alias, version));
            }
        }
        aliases.sort();
        Ok(aliases)
    }

    /// Every model with its versions and aliases, by name.
    pub fn list(&self) -> Result<Vec<ModelSummary>, RegistryError> {
        let root = self.root();
        let entries = match std::fs::read_dir(&root) {
            Ok(e) => e,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(Vec::new()),
            Err(e) => return Err(RegistryError::io(root, e)),
        };
        let mut names: Vec<String> = entries
            .filter_map(Result::ok)
            .filter(|e| e.path().is_dir())
            .filter_map(|e| e.file_name().to_str().map(str::to_string))
            .filter(|n| check_name(n).is_ok())
            .collect();
        names.sort();
        let mut out = Vec::new();
        for name in names {
            let versions = self.versions(&name)?;
            if !versions.is_empty() {
                let aliases = self.aliases(&name)?;
                out.push(ModelSummary {
                    name,
                    versions,
                    aliases,
                });
            }
        }
        Ok(out)
    }

    /// The version a reference means.
    pub fn resolve(&self, reference: &ModelRef) -> Result<Version, RegistryError> {
        let name = &reference.name;
        match &reference.selector {
            Selector::Version(v) => Ok(*v),
            Selector::Latest => self
                .versions(name)?
                .last()
                .copied()
                .ok_or_else(|| self.not_found(name, None)),
            Selector::Alias(alias) => self
                .aliases(name)?
                .into_iter()
                .find(|(a, _)| a == alias)
                .map(|(_, v)| v)
                .ok_or_else(|| self.not_found(name, Some(alias.clone()))),
        }
    }

    /// Loads a model reference (`name`, `name@1.2.3`, `name@latest`, `name@production`).
    pub fn load_ref(&self, reference: &str) -> Result<ModelArtifact, RegistryError> {
        let reference: ModelRef = reference.parse()?;
        self.load(&reference)
    }

    /// Loads the version a reference means.
    pub fn load(&self, reference: &ModelRef) -> Result<ModelArtifact, RegistryError> {
        let version = self.resolve(reference)?;
        let path = self
            .version_dir(&reference.name, version)
            .join(ARTIFACT_FILE);
        let text = match std::fs::read_to_string(&path) {
            Ok(t) => t,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                return Err(self.not_found(&reference.name, Some(version.to_string())))
            }
            Err(e) => return Err(RegistryError::io(path, e)),
        };
        ModelArtifact::from_json(&text, &path)
    }

    /// The version a save with `spec` would get now.
    pub fn next_version(&self, name: &str, spec: VersionSpec) -> Result<Version, RegistryError> {
        let latest = self.versions(name)?.last().copied();
        Ok(match (spec, latest) {
            (VersionSpec::Exact(v), _) => v,
            (_, None) => Version::new(1, 0, 0),
            (VersionSpec::NextPatch, Some(v)) => Version::new(v.major, v.minor, v.patch + 1),
            (VersionSpec::NextMinor, Some(v)) => Version::new(v.major, v.minor + 1, 0),
            (VersionSpec::NextMajor, Some(v)) => Version::new(v.major + 1, 0, 0),
        })
    }

    /// Saves `artifact` under its name with the version `spec` gives (the artifact's own
    /// version is replaced), atomically. Concurrent writers of the same name get distinct
    /// versions. Returns the saved artifact.
    pub fn save(
        &self,
        mut artifact: ModelArtifact,
        spec: VersionSpec,
    ) -> Result<ModelArtifact, RegistryError> {
        check_name(&artifact.name)?;
        artifact
            .program
            .check_state(&artifact.state)
            .map_err(RegistryError::Core)?;
        let model_dir = self.root().join(&artifact.name);
        std::fs::create_dir_all(&model_dir).map_err(|e| RegistryError::io(&model_dir, e))?;
        for _ in 0..SAVE_ATTEMPTS {
            let version = self.next_version(&artifact.name, spec)?;
            artifact.version = version;
            let target = model_dir.join(version.to_string());
            if target.exists() && !target.join(ARTIFACT_FILE).is_file() {
                return Err(RegistryError::InvalidArtifact {
                    path: target,
                    message: "a folder of that version exists without a model artifact; remove it"
                        .into(),
                });
            }
            if target.exists() {
                if matches!(spec, VersionSpec::Exact(_)) {
                    return Err(RegistryError::VersionExists {
                        name: artifact.name.clone(),
                        version: version.to_string(),
                    });
                }
                continue;
            }
            let tmp = unique_tmp(&model_dir, &version.to_string());
            std::fs::create_dir(&tmp).map_err(|e| RegistryError::io(&tmp, e))?;
            let file = tmp.join(ARTIFACT_FILE);
            let written = artifact.to_json().and_then(|json| {
                std::fs::write(&file, json).map_err(|e| RegistryError::io(&file, e))
            });
            if let Err(e) = written {
                let _ = std::fs::remove_dir_all(&tmp);
                return Err(e);
            }
            // Renaming a folder onto an existing non-empty one fails: of two writers racing
            // for this version, one wins.
            match std::fs::rename(&tmp, &target) {
                Ok(()) => return Ok(artifact),
                Err(e) => {
                    let _ = std::fs::remove_dir_all(&tmp);
                    if !target.join(ARTIFACT_FILE).is_file() {
                        return Err(RegistryError::io(&target, e));
                    }
                    if matches!(spec, VersionSpec::Exact(_)) {
                        return Err(RegistryError::VersionExists {
                            name: artifact.name.clone(),
                            version: version.to_string(),
                        });
                    }
                }
            }
        }
        Err(RegistryError::Contended {
            name: artifact.name,
        })
    }

    /// Points `alias` of `name` at `version` (which must exist), replacing where it pointed
    /// before in one atomic step. Returns the version it pointed at before, if any.
    pub fn set_alias(
        &self,
        name: &str,
        alias: &str,
        version: Version,
    ) -> Result<Option<Version>, RegistryError> {
        check_name(name)?;
        check_alias(alias).map_err(|message| RegistryError::InvalidRef {
            reference: format!("{name}@{alias}"),
            message,
        })?;
        if !self
            .version_dir(name, version)
            .join(ARTIFACT_FILE)
            .is_file()
        {
            return Err(self.not_found(name, Some(version.to_string())));
        }
        let previous = self
            .aliases(name)?
            .into_iter()
            .find(|(a, _)| a == alias)
            .map(|(_, v)| v);
        let dir = self.alias_dir(name);
        std::fs::create_dir_all(&dir).map_err(|e| RegistryError::io(&dir, e))?;
        write_atomic(&dir.join(alias), &format!("{version}\n"))?;
        Ok(previous)
    }

    /// Removes an alias.
    pub fn remove_alias(&self, name: &str, alias: &str) -> Result<(), RegistryError> {
        check_name(name)?;
        check_alias(alias).map_err(|message| RegistryError::InvalidRef {
            reference: format!("{name}@{alias}"),
            message,
        })?;
        let path = self.alias_dir(name).join(alias);
        match std::fs::remove_file(&path) {
            Ok(()) => Ok(()),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                Err(self.not_found(name, Some(alias.to_string())))
            }
            Err(e) => Err(RegistryError::io(path, e)),
        }
    }

    /// Deletes one version (and the aliases that point at it), or every version of `name` when
    /// `version` is `None`.
    pub fn delete(&self, name: &str, version: Option<Version>) -> Result<(), RegistryError> {
        check_name(name)?;
        let dir = match version {
            Some(v) => self.version_dir(name, v),
            None => self.root().join(name),
        };
        if !dir.exists() {
            return Err(self.not_found(name, version.map(|v| v.to_string())));
        }
        if let Some(version) = version {
            for (alias, target) in self.aliases(name)? {
                if target == version {
                    self.remove_alias(name, &alias)?;
                }
            }
        }
        std::fs::remove_dir_all(&dir).map_err(|e| RegistryError::io(&dir, e))
    }

    /// A copy of a saved model with `metadata` and `tags` merged in (the guide's `save_optimized_model`):
    /// registered as a new version when `version` is given (`Some(None)`: the next patch;
    /// its parent is the copied version), else returned as it is saved now. Write it anywhere
    /// with [`Registry::write_file`].
    pub fn copy(
        &self,
        reference: &str,
        version: Option<Option<Version>>,
        metadata: serde_json::Map<String, serde_json::Value>,
        tags: BTreeMap<String, String>,
    ) -> Result<ModelArtifact, RegistryError> {
        let mut artifact = self.load_ref(reference)?;
        artifact.metadata.extend(metadata);
        artifact.tags.extend(tags);
        match version {
            None => Ok(artifact),
            Some(version) => {
                artifact.provenance.parent_version = Some(artifact.version);
                artifact.created_at = crate::now_rfc3339();
                let spec = version.map_or(VersionSpec::NextPatch, VersionSpec::Exact);
                self.save(artifact, spec)
            }
        }
    }

    /// Writes a self-contained copy of `artifact` to `path` (atomically).
    pub fn write_file(artifact: &ModelArtifact, path: &Path) -> Result<(), RegistryError> {
        write_atomic(path, &artifact.to_json()?)
    }

    /// Brings in an artifact file written by [`Registry::write_file`] (or by another
    /// registry), keeping its name and version (an error when that version exists).
    pub fn import(&self, path: &Path) -> Result<ModelArtifact, RegistryError> {
        let text = std::fs::read_to_string(path).map_err(|e| RegistryError::io(path, e))?;
        let artifact = ModelArtifact::from_json(&text, path)?;
        let version = artifact.version;
        self.save(artifact, VersionSpec::Exact(version))
    }
}
