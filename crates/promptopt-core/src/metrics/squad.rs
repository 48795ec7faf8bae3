//! SQuAD v1.1 exact match and token F1.
//!
//! Both follow the official SQuAD v1.1 evaluation script: answers are normalised (lowercase,
//! ASCII punctuation removed, the articles `a`, `an`, `the` removed, whitespace collapsed), and
//! the score is the maximum over the gold answers.

use std::collections::HashMap;

use super::common::{gold, info, predicted, snippet, texts_of, word_list};
use crate::{Example, Metric, MetricInfo, Prediction, Score, Trace};

/// The field holding a list of alternative gold answers, when present (SQuAD, XQuAD).
pub const ANSWERS_KEY: &str = "answers";

/// Normalises an answer as the SQuAD v1.1 script does.
pub fn normalize_answer(text: &str) -> String {
    let lowered = text.to_lowercase();
    let without_punctuation: String = lowered
        .chars()
        .filter(|c| !c.is_ascii_punctuation())
        .collect();
    // Remove `a`, `an` and `the` where they form a whole word (a maximal run of word
    // characters, as the regex `\b(a|an|the)\b` sees it).
    let mut without_articles = String::with_capacity(without_punctuation.len());
    let mut word = String::new();
    let flush = |word: &mut String, out: &mut String| {
        if matches!(word.as_str(), "a" | "an" | "the") {
            out.push(' ');
        } else {
            out.push_str(word);
        }
        word.clear();
    };
    for c in without_punctuation.chars() {
        if c.is_alphanumeric() || c == '_' {
            word.push(c);
        } else {
            flush(&mut word, &mut without_articles);
            without_articles.push(c);
        }
    }
    flush(&mut word, &mut without_articles);
    super::common::python_split(&without_articles)
        .collect::<Vec<_>>()
        .join(" ")
}

/// SQuAD exact match of one prediction against one gold answer.
pub fn exact_match_score(prediction: &str, gold: &str) -> f64 {
    f64::from(u8::from(
        normalize_answer(prediction) == normalize_answer(gold),
    ))
}

/// SQuAD token F1 of one prediction against one gold answer.
pub fn token_f1_score(prediction: &str, gold: &str) -> f64 {
    let prediction = normalize_answer(prediction);
    let gold = normalize_answer(gold);
    let predicted: Vec<&str> = prediction.split(' ').filter(|t| !t.is_empty()).collect();
    let expected: Vec<&str> = gold.split(' ').filter(|t| !t.is_empty()).collect();
    let mut gold_counts: HashMap<&str, usize> = HashMap::new();
    for t in &expected {
        *gold_counts.entry(t).or_default() += 1;
    }
    let mut same = 0usize;
    for t in &predicted {
        if let Some(c) = gold_counts.get_mut(t) {
            if *c > 0 {
                *c -= 1;
                same += 1;
            }
        }
    }
    if same == 0 {
        return 0.0;
    }
    let precision = same as f64 / predicted.len() as f64;
    let recall = same as f64 / expected.len() as f64;
    2.0 * precision * recall / (precision + recall)
}

/// The gold answers: the output field's texts plus those of `answers` when present, unique.
fn gold_answers(example: &Example, key: &str, answers_key: Option<&str>) -> Vec<String> {
    let mut answers: Vec<String> = example.get(key).map(texts_of).unwrap_or_default();
    if let Some(extra) = answers_key.and_then(|k| example.get(k)) {
        for answer in texts_of(extra) {
            if !answers.contains(&answer) {
                answers.push(answer);
            }
        }
    }
    answers
}

/// The gold answers of an example, or a zero score saying they are missing.
fn golds_or_score(
    example: &Example,
    key: &str,
    answers_key: Option<&str>,
) -> Result<Vec<String>, Score> {
    let answers = gold_answers(example, key, answers_key);
    if answers.is_empty() {
        // Reuse the standard message.
        gold(example, key, 0.0)?;
        return Err(Score::with_feedback(
            0.0,
            format!("The example's `{key}` field holds no answer"),
        ));
    }
    Ok(answers)
}

/// SQuAD exact match: 1 when the normalised prediction equals a normalised gold answer.
#[derive(Debug, Clone)]
pub struct ExactMatch {
    output_key: String,
    answers_key: Option<String>,
}

impl ExactMatch {
    /// Compares the field `output_key`; alternative gold answers are read from `answers` when
    /// the example has it.
    pub fn new(output_key: impl Into<String>) -> Self {
        Self {
            output_key: output_key.into(),
            answers_key: Some(ANSWERS_KEY.to_string()),
        }
    }

    /// Builder: reads alternative gold answers from another field, or from none.
    pub fn with_answers_key(mut self, answers_key: Option<String>) -> Self {
        self.answers_key = answers_key;
        self
    }
}

impl Metric for ExactMatch {
    fn info(&self) -> MetricInfo {
        info("exact_match", true, 0.0, 1.0)
    }

    fn score(&self, example: &Example, prediction: &Prediction, _trace: &Trace) -> Score {
        let key = self.output_key.as_str();
        let answers = match golds_or_score(example, key, self.answers_key.as_deref()) {
            Ok(a) => a,
            Err(score) => return score,
        };
        let got = match predicted(prediction, key, 0.0) {
            Ok(text) => text,
            Err(score) => return score,
        };
        if answers.iter().any(|a| exact_match_score(&got, a) == 1.0) {
            Score::with_feedback(1.0, format!("Correct: `{}`", snippet(&got, 200)))
        } else {
            let expected: Vec<String> = answers.iter().map(|a| snippet(a, 200)).collect();
            Score::with_feedback(
                0.0,
                format!(
                    "Expected {}, got `{}`",
                    word_list(&expected, 5),
                    snippet(&got, 200)
                ),
            )
        }
    }
}

/// SQuAD token F1: the best token-overlap F1 against any gold answer.
#[derive(Debug, Clone)]
pub struct TokenF1 {
    output_key: String,
    answers_key: Option<String>,
}

impl TokenF1 {
    /// Compares the field `output_key`; alternative gold answers are read from `answers` when
    /// the example has it.
    pub fn new(output_key: impl Into<String>) -> Self {
        Self {
            output_key: output_key.into(),
            answers_key: Some(ANSWERS_KEY.to_string()),
        }
    }

    /// Builder: reads alternative gold answers from another field, or from none.
    pub fn with_answers_key(mut self, answers_key: Option<String>) -> Self {
        self.answers_key = answers_key;
        self
    }
}

impl Metric for TokenF1 {
    fn info(&self) -> MetricInfo {
        info("token_f1", true, 0.0, 1.0)
    }

    fn score(&self, example: &Example, prediction: &Prediction, _trace: &Trace) -> Score {
        let key = self.output_key.as_str();
        let answers = match golds_or_score(example, key, self.answers_key.as_deref()) {
            Ok(a) => a,
            Err(score) => return score,
        };
        let got = match predicted(prediction, key, 0.0) {
            Ok(text) => text,
            Err(score) => return score,
        };
        let (best_index, best) = answers
            .iter()
            .map(|a| token_f1_score(&got, a))
            .enumerate()
            .fold(
                (0, f64::MIN),
                |acc, (i, v)| if v > acc.1 { (i, v) } else { acc },
            );
        let best_answer = &answers[best_index];
        if best >= 1.0 {
            return Score::with_feedback(1.0, format!("Correct: `{}`", snippet(&got, 200)));
        }
        let normalized_gold = normalize_answer(best_answer);
        let normalized_got = normalize_answer(&got);
        let gold_tokens: Vec<&str> = normalized_gold
            .split(' ')
            .filter(|t| !t.is_empty())
            .collect();
        let got_tokens: Vec<&str> = normalized_got
            .split(' ')
            .filter(|t| !t.is_empty())
            .collect();
        let missing: Vec<String> = gold_tokens
            .iter()
            .filter(|t| !got_tokens.contains(t))
            .map(|t| t.to_string())
            .collect();
        let extra: Vec<String> = got_tokens
            .iter()
            .filter(|t| !gold_tokens.contains(t))
            .map(|t| t.to_string())
            .collect();
        let mut feedback = format!(
            "Token F1 {best:.2} against the expected answer `{}`",
            snippet(best_answer, 200)
        );
        if !missing.is_empty() {
            feedback.push_str(&format!("; missing words: {}", word_list(&missing, 10)));
        }
        if !extra.is_empty() {
            feedback.push_str(&format!("; extra words: {}", word_list(&extra, 10)));
        }
        Score::with_feedback(best, feedback)
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]

    use super::*;

    #[test]
    fn normalisation_follows_the_squad_script() {
        assert_eq!(normalize_answer("The Eiffel Tower!"), "eiffel tower");
        assert_eq!(
            normalize_answer("  a  cat,  an apple and THE dog "),
            "cat apple and dog"
        );
        assert_eq!(normalize_answer("theory of an-archy"), "theory of anarchy");
        assert_eq!(normalize_answer("the"), "");
        assert_eq!(normalize_answer("\"1,000\" dollars."), "1000 dollars");
        // Articles glued to other words stay; non-ASCII punctuation stays.
        assert_eq!(normalize_answer("Théâtre — the play"), "théâtre — play");
        assert_eq!(normalize_answer("a_b"), "ab");
    }

    #[test]
    fn exact_match_and_f1_values() {
        assert_eq!(
            exact_match_score("the Denver Broncos", "Denver Broncos"),
            1.0
        );
        assert_eq!(exact_match_score("Broncos", "Denver Broncos"), 0.0);
        // pred: denver broncos won ; gold: denver broncos -> p 2/3, r 1 -> 0.8
        assert!((token_f1_score("Denver Broncos won", "the Denver Broncos") - 0.8).abs() < 1e-12);
        assert_eq!(token_f1_score("", "Denver"), 0.0);
        assert_eq!(token_f1_score("", ""), 0.0);
        // Repeated tokens count as often as they occur in both.
        let f1 = token_f1_score("new new york", "new york york");
        assert!((f1 - 2.0 / 3.0).abs() < 1e-12, "{f1}");
    }

    #[test]
    fn uses_the_answers_list_and_explains() {
        let example = Example::new().with("answer", "Denver Broncos").with(
            "answers",
            serde_json::json!(["Denver Broncos", "the Broncos"]),
        );
        let prediction = Prediction {
            outputs: Example::new().with("answer", "Broncos"),
        };
        let em = ExactMatch::new("answer").score(&example, &prediction, &Trace::default());
        assert_eq!(em.value, 1.0);
        let f1 = TokenF1::new("answer").score(&example, &prediction, &Trace::default());
        assert_eq!(f1.value, 1.0);
        let no_list = TokenF1::new("answer").with_answers_key(None);
        let s = no_list.score(&example, &prediction, &Trace::default());
        assert!((s.value - 2.0 / 3.0).abs() < 1e-12);
        assert_eq!(
            s.feedback.unwrap(),
            "Token F1 0.67 against the expected answer `Denver Broncos`; missing words: `denver`"
        );
    }
}
