//! The [`Optimizer`] trait and what an optimization returns.
//!
//! An optimizer takes a training set, a validation set and an initial [`ProgramState`], and
//! returns the best state it found with its score, every candidate it scored and its trajectory.
//! It never changes code: it only produces states, which [`OptimizeContext::evaluate`] and
//! [`OptimizeContext::run`] run.
//!
//! Conventions every optimizer follows:
//! - Spend only through the context: program runs go through [`OptimizeContext::run`] /
//!   [`OptimizeContext::evaluate`], proposals and reflections through
//!   [`OptimizeContext::prompt_lm`]. Both models are wrapped in the run's [`crate::Budget`], so a
//!   call past the budget fails with [`promptopt_lm::LmError::BudgetExhausted`], and the context's
//!   helpers turn that into [`OptimizeError::Stopped`].
//! - Count each trial (candidate evaluation, generation) with [`OptimizeContext::next_iteration`].
//! - When a step fails with [`OptimizeError::Stopped`], stop and return the best state so far
//!   with the reason in [`OptimizerOutcome::stop_reason`] (use [`OutcomeBuilder`]); never return
//!   the `Stopped` error itself unless nothing at all was scored.
//! - All randomness comes from [`OptimizeContext::rng`] (seeded, `seed = 0` included).
//! - An algorithm configured from a request provides `pub const CONFIG_KEYS: &[&str]` and a
//!   constructor from [`crate::AlgorithmConfig`], which rejects unknown keys with
//!   [`crate::AlgorithmConfig::check_keys`].

use async_trait::async_trait;
use promptopt_core::{Example, ProgramState};
use serde::{Deserialize, Serialize};

use crate::{Event, OptimizeContext, OptimizeError, StopReason, TrialKind};

/// An optimization algorithm.
#[async_trait]
pub trait Optimizer: Send + Sync {
    /// The algorithm's name as requests spell it (`bootstrapfewshot`, `miprov2`, ...).
    fn name(&self) -> &'static str;

    /// Searches for a better state than `initial`, training on `trainset` and choosing on
    /// `valset`.
    async fn compile(
        &self,
        ctx: &OptimizeContext,
        trainset: &[Example],
        valset: &[Example],
        initial: &ProgramState,
    ) -> Result<OptimizerOutcome, OptimizeError>;
}

/// One scored candidate.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct CandidateRecord {
    /// The candidate's state.
    pub state: ProgramState,
    /// Its score (on the validation set for [`TrialKind::Full`]).
    pub score: f64,
    /// Full or minibatch.
    pub kind: TrialKind,
    /// The trial that scored it (from 1).
    pub trial: usize,
    /// What it is, in a few words (`zero-shot`, `bootstrapped, 3 demos, seed 2`, ...).
    pub description: String,
    /// Per-example scores, in validation-set order, when kept.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub subscores: Vec<f64>,
}

/// One point of the score trajectory.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct TrialPoint {
    /// The trial number (from 1).
    pub trial: usize,
    /// The trial's score.
    pub score: f64,
    /// The best full-evaluation score up to and including this trial.
    pub best_so_far: f64,
    /// Full or minibatch.
    pub kind: TrialKind,
}

/// What an optimizer returns.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct OptimizerOutcome {
    /// The best state found.
    pub best: ProgramState,
    /// Its score on the validation set (`f64::NAN` when it was never scored).
    pub best_score: f64,
    /// Every scored candidate, in trial order.
    pub candidates: Vec<CandidateRecord>,
    /// Iterations (trials, generations) completed.
    pub iterations: usize,
    /// Why it stopped early, if it did.
    pub stop_reason: Option<StopReason>,
    /// Score per trial.
    pub trajectory: Vec<TrialPoint>,
}

/// Keeps the best candidate, the candidate list and the trajectory while an optimizer runs, and
/// emits `TrialScored` / `NewBest` events.
///
/// ```
/// use promptopt_core::{PredictorState, ProgramState};
/// use promptopt_optimize::{OutcomeBuilder, TrialKind};
///
/// let initial = ProgramState::single("predict", PredictorState::new("Classify."));
/// let mut outcome = OutcomeBuilder::new(initial.clone());
/// outcome.record(None, initial.clone(), 0.5, TrialKind::Full, "zero-shot", vec![]);
/// let done = outcome.finish(None);
/// assert_eq!(done.best_score, 0.5);
/// assert_eq!(done.trajectory.len(), 1);
/// ```
#[derive(Debug, Clone)]
pub struct OutcomeBuilder {
    best: ProgramState,
    best_score: f64,
    candidates: Vec<CandidateRecord>,
    trajectory: Vec<TrialPoint>,
    iterations: usize,
}

impl OutcomeBuilder {
    /// Starts with `initial` as the (unscored) best.
    pub fn new(initial: ProgramState) -> Self {
        Self {
            best: initial,
            best_score: f64::NAN,
            candidates: Vec::new(),
            trajectory: Vec::new(),
            iterations: 0,
        }
    }

    /// Says that the next trial's evaluation starts (a `TrialStarted` event with the number
    /// [`OutcomeBuilder::record`] will give it).
    pub fn trial_started(&self, ctx: &OptimizeContext, kind: TrialKind) {
        ctx.emit(Event::TrialStarted {
            trial: self.trajectory.len() + 1,
            kind,
        });
    }

    /// Records a scored candidate; a full evaluation strictly better than the best so far (or
    /// the first one) becomes the best. Emits events when `ctx` is given. Returns whether it
    /// became the best.
    pub fn record(
        &mut self,
        ctx: Option<&OptimizeContext>,
        state: ProgramState,
        score: f64,
        kind: TrialKind,
        description: impl Into<String>,
        subscores: Vec<f64>,
    ) -> bool {
        let trial = self.trajectory.len() + 1;
        let improved = kind == TrialKind::Full
            && !score.is_nan()
            && (self.best_score.is_nan() || score > self.best_score);
        if improved {
            self.best = state.clone();
            self.best_score = score;
        }
        let best_so_far = self.best_score;
        self.trajectory.push(TrialPoint {
            trial,
            score,
            best_so_far,
            kind,
        });
        self.candidates.push(CandidateRecord {
            state,
            score,
            kind,
            trial,
            description: description.into(),
            subscores,
        });
        if let Some(ctx) = ctx {
            ctx.emit(Event::TrialScored {
                trial,
                score,
                best_so_far,
                kind,
            });
            if improved {
                ctx.emit(Event::NewBest { trial, score });
            }
            ctx.emit_spent();
        }
        improved
    }

    /// Counts one completed iteration.
    pub fn iteration_done(&mut self) {
        self.iterations += 1;
    }

    /// Sets the number of completed iterations.
    pub fn set_iterations(&mut self, iterations: usize) {
        self.iterations = iterations;
    }

    /// The best state so far.
    pub fn best(&self) -> &ProgramState {
        &self.best
    }

    /// The best full score so far (`NAN` before the first).
    pub fn best_score(&self) -> f64 {
        self.best_score
    }

    /// The candidates so far.
    pub fn candidates(&self) -> &[CandidateRecord] {
        &self.candidates
    }

    /// Whether anything was scored with a full evaluation.
    pub fn has_best(&self) -> bool {
        !self.best_score.is_nan()
    }

    /// The outcome, with the reason the run stopped early (if it did).
    pub fn finish(self, stop_reason: Option<StopReason>) -> OptimizerOutcome {
        OptimizerOutcome {
            best: self.best,
            best_score: self.best_score,
            candidates: self.candidates,
            iterations: self.iterations,
            stop_reason,
            trajectory: self.trajectory,
        }
    }
}
