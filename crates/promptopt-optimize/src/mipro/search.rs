//! Step 3 of MIPROv2: a TPE search over one instruction and one demo set per predictor.
//!
//! As in DSPy: the default program's full score seeds the sampler as trial 0 (all indices 0);
//! each trial draws indices for every predictor jointly and scores the assembled state on a
//! fresh random minibatch (or on the whole validation set without minibatching); every
//! `minibatch_full_eval_steps` trials (and after the last) the combination with the best mean
//! minibatch score that was not fully evaluated yet is scored on the whole set and fed back to
//! the sampler as an extra completed trial. Only full scores choose the best state. Trial
//! numbers follow Optuna's, so full evaluations happen at the same points as in DSPy: after
//! minibatch trials `s, 2s, ...` and after the last one, `ceil(T / s)` in all.

use promptopt_core::{Example, ProgramState};
use rand::seq::index::sample;
use rand_chacha::ChaCha8Rng;
use serde::{Deserialize, Serialize};

use super::demos::DemoSet;
use super::tpe::{CategoricalParam, TpeConfig, TpeSampler};
use crate::tool_choice::ToolChoice;
use crate::{Event, OptimizeContext, OptimizeError, OutcomeBuilder, StopReason, TrialKind};

/// One search trial as logged.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct TrialLog {
    /// DSPy's trial number: the sampler's trial number plus one (the default program is 1).
    pub trial: usize,
    /// The chosen index of every parameter, in [`SearchSpace::param_names`] order.
    pub params: Vec<usize>,
    /// Minibatch or full.
    pub kind: TrialKind,
    /// The score.
    pub score: f64,
    /// The best full score after this trial.
    pub best_so_far: f64,
    /// Program runs on validation examples so far (the default program's included).
    pub eval_runs_so_far: usize,
}

/// What the search chooses from: per predictor, its instructions and (unless zero-shot) its
/// demo sets.
#[derive(Debug, Clone)]
pub struct SearchSpace {
    /// Predictor names, in program order.
    pub predictors: Vec<String>,
    /// Per predictor, its instruction candidates (index 0 is the original instruction).
    pub instructions: Vec<Vec<String>>,
    /// Per predictor, its demo sets (index 0 is the empty set); `None` in zero-shot mode.
    pub demo_sets: Option<Vec<Vec<DemoSet>>>,
    /// With `tool_selection`: per `react` predictor (its index in `predictors`), the ways of
    /// offering its tools (index 0 is the stage as declared); their parameters follow the
    /// others.
    pub tools: Vec<(usize, Vec<ToolChoice>)>,
}

impl SearchSpace {
    /// The sampler's parameters, named as DSPy names them.
    pub fn params(&self) -> Vec<CategoricalParam> {
        let mut params = Vec::new();
        for (i, instructions) in self.instructions.iter().enumerate() {
            params.push(CategoricalParam::new(
                format!("{i}_predictor_instruction"),
                instructions.len(),
            ));
            if let Some(sets) = &self.demo_sets {
                let n = sets.get(i).map_or(1, Vec::len);
                params.push(CategoricalParam::new(format!("{i}_predictor_demos"), n));
            }
        }
        for (i, choices) in &self.tools {
            params.push(CategoricalParam::new(
                format!("{i}_predictor_tools"),
                choices.len().max(1),
            ));
        }
        params
    }

    /// The tool choice `params` selects for predictor `i`, if it has tools to choose.
    fn tool_choice(&self, i: usize, params: &[usize]) -> Option<&ToolChoice> {
        let base = self.predictors.len() * self.stride();
        let (k, (_, choices)) = self.tools.iter().enumerate().find(|(_, (p, _))| *p == i)?;
        choices.get(params.get(base + k).copied().unwrap_or(0))
    }

    /// The parameter names in order.
    pub fn param_names(&self) -> Vec<String> {
        self.params().into_iter().map(|p| p.name).collect()
    }

    fn stride(&self) -> usize {
        if self.demo_sets.is_some() {
            2
        } else {
            1
        }
    }

    /// The state `params` selects, on top of `base`.
    pub fn state(&self, base: &ProgramState, params: &[usize]) -> ProgramState {
        let mut state = base.clone();
        let stride = self.stride();
        for (i, name) in self.predictors.iter().enumerate() {
            let Some(predictor) = state.predictor_mut(name) else {
                continue;
            };
            let instruction = params.get(i * stride).copied().unwrap_or(0);
            if let Some(text) = self.instructions.get(i).and_then(|c| c.get(instruction)) {
                predictor.instructions = text.clone();
            }
            if let Some(sets) = &self.demo_sets {
                let set = params.get(i * stride + 1).copied().unwrap_or(0);
                if let Some(set) = sets.get(i).and_then(|s| s.get(set)) {
                    predictor.demos = set.demos.clone();
                }
            }
            if let Some(choice) = self.tool_choice(i, params) {
                choice.apply(predictor);
            }
        }
        state
    }

    /// A short description of a choice, e.g. `predict: instruction 2, demo set 3 (4 demos)`.
    pub fn describe(&self, params: &[usize]) -> String {
        let stride = self.stride();
        self.predictors
            .iter()
            .enumerate()
            .map(|(i, name)| {
                let instruction = params.get(i * stride).copied().unwrap_or(0);
                let tools = self
                    .tool_choice(i, params)
                    .map(|c| format!(", {}", c.describe()))
                    .unwrap_or_default();
                let text = match &self.demo_sets {
                    Some(sets) => {
                        let set = params.get(i * stride + 1).copied().unwrap_or(0);
                        let n = sets
                            .get(i)
                            .and_then(|s| s.get(set))
                            .map_or(0, |s| s.demos.len());
                        format!("{name}: instruction {instruction}, demo set {set} ({n} demos)")
                    }
                    None => format!("{name}: instruction {instruction}"),
                };
                format!("{text}{tools}")
            })
            .collect::<Vec<_>>()
            .join("; ")
    }
}

/// How the search runs.
#[derive(Debug, Clone, PartialEq)]
pub struct SearchSettings {
    /// Minibatch trials (or full trials without minibatching).
    pub num_trials: usize,
    /// Score trials on minibatches.
    pub minibatch: bool,
    /// Examples per minibatch.
    pub minibatch_size: usize,
    /// Minibatch trials between full evaluations.
    pub full_eval_steps: usize,
    /// Stop after `patience` full evaluations without improvement.
    pub early_stopping: bool,
    /// See `early_stopping`.
    pub patience: usize,
    /// The sampler's seed.
    pub seed: u64,
}

/// What the search leaves besides the outcome.
#[derive(Debug, Clone, Default)]
pub struct SearchLog {
    /// Every trial, full evaluations included, in order.
    pub trials: Vec<TrialLog>,
    /// Why the search stopped early, if it did.
    pub stop_reason: Option<StopReason>,
    /// Search trials completed (full evaluations not counted).
    pub completed: usize,
}

/// Mean minibatch scores per combination, in first-seen order.
#[derive(Debug, Default)]
struct MinibatchScores(Vec<(Vec<usize>, Vec<f64>)>);

impl MinibatchScores {
    fn push(&mut self, params: &[usize], score: f64) {
        match self.0.iter_mut().find(|(p, _)| p == params) {
            Some((_, scores)) => scores.push(score),
            None => self.0.push((params.to_vec(), vec![score])),
        }
    }

    /// The combination with the highest mean that is not in `done` (ties: first seen).
    fn best_unevaluated(&self, done: &[Vec<usize>]) -> Option<(Vec<usize>, f64)> {
        let mut best: Option<(Vec<usize>, f64)> = None;
        for (params, scores) in &self.0 {
            if done.contains(params) {
                continue;
            }
            let mean = scores.iter().sum::<f64>() / scores.len() as f64;
            if best.as_ref().is_none_or(|(_, m)| mean > *m) {
                best = Some((params.clone(), mean));
            }
        }
        best
    }
}

/// Scores `state` on `examples`; a failed evaluation (other than a stop) scores 0, with a
/// warning, as DSPy does.
async fn score(
    ctx: &OptimizeContext,
    state: &ProgramState,
    examples: &[Example],
) -> Result<(f64, Vec<f64>), OptimizeError> {
    match ctx.evaluate(state, examples).await {
        Ok(report) => Ok((report.score, report.subscores())),
        Err(OptimizeError::Stopped(reason)) => Err(OptimizeError::Stopped(reason)),
        Err(error) => {
            ctx.warn(format!("Evaluation failed, scoring 0: {error}"));
            Ok((0.0, Vec::new()))
        }
    }
}

/// Runs the search. `default_score` is the full score of `base` with every index 0, already
/// recorded in `outcome`.
#[allow(clippy::too_many_arguments)]
pub async fn run_search(
    ctx: &OptimizeContext,
    space: &SearchSpace,
    base: &ProgramState,
    valset: &[Example],
    settings: &SearchSettings,
    default_score: f64,
    outcome: &mut OutcomeBuilder,
    rng: &mut ChaCha8Rng,
) -> SearchLog {
    let mut log = SearchLog::default();
    let params = space.params();
    let mut sampler = TpeSampler::new(
        params.clone(),
        TpeConfig {
            seed: settings.seed,
            ..TpeConfig::default()
        },
    );
    let zeros = vec![0; params.len()];
    sampler.add_trial(zeros.clone(), default_score);
    let mut eval_runs = valset.len();
    log.trials.push(TrialLog {
        trial: 1,
        params: zeros.clone(),
        kind: TrialKind::Full,
        score: default_score,
        best_so_far: outcome.best_score(),
        eval_runs_so_far: eval_runs,
    });

    let steps = settings.full_eval_steps.max(1);
    let t = settings.num_trials;
    let minibatch = settings.minibatch && settings.minibatch_size < valset.len();
    let adjusted = if minibatch {
        t + t / steps + 1 + usize::from(t % steps != 0)
    } else {
        t
    };
    let mut mb_scores = MinibatchScores::default();
    let mut fully_evaluated: Vec<Vec<usize>> = vec![zeros];
    let mut since_improvement = 0usize;

    ctx.emit(Event::StageStarted {
        stage: "search".into(),
        total: Some(t as u64),
    });
    for done in 0..t {
        if let Err(error) = ctx.next_iteration() {
            log.stop_reason = error.stop_reason().or(Some(StopReason::Cancelled));
            break;
        }
        let asked = sampler.ask();
        let trial_num = asked.number + 1;
        let state = space.state(base, &asked.params);
        let description = space.describe(&asked.params);
        ctx.emit(Event::CandidateProposed {
            candidate: trial_num,
            description: format!("trial {trial_num}: {description}"),
        });
        let (kind, examples): (TrialKind, Vec<Example>) = if minibatch {
            let idx = sample(rng, valset.len(), settings.minibatch_size);
            (
                TrialKind::Minibatch,
                idx.iter().map(|i| valset[i].clone()).collect(),
            )
        } else {
            (TrialKind::Full, valset.to_vec())
        };
        outcome.trial_started(ctx, kind);
        let (value, subscores) = match score(ctx, &state, &examples).await {
            Ok(scored) => scored,
            Err(error) => {
                log.stop_reason = error.stop_reason();
                break;
            }
        };
        eval_runs += examples.len();
        let label = format!("{} ({})", description, kind_name(kind));
        let improved = outcome.record(Some(ctx), state, value, kind, label, subscores);
        log.trials.push(TrialLog {
            trial: trial_num,
            params: asked.params.clone(),
            kind,
            score: value,
            best_so_far: outcome.best_score(),
            eval_runs_so_far: eval_runs,
        });
        if kind == TrialKind::Full {
            fully_evaluated.push(asked.params.clone());
            since_improvement = if improved { 0 } else { since_improvement + 1 };
        }
        mb_scores.push(&asked.params, value);

        let mut stop = None;
        if minibatch && (trial_num % (steps + 1) == 0 || trial_num + 1 == adjusted) {
            if let Some((params, mean)) = mb_scores.best_unevaluated(&fully_evaluated) {
                let state = space.state(base, &params);
                outcome.trial_started(ctx, TrialKind::Full);
                match score(ctx, &state, valset).await {
                    Ok((full, subscores)) => {
                        eval_runs += valset.len();
                        let number = sampler.add_trial(params.clone(), full);
                        let label = format!(
                            "{} (full evaluation, minibatch mean {mean:.3})",
                            space.describe(&params)
                        );
                        let improved = outcome.record(
                            Some(ctx),
                            state,
                            full,
                            TrialKind::Full,
                            label,
                            subscores,
                        );
                        log.trials.push(TrialLog {
                            trial: number.map_or(trial_num + 1, |n| n + 1),
                            params: params.clone(),
                            kind: TrialKind::Full,
                            score: full,
                            best_so_far: outcome.best_score(),
                            eval_runs_so_far: eval_runs,
                        });
                        fully_evaluated.push(params);
                        since_improvement = if improved { 0 } else { since_improvement + 1 };
                    }
                    Err(error) => stop = error.stop_reason(),
                }
            }
        }
        sampler.tell(asked, value);
        log.completed = done + 1;
        outcome.set_iterations(log.completed);
        ctx.emit(Event::StageProgress {
            stage: "search".into(),
            done: (done + 1) as u64,
            total: Some(t as u64),
        });
        if stop.is_some() {
            log.stop_reason = stop;
            break;
        }
        if settings.early_stopping && since_improvement >= settings.patience.max(1) {
            log.stop_reason = Some(StopReason::EarlyStopping);
            break;
        }
    }
    log
}

fn kind_name(kind: TrialKind) -> &'static str {
    match kind {
        TrialKind::Full => "full",
        TrialKind::Minibatch => "minibatch",
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn best_unevaluated_uses_means_and_first_seen_ties() {
        let mut s = MinibatchScores::default();
        s.push(&[1, 0], 0.5);
        s.push(&[2, 0], 0.9);
        s.push(&[1, 0], 0.9);
        s.push(&[3, 0], 0.7);
        s.push(&[2, 0], 0.5);
        // Means: [1,0] 0.7, [2,0] 0.7, [3,0] 0.7: the first seen wins.
        assert_eq!(s.best_unevaluated(&[]).map(|b| b.0), Some(vec![1, 0]));
        assert_eq!(
            s.best_unevaluated(&[vec![1, 0]]).map(|b| b.0),
            Some(vec![2, 0])
        );
        let all = vec![vec![1, 0], vec![2, 0], vec![3, 0]];
        assert_eq!(s.best_unevaluated(&all), None);
    }

    #[test]
    fn full_evaluations_fall_where_dspy_puts_them() {
        // Replays the trial numbering: default trial 0, each full evaluation takes a number.
        let schedule = |t: usize, s: usize| {
            let adjusted = t + t / s + 1 + usize::from(t % s != 0);
            let mut next = 1;
            let mut fulls = Vec::new();
            for k in 1..=t {
                let trial_num = next + 1;
                next += 1;
                if trial_num % (s + 1) == 0 || trial_num + 1 == adjusted {
                    fulls.push(k);
                    next += 1;
                }
            }
            fulls
        };
        assert_eq!(schedule(10, 5), vec![5, 10]);
        assert_eq!(schedule(18, 5), vec![5, 10, 15, 18]);
        assert_eq!(schedule(27, 5), vec![5, 10, 15, 20, 25, 27]);
        assert_eq!(schedule(3, 5), vec![3]);
        for (t, s) in [(10, 5), (18, 5), (27, 5), (31, 5), (9, 4), (7, 1)] {
            assert_eq!(schedule(t, s).len(), t.div_ceil(s), "T={t} s={s}");
        }
    }
}
