//! BootstrapFewShotWithRandomSearch: several demo sets, the best on the validation set wins.

use async_trait::async_trait;
use promptopt_core::{Example, ProgramState};
use rand::seq::SliceRandom;
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;

use crate::{
    AlgorithmConfig, BootstrapFewShot, Event, LabeledFewShot, OptimizeContext, OptimizeError,
    Optimizer, OptimizerOutcome, OutcomeBuilder, TrialKind,
};

/// Scores candidate programs on the validation set and keeps the best, as DSPy's
/// `BootstrapFewShotWithRandomSearch`: candidate `-3` is zero-shot, `-2` labeled demos only,
/// `-1` a bootstrap over the training set in order, and candidates `0..num_candidate_programs`
/// bootstrap over a shuffled training set with a random number of demos between 1 and
/// `max_bootstrapped_demos`. Each candidate's generator is seeded from the run's seed and the
/// candidate number. The first strictly better score wins; `stop_at_score` ends the search
/// early.
#[derive(Debug, Clone, PartialEq)]
pub struct BootstrapFewShotWithRandomSearch {
    /// How each candidate bootstraps.
    pub bootstrap: BootstrapFewShot,
    /// Shuffled candidates (default 16; 3 more are always tried first).
    pub num_candidate_programs: usize,
    /// Stop as soon as a candidate reaches this normalized score.
    pub stop_at_score: Option<f64>,
}

impl Default for BootstrapFewShotWithRandomSearch {
    fn default() -> Self {
        Self {
            bootstrap: BootstrapFewShot::default(),
            num_candidate_programs: 16,
            stop_at_score: None,
        }
    }
}

impl BootstrapFewShotWithRandomSearch {
    /// Keys of `algorithm_config`: BootstrapFewShot's plus `num_candidate_programs` and
    /// `stop_at_score`.
    pub fn config_keys() -> Vec<&'static str> {
        let mut keys = BootstrapFewShot::CONFIG_KEYS.to_vec();
        keys.extend(["num_candidate_programs", "stop_at_score"]);
        keys
    }

    /// Settings from a request's `algorithm_config`.
    pub fn from_config(config: &AlgorithmConfig) -> Result<Self, OptimizeError> {
        config.check_keys(
            "algorithm_config",
            "bootstrapfewshot_random_search",
            &Self::config_keys(),
        )?;
        let d = Self::default();
        Ok(Self {
            bootstrap: BootstrapFewShot::from_checked(config)?,
            num_candidate_programs: config
                .usize("num_candidate_programs")?
                .unwrap_or(d.num_candidate_programs),
            stop_at_score: config.f64_in("stop_at_score", 0.0, 1.0)?,
        })
    }

    fn candidate_rng(ctx: &OptimizeContext, seed: i64) -> ChaCha8Rng {
        let mut rng = ChaCha8Rng::seed_from_u64(ctx.seed());
        rng.set_stream(seed.wrapping_add(1 << 32) as u64);
        rng
    }

    async fn candidate(
        &self,
        ctx: &OptimizeContext,
        seed: i64,
        trainset: &[Example],
        initial: &ProgramState,
    ) -> Result<(ProgramState, String, Option<crate::StopReason>), OptimizeError> {
        let mut rng = Self::candidate_rng(ctx, seed);
        let mut zero = initial.clone();
        for p in zero.predictors.values_mut() {
            p.demos.clear();
        }
        match seed {
            -3 => Ok((zero, "zero-shot".into(), None)),
            -2 => {
                let labeled = LabeledFewShot {
                    k: self.bootstrap.max_labeled_demos,
                    sample: true,
                };
                let state = labeled.apply(&ctx.predictors(), trainset, &zero, &mut rng);
                Ok((
                    state,
                    format!("labeled, {} demos", labeled.k.min(trainset.len())),
                    None,
                ))
            }
            -1 => {
                let run = self
                    .bootstrap
                    .bootstrap(ctx, trainset, &zero, &mut rng)
                    .await?;
                Ok((
                    run.state,
                    format!("bootstrap in order, {} bootstrapped", run.bootstrapped),
                    run.stop_reason,
                ))
            }
            _ => {
                let mut shuffled = trainset.to_vec();
                shuffled.shuffle(&mut rng);
                let max = self.bootstrap.max_bootstrapped_demos.max(1);
                let size = rng.gen_range(1..=max);
                let mut settings = self.bootstrap.clone();
                settings.max_bootstrapped_demos = size;
                let run = settings.bootstrap(ctx, &shuffled, &zero, &mut rng).await?;
                Ok((
                    run.state,
                    format!(
                        "shuffled bootstrap {seed}, {size} asked, {} bootstrapped",
                        run.bootstrapped
                    ),
                    run.stop_reason,
                ))
            }
        }
    }
}

#[async_trait]
impl Optimizer for BootstrapFewShotWithRandomSearch {
    fn name(&self) -> &'static str {
        "bootstrapfewshot_random_search"
    }

    async fn compile(
        &self,
        ctx: &OptimizeContext,
        trainset: &[Example],
        valset: &[Example],
        initial: &ProgramState,
    ) -> Result<OptimizerOutcome, OptimizeError> {
        let valset = if valset.is_empty() { trainset } else { valset };
        let mut outcome = OutcomeBuilder::new(initial.clone());
        let last = i64::try_from(self.num_candidate_programs).unwrap_or(i64::MAX);
        for seed in -3..last {
            if let Err(e) = ctx.next_iteration() {
                return Ok(outcome.finish(e.stop_reason()));
            }
            let (state, description, stopped) =
                match self.candidate(ctx, seed, trainset, initial).await {
                    Ok(c) => c,
                    Err(OptimizeError::Stopped(r)) => return Ok(outcome.finish(Some(r))),
                    Err(e) => return Err(e),
                };
            if let Some(r) = stopped {
                return Ok(outcome.finish(Some(r)));
            }
            ctx.emit(Event::CandidateProposed {
                candidate: outcome.candidates().len(),
                description: description.clone(),
            });
            outcome.trial_started(ctx, TrialKind::Full);
            match ctx.evaluate(&state, valset).await {
                Ok(report) => {
                    outcome.record(
                        Some(ctx),
                        state,
                        report.score,
                        TrialKind::Full,
                        description,
                        report.subscores(),
                    );
                    outcome.iteration_done();
                    ctx.emit(Event::StageProgress {
                        stage: "search".into(),
                        done: (seed + 4).unsigned_abs(),
                        total: Some((last + 3).unsigned_abs()),
                    });
                }
                Err(OptimizeError::Stopped(r)) => return Ok(outcome.finish(Some(r))),
                Err(e) => return Err(e),
            }
            if self
                .stop_at_score
                .is_some_and(|target| outcome.best_score() >= target)
            {
                break;
            }
        }
        Ok(outcome.finish(None))
    }
}
