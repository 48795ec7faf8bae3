//! Label metrics: accuracy and macro-F1.

use std::collections::{BTreeMap, BTreeSet};

use super::common::{gold, info, normalize_label, predicted, texts_of};
use crate::{Example, Metric, MetricInfo, Prediction, Score, Trace};

/// Whether the predicted label equals the gold label after trimming and lowercasing.
///
/// A gold value that is a list accepts any of its elements.
#[derive(Debug, Clone)]
pub struct Accuracy {
    output_key: String,
}

impl Accuracy {
    /// Compares the field `output_key` of the prediction and the example.
    pub fn new(output_key: impl Into<String>) -> Self {
        Self {
            output_key: output_key.into(),
        }
    }
}

/// 1 when the prediction matches a gold label (normalised), 0 otherwise, with feedback.
fn label_score(key: &str, example: &Example, prediction: &Prediction) -> Score {
    let gold_value = match gold(example, key, 0.0) {
        Ok(v) => v,
        Err(score) => return score,
    };
    let golds = texts_of(gold_value);
    let expected = golds.first().cloned().unwrap_or_default();
    let got = match predicted(prediction, key, 0.0) {
        Ok(text) => text,
        Err(_) => {
            return Score::with_feedback(
                0.0,
                format!("Expected `{expected}`, but the prediction has no `{key}` field"),
            )
        }
    };
    let normalized = normalize_label(&got);
    if golds.iter().any(|g| normalize_label(g) == normalized) {
        Score::with_feedback(1.0, format!("Correct: `{}`", got.trim()))
    } else {
        Score::with_feedback(0.0, format!("Expected `{expected}`, got `{}`", got.trim()))
    }
}

impl Metric for Accuracy {
    fn info(&self) -> MetricInfo {
        info("accuracy", true, 0.0, 1.0)
    }

    fn score(&self, example: &Example, prediction: &Prediction, _trace: &Trace) -> Score {
        label_score(&self.output_key, example, prediction)
    }
}

/// Macro-averaged F1 over labels, as scikit-learn's `f1_score(average="macro")` computes it.
///
/// The labels are every (normalised) gold and predicted label; each label's F1 is
/// `2·TP / (2·TP + FP + FN)`, and the corpus score is their unweighted mean. A missing
/// prediction counts as a miss for its gold label and as no label. The per-example score is
/// correctness (1 or 0), so the evaluator's mean of per-example scores is accuracy; the
/// corpus value comes from [`Metric::corpus_score`].
#[derive(Debug, Clone)]
pub struct MacroF1 {
    output_key: String,
}

impl MacroF1 {
    /// Compares the field `output_key` of the prediction and the example.
    pub fn new(output_key: impl Into<String>) -> Self {
        Self {
            output_key: output_key.into(),
        }
    }
}

/// Macro-F1 of `(gold, predicted)` label pairs; `None` predictions are misses.
pub fn macro_f1<'a>(pairs: impl IntoIterator<Item = (&'a str, Option<&'a str>)>) -> f64 {
    #[derive(Default)]
    struct Counts {
        tp: u64,
        fp: u64,
        fn_: u64,
    }
    let mut counts: BTreeMap<String, Counts> = BTreeMap::new();
    let mut labels = BTreeSet::new();
    for (gold, pred) in pairs {
        let gold = normalize_label(gold);
        labels.insert(gold.clone());
        match pred.map(normalize_label) {
            Some(pred) if pred == gold => counts.entry(gold).or_default().tp += 1,
            Some(pred) => {
                labels.insert(pred.clone());
                counts.entry(pred).or_default().fp += 1;
                counts.entry(gold).or_default().fn_ += 1;
            }
            None => counts.entry(gold).or_default().fn_ += 1,
        }
    }
    if labels.is_empty() {
        return 0.0;
    }
    let total: f64 = labels
        .iter()
        .map(|label| {
            let c = counts.get(label);
            let (tp, fp, fn_) = c.map_or((0, 0, 0), |c| (c.tp, c.fp, c.fn_));
            let denominator = 2 * tp + fp + fn_;
            if denominator == 0 {
                0.0
            } else {
                (2 * tp) as f64 / denominator as f64
            }
        })
        .sum();
    total / labels.len() as f64
}

impl Metric for MacroF1 {
    fn info(&self) -> MetricInfo {
        info("f1", true, 0.0, 1.0)
    }

    fn score(&self, example: &Example, prediction: &Prediction, _trace: &Trace) -> Score {
        label_score(&self.output_key, example, prediction)
    }

    fn corpus_score(&self, pairs: &[(&Example, &Prediction)]) -> Option<f64> {
        let key = self.output_key.as_str();
        let labelled: Vec<(String, Option<String>)> = pairs
            .iter()
            .filter_map(|(example, prediction)| {
                let gold = example.get(key).map(texts_of)?.into_iter().next()?;
                Some((gold, prediction.text(key)))
            })
            .collect();
        if labelled.is_empty() {
            return Some(0.0);
        }
        Some(macro_f1(
            labelled.iter().map(|(g, p)| (g.as_str(), p.as_deref())),
        ))
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]

    use super::*;

    fn pair(gold: &str, pred: &str) -> (Example, Prediction) {
        (
            Example::new().with("label", gold),
            Prediction {
                outputs: Example::new().with("label", pred),
            },
        )
    }

    #[test]
    fn accuracy_normalises_and_explains() {
        let m = Accuracy::new("label");
        let (e, p) = pair("Positive", "  positive\n");
        assert_eq!(m.score(&e, &p, &Trace::default()).value, 1.0);
        let (e, p) = pair("positive", "negative");
        let s = m.score(&e, &p, &Trace::default());
        assert_eq!(s.value, 0.0);
        assert_eq!(s.feedback.unwrap(), "Expected `positive`, got `negative`");
        let s = m.score(&e, &Prediction::default(), &Trace::default());
        assert_eq!(s.value, 0.0);
        assert_eq!(
            s.feedback.unwrap(),
            "Expected `positive`, but the prediction has no `label` field"
        );
    }

    #[test]
    fn macro_f1_matches_a_hand_computation() {
        // gold: a a a b b c ; pred: a a b b c c
        // a: tp 2 fp 0 fn 1 -> 4/5 ; b: tp 1 fp 1 fn 1 -> 2/4 ; c: tp 1 fp 1 fn 0 -> 2/3
        let data = [
            ("a", "a"),
            ("a", "a"),
            ("a", "b"),
            ("b", "b"),
            ("b", "c"),
            ("c", "c"),
        ];
        let pairs: Vec<(Example, Prediction)> = data.iter().map(|(g, p)| pair(g, p)).collect();
        let refs: Vec<(&Example, &Prediction)> = pairs.iter().map(|(e, p)| (e, p)).collect();
        let value = MacroF1::new("label").corpus_score(&refs).unwrap();
        let expected = (0.8 + 0.5 + 2.0 / 3.0) / 3.0;
        assert!((value - expected).abs() < 1e-12, "{value} vs {expected}");
    }

    #[test]
    fn macro_f1_counts_labels_only_predicted() {
        // gold: a b ; pred: a z -> labels a, b, z: a 1, b 0, z 0.
        let value = macro_f1([("a", Some("a")), ("b", Some("z"))]);
        assert!((value - 1.0 / 3.0).abs() < 1e-12);
        // A missing prediction is a miss but adds no label.
        let value = macro_f1([("a", Some("a")), ("b", None)]);
        assert!((value - 0.5).abs() < 1e-12);
    }
}
