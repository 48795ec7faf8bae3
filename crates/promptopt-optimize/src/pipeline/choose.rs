//! Choosing the winner among validated candidates: the objective under the constraints.

use promptopt_core::ProgramState;

use crate::result::ModelReport;
use crate::{Constraints, EvalReport, Objective, OptimizationRequest, PerformanceMetrics, Target};

/// A candidate with its validation report.
pub(super) struct Candidate {
    pub state: ProgramState,
    /// The candidate model (model selection only).
    pub model: Option<String>,
    pub report: EvalReport,
}

fn violations(
    constraints: &Constraints,
    metrics: &PerformanceMetrics,
    report: &EvalReport,
) -> Vec<String> {
    let mut v = Vec::new();
    if let (Some(max), Some(p95)) = (constraints.max_latency_ms, metrics.latency_p95_ms) {
        if p95 > max {
            v.push(format!(
                "max_latency_ms: p95 latency {p95:.0} ms exceeds {max} ms"
            ));
        }
    }
    let overflow = report.results.iter().filter(|r| r.context_overflow).count();
    if overflow > 0 {
        v.push(format!(
            "max_tokens: the prompt does not fit the model's context for {overflow} examples"
        ));
    }
    if let Some(min) = constraints.min_accuracy {
        if metrics.score < min {
            v.push(format!(
                "min_accuracy: score {:.4} is below {min}",
                metrics.score
            ));
        }
    }
    v
}

/// Cost per example, or tokens per example when the cost is unknown (a proxy with the same
/// order for one model).
fn cost_key(m: &PerformanceMetrics) -> f64 {
    m.cost_per_sample
        .filter(|c| *c > 0.0)
        .unwrap_or_else(|| m.tokens as f64 / m.examples.max(1) as f64)
}

/// The winner, its report, per-model reports (model selection) and the constraints it fails
/// besides `min_accuracy` (which the caller checks on the final score).
pub(super) fn choose(
    request: &OptimizationRequest,
    constraints: &Constraints,
    candidates: Vec<Candidate>,
    task_model: &str,
) -> (ProgramState, EvalReport, Vec<ModelReport>, Vec<String>) {
    let metric = request.evaluation_metric.clone();
    let scored: Vec<(Candidate, PerformanceMetrics, Vec<String>)> = candidates
        .into_iter()
        .map(|c| {
            let m = PerformanceMetrics::from_report(&metric, &c.report);
            let v = violations(constraints, &m, &c.report);
            (c, m, v)
        })
        .collect();
    let eligible: Vec<usize> = (0..scored.len())
        .filter(|&i| scored[i].2.is_empty())
        .collect();
    let pool: Vec<usize> = if eligible.is_empty() {
        (0..scored.len()).collect()
    } else {
        eligible
    };
    let better = |a: usize, b: usize| -> bool {
        let (ma, mb) = (&scored[a].1, &scored[b].1);
        match request.objective {
            Objective::MaximizeAccuracy => ma.score > mb.score,
            Objective::MinimizeCost => {
                let (ca, cb) = (cost_key(ma), cost_key(mb));
                ca < cb || (ca == cb && ma.score > mb.score)
            }
            Objective::MinimizeLatency => {
                let (la, lb) = (
                    ma.latency_p95_ms.unwrap_or(f64::INFINITY),
                    mb.latency_p95_ms.unwrap_or(f64::INFINITY),
                );
                la < lb || (la == lb && ma.score > mb.score)
            }
        }
    };
    let mut winner = pool.first().copied();
    for &i in pool.iter().skip(1) {
        if let Some(w) = winner {
            if better(i, w) {
                winner = Some(i);
            }
        }
    }
    let mut model_reports = Vec::new();
    if request.target == Target::ModelSelection {
        for model in &request.candidate_models {
            let best = (0..scored.len())
                .filter(|&i| scored[i].0.model.as_deref() == Some(model.as_str()))
                .max_by(|&a, &b| {
                    let chosen = |i: usize| Some(i) == winner;
                    (chosen(a), scored[a].1.score)
                        .partial_cmp(&(chosen(b), scored[b].1.score))
                        .unwrap_or(std::cmp::Ordering::Equal)
                });
            if let Some(i) = best {
                model_reports.push(ModelReport {
                    model: model.clone(),
                    metrics: scored[i].1.clone(),
                    meets_constraints: scored[i].2.is_empty(),
                    violations: scored[i].2.clone(),
                    chosen: Some(i) == winner,
                });
            }
        }
    }
    match winner {
        Some(w) => {
            let failures: Vec<String> = scored[w]
                .2
                .iter()
                .filter(|v| !v.starts_with("min_accuracy"))
                .cloned()
                .collect();
            let Some((c, _, _)) = scored.into_iter().nth(w) else {
                let (c, _, _) = unreachable_candidate(task_model);
                return (c.state, c.report, model_reports, failures);
            };
            (c.state, c.report, model_reports, failures)
        }
        None => {
            let (c, _, _) = unreachable_candidate(task_model);
            (
                c.state,
                c.report,
                model_reports,
                vec!["No candidate could be validated".into()],
            )
        }
    }
}

/// An empty candidate, for the case of nothing to choose from (every optimizer run gives at
/// least its best state, so the pipeline never passes an empty list).
fn unreachable_candidate(task_model: &str) -> (Candidate, PerformanceMetrics, Vec<String>) {
    let report = EvalReport {
        score: 0.0,
        raw_score: 0.0,
        results: Vec::new(),
        wall_time: std::time::Duration::ZERO,
    };
    (
        Candidate {
            state: ProgramState::default(),
            model: Some(task_model.to_string()),
            report: report.clone(),
        },
        PerformanceMetrics::from_report("", &report),
        Vec::new(),
    )
}
