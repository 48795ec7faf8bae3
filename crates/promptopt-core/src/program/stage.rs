//! Stages: the named predictors a program is made of, and their declared form in requests.

use serde::{Deserialize, Serialize};

use crate::adapter::AdapterKind;
use crate::{CoreError, Field, FieldType, Signature, Strategy};

/// One predictor of a [`Program`](super::Program): what it reads and writes, how it reasons, and
/// optionally its own adapter and model.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Stage {
    /// The stage's name, unique in its program (the key of its state in
    /// [`ProgramState::predictors`](crate::ProgramState::predictors)).
    pub name: String,
    /// How it answers before any optimization: `predict`, `chain_of_thought` or `react`.
    #[serde(default)]
    pub module: Strategy,
    /// Its input and output fields and its starting instructions.
    pub signature: Signature,
    /// The adapter for this stage; `None` uses the run's.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub adapter: Option<AdapterKind>,
    /// The model for this stage (`provider/model`); a state's model overrides it, and `None`
    /// uses the run's task model.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub model: Option<String>,
    /// The tools this stage may call, by name.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub tools: Vec<String>,
    /// A `react` stage's tool calls at most before it must answer (default
    /// [`DEFAULT_MAX_ITERS`](super::react::DEFAULT_MAX_ITERS)).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_iters: Option<usize>,
}

impl Stage {
    /// A `predict` stage with this signature, the run's adapter and model.
    pub fn new(name: impl Into<String>, signature: Signature) -> Self {
        Self {
            name: name.into(),
            module: Strategy::Predict,
            signature,
            adapter: None,
            model: None,
            tools: Vec::new(),
            max_iters: None,
        }
    }

    /// Builder: the tools the stage may call.
    pub fn with_tools(mut self, tools: Vec<String>) -> Self {
        self.tools = tools;
        self
    }

    /// Builder: how the stage reasons.
    pub fn with_module(mut self, module: Strategy) -> Self {
        self.module = module;
        self
    }

    /// Builder: the stage's own adapter.
    pub fn with_adapter(mut self, adapter: AdapterKind) -> Self {
        self.adapter = Some(adapter);
        self
    }

    /// Builder: the stage's own model.
    pub fn with_model(mut self, model: impl Into<String>) -> Self {
        self.model = Some(model.into());
        self
    }
}

/// A stage as a request declares it: the signature as a `"inputs -> outputs"` string.
///
/// ```
/// use promptopt_core::program::StageSpec;
///
/// let spec: StageSpec = serde_json::from_value(serde_json::json!({
///     "name": "answer",
///     "module": "chain_of_thought",
///     "signature": "question, evidence -> answer",
///     "instructions": "Answer from the evidence."
/// })).unwrap();
/// let stage = spec.into_stage(&[]).unwrap();
/// assert_eq!(stage.signature.input_names(), ["question", "evidence"]);
/// assert_eq!(stage.signature.instructions, "Answer from the evidence.");
/// ```
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct StageSpec {
    /// The stage's name.
    pub name: String,
    /// `predict` (default), `chain_of_thought` or `react`.
    #[serde(default)]
    pub module: Strategy,
    /// The tools a `react` stage may call, by name (the request's `tools` define them).
    #[serde(default)]
    pub tools: Vec<String>,
    /// A `react` stage's tool calls at most (default 5).
    #[serde(default)]
    pub max_iters: Option<usize>,
    /// `"a, b -> c"`; a field may carry a type, `"n: int"` (`text`, `int`, `float`, `bool`,
    /// `list`, `json`).
    pub signature: String,
    /// The starting instructions (default: one naming the fields).
    #[serde(default)]
    pub instructions: Option<String>,
    /// The stage's own adapter (`chat`, `json`, `completion`, `turns`).
    #[serde(default)]
    pub adapter: Option<AdapterKind>,
    /// The stage's own model.
    #[serde(default)]
    pub model: Option<String>,
}

impl StageSpec {
    /// The stage. Fields named in `known` (e.g. the dataset's output fields with their labels)
    /// take those fields' types and descriptions unless the signature gives a type.
    pub fn into_stage(self, known: &[Field]) -> Result<Stage, CoreError> {
        let mut signature = parse_signature(&self.signature, known).map_err(|message| {
            CoreError::InvalidProgram {
                stage: self.name.clone(),
                message,
            }
        })?;
        if let Some(instructions) = self.instructions {
            signature.instructions = instructions;
        }
        Ok(Stage {
            name: self.name,
            module: self.module,
            signature,
            adapter: self.adapter,
            model: self.model,
            tools: self.tools,
            max_iters: self.max_iters,
        })
    }
}

/// Parses `"question, context -> answer"` (fields may be typed: `"n: int"`).
///
/// ```
/// use promptopt_core::program::parse_signature;
/// use promptopt_core::FieldType;
///
/// let s = parse_signature("question, n: int -> answer: float", &[]).unwrap();
/// assert_eq!(s.input_names(), ["question", "n"]);
/// assert_eq!(s.inputs[1].ty, FieldType::Integer);
/// assert!(parse_signature("question answer", &[]).is_err());
/// ```
pub fn parse_signature(text: &str, known: &[Field]) -> Result<Signature, String> {
    let Some((inputs, outputs)) = text.split_once("->") else {
        return Err(format!(
            "The signature `{text}` has no `->` between its inputs and outputs"
        ));
    };
    let inputs = parse_fields(inputs, text, known)?;
    let outputs = parse_fields(outputs, text, known)?;
    if outputs.is_empty() {
        return Err(format!("The signature `{text}` has no output field"));
    }
    for field in &outputs {
        if inputs.iter().any(|i| i.name == field.name) {
            return Err(format!(
                "The signature `{text}` reads and writes the same field `{}`",
                field.name
            ));
        }
    }
    Ok(Signature::new(inputs, outputs))
}

fn parse_fields(list: &str, text: &str, known: &[Field]) -> Result<Vec<Field>, String> {
    let mut fields: Vec<Field> = Vec::new();
    for part in list.split(',') {
        let part = part.trim();
        if part.is_empty() {
            if list.trim().is_empty() {
                continue;
            }
            return Err(format!("The signature `{text}` has an empty field name"));
        }
        let (name, ty) = match part.split_once(':') {
            Some((name, ty)) => (name.trim(), Some(parse_type(ty.trim(), text)?)),
            None => (part, None),
        };
        if !name
            .chars()
            .all(|c| c.is_alphanumeric() || c == '_' || c == '-')
        {
            return Err(format!(
                "The signature `{text}` has an invalid field name `{name}` (letters, digits, `_` and `-` only)"
            ));
        }
        if fields.iter().any(|f| f.name == name) {
            return Err(format!(
                "The signature `{text}` names the field `{name}` twice"
            ));
        }
        let field = match (ty, known.iter().find(|f| f.name == name)) {
            (Some(ty), _) => Field::new(name, ty),
            (None, Some(known)) => known.clone(),
            (None, None) => Field::text(name),
        };
        fields.push(field);
    }
    Ok(fields)
}

fn parse_type(ty: &str, text: &str) -> Result<FieldType, String> {
    Ok(match ty {
        "text" | "str" | "string" => FieldType::Text,
        "int" | "integer" => FieldType::Integer,
        "float" | "number" => FieldType::Number,
        "bool" => FieldType::Bool,
        "list" => FieldType::List,
        "json" => FieldType::Json,
        other => {
            return Err(format!(
                "The signature `{text}` has an unknown field type `{other}` (expected `text`, `int`, `float`, `bool`, `list` or `json`)"
            ))
        }
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn signatures_parse_with_types_and_known_fields() {
        let label = Field::label("label", vec!["a".into(), "b".into()]);
        let s = parse_signature(" text ,hint:json->label", std::slice::from_ref(&label))
            .unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(s.input_names(), ["text", "hint"]);
        assert_eq!(s.inputs[1].ty, FieldType::Json);
        assert_eq!(s.outputs, vec![label]);
        let s = parse_signature("-> answer", &[]).unwrap_or_else(|e| panic!("{e}"));
        assert!(s.inputs.is_empty());
    }

    #[test]
    fn bad_signatures_say_what_is_wrong() {
        for (text, needle) in [
            ("question answer", "no `->`"),
            ("question ->", "no output field"),
            ("a, , b -> c", "empty field name"),
            ("a b -> c", "invalid field name `a b`"),
            ("a, a -> c", "twice"),
            ("a -> a", "same field `a`"),
            ("a: date -> c", "unknown field type `date`"),
        ] {
            let error = parse_signature(text, &[]).expect_err(text);
            assert!(error.contains(needle), "{text}: {error}");
        }
    }

    #[test]
    fn unknown_stage_keys_are_rejected() {
        let error = serde_json::from_value::<StageSpec>(serde_json::json!({
            "name": "a", "signature": "x -> y", "instructoins": "typo"
        }))
        .expect_err("unknown key");
        assert!(error.to_string().contains("instructoins"), "{error}");
    }
}
