//! The local model registry: immutable, versioned, self-contained model artifacts.
//!
//! Layout: `<home>/registry/<name>/<version>/model.json`, where home is `PROMPTOPT_HOME` or
//! `~/.promptopt`. A version is written into a temporary folder and renamed into place, so a
//! failed run never leaves a partial artifact, and an existing version is never overwritten.

use std::collections::BTreeMap;
use std::fmt;
use std::path::{Path, PathBuf};
use std::str::FromStr;
use std::time::{SystemTime, UNIX_EPOCH};

use promptopt_core::ProgramState;
use serde::{Deserialize, Serialize};

use crate::OptimizeError;
use promptopt_core::Stage;

/// The artifact file inside a version folder.
pub const ARTIFACT_FILE: &str = "model.json";

/// The artifact format this version writes.
pub const FORMAT_VERSION: u32 = 1;

/// A semantic version `MAJOR.MINOR.PATCH`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(try_from = "String", into = "String")]
pub struct Version {
    /// Major.
    pub major: u64,
    /// Minor.
    pub minor: u64,
    /// Patch.
    pub patch: u64,
}

impl Version {
    /// `major.minor.patch`.
    pub fn new(major: u64, minor: u64, patch: u64) -> Self {
        Self {
            major,
            minor,
            patch,
        }
    }
}

impl fmt::Display for Version {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}.{}.{}", self.major, self.minor, self.patch)
    }
}

impl FromStr for Version {
    type Err = OptimizeError;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let bad = || OptimizeError::InvalidModelRef {
            reference: s.to_string(),
            message: "a version is `MAJOR.MINOR.PATCH`, e.g. `1.0.0`".into(),
        };
        let parts: Vec<&str> = s.trim_start_matches('v').split('.').collect();
        if parts.len() != 3 {
            return Err(bad());
        }
        let n = |p: &str| {
            if p.is_empty() || !p.chars().all(|c| c.is_ascii_digit()) {
                Err(bad())
            } else {
                p.parse::<u64>().map_err(|_| bad())
            }
        };
        Ok(Self::new(n(parts[0])?, n(parts[1])?, n(parts[2])?))
    }
}

impl TryFrom<String> for Version {
    type Error = OptimizeError;
    fn try_from(s: String) -> Result<Self, Self::Error> {
        s.parse()
    }
}

impl From<Version> for String {
    fn from(v: Version) -> String {
        v.to_string()
    }
}

/// Which version a save gets.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum VersionSpec {
    /// The latest version with its patch number raised (`1.0.0` when there is none).
    NextPatch,
    /// The latest version with its minor number raised and patch 0 (`1.0.0` when none).
    NextMinor,
    /// Exactly this version (an error when it exists).
    Exact(Version),
}

/// `name`, `name@1.2.3` or `name@latest`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ModelRef {
    /// The model name.
    pub name: String,
    /// The version; `None` is the latest.
    pub version: Option<Version>,
}

impl FromStr for ModelRef {
    type Err = OptimizeError;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let (name, version) = match s.split_once('@') {
            Some((n, "latest")) => (n, None),
            Some((n, v)) => (n, Some(v.parse()?)),
            None => (s, None),
        };
        check_name(name)?;
        Ok(Self {
            name: name.to_string(),
            version,
        })
    }
}

impl fmt::Display for ModelRef {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match &self.version {
            Some(v) => write!(f, "{}@{v}", self.name),
            None => f.write_str(&self.name),
        }
    }
}

/// Checks a model name: letters, digits, `.`, `_`, `-`, starting with a letter or digit, at
/// most 100 characters.
pub fn check_name(name: &str) -> Result<(), OptimizeError> {
    let ok = !name.is_empty()
        && name.len() <= 100
        && name
            .chars()
            .next()
            .is_some_and(|c| c.is_ascii_alphanumeric())
        && name
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '.' | '_' | '-'));
    if ok {
        Ok(())
    } else {
        Err(OptimizeError::InvalidModelRef {
            reference: name.to_string(),
            message: "a model name has letters, digits, `.`, `_` and `-`, starts with a letter or digit and has at most 100 characters".into(),
        })
    }
}

/// The program's structure in an artifact.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ProgramSpec {
    /// `single_predictor` (the structure request files describe).
    pub kind: String,
    /// The predictors with their signatures.
    pub predictors: Vec<Stage>,
}

/// How the model is called (never any key).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ModelSettings {
    /// The task model (`provider/model`).
    pub model: String,
    /// The adapter (`chat`, `json`, `completion`).
    pub adapter: String,
    /// Sampling temperature.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub temperature: Option<f32>,
    /// Upper bound on generated tokens.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_tokens: Option<u32>,
}

/// Where an artifact came from.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct Provenance {
    /// The optimization run.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub optimization_id: Option<String>,
    /// sha256 of the canonical request.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub request_hash: Option<String>,
    /// sha256 of each dataset (`train`, `validation`).
    #[serde(default)]
    pub dataset_hashes: BTreeMap<String, String>,
    /// The run's seed.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub seed: Option<u64>,
    /// The algorithm.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub algorithm: Option<String>,
}

/// A saved model: everything `predict` needs.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ModelArtifact {
    /// The artifact format.
    pub format_version: u32,
    /// The model's name.
    pub name: String,
    /// Its version.
    pub version: Version,
    /// When it was saved (UTC, RFC 3339).
    pub created_at: String,
    /// The promptopt version that saved it.
    pub promptopt_version: String,
    /// The program's structure.
    pub program: ProgramSpec,
    /// The learned state.
    pub state: ProgramState,
    /// How the model is called.
    pub model: ModelSettings,
    /// Scores and measurements (baseline, optimized, metric name, ...).
    #[serde(default)]
    pub metrics: serde_json::Map<String, serde_json::Value>,
    /// Free metadata.
    #[serde(default)]
    pub metadata: serde_json::Map<String, serde_json::Value>,
    /// Where it came from.
    #[serde(default)]
    pub provenance: Provenance,
}

impl ModelArtifact {
    /// `name@version`.
    pub fn id(&self) -> String {
        format!("{}@{}", self.name, self.version)
    }
}

/// A model's name and versions.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ModelSummary {
    /// The name.
    pub name: String,
    /// Its versions, ascending.
    pub versions: Vec<Version>,
}

/// The registry under a home folder.
#[derive(Debug, Clone)]
pub struct Registry {
    home: PathBuf,
}

/// The current time as RFC 3339 UTC (`2025-01-31T12:00:00Z`).
pub fn now_rfc3339() -> String {
    let secs = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0);
    let days = (secs / 86_400) as i64;
    let rem = secs % 86_400;
    // Civil date from days since 1970-01-01 (Howard Hinnant's algorithm).
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let y = yoe + era * 400;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = doy - (153 * mp + 2) / 5 + 1;
    let m = if mp < 10 { mp + 3 } else { mp - 9 };
    let y = if m <= 2 { y + 1 } else { y };
    format!(
        "{y:04}-{m:02}-{d:02}T{:02}:{:02}:{:02}Z",
        rem / 3600,
        (rem % 3600) / 60,
        rem % 60
    )
}

impl Registry {
    /// A registry under `home` (models live in `home/registry`).
    pub fn new(home: impl Into<PathBuf>) -> Self {
        Self { home: home.into() }
    }

    /// The registry under `PROMPTOPT_HOME`, else `~/.promptopt`, else `./.promptopt`.
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

    /// Versions of `name`, ascending (empty when there is no such model).
    pub fn versions(&self, name: &str) -> Result<Vec<Version>, OptimizeError> {
        check_name(name)?;
        let dir = self.root().join(name);
        let entries = match std::fs::read_dir(&dir) {
            Ok(e) => e,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(Vec::new()),
            Err(e) => return Err(OptimizeError::io(dir, e)),
        };
        let mut versions: Vec<Version> = entries
            .filter_map(Result::ok)
            .filter(|e| e.path().join(ARTIFACT_FILE).is_file())
            .filter_map(|e| e.file_name().to_str().and_then(|s| s.parse().ok()))
            .collect();
        versions.sort();
        Ok(versions)
    }

    /// Every model with its versions, by name.
    pub fn list(&self) -> Result<Vec<ModelSummary>, OptimizeError> {
        let root = self.root();
        let entries = match std::fs::read_dir(&root) {
            Ok(e) => e,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(Vec::new()),
            Err(e) => return Err(OptimizeError::io(root, e)),
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
                out.push(ModelSummary { name, versions });
            }
        }
        Ok(out)
    }

    /// Loads `name` at `version` (`None`: the latest).
    pub fn load(
        &self,
        name: &str,
        version: Option<Version>,
    ) -> Result<ModelArtifact, OptimizeError> {
        let not_found = || OptimizeError::ModelNotFound {
            name: name.to_string(),
            version: version.map(|v| v.to_string()),
            home: self.home.clone(),
        };
        let version = match version {
            Some(v) => v,
            None => *self.versions(name)?.last().ok_or_else(not_found)?,
        };
        check_name(name)?;
        let path = self.version_dir(name, version).join(ARTIFACT_FILE);
        let text = match std::fs::read_to_string(&path) {
            Ok(t) => t,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Err(not_found()),
            Err(e) => return Err(OptimizeError::io(path, e)),
        };
        serde_json::from_str(&text).map_err(|e| OptimizeError::InvalidRequest {
            location: Some(path),
            message: format!("not a model artifact: {e}"),
        })
    }

    /// Loads a model reference (`name`, `name@1.2.3`, `name@latest`).
    pub fn load_ref(&self, reference: &str) -> Result<ModelArtifact, OptimizeError> {
        let r: ModelRef = reference.parse()?;
        self.load(&r.name, r.version)
    }

    /// The version a save with `spec` would get.
    pub fn next_version(&self, name: &str, spec: VersionSpec) -> Result<Version, OptimizeError> {
        let latest = self.versions(name)?.last().copied();
        Ok(match (spec, latest) {
            (VersionSpec::Exact(v), _) => v,
            (_, None) => Version::new(1, 0, 0),
            (VersionSpec::NextPatch, Some(v)) => Version::new(v.major, v.minor, v.patch + 1),
            (VersionSpec::NextMinor, Some(v)) => Version::new(v.major, v.minor + 1, 0),
        })
    }

    /// Saves `artifact` under its name with the version `spec` gives (the artifact's own
    /// version is replaced), atomically. Returns the saved artifact.
    pub fn save(
        &self,
        mut artifact: ModelArtifact,
        spec: VersionSpec,
    ) -> Result<ModelArtifact, OptimizeError> {
        check_name(&artifact.name)?;
        let version = self.next_version(&artifact.name, spec)?;
        artifact.version = version;
        let model_dir = self.root().join(&artifact.name);
        std::fs::create_dir_all(&model_dir).map_err(|e| OptimizeError::io(&model_dir, e))?;
        let target = model_dir.join(version.to_string());
        if target.exists() {
            return Err(OptimizeError::VersionExists {
                name: artifact.name.clone(),
                version: version.to_string(),
            });
        }
        let nanos = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map(|d| d.as_nanos())
            .unwrap_or(0);
        let tmp = model_dir.join(format!(".tmp-{version}-{}-{nanos}", std::process::id()));
        std::fs::create_dir_all(&tmp).map_err(|e| OptimizeError::io(&tmp, e))?;
        let json = serde_json::to_string_pretty(&artifact)?;
        let file = tmp.join(ARTIFACT_FILE);
        let written = std::fs::write(&file, json)
            .map_err(|e| OptimizeError::io(&file, e))
            .and_then(|()| {
                std::fs::rename(&tmp, &target).map_err(|e| {
                    if target.exists() {
                        OptimizeError::VersionExists {
                            name: artifact.name.clone(),
                            version: version.to_string(),
                        }
                    } else {
                        OptimizeError::io(&target, e)
                    }
                })
            });
        if written.is_err() {
            let _ = std::fs::remove_dir_all(&tmp);
        }
        written.map(|()| artifact)
    }

    /// Deletes one version, or every version of `name` when `version` is `None`.
    pub fn delete(&self, name: &str, version: Option<Version>) -> Result<(), OptimizeError> {
        check_name(name)?;
        let not_found = || OptimizeError::ModelNotFound {
            name: name.to_string(),
            version: version.map(|v| v.to_string()),
            home: self.home.clone(),
        };
        let dir = match version {
            Some(v) => self.version_dir(name, v),
            None => self.root().join(name),
        };
        if !dir.exists() {
            return Err(not_found());
        }
        std::fs::remove_dir_all(&dir).map_err(|e| OptimizeError::io(&dir, e))
    }
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

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;
    use promptopt_core::{Field, PredictorState, Signature};

    fn artifact(name: &str) -> ModelArtifact {
        let signature = Signature::new(vec![Field::text("text")], vec![Field::text("label")]);
        ModelArtifact {
            format_version: FORMAT_VERSION,
            name: name.into(),
            version: Version::new(0, 0, 0),
            created_at: now_rfc3339(),
            promptopt_version: env!("CARGO_PKG_VERSION").into(),
            program: ProgramSpec {
                kind: "single_predictor".into(),
                predictors: vec![Stage {
                    name: "predict".into(),
                    signature: signature.clone(),
                }],
            },
            state: ProgramState::single("predict", PredictorState::new(signature.instructions)),
            model: ModelSettings {
                model: "local/smollm2-135m".into(),
                adapter: "chat".into(),
                temperature: Some(0.0),
                max_tokens: None,
            },
            metrics: Default::default(),
            metadata: Default::default(),
            provenance: Provenance::default(),
        }
    }

    #[test]
    fn versions_auto_increment_and_are_immutable() {
        let dir = tempfile::tempdir().unwrap();
        let reg = Registry::new(dir.path());
        let a = reg.save(artifact("sst2"), VersionSpec::NextPatch).unwrap();
        assert_eq!(a.version.to_string(), "1.0.0");
        let b = reg.save(artifact("sst2"), VersionSpec::NextPatch).unwrap();
        assert_eq!(b.version.to_string(), "1.0.1");
        let c = reg.save(artifact("sst2"), VersionSpec::NextMinor).unwrap();
        assert_eq!(c.version.to_string(), "1.1.0");
        let err = reg
            .save(artifact("sst2"), VersionSpec::Exact(Version::new(1, 0, 1)))
            .unwrap_err();
        assert!(matches!(err, OptimizeError::VersionExists { .. }));
        assert_eq!(
            reg.load("sst2", None).unwrap().version,
            Version::new(1, 1, 0)
        );
        assert_eq!(
            reg.load_ref("sst2@1.0.0").unwrap().version,
            Version::new(1, 0, 0)
        );
        assert_eq!(
            reg.load_ref("sst2@latest").unwrap().version,
            Version::new(1, 1, 0)
        );
        assert_eq!(reg.list().unwrap()[0].versions.len(), 3);
        reg.delete("sst2", Some(Version::new(1, 1, 0))).unwrap();
        assert_eq!(
            reg.load("sst2", None).unwrap().version,
            Version::new(1, 0, 1)
        );
        assert!(matches!(
            reg.load("nope", None).unwrap_err(),
            OptimizeError::ModelNotFound { .. }
        ));
        // Semver order, not string order.
        reg.save(artifact("sst2"), VersionSpec::Exact(Version::new(1, 0, 10)))
            .unwrap();
        assert_eq!(
            reg.load("sst2", None).unwrap().version,
            Version::new(1, 0, 10)
        );
    }

    #[test]
    fn a_failed_write_leaves_no_version_behind() {
        let dir = tempfile::tempdir().unwrap();
        let reg = Registry::new(dir.path());
        // The target version already exists as a non-empty folder without an artifact: the
        // rename fails, the temporary folder is removed and nothing is listed.
        let target = reg.version_dir("m", Version::new(1, 0, 0));
        std::fs::create_dir_all(target.join("junk")).unwrap();
        let err = reg.save(artifact("m"), VersionSpec::NextPatch);
        assert!(err.is_err());
        let leftovers: Vec<_> = std::fs::read_dir(dir.path().join("registry/m"))
            .unwrap()
            .filter_map(Result::ok)
            .filter(|e| e.file_name().to_string_lossy().starts_with(".tmp"))
            .collect();
        assert!(leftovers.is_empty());
        assert!(reg.list().unwrap().is_empty());
    }

    #[test]
    fn names_versions_and_refs_are_checked() {
        assert!(check_name("../x").is_err());
        assert!(check_name("sst2-bootstrap_v1.2").is_ok());
        assert!("1.2".parse::<Version>().is_err());
        assert!("1.2.x".parse::<Version>().is_err());
        let r: ModelRef = "m@2.0.1".parse().unwrap();
        assert_eq!(r.to_string(), "m@2.0.1");
        assert!(now_rfc3339().ends_with('Z'));
    }
}
