//! What the server's integration tests share.
#![allow(dead_code, clippy::unwrap_used)]

use promptopt_core::adapter::AdapterKind;
use promptopt_core::{Field, Program, Signature};
use promptopt_registry::{ModelArtifact, ModelSettings, Registry, VersionSpec};

/// Saves the next version of `name`: a one-stage `text -> label` program with `instructions`,
/// called on `scripted/test` with the turns adapter. Returns its id (`name@version`).
pub fn save(registry: &Registry, name: &str, instructions: &str) -> String {
    let program = Program::single(
        Signature::new(vec![Field::text("text")], vec![Field::text("label")])
            .with_instructions(instructions),
    );
    let settings = ModelSettings {
        model: "scripted/test".into(),
        adapter: AdapterKind::Turns,
        temperature: Some(0.0),
        max_tokens: None,
    };
    let artifact = ModelArtifact::new(name, program.clone(), program.initial_state(), settings);
    registry
        .save(artifact, VersionSpec::NextPatch)
        .unwrap()
        .id()
}
