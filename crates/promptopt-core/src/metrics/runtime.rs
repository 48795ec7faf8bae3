//! Run-time metrics read from the trace: latency and cost (lower is better).

use super::common::info;
use crate::{Example, Metric, MetricInfo, Prediction, Score, Trace};

/// Total model wall time of the run, in milliseconds.
#[derive(Debug, Clone, Default)]
pub struct Latency;

impl Metric for Latency {
    fn info(&self) -> MetricInfo {
        info("latency", false, 0.0, f64::INFINITY)
    }

    fn score(&self, _example: &Example, _prediction: &Prediction, trace: &Trace) -> Score {
        let ms = trace.latency().as_secs_f64() * 1000.0;
        let calls = trace.steps.len();
        let cached = trace.steps.iter().filter(|s| s.cache_hit).count();
        let mut feedback = format!("{ms:.0} ms over {calls} model call(s)");
        if cached > 0 {
            feedback.push_str(&format!(", {cached} from the cache"));
        }
        Score::with_feedback(ms, feedback)
    }
}

/// Total cost of the run in USD; a run whose cost is unknown scores 0 and says so.
#[derive(Debug, Clone, Default)]
pub struct Cost;

impl Metric for Cost {
    fn info(&self) -> MetricInfo {
        info("cost", false, 0.0, f64::INFINITY)
    }

    fn score(&self, _example: &Example, _prediction: &Prediction, trace: &Trace) -> Score {
        let usage = trace.usage();
        match trace.cost_usd() {
            Some(usd) => Score::with_feedback(
                usd,
                format!(
                    "${usd:.6} for {} prompt and {} completion tokens",
                    usage.prompt_tokens, usage.completion_tokens
                ),
            ),
            None => Score::with_feedback(
                0.0,
                "The cost is unknown (no price for the model); counted as 0",
            ),
        }
    }
}
