//! LabeledFewShot: training examples as demos, no model calls to build them.

use async_trait::async_trait;
use promptopt_core::{Example, ProgramState};
use rand::seq::SliceRandom;
use rand_chacha::ChaCha8Rng;

use crate::{
    AlgorithmConfig, OptimizeContext, OptimizeError, Optimizer, OptimizerOutcome, OutcomeBuilder,
    TrialKind,
};
use promptopt_core::Stage;

/// Puts up to `k` labeled training examples into every predictor's demos.
///
/// As DSPy: with `sample` (the default) each predictor gets a random sample (one seeded
/// generator for the whole call, so predictors get different samples), else the first `k`.
/// `compile` then scores the result once on the validation set.
#[derive(Debug, Clone, PartialEq)]
pub struct LabeledFewShot {
    /// Demos per predictor (default 16).
    pub k: usize,
    /// Sample at random instead of taking the first `k`.
    pub sample: bool,
}

impl Default for LabeledFewShot {
    fn default() -> Self {
        Self {
            k: 16,
            sample: true,
        }
    }
}

impl LabeledFewShot {
    /// Keys of `algorithm_config` (`num_examples` is the guide's name for `k`).
    pub const CONFIG_KEYS: &'static [&'static str] = &["k", "num_examples", "sample"];

    /// Settings from a request's `algorithm_config`.
    pub fn from_config(config: &AlgorithmConfig) -> Result<Self, OptimizeError> {
        config.check_keys("algorithm_config", "labeledfewshot", Self::CONFIG_KEYS)?;
        let d = Self::default();
        Ok(Self {
            k: config
                .usize("k")?
                .or(config.usize("num_examples")?)
                .unwrap_or(d.k),
            sample: config.bool("sample")?.unwrap_or(d.sample),
        })
    }

    /// `initial` with labeled demos; draws from `rng`.
    pub fn apply(
        &self,
        predictors: &[Stage],
        trainset: &[Example],
        initial: &ProgramState,
        rng: &mut ChaCha8Rng,
    ) -> ProgramState {
        let mut state = initial.clone();
        for info in predictors {
            let Some(predictor) = state.predictor_mut(&info.name) else {
                continue;
            };
            let k = self.k.min(trainset.len());
            let chosen: Vec<&Example> = if self.sample {
                trainset.choose_multiple(rng, k).collect()
            } else {
                trainset.iter().take(k).collect()
            };
            predictor.demos = chosen
                .into_iter()
                .map(|e| demo_of(e, &info.signature))
                .collect();
        }
        state
    }
}

/// A training example as a demo of a predictor: its input and output fields only.
pub fn demo_of(example: &Example, signature: &promptopt_core::Signature) -> Example {
    let mut names = signature.input_names();
    names.extend(signature.output_names());
    example.project(&names)
}

#[async_trait]
impl Optimizer for LabeledFewShot {
    fn name(&self) -> &'static str {
        "labeledfewshot"
    }

    async fn compile(
        &self,
        ctx: &OptimizeContext,
        trainset: &[Example],
        valset: &[Example],
        initial: &ProgramState,
    ) -> Result<OptimizerOutcome, OptimizeError> {
        let mut rng = ctx.rng();
        let state = self.apply(&ctx.predictors(), trainset, initial, &mut rng);
        let mut outcome = OutcomeBuilder::new(state.clone());
        if valset.is_empty() {
            return Ok(outcome.finish(None));
        }
        if let Err(e) = ctx.next_iteration() {
            return Ok(outcome.finish(e.stop_reason()));
        }
        outcome.trial_started(ctx, TrialKind::Full);
        match ctx.evaluate(&state, valset).await {
            Ok(report) => {
                outcome.record(
                    Some(ctx),
                    state,
                    report.score,
                    TrialKind::Full,
                    format!("labeled, {} demos", self.k.min(trainset.len())),
                    report.subscores(),
                );
                outcome.iteration_done();
                Ok(outcome.finish(None))
            }
            Err(OptimizeError::Stopped(reason)) => Ok(outcome.finish(Some(reason))),
            Err(e) => Err(e),
        }
    }
}
