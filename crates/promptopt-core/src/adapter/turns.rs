//! The turns adapter: compact chat turns for small models.

use promptopt_lm::{Message, ResponseFormat};

use super::chat::strip_field_prefix;
use super::{format_value, output_fields, title_case, usable_demo, value_rule};
use super::{Adapter, CompletionAdapter, ParseFailure, Rendered};
use crate::{Example, Field, FieldType, PredictorState, Signature, Strategy};

/// Compact chat turns: no field markers, no field list.
///
/// Messages: a short system message (the instructions and one sentence on the answer's form),
/// then each demo as a user turn of `Field Name: value` lines (its inputs) and an assistant turn
/// (its outputs), then the current inputs as the last user turn. A single output field is written
/// as its bare value (`positive`); several (chain of thought included) as `Field Name: value`
/// lines in order. A single label output asks for [`ResponseFormat::Choice`] over its labels.
///
/// This is the format small local models follow best. On 60 SST-2 dev sentences with 8
/// label-balanced demos, Gemma 3 270M answered 51–52 correctly in this layout and none in the
/// field-marker layout of [`ChatAdapter`](super::ChatAdapter) (it continued the markers instead of
/// answering); SmolLM2-135M gave a clean label for every input with demos in either layout.
#[derive(Debug, Clone, Copy, Default)]
pub struct TurnsAdapter;

impl TurnsAdapter {
    /// The system message: the instructions and how to answer.
    fn system(predictor: &PredictorState, outputs: &[&Field]) -> String {
        let mut out = String::with_capacity(256 + predictor.instructions.len());
        let instructions = predictor.instructions.trim();
        out.push_str(instructions);
        if !instructions.is_empty() {
            out.push('\n');
        }
        match outputs {
            [only] => {
                out.push_str("Answer with ");
                match value_rule(&only.ty) {
                    Some(rule) if matches!(only.ty, FieldType::Label { .. }) => {
                        out.push_str(&rule);
                    }
                    Some(rule) => {
                        out.push_str("the ");
                        out.push_str(&title_case(&only.name).to_lowercase());
                        out.push_str(" only, ");
                        out.push_str(&rule);
                    }
                    None => {
                        out.push_str("the ");
                        out.push_str(&title_case(&only.name).to_lowercase());
                        out.push_str(" only");
                    }
                }
                out.push('.');
            }
            _ => {
                out.push_str("Answer with one line per field, in this order:");
                for field in outputs {
                    out.push('\n');
                    out.push_str(&title_case(&field.name));
                    // A placeholder in angle brackets: without them, small instruction
                    // models copy the line (`Next Thought: text`) as their answer.
                    out.push_str(": <");
                    match value_rule(&field.ty) {
                        Some(rule) => out.push_str(&rule),
                        None if field.description.is_empty() => out.push_str("text"),
                        None => out.push_str(field.description.trim()),
                    }
                    out.push('>');
                }
            }
        }
        out
    }

    /// `Field Name: value` lines for the fields present in `values`.
    fn lines(out: &mut String, fields: &[&Field], values: &Example) {
        for field in fields {
            if let Some(value) = values.get(&field.name) {
                if !out.is_empty() {
                    out.push('\n');
                }
                out.push_str(&title_case(&field.name));
                out.push_str(": ");
                format_value(out, value);
            }
        }
    }

    /// A reply that is one bare label is restricted to the labels, which engines that can (the
    /// embedded one, `promptopt serve-lm`, vLLM) enforce while decoding.
    fn label_choice(outputs: &[&Field]) -> Option<ResponseFormat> {
        match outputs {
            [only] => match &only.ty {
                FieldType::Label { allowed } if !allowed.is_empty() => {
                    Some(ResponseFormat::Choice {
                        choices: allowed.clone(),
                    })
                }
                _ => None,
            },
            _ => None,
        }
    }

    fn outputs_turn(outputs: &[&Field], demo: &Example) -> String {
        let mut out = String::with_capacity(128);
        if let [only] = outputs {
            if let Some(value) = demo.get(&only.name) {
                format_value(&mut out, value);
            }
            return out;
        }
        Self::lines(&mut out, outputs, demo);
        out
    }
}

impl Adapter for TurnsAdapter {
    fn render(
        &self,
        signature: &Signature,
        predictor: &PredictorState,
        inputs: &Example,
    ) -> Rendered {
        let outputs = output_fields(signature, predictor.strategy);
        let input_fields: Vec<&Field> = signature.inputs.iter().collect();
        let mut messages = Vec::with_capacity(2 + 2 * predictor.demos.len());
        messages.push(Message::system(Self::system(predictor, &outputs)));
        for demo in &predictor.demos {
            if !usable_demo(signature, &outputs, demo) {
                continue;
            }
            let mut user = String::with_capacity(256);
            Self::lines(&mut user, &input_fields, demo);
            messages.push(Message::user(user));
            messages.push(Message::assistant(Self::outputs_turn(&outputs, demo)));
        }
        let mut user = String::with_capacity(512);
        Self::lines(&mut user, &input_fields, inputs);
        messages.push(Message::user(user));
        Rendered {
            messages,
            response_format: Self::label_choice(&outputs),
            stop: Vec::new(),
        }
    }

    /// A single output field is read from the reply's first non-empty line when it is a label,
    /// number or boolean (a small model often keeps writing after the answer), else from the
    /// whole reply, without a leading `Field Name:` if the model wrote one. Several fields are
    /// read from their `Field Name:` lines.
    fn parse(
        &self,
        signature: &Signature,
        strategy: Strategy,
        reply: &str,
    ) -> Result<Example, ParseFailure> {
        let outputs = output_fields(signature, strategy);
        let Some(first) = outputs.first() else {
            return Ok(Example::new());
        };
        let body = strip_field_prefix(reply.trim_start(), &first.name);
        if let [only] = outputs.as_slice() {
            let text = match only.ty {
                FieldType::Text | FieldType::List | FieldType::Json => body.trim(),
                _ => body
                    .lines()
                    .map(str::trim)
                    .find(|l| !l.is_empty())
                    .unwrap_or(""),
            };
            return super::collect_outputs(&outputs, |_| Some(text.to_string()));
        }
        // Several fields: the same `Field Name: value` sections as a completion's continuation.
        CompletionAdapter.parse(signature, strategy, body)
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]

    use serde_json::json;

    use super::*;

    fn sentiment() -> Signature {
        Signature::new(
            vec![Field::text("text")],
            vec![Field::label(
                "label",
                vec!["positive".into(), "negative".into()],
            )],
        )
    }

    #[test]
    fn renders_demos_as_compact_turns() {
        let mut state = PredictorState::new("Classify the sentiment of the review.");
        state.demos = vec![
            Example::new()
                .with("text", "A delight from start to finish.")
                .with("label", "positive"),
            Example::new()
                .with("text", "Two hours I will never get back.")
                .with("label", "negative"),
        ];
        let rendered = TurnsAdapter.render(
            &sentiment(),
            &state,
            &Example::new().with("text", "Not bad."),
        );
        assert!(rendered.stop.is_empty());
        assert_eq!(
            rendered.response_format,
            Some(ResponseFormat::Choice {
                choices: vec!["positive".into(), "negative".into()]
            })
        );
        insta::assert_snapshot!(rendered.transcript());
    }

    #[test]
    fn chain_of_thought_writes_field_lines() {
        let mut state = PredictorState::new("Answer the question.");
        state.strategy = Strategy::ChainOfThought;
        let sig = Signature::new(vec![Field::text("question")], vec![Field::text("answer")]);
        state.demos = vec![Example::new()
            .with("question", "2+2?")
            .with("reasoning", "Two and two make four.")
            .with("answer", "4")];
        let rendered = TurnsAdapter.render(&sig, &state, &Example::new().with("question", "3+3?"));
        assert_eq!(
            rendered.response_format, None,
            "a text answer is not restricted"
        );
        insta::assert_snapshot!(rendered.transcript());
        let out = TurnsAdapter
            .parse(
                &sig,
                Strategy::ChainOfThought,
                "Reasoning: Three and three.\nAnswer: 6",
            )
            .unwrap();
        assert_eq!(out.get("reasoning"), Some(&json!("Three and three.")));
        assert_eq!(out.get("answer"), Some(&json!("6")));
    }

    #[test]
    fn parses_a_label_from_the_first_line() {
        let sig = sentiment();
        let out = TurnsAdapter
            .parse(&sig, Strategy::Predict, "negative\n\nthe movie is positive")
            .unwrap();
        assert_eq!(out.get("label"), Some(&json!("negative")));
        let out = TurnsAdapter
            .parse(&sig, Strategy::Predict, "Label: Positive.")
            .unwrap();
        assert_eq!(out.get("label"), Some(&json!("positive")));
        let err = TurnsAdapter
            .parse(&sig, Strategy::Predict, "I cannot tell.")
            .unwrap_err();
        assert!(err.message.contains("`label`"), "{err}");
    }
}
