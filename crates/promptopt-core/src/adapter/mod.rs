//! Adapters: how a predictor becomes a model request and how the reply becomes fields again.
//!
//! Four formats:
//!
//! - [`TurnsAdapter`]: compact chat turns (`Field Name: value` lines, bare values for a single
//!   output), a short system message; the format small local models follow best.
//! - [`ChatAdapter`]: field markers (`[[ ## name ## ]]`), a system message describing the fields
//!   and the task, demos as user/assistant turns, the current inputs as the last user turn.
//! - [`JsonAdapter`]: the same system message, replies as one JSON object (structured output when
//!   the model supports a JSON schema).
//! - [`CompletionAdapter`]: one plain prompt text for base models, demos inline as `Field: value`
//!   blocks, ending at the first output prefix.
//!
//! Parsing is tolerant (see [`Adapter::parse`]); a reply that cannot be parsed is a
//! [`ParseFailure`] that keeps the raw text.

use std::fmt::Write as _;

use promptopt_lm::{Message, ResponseFormat};
use serde::{Deserialize, Serialize};

use crate::{Example, Field, FieldType, PredictorState, Signature, Strategy};

mod chat;
mod completion;
mod json;
mod turns;
pub(crate) mod value;

pub use chat::ChatAdapter;
pub use completion::CompletionAdapter;
pub use json::JsonAdapter;
pub use turns::TurnsAdapter;

/// The name of the field chain of thought adds before the outputs.
pub const REASONING_FIELD: &str = "reasoning";

/// What an adapter produced for one predictor call: the parts of a chat request it decides.
#[derive(Debug, Clone, PartialEq)]
pub struct Rendered {
    /// The conversation.
    pub messages: Vec<Message>,
    /// Structured output, when the adapter asks for it.
    pub response_format: Option<ResponseFormat>,
    /// Strings that end generation.
    pub stop: Vec<String>,
}

#[cfg(test)]
impl Rendered {
    /// The messages as one text, each under a `--- Role ---` line, for snapshot tests.
    pub(crate) fn transcript(&self) -> String {
        self.messages
            .iter()
            .map(|m| format!("--- {:?} ---\n{}", m.role, m.content))
            .collect::<Vec<_>>()
            .join("\n")
    }
}

/// Why a reply could not be turned into the output fields.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, thiserror::Error)]
#[error("{message}")]
pub struct ParseFailure {
    /// What was wrong, naming the field.
    pub message: String,
}

impl ParseFailure {
    /// A failure with this message.
    pub fn new(message: impl Into<String>) -> Self {
        Self {
            message: message.into(),
        }
    }
}

/// Renders a predictor into messages and parses replies back into fields.
pub trait Adapter: Send + Sync {
    /// The messages (and request options) for one call: `signature` gives the fields, `predictor`
    /// the instructions, demos and strategy, `inputs` the current input fields.
    fn render(
        &self,
        signature: &Signature,
        predictor: &PredictorState,
        inputs: &Example,
    ) -> Rendered;

    /// The output fields (with `reasoning` for chain of thought) read from a reply.
    ///
    /// Tolerant: a label is matched to the allowed values (case and punctuation ignored, also
    /// inside a sentence), numbers are extracted from text, booleans read from yes/no/true/false;
    /// for a single output field, a reply without structure is taken as that field's value; a
    /// missing `reasoning` is empty.
    fn parse(
        &self,
        signature: &Signature,
        strategy: Strategy,
        reply: &str,
    ) -> Result<Example, ParseFailure>;
}

/// Which adapter a run uses.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum AdapterKind {
    /// [`ChatAdapter`].
    #[default]
    Chat,
    /// [`JsonAdapter`].
    Json,
    /// [`CompletionAdapter`].
    Completion,
    /// [`TurnsAdapter`].
    Turns,
}

impl AdapterKind {
    /// Every kind, in the order the CLI lists them.
    pub const ALL: [AdapterKind; 4] = [
        AdapterKind::Chat,
        AdapterKind::Json,
        AdapterKind::Completion,
        AdapterKind::Turns,
    ];

    /// The name used in request files and flags.
    pub fn name(self) -> &'static str {
        match self {
            AdapterKind::Chat => "chat",
            AdapterKind::Json => "json",
            AdapterKind::Completion => "completion",
            AdapterKind::Turns => "turns",
        }
    }

    /// The adapter a run uses when none is named: [`AdapterKind::Turns`] for the embedded models
    /// (`local/...`), whose replies follow compact turns and fall apart on field markers, and
    /// [`AdapterKind::Chat`] for every other provider.
    pub fn default_for_model(model: &str) -> Self {
        if model.starts_with("local/") {
            AdapterKind::Turns
        } else {
            AdapterKind::Chat
        }
    }

    /// The kind of this name.
    pub fn from_name(name: &str) -> Option<Self> {
        Self::ALL.into_iter().find(|k| k.name() == name)
    }
}

/// The output fields a predictor produces under a strategy: chain of thought puts `reasoning`
/// first (unless the signature already has such a field).
pub fn output_fields(signature: &Signature, strategy: Strategy) -> Vec<&Field> {
    let mut fields: Vec<&Field> = Vec::with_capacity(signature.outputs.len() + 1);
    if strategy == Strategy::ChainOfThought && signature.output(REASONING_FIELD).is_none() {
        fields.push(reasoning_field());
    }
    fields.extend(signature.outputs.iter());
    fields
}

fn reasoning_field() -> &'static Field {
    static FIELD: std::sync::OnceLock<Field> = std::sync::OnceLock::new();
    FIELD.get_or_init(|| {
        Field::text(REASONING_FIELD)
            .describe("Think the problem through step by step before answering.")
    })
}

/// `question_text` → `Question Text`: the prefix the completion adapter writes before a value.
pub(crate) fn title_case(name: &str) -> String {
    let mut out = String::with_capacity(name.len());
    let mut upper = true;
    for c in name.chars() {
        if c == '_' || c == '-' || c == ' ' {
            if !out.is_empty() && !out.ends_with(' ') {
                out.push(' ');
            }
            upper = true;
        } else if upper {
            out.extend(c.to_uppercase());
            upper = false;
        } else {
            out.push(c);
        }
    }
    out
}

/// A short type name for the field list of the system message.
pub(crate) fn type_name(ty: &FieldType) -> String {
    match ty {
        FieldType::Text => "text".to_string(),
        FieldType::Label { allowed } => format!("one of: {}", allowed.join(", ")),
        FieldType::Integer => "integer".to_string(),
        FieldType::Number => "number".to_string(),
        FieldType::Bool => "true or false".to_string(),
        FieldType::List => "list of strings".to_string(),
        FieldType::Json => "JSON".to_string(),
    }
}

/// What an output value must look like, or `None` for free text.
pub(crate) fn value_rule(ty: &FieldType) -> Option<String> {
    match ty {
        FieldType::Text => None,
        FieldType::Label { allowed } => Some(format!("exactly one of: {}", allowed.join("; "))),
        FieldType::Integer => Some("a single whole number".to_string()),
        FieldType::Number => Some("a single number".to_string()),
        FieldType::Bool => Some("`true` or `false`".to_string()),
        FieldType::List => Some("a JSON array of strings".to_string()),
        FieldType::Json => Some("valid JSON".to_string()),
    }
}

/// The numbered field lists that open the system message of the chat and JSON adapters.
pub(crate) fn describe_fields(out: &mut String, signature: &Signature, outputs: &[&Field]) {
    out.push_str("Input fields:\n");
    for (i, field) in signature.inputs.iter().enumerate() {
        describe_field(out, i + 1, field);
    }
    out.push_str("Output fields:\n");
    for (i, field) in outputs.iter().enumerate() {
        describe_field(out, i + 1, field);
    }
}

fn describe_field(out: &mut String, index: usize, field: &Field) {
    let _ = write!(out, "{index}. `{}` ({})", field.name, type_name(&field.ty));
    if !field.description.is_empty() {
        let _ = write!(out, ": {}", field.description);
    }
    out.push('\n');
}

/// Renders a value for a prompt: strings verbatim, null as nothing, everything else as compact
/// JSON.
pub(crate) fn format_value(out: &mut String, value: &serde_json::Value) {
    match value {
        serde_json::Value::String(s) => out.push_str(s),
        serde_json::Value::Null => {}
        other => {
            let _ = write!(out, "{other}");
        }
    }
}

/// Whether a demo can be shown: it has at least one input and one output field.
pub(crate) fn usable_demo(signature: &Signature, outputs: &[&Field], demo: &Example) -> bool {
    signature.inputs.iter().any(|f| demo.contains(&f.name))
        && outputs.iter().any(|f| demo.contains(&f.name))
}

/// Parses the sections of a reply keyed by field name into typed values: missing `reasoning` is
/// empty, any other missing output field is a failure.
pub(crate) fn collect_outputs(
    outputs: &[&Field],
    mut section: impl FnMut(&str) -> Option<String>,
) -> Result<Example, ParseFailure> {
    let mut parsed = Example::new();
    let mut missing = Vec::new();
    for field in outputs {
        match section(&field.name) {
            Some(text) => match value::parse_text(field, &text) {
                Ok(v) => parsed.insert(field.name.clone(), v),
                Err(why) => {
                    return Err(ParseFailure::new(format!("Field `{}`: {why}", field.name)))
                }
            },
            None if field.name == REASONING_FIELD => {
                parsed.insert(REASONING_FIELD, String::new());
            }
            None => missing.push(format!("`{}`", field.name)),
        }
    }
    if missing.is_empty() {
        Ok(parsed)
    } else {
        Err(ParseFailure::new(format!(
            "The reply has no value for {}",
            missing.join(", ")
        )))
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]

    use super::*;

    #[test]
    fn cot_adds_reasoning_first() {
        let s = Signature::new(vec![Field::text("q")], vec![Field::text("a")]);
        let names: Vec<&str> = output_fields(&s, Strategy::ChainOfThought)
            .iter()
            .map(|f| f.name.as_str())
            .collect();
        assert_eq!(names, ["reasoning", "a"]);
        assert_eq!(output_fields(&s, Strategy::Predict).len(), 1);
    }

    #[test]
    fn names_become_title_case_prefixes() {
        assert_eq!(title_case("question_text"), "Question Text");
        assert_eq!(title_case("label"), "Label");
        assert_eq!(AdapterKind::from_name("json"), Some(AdapterKind::Json));
        assert_eq!(AdapterKind::from_name("xml"), None);
        assert_eq!(AdapterKind::from_name("turns"), Some(AdapterKind::Turns));
        assert_eq!(
            AdapterKind::default_for_model("local/smollm2-135m"),
            AdapterKind::Turns
        );
        assert_eq!(
            AdapterKind::default_for_model("openai/gpt-4o-mini"),
            AdapterKind::Chat
        );
    }
}
