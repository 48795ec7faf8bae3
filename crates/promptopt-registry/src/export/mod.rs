//! Exports of a saved model for other tools and for people (`promptopt models export`).
//!
//! - [`ExportFormat::Dspy`]: the state JSON DSPy's `Module.save("x.json")` writes, which
//!   `Module.load("x.json")` reads into an equivalent program (one attribute per stage:
//!   `dspy.Predict` for a `predict` stage, `dspy.ChainOfThought` for a `chain_of_thought` one).
//! - [`ExportFormat::Messages`]: per stage, the very messages promptopt sends, with each input
//!   field `f` shown as the placeholder `{f}`.
//! - [`ExportFormat::Markdown`]: a document to read: scores, and per stage its signature,
//!   instructions, demos and rendered messages.
//!
//! Exporting never calls a model.
//!
//! ```
//! use promptopt_core::{Field, Program, Signature};
//! use promptopt_core::adapter::AdapterKind;
//! use promptopt_registry::export::{export, ExportFormat};
//! use promptopt_registry::{ModelArtifact, ModelSettings};
//!
//! let program = Program::single(Signature::new(vec![Field::text("text")], vec![Field::text("label")]));
//! let settings = ModelSettings { model: "openai/gpt-4o-mini".into(), adapter: AdapterKind::Chat, temperature: None, max_tokens: None };
//! let artifact = ModelArtifact::new("sentiment", program.clone(), program.initial_state(), settings);
//! let format: ExportFormat = "dspy".parse().unwrap();
//! let state: serde_json::Value = serde_json::from_str(&export(&artifact, format).unwrap()).unwrap();
//! assert_eq!(state["predict"]["signature"]["fields"][0]["prefix"], "Text:");
//! ```

use std::fmt::{self, Write as _};
use std::str::FromStr;
use std::sync::Arc;

use promptopt_core::adapter::{AdapterKind, REASONING_FIELD};
use promptopt_core::{
    value_to_text, Example, Field, FieldType, LmRegistry, PredictorState, Runtime, Stage, Strategy,
};
use promptopt_lm::{LmError, Message, Role, ScriptedLm, SharedLm};
use serde_json::{json, Map, Value};

use crate::{ModelArtifact, RegistryError};

/// The DSPy version whose state format [`ExportFormat::Dspy`] writes.
pub const DSPY_VERSION: &str = "3.4.1";

/// The description DSPy gives the `reasoning` field `dspy.ChainOfThought` adds.
const DSPY_REASONING_DESCRIPTION: &str = "${reasoning}";

/// What [`export`] writes.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum ExportFormat {
    /// DSPy's state JSON, for `Module.load`.
    Dspy,
    /// The messages each stage sends, as JSON.
    Messages,
    /// A Markdown document.
    Markdown,
}

impl ExportFormat {
    /// Every format, in the order they are listed.
    pub const ALL: [ExportFormat; 3] = [
        ExportFormat::Dspy,
        ExportFormat::Messages,
        ExportFormat::Markdown,
    ];

    /// The format's name (`dspy`, `messages`, `markdown`).
    pub fn name(self) -> &'static str {
        match self {
            ExportFormat::Dspy => "dspy",
            ExportFormat::Messages => "messages",
            ExportFormat::Markdown => "markdown",
        }
    }

    /// The usual file extension of the format, without the dot.
    pub fn extension(self) -> &'static str {
        match self {
            ExportFormat::Dspy | ExportFormat::Messages => "json",
            ExportFormat::Markdown => "md",
        }
    }
}

impl fmt::Display for ExportFormat {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

impl FromStr for ExportFormat {
    type Err = RegistryError;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Self::ALL
            .into_iter()
            .find(|f| f.name() == s)
            .ok_or_else(|| RegistryError::UnknownExportFormat {
                name: s.to_string(),
            })
    }
}

/// The artifact in `format`. Fails when its state lacks a stage or a stage cannot be rendered.
pub fn export(artifact: &ModelArtifact, format: ExportFormat) -> Result<String, RegistryError> {
    artifact.program.check_state(&artifact.state)?;
    match format {
        ExportFormat::Dspy => dspy(artifact),
        ExportFormat::Messages => messages(artifact),
        ExportFormat::Markdown => markdown(artifact),
    }
}

/// One stage with its learned state and how it runs.
struct StageView<'a> {
    stage: &'a Stage,
    predictor: &'a PredictorState,
    adapter: AdapterKind,
}

impl StageView<'_> {
    fn strategy(&self) -> Strategy {
        self.predictor.strategy
    }

    /// Whether the stage writes a `reasoning` field its signature does not declare.
    fn adds_reasoning(&self) -> bool {
        self.strategy() == Strategy::ChainOfThought
            && self.stage.signature.output(REASONING_FIELD).is_none()
    }

    /// The fields of the stage's demos, in order: inputs, `reasoning` for chain of thought,
    /// outputs.
    fn demo_fields(&self) -> Vec<&str> {
        let signature = &self.stage.signature;
        let mut names: Vec<&str> = signature.inputs.iter().map(|f| f.name.as_str()).collect();
        if self.adds_reasoning() {
            names.push(REASONING_FIELD);
        }
        names.extend(signature.outputs.iter().map(|f| f.name.as_str()));
        names
    }
}

fn stage_views(artifact: &ModelArtifact) -> Result<Vec<StageView<'_>>, RegistryError> {
    artifact
        .program
        .stages()
        .iter()
        .map(|stage| {
            let predictor = artifact.state.predictor(&stage.name).ok_or_else(|| {
                promptopt_core::CoreError::MissingPredictorState {
                    name: stage.name.clone(),
                }
            })?;
            Ok(StageView {
                stage,
                predictor,
                adapter: stage.adapter.unwrap_or(artifact.model.adapter),
            })
        })
        .collect()
}

fn module_name(strategy: Strategy) -> &'static str {
    match strategy {
        Strategy::Predict => "predict",
        Strategy::ChainOfThought => "chain_of_thought",
        Strategy::React => "react",
    }
}

fn pretty(value: &Value) -> Result<String, RegistryError> {
    let mut text = serde_json::to_string_pretty(value)?;
    text.push('\n');
    Ok(text)
}

// ---------------------------------------------------------------------------------------------
// DSPy

/// The key of a stage's predictor in DSPy's state: `Module.named_parameters()` names a
/// `dspy.Predict` attribute by the attribute, and the `dspy.Predict` inside a
/// `dspy.ChainOfThought` attribute `name` (its attribute `predict`) `name.predict`; a
/// `dspy.ReAct` attribute has `name.react` and `name.extract.predict`, and the stage's learned
/// state (instructions and demos, trajectories included) is its extraction's.
fn dspy_key(name: &str, strategy: Strategy) -> String {
    match strategy {
        Strategy::Predict => name.to_string(),
        Strategy::ChainOfThought => format!("{name}.predict"),
        Strategy::React => format!("{name}.extract.predict"),
    }
}

fn dspy(artifact: &ModelArtifact) -> Result<String, RegistryError> {
    let mut state = Map::new();
    for view in stage_views(artifact)? {
        state.insert(
            dspy_key(&view.stage.name, view.strategy()),
            dspy_predictor(&view),
        );
    }
    state.insert(
        "metadata".into(),
        json!({
            // Only the DSPy version: DSPy warns about each listed dependency (Python,
            // cloudpickle) whose version differs from the loader's, and an export names no
            // Python at all.
            "dependency_versions": { "dspy": DSPY_VERSION },
            "promptopt": {
                "model": artifact.id(),
                "promptopt_version": artifact.promptopt_version,
            },
        }),
    );
    pretty(&Value::Object(state))
}

/// A `dspy.Predict`'s state: `traces`, `train`, `demos`, `signature`, `lm`.
fn dspy_predictor(view: &StageView<'_>) -> Value {
    let keep = view.demo_fields();
    let demos: Vec<Value> = view
        .predictor
        .demos
        .iter()
        .map(|demo| {
            let fields: Map<String, Value> = demo
                .fields()
                .iter()
                .filter(|(name, _)| keep.contains(&name.as_str()))
                .map(|(name, value)| (name.clone(), value.clone()))
                .collect();
            Value::Object(fields)
        })
        .collect();
    let signature = &view.stage.signature;
    let mut fields: Vec<Value> = signature.inputs.iter().map(dspy_field).collect();
    if view.adds_reasoning() {
        fields.push(json!({
            "prefix": dspy_prefix(REASONING_FIELD),
            "description": DSPY_REASONING_DESCRIPTION,
        }));
    }
    fields.extend(signature.outputs.iter().map(dspy_field));
    json!({
        "traces": [],
        "train": [],
        "demos": demos,
        "signature": {
            "instructions": view.predictor.instructions,
            "fields": fields,
        },
        "lm": null,
    })
}

/// A field as DSPy's `Signature.dump_state` writes it: the prefix DSPy infers from the name,
/// and the description (DSPy's default `${name}` when there is none).
fn dspy_field(field: &Field) -> Value {
    let description = if field.description.is_empty() {
        format!("${{{}}}", field.name)
    } else {
        field.description.clone()
    };
    json!({ "prefix": dspy_prefix(&field.name), "description": description })
}

/// The prefix DSPy gives a field it has no prefix for: the name split into words at
/// underscores, before capitalized words, between lowercase letters or digits and capitals,
/// and between letters and digits; each word capitalized unless it is all capitals (an
/// acronym); then a colon. `question_text` gives `Question Text:`, `HTMLParser` `HTML Parser:`.
/// (DSPy's `infer_prefix`; digits here are ASCII digits.)
fn dspy_prefix(name: &str) -> String {
    let chars: Vec<char> = name.chars().collect();
    let lower = |c: &char| c.is_ascii_lowercase();
    // An underscore before each capital followed by lowercase letters, after any character.
    let mut words = Vec::with_capacity(chars.len() + 4);
    let mut i = 0;
    while i < chars.len() {
        words.push(chars[i]);
        let capitalized = chars[i] != '\n'
            && chars.get(i + 1).is_some_and(char::is_ascii_uppercase)
            && chars.get(i + 2).is_some_and(lower);
        if capitalized {
            let mut end = i + 3;
            while chars.get(end).is_some_and(lower) {
                end += 1;
            }
            words.push('_');
            words.extend_from_slice(&chars[i + 1..end]);
            i = end;
        } else {
            i += 1;
        }
    }
    let words = split_pairs(
        &words,
        |c| c.is_ascii_lowercase() || c.is_ascii_digit(),
        |c| c.is_ascii_uppercase(),
    );
    let words = split_pairs(&words, |c| c.is_ascii_alphabetic(), |c| c.is_ascii_digit());
    let words = split_pairs(&words, |c| c.is_ascii_digit(), |c| c.is_ascii_alphabetic());
    let text: String = words.into_iter().collect();
    let mut prefix = text
        .split('_')
        .map(|word| {
            let acronym =
                word.chars().any(char::is_uppercase) && !word.chars().any(char::is_lowercase);
            if acronym {
                return word.to_string();
            }
            let mut chars = word.chars();
            match chars.next() {
                Some(first) => first
                    .to_uppercase()
                    .chain(chars.as_str().to_lowercase().chars())
                    .collect(),
                None => String::new(),
            }
        })
        .collect::<Vec<_>>()
        .join(" ");
    prefix.push(':');
    prefix
}

/// Inserts `_` between each pair `a`, `b` with `first(a)` and `second(b)`, scanning left to
/// right without overlaps (a pair's second character starts no new pair).
fn split_pairs(
    chars: &[char],
    first: impl Fn(char) -> bool,
    second: impl Fn(char) -> bool,
) -> Vec<char> {
    let mut out = Vec::with_capacity(chars.len() + 4);
    let mut i = 0;
    while i < chars.len() {
        out.push(chars[i]);
        match chars.get(i + 1) {
            Some(&next) if first(chars[i]) && second(next) => {
                out.push('_');
                out.push(next);
                i += 2;
            }
            _ => i += 1,
        }
    }
    out
}

// ---------------------------------------------------------------------------------------------
// Messages

/// A stage's first request for placeholder inputs.
struct RenderedStage<'a> {
    view: StageView<'a>,
    model: String,
    messages: Vec<Message>,
}

/// A runtime with the artifact's settings whose model is never called: rendering only needs
/// the model resolved.
fn offline_runtime(artifact: &ModelArtifact) -> Runtime {
    let lm: SharedLm = Arc::new(ScriptedLm::new(|_| {
        Err(LmError::InvalidRequest(
            "an export renders requests and never sends them".into(),
        ))
    }));
    let lms = LmRegistry::new(artifact.model.model.clone(), lm.clone()).with_fallback(lm);
    Runtime::new(lms).with_settings(artifact.run_settings())
}

/// Each input field `f` with the value `{f}`.
fn placeholder_inputs(stage: &Stage) -> Example {
    let mut inputs = Example::new();
    for field in &stage.signature.inputs {
        inputs.insert(field.name.clone(), format!("{{{}}}", field.name));
    }
    inputs
}

fn render_stages(artifact: &ModelArtifact) -> Result<Vec<RenderedStage<'_>>, RegistryError> {
    let runtime = offline_runtime(artifact);
    stage_views(artifact)?
        .into_iter()
        .map(|view| {
            let request = artifact.program.render(
                &view.stage.name,
                &artifact.state,
                &placeholder_inputs(view.stage),
                &runtime,
            )?;
            Ok(RenderedStage {
                view,
                model: request.model,
                messages: request.messages,
            })
        })
        .collect()
}

fn messages(artifact: &ModelArtifact) -> Result<String, RegistryError> {
    let stages: Vec<Value> = render_stages(artifact)?
        .into_iter()
        .map(|rendered| {
            json!({
                "stage": rendered.view.stage.name,
                "module": module_name(rendered.view.strategy()),
                "model": rendered.model,
                "adapter": rendered.view.adapter.name(),
                "messages": rendered.messages,
            })
        })
        .collect();
    pretty(&Value::Array(stages))
}

// ---------------------------------------------------------------------------------------------
// Markdown

fn markdown(artifact: &ModelArtifact) -> Result<String, RegistryError> {
    let stages = render_stages(artifact)?;
    let mut out = String::new();
    let _ = writeln!(out, "# {}\n", artifact.id());
    let settings = &artifact.model;
    let _ = writeln!(out, "- Model: `{}`", settings.model);
    let _ = writeln!(out, "- Adapter: `{}`", settings.adapter.name());
    if let Some(temperature) = settings.temperature {
        let _ = writeln!(out, "- Temperature: {temperature}");
    }
    if let Some(max_tokens) = settings.max_tokens {
        let _ = writeln!(out, "- Max tokens: {max_tokens}");
    }
    if let Some(metric) = artifact.metric_name() {
        let _ = writeln!(out, "- Metric: `{metric}`");
    }
    for (key, label) in [
        ("baseline_score", "Baseline score"),
        ("optimized_score", "Optimized score"),
    ] {
        if let Some(score) = artifact.metrics.get(key).filter(|v| !v.is_null()) {
            let _ = writeln!(out, "- {label}: {}", value_to_text(score));
        }
    }
    let program = &artifact.program;
    let _ = writeln!(
        out,
        "- Program: `{} -> {}`",
        program.input_keys().join(", "),
        program.output_keys().join(", ")
    );
    let _ = writeln!(
        out,
        "- Saved: {} (promptopt {})",
        artifact.created_at, artifact.promptopt_version
    );
    for (position, rendered) in stages.iter().enumerate() {
        markdown_stage(&mut out, position + 1, rendered);
    }
    Ok(out)
}

fn markdown_stage(out: &mut String, position: usize, rendered: &RenderedStage<'_>) {
    let view = &rendered.view;
    let signature = &view.stage.signature;
    let _ = writeln!(out, "\n## Stage {position}: `{}`\n", view.stage.name);
    let _ = writeln!(out, "- Module: `{}`", module_name(view.strategy()));
    let _ = writeln!(
        out,
        "- Signature: `{} -> {}`",
        typed_names(&signature.inputs),
        typed_names(&signature.outputs)
    );
    let _ = writeln!(out, "- Model: `{}`", rendered.model);
    let _ = writeln!(out, "- Adapter: `{}`", view.adapter.name());
    let _ = writeln!(out, "\n### Instructions\n");
    fenced(out, &view.predictor.instructions);
    let demos = &view.predictor.demos;
    let _ = writeln!(out, "\n### Demos ({})\n", demos.len());
    if demos.is_empty() {
        out.push_str("None.\n");
    } else {
        let columns = view.demo_fields();
        let _ = writeln!(out, "| {} |", columns.join(" | "));
        let _ = writeln!(out, "|{}", " --- |".repeat(columns.len()));
        for demo in demos {
            let cells: Vec<String> = columns
                .iter()
                .map(|name| demo.get(name).map(table_cell).unwrap_or_default())
                .collect();
            let _ = writeln!(out, "| {} |", cells.join(" | "));
        }
    }
    let _ = writeln!(out, "\n### Messages");
    for message in &rendered.messages {
        let _ = writeln!(out, "\n**{}**\n", role_name(message.role));
        fenced(out, &message.content);
    }
}

/// `a, n: int`: field names, with the type for other than text and labels.
fn typed_names(fields: &[Field]) -> String {
    fields
        .iter()
        .map(|field| match field.ty {
            FieldType::Text | FieldType::Label { .. } => field.name.clone(),
            FieldType::Integer => format!("{}: int", field.name),
            FieldType::Number => format!("{}: float", field.name),
            FieldType::Bool => format!("{}: bool", field.name),
            FieldType::List => format!("{}: list", field.name),
            FieldType::Json => format!("{}: json", field.name),
        })
        .collect::<Vec<_>>()
        .join(", ")
}

fn role_name(role: Role) -> &'static str {
    match role {
        Role::System => "system",
        Role::User => "user",
        Role::Assistant => "assistant",
    }
}

/// A value in one table cell: pipes escaped, line breaks as `<br>`.
fn table_cell(value: &Value) -> String {
    value_to_text(value)
        .replace('|', "\\|")
        .replace("\r\n", "<br>")
        .replace('\n', "<br>")
}

/// `text` verbatim in a fenced block whose fence is longer than any backtick run in it.
fn fenced(out: &mut String, text: &str) {
    let mut longest = 0;
    let mut run = 0;
    for c in text.chars() {
        run = if c == '`' { run + 1 } else { 0 };
        longest = longest.max(run);
    }
    let fence = "`".repeat((longest + 1).max(3));
    let _ = write!(out, "{fence}text\n{text}");
    if !text.ends_with('\n') {
        out.push('\n');
    }
    let _ = writeln!(out, "{fence}");
}

#[cfg(test)]
mod tests;
