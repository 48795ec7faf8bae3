//! What counts as an instruction: the check a proposed instruction passes before an optimizer
//! uses it.
//!
//! Small prompt models often answer a request for instructions with something else: the
//! examples and feedback they were shown, copied back; the prompt's own section headings; a
//! program in a fenced code block; or nothing at all. MIPROv2's proposer and GEPA's reflection
//! discard such a reply (and count it) instead of scoring it as a candidate. MIPROv2 also
//! discards a proposal that quotes a training example ([`check_not_quoted`]): an instruction
//! written around one question fits that question, not the task.
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
    /// A run of [`QUOTE_WORDS`] words (or a whole shorter value) copied from a training example.
    QuotesAnExample(String),
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
            Self::QuotesAnExample(quote) => {
                write!(f, "it quotes a training example (`{quote}`)")
            }
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

/// Consecutive words of an example's value that, found in a proposal, make it a quote.
pub const QUOTE_WORDS: usize = 8;

/// The fewest words a value must have to be quotable: a value shorter than [`QUOTE_WORDS`] but
/// this long counts as quoted when all of it appears; shorter ones (labels, names) never do.
pub const QUOTE_MIN_WORDS: usize = 6;

/// The lowercase words of `text`: runs of letters and digits.
fn words(text: &str) -> Vec<String> {
    text.split(|c: char| !c.is_alphanumeric())
        .filter(|w| !w.is_empty())
        .map(str::to_lowercase)
        .collect()
}

/// Checks that `text` does not quote one of `values` (the fields of the training examples the
/// proposer could show): no run of [`QUOTE_WORDS`] consecutive words of a value, and no whole
/// value of [`QUOTE_MIN_WORDS`] words or more, appears in it. Words are compared without case or
/// punctuation, so a quote that changes only those still counts.
///
/// ```
/// use promptopt_optimize::instruction::{check_not_quoted, NotAnInstruction};
///
/// let questions = ["What phrase do Franz Ferdinand sing in the chorus of their first single?"];
/// assert!(check_not_quoted("Answer the question with a short phrase.", questions).is_ok());
/// assert_eq!(
///     check_not_quoted(
///         "Answer the question \"what phrase do Franz Ferdinand sing in the chorus\".",
///         questions
///     ),
///     Err(NotAnInstruction::QuotesAnExample(
///         "what phrase do franz ferdinand sing in the".to_string()
///     ))
/// );
/// ```
pub fn check_not_quoted<'a>(
    text: &str,
    values: impl IntoIterator<Item = &'a str>,
) -> Result<(), NotAnInstruction> {
    let proposal = words(text);
    if proposal.len() < QUOTE_MIN_WORDS {
        return Ok(());
    }
    // Every word padded by spaces, so a match is whole words.
    let haystack = format!(" {} ", proposal.join(" "));
    for value in values {
        let value = words(value);
        if value.len() < QUOTE_MIN_WORDS {
            continue;
        }
        let width = value.len().min(QUOTE_WORDS);
        for window in value.windows(width) {
            let needle = format!(" {} ", window.join(" "));
            if haystack.contains(&needle) {
                return Err(NotAnInstruction::QuotesAnExample(needle.trim().to_string()));
            }
        }
    }
    Ok(())
}

/// Bytes counted as one token when an instruction is fitted to a context. English text averages
/// about four bytes a token, so two over-counts the tokens and the cut errs early.
pub const BYTES_PER_TOKEN: u64 = 2;

/// The most bytes an instruction may have in a task model whose context holds
/// `context_tokens`: half the context, counted at [`BYTES_PER_TOKEN`]. The other half holds the
/// demos, the inputs and the reply.
pub fn instruction_byte_limit(context_tokens: u64) -> usize {
    usize::try_from(context_tokens / 2 * BYTES_PER_TOKEN).unwrap_or(usize::MAX)
}

/// `text` cut to fit a task model whose context holds `context_tokens` (see
/// [`instruction_byte_limit`]), at the last line break or space before the limit where there is
/// one; `None` when it fits as it is.
///
/// ```
/// use promptopt_optimize::instruction::fit_to_context;
///
/// assert_eq!(fit_to_context("Label the review.", 4096), None);
/// assert_eq!(fit_to_context("Label the review positive or negative.", 8).as_deref(), Some("Label"));
/// ```
pub fn fit_to_context(text: &str, context_tokens: u64) -> Option<String> {
    let limit = instruction_byte_limit(context_tokens);
    if text.len() <= limit {
        return None;
    }
    let mut end = limit;
    while !text.is_char_boundary(end) {
        end -= 1;
    }
    let head = &text[..end];
    let cut = match head.rfind(char::is_whitespace) {
        Some(at) if at > 0 => &head[..at],
        _ => head,
    };
    Some(cut.trim_end().to_string())
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

    #[test]
    fn quotes_of_examples_are_refused_and_shared_phrases_are_not() {
        let values = [
            "a gripping , funny and ultimately heartbreaking look at two brothers",
            "positive",
            "Who wrote the opera Carmen ?",
            "Who was the first president of the United States ?",
            "Name the largest desert in Africa ?",
        ];
        // Task words and labels that every instruction shares are not quotes, nor are seven
        // words in a row.
        for text in [
            "Classify the review as positive or negative; a funny look counts as positive.",
            "Reviews such as \"A gripping, funny and ultimately heartbreaking look\" are positive.",
            "Name who wrote the opera.",
        ] {
            assert_eq!(check_not_quoted(text, values), Ok(()), "{text}");
        }
        // Eight words in a row are, whatever their case and punctuation.
        let quoted =
            "Reviews like \"A gripping, funny and ultimately heartbreaking look at\" are positive.";
        let refused = check_not_quoted(quoted, values).unwrap_err();
        assert_eq!(
            refused,
            NotAnInstruction::QuotesAnExample(
                "a gripping funny and ultimately heartbreaking look at".to_string()
            )
        );
        assert_eq!(
            refused.to_string(),
            "it quotes a training example (`a gripping funny and ultimately heartbreaking look at`)"
        );
        assert_eq!(
            check_not_quoted(
                "For example: who was the first president of the United States? Answer George Washington.",
                values
            ),
            Err(NotAnInstruction::QuotesAnExample(
                "who was the first president of the united".to_string()
            ))
        );
        // A whole value of six or seven words is a quote; a shorter one is not.
        assert_eq!(
            check_not_quoted(
                "Questions such as name the largest desert in Africa want a place.",
                values
            ),
            Err(NotAnInstruction::QuotesAnExample(
                "name the largest desert in africa".to_string()
            ))
        );
        assert!(
            check_not_quoted("Answer questions like who wrote the opera Carmen.", values).is_ok()
        );
        // A proposal too short to hold a quote passes.
        assert_eq!(check_not_quoted("Answer briefly.", values), Ok(()));
    }

    #[test]
    fn a_long_instruction_is_cut_to_half_the_context_at_a_word() {
        let long = "Read the review. ".repeat(1000);
        let cut = fit_to_context(&long, 2048).unwrap();
        assert!(cut.len() <= instruction_byte_limit(2048), "{}", cut.len());
        assert!(
            cut.len() > instruction_byte_limit(2048) - 20,
            "{}",
            cut.len()
        );
        // It ends at a whole word.
        assert!(long[cut.len()..].starts_with(' '), "{cut}");
        assert!(cut.ends_with("Read") || cut.ends_with("the") || cut.ends_with("review."));
        // Multi-byte characters are never split.
        let accents = "é".repeat(3000);
        let cut = fit_to_context(&accents, 1001).unwrap();
        assert_eq!(cut.len(), 1000);
        assert_eq!(fit_to_context("short", 2048), None);
    }
}
