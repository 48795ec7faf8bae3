//! BLEU as `sacrebleu` computes it by default: `13a` tokenisation, up to 4-grams, clipped
//! counts against the per-n-gram maximum over references, brevity penalty from the closest
//! reference length (the shorter on ties), scores on 0–100.
//!
//! Sentence BLEU uses exponential smoothing (`exp`) and effective order, like
//! `sacrebleu.sentence_bleu`; corpus BLEU sums the statistics of all sentences and uses `exp`
//! smoothing without effective order, like `sacrebleu.corpus_bleu`.

use std::collections::HashMap;

use super::common::{gold, info, is_python_space, predicted, python_split, snippet, texts_of};
use crate::{Example, Metric, MetricInfo, Prediction, Score, Trace};

/// The highest n-gram order.
pub const MAX_ORDER: usize = 4;

/// Tokenises a segment as sacrebleu's `13a` tokenizer does (after its `rstrip`).
pub fn tokenize_13a(text: &str) -> String {
    let trimmed = text.trim_end_matches(is_python_space);
    let mut line = trimmed
        .replace("<skipped>", "")
        .replace("-\n", "")
        .replace('\n', " ");
    if line.contains('&') {
        line = line
            .replace("&quot;", "\"")
            .replace("&amp;", "&")
            .replace("&lt;", "<")
            .replace("&gt;", ">");
    }
    let chars: Vec<char> = format!(" {line} ").chars().collect();

    // 1. Most ASCII punctuation (not `'`, `,`, `-`, `.`) becomes its own token.
    let mut step1 = Vec::with_capacity(chars.len() * 2);
    for &c in &chars {
        let split = matches!(c, '{'..='~' | '['..='`' | ' '..='&' | '('..='+' | ':'..='@' | '/');
        if split {
            step1.extend([' ', c, ' ']);
        } else {
            step1.push(c);
        }
    }
    // 2. A period or comma after a non-digit; 3. before a non-digit; 4. a dash after a digit.
    let step2 = scan_pairs(
        &step1,
        |a, b| !a.is_ascii_digit() && matches!(b, '.' | ','),
        |a, b| vec![a, ' ', b, ' '],
    );
    let step3 = scan_pairs(
        &step2,
        |a, b| matches!(a, '.' | ',') && !b.is_ascii_digit(),
        |a, b| vec![' ', a, ' ', b],
    );
    let step4 = scan_pairs(
        &step3,
        |a, b| a.is_ascii_digit() && b == '-',
        |a, b| vec![a, ' ', b, ' '],
    );
    let joined: String = step4.into_iter().collect();
    python_split(&joined).collect::<Vec<_>>().join(" ")
}

/// A left-to-right, non-overlapping substitution of a two-character pattern, like `re.sub`.
fn scan_pairs(
    chars: &[char],
    matches: impl Fn(char, char) -> bool,
    replace: impl Fn(char, char) -> Vec<char>,
) -> Vec<char> {
    let mut out = Vec::with_capacity(chars.len() + chars.len() / 4);
    let mut i = 0;
    while i < chars.len() {
        if i + 1 < chars.len() && matches(chars[i], chars[i + 1]) {
            out.extend(replace(chars[i], chars[i + 1]));
            i += 2;
        } else {
            out.push(chars[i]);
            i += 1;
        }
    }
    out
}

/// The sufficient statistics of one segment: lengths and per-order matches and totals.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct BleuStats {
    /// Hypothesis length in tokens.
    pub hyp_len: usize,
    /// Closest reference length.
    pub ref_len: usize,
    /// Clipped matches per order.
    pub correct: [usize; MAX_ORDER],
    /// Hypothesis n-grams per order.
    pub total: [usize; MAX_ORDER],
}

impl std::ops::AddAssign for BleuStats {
    fn add_assign(&mut self, other: Self) {
        self.hyp_len += other.hyp_len;
        self.ref_len += other.ref_len;
        for n in 0..MAX_ORDER {
            self.correct[n] += other.correct[n];
            self.total[n] += other.total[n];
        }
    }
}

fn ngrams(tokens: &[&str]) -> HashMap<Vec<String>, usize> {
    let mut counts = HashMap::new();
    for n in 1..=MAX_ORDER {
        if tokens.len() >= n {
            for window in tokens.windows(n) {
                let gram: Vec<String> = window.iter().map(|t| (*t).to_string()).collect();
                *counts.entry(gram).or_insert(0) += 1;
            }
        }
    }
    counts
}

/// The statistics of a hypothesis against its references (raw, untokenised text).
pub fn segment_stats(hypothesis: &str, references: &[String]) -> BleuStats {
    let mut ref_counts: HashMap<Vec<String>, usize> = HashMap::new();
    let mut ref_lens = Vec::with_capacity(references.len());
    for reference in references {
        let tokenized = tokenize_13a(reference);
        let tokens: Vec<&str> = tokenized.split(' ').filter(|t| !t.is_empty()).collect();
        ref_lens.push(tokens.len());
        for (gram, count) in ngrams(&tokens) {
            let entry = ref_counts.entry(gram).or_insert(0);
            *entry = (*entry).max(count);
        }
    }
    let tokenized = tokenize_13a(hypothesis);
    let tokens: Vec<&str> = tokenized.split(' ').filter(|t| !t.is_empty()).collect();
    let hyp_len = tokens.len();
    // Closest reference length, the shorter on ties.
    let mut ref_len = 0usize;
    let mut best_diff: Option<usize> = None;
    for &len in &ref_lens {
        let diff = hyp_len.abs_diff(len);
        match best_diff {
            None => {
                best_diff = Some(diff);
                ref_len = len;
            }
            Some(d) if diff < d => {
                best_diff = Some(diff);
                ref_len = len;
            }
            Some(d) if diff == d && len < ref_len => ref_len = len,
            _ => {}
        }
    }
    let mut stats = BleuStats {
        hyp_len,
        ref_len,
        ..BleuStats::default()
    };
    for (gram, count) in ngrams(&tokens) {
        let n = gram.len() - 1;
        stats.total[n] += count;
        if let Some(&r) = ref_counts.get(&gram) {
            stats.correct[n] += count.min(r);
        }
    }
    stats
}

/// BLEU (0–100) from statistics with `exp` smoothing, with or without effective order.
pub fn bleu_from_stats(stats: &BleuStats, effective_order: bool) -> f64 {
    let (sys_len, ref_len) = (stats.hyp_len as f64, stats.ref_len as f64);
    let bp = if stats.hyp_len < stats.ref_len {
        if stats.hyp_len > 0 {
            (1.0 - ref_len / sys_len).exp()
        } else {
            0.0
        }
    } else {
        1.0
    };
    if stats.correct.iter().all(|&c| c == 0) {
        return 0.0;
    }
    let mut precisions = [0.0f64; MAX_ORDER];
    let mut smooth = 1.0f64;
    let mut eff_order = MAX_ORDER;
    for n in 1..=MAX_ORDER {
        let total = stats.total[n - 1];
        if total == 0 {
            break;
        }
        if effective_order {
            eff_order = n;
        }
        let correct = stats.correct[n - 1];
        precisions[n - 1] = if correct == 0 {
            smooth *= 2.0;
            100.0 / (smooth * total as f64)
        } else {
            100.0 * correct as f64 / total as f64
        };
    }
    let log_sum: f64 = precisions[..eff_order]
        .iter()
        .map(|&p| if p == 0.0 { -9_999_999_999.0 } else { p.ln() })
        .sum();
    bp * (log_sum / eff_order as f64).exp()
}

/// Sentence BLEU (0–100) as `sacrebleu.sentence_bleu` computes it by default.
pub fn sentence_bleu(hypothesis: &str, references: &[String]) -> f64 {
    bleu_from_stats(&segment_stats(hypothesis, references), true)
}

/// Corpus BLEU (0–100) as `sacrebleu.corpus_bleu` computes it by default; each hypothesis
/// has its own list of references.
pub fn corpus_bleu(pairs: &[(String, Vec<String>)]) -> f64 {
    let mut total = BleuStats::default();
    for (hypothesis, references) in pairs {
        total += segment_stats(hypothesis, references);
    }
    bleu_from_stats(&total, false)
}

/// BLEU of the output field against the gold text (or each text of a gold list), 0–100:
/// sentence BLEU per example and corpus BLEU over a dataset.
#[derive(Debug, Clone)]
pub struct Bleu {
    output_key: String,
}

impl Bleu {
    /// Compares the field `output_key`.
    pub fn new(output_key: impl Into<String>) -> Self {
        Self {
            output_key: output_key.into(),
        }
    }
}

impl Metric for Bleu {
    fn info(&self) -> MetricInfo {
        info("bleu", true, 0.0, 100.0)
    }

    fn score(&self, example: &Example, prediction: &Prediction, _trace: &Trace) -> Score {
        let key = self.output_key.as_str();
        let references = match gold(example, key, 0.0) {
            Ok(value) => texts_of(value),
            Err(score) => return score,
        };
        let got = match predicted(prediction, key, 0.0) {
            Ok(text) => text,
            Err(score) => return score,
        };
        let stats = segment_stats(&got, &references);
        let value = bleu_from_stats(&stats, true);
        let precisions: Vec<String> = (0..MAX_ORDER)
            .filter(|&n| stats.total[n] > 0)
            .map(|n| format!("{}/{}", stats.correct[n], stats.total[n]))
            .collect();
        let mut feedback = format!(
            "BLEU {value:.1}; matched n-grams (1- to 4-grams): {}; output {} tokens, reference {} tokens",
            if precisions.is_empty() { "none".to_string() } else { precisions.join(", ") },
            stats.hyp_len,
            stats.ref_len
        );
        if stats.hyp_len < stats.ref_len {
            feedback.push_str(" (shorter than the reference: brevity penalty)");
        }
        if let Some(first) = references.first() {
            feedback.push_str(&format!("; reference `{}`", snippet(first, 300)));
        }
        Score::with_feedback(value, feedback)
    }

    fn corpus_score(&self, pairs: &[(&Example, &Prediction)]) -> Option<f64> {
        let key = self.output_key.as_str();
        let segments: Vec<(String, Vec<String>)> = pairs
            .iter()
            .filter_map(|(example, prediction)| {
                let references = texts_of(example.get(key)?);
                Some((prediction.text(key).unwrap_or_default(), references))
            })
            .collect();
        Some(corpus_bleu(&segments))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tokenizes_like_13a() {
        assert_eq!(tokenize_13a("Hello, world!"), "Hello , world !");
        assert_eq!(
            tokenize_13a("It costs $3.50, really."),
            "It costs $ 3.50 , really ."
        );
        assert_eq!(tokenize_13a("1990-2000 don't"), "1990 - 2000 don't");
        assert_eq!(tokenize_13a("a &amp; b &lt;c&gt;"), "a & b < c >");
        assert_eq!(tokenize_13a("line-\nbreak\nhere  "), "linebreak here");
        assert_eq!(tokenize_13a(""), "");
    }

    #[test]
    fn perfect_and_empty() {
        let refs = vec!["the cat sat on the mat".to_string()];
        assert!((sentence_bleu("the cat sat on the mat", &refs) - 100.0).abs() < 1e-9);
        assert_eq!(sentence_bleu("", &refs), 0.0);
        assert_eq!(sentence_bleu("dog", &refs), 0.0);
    }
}
