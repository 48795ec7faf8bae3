//! The registry on disk: versions, aliases, concurrent writers, format 1 artifacts.
#![allow(clippy::unwrap_used)]

use std::sync::{Arc, Barrier};

use promptopt_core::adapter::AdapterKind;
use promptopt_core::{Field, Program, Signature};
use promptopt_registry::{
    ModelArtifact, ModelSettings, Registry, RegistryError, Version, VersionSpec,
};

fn artifact(name: &str) -> ModelArtifact {
    let program = Program::single(Signature::new(
        vec![Field::text("text")],
        vec![Field::text("label")],
    ));
    let state = program.initial_state();
    ModelArtifact::new(
        name,
        program,
        state,
        ModelSettings {
            model: "local/smollm2-135m".into(),
            adapter: AdapterKind::Turns,
            temperature: Some(0.0),
            max_tokens: None,
        },
    )
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
    let d = reg.save(artifact("sst2"), VersionSpec::NextMajor).unwrap();
    assert_eq!(d.version.to_string(), "2.0.0");
    let err = reg
        .save(artifact("sst2"), VersionSpec::Exact(Version::new(1, 0, 1)))
        .unwrap_err();
    assert!(matches!(err, RegistryError::VersionExists { .. }), "{err}");
    assert_eq!(reg.load_ref("sst2").unwrap().version, Version::new(2, 0, 0));
    assert_eq!(
        reg.load_ref("sst2@1.0.0").unwrap().version,
        Version::new(1, 0, 0)
    );
    assert_eq!(
        reg.load_ref("sst2@latest").unwrap().version,
        Version::new(2, 0, 0)
    );
    assert_eq!(reg.list().unwrap()[0].versions.len(), 4);
    reg.delete("sst2", Some(Version::new(2, 0, 0))).unwrap();
    assert_eq!(reg.load_ref("sst2").unwrap().version, Version::new(1, 1, 0));
    let err = reg.load_ref("nope").unwrap_err();
    assert!(matches!(err, RegistryError::NotFound { .. }), "{err}");
    // Semver order, not string order.
    reg.save(artifact("sst2"), VersionSpec::Exact(Version::new(1, 0, 10)))
        .unwrap();
    assert_eq!(reg.load_ref("sst2").unwrap().version, Version::new(1, 1, 0));
    reg.save(artifact("sst2"), VersionSpec::Exact(Version::new(1, 10, 0)))
        .unwrap();
    assert_eq!(
        reg.load_ref("sst2").unwrap().version,
        Version::new(1, 10, 0)
    );
}

#[test]
fn a_leftover_folder_is_an_error_and_no_temporary_files_remain() {
    let dir = tempfile::tempdir().unwrap();
    let reg = Registry::new(dir.path());
    let target = reg.version_dir("m", Version::new(1, 0, 0));
    std::fs::create_dir_all(target.join("junk")).unwrap();
    let err = reg.save(artifact("m"), VersionSpec::NextPatch).unwrap_err();
    assert!(
        err.to_string().contains("without a model artifact"),
        "{err}"
    );
    let leftovers: Vec<_> = std::fs::read_dir(dir.path().join("registry/m"))
        .unwrap()
        .filter_map(Result::ok)
        .filter(|e| e.file_name().to_string_lossy().starts_with(".tmp"))
        .collect();
    assert!(leftovers.is_empty());
    assert!(reg.list().unwrap().is_empty());
}

#[test]
fn concurrent_writers_of_one_name_get_distinct_whole_versions() {
    let dir = tempfile::tempdir().unwrap();
    let writers = 8;
    let barrier = Arc::new(Barrier::new(writers));
    let handles: Vec<_> = (0..writers)
        .map(|i| {
            let home = dir.path().to_path_buf();
            let barrier = Arc::clone(&barrier);
            std::thread::spawn(move || {
                let reg = Registry::new(home);
                let mut a = artifact("shared");
                a.metadata.insert("writer".into(), i.into());
                barrier.wait();
                reg.save(a, VersionSpec::NextPatch).unwrap().version
            })
        })
        .collect();
    let mut versions: Vec<Version> = handles.into_iter().map(|h| h.join().unwrap()).collect();
    versions.sort();
    versions.dedup();
    assert_eq!(versions.len(), writers);
    let reg = Registry::new(dir.path());
    assert_eq!(reg.versions("shared").unwrap(), versions);
    let mut writers_seen: Vec<i64> = versions
        .iter()
        .map(|v| {
            let a = reg.load_ref(&format!("shared@{v}")).unwrap();
            a.metadata["writer"].as_i64().unwrap()
        })
        .collect();
    writers_seen.sort_unstable();
    assert_eq!(writers_seen, (0..8).collect::<Vec<_>>());
}

#[test]
fn aliases_move_atomically_and_follow_deletes() {
    let dir = tempfile::tempdir().unwrap();
    let reg = Registry::new(dir.path());
    let v1 = reg
        .save(artifact("m"), VersionSpec::NextPatch)
        .unwrap()
        .version;
    let v2 = reg
        .save(artifact("m"), VersionSpec::NextPatch)
        .unwrap()
        .version;
    assert_eq!(reg.set_alias("m", "production", v1).unwrap(), None);
    assert_eq!(reg.set_alias("m", "candidate", v2).unwrap(), None);
    assert_eq!(reg.load_ref("m@production").unwrap().version, v1);
    assert_eq!(reg.set_alias("m", "production", v2).unwrap(), Some(v1));
    assert_eq!(reg.load_ref("m@production").unwrap().version, v2);
    assert_eq!(
        reg.list().unwrap()[0].aliases,
        vec![
            ("candidate".to_string(), v2),
            ("production".to_string(), v2)
        ]
    );
    let err = reg
        .set_alias("m", "production", Version::new(9, 0, 0))
        .unwrap_err();
    assert_eq!(
        err.to_string(),
        format!(
            "No model `m` at `9.0.0` in the registry at `{}`",
            dir.path().display()
        )
    );
    assert!(reg.set_alias("m", "latest", v1).is_err());
    assert!(reg.set_alias("m", "bad alias", v1).is_err());
    // Deleting a version removes the aliases that point at it.
    reg.delete("m", Some(v2)).unwrap();
    assert!(reg.aliases("m").unwrap().is_empty());
    let err = reg.load_ref("m@production").unwrap_err();
    assert!(matches!(err, RegistryError::NotFound { .. }), "{err}");
}

#[test]
fn format_1_artifacts_still_load_as_one_stage_programs() {
    let dir = tempfile::tempdir().unwrap();
    let reg = Registry::new(dir.path());
    let folder = reg.version_dir("old", Version::new(1, 0, 0));
    std::fs::create_dir_all(&folder).unwrap();
    let v1 = r#"{
  "format_version": 1,
  "name": "old",
  "version": "1.0.0",
  "created_at": "2026-11-20T10:00:00Z",
  "promptopt_version": "0.1.0",
  "program": {
    "kind": "single_predictor",
    "predictors": [{
      "name": "predict",
      "signature": {
        "instructions": "Classify the sentiment.",
        "inputs": [{"name": "text", "type": "text"}],
        "outputs": [{"name": "label", "type": "label", "allowed": ["negative", "positive"]}]
      }
    }]
  },
  "state": {"predictors": {"predict": {"instructions": "Classify it.", "demos": [{"text": "great", "label": "positive"}], "strategy": "predict"}}},
  "model": {"model": "local/gemma3-270m", "adapter": "turns", "temperature": 0.0, "max_tokens": 32},
  "metrics": {"metric": "accuracy", "optimized_score": 0.83},
  "metadata": {},
  "provenance": {"seed": 0, "algorithm": "bootstrapfewshot"}
}"#;
    std::fs::write(folder.join("model.json"), v1).unwrap();
    let a = reg.load_ref("old@1.0.0").unwrap();
    assert_eq!(a.format_version, 2);
    assert_eq!(a.program.stages().len(), 1);
    assert_eq!(a.program.stages()[0].name, "predict");
    assert_eq!(a.program.input_keys(), ["text"]);
    assert_eq!(a.program.output_keys(), ["label"]);
    assert_eq!(a.model.adapter, AdapterKind::Turns);
    assert_eq!(a.state.predictor("predict").unwrap().demos.len(), 1);
    assert_eq!(a.metric_name(), Some("accuracy"));

    // A newer format, or a broken one, is refused with the file named.
    std::fs::write(
        folder.join("model.json"),
        v1.replace("\"format_version\": 1", "\"format_version\": 9"),
    )
    .unwrap();
    let err = reg.load_ref("old@1.0.0").unwrap_err().to_string();
    assert!(err.contains("format version 9 is newer"), "{err}");
    assert!(err.contains("model.json"), "{err}");
}
