//! What counts as an instruction: the check a proposed instruction passes before an optimizer
//! uses it.
//!
//! Small prompt models often answer a request for instructions with something else: the
//! examples and feedback they were shown, copied back; the prompt's own section headings; a
//! program in a fenced code block; or nothing at all. MIPROv2's proposer and GEPA's reflection
//! discard such a reply (and count it) instead of scoring it as a candidate.
//!
//! ```
//! use promptopt_optimize::instruction::{check_instruction, NotAnInstruction};
//!
//! let prompt_headings = ["Feedback:", "## Example"];
//! assert!(check_instruction("Label the review `positive` or `negative`.", &prompt_headings).is_ok());
//! assert_eq!(
//!     check_instruction("## Example 1\nInputs: ...", &prompt_headings),
//!     Err(NotAnInstruction::EchoesThePrompt("## Example".to_string()))
//! );
//! ```

/// Languages whose fenced blocks mark a reply as a program rather than an instruction.
const CODE_LANGUAGES: &[&str] = &[
    "python",
    "py",
    "javascript",
    "js",
    "typescript",
    "ts",
    "java",
    "c",
    "cpp",
    "c++",
    "csharp",
    "cs",
    "rust",
    "rs",
    "go",
    "bash",
    "sh",
    "shell",
    "sql",
    "ruby",
    "php",
];

/// Why a proposal is not an instruction.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum NotAnInstruction {
    /// Nothing but whitespace.
    Empty,
    /// A line starts with one of the proposing prompt's own headings (the examples, the
    /// feedback, the section titles), so the model copied its prompt back.
    EchoesThePrompt(String),
    /// A fenced block of program code.
    Code(String),
}

impl std::fmt::Display for NotAnInstruction {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Self::Empty => write!(f, "it is empty"),
            Self::EchoesThePrompt(heading) => {
                write!(
                    f,
                    "it copies the prompt back (a line starts with `{heading}`)"
                )
            }
            Self::Code(language) => write!(f, "it holds a block of `{language}` code"),
        }
    }
}

/// Checks that `text` reads as an instruction. `headings` are the line starts of the prompt that
/// asked for it (such as `Feedback:`); a line of the proposal that starts with one of them, after
/// leading whitespace, list markers and emphasis, is a copy of the prompt.
pub fn check_instruction(text: &str, headings: &[&str]) -> Result<(), NotAnInstruction> {
    if text.trim().is_empty() {
        return Err(NotAnInstruction::Empty);
    }
    for line in text.lines() {
        let bare =
            line.trim_start_matches(|c: char| c.is_whitespace() || matches!(c, '-' | '*' | '>'));
        if let Some(fence) = bare.strip_prefix("```") {
            let language = fence.trim().to_lowercase();
            if CODE_LANGUAGES.contains(&language.as_str()) {
                return Err(NotAnInstruction::Code(language));
            }
        }
        if let Some(heading) = headings.iter().find(|h| bare.starts_with(**h)) {
            return Err(NotAnInstruction::EchoesThePrompt((*heading).to_string()));
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    const HEADINGS: &[&str] = &["## Example", "Generated outputs:", "Feedback:"];

    #[test]
    fn plain_and_structured_instructions_pass() {
        for text in [
            "Classify the sentiment of the review as `positive` or `negative`.",
            "Rules:\n- Sarcasm counts as negative.\n- Mixed reviews: go by the last sentence.",
            "Answer in JSON such as:\n```json\n{\"label\": \"positive\"}\n```",
            "Give the feedback-free answer only.",
        ] {
            assert_eq!(check_instruction(text, HEADINGS), Ok(()), "{text}");
        }
    }

    #[test]
    fn echoes_code_and_empty_replies_are_refused() {
        assert_eq!(
            check_instruction(" \n ", HEADINGS),
            Err(NotAnInstruction::Empty)
        );
        let echo = "Classify it.\n\n## Example 1\n\nInputs:\n- text: fine\n\nFeedback: Correct";
        assert_eq!(
            check_instruction(echo, HEADINGS),
            Err(NotAnInstruction::EchoesThePrompt("## Example".to_string()))
        );
        let bold = "Do this.\n**Feedback:** be careful";
        assert_eq!(
            check_instruction(bold, HEADINGS),
            Err(NotAnInstruction::EchoesThePrompt("Feedback:".to_string()))
        );
        let code = "Step 1:\n```Python\ndef classify(text):\n    pass\n```";
        let refused = check_instruction(code, HEADINGS).unwrap_err();
        assert_eq!(refused, NotAnInstruction::Code("python".to_string()));
        assert_eq!(refused.to_string(), "it holds a block of `python` code");
    }
}
