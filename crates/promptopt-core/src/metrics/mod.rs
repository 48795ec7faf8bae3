//! Metrics: how good a prediction is.
//!
//! A [`Metric`] scores one prediction against its example and may explain the score in a
//! feedback text (GEPA reflects on it). Corpus-level metrics (macro-F1, corpus BLEU) also
//! override [`Metric::corpus_score`], which the evaluator uses for the aggregate.

use serde::{Deserialize, Serialize};

use crate::{Example, Prediction, Trace};

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

    /// The corpus-level value over all predictions, for metrics that are not a mean of
    /// per-example scores (macro-F1, corpus BLEU). `None` means: the mean of the per-example
    /// scores.
    fn corpus_score(&self, _pairs: &[(&Example, &Prediction)]) -> Option<f64> {
        None
    }
}
