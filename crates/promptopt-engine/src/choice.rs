//! Decoding restricted to a fixed set of replies (a label set).
//!
//! The constraint works on the reply's bytes, not on one tokenization of each reply: at every step
//! the allowed tokens are those whose text keeps the reply a prefix of some choice, so the model
//! may spell a label with whichever tokens it prefers. The end-of-generation token is allowed once
//! the reply is a whole choice; when no choice extends it, the reply ends there without another
//! decoding step.

use llama_cpp_2::model::LlamaModel;
use llama_cpp_2::token::LlamaToken;

/// The text of every token of a vocabulary, in token order (empty for control tokens).
pub(crate) fn token_pieces(model: &LlamaModel) -> Vec<Vec<u8>> {
    let vocab = model.vocab();
    let count = vocab.n_tokens().max(0);
    let mut pieces = Vec::with_capacity(usize::try_from(count).unwrap_or(0));
    for id in 0..count {
        let mut piece = Vec::new();
        vocab.token_to_piece_into(LlamaToken(id), &mut piece, false, None);
        pieces.push(piece);
    }
    pieces
}

/// The replies a sequence may produce.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct ChoiceConstraint {
    choices: Vec<Vec<u8>>,
}

impl ChoiceConstraint {
    /// The constraint for these replies; `None` when none is a non-empty string.
    pub(crate) fn new(choices: &[String]) -> Option<Self> {
        let mut bytes: Vec<Vec<u8>> = choices
            .iter()
            .filter(|c| !c.is_empty())
            .map(|c| c.as_bytes().to_vec())
            .collect();
        bytes.sort();
        bytes.dedup();
        (!bytes.is_empty()).then_some(Self { choices: bytes })
    }

    /// Whether `output` is one of the choices.
    pub(crate) fn complete(&self, output: &[u8]) -> bool {
        self.choices.iter().any(|c| c.as_slice() == output)
    }

    /// Whether a longer choice starts with `output`.
    pub(crate) fn extendable(&self, output: &[u8]) -> bool {
        self.choices
            .iter()
            .any(|c| c.len() > output.len() && c.starts_with(output))
    }

    /// The tokens (indices into `pieces`) whose text continues `output` along some choice.
    pub(crate) fn allowed(&self, output: &[u8], pieces: &[Vec<u8>]) -> Vec<i32> {
        let rests: Vec<&[u8]> = self
            .choices
            .iter()
            .filter(|c| c.len() > output.len() && c.starts_with(output))
            .map(|c| &c[output.len()..])
            .collect();
        if rests.is_empty() {
            return Vec::new();
        }
        pieces
            .iter()
            .enumerate()
            .filter(|(_, piece)| !piece.is_empty() && rests.iter().any(|r| r.starts_with(piece)))
            .filter_map(|(id, _)| i32::try_from(id).ok())
            .collect()
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]

    use super::*;

    fn pieces() -> Vec<Vec<u8>> {
        [
            "",
            "pos",
            "positive",
            "p",
            "neg",
            "ative",
            "itive",
            " positive",
            "NUM",
            "NUMBER",
            "BER",
        ]
        .iter()
        .map(|p| p.as_bytes().to_vec())
        .collect()
    }

    fn constraint(choices: &[&str]) -> ChoiceConstraint {
        let owned: Vec<String> = choices.iter().map(|c| (*c).to_string()).collect();
        ChoiceConstraint::new(&owned).unwrap()
    }

    #[test]
    fn any_spelling_of_a_choice_is_allowed_and_nothing_else() {
        let labels = constraint(&["positive", "negative"]);
        // Neither the empty piece nor " positive" is ever allowed.
        assert_eq!(labels.allowed(b"", &pieces()), vec![1, 2, 3, 4]);
        assert_eq!(labels.allowed(b"pos", &pieces()), vec![6]);
        assert_eq!(labels.allowed(b"neg", &pieces()), vec![5]);
        assert!(labels.allowed(b"positive", &pieces()).is_empty());
        assert!(labels.complete(b"positive") && !labels.extendable(b"positive"));
        assert!(!labels.complete(b"pos") && labels.extendable(b"pos"));
    }

    #[test]
    fn a_choice_that_starts_another_may_end_or_go_on() {
        let labels = constraint(&["NUM", "NUMBER"]);
        assert_eq!(labels.allowed(b"", &pieces()), vec![8, 9]);
        assert!(labels.complete(b"NUM") && labels.extendable(b"NUM"));
        assert_eq!(labels.allowed(b"NUM", &pieces()), vec![10]);
    }

    #[test]
    fn empty_and_repeated_choices_are_dropped() {
        assert_eq!(ChoiceConstraint::new(&[String::new()]), None);
        assert_eq!(ChoiceConstraint::new(&[]), None);
        let labels = ChoiceConstraint::new(&["a".into(), "a".into(), String::new()]).unwrap();
        assert_eq!(labels.choices, vec![b"a".to_vec()]);
    }
}
