//! The plain-completion adapter for base models.

use promptopt_lm::Message;

use super::{collect_outputs, format_value, output_fields, title_case, usable_demo};
use super::{Adapter, ParseFailure, Rendered};
use crate::{Example, Field, PredictorState, Signature, Strategy};

/// The line that separates examples in the prompt.
const SEPARATOR: &str = "---";

/// One prompt text that a base model continues.
///
/// The prompt is the instructions, then each demo as a block of `Field Name: value` lines (inputs
/// then outputs), blocks separated by `---` lines, then the current inputs and the first output
/// prefix (`Label:`), where the model takes over. The request holds that text as its only (user)
/// message: an engine serving a base model, which has no chat template, feeds it verbatim as the
/// prompt, so the reply is the continuation. Generation stops at the next `---` line or the next
/// example's first input prefix; parsing reads the first output field from the start of the reply
/// and later output fields from their `Field Name:` lines.
#[derive(Debug, Clone, Copy, Default)]
pub struct CompletionAdapter;

impl CompletionAdapter {
    fn block(out: &mut String, fields: &[&Field], values: &Example) {
        for field in fields {
            if let Some(value) = values.get(&field.name) {
                out.push_str(&title_case(&field.name));
                out.push_str(": ");
                format_value(out, value);
                out.push('\n');
            }
        }
    }
}

impl Adapter for CompletionAdapter {
    fn render(
        &self,
        signature: &Signature,
        predictor: &PredictorState,
        inputs: &Example,
    ) -> Rendered {
        let outputs = output_fields(signature, predictor.strategy);
        let input_fields: Vec<&Field> = signature.inputs.iter().collect();
        let mut prompt = String::with_capacity(1024);
        let instructions = predictor.instructions.trim();
        if !instructions.is_empty() {
            prompt.push_str(instructions);
            prompt.push_str("\n\n");
        }
        for demo in &predictor.demos {
            if !usable_demo(signature, &outputs, demo) {
                continue;
            }
            prompt.push_str(SEPARATOR);
            prompt.push_str("\n\n");
            Self::block(&mut prompt, &input_fields, demo);
            Self::block(&mut prompt, &outputs, demo);
            prompt.push('\n');
        }
        prompt.push_str(SEPARATOR);
        prompt.push_str("\n\n");
        Self::block(&mut prompt, &input_fields, inputs);
        if let Some(first) = outputs.first() {
            prompt.push_str(&title_case(&first.name));
            prompt.push(':');
        }
        let mut stop = vec![format!("\n{SEPARATOR}")];
        if let Some(first_input) = signature.inputs.first() {
            stop.push(format!("\n{}:", title_case(&first_input.name)));
        }
        Rendered {
            messages: vec![Message::user(prompt)],
            response_format: None,
            stop,
        }
    }

    fn parse(
        &self,
        signature: &Signature,
        strategy: Strategy,
        reply: &str,
    ) -> Result<Example, ParseFailure> {
        let outputs = output_fields(signature, strategy);
        let output_prefixes: Vec<String> = outputs
            .iter()
            .map(|f| format!("{}:", title_case(&f.name)))
            .collect();
        let input_prefixes: Vec<String> = signature
            .inputs
            .iter()
            .map(|f| format!("{}:", title_case(&f.name)))
            .collect();
        // Sections: index into `outputs` → text. The reply starts inside the first output field.
        let mut sections: Vec<(usize, String)> = vec![(0, String::new())];
        for line in reply.lines() {
            let trimmed = line.trim_start();
            if trimmed.starts_with(SEPARATOR)
                || input_prefixes.iter().any(|p| starts_with_ci(trimmed, p))
            {
                break;
            }
            if let Some(index) = output_prefixes
                .iter()
                .enumerate()
                .skip(1)
                .find(|(_, p)| starts_with_ci(trimmed, p))
                .map(|(i, _)| i)
            {
                let rest = &trimmed[output_prefixes[index].len()..];
                sections.push((index, rest.trim_start().to_string()));
                continue;
            }
            if let Some((_, text)) = sections.last_mut() {
                if !text.is_empty() {
                    text.push('\n');
                }
                text.push_str(line);
            }
        }
        collect_outputs(&outputs, |name| {
            let index = outputs.iter().position(|f| f.name == name)?;
            let text = sections
                .iter()
                .find(|(i, _)| *i == index)
                .map(|(_, t)| t.trim())?;
            (!text.is_empty() || index == 0).then(|| text.to_string())
        })
    }
}

fn starts_with_ci(text: &str, prefix: &str) -> bool {
    text.len() >= prefix.len()
        && text.is_char_boundary(prefix.len())
        && text[..prefix.len()].eq_ignore_ascii_case(prefix)
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]

    use serde_json::json;

    use super::*;
    use crate::FieldType;

    fn signature() -> Signature {
        Signature::new(
            vec![Field::text("review_text")],
            vec![
                Field::label("label", vec!["positive".into(), "negative".into()]),
                Field::new("stars", FieldType::Integer),
            ],
        )
    }

    #[test]
    fn renders_one_prompt_ending_at_the_first_output() {
        let mut state = PredictorState::new("Rate the review.");
        state.demos = vec![
            Example::new()
                .with("review_text", "Great.")
                .with("label", "positive")
                .with("stars", 5),
            Example::new()
                .with("review_text", "Awful.")
                .with("label", "negative")
                .with("stars", 1),
        ];
        let rendered = CompletionAdapter.render(
            &signature(),
            &state,
            &Example::new().with("review_text", "Fine, I guess."),
        );
        assert_eq!(rendered.messages.len(), 1);
        assert_eq!(rendered.stop, ["\n---", "\nReview Text:"]);
        insta::assert_snapshot!(rendered.messages[0].content);
        state.strategy = Strategy::ChainOfThought;
        let cot = CompletionAdapter.render(
            &signature(),
            &state,
            &Example::new().with("review_text", "Meh."),
        );
        assert!(cot.messages[0]
            .content
            .ends_with("Review Text: Meh.\nReasoning:"));
    }

    #[test]
    fn parses_the_continuation() {
        let sig = signature();
        let out = CompletionAdapter
            .parse(
                &sig,
                Strategy::Predict,
                " Positive\nStars: 4\n\n---\nReview Text: x",
            )
            .unwrap();
        assert_eq!(out.get("label"), Some(&json!("positive")));
        assert_eq!(out.get("stars"), Some(&json!(4)));
        let out = CompletionAdapter
            .parse(
                &sig,
                Strategy::ChainOfThought,
                " It is mixed.\nMostly kind.\nLabel: positive\nStars: 3\nReview Text: next",
            )
            .unwrap();
        assert_eq!(
            out.get("reasoning"),
            Some(&json!("It is mixed.\nMostly kind."))
        );
        assert_eq!(out.get("stars"), Some(&json!(3)));
        let err = CompletionAdapter
            .parse(&sig, Strategy::Predict, " negative")
            .unwrap_err();
        assert!(err.message.contains("`stars`"), "{err}");
    }
}
