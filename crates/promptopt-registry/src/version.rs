//! Versions, names, aliases and model references (`name`, `name@1.2.0`, `name@latest`,
//! `name@production`).

use std::fmt;
use std::str::FromStr;

use serde::{Deserialize, Serialize};

use crate::RegistryError;

/// A semantic version `MAJOR.MINOR.PATCH`.
///
/// ```
/// use promptopt_registry::Version;
///
/// let v: Version = "1.2.10".parse().unwrap();
/// assert!(v > "1.2.9".parse().unwrap());
/// assert_eq!(v.to_string(), "1.2.10");
/// ```
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
    type Err = RegistryError;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let bad = || RegistryError::InvalidRef {
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
    type Error = RegistryError;
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
    /// The latest version with its major number raised (`1.0.0` when none).
    NextMajor,
    /// Exactly this version (an error when it exists).
    Exact(Version),
}

/// Which version of a model a reference means.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Selector {
    /// The highest version.
    Latest,
    /// This version.
    Version(Version),
    /// The version an alias points at (`production`, `candidate`, ...).
    Alias(String),
}

impl fmt::Display for Selector {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Selector::Latest => f.write_str("latest"),
            Selector::Version(v) => write!(f, "{v}"),
            Selector::Alias(a) => f.write_str(a),
        }
    }
}

/// `name`, `name@1.2.3`, `name@latest` or `name@<alias>`.
///
/// ```
/// use promptopt_registry::{ModelRef, Selector};
///
/// let r: ModelRef = "sst2@production".parse().unwrap();
/// assert_eq!(r.selector, Selector::Alias("production".into()));
/// let r: ModelRef = "sst2".parse().unwrap();
/// assert_eq!(r.selector, Selector::Latest);
/// assert!("../etc@1".parse::<ModelRef>().is_err());
/// ```
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ModelRef {
    /// The model name.
    pub name: String,
    /// Which version.
    pub selector: Selector,
}

impl ModelRef {
    /// A reference to one version.
    pub fn exact(name: impl Into<String>, version: Version) -> Self {
        Self {
            name: name.into(),
            selector: Selector::Version(version),
        }
    }
}

impl FromStr for ModelRef {
    type Err = RegistryError;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let (name, selector) = match s.split_once('@') {
            None | Some((_, "latest")) => (s.split('@').next().unwrap_or(s), Selector::Latest),
            Some((n, v))
                if v.starts_with(|c: char| c.is_ascii_digit() || c == 'v') && v.contains('.') =>
            {
                (n, Selector::Version(v.parse()?))
            }
            Some((n, alias)) => {
                check_alias(alias).map_err(|message| RegistryError::InvalidRef {
                    reference: s.to_string(),
                    message,
                })?;
                (n, Selector::Alias(alias.to_string()))
            }
        };
        check_name(name)?;
        Ok(Self {
            name: name.to_string(),
            selector,
        })
    }
}

impl fmt::Display for ModelRef {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match &self.selector {
            Selector::Latest => f.write_str(&self.name),
            other => write!(f, "{}@{other}", self.name),
        }
    }
}

/// Checks a model name: letters, digits, `.`, `_`, `-`, starting with a letter or digit, at
/// most 100 characters.
pub fn check_name(name: &str) -> Result<(), RegistryError> {
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
        Err(RegistryError::InvalidRef {
            reference: name.to_string(),
            message: "a model name has letters, digits, `.`, `_` and `-`, starts with a letter or digit and has at most 100 characters".into(),
        })
    }
}

/// Checks an alias: a letter first, then letters, digits, `_` and `-`, at most 64 characters,
/// and not `latest` (which always means the highest version).
pub fn check_alias(alias: &str) -> Result<(), String> {
    let ok = alias.len() <= 64
        && alias
            .chars()
            .next()
            .is_some_and(|c| c.is_ascii_alphabetic())
        && alias
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '_' | '-'));
    if !ok {
        return Err(format!(
            "the alias `{alias}` is not valid: a letter first, then letters, digits, `_` and `-`, at most 64 characters"
        ));
    }
    if alias == "latest" {
        return Err("`latest` always means the highest version and cannot be set".into());
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    #[test]
    fn references_parse_versions_aliases_and_latest() {
        let r: ModelRef = "m@2.0.1".parse().unwrap();
        assert_eq!(r.selector, Selector::Version(Version::new(2, 0, 1)));
        assert_eq!(r.to_string(), "m@2.0.1");
        let r: ModelRef = "m@latest".parse().unwrap();
        assert_eq!((r.name.as_str(), r.selector), ("m", Selector::Latest));
        let r: ModelRef = "m@candidate-2".parse().unwrap();
        assert_eq!(r.to_string(), "m@candidate-2");
        assert!("m@1.2".parse::<ModelRef>().is_err());
        assert!("m@bad alias".parse::<ModelRef>().is_err());
        assert!(check_name("../x").is_err());
        assert!(check_name("sst2-bootstrap_v1.2").is_ok());
        assert!("1.2.x".parse::<Version>().is_err());
        assert!(check_alias("latest").is_err());
        assert!(check_alias("9lives").is_err());
    }
}
