//! Aggregates of an evaluation.

use std::time::Duration;

use promptopt_lm::Usage;
use serde::{Deserialize, Serialize};

use super::{EvalReport, ExampleResult};
use crate::{Example, Metric, MetricInfo, Prediction};

/// Model time per example, in milliseconds (nearest-rank percentiles over the examples that
/// reached the model).
#[derive(Debug, Clone, Copy, Default, PartialEq, Serialize, Deserialize)]
pub struct LatencySummary {
    /// Mean.
    pub mean_ms: f64,
    /// Median.
    pub p50_ms: f64,
    /// 95th percentile.
    pub p95_ms: f64,
    /// 99th percentile.
    pub p99_ms: f64,
}

impl LatencySummary {
    fn of(mut samples: Vec<f64>) -> Self {
        if samples.is_empty() {
            return Self::default();
        }
        samples.sort_by(f64::total_cmp);
        let rank = |p: f64| {
            let n = samples.len();
            // Nearest rank: the smallest sample with at least p of the samples at or below it.
            #[allow(
                clippy::cast_possible_truncation,
                clippy::cast_sign_loss,
                clippy::cast_precision_loss
            )]
            let index = ((p * n as f64).ceil() as usize).clamp(1, n) - 1;
            samples[index]
        };
        Self {
            mean_ms: samples.iter().sum::<f64>() / samples.len() as f64,
            p50_ms: rank(0.50),
            p95_ms: rank(0.95),
            p99_ms: rank(0.99),
        }
    }
}

/// The `p`-th percentile (0–100, nearest rank) of `values`; `None` when empty.
pub fn percentile(values: &mut [f64], p: f64) -> Option<f64> {
    if values.is_empty() {
        return None;
    }
    values.sort_by(f64::total_cmp);
    #[allow(
        clippy::cast_possible_truncation,
        clippy::cast_sign_loss,
        clippy::cast_precision_loss
    )]
    let rank = ((p / 100.0) * values.len() as f64).ceil() as usize;
    Some(values[rank.clamp(1, values.len()) - 1])
}

/// A metric value on a 0–1 scale, higher better: mapped linearly from the metric's range when it
/// is finite (and flipped when lower is better), the value itself otherwise.
pub fn normalize(info: &MetricInfo, value: f64) -> f64 {
    if !is_bounded(info) {
        return value;
    }
    let x = ((value - info.min) / (info.max - info.min)).clamp(0.0, 1.0);
    if info.higher_is_better {
        x
    } else {
        1.0 - x
    }
}

fn is_bounded(info: &MetricInfo) -> bool {
    info.min.is_finite() && info.max.is_finite() && info.max > info.min
}

/// The report over finished results (which it leaves in place; the caller moves them in).
pub(super) fn aggregate(
    info: MetricInfo,
    metric: &dyn Metric,
    examples: &[Example],
    results: &mut [ExampleResult],
    wall: Duration,
) -> EvalReport {
    let n = results.len();
    let bounded = is_bounded(&info);
    let empty = Prediction::default();
    let pairs: Vec<(&Example, &Prediction)> = results
        .iter()
        .map(|r| (&examples[r.index], r.prediction.as_ref().unwrap_or(&empty)))
        .collect();
    let corpus_value = if n == 0 {
        None
    } else {
        metric.corpus_score(&pairs)
    };
    let (score, raw_score) = match corpus_value {
        Some(raw) => (normalize(&info, raw), raw),
        None => {
            let finite: Vec<f64> = results
                .iter()
                .map(|r| r.score)
                .filter(|v| v.is_finite())
                .collect();
            let raw = mean(&finite);
            let score = if bounded {
                mean(&results.iter().map(|r| r.normalized).collect::<Vec<_>>())
            } else {
                raw
            };
            (score, raw)
        }
    };
    let mut usage = Usage::default();
    let mut cost = Some(0.0);
    let mut lm_calls = 0u64;
    let mut cache_hits = 0u64;
    let mut latencies = Vec::with_capacity(n);
    for result in results.iter() {
        if !result.trace.steps.is_empty() {
            latencies.push(result.trace.latency().as_secs_f64() * 1000.0);
        }
        for step in &result.trace.steps {
            usage += step.usage;
            lm_calls += 1;
            cache_hits += u64::from(step.cache_hit);
            cost = match (cost, step.cost_usd) {
                (Some(total), Some(c)) => Some(total + c),
                _ => None,
            };
        }
    }
    if lm_calls == 0 {
        cost = None;
    }
    EvalReport {
        metric: info,
        score,
        raw_score,
        corpus: corpus_value.is_some(),
        normalized: bounded,
        examples: n,
        parse_failures: results.iter().filter(|r| r.parse_error.is_some()).count(),
        errors: results.iter().filter(|r| r.error.is_some()).count(),
        results: Vec::new(),
        latency: LatencySummary::of(latencies),
        usage,
        cost_usd: cost,
        lm_calls,
        cache_hits,
        wall_ms: wall.as_secs_f64() * 1000.0,
    }
}

fn mean(values: &[f64]) -> f64 {
    if values.is_empty() {
        0.0
    } else {
        values.iter().sum::<f64>() / values.len() as f64
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn percentiles_use_nearest_rank() {
        let s = LatencySummary::of((1..=100).map(f64::from).collect());
        assert_eq!((s.p50_ms, s.p95_ms, s.p99_ms), (50.0, 95.0, 99.0));
        assert!((s.mean_ms - 50.5).abs() < 1e-9);
        let one = LatencySummary::of(vec![7.0]);
        assert_eq!((one.p50_ms, one.p99_ms), (7.0, 7.0));
    }

    #[test]
    fn normalisation_follows_range_and_direction() {
        let info = |min, max, higher| MetricInfo {
            name: "m".into(),
            higher_is_better: higher,
            min,
            max,
        };
        assert_eq!(normalize(&info(0.0, 100.0, true), 25.0), 0.25);
        assert_eq!(normalize(&info(0.0, 1.0, false), 0.25), 0.75);
        assert_eq!(normalize(&info(0.0, f64::INFINITY, false), 120.0), 120.0);
    }
}
