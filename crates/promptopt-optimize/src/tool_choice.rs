//! The `tool_selection` target: which tools each `react` stage is offered and how each tool is
//! described to it.
//!
//! Both live in the stage's [`PredictorState`] (`tools`, `tool_descriptions`), so a choice is
//! saved with the model and `predict` offers the same tools with the same descriptions. MIPROv2
//! searches the subsets of a stage's tools (all of them for up to [`MAX_EXHAUSTIVE_TOOLS`]
//! tools; else every tool alone, every tool left out and all of them) crossed with the tools'
//! own descriptions and descriptions the prompt model rewrote; GEPA's reflection, after
//! rewriting a stage's instructions, reads the same trajectories and may rewrite the
//! description of a tool that was misused or hide a tool that misled the stage. A reply that
//! names no tool, or would hide every tool, is discarded (and counted), never applied.

use std::collections::{BTreeMap, BTreeSet};

use promptopt_core::{PredictorState, Strategy};
use promptopt_lm::Message;
use serde_json::Value;

use crate::{OptimizeContext, OptimizeError};

/// Up to this many tools, MIPROv2 tries every non-empty subset.
pub const MAX_EXHAUSTIVE_TOOLS: usize = 4;
/// The longest description accepted from the prompt model, in characters.
pub const MAX_DESCRIPTION_CHARS: usize = 400;
/// The word that hides a tool in a reply.
pub const UNUSED: &str = "UNUSED";

/// One tool as a stage sees it.
#[derive(Debug, Clone, PartialEq)]
pub struct ToolInfo {
    /// Its name.
    pub name: String,
    /// Its own description.
    pub description: String,
    /// The JSON schema of its arguments.
    pub parameters: Value,
}

/// A `react` stage and the tools it declares.
#[derive(Debug, Clone, PartialEq)]
pub struct AgentStage {
    /// The predictor (the stage's name).
    pub predictor: String,
    /// The tools the stage declares, in order.
    pub tools: Vec<ToolInfo>,
}

impl AgentStage {
    /// The tools `predictor` offers: those its state names, else all the stage declares.
    pub fn offered(&self, predictor: &PredictorState) -> Vec<String> {
        if predictor.tools.is_empty() {
            self.tools.iter().map(|t| t.name.clone()).collect()
        } else {
            predictor.tools.clone()
        }
    }

    /// The description `predictor` shows for `tool`.
    pub fn description<'a>(&'a self, predictor: &'a PredictorState, tool: &'a ToolInfo) -> &'a str {
        predictor
            .tool_descriptions
            .get(&tool.name)
            .map_or(tool.description.as_str(), String::as_str)
    }
}

/// The program's `react` stages with their tools (empty when it has none).
pub async fn agent_stages(ctx: &OptimizeContext) -> Result<Vec<AgentStage>, OptimizeError> {
    let stages: Vec<_> = ctx
        .predictors()
        .into_iter()
        .filter(|s| s.module == Strategy::React)
        .collect();
    if stages.is_empty() {
        return Ok(Vec::new());
    }
    let Some(toolbox) = ctx.runtime().toolbox().await? else {
        return Ok(Vec::new());
    };
    Ok(stages
        .into_iter()
        .map(|stage| AgentStage {
            tools: stage
                .tools
                .iter()
                .filter_map(|name| toolbox.get(name))
                .map(|tool| ToolInfo {
                    name: tool.name().to_string(),
                    description: tool.description().to_string(),
                    parameters: tool.parameters().clone(),
                })
                .collect(),
            predictor: stage.name,
        })
        .collect())
}

/// A change to a stage's tools: new descriptions, and tools no longer offered.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct ToolEdit {
    /// New descriptions, by tool.
    pub descriptions: BTreeMap<String, String>,
    /// Tools to hide.
    pub hidden: BTreeSet<String>,
}

impl ToolEdit {
    /// Whether it changes nothing.
    pub fn is_empty(&self) -> bool {
        self.descriptions.is_empty() && self.hidden.is_empty()
    }

    /// Applies the edit to `predictor`, a state of `stage`.
    pub fn apply(&self, stage: &AgentStage, predictor: &mut PredictorState) {
        if !self.hidden.is_empty() {
            predictor.tools = stage
                .offered(predictor)
                .into_iter()
                .filter(|t| !self.hidden.contains(t))
                .collect();
        }
        for (tool, description) in &self.descriptions {
            predictor
                .tool_descriptions
                .insert(tool.clone(), description.clone());
        }
    }

    /// A short description, e.g. `described: search; hidden: lookup`.
    pub fn describe(&self) -> String {
        let mut parts = Vec::new();
        if !self.descriptions.is_empty() {
            let names: Vec<&str> = self.descriptions.keys().map(String::as_str).collect();
            parts.push(format!("described: {}", names.join(", ")));
        }
        if !self.hidden.is_empty() {
            let names: Vec<&str> = self.hidden.iter().map(String::as_str).collect();
            parts.push(format!("hidden: {}", names.join(", ")));
        }
        parts.join("; ")
    }
}

/// The prompt asking the prompt model to describe (or hide) `stage`'s tools, given `evidence`:
/// how the stage used them (a reflection's examples) or inputs it will get (a proposal).
pub fn tool_messages(
    stage: &AgentStage,
    predictor: &PredictorState,
    evidence: &str,
) -> Vec<Message> {
    let system = "You are an expert prompt engineer. An agent step of a language-model program \
chooses tools by their descriptions; you rewrite the descriptions so it chooses the right tool \
with the right arguments.";
    let offered = stage.offered(predictor);
    let mut tools = String::new();
    for tool in stage.tools.iter().filter(|t| offered.contains(&t.name)) {
        tools.push_str(&format!(
            "- {}: {} (arguments: {})\n",
            tool.name,
            stage.description(predictor, tool).trim(),
            tool.parameters
        ));
    }
    let user = format!(
        "The step `{}` works under these instructions:\n\n```\n{}\n```\n\nIt is offered these tools:\n{tools}\n{}\n\nFor each tool, write one line `NAME: DESCRIPTION` with a clear, concrete description of \
what the tool does and when to use it (one or two sentences), or `NAME: {UNUSED}` for a tool \
that only misleads the step. Answer with these lines only, inside a single block fenced with ```.",
        stage.predictor,
        predictor.instructions.trim(),
        evidence.trim()
    );
    vec![Message::system(system), Message::user(user)]
}

/// Reads a reply to [`tool_messages`]: the lines naming one of the offered tools. `Err` says why
/// the reply is discarded: it names no offered tool, or it would hide all of them.
pub fn parse_tool_reply(
    reply: &str,
    stage: &AgentStage,
    predictor: &PredictorState,
) -> Result<ToolEdit, String> {
    let body = match (reply.find("```"), reply.rfind("```")) {
        (Some(open), Some(close)) if close > open => {
            let inner = &reply[open + 3..close];
            // A language tag on the opening line is dropped.
            match inner.find('\n') {
                Some(nl) if !inner[..nl].contains(':') => &inner[nl + 1..],
                _ => inner,
            }
        }
        _ => reply,
    };
    let offered = stage.offered(predictor);
    let mut edit = ToolEdit::default();
    let mut named = 0;
    for line in body.lines() {
        let line = line
            .trim()
            .trim_start_matches(|c: char| c == '-' || c == '*' || c.is_ascii_digit() || c == '.')
            .trim();
        let Some((name, rest)) = line.split_once(':') else {
            continue;
        };
        let name = name
            .trim()
            .trim_matches(|c| c == '`' || c == '"' || c == '*');
        let Some(tool) = stage
            .tools
            .iter()
            .find(|t| t.name == name && offered.contains(&t.name))
        else {
            continue;
        };
        named += 1;
        let text = rest.trim().trim_matches('`').trim();
        if text.trim_end_matches('.').eq_ignore_ascii_case(UNUSED) {
            edit.hidden.insert(tool.name.clone());
            continue;
        }
        let words = text.split_whitespace().count();
        if words < 3 || text.chars().count() > MAX_DESCRIPTION_CHARS {
            continue;
        }
        if text != stage.description(predictor, tool) {
            edit.descriptions
                .insert(tool.name.clone(), text.to_string());
        }
    }
    if named == 0 {
        return Err("the reply names none of the tools".into());
    }
    if offered.iter().all(|t| edit.hidden.contains(t)) {
        return Err("the reply would hide every tool".into());
    }
    Ok(edit)
}

/// The subsets of `names` MIPROv2 tries, all of them first: every non-empty subset for up to
/// [`MAX_EXHAUSTIVE_TOOLS`] tools; else every tool left out, then every tool alone.
pub fn subsets(names: &[String]) -> Vec<Vec<String>> {
    let n = names.len();
    let mut out = vec![names.to_vec()];
    if n <= 1 {
        return out;
    }
    if n <= MAX_EXHAUSTIVE_TOOLS {
        let full = (1u32 << n) - 1;
        for mask in (1..full).rev() {
            out.push(
                names
                    .iter()
                    .enumerate()
                    .filter(|(i, _)| mask & (1 << i) != 0)
                    .map(|(_, t)| t.clone())
                    .collect(),
            );
        }
        return out;
    }
    for left_out in names {
        out.push(names.iter().filter(|t| *t != left_out).cloned().collect());
    }
    for alone in names {
        out.push(vec![alone.clone()]);
    }
    out
}

/// One way of offering a stage's tools: which, and with which descriptions.
#[derive(Debug, Clone, PartialEq)]
pub struct ToolChoice {
    /// The tools offered.
    pub tools: Vec<String>,
    /// Descriptions replacing the tools' own.
    pub descriptions: BTreeMap<String, String>,
}

impl ToolChoice {
    /// Sets `predictor`'s tools and descriptions to this choice.
    pub fn apply(&self, predictor: &mut PredictorState) {
        predictor.tools = self.tools.clone();
        predictor.tool_descriptions = self.descriptions.clone();
    }

    /// A short description, e.g. `tools add, capital (rewritten descriptions)`.
    pub fn describe(&self) -> String {
        format!(
            "tools {}{}",
            self.tools.join(", "),
            if self.descriptions.is_empty() {
                ""
            } else {
                " (rewritten descriptions)"
            }
        )
    }
}

/// MIPROv2's choices for `stage`: every subset with the tools' own descriptions, then (when
/// some were rewritten) every subset with the rewritten ones. Index 0 is the stage as declared.
pub fn choices(stage: &AgentStage, rewritten: &BTreeMap<String, String>) -> Vec<ToolChoice> {
    let names: Vec<String> = stage.tools.iter().map(|t| t.name.clone()).collect();
    let sets = subsets(&names);
    let mut out: Vec<ToolChoice> = sets
        .iter()
        .map(|tools| ToolChoice {
            tools: tools.clone(),
            descriptions: BTreeMap::new(),
        })
        .collect();
    if !rewritten.is_empty() {
        out.extend(sets.iter().map(|tools| {
            ToolChoice {
                tools: tools.clone(),
                descriptions: rewritten
                    .iter()
                    .filter(|(t, _)| tools.contains(t))
                    .map(|(t, d)| (t.clone(), d.clone()))
                    .collect(),
            }
        }));
    }
    out
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use serde_json::json;

    use super::*;

    fn stage() -> AgentStage {
        let tool = |name: &str, description: &str| ToolInfo {
            name: name.into(),
            description: description.into(),
            parameters: json!({"type": "object"}),
        };
        AgentStage {
            predictor: "solve".into(),
            tools: vec![
                tool("calculator", "Evaluates arithmetic."),
                tool("weather", "Today's weather."),
                tool("lookup", "Looks things up."),
            ],
        }
    }

    fn names(list: &[&str]) -> Vec<String> {
        list.iter().map(|s| s.to_string()).collect()
    }

    #[test]
    fn subsets_start_with_all_tools_and_stay_bounded() {
        assert_eq!(subsets(&names(&["a"])), [names(&["a"])]);
        let three = subsets(&names(&["a", "b", "c"]));
        assert_eq!(three.len(), 7);
        assert_eq!(three[0], names(&["a", "b", "c"]));
        let distinct: BTreeSet<_> = three.iter().collect();
        assert_eq!(distinct.len(), 7);
        assert!(three.iter().all(|s| !s.is_empty()));
        let six = subsets(&names(&["a", "b", "c", "d", "e", "f"]));
        assert_eq!(six.len(), 1 + 6 + 6);
        assert_eq!(six[1], names(&["b", "c", "d", "e", "f"]));
        assert_eq!(six[12], names(&["f"]));
    }

    #[test]
    fn replies_describe_and_hide_offered_tools_and_bad_ones_are_discarded() {
        let stage = stage();
        let predictor = PredictorState::new("Solve it.");
        let reply = "Here you go:\n```text\n- `calculator`: Computes an arithmetic expression such as 12 * (3 + 4); use it for every sum.\nweather: UNUSED\nlookup: ok\nshell: Runs commands on the host.\n```";
        let edit = parse_tool_reply(reply, &stage, &predictor).unwrap();
        assert_eq!(
            edit.descriptions.get("calculator").map(String::as_str),
            Some("Computes an arithmetic expression such as 12 * (3 + 4); use it for every sum.")
        );
        // Too short to be a description; an unknown tool is ignored.
        assert_eq!(edit.descriptions.len(), 1);
        assert_eq!(edit.hidden, BTreeSet::from(["weather".to_string()]));
        assert_eq!(edit.describe(), "described: calculator; hidden: weather");
        let mut state = predictor.clone();
        edit.apply(&stage, &mut state);
        assert_eq!(state.tools, names(&["calculator", "lookup"]));
        assert!(state.tool_descriptions["calculator"].starts_with("Computes"));
        // Hidden tools are not offered again, so a later reply cannot name them.
        let again = parse_tool_reply("weather: Gives the forecast for a city.", &stage, &state);
        assert_eq!(again.unwrap_err(), "the reply names none of the tools");
        let all = "calculator: UNUSED\nweather: unused.\nlookup: UNUSED";
        assert_eq!(
            parse_tool_reply(all, &stage, &predictor).unwrap_err(),
            "the reply would hide every tool"
        );
        assert!(parse_tool_reply("I think the tools are fine.", &stage, &predictor).is_err());
        let long = format!("calculator: {}", "word ".repeat(200));
        assert!(parse_tool_reply(&long, &stage, &predictor)
            .unwrap()
            .is_empty());
    }

    #[test]
    fn choices_cross_subsets_with_rewritten_descriptions() {
        let stage = stage();
        assert_eq!(choices(&stage, &BTreeMap::new()).len(), 7);
        let rewritten = BTreeMap::from([(
            "calculator".to_string(),
            "Computes arithmetic exactly.".to_string(),
        )]);
        let all = choices(&stage, &rewritten);
        assert_eq!(all.len(), 14);
        assert_eq!(all[0].tools, names(&["calculator", "weather", "lookup"]));
        assert!(all[0].descriptions.is_empty());
        assert_eq!(all[7].descriptions, rewritten);
        // A subset without the calculator carries no description for it.
        assert!(all
            .iter()
            .filter(|c| !c.tools.contains(&"calculator".to_string()))
            .all(|c| c.descriptions.is_empty()));
        let mut state = PredictorState::new("Solve it.");
        all[7].apply(&mut state);
        assert_eq!(state.tool_descriptions, rewritten);
        assert_eq!(
            all[7].describe(),
            "tools calculator, weather, lookup (rewritten descriptions)"
        );
        let offered = stage.offered(&state);
        assert_eq!(offered, names(&["calculator", "weather", "lookup"]));
        let prompt = tool_messages(&stage, &state, "Inputs: 2 + 2");
        assert!(prompt[1]
            .content
            .contains("- calculator: Computes arithmetic exactly."));
        assert!(prompt[1].content.contains("Inputs: 2 + 2"));
    }
}
