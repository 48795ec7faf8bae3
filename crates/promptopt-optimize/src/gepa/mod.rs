//! GEPA: reflective prompt evolution with a Pareto frontier and merge.
//!
//! The seed state is scored on the validation set. Each iteration then either merges two
//! frontier candidates that improved different predictors of a common ancestor (when a merge is
//! due), or mutates one: a parent is drawn from the Pareto frontier (candidates best on some
//! validation example, weighted by how many), run on a minibatch of training examples with
//! traces, and a reflection model reads the inputs, outputs and the metric's feedback and writes
//! new instructions for one predictor. The child is kept only if it beats its parent on the same
//! minibatch; it is then scored on the whole validation set and joins the frontier. The best
//! average validation score wins. With `parallel_proposals: P`, an iteration makes P such
//! mutations at once, from independent parents and minibatches (see the `round` module).
//!
//! With demos ([`Gepa::with_demos`], what a request's `few_shot_examples` target asks for), the
//! seed is first given demos by BootstrapFewShot, exactly as that algorithm would with the same
//! seed and settings, and GEPA then evolves the instructions around them: every candidate keeps
//! the seed's demos. This is how DSPy users combine the two (compile with BootstrapFewShot, then
//! hand the program to GEPA), and it is what lets a small task model that follows demos more
//! than instructions gain from instruction search at all.
//!
//! Budgets count metric calls of GEPA's own loop (see [`GepaConfig`]); bootstrapping is not
//! part of it. Each evaluation checks the budget first, so the limit is never passed. With a
//! run directory the state is saved after every iteration and [`Gepa::resume`] continues an interrupted run exactly; a
//! `gepa.stop` file in the directory stops the run gracefully.
//!
//! ```
//! use promptopt_optimize::gepa::{Gepa, GepaConfig};
//! use promptopt_optimize::AlgorithmConfig;
//!
//! let settings = AlgorithmConfig::from_json(serde_json::json!({
//!     "population_size": 30, "num_generations": 15, "tournament_size": 3
//! }))?;
//! let gepa = Gepa::new(GepaConfig::from_config(&settings)?);
//! assert_eq!(gepa.config().reflection_minibatch_size, 3);
//! assert!(GepaConfig::from_config(&AlgorithmConfig::from_json(
//!     serde_json::json!({"generations": 3}))?).is_err());
//! # Ok::<(), promptopt_optimize::OptimizeError>(())
//! ```

mod blame;
mod budget;
mod config;
mod engine;
mod frontier;
mod merge;
mod reflection;
mod round;
mod sampler;
mod selection;
mod state;

use std::path::PathBuf;

use async_trait::async_trait;
use promptopt_core::{Example, ProgramState};

pub use budget::MetricBudget;
pub use config::{
    AutoBudget, CandidateSelection, GepaConfig, ModuleSelector, DEFAULT_REFLECTION_MAX_TOKENS,
    MAX_PARALLEL_PROPOSALS, VALID_KEYS,
};
pub use frontier::{average, retire_for_cap, Frontier};
pub use merge::{
    accept_merge, find_triplet, merge_states, merge_subsample, plan_merge, Lineage, MergeLedger,
    MergePlan, MAX_MERGE_ATTEMPTS,
};
pub use reflection::{
    extract_instructions, reflection_messages, reflective_dataset, truncate, Generated,
    ReflectiveRecord, Rollout, MAX_EXAMPLES, MAX_EXAMPLES_CHARS, MAX_FEEDBACK_CHARS,
    MAX_FIELD_CHARS, MAX_INSTRUCTION_CHARS,
};
pub use sampler::EpochSampler;
pub use selection::{best_by_average, select_parent};
pub use state::{CandidateEntry, IterationRecord, Origin, RunDir, RunState, STATE_FILE, STOP_FILE};

use crate::{
    AlgorithmConfig, BootstrapFewShot, Event, OptimizeContext, OptimizeError, Optimizer,
    OptimizerOutcome, OutcomeBuilder, StopReason, TrialKind,
};
use engine::{Engine, Step};

/// The keys `algorithm_config` may hold for GEPA's own loop (the same list as [`VALID_KEYS`]).
pub const CONFIG_KEYS: &[&str] = VALID_KEYS;

/// The BootstrapFewShot keys `algorithm_config` may also hold for GEPA, read only with the
/// `few_shot_examples` target (see [`Gepa::with_demos`]).
pub const DEMO_KEYS: &[&str] = BootstrapFewShot::CONFIG_KEYS;

/// Every key `algorithm_config` may hold for GEPA: its loop's ([`CONFIG_KEYS`]) and the demo
/// keys ([`DEMO_KEYS`]).
pub fn all_keys() -> Vec<&'static str> {
    CONFIG_KEYS.iter().chain(DEMO_KEYS).copied().collect()
}

/// The GEPA optimizer.
#[derive(Debug, Clone, Default)]
pub struct Gepa {
    config: GepaConfig,
    demos: Option<BootstrapFewShot>,
    run_dir: Option<PathBuf>,
    resume: bool,
}

/// A finished (or stopped) GEPA run: the outcome and the whole run state, lineage included.
#[derive(Debug, Clone)]
pub struct GepaRun {
    /// What every optimizer returns.
    pub outcome: OptimizerOutcome,
    /// Candidates, lineage, per-example validation scores, the iteration log and the budget.
    pub state: RunState,
}

impl Gepa {
    /// GEPA with these settings.
    pub fn new(config: GepaConfig) -> Self {
        Self {
            config,
            demos: None,
            run_dir: None,
            resume: false,
        }
    }

    /// Bootstraps demos for a seed that has none before the loop starts (see the module
    /// documentation); the instructions are then evolved around them.
    pub fn with_demos(mut self, demos: BootstrapFewShot) -> Self {
        self.demos = Some(demos);
        self
    }

    /// GEPA configured from a request's `algorithm_config`.
    pub fn from_config(config: &AlgorithmConfig) -> Result<Self, OptimizeError> {
        Ok(Self::new(GepaConfig::from_config(config)?))
    }

    /// Saves the run's state to `dir` after every iteration.
    pub fn with_run_dir(mut self, dir: impl Into<PathBuf>) -> Self {
        self.run_dir = Some(dir.into());
        self
    }

    /// Continues the run saved in the run directory, if there is one (otherwise starts fresh).
    /// Without it, a saved run is overwritten.
    pub fn resume(mut self, resume: bool) -> Self {
        self.resume = resume;
        self
    }

    /// The settings.
    pub fn config(&self) -> &GepaConfig {
        &self.config
    }

    /// Runs GEPA and returns the outcome with the full run state.
    pub async fn run(
        &self,
        ctx: &OptimizeContext,
        trainset: &[Example],
        valset: &[Example],
        initial: &ProgramState,
    ) -> Result<GepaRun, OptimizeError> {
        self.config.validate()?;
        if trainset.is_empty() {
            return Err(OptimizeError::NoExamples {
                purpose: "train",
                message: "GEPA reflects on training examples and got none".to_string(),
            });
        }
        let val = if valset.is_empty() { trainset } else { valset };
        let max_calls = self.config.metric_call_budget(val.len());
        if let Some(max) = max_calls {
            if max < val.len() as u64 {
                return Err(OptimizeError::InvalidConfig {
                    key: "max_metric_calls".to_string(),
                    message: format!(
                        "{max} metric calls cannot score the seed on {} validation examples",
                        val.len()
                    ),
                });
            }
        }
        let run_dir = self.run_dir.as_ref().map(RunDir::new);
        let mut state = match (&run_dir, self.resume) {
            (Some(dir), true) => match dir.load().await? {
                Some(saved) => {
                    saved.check_compatible(
                        ctx.seed(),
                        trainset.len(),
                        val.len(),
                        initial,
                        self.bootstraps_demos(initial),
                        &dir.state_path(),
                    )?;
                    saved
                }
                None => RunState::new(
                    ctx.seed(),
                    self.config.clone(),
                    trainset.len(),
                    val.len(),
                    max_calls,
                ),
            },
            _ => RunState::new(
                ctx.seed(),
                self.config.clone(),
                trainset.len(),
                val.len(),
                max_calls,
            ),
        };
        // A resumed run keeps its saved settings except the stopping limits given now.
        let mut config = state.config.clone();
        config.num_generations = self.config.num_generations;
        state.budget.max = max_calls.or(state.budget.max);
        let predictors: Vec<String> = ctx.predictors().into_iter().map(|p| p.name).collect();
        let engine = Engine {
            ctx,
            config: &config,
            train: trainset,
            val,
            predictors,
            reflection_model: config
                .reflection_lm
                .clone()
                .unwrap_or_else(|| ctx.prompt_model().to_string()),
            agents: if ctx.select_tools() {
                crate::tool_choice::agent_stages(ctx).await?
            } else {
                Vec::new()
            },
        };

        // A fresh run's seed, with its bootstrapped demos when asked for (before GEPA's own
        // stage, as a stage of its own); a resumed run's is the saved one.
        let fresh_seed = if state.candidates.is_empty() {
            Some(self.seed_state(ctx, trainset, initial).await?)
        } else {
            None
        };
        let started = std::time::Instant::now();
        let mut outcome = OutcomeBuilder::new(
            fresh_seed
                .clone()
                .or_else(|| state.candidates.first().map(|c| c.state.clone()))
                .unwrap_or_else(|| initial.clone()),
        );
        ctx.emit(Event::StageStarted {
            stage: "gepa".to_string(),
            total: config.num_generations,
        });
        if let Some(seed) = fresh_seed {
            if !engine.seed(&mut state, &seed).await? {
                return Err(OptimizeError::Stopped(StopReason::BudgetCalls));
            }
            if let Some(dir) = &run_dir {
                dir.save(&state).await?;
            }
            report(&mut outcome, ctx, &state.candidates[0]);
        } else {
            for c in &state.candidates {
                // A resumed run reports its restored candidates as trials again.
                report(&mut outcome, ctx, c);
            }
        }

        let stop_reason = loop {
            if config
                .num_generations
                .is_some_and(|max| state.iteration >= max)
            {
                break None;
            }
            if let Some(dir) = &run_dir {
                if dir.stop_requested().await {
                    ctx.budget().stop(StopReason::Cancelled);
                    break Some(StopReason::Cancelled);
                }
            }
            if let Err(e) = ctx.next_iteration() {
                match e.stop_reason() {
                    Some(reason) => break Some(reason),
                    None => return Err(e),
                }
            }
            match engine.iteration(&mut state).await {
                Ok(Step::Done {
                    records,
                    budget_spent,
                }) => {
                    state.iteration += 1;
                    for record in records {
                        if let Some(id) = record.candidate {
                            report(&mut outcome, ctx, &state.candidates[id]);
                        }
                        ctx.emit(Event::GepaIteration {
                            iteration: record.iteration,
                            kind: record.kind.clone(),
                            parents: record.parents.clone(),
                            predictors: record.predictors.clone(),
                            parent_score: record.parent_scores.iter().sum(),
                            child_score: record.child_scores.iter().sum(),
                            accepted: record.accepted,
                            candidate: record.candidate,
                            frontier_size: record.frontier_size,
                            metric_calls: record.metric_calls,
                        });
                        state.log.push(record);
                    }
                    ctx.emit(Event::StageProgress {
                        stage: "gepa".to_string(),
                        done: state.iteration,
                        total: config.num_generations,
                    });
                    if let Some(dir) = &run_dir {
                        dir.save(&state).await?;
                    }
                    if budget_spent {
                        break None;
                    }
                }
                Ok(Step::OutOfMetricBudget) => break None,
                Err(e) => match e.stop_reason() {
                    Some(reason) => break Some(reason),
                    None => return Err(e),
                },
            }
        };
        if state.rejected_proposals > 0 {
            ctx.warn(format!(
                "GEPA discarded {} of {} reflection replies that were not instructions",
                state.rejected_proposals, state.reflection_calls
            ));
        }
        outcome.set_iterations(state.iteration as usize);
        let result = outcome.finish(stop_reason);
        ctx.emit(Event::StageFinished {
            stage: "gepa".to_string(),
            seconds: started.elapsed().as_secs_f64(),
        });
        Ok(GepaRun {
            outcome: result,
            state,
        })
    }
}

impl Gepa {
    /// Whether the run gives `initial` bootstrapped demos before its loop: demos are asked for
    /// and the initial state has none of its own.
    fn bootstraps_demos(&self, initial: &ProgramState) -> bool {
        self.demos.is_some() && initial.predictors.values().all(|p| p.demos.is_empty())
    }

    /// The seed candidate: `initial`, with bootstrapped demos when the run asks for them.
    async fn seed_state(
        &self,
        ctx: &OptimizeContext,
        trainset: &[Example],
        initial: &ProgramState,
    ) -> Result<ProgramState, OptimizeError> {
        let Some(demos) = self
            .demos
            .as_ref()
            .filter(|_| self.bootstraps_demos(initial))
        else {
            return Ok(initial.clone());
        };
        // The stream BootstrapFewShot itself draws from, so the seed's demos are the ones that
        // algorithm would choose with the same seed and settings.
        let mut rng = ctx.rng();
        let run = demos.bootstrap(ctx, trainset, initial, &mut rng).await?;
        if let Some(reason) = run.stop_reason {
            return Err(OptimizeError::Stopped(reason));
        }
        ctx.emit(Event::CandidateProposed {
            candidate: 0,
            description: format!("GEPA seed: {}", run.summary()),
        });
        Ok(run.state)
    }
}

/// Reports a validated candidate as a full trial of the run.
fn report(outcome: &mut OutcomeBuilder, ctx: &OptimizeContext, c: &CandidateEntry) {
    outcome.record(
        Some(ctx),
        c.state.clone(),
        c.average(),
        TrialKind::Full,
        c.describe(),
        c.val_scores.clone(),
    );
}

#[async_trait]
impl Optimizer for Gepa {
    fn name(&self) -> &'static str {
        "gepa"
    }

    async fn compile(
        &self,
        ctx: &OptimizeContext,
        trainset: &[Example],
        valset: &[Example],
        initial: &ProgramState,
    ) -> Result<OptimizerOutcome, OptimizeError> {
        Ok(self.run(ctx, trainset, valset, initial).await?.outcome)
    }
}
