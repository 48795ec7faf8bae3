//! `OptimizationResult`: what a run found, measured and spent.

use serde::{Deserialize, Serialize};

use crate::{EvalReport, StopReason, TrialPoint};

/// Scores and measurements of one state on the validation set (the guide's
/// `PerformanceMetrics`).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct PerformanceMetrics {
    /// The metric's name.
    pub metric: String,
    /// The score on a 0–1 scale, higher better.
    pub score: f64,
    /// The score in the metric's own units.
    pub raw_score: f64,
    /// The guide's name for the score (the same value as `score`).
    pub accuracy: f64,
    /// Examples evaluated.
    pub examples: usize,
    /// Runs that failed.
    pub errors: usize,
    /// Median model time per example, ms.
    pub latency_p50_ms: Option<f64>,
    /// 95th percentile of model time per example, ms.
    pub latency_p95_ms: Option<f64>,
    /// Cost of the evaluation, USD (`None` when unknown).
    pub cost_usd: Option<f64>,
    /// Cost per example, USD.
    pub cost_per_sample: Option<f64>,
    /// Model calls.
    pub lm_calls: usize,
    /// Prompt plus completion tokens.
    pub tokens: u64,
}

impl PerformanceMetrics {
    /// The metrics of an evaluation report.
    pub fn from_report(metric: &str, report: &EvalReport) -> Self {
        let cost = report.cost_usd;
        let n = report.results.len();
        Self {
            metric: metric.to_string(),
            score: report.score,
            raw_score: report.raw_score,
            accuracy: report.score,
            examples: n,
            errors: report.errors,
            latency_p50_ms: report.latency_percentile_ms(50.0),
            latency_p95_ms: report.latency_percentile_ms(95.0),
            cost_usd: cost,
            cost_per_sample: cost.filter(|_| n > 0).map(|c| c / n as f64),
            lm_calls: report.lm_calls as usize,
            tokens: report.usage.total(),
        }
    }
}

/// Wall time and spending of one pipeline stage.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct StageTiming {
    /// `load`, `baseline`, `optimize`, `validate`, `save`.
    pub stage: String,
    /// Wall time, seconds.
    pub seconds: f64,
    /// Model calls made in the stage (cache hits included).
    pub lm_calls: u64,
    /// Of those, calls answered from the response cache.
    #[serde(default)]
    pub cache_hits: u64,
    /// Tokens spent in the stage.
    pub tokens: u64,
    /// Known cost of the stage, USD.
    pub cost_usd: f64,
}

/// One validation prediction (kept with `log_predictions`).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct LoggedPrediction {
    /// The example's inputs and expected outputs.
    pub example: promptopt_core::Example,
    /// What the optimized program answered (empty after a failure).
    pub prediction: promptopt_core::Example,
    /// Its normalized score.
    pub score: f64,
}

/// Spending and speed of a whole run (the guide's analytics).
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct Analytics {
    /// Known cost of the whole run, USD (`None` when any model's price is unknown).
    pub total_cost_usd: Option<f64>,
    /// Cost per validation example of the optimized program, USD.
    pub cost_per_sample: Option<f64>,
    /// Median model time per example of the optimized program, ms.
    pub latency_p50_ms: Option<f64>,
    /// 95th percentile of the same, ms.
    pub latency_p95_ms: Option<f64>,
    /// Model calls of the whole run.
    pub lm_calls: u64,
    /// Tokens of the whole run.
    pub total_tokens: u64,
    /// Calls answered from a cache or remembered evaluation.
    pub cache_hits: u64,
    /// Failed attempts that the retry layer sent again (throttling, server errors, timeouts,
    /// broken replies), of calls that then succeeded or failed.
    #[serde(default)]
    pub retries: u64,
    /// Calls that failed even after their retries (not counted in `lm_calls`).
    #[serde(default)]
    pub failed_calls: u64,
    /// Per stage.
    pub stages: Vec<StageTiming>,
    /// Validation predictions of the optimized program (with `log_predictions`).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub predictions: Vec<LoggedPrediction>,
}

/// One candidate model of `model_selection`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ModelReport {
    /// The model.
    pub model: String,
    /// Its best program's validation metrics.
    pub metrics: PerformanceMetrics,
    /// Whether it met the constraints.
    pub meets_constraints: bool,
    /// Why not, when it did not.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub violations: Vec<String>,
    /// Whether it was chosen.
    pub chosen: bool,
}

/// What an optimization run returns (the guide's `OptimizationResult`).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct OptimizationResult {
    /// This run's id.
    pub optimization_id: String,
    /// The saved model (`name@version`); `None` when nothing was saved (a failed constraint).
    pub model_id: Option<String>,
    /// The initial program on the validation set.
    pub baseline_metrics: PerformanceMetrics,
    /// The optimized program on the validation set.
    pub optimized_metrics: PerformanceMetrics,
    /// `(optimized − baseline) / baseline × 100` on the 0–1 score (`0` when the baseline is 0
    /// and nothing changed; the absolute gain × 100 when the baseline is 0).
    pub improvement_percentage: f64,
    /// The optimized prompt: the winner's messages for a template input, as text.
    pub optimized_prompt: Option<String>,
    /// The optimized state.
    pub optimized_config: promptopt_core::ProgramState,
    /// The algorithm.
    pub algorithm_used: String,
    /// Optimizer iterations completed.
    pub iterations_completed: usize,
    /// Wall time of the whole run, seconds.
    pub duration_seconds: f64,
    /// Known cost of the whole run, USD (`None` when unknown or not tracked).
    pub total_cost_usd: Option<f64>,
    /// The MLflow run that recorded this optimization (`None` when tracking is off).
    pub mlflow_run_id: Option<String>,
    /// Why the optimizer stopped early, if it did.
    pub stop_reason: Option<StopReason>,
    /// Things the user should know.
    pub warnings: Vec<String>,
    /// Constraints the result fails (`min_accuracy`, `max_latency_ms`, ...).
    pub constraint_failures: Vec<String>,
    /// Spending and speed (with `enable_analytics`).
    pub analytics: Option<Analytics>,
    /// Score per trial.
    pub trajectory: Vec<TrialPoint>,
    /// Per candidate model, for `model_selection`.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub model_reports: Vec<ModelReport>,
    /// The baseline and the optimized program on the request's `test_examples`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub test_metrics: Option<TestMetrics>,
    /// Size and content hash of each split the run used (`train`, `validation`, `test`).
    #[serde(default, skip_serializing_if = "std::collections::BTreeMap::is_empty")]
    pub datasets: std::collections::BTreeMap<String, DatasetSummary>,
    /// Per validation example of the optimized program: the example, its prediction, its score.
    /// Kept in memory for subscribers such as tracking, never serialized (`log_predictions`
    /// puts the same rows in `analytics.predictions`).
    #[serde(skip)]
    pub validation_results: Vec<LoggedPrediction>,
}

/// Size and content hash of one split of a run's examples.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct DatasetSummary {
    /// Examples in the split.
    pub examples: usize,
    /// sha256 of the examples' canonical JSON lines.
    pub sha256: String,
}

/// Scores on held-out test examples, measured once after the winner was chosen.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct TestMetrics {
    /// Test examples scored.
    pub examples: usize,
    /// The initial program.
    pub baseline: PerformanceMetrics,
    /// The optimized program.
    pub optimized: PerformanceMetrics,
    /// `(optimized − baseline) / baseline × 100`, as for validation.
    pub improvement_percentage: f64,
}

impl OptimizationResult {
    /// Whether every constraint holds.
    pub fn passed(&self) -> bool {
        self.constraint_failures.is_empty()
    }
}

/// `(optimized − baseline) / baseline × 100`; the absolute gain × 100 when the baseline is 0.
pub fn improvement_percentage(baseline: f64, optimized: f64) -> f64 {
    if baseline.abs() < 1e-12 {
        (optimized - baseline) * 100.0
    } else {
        (optimized - baseline) / baseline * 100.0
    }
}
