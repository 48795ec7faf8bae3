//! Program state: what optimizers learn, as plain data.

use std::collections::BTreeMap;
use std::hash::{Hash, Hasher};

use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

use crate::Example;

/// How a predictor reasons before answering.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Strategy {
    /// Answer directly.
    #[default]
    Predict,
    /// Write a `reasoning` field first, then the outputs.
    ChainOfThought,
    /// An agent: thought, tool call and observation in a loop (at most the stage's
    /// `max_iters` steps), then the outputs from the trajectory, with reasoning.
    React,
}

/// The learned state of one predictor.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct PredictorState {
    /// The instructions shown to the model.
    pub instructions: String,
    /// Demonstrations, each holding the predictor's input and output fields (and `reasoning` for
    /// chain of thought when it was bootstrapped).
    #[serde(default)]
    pub demos: Vec<Example>,
    /// Predict or chain of thought.
    #[serde(default)]
    pub strategy: Strategy,
    /// The model for this predictor (`provider/model`); `None` uses the run's task model.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub model: Option<String>,
    /// The tools this predictor may use, by name.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub tools: Vec<String>,
    /// Descriptions shown to the model instead of the tools' own, by tool name (what
    /// `tool_selection` rewrites).
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub tool_descriptions: BTreeMap<String, String>,
}

impl PredictorState {
    /// A state with these instructions and nothing learned yet.
    pub fn new(instructions: impl Into<String>) -> Self {
        Self {
            instructions: instructions.into(),
            demos: Vec::new(),
            strategy: Strategy::Predict,
            model: None,
            tools: Vec::new(),
            tool_descriptions: BTreeMap::new(),
        }
    }
}

/// The learned state of a whole program: one [`PredictorState`] per predictor, by name.
///
/// It is plain data: serializable, comparable and hashable (through its canonical JSON), so
/// candidates can be deduplicated, cached and saved.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct ProgramState {
    /// Per predictor, by name.
    pub predictors: BTreeMap<String, PredictorState>,
}

impl ProgramState {
    /// A state with one predictor.
    pub fn single(name: impl Into<String>, predictor: PredictorState) -> Self {
        let mut predictors = BTreeMap::new();
        predictors.insert(name.into(), predictor);
        Self { predictors }
    }

    /// A predictor's state.
    pub fn predictor(&self, name: &str) -> Option<&PredictorState> {
        self.predictors.get(name)
    }

    /// A predictor's state, mutable.
    pub fn predictor_mut(&mut self, name: &str) -> Option<&mut PredictorState> {
        self.predictors.get_mut(name)
    }

    /// The canonical JSON of the state (keys in a fixed order).
    pub fn canonical_json(&self) -> String {
        serde_json::to_string(self).unwrap_or_default()
    }

    /// A stable hex fingerprint of the state: sha256 of its canonical JSON.
    pub fn fingerprint(&self) -> String {
        hex::encode(Sha256::digest(self.canonical_json().as_bytes()))
    }
}

impl Hash for ProgramState {
    fn hash<H: Hasher>(&self, state: &mut H) {
        self.canonical_json().hash(state);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn equal_states_have_equal_fingerprints() {
        let mut a = ProgramState::single("predict", PredictorState::new("Classify."));
        let b = a.clone();
        assert_eq!(a.fingerprint(), b.fingerprint());
        if let Some(p) = a.predictor_mut("predict") {
            p.demos
                .push(Example::new().with("text", "x").with("label", "y"));
        }
        assert_ne!(a.fingerprint(), b.fingerprint());
        let json = serde_json::to_string(&a).unwrap_or_default();
        let back: ProgramState = serde_json::from_str(&json).unwrap_or_default();
        assert_eq!(a, back);
    }
}
