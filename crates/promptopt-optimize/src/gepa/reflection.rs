//! Reflection: turn a minibatch's traces and feedback into a request for better instructions.
//!
//! The reflective dataset holds, per minibatch example, one call of the predictor being
//! rewritten: its inputs, what it generated (or, when the reply could not be parsed, the parse
//! error and the raw reply) and the metric's feedback. The reflection model reads it together
//! with the current instructions and answers with new instructions inside a fenced block.
//!
//! The prompt is bounded (DSPy's grew without limit on long inputs): every field value and raw
//! reply is cut to [`MAX_FIELD_CHARS`] characters, feedback to [`MAX_FEEDBACK_CHARS`], the
//! current instructions to [`MAX_INSTRUCTION_CHARS`], at most [`MAX_EXAMPLES`] examples are
//! shown and examples stop being added once the rendered examples reach [`MAX_EXAMPLES_CHARS`]
//! (the first one is always shown). New instructions longer than [`MAX_INSTRUCTION_CHARS`] are
//! cut to it.

use promptopt_core::{value_to_text, Example, Trace};
use promptopt_lm::Message;
use rand::Rng;
use serde::{Deserialize, Serialize};

/// Longest field value, raw reply or parse error shown, in characters.
pub const MAX_FIELD_CHARS: usize = 1500;
/// Longest feedback shown, in characters.
pub const MAX_FEEDBACK_CHARS: usize = 1000;
/// Longest instructions shown or accepted, in characters.
pub const MAX_INSTRUCTION_CHARS: usize = 8000;
/// Most examples in one reflection prompt.
pub const MAX_EXAMPLES: usize = 8;
/// Budget of the rendered examples section, in characters.
pub const MAX_EXAMPLES_CHARS: usize = 24_000;

/// What the predictor produced on one example.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub enum Generated {
    /// The parsed output fields.
    Outputs(Example),
    /// The reply could not be parsed.
    FormatFailure {
        /// Why.
        error: String,
        /// The raw reply.
        raw: String,
    },
}

/// One entry of the reflective dataset.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ReflectiveRecord {
    /// The predictor's inputs.
    pub inputs: Example,
    /// What it generated.
    pub generated: Generated,
    /// The metric's feedback on the program's result.
    pub feedback: String,
    /// The example's score.
    pub score: f64,
}

/// One minibatch example as the reflection sees it: its trace, score and feedback.
#[derive(Debug, Clone, Copy)]
pub struct Rollout<'a> {
    /// The program run's trace.
    pub trace: &'a Trace,
    /// Its score.
    pub score: f64,
    /// The metric's feedback, if it gave one.
    pub feedback: Option<&'a str>,
}

/// The reflective dataset of `predictor` over a minibatch's rollouts.
///
/// Per rollout: the predictor's call that failed to parse, if any, else one of its calls drawn
/// at random (a predictor may run several times in one program run). Rollouts in which the
/// predictor did not run are skipped. A missing feedback becomes a sentence stating the score.
pub fn reflective_dataset<R: Rng + ?Sized>(
    predictor: &str,
    rollouts: &[Rollout<'_>],
    rng: &mut R,
) -> Vec<ReflectiveRecord> {
    let mut records = Vec::new();
    for rollout in rollouts {
        let steps: Vec<_> = rollout
            .trace
            .steps
            .iter()
            .filter(|s| s.predictor == predictor)
            .collect();
        if steps.is_empty() {
            continue;
        }
        let step = match steps
            .iter()
            .find(|s| s.parse_error.is_some() || s.outputs.is_none())
        {
            Some(failed) => *failed,
            None => steps[rng.gen_range(0..steps.len())],
        };
        let generated = match (&step.outputs, &step.parse_error) {
            (Some(outputs), None) => Generated::Outputs(outputs.clone()),
            (_, error) => Generated::FormatFailure {
                error: error
                    .clone()
                    .unwrap_or_else(|| "no output fields".to_string()),
                raw: step.raw.clone(),
            },
        };
        let feedback = match rollout.feedback {
            Some(text) if !text.trim().is_empty() => text.to_string(),
            _ => format!("This output scored {}.", rollout.score),
        };
        records.push(ReflectiveRecord {
            inputs: step.inputs.clone(),
            generated,
            feedback,
            score: rollout.score,
        });
    }
    records
}

/// `text` cut to `max` characters, with a note of how much was cut.
pub fn truncate(text: &str, max: usize) -> String {
    let total = text.chars().count();
    if total <= max {
        return text.to_string();
    }
    let head: String = text.chars().take(max).collect();
    format!("{head} [... {} more characters cut]", total - max)
}

fn render_fields(out: &mut String, example: &Example) {
    for (name, value) in example.fields() {
        let text = truncate(&value_to_text(value), MAX_FIELD_CHARS);
        if text.contains('\n') {
            out.push_str(&format!("- {name}:\n{}\n", indent(&text)));
        } else {
            out.push_str(&format!("- {name}: {text}\n"));
        }
    }
}

fn indent(text: &str) -> String {
    text.lines()
        .map(|l| format!("    {l}"))
        .collect::<Vec<_>>()
        .join("\n")
}

fn render_record(index: usize, record: &ReflectiveRecord) -> String {
    let mut out = format!("## Example {index}\n\nInputs:\n");
    render_fields(&mut out, &record.inputs);
    match &record.generated {
        Generated::Outputs(outputs) => {
            out.push_str("\nGenerated outputs:\n");
            render_fields(&mut out, outputs);
        }
        Generated::FormatFailure { error, raw } => {
            out.push_str(&format!(
                "\nThe reply could not be read as the expected output fields ({}). The raw reply was:\n{}\n",
                truncate(error, MAX_FIELD_CHARS),
                indent(&truncate(raw, MAX_FIELD_CHARS))
            ));
        }
    }
    out.push_str(&format!(
        "\nScore: {}\nFeedback: {}\n",
        record.score,
        truncate(&record.feedback, MAX_FEEDBACK_CHARS)
    ));
    out
}

/// The line starts of the reflection prompt: a proposal with a line that starts with one of them
/// copied the prompt back (see [`crate::instruction`]).
pub(crate) const REFLECTION_HEADINGS: &[&str] = &[
    "## Example",
    "Generated outputs:",
    "Feedback:",
    "The reply could not be read",
    "The step `",
    "Write improved instructions",
];

/// The messages asking the reflection model for new instructions for `predictor`.
pub fn reflection_messages(
    predictor: &str,
    instructions: &str,
    records: &[ReflectiveRecord],
) -> Vec<Message> {
    let system = "You are an expert prompt engineer. You study how one step of a language-model \
program behaved on real examples and rewrite that step's instructions so it does better.";
    let (examples, shown) = render_records(records);
    let user = format!(
        "The step `{predictor}` currently works under these instructions:\n\n```\n{}\n```\n\n\
Here is how it did on {shown} example(s): the inputs it received, what it generated, the score \
of the result and feedback explaining it.\n\n{examples}\
Write improved instructions for the step `{predictor}`.\n\
- Work out from the feedback what went wrong and what went right, including any facts about \
the task, its labels or its output format that the feedback reveals.\n\
- State those facts and the rules that follow from them explicitly, so the step can get new \
inputs of the same kind right without seeing these examples.\n\
- Keep what already works; be concrete and concise.\n\n\
Answer with the new instructions only, inside a single block fenced with ```.",
        truncate(instructions, MAX_INSTRUCTION_CHARS)
    );
    vec![Message::system(system), Message::user(user)]
}

/// The records as the reflection shows them, within [`MAX_EXAMPLES`] and
/// [`MAX_EXAMPLES_CHARS`], and how many were shown.
pub(crate) fn render_records(records: &[ReflectiveRecord]) -> (String, usize) {
    let mut examples = String::new();
    let mut shown = 0;
    for record in records.iter().take(MAX_EXAMPLES) {
        let rendered = render_record(shown + 1, record);
        if shown > 0 && examples.len() + rendered.len() > MAX_EXAMPLES_CHARS {
            break;
        }
        examples.push_str(&rendered);
        examples.push('\n');
        shown += 1;
    }
    (examples, shown)
}

/// The new instructions in a reflection reply: the text between the first fence and the last
/// fence after it (a language tag after the opening fence is dropped); without a closing fence,
/// everything after the opening line; without any fence, the whole reply. `None` when empty.
/// Cut to [`MAX_INSTRUCTION_CHARS`].
pub fn extract_instructions(reply: &str) -> Option<String> {
    let body = match reply.find("```") {
        None => reply,
        Some(open) => {
            let after = &reply[open + 3..];
            let first_line = after.split('\n').next().unwrap_or("");
            if let Some(inline_close) = first_line.find("```") {
                return finish(&after[..inline_close]);
            }
            let content_start = after.find('\n').map_or(after.len(), |n| n + 1);
            let content = &after[content_start..];
            match content.rfind("```") {
                Some(close) => &content[..close],
                None => content,
            }
        }
    };
    finish(body)
}

fn finish(body: &str) -> Option<String> {
    let text = body.trim();
    if text.is_empty() {
        return None;
    }
    let total = text.chars().count();
    Some(if total > MAX_INSTRUCTION_CHARS {
        text.chars().take(MAX_INSTRUCTION_CHARS).collect()
    } else {
        text.to_string()
    })
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;
    use promptopt_core::TraceStep;
    use promptopt_lm::{ChatRequest, Usage};
    use rand::SeedableRng;
    use rand_chacha::ChaCha8Rng;
    use std::time::Duration;

    fn step(pred: &str, input: &str, out: Option<&str>, raw: &str) -> TraceStep {
        TraceStep {
            predictor: pred.into(),
            inputs: Example::new().with("text", input),
            request: ChatRequest::new("scripted/test", vec![]),
            raw: raw.into(),
            outputs: out.map(|o| Example::new().with("label", o)),
            parse_error: if out.is_none() {
                Some("missing field `label`".into())
            } else {
                None
            },
            usage: Usage::default(),
            latency: Duration::ZERO,
            cost_usd: None,
            cache_hit: false,
        }
    }

    #[test]
    fn dataset_prefers_failed_steps_and_fills_feedback() {
        let t1 = Trace {
            steps: vec![step("p", "good", Some("positive"), "positive")],
        };
        let t2 = Trace {
            steps: vec![
                step("p", "a", Some("x"), "x"),
                step("p", "b", None, "I think maybe"),
            ],
        };
        let t3 = Trace {
            steps: vec![step("other", "c", Some("y"), "y")],
        };
        let rollouts = [
            Rollout {
                trace: &t1,
                score: 1.0,
                feedback: Some("Correct."),
            },
            Rollout {
                trace: &t2,
                score: 0.0,
                feedback: None,
            },
            Rollout {
                trace: &t3,
                score: 0.0,
                feedback: None,
            },
        ];
        let mut rng = ChaCha8Rng::seed_from_u64(0);
        let data = reflective_dataset("p", &rollouts, &mut rng);
        assert_eq!(data.len(), 2);
        assert_eq!(data[0].feedback, "Correct.");
        assert_eq!(data[1].feedback, "This output scored 0.");
        assert_eq!(
            data[1].generated,
            Generated::FormatFailure {
                error: "missing field `label`".into(),
                raw: "I think maybe".into()
            }
        );
    }

    #[test]
    fn prompt_is_bounded() {
        let long = "x".repeat(50_000);
        let t = Trace {
            steps: vec![step("p", &long, None, &long)],
        };
        let rollouts: Vec<Rollout> = (0..20)
            .map(|_| Rollout {
                trace: &t,
                score: 0.0,
                feedback: Some(&long),
            })
            .collect();
        let mut rng = ChaCha8Rng::seed_from_u64(0);
        let data = reflective_dataset("p", &rollouts, &mut rng);
        assert_eq!(data.len(), 20);
        let messages = reflection_messages("p", &long, &data);
        let size: usize = messages.iter().map(|m| m.content.len()).sum();
        assert!(
            size < MAX_EXAMPLES_CHARS + MAX_INSTRUCTION_CHARS + 6000,
            "{size}"
        );
        assert!(messages[1].content.contains("more characters cut"));
        assert!(!messages[1]
            .content
            .contains(&format!("## Example {}", MAX_EXAMPLES + 1)));
    }

    #[test]
    fn extracts_fenced_instructions() {
        assert_eq!(
            extract_instructions(
                "Sure!\n```text\nClassify the sentiment.\nAnswer one word.\n```\nDone"
            )
            .as_deref(),
            Some("Classify the sentiment.\nAnswer one word.")
        );
        assert_eq!(
            extract_instructions("```\nA\n```\nB\n```").as_deref(),
            Some("A\n```\nB")
        );
        assert_eq!(
            extract_instructions("```\nOpen only").as_deref(),
            Some("Open only")
        );
        assert_eq!(
            extract_instructions("  Plain text  ").as_deref(),
            Some("Plain text")
        );
        assert_eq!(
            extract_instructions("New: ```Be brief.``` ok").as_deref(),
            Some("Be brief.")
        );
        assert_eq!(extract_instructions("```\n\n```"), None);
        assert_eq!(extract_instructions(""), None);
        let huge = format!("```\n{}\n```", "y".repeat(MAX_INSTRUCTION_CHARS + 10));
        assert_eq!(
            extract_instructions(&huge).unwrap().len(),
            MAX_INSTRUCTION_CHARS
        );
    }

    #[test]
    fn prompt_snapshot() {
        let t = Trace {
            steps: vec![step(
                "classify",
                "A gripping, funny film.",
                Some("negative"),
                "negative",
            )],
        };
        let t2 = Trace {
            steps: vec![step("classify", "Dull.", None, "Label: maybe")],
        };
        let rollouts = [
            Rollout {
                trace: &t,
                score: 0.0,
                feedback: Some("Expected `positive`, got `negative`."),
            },
            Rollout {
                trace: &t2,
                score: 0.0,
                feedback: Some("Expected `negative`."),
            },
        ];
        let mut rng = ChaCha8Rng::seed_from_u64(0);
        let data = reflective_dataset("classify", &rollouts, &mut rng);
        let messages = reflection_messages("classify", "Classify the sentiment.", &data);
        let rendered = messages
            .iter()
            .map(|m| format!("[{:?}]\n{}", m.role, m.content))
            .collect::<Vec<_>>()
            .join("\n\n");
        insta::assert_snapshot!(rendered);
    }
}
