//! GEPA's loop: seed evaluation, then per iteration a merge (when one is due) or a round of
//! reflective mutations (the `round` module), every step recorded in the run state.

use promptopt_core::{Example, ProgramState};
use promptopt_lm::{ChatRequest, LmError};
use rand::Rng;
use rand_chacha::ChaCha8Rng;

use super::config::{GepaConfig, ModuleSelector};
use super::frontier::retire_for_cap;
use super::merge::{accept_merge, merge_subsample, plan_merge, Lineage};
use super::reflection::render_records;
use super::state::{CandidateEntry, IterationRecord, Origin, RunState};
use crate::tool_choice::{parse_tool_reply, tool_messages, AgentStage, ToolEdit};
use crate::{Event, OptimizeContext, OptimizeError, StopReason};

/// Stream offset of the reflection model's sampling seeds.
pub(super) const REFLECTION_SEED_OFFSET: u64 = 0x5EED_0000;

/// What one iteration ended with.
#[derive(Debug)]
pub(crate) enum Step {
    /// It completed: one record per proposal (a merge: one).
    Done {
        /// The records, in slot order.
        records: Vec<IterationRecord>,
        /// An accepted child could not be validated within the budget: the run is over.
        budget_spent: bool,
    },
    /// The next evaluation would pass the metric-call budget: the run is over.
    OutOfMetricBudget,
}

/// The loop's fixed inputs.
pub(crate) struct Engine<'a> {
    pub ctx: &'a OptimizeContext,
    pub config: &'a GepaConfig,
    pub train: &'a [Example],
    pub val: &'a [Example],
    pub predictors: Vec<String>,
    pub reflection_model: String,
    /// With `tool_selection`: the agent stages, whose tools the reflection may describe or hide.
    pub agents: Vec<AgentStage>,
}

pub(super) fn stopped(ctx: &OptimizeContext, error: LmError) -> OptimizeError {
    match error {
        LmError::BudgetExhausted(_) => OptimizeError::Stopped(
            ctx.budget()
                .stopped_reason()
                .unwrap_or(StopReason::BudgetCalls),
        ),
        other => OptimizeError::Lm(other),
    }
}

pub(super) fn pick(examples: &[Example], indices: &[usize]) -> Vec<Example> {
    indices
        .iter()
        .filter_map(|&i| examples.get(i).cloned())
        .collect()
}

impl Engine<'_> {
    /// Evaluates the initial state on the validation set and makes it candidate 0.
    pub async fn seed(
        &self,
        state: &mut RunState,
        initial: &ProgramState,
    ) -> Result<bool, OptimizeError> {
        if !state.budget.reserve(self.val.len() as u64) {
            return Ok(false);
        }
        let report = self.ctx.evaluate(initial, self.val).await?;
        state.candidates.push(CandidateEntry {
            id: 0,
            state: initial.clone(),
            parents: Vec::new(),
            origin: Origin::Seed,
            val_scores: report.subscores(),
            iteration: 0,
            discovered_at: state.budget.used,
            active: true,
            next_predictor: 0,
        });
        Ok(true)
    }

    /// Runs iteration `state.iteration + 1`.
    pub async fn iteration(&self, state: &mut RunState) -> Result<Step, OptimizeError> {
        let mut rng = self.ctx.rng_for(state.iteration);
        let merge_allowed = state.last_found_new;
        state.last_found_new = false;
        let merge_due = self.config.use_merge
            && merge_allowed
            && state.merges_due > 0
            && state.merges_accepted < self.config.max_merge_invocations;
        if merge_due && rng.gen_bool(self.config.crossover_rate) {
            if let Some(step) = self.merge(state, &mut rng).await? {
                return Ok(step);
            }
        }
        self.reflect_round(state, &mut rng).await
    }

    pub(super) fn record(&self, state: &RunState, kind: &str) -> IterationRecord {
        IterationRecord {
            iteration: state.iteration + 1,
            kind: kind.to_string(),
            parents: Vec::new(),
            predictors: Vec::new(),
            examples: Vec::new(),
            parent_scores: Vec::new(),
            child_scores: Vec::new(),
            accepted: false,
            candidate: None,
            frontier_size: 0,
            metric_calls: 0,
            note: String::new(),
        }
    }

    /// The record with the pool's state after the iteration.
    pub(super) fn finished(
        &self,
        state: &RunState,
        mut record: IterationRecord,
    ) -> IterationRecord {
        record.frontier_size = state.frontier().len();
        record.metric_calls = state.budget.used;
        record
    }

    fn finish(&self, state: &RunState, record: IterationRecord) -> Step {
        Step::Done {
            records: vec![self.finished(state, record)],
            budget_spent: false,
        }
    }

    /// Adds a candidate, applies the pool cap, and announces it.
    pub(super) fn add_candidate(
        &self,
        state: &mut RunState,
        program: ProgramState,
        parents: Vec<usize>,
        origin: Origin,
        val_scores: Vec<f64>,
    ) -> usize {
        let id = state.candidates.len();
        let next_predictor = parents
            .iter()
            .filter_map(|&p| state.candidates.get(p).map(|c| c.next_predictor))
            .max()
            .unwrap_or(0);
        state.candidates.push(CandidateEntry {
            id,
            state: program,
            parents,
            origin,
            val_scores,
            iteration: state.iteration + 1,
            discovered_at: state.budget.used,
            active: true,
            next_predictor,
        });
        if let Some(cap) = self.config.population_size {
            let active: Vec<(usize, &[f64])> = state
                .candidates
                .iter()
                .filter(|c| c.active)
                .map(|c| (c.id, c.val_scores.as_slice()))
                .collect();
            for retired in retire_for_cap(&active, cap, self.config.elite_size) {
                if let Some(c) = state.candidates.get_mut(retired) {
                    c.active = false;
                }
            }
        }
        id
    }

    /// A merge attempt; `None` when no merge could be planned (the iteration reflects instead).
    async fn merge(
        &self,
        state: &mut RunState,
        rng: &mut ChaCha8Rng,
    ) -> Result<Option<Step>, OptimizeError> {
        let frontier = state.frontier();
        let dominators = frontier.dominators(&state.active_averages());
        let states: Vec<ProgramState> = state.candidates.iter().map(|c| c.state.clone()).collect();
        let parents: Vec<Vec<usize>> = state.candidates.iter().map(|c| c.parents.clone()).collect();
        let averages = state.averages();
        let lineage = Lineage {
            states: &states,
            parents: &parents,
            averages: &averages,
        };
        let Some(plan) = plan_merge(&lineage, &dominators, &mut state.ledger, rng) else {
            return Ok(None);
        };
        let scores_a = state.candidates[plan.a].val_scores.clone();
        let scores_b = state.candidates[plan.b].val_scores.clone();
        let subsample =
            merge_subsample(&scores_a, &scores_b, self.config.merge_subsample_size, rng);
        if !state.budget.reserve(subsample.len() as u64) {
            return Ok(Some(Step::OutOfMetricBudget));
        }
        let sub_report = self
            .ctx
            .evaluate(&plan.state, &pick(self.val, &subsample))
            .await?;
        state.merges_tried += 1;
        let merged_sub = sub_report.subscores();
        let a_sub: Vec<f64> = subsample.iter().map(|&k| scores_a[k]).collect();
        let b_sub: Vec<f64> = subsample.iter().map(|&k| scores_b[k]).collect();
        let accepted = accept_merge(&merged_sub, &a_sub, &b_sub);
        let mut record = self.record(state, "merge");
        record.parents = vec![plan.a, plan.b];
        record.examples = subsample.clone();
        record.parent_scores = vec![a_sub.iter().sum(), b_sub.iter().sum()];
        record.child_scores = merged_sub.clone();
        self.ctx.emit(Event::CandidateProposed {
            candidate: state.candidates.len(),
            description: format!(
                "merge of #{} and #{} over #{}",
                plan.a, plan.b, plan.ancestor
            ),
        });
        if !accepted {
            record.note = "merged candidate scored below a parent on the subsample".to_string();
            return Ok(Some(self.finish(state, record)));
        }
        // The subsample's scores are kept; only the rest of the validation set is evaluated.
        let rest: Vec<usize> = (0..self.val.len())
            .filter(|k| !subsample.contains(k))
            .collect();
        if !state.budget.reserve(rest.len() as u64) {
            return Ok(Some(Step::OutOfMetricBudget));
        }
        let rest_report = self
            .ctx
            .evaluate(&plan.state, &pick(self.val, &rest))
            .await?;
        let mut val_scores = vec![0.0; self.val.len()];
        for (&k, &s) in subsample.iter().zip(&merged_sub) {
            val_scores[k] = s;
        }
        for (&k, s) in rest.iter().zip(rest_report.subscores()) {
            val_scores[k] = s;
        }
        let id = self.add_candidate(
            state,
            plan.state,
            vec![plan.a, plan.b],
            Origin::Merge {
                ancestor: plan.ancestor,
            },
            val_scores,
        );
        state.merges_due = state.merges_due.saturating_sub(1);
        state.merges_accepted += 1;
        record.accepted = true;
        record.candidate = Some(id);
        Ok(Some(self.finish(state, record)))
    }

    /// Which predictors a mutation of `parent` rewrites (advances its round-robin turn).
    pub(super) fn choose_predictors(
        &self,
        state: &mut RunState,
        parent: usize,
        blamed: Option<String>,
        rng: &mut ChaCha8Rng,
    ) -> Vec<String> {
        let n = self.predictors.len();
        if n == 0 {
            return Vec::new();
        }
        let Some(entry) = state.candidates.get_mut(parent) else {
            return Vec::new();
        };
        let turn = entry.next_predictor % n;
        entry.next_predictor = (turn + 1) % n;
        match self.config.module_selector {
            ModuleSelector::RoundRobin => vec![self.predictors[turn].clone()],
            ModuleSelector::Blame => vec![blamed.unwrap_or_else(|| self.predictors[turn].clone())],
            ModuleSelector::All => {
                let chosen: Vec<String> = self
                    .predictors
                    .iter()
                    .filter(|_| rng.gen_bool(self.config.mutation_rate))
                    .cloned()
                    .collect();
                if chosen.is_empty() {
                    vec![self.predictors[turn].clone()]
                } else {
                    chosen
                }
            }
        }
    }

    /// `tool_selection`: the reflection model reads the same examples (the stage's trajectories,
    /// scores and feedback) and may describe tools anew or hide them. `None` when the call failed
    /// (warned) or the reply changes nothing or is discarded (warned).
    pub(super) async fn reflect_tools(
        &self,
        iteration: u64,
        seed: u64,
        agent: &AgentStage,
        predictor: &promptopt_core::PredictorState,
        records: &[super::reflection::ReflectiveRecord],
    ) -> Result<Option<ToolEdit>, OptimizeError> {
        let (examples, shown) = render_records(records);
        let evidence = format!(
            "Here is how the step did on {shown} example(s): the inputs it received (its \
`trajectory` shows each tool it called, the arguments and what the tool answered), what it \
generated, the score and feedback. Look for tools that were chosen wrongly, called with wrong \
arguments or misunderstood.\n\n{examples}"
        );
        let request = ChatRequest::new(
            self.reflection_model.clone(),
            tool_messages(agent, predictor, &evidence),
        )
        .with_temperature(1.0)
        .with_max_tokens(self.config.reflection_max_tokens)
        .with_seed(seed);
        self.ctx.check()?;
        let reply = match self.ctx.prompt_lm().chat(&request).await {
            Ok(reply) => reply,
            Err(LmError::BudgetExhausted(m)) => {
                return Err(stopped(self.ctx, LmError::BudgetExhausted(m)))
            }
            Err(error) => {
                self.ctx.warn(format!(
                    "GEPA iteration {}: the tool reflection for `{}` failed: {error}",
                    iteration + 1,
                    agent.predictor
                ));
                return Ok(None);
            }
        };
        match parse_tool_reply(reply.text(), agent, predictor) {
            Ok(edit) if !edit.is_empty() => Ok(Some(edit)),
            Ok(_) => Ok(None),
            Err(why) => {
                self.ctx.warn(format!(
                    "GEPA iteration {}: the tool reflection for `{}` was discarded: {why}",
                    iteration + 1,
                    agent.predictor
                ));
                Ok(None)
            }
        }
    }
}
