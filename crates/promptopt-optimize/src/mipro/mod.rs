//! MIPROv2: instruction proposals grounded in the data and the program, candidate demo sets,
//! and a Bayesian (TPE) search over their combinations.
//!
//! The algorithm is DSPy 3.4.1's (`teleprompt/mipro_optimizer_v2.py`), in three steps after
//! the setup:
//! 1. [`demos`]: `n` candidate demo sets per predictor (empty, labeled, bootstrapped, shuffled
//!    bootstraps of random size);
//! 2. [`proposer`]: instructions written by the prompt model from a dataset summary, a
//!    description of the program, random tips and bootstrapped demos;
//! 3. [`search`]: a multivariate [`tpe`] search over (instruction, demo set) per predictor, with
//!    minibatches and periodic full evaluations.
//!
//! Deliberate differences from DSPy: the run's seed is used as given (`0` included); every paid
//! proposal is a candidate and the original instruction is one more (DSPy overwrites proposal
//! 0); `minibatch`, when given, is honoured; the program and each predictor are described once
//! per run (DSPy asks again for every proposal); the default program's combination is never
//! re-evaluated in full (its full score is known); a combination whose full evaluation would
//! find nothing left to evaluate is skipped instead of failing; the default program is scored
//! before the proposals (so the instruction history can show its score); optional
//! `diversity_penalty` and `early_stopping` (see [`MiproConfig`]).
//!
//! LM calls, with `P` predictors, `T` trials, `s = minibatch_full_eval_steps`, `|V|` the
//! validation set after the preset's cap, `b` the minibatch size, when every bootstrapped run
//! succeeds and no proposal is retried:
//! * task model: bootstrapping (one program run per bootstrapped demo per set) `+ |V|` (default
//!   program) `+ T * b + ceil(T / s) * |V|` with minibatches, or `+ T * |V|` without, where a
//!   combination evaluated again on the same examples costs nothing (the context remembers
//!   evaluations), so without minibatches only distinct combinations count;
//! * prompt model: the dataset summary `2 + min(max(ceil(|train| / 10) - 1, 0), 9)`, the
//!   descriptions `P + 1`, and `P * min(N, n)` proposals (`N` instruction proposals, `n` demo
//!   sets).

mod config;
pub mod demos;
pub mod diversity;
pub mod proposer;
pub mod search;
pub mod tpe;

use async_trait::async_trait;
use promptopt_core::{Example, PredictorState, ProgramState};
use promptopt_lm::{ChatRequest, LmError};
use rand::seq::index::sample;
use serde::{Deserialize, Serialize};

pub use config::{
    trials_for, AutoMode, MiproConfig, MiproPlan, AUTO_MINIBATCH_THRESHOLD, CONFIG_KEYS,
    PROPOSER_DEMOS_IN_CONTEXT, VALID_KEYS,
};
pub use demos::{DemoCandidates, DemoSet, DemoSetKind, DemoSettings};
pub use proposer::{GroundedProposer, Proposal, ProposerCalls, ProposerSettings, Tip};
pub use search::{SearchSettings, SearchSpace, TrialLog};

use crate::tool_choice::{self, ToolChoice};
use crate::{
    AlgorithmConfig, Event, OptimizeContext, OptimizeError, Optimizer, OptimizerOutcome,
    OutcomeBuilder, TrialKind,
};

/// The MIPROv2 optimizer.
///
/// ```
/// use promptopt_optimize::mipro::{MiproConfig, MiproV2};
/// use promptopt_optimize::Optimizer;
///
/// let mipro = MiproV2::new(MiproConfig::default());
/// assert_eq!(mipro.name(), "miprov2");
/// ```
#[derive(Debug, Clone, Default, PartialEq)]
pub struct MiproV2 {
    /// Its settings.
    pub config: MiproConfig,
}

/// Everything a MIPROv2 run produced, beyond the [`OptimizerOutcome`].
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct MiproRun {
    /// The best state, its score, the candidates and the trajectory.
    pub outcome: OptimizerOutcome,
    /// The numbers the run followed.
    pub plan: MiproPlan,
    /// Whether trials were scored on minibatches.
    pub minibatch: bool,
    /// Validation examples used (after the preset's cap).
    pub valset_size: usize,
    /// Per predictor, the instruction candidates (index 0 is the original).
    pub instructions: Vec<Vec<String>>,
    /// The accepted proposals.
    pub proposals: Vec<Proposal>,
    /// Per predictor, the demo sets (empty in zero-shot mode, where they only informed the
    /// proposer).
    pub demo_sets: Vec<Vec<DemoSet>>,
    /// The dataset summary the proposer used.
    pub dataset_summary: Option<String>,
    /// Every search trial.
    pub trials: Vec<TrialLog>,
    /// Program runs spent bootstrapping.
    pub bootstrap_runs: usize,
    /// Prompt-model calls by purpose.
    pub proposer_calls: ProposerCalls,
    /// With `tool_selection`: per `react` stage, the tool descriptions the prompt model
    /// rewrote (empty when its reply was discarded).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub tool_proposals: Vec<ToolProposal>,
}

/// The prompt model's rewrite of one `react` stage's tool descriptions.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ToolProposal {
    /// The stage.
    pub predictor: String,
    /// The new descriptions, by tool.
    pub descriptions: std::collections::BTreeMap<String, String>,
    /// Why the reply was discarded, when it was.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub discarded: Option<String>,
}

impl MiproV2 {
    /// The name requests use.
    pub const NAME: &'static str = "miprov2";

    /// An optimizer with these settings.
    pub fn new(config: MiproConfig) -> Self {
        Self { config }
    }

    /// An optimizer from a request's `algorithm_config` (unknown keys are an error).
    pub fn from_algorithm_config(config: &AlgorithmConfig) -> Result<Self, OptimizeError> {
        Ok(Self::new(MiproConfig::from_algorithm_config(config)?))
    }

    /// Runs MIPROv2 and returns everything it produced.
    pub async fn optimize(
        &self,
        ctx: &OptimizeContext,
        trainset: &[Example],
        valset: &[Example],
        initial: &ProgramState,
    ) -> Result<MiproRun, OptimizeError> {
        let config = &self.config;
        let predictors = ctx.predictors();
        let plan = config.plan(predictors.len())?;
        let (trainset, valset) = split_sets(trainset, valset)?;
        let mut rng = ctx.rng();
        let valset: Vec<Example> = match plan.val_size {
            Some(cap) => sample(&mut rng, valset.len(), cap.min(valset.len()))
                .iter()
                .map(|i| valset[i].clone())
                .collect(),
            None => valset.to_vec(),
        };
        let minibatch = config.use_minibatch(&plan, valset.len())?;

        // Step 1: demo sets (in zero-shot mode only to show the proposer examples).
        let demo_settings = if plan.zero_shot {
            DemoSettings {
                num_sets: plan.num_fewshot_candidates,
                max_bootstrapped_demos: PROPOSER_DEMOS_IN_CONTEXT,
                max_labeled_demos: 0,
                max_rounds: config.max_rounds,
                metric_threshold: config.metric_threshold,
            }
        } else {
            DemoSettings {
                num_sets: plan.num_fewshot_candidates,
                max_bootstrapped_demos: config.max_bootstrapped_demos,
                max_labeled_demos: config.max_labeled_demos,
                max_rounds: config.max_rounds,
                metric_threshold: config.metric_threshold,
            }
        };
        let started = std::time::Instant::now();
        ctx.emit(Event::StageStarted {
            stage: "bootstrap".into(),
            total: Some(plan.num_fewshot_candidates as u64),
        });
        let demos =
            demos::build_demo_sets(ctx, &trainset, initial, &demo_settings, &mut rng).await?;
        ctx.emit(Event::StageFinished {
            stage: "bootstrap".into(),
            seconds: started.elapsed().as_secs_f64(),
        });
        for (i, set) in demos.sets.first().into_iter().flatten().enumerate() {
            ctx.emit(Event::CandidateProposed {
                candidate: i,
                description: format!("demo set {i}: {}", set.describe()),
            });
        }

        // The default program, scored in full.
        let mut outcome = OutcomeBuilder::new(initial.clone());
        outcome.trial_started(ctx, TrialKind::Full);
        let report = ctx.evaluate(initial, &valset).await?;
        let default_score = report.score;
        outcome.record(
            Some(ctx),
            initial.clone(),
            default_score,
            TrialKind::Full,
            "default program",
            report.subscores(),
        );

        let mut run = MiproRun {
            outcome: outcome.clone().finish(None),
            plan: plan.clone(),
            minibatch,
            valset_size: valset.len(),
            instructions: predictors
                .iter()
                .map(|p| {
                    vec![original_instruction(
                        initial,
                        &p.name,
                        &p.signature.instructions,
                    )]
                })
                .collect(),
            proposals: Vec::new(),
            demo_sets: if plan.zero_shot {
                Vec::new()
            } else {
                demos.sets.clone()
            },
            dataset_summary: None,
            trials: Vec::new(),
            bootstrap_runs: demos.bootstrap_runs,
            proposer_calls: ProposerCalls::default(),
            tool_proposals: Vec::new(),
        };

        // Step 2: instruction proposals.
        let started = std::time::Instant::now();
        ctx.emit(Event::StageStarted {
            stage: "propose".into(),
            total: Some((predictors.len() * plan.num_instruct_candidates) as u64),
        });
        let settings = ProposerSettings {
            program_aware: config.program_aware,
            data_aware: config.data_aware,
            tip_aware: config.tip_aware,
            fewshot_aware: config.fewshot_aware,
            use_instruct_history: config.use_instruct_history,
            view_data_batch_size: config.view_data_batch_size,
            demos_in_context: PROPOSER_DEMOS_IN_CONTEXT,
            temperature: config.temperature,
            diversity_penalty: config.diversity_penalty,
        };
        let mut proposer = GroundedProposer::new(ctx, settings, initial);
        let proposed = propose_all(
            ctx,
            &mut proposer,
            &trainset,
            &demos.sets,
            &mut run,
            default_score,
            &mut rng,
        )
        .await;
        run.proposer_calls = proposer.calls;
        run.dataset_summary = proposer.dataset_summary.clone();
        ctx.emit(Event::StageFinished {
            stage: "propose".into(),
            seconds: started.elapsed().as_secs_f64(),
        });
        if let Err(error) = proposed {
            let reason = error.stop_reason().ok_or(error)?;
            run.outcome = outcome.finish(Some(reason));
            return Ok(run);
        }

        // With `tool_selection`: rewritten tool descriptions, and the ways of offering each
        // agent stage's tools.
        let tools = if ctx.select_tools() {
            match propose_tools(ctx, initial, &trainset, config.temperature, &mut run).await {
                Ok(tools) => tools,
                Err(error) => {
                    let reason = error.stop_reason().ok_or(error)?;
                    run.outcome = outcome.finish(Some(reason));
                    return Ok(run);
                }
            }
        } else {
            Vec::new()
        };

        // Step 3: the search.
        let space = SearchSpace {
            predictors: predictors.iter().map(|p| p.name.clone()).collect(),
            instructions: run.instructions.clone(),
            demo_sets: (!plan.zero_shot).then(|| demos.sets.clone()),
            tools,
        };
        let search_settings = SearchSettings {
            num_trials: plan.num_trials,
            minibatch,
            minibatch_size: config.minibatch_size,
            full_eval_steps: config.minibatch_full_eval_steps,
            early_stopping: config.early_stopping,
            patience: config.patience,
            seed: ctx.seed(),
        };
        let started = std::time::Instant::now();
        let log = search::run_search(
            ctx,
            &space,
            initial,
            &valset,
            &search_settings,
            default_score,
            &mut outcome,
            &mut rng,
        )
        .await;
        ctx.emit(Event::StageFinished {
            stage: "search".into(),
            seconds: started.elapsed().as_secs_f64(),
        });
        run.trials = log.trials;
        run.outcome = outcome.finish(log.stop_reason);
        ctx.emit(Event::Finished {
            best_score: run.outcome.best_score,
            stop_reason: run.outcome.stop_reason,
        });
        Ok(run)
    }
}

fn original_instruction(state: &ProgramState, name: &str, fallback: &str) -> String {
    state
        .predictor(name)
        .map_or_else(|| fallback.to_string(), |p| p.instructions.clone())
}

/// The training and validation sets. Without a validation set, the last fifth of the
/// training set (at least one example) validates; DSPy would take 80 % for validation.
fn split_sets(
    trainset: &[Example],
    valset: &[Example],
) -> Result<(Vec<Example>, Vec<Example>), OptimizeError> {
    if trainset.is_empty() {
        return Err(OptimizeError::NoExamples {
            purpose: "train",
            message: "MIPROv2 needs training examples to bootstrap demos and propose instructions"
                .into(),
        });
    }
    if !valset.is_empty() {
        return Ok((trainset.to_vec(), valset.to_vec()));
    }
    if trainset.len() < 2 {
        return Err(OptimizeError::NoExamples {
            purpose: "validate",
            message: "no validation set was given and one training example cannot be split".into(),
        });
    }
    let n_val = (trainset.len() / 5).max(1);
    let cut = trainset.len() - n_val;
    Ok((trainset[..cut].to_vec(), trainset[cut..].to_vec()))
}

async fn propose_all(
    ctx: &OptimizeContext,
    proposer: &mut GroundedProposer<'_>,
    trainset: &[Example],
    demo_sets: &[Vec<DemoSet>],
    run: &mut MiproRun,
    default_score: f64,
    rng: &mut rand_chacha::ChaCha8Rng,
) -> Result<(), OptimizeError> {
    proposer.summarize_data(trainset).await?;
    proposer.describe_program(demo_sets).await?;
    let n_sets = demo_sets.first().map_or(0, Vec::len);
    let count = if n_sets == 0 {
        run.plan.num_instruct_candidates
    } else {
        run.plan.num_instruct_candidates.min(n_sets)
    };
    for p in 0..run.instructions.len() {
        let history = vec![(run.instructions[p][0].clone(), Some(default_score))];
        let existing = run.instructions[p].clone();
        let proposals = proposer
            .propose_for(p, count, demo_sets, &history, &existing, rng)
            .await?;
        for proposal in proposals {
            ctx.emit(Event::CandidateProposed {
                candidate: run.instructions[p].len(),
                description: format!(
                    "instruction {} for `{}`: {}",
                    run.instructions[p].len(),
                    proposal.predictor,
                    proposal.instruction
                ),
            });
            run.instructions[p].push(proposal.instruction.clone());
            run.proposals.push(proposal);
        }
    }
    Ok(())
}

/// Training inputs shown to the prompt model when it rewrites tool descriptions.
const TOOL_EVIDENCE_EXAMPLES: usize = 3;

/// Per agent stage, asks the prompt model to rewrite its tools' descriptions (from a few
/// training inputs) and returns the search's tool choices: every subset of the stage's tools,
/// with their own descriptions and with the rewritten ones. A failed call (other than a stop)
/// or an unusable reply leaves the stage with its own descriptions.
async fn propose_tools(
    ctx: &OptimizeContext,
    initial: &ProgramState,
    trainset: &[Example],
    temperature: f64,
    run: &mut MiproRun,
) -> Result<Vec<(usize, Vec<ToolChoice>)>, OptimizeError> {
    let agents = tool_choice::agent_stages(ctx).await?;
    let order: Vec<String> = ctx
        .program()
        .input_keys()
        .iter()
        .map(|k| k.to_string())
        .collect();
    let mut evidence = String::from("Inputs the step will get:\n");
    for example in trainset.iter().take(TOOL_EVIDENCE_EXAMPLES) {
        let inputs = example.project(&order);
        evidence.push_str(&format!(
            "\n{}\n",
            proposer::render_example(&inputs, &order)
        ));
    }
    let names: Vec<String> = ctx.predictors().into_iter().map(|p| p.name).collect();
    let mut out = Vec::new();
    for agent in &agents {
        let Some(index) = names.iter().position(|n| *n == agent.predictor) else {
            continue;
        };
        let default = PredictorState::new(String::new());
        let predictor = initial.predictor(&agent.predictor).unwrap_or(&default);
        ctx.check()?;
        let request = ChatRequest::new(
            ctx.prompt_model(),
            tool_choice::tool_messages(agent, predictor, &evidence),
        )
        .with_temperature(temperature as f32)
        .with_max_tokens(proposer::MAX_REPLY_TOKENS);
        let reply = match ctx.prompt_lm().chat(&request).await {
            Ok(reply) => tool_choice::parse_tool_reply(reply.text(), agent, predictor),
            Err(LmError::BudgetExhausted(_)) => {
                return Err(OptimizeError::Stopped(
                    ctx.budget()
                        .stopped_reason()
                        .unwrap_or(crate::StopReason::BudgetCalls),
                ))
            }
            Err(error) => Err(format!("the call failed: {error}")),
        };
        let (descriptions, discarded) = match reply {
            Ok(edit) => (edit.descriptions, None),
            Err(why) => {
                ctx.warn(format!(
                    "The tool descriptions proposed for `{}` were discarded: {why}",
                    agent.predictor
                ));
                (Default::default(), Some(why))
            }
        };
        let choices = tool_choice::choices(agent, &descriptions);
        for (i, choice) in choices.iter().enumerate() {
            ctx.emit(Event::CandidateProposed {
                candidate: i,
                description: format!(
                    "tool choice {i} for `{}`: {}",
                    agent.predictor,
                    choice.describe()
                ),
            });
        }
        run.tool_proposals.push(ToolProposal {
            predictor: agent.predictor.clone(),
            descriptions,
            discarded,
        });
        out.push((index, choices));
    }
    Ok(out)
}

#[async_trait]
impl Optimizer for MiproV2 {
    fn name(&self) -> &'static str {
        Self::NAME
    }

    async fn compile(
        &self,
        ctx: &OptimizeContext,
        trainset: &[Example],
        valset: &[Example],
        initial: &ProgramState,
    ) -> Result<OptimizerOutcome, OptimizeError> {
        Ok(self.optimize(ctx, trainset, valset, initial).await?.outcome)
    }
}
