//! Validating the candidates and choosing the winner: the objective under the constraints.

use std::collections::HashSet;

use promptopt_core::ProgramState;

use super::Prepared;
use crate::result::ModelReport;
use crate::{
    Constraints, EvalReport, Objective, OptimizationRequest, OptimizeContext, OptimizeError,
    OptimizerOutcome, PerformanceMetrics, Target, TrialKind,
};

/// A candidate with its validation report.
pub(super) struct Candidate {
    pub state: ProgramState,
    /// The candidate model (model selection only).
    pub model: Option<String>,
    pub report: EvalReport,
}

/// The candidates with their validation reports: each run's best (scored now when its optimizer
/// did not score it on the validation set) and, when the objective or a constraint may prefer
/// another, the run's other fully scored candidates; last, the starting program. A best that its
/// run did not score itself gets its validation score in `validated_bests[run]`.
pub(super) async fn validation_candidates(
    request: &OptimizationRequest,
    constraints: &Constraints,
    runs: &[(Option<String>, OptimizerOutcome)],
    prepared: &Prepared,
    baseline: &EvalReport,
    val_ctx: &OptimizeContext,
    validated_bests: &mut [Option<f64>],
) -> Result<Vec<Candidate>, OptimizeError> {
    let all_full = !matches!(
        request.objective,
        Objective::MaximizeAccuracy | Objective::Custom
    ) || request.has_target(Target::ModelSelection)
        || constraints.max_latency_ms.is_some()
        || constraints.max_tokens.is_some();
    let mut candidates = Vec::new();
    let mut seen = HashSet::new();
    for (run, (model, outcome)) in runs.iter().enumerate() {
        let mut states: Vec<&ProgramState> = vec![&outcome.best];
        if all_full {
            states.extend(
                outcome
                    .candidates
                    .iter()
                    .filter(|c| c.kind == TrialKind::Full)
                    .map(|c| &c.state),
            );
        }
        for state in states {
            if !seen.insert(state.fingerprint()) {
                continue;
            }
            let is_best = std::ptr::eq(state, &outcome.best);
            // Remembered when the optimizer scored it on the validation set.
            let report = match val_ctx.remembered(state, &prepared.val) {
                Some(r) => r,
                None if is_best => val_ctx.evaluate(state, &prepared.val).await?,
                None => continue,
            };
            // Also when the best is the starting program, remembered from the baseline.
            if is_best && outcome.trajectory.is_empty() {
                if let Some(slot) = validated_bests.get_mut(run) {
                    *slot = Some(report.score);
                }
            }
            candidates.push(Candidate {
                state: state.clone(),
                model: model.clone(),
                report,
            });
        }
    }
    // The starting program competes too (last, so ties go to the optimized ones): the validated
    // result is never worse than the baseline.
    if !request.has_target(Target::ModelSelection) && seen.insert(prepared.initial.fingerprint()) {
        candidates.push(Candidate {
            state: prepared.initial.clone(),
            model: None,
            report: baseline.clone(),
        });
    }
    Ok(candidates)
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

/// What the choice found.
pub(super) struct Choice {
    /// The winning program.
    pub winner: ProgramState,
    /// The winner's validation report.
    pub report: EvalReport,
    /// One report per candidate model (model selection only).
    pub model_reports: Vec<ModelReport>,
    /// The constraints the winner fails besides `min_accuracy` (which the caller checks on the
    /// final score).
    pub failures: Vec<String>,
    /// Candidates the objective preferred to the winner that were set aside for breaking a
    /// constraint, one sentence each.
    pub set_aside: Vec<String>,
}

/// Chooses the best candidate by the objective among those that meet the constraints, or among
/// all of them when none does.
pub(super) fn choose(
    request: &OptimizationRequest,
    constraints: &Constraints,
    candidates: Vec<Candidate>,
    task_model: &str,
) -> Choice {
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
            Objective::MaximizeAccuracy | Objective::Custom => ma.score > mb.score,
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
    // Better candidates that lost only to a constraint: the user learns what the limit cost.
    let mut set_aside = Vec::new();
    if let Some(w) = winner {
        for i in (0..scored.len()).filter(|&i| !scored[i].2.is_empty() && better(i, w)) {
            set_aside.push(format!(
                "A candidate scoring {:.4} on validation was set aside for breaking a constraint \
                 ({}); the chosen program scores {:.4}",
                scored[i].1.score,
                scored[i].2.join("; "),
                scored[w].1.score
            ));
        }
    }
    let mut model_reports = Vec::new();
    if request.has_target(Target::ModelSelection) {
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
            let c = match scored.into_iter().nth(w) {
                Some((c, _, _)) => c,
                None => unreachable_candidate(task_model).0,
            };
            Choice {
                winner: c.state,
                report: c.report,
                model_reports,
                failures,
                set_aside,
            }
        }
        None => {
            let (c, _, _) = unreachable_candidate(task_model);
            Choice {
                winner: c.state,
                report: c.report,
                model_reports,
                failures: vec!["No candidate could be validated".into()],
                set_aside,
            }
        }
    }
}

/// An empty candidate, for the case of nothing to choose from (every optimizer run gives at
/// least its best state, so the pipeline never passes an empty list).
fn unreachable_candidate(task_model: &str) -> (Candidate, PerformanceMetrics, Vec<String>) {
    let report = EvalReport::empty(promptopt_core::MetricInfo {
        name: String::new(),
        higher_is_better: true,
        min: 0.0,
        max: 1.0,
    });
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
