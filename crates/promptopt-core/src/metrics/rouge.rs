//! ROUGE-1, ROUGE-2 and ROUGE-L F-measure, as Google's `rouge-score` package computes them.
//!
//! Tokenisation follows its default tokenizer: lowercase, every run of characters other than
//! `a-z0-9` becomes a space, split on whitespace, and (when stemming is on) tokens longer than
//! three characters are stemmed with the Porter stemmer of NLTK ([`porter_stem`]). With several
//! references the score is that of the reference with the highest F-measure (its
//! `score_multi`).

use std::collections::HashMap;

use super::common::{fmeasure, gold, info, predicted, snippet, texts_of, word_list};
use super::porter::porter_stem;
use crate::{Example, Metric, MetricInfo, Prediction, Score, Trace};

/// Which ROUGE variant.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RougeKind {
    /// Unigram overlap.
    Rouge1,
    /// Bigram overlap.
    Rouge2,
    /// Longest common subsequence.
    RougeL,
}

impl RougeKind {
    /// The metric name (`rouge1`, `rouge2`, `rougeL`).
    pub fn name(self) -> &'static str {
        match self {
            Self::Rouge1 => "rouge1",
            Self::Rouge2 => "rouge2",
            Self::RougeL => "rougeL",
        }
    }
}

/// Precision, recall and F-measure.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct RougeScore {
    /// Matched units over prediction units.
    pub precision: f64,
    /// Matched units over reference units.
    pub recall: f64,
    /// Their harmonic mean.
    pub fmeasure: f64,
}

/// Tokenises text as `rouge-score`'s default tokenizer does.
pub fn rouge_tokenize(text: &str, stem: bool) -> Vec<String> {
    let lowered = text.to_lowercase();
    let mut tokens = Vec::new();
    let mut current = String::new();
    for c in lowered.chars() {
        if c.is_ascii_lowercase() || c.is_ascii_digit() {
            current.push(c);
        } else if !current.is_empty() {
            tokens.push(std::mem::take(&mut current));
        }
    }
    if !current.is_empty() {
        tokens.push(current);
    }
    if stem {
        for token in &mut tokens {
            if token.chars().count() > 3 {
                *token = porter_stem(token);
            }
        }
        tokens.retain(|t| !t.is_empty());
    }
    tokens
}

fn ngram_counts(tokens: &[String], n: usize) -> HashMap<&[String], usize> {
    let mut counts = HashMap::new();
    if tokens.len() >= n {
        for window in tokens.windows(n) {
            *counts.entry(window).or_insert(0) += 1;
        }
    }
    counts
}

fn score_ngrams(target: &[String], prediction: &[String], n: usize) -> RougeScore {
    let target_counts = ngram_counts(target, n);
    let prediction_counts = ngram_counts(prediction, n);
    let overlap: usize = target_counts
        .iter()
        .map(|(gram, &c)| c.min(prediction_counts.get(gram).copied().unwrap_or(0)))
        .sum();
    let target_total: usize = target_counts.values().sum();
    let prediction_total: usize = prediction_counts.values().sum();
    let precision = overlap as f64 / prediction_total.max(1) as f64;
    let recall = overlap as f64 / target_total.max(1) as f64;
    RougeScore {
        precision,
        recall,
        fmeasure: fmeasure(precision, recall),
    }
}

fn lcs_length(a: &[String], b: &[String]) -> usize {
    let mut previous = vec![0usize; b.len() + 1];
    let mut current = vec![0usize; b.len() + 1];
    for x in a {
        for (j, y) in b.iter().enumerate() {
            current[j + 1] = if x == y {
                previous[j] + 1
            } else {
                previous[j + 1].max(current[j])
            };
        }
        std::mem::swap(&mut previous, &mut current);
    }
    previous[b.len()]
}

fn score_lcs(target: &[String], prediction: &[String]) -> RougeScore {
    if target.is_empty() || prediction.is_empty() {
        return RougeScore {
            precision: 0.0,
            recall: 0.0,
            fmeasure: 0.0,
        };
    }
    let lcs = lcs_length(target, prediction) as f64;
    let precision = lcs / prediction.len() as f64;
    let recall = lcs / target.len() as f64;
    RougeScore {
        precision,
        recall,
        fmeasure: fmeasure(precision, recall),
    }
}

/// The ROUGE score of a prediction against one reference.
pub fn rouge(kind: RougeKind, target: &str, prediction: &str, stem: bool) -> RougeScore {
    let target = rouge_tokenize(target, stem);
    let prediction = rouge_tokenize(prediction, stem);
    match kind {
        RougeKind::Rouge1 => score_ngrams(&target, &prediction, 1),
        RougeKind::Rouge2 => score_ngrams(&target, &prediction, 2),
        RougeKind::RougeL => score_lcs(&target, &prediction),
    }
}

/// The ROUGE score against several references: the one with the highest F-measure (the first
/// on ties); zero when there are no references.
pub fn rouge_multi(
    kind: RougeKind,
    targets: &[String],
    prediction: &str,
    stem: bool,
) -> RougeScore {
    let mut best: Option<RougeScore> = None;
    for target in targets {
        let score = rouge(kind, target, prediction, stem);
        if best.is_none_or(|b| score.fmeasure > b.fmeasure) {
            best = Some(score);
        }
    }
    best.unwrap_or(RougeScore {
        precision: 0.0,
        recall: 0.0,
        fmeasure: 0.0,
    })
}

/// ROUGE F-measure of the output field against the gold text (or each text of a gold list).
#[derive(Debug, Clone)]
pub struct Rouge {
    kind: RougeKind,
    output_key: String,
    stem: bool,
}

impl Rouge {
    /// Compares the field `output_key`, without stemming (the `rouge-score` default).
    pub fn new(kind: RougeKind, output_key: impl Into<String>) -> Self {
        Self {
            kind,
            output_key: output_key.into(),
            stem: false,
        }
    }

    /// Builder: turns Porter stemming on or off.
    pub fn with_stemmer(mut self, stem: bool) -> Self {
        self.stem = stem;
        self
    }
}

impl Metric for Rouge {
    fn info(&self) -> MetricInfo {
        info(self.kind.name(), true, 0.0, 1.0)
    }

    fn score(&self, example: &Example, prediction: &Prediction, _trace: &Trace) -> Score {
        let key = self.output_key.as_str();
        let targets = match gold(example, key, 0.0) {
            Ok(value) => texts_of(value),
            Err(score) => return score,
        };
        let got = match predicted(prediction, key, 0.0) {
            Ok(text) => text,
            Err(score) => return score,
        };
        let score = rouge_multi(self.kind, &targets, &got, self.stem);
        // Explain with the reference the score came from.
        let reference = targets
            .iter()
            .find(|t| rouge(self.kind, t, &got, self.stem).fmeasure == score.fmeasure)
            .cloned()
            .unwrap_or_default();
        let predicted_tokens = rouge_tokenize(&got, self.stem);
        let missing: Vec<String> = {
            let mut seen = Vec::new();
            for t in rouge_tokenize(&reference, self.stem) {
                if !predicted_tokens.contains(&t) && !seen.contains(&t) {
                    seen.push(t);
                }
            }
            seen
        };
        let mut feedback = format!(
            "{} {:.3} (precision {:.3}, recall {:.3}) against the reference `{}`",
            self.kind.name(),
            score.fmeasure,
            score.precision,
            score.recall,
            snippet(&reference, 300)
        );
        if !missing.is_empty() {
            feedback.push_str(&format!(
                "; reference words missing from the output: {}",
                word_list(&missing, 12)
            ));
        }
        if score.precision < score.recall {
            feedback.push_str("; the output has words the reference lacks (too long?)");
        } else if score.recall < score.precision {
            feedback.push_str("; the output misses reference content (too short?)");
        }
        Score::with_feedback(score.fmeasure, feedback)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tokenizer_matches_rouge_score() {
        assert_eq!(
            rouge_tokenize("The cat's hat, 3.5 déjà-vu!", false),
            ["the", "cat", "s", "hat", "3", "5", "d", "j", "vu"]
        );
        assert_eq!(
            rouge_tokenize("Running dogs ran", true),
            ["run", "dog", "ran"]
        );
        assert!(rouge_tokenize("  ...  ", false).is_empty());
    }

    #[test]
    fn scores_by_hand() {
        // target: the cat sat on the mat (6) ; prediction: the cat on the mat (5)
        let r1 = rouge(
            RougeKind::Rouge1,
            "the cat sat on the mat",
            "the cat on the mat",
            false,
        );
        assert!((r1.precision - 1.0).abs() < 1e-12);
        assert!((r1.recall - 5.0 / 6.0).abs() < 1e-12);
        // bigrams: target 5, prediction 4, common: the-cat, on-the, the-mat = 3
        let r2 = rouge(
            RougeKind::Rouge2,
            "the cat sat on the mat",
            "the cat on the mat",
            false,
        );
        assert!((r2.fmeasure - fmeasure(3.0 / 4.0, 3.0 / 5.0)).abs() < 1e-12);
        let rl = rouge(
            RougeKind::RougeL,
            "the cat sat on the mat",
            "the cat on the mat",
            false,
        );
        assert!((rl.fmeasure - fmeasure(1.0, 5.0 / 6.0)).abs() < 1e-12);
        assert_eq!(rouge(RougeKind::RougeL, "", "x", false).fmeasure, 0.0);
    }
}
