//! The chat adapter: fields delimited by `[[ ## name ## ]]` markers.

use promptopt_lm::Message;

use super::{
    collect_outputs, describe_fields, format_value, output_fields, usable_demo, value_rule,
    Adapter, ParseFailure, Rendered,
};
use crate::{Example, Field, PredictorState, Signature, Strategy};

/// The marker that ends a reply.
const COMPLETED: &str = "[[ ## completed ## ]]";

/// Renders fields between `[[ ## name ## ]]` markers.
///
/// Messages: a system message (the fields, the layout of an exchange, the instructions), then
/// each demo as a user turn (its inputs) and an assistant turn (its outputs), then the current
/// inputs as the last user turn, which ends with a reminder of the output fields to write.
/// Small models follow demos given as turns far better than demos pasted into one message.
#[derive(Debug, Clone, Copy, Default)]
pub struct ChatAdapter;

impl ChatAdapter {
    /// The system message.
    pub(crate) fn system(
        signature: &Signature,
        predictor: &PredictorState,
        outputs: &[&Field],
    ) -> String {
        let mut out = String::with_capacity(512 + predictor.instructions.len());
        describe_fields(&mut out, signature, outputs);
        out.push_str(
            "\nEvery exchange is laid out as below, each placeholder replaced by the field's value:\n\n",
        );
        for field in &signature.inputs {
            push_marker(&mut out, &field.name);
            out.push('{');
            out.push_str(&field.name);
            out.push_str("}\n\n");
        }
        let plain = is_plain(outputs);
        for field in outputs {
            if !plain {
                push_marker(&mut out, &field.name);
            }
            out.push('{');
            out.push_str(&field.name);
            out.push('}');
            if let Some(rule) = value_rule(&field.ty) {
                out.push_str("    (");
                out.push_str(&rule);
                out.push(')');
            }
            out.push_str("\n\n");
        }
        if !plain {
            out.push_str(COMPLETED);
            out.push_str("\n\n");
        }
        out.push_str("Your task:\n");
        out.push_str(predictor.instructions.trim());
        out
    }

    /// The input blocks of a user turn.
    pub(crate) fn inputs_block(out: &mut String, signature: &Signature, inputs: &Example) {
        let mut first = true;
        for field in &signature.inputs {
            if let Some(value) = inputs.get(&field.name) {
                if !first {
                    out.push_str("\n\n");
                }
                first = false;
                push_marker(out, &field.name);
                format_value(out, value);
            }
        }
    }

    fn outputs_block(outputs: &[&Field], demo: &Example) -> String {
        let mut out = String::with_capacity(128);
        if let ([field], true) = (outputs, is_plain(outputs)) {
            if let Some(value) = demo.get(&field.name) {
                format_value(&mut out, value);
            }
            return out;
        }
        for field in outputs {
            if let Some(value) = demo.get(&field.name) {
                push_marker(&mut out, &field.name);
                format_value(&mut out, value);
                out.push_str("\n\n");
            }
        }
        out.push_str(COMPLETED);
        out
    }

    fn reminder(out: &mut String, outputs: &[&Field]) {
        if let ([field], true) = (outputs, is_plain(outputs)) {
            out.push_str("\n\nAnswer with the value of `");
            out.push_str(&field.name);
            out.push_str("` only");
            if let Some(rule) = value_rule(&field.ty) {
                out.push_str(" (");
                out.push_str(&rule);
                out.push(')');
            }
            out.push('.');
            return;
        }
        out.push_str("\n\nAnswer with ");
        for (i, field) in outputs.iter().enumerate() {
            if i > 0 {
                out.push_str(", then ");
            }
            out.push('`');
            push_marker_inline(out, &field.name);
            out.push('`');
            if let Some(rule) = value_rule(&field.ty) {
                out.push_str(" (");
                out.push_str(&rule);
                out.push(')');
            }
        }
        out.push_str(", and end with `");
        out.push_str(COMPLETED);
        out.push_str("`.");
    }
}

/// Whether the reply is a single output field, written as its bare value: demos' assistant turns
/// hold only the value and no markers are asked for. Tiny local models copy a bare-value demo
/// reliably but tend to answer marker-formatted demos with the closing marker alone (measured on
/// SST-2 with SmolLM2-135M: every reply was `[[ ## completed ## ]]`). Replies with markers are
/// still parsed.
fn is_plain(outputs: &[&Field]) -> bool {
    outputs.len() == 1
}

fn push_marker(out: &mut String, name: &str) {
    push_marker_inline(out, name);
    out.push('\n');
}

fn push_marker_inline(out: &mut String, name: &str) {
    out.push_str("[[ ## ");
    out.push_str(name);
    out.push_str(" ## ]]");
}

impl Adapter for ChatAdapter {
    fn render(
        &self,
        signature: &Signature,
        predictor: &PredictorState,
        inputs: &Example,
    ) -> Rendered {
        let outputs = output_fields(signature, predictor.strategy);
        let mut messages = Vec::with_capacity(2 + 2 * predictor.demos.len());
        messages.push(Message::system(Self::system(
            signature, predictor, &outputs,
        )));
        for demo in &predictor.demos {
            if !usable_demo(signature, &outputs, demo) {
                continue;
            }
            let mut user = String::with_capacity(256);
            Self::inputs_block(&mut user, signature, demo);
            messages.push(Message::user(user));
            messages.push(Message::assistant(Self::outputs_block(&outputs, demo)));
        }
        let mut user = String::with_capacity(512);
        Self::inputs_block(&mut user, signature, inputs);
        Self::reminder(&mut user, &outputs);
        messages.push(Message::user(user));
        Rendered {
            messages,
            response_format: None,
            stop: Vec::new(),
        }
    }

    fn parse(
        &self,
        signature: &Signature,
        strategy: Strategy,
        reply: &str,
    ) -> Result<Example, ParseFailure> {
        let outputs = output_fields(signature, strategy);
        let sections = split_sections(reply);
        if sections.is_empty() {
            if let [only] = outputs.as_slice() {
                let text = strip_field_prefix(reply.trim(), &only.name);
                return collect_outputs(&outputs, |_| Some(text.to_string()));
            }
            return Err(ParseFailure::new(
                "The reply has no `[[ ## field ## ]]` markers",
            ));
        }
        collect_outputs(&outputs, |name| {
            sections
                .iter()
                .find(|(section, _)| section.eq_ignore_ascii_case(name))
                .map(|(_, text)| text.clone())
        })
    }
}

/// The reply's sections in order: (field name, text up to the next marker), from
/// `[[ ## name ## ]]` markers at the start of a line (text after a marker on its line is kept).
/// When a field appears twice the first section is kept by the lookup.
pub(crate) fn split_sections(reply: &str) -> Vec<(String, String)> {
    let mut sections: Vec<(String, String)> = Vec::new();
    for line in reply.lines() {
        let trimmed = line.trim_start();
        if let Some((name, rest)) = marker(trimmed) {
            sections.push((name.to_string(), rest.trim_start().to_string()));
            continue;
        }
        if let Some((_, text)) = sections.last_mut() {
            if !text.is_empty() {
                text.push('\n');
            }
            text.push_str(line);
        }
    }
    for (_, text) in &mut sections {
        let trimmed = text.trim();
        if trimmed.len() != text.len() {
            *text = trimmed.to_string();
        }
    }
    sections
}

/// `[[ ## name ## ]] rest` → (`name`, `rest`).
fn marker(line: &str) -> Option<(&str, &str)> {
    let inner = line.strip_prefix("[[")?.trim_start().strip_prefix("##")?;
    let end = inner.find("##")?;
    let name = inner[..end].trim();
    let rest = inner[end + 2..].trim_start().strip_prefix("]]")?;
    if name.is_empty() || !name.chars().all(|c| c.is_alphanumeric() || c == '_') {
        return None;
    }
    Some((name, rest))
}

/// Drops a leading `name:` (any case, underscores as spaces) from a bare reply.
pub(crate) fn strip_field_prefix<'a>(text: &'a str, name: &str) -> &'a str {
    let Some((head, rest)) = text.split_once(':') else {
        return text;
    };
    let head = head.trim();
    let spaced = name.replace('_', " ");
    if head.eq_ignore_ascii_case(name) || head.eq_ignore_ascii_case(&spaced) {
        rest.trim_start()
    } else {
        text
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]

    use serde_json::json;

    use super::*;
    use crate::FieldType;

    fn sentiment() -> Signature {
        Signature::new(
            vec![Field::text("text").describe("A movie review.")],
            vec![Field::label(
                "label",
                vec!["positive".to_string(), "negative".to_string()],
            )],
        )
        .with_instructions("Classify the sentiment of the review.")
    }

    fn state_with_demos(strategy: Strategy) -> PredictorState {
        let mut state = PredictorState::new("Classify the sentiment of the review.");
        state.strategy = strategy;
        state.demos = vec![
            Example::new()
                .with("text", "A delight from start to finish.")
                .with("label", "positive"),
            Example::new()
                .with("text", "Two hours I will never get back.")
                .with("label", "negative")
                .with("reasoning", "The reviewer regrets the time spent."),
            // Unusable: no output field.
            Example::new().with("text", "Only an input."),
        ];
        state
    }

    #[test]
    fn renders_demos_as_turns_with_a_label_field() {
        let rendered = ChatAdapter.render(
            &sentiment(),
            &state_with_demos(Strategy::Predict),
            &Example::new()
                .with("text", "Not bad at all.")
                .with("label", "positive"),
        );
        assert_eq!(rendered.messages.len(), 6);
        insta::assert_snapshot!(rendered.transcript());
    }

    #[test]
    fn renders_chain_of_thought() {
        let rendered = ChatAdapter.render(
            &sentiment(),
            &state_with_demos(Strategy::ChainOfThought),
            &Example::new().with("text", "Not bad at all."),
        );
        insta::assert_snapshot!(rendered.transcript());
    }

    #[test]
    fn parses_markers_and_tolerates_noise() {
        let sig = sentiment();
        let reply = "[[ ## label ## ]]\nThe sentiment is Positive.\n\n[[ ## completed ## ]]";
        let out = ChatAdapter.parse(&sig, Strategy::Predict, reply).unwrap();
        assert_eq!(out.get("label"), Some(&json!("positive")));
        // No markers, single output field: the whole reply is the value.
        let out = ChatAdapter
            .parse(&sig, Strategy::Predict, "Label: negative")
            .unwrap();
        assert_eq!(out.get("label"), Some(&json!("negative")));
        // A marker with the value on the same line; the first occurrence wins.
        let reply = "[[ ## label ## ]] negative\n[[ ## label ## ]] positive";
        let out = ChatAdapter.parse(&sig, Strategy::Predict, reply).unwrap();
        assert_eq!(out.get("label"), Some(&json!("negative")));
        let err = ChatAdapter
            .parse(&sig, Strategy::Predict, "I cannot say.")
            .unwrap_err();
        assert!(err.message.contains("label"), "{err}");
    }

    #[test]
    fn parses_chain_of_thought_and_several_fields() {
        let sig = Signature::new(
            vec![Field::text("question")],
            vec![
                Field::text("answer"),
                Field::new("confidence", FieldType::Number),
            ],
        );
        let reply = "[[ ## reasoning ## ]]\nTwo and two.\nMakes four.\n\n[[ ## answer ## ]]\nfour\n\n[[ ## confidence ## ]]\n0.9 (high)\n\n[[ ## completed ## ]]";
        let out = ChatAdapter
            .parse(&sig, Strategy::ChainOfThought, reply)
            .unwrap();
        assert_eq!(
            out.get("reasoning"),
            Some(&json!("Two and two.\nMakes four."))
        );
        assert_eq!(out.get("answer"), Some(&json!("four")));
        assert_eq!(out.get("confidence"), Some(&json!(0.9)));
        assert_eq!(
            out.keys().collect::<Vec<_>>(),
            ["reasoning", "answer", "confidence"]
        );
        // Reasoning may be missing; other fields may not.
        let out = ChatAdapter
            .parse(
                &sig,
                Strategy::ChainOfThought,
                "[[ ## answer ## ]]\n4\n[[ ## confidence ## ]]\n1",
            )
            .unwrap();
        assert_eq!(out.get("reasoning"), Some(&json!("")));
        let err = ChatAdapter
            .parse(&sig, Strategy::Predict, "[[ ## answer ## ]]\n4")
            .unwrap_err();
        assert!(err.message.contains("`confidence`"), "{err}");
        // Several fields without markers cannot be split.
        assert!(ChatAdapter
            .parse(&sig, Strategy::Predict, "four, 0.9")
            .is_err());
    }
}
