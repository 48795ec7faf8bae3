//! Model artifacts: a saved program with everything `predict` needs.

use std::collections::BTreeMap;
use std::path::Path;

use promptopt_core::adapter::AdapterKind;
use promptopt_core::{Program, ProgramState, RunSettings, Signature, Stage};
use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};

use crate::{RegistryError, Version};

/// The artifact file inside a version folder.
pub const ARTIFACT_FILE: &str = "model.json";

/// The artifact format this version writes. Format 1 (single predictor, `kind:
/// single_predictor`) is still read.
pub const FORMAT_VERSION: u32 = 2;

/// How the model is called (never any key).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ModelSettings {
    /// The task model (`provider/model`); a stage's or a state's model overrides it.
    pub model: String,
    /// The adapter (`chat`, `json`, `completion`, `turns`); a stage's own adapter overrides it.
    pub adapter: AdapterKind,
    /// Sampling temperature.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub temperature: Option<f32>,
    /// Upper bound on generated tokens.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_tokens: Option<u32>,
}

impl ModelSettings {
    /// The run settings these give (JSON fallback on, cache on).
    pub fn run_settings(&self) -> RunSettings {
        RunSettings {
            adapter: self.adapter,
            temperature: self.temperature,
            max_tokens: self.max_tokens,
            ..RunSettings::default()
        }
    }
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
    /// The request itself, as given (paths, not data; never any key).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub request: Option<Value>,
    /// sha256 of each dataset (`train`, `validation`, `test`).
    #[serde(default)]
    pub dataset_hashes: BTreeMap<String, String>,
    /// The run's seed.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub seed: Option<u64>,
    /// The algorithm.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub algorithm: Option<String>,
    /// The version this one was copied or retrained from.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub parent_version: Option<Version>,
}

/// A saved model: the program's structure, its learned state, how it is called, its scores
/// and where it came from. It stands alone: `predict` needs nothing else.
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
    /// The program's structure: stages in order, inputs, outputs.
    pub program: Program,
    /// The learned state, per stage.
    pub state: ProgramState,
    /// How the model is called.
    pub model: ModelSettings,
    /// Scores and measurements (`metric`, `baseline_score`, `optimized_score`, ...).
    #[serde(default)]
    pub metrics: Map<String, Value>,
    /// Free metadata (`--metadata key=value`).
    #[serde(default)]
    pub metadata: Map<String, Value>,
    /// Short labels for search (`team=search`, `experiment`).
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub tags: BTreeMap<String, String>,
    /// Where it came from.
    #[serde(default)]
    pub provenance: Provenance,
    /// The tools its `react` stages call (built-in tools and their settings): `predict` builds
    /// them again.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub tools: Vec<promptopt_core::tools::ToolSpec>,
}

impl ModelArtifact {
    /// A fresh artifact of `program` with `state`, at version `0.0.0` until it is saved.
    pub fn new(
        name: impl Into<String>,
        program: Program,
        state: ProgramState,
        model: ModelSettings,
    ) -> Self {
        Self {
            format_version: FORMAT_VERSION,
            name: name.into(),
            version: Version::new(0, 0, 0),
            created_at: crate::now_rfc3339(),
            promptopt_version: env!("CARGO_PKG_VERSION").to_string(),
            program,
            state,
            model,
            metrics: Map::new(),
            metadata: Map::new(),
            tags: BTreeMap::new(),
            provenance: Provenance::default(),
            tools: Vec::new(),
        }
    }

    /// The run settings of this model: its [`ModelSettings`] and its tools.
    pub fn run_settings(&self) -> RunSettings {
        RunSettings {
            tools: self.tools.clone(),
            ..self.model.run_settings()
        }
    }

    /// `name@version`.
    pub fn id(&self) -> String {
        format!("{}@{}", self.name, self.version)
    }

    /// Every model name the program may call: its default model, then stage models and models
    /// in its learned state, each once.
    pub fn models(&self) -> Vec<String> {
        let mut models = vec![self.model.model.clone()];
        let stages = self.program.stages().iter().filter_map(|s| s.model.clone());
        let states = self
            .state
            .predictors
            .values()
            .filter_map(|p| p.model.clone());
        for model in stages.chain(states) {
            if !models.contains(&model) {
                models.push(model);
            }
        }
        models
    }

    /// The metric the model was optimized for, when recorded.
    pub fn metric_name(&self) -> Option<&str> {
        self.metrics.get("metric").and_then(Value::as_str)
    }

    /// Reads an artifact from JSON text (`path` names it in errors). Format 1 artifacts are
    /// upgraded: their single predictor becomes a one-stage program.
    pub fn from_json(text: &str, path: &Path) -> Result<Self, RegistryError> {
        let invalid = |message: String| RegistryError::InvalidArtifact {
            path: path.to_path_buf(),
            message,
        };
        let mut value: Value = serde_json::from_str(text).map_err(|e| invalid(e.to_string()))?;
        let format = value
            .get("format_version")
            .and_then(Value::as_u64)
            .ok_or_else(|| invalid("it has no `format_version`".into()))?;
        match format {
            1 => upgrade_v1(&mut value).map_err(invalid)?,
            2 => {}
            other => {
                return Err(invalid(format!(
                "its format version {other} is newer than this promptopt reads ({FORMAT_VERSION})"
            )))
            }
        }
        let artifact: ModelArtifact =
            serde_json::from_value(value).map_err(|e| invalid(e.to_string()))?;
        artifact
            .program
            .check_state(&artifact.state)
            .map_err(|e| invalid(e.to_string()))?;
        Ok(artifact)
    }

    /// The artifact as pretty JSON.
    pub fn to_json(&self) -> Result<String, RegistryError> {
        Ok(serde_json::to_string_pretty(self)?)
    }
}

/// Format 1 held `program: {kind: "single_predictor", predictors: [{name, signature}]}` and an
/// adapter name; format 2 holds the program itself.
fn upgrade_v1(value: &mut Value) -> Result<(), String> {
    #[derive(Deserialize)]
    struct V1Predictor {
        name: String,
        signature: Signature,
    }
    #[derive(Deserialize)]
    struct V1Program {
        kind: String,
        predictors: Vec<V1Predictor>,
    }
    let Some(object) = value.as_object_mut() else {
        return Err("it is not a JSON object".into());
    };
    let old: V1Program =
        serde_json::from_value(object.get("program").cloned().unwrap_or(Value::Null))
            .map_err(|e| format!("its format 1 `program` is malformed: {e}"))?;
    if old.kind != "single_predictor" {
        return Err(format!(
            "its format 1 program kind `{}` is unknown",
            old.kind
        ));
    }
    let [predictor] = <[V1Predictor; 1]>::try_from(old.predictors).map_err(|p| {
        format!(
            "a format 1 program has one predictor, this one has {}",
            p.len()
        )
    })?;
    let signature = predictor.signature;
    let program = Program::new(
        signature.input_names(),
        vec![Stage::new(predictor.name, signature.clone())],
        signature.output_names(),
    )
    .map_err(|e| e.to_string())?;
    object.insert(
        "program".into(),
        serde_json::to_value(program).map_err(|e| e.to_string())?,
    );
    object.insert("format_version".into(), Value::from(FORMAT_VERSION));
    Ok(())
}
