//! Metrics: how good a prediction is.
//!
//! A [`Metric`] scores one prediction against its example and may explain the score in a
//! feedback text (GEPA reflects on it). Corpus-level metrics (macro-F1, corpus BLEU) also
//! override [`Metric::corpus_score`], which the evaluator uses for the aggregate.
//!
//! [`by_name`] builds the built-in metrics from the names request files use; [`FnMetric`] and
//! [`CommandMetric`] wrap user code.
//!
//! ```
//! use promptopt_core::metrics::by_name;
//! use promptopt_core::{Example, Prediction, Trace};
//!
//! let metric = by_name("accuracy", "label")?;
//! let example = Example::new().with("text", "great film").with("label", "positive");
//! let prediction = Prediction { outputs: Example::new().with("label", "Negative") };
//! let score = metric.score(&example, &prediction, &Trace::default());
//! assert_eq!(score.value, 0.0);
//! assert_eq!(score.feedback.as_deref(), Some("Expected `positive`, got `Negative`"));
//! # Ok::<(), promptopt_core::CoreError>(())
//! ```

mod bleu;
mod classification;
mod common;
mod custom;
mod numeric;
mod porter;
mod ranking;
mod rouge;
mod runtime;
mod squad;

use std::sync::Arc;

use serde::{Deserialize, Serialize};

pub use bleu::{
    bleu_from_stats, corpus_bleu, segment_stats, sentence_bleu, tokenize_13a, Bleu, BleuStats,
};
pub use classification::{macro_f1, Accuracy, MacroF1};
pub use custom::{parse_metric_reply, CommandMetric, FnMetric, DEFAULT_COMMAND_TIMEOUT};
pub use numeric::{extract_numbers, final_number, numbers_equal, NumericMatch};
pub use porter::porter_stem;
pub use ranking::{
    average_precision, ndcg_at_k, parse_ranking, parse_relevance, MeanAveragePrecision, Ndcg,
};
pub use rouge::{rouge, rouge_multi, rouge_tokenize, Rouge, RougeKind, RougeScore};
pub use runtime::{Cost, Latency};
pub use squad::{
    exact_match_score, normalize_answer, token_f1_score, ExactMatch, TokenF1, ANSWERS_KEY,
};

use crate::{CoreError, Example, Prediction, Trace};

/// The score of one prediction.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Score {
    /// The value, within the metric's range.
    pub value: f64,
    /// Why, in words (e.g. the expected label), when the metric can say.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub feedback: Option<String>,
}

impl Score {
    /// A score without feedback.
    pub fn new(value: f64) -> Self {
        Self {
            value,
            feedback: None,
        }
    }

    /// A score with feedback.
    pub fn with_feedback(value: f64, feedback: impl Into<String>) -> Self {
        Self {
            value,
            feedback: Some(feedback.into()),
        }
    }
}

/// What a metric is called and how to read it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct MetricInfo {
    /// Its name, as request files spell it.
    pub name: String,
    /// Whether a higher value is better.
    pub higher_is_better: bool,
    /// The lowest possible value.
    pub min: f64,
    /// The highest possible value (`f64::INFINITY` when unbounded).
    pub max: f64,
}

/// A per-example metric, optionally with a corpus-level aggregate.
pub trait Metric: Send + Sync {
    /// Name, direction and range.
    fn info(&self) -> MetricInfo;

    /// Scores one prediction. `trace` gives latency, cost and raw replies.
    fn score(&self, example: &Example, prediction: &Prediction, trace: &Trace) -> Score;

    /// Scores one prediction, or says why the metric could not (a command metric whose process
    /// died twice or answered something that is not a score). Evaluations stop on such an
    /// error. The default never fails.
    fn try_score(
        &self,
        example: &Example,
        prediction: &Prediction,
        trace: &Trace,
    ) -> Result<Score, CoreError> {
        Ok(self.score(example, prediction, trace))
    }

    /// The corpus-level value over all predictions, for metrics that are not a mean of
    /// per-example scores (macro-F1, corpus BLEU). `None` means: the mean of the per-example
    /// scores.
    fn corpus_score(&self, _pairs: &[(&Example, &Prediction)]) -> Option<f64> {
        None
    }

    /// Whether [`Metric::score`] blocks the calling thread (e.g. on another process), so that
    /// async callers must run it with `tokio::task::spawn_blocking`. `false` by default.
    fn is_blocking(&self) -> bool {
        false
    }
}

/// The default cutoff of `ndcg` (`ndcg@k` sets another).
pub const DEFAULT_NDCG_K: usize = 10;

/// The metric names [`by_name`] knows (aliases besides: `f1_score`, `macro_f1`, `em`,
/// `rouge_score`, `rouge_l`, `bleu_score`, and `ndcg@K`, `map@K` with a cutoff).
pub const METRIC_NAMES: [&str; 14] = [
    "accuracy",
    "f1",
    "exact_match",
    "token_f1",
    "rouge",
    "rouge1",
    "rouge2",
    "rougeL",
    "bleu",
    "numeric_match",
    "ndcg",
    "map",
    "latency",
    "cost",
];

/// A built-in metric by name (case-insensitive), comparing the field `output_key`.
///
/// `accuracy`; `f1` / `f1_score` / `macro_f1` (macro-F1 over labels); `exact_match` / `em` and
/// `token_f1` (SQuAD); `rouge` / `rouge_score` / `rougeL` / `rouge_l`, `rouge1`, `rouge2`
/// (F-measure, no stemming); `bleu` / `bleu_score` (sacrebleu, 0–100); `numeric_match`;
/// `ndcg` (NDCG@10) or `ndcg@K`; `map` or `map@K`; `latency` (ms) and `cost` (USD).
pub fn by_name(name: &str, output_key: &str) -> Result<Arc<dyn Metric>, CoreError> {
    let lowered = name.trim().to_ascii_lowercase();
    let cutoff = |prefix: &str| -> Option<Result<usize, CoreError>> {
        let rest = lowered.strip_prefix(prefix)?;
        Some(
            rest.parse::<usize>()
                .ok()
                .filter(|k| *k > 0)
                .ok_or_else(|| CoreError::Invalid {
                    what: format!("metric `{name}`"),
                    message: "the cutoff after `@` must be a whole number of at least 1"
                        .to_string(),
                }),
        )
    };
    if let Some(k) = cutoff("ndcg@") {
        return Ok(Arc::new(Ndcg::new(output_key, k?)));
    }
    if let Some(k) = cutoff("map@") {
        return Ok(Arc::new(MeanAveragePrecision::new(output_key, Some(k?))));
    }
    let metric: Arc<dyn Metric> = match lowered.as_str() {
        "accuracy" => Arc::new(Accuracy::new(output_key)),
        "f1" | "f1_score" | "macro_f1" => Arc::new(MacroF1::new(output_key)),
        "exact_match" | "em" => Arc::new(ExactMatch::new(output_key)),
        "token_f1" => Arc::new(TokenF1::new(output_key)),
        "rouge" | "rouge_score" | "rougel" | "rouge_l" => {
            Arc::new(Rouge::new(RougeKind::RougeL, output_key))
        }
        "rouge1" => Arc::new(Rouge::new(RougeKind::Rouge1, output_key)),
        "rouge2" => Arc::new(Rouge::new(RougeKind::Rouge2, output_key)),
        "bleu" | "bleu_score" => Arc::new(Bleu::new(output_key)),
        "numeric_match" => Arc::new(NumericMatch::new(output_key)),
        "ndcg" => Arc::new(Ndcg::new(output_key, DEFAULT_NDCG_K)),
        "map" => Arc::new(MeanAveragePrecision::new(output_key, None)),
        "latency" => Arc::new(Latency),
        "cost" => Arc::new(Cost),
        _ => {
            return Err(CoreError::UnknownMetric {
                name: name.to_string(),
                known: METRIC_NAMES
                    .iter()
                    .map(|n| format!("`{n}`"))
                    .collect::<Vec<_>>()
                    .join(", "),
            })
        }
    };
    Ok(metric)
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]

    use super::*;

    #[test]
    fn looks_up_every_known_name_and_alias() {
        for name in METRIC_NAMES {
            assert!(by_name(name, "answer").is_ok(), "{name}");
        }
        assert_eq!(by_name("F1_Score", "label").unwrap().info().name, "f1");
        assert_eq!(by_name("rouge_score", "s").unwrap().info().name, "rougeL");
        assert_eq!(by_name("bleu_score", "s").unwrap().info().max, 100.0);
        assert_eq!(by_name("ndcg@5", "docs").unwrap().info().name, "ndcg@5");
        assert_eq!(by_name("map@3", "docs").unwrap().info().name, "map@3");
        assert!(!by_name("latency", "x").unwrap().info().higher_is_better);
    }

    #[test]
    fn unknown_metric_lists_the_known_ones() {
        let err = by_name("semantic_similarity", "answer")
            .err()
            .unwrap()
            .to_string();
        assert_eq!(
            err,
            "Unknown metric `semantic_similarity`; known metrics: `accuracy`, `f1`, \
             `exact_match`, `token_f1`, `rouge`, `rouge1`, `rouge2`, `rougeL`, `bleu`, \
             `numeric_match`, `ndcg`, `map`, `latency`, `cost`"
        );
        let err = by_name("ndcg@x", "docs").err().unwrap().to_string();
        assert!(err.starts_with("Invalid metric `ndcg@x`"), "{err}");
    }
}
