//! Saved programs of promptopt: versioned, self-contained artifacts with aliases, import and
//! export.
//!
//! A [`ModelArtifact`] holds a program of any shape (its stages, inputs and outputs), its
//! learned state, how it is called (never a key), its scores and where it came from. The
//! [`Registry`] keeps immutable semver versions under `PROMPTOPT_HOME`, moves aliases
//! (`production`, `candidate`, any other) atomically, and is safe with concurrent writers.
//! [`export`] writes a model as DSPy state JSON, as the messages it sends, or as Markdown.
//!
//! ```
//! use promptopt_core::{Field, Program, Signature};
//! use promptopt_core::adapter::AdapterKind;
//! use promptopt_registry::{ModelArtifact, ModelSettings, Registry, VersionSpec};
//!
//! let home = tempfile::tempdir().unwrap();
//! let registry = Registry::new(home.path());
//! let program = Program::single(Signature::new(vec![Field::text("text")], vec![Field::text("label")]));
//! let settings = ModelSettings { model: "local/smollm2-135m".into(), adapter: AdapterKind::Turns, temperature: Some(0.0), max_tokens: None };
//! let artifact = ModelArtifact::new("sentiment", program.clone(), program.initial_state(), settings);
//! let saved = registry.save(artifact, VersionSpec::NextPatch).unwrap();
//! assert_eq!(saved.id(), "sentiment@1.0.0");
//! registry.set_alias("sentiment", "production", saved.version).unwrap();
//! assert_eq!(registry.load_ref("sentiment@production").unwrap().version, saved.version);
//! ```

mod artifact;
mod error;
pub mod export;
mod store;
mod time;
mod version;

pub use artifact::{ModelArtifact, ModelSettings, Provenance, ARTIFACT_FILE, FORMAT_VERSION};
pub use error::RegistryError;
pub use store::{default_home, write_atomic, ModelSummary, Registry};
pub use time::{civil_from_days, now_rfc3339, rfc3339};
pub use version::{check_alias, check_name, ModelRef, Selector, Version, VersionSpec};
