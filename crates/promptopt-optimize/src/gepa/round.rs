//! A round of reflective mutations: `parallel_proposals` proposals, each from its own parent
//! and minibatch, evaluated together.
//!
//! A round goes in phases, so that the model calls of all its proposals are in flight at once
//! (the engine batches them) while every choice that touches the run state stays in slot order:
//!
//! 1. **Admit** (in order): a parent and a minibatch per slot. A slot is admitted only when the
//!    budget still holds its parent's and its child's minibatch evaluations after the children of
//!    the slots before it; the parent's evaluation is reserved now.
//! 2. **Parents** (together): each parent runs on its minibatch with traces.
//! 3. **Plan** (in order): a parent perfect on its minibatch is skipped; the others choose the
//!    predictors to rewrite and draw their reflective examples from the run's RNG.
//! 4. **Reflect** (together): the reflection model writes each slot's new instructions.
//! 5. **Children** (together): each child runs on its parent's minibatch; it is accepted when it
//!    scores higher than its parent there, as with one proposal.
//! 6. **Validate** (together): the accepted children are scored on the validation set, as far as
//!    the budget reaches (in slot order); they join the pool in slot order.
//!
//! With one proposal per round this is GEPA's iteration: the same RNG draws, the same seeds, the
//! same budget checks. One difference is deliberate: a child better on its minibatch that the
//! budget can no longer validate keeps its record (GEPA drops it), so that the log accounts for
//! every metric call the run spent.

use futures::future::try_join_all;
use promptopt_core::evaluate::EvalReport;
use promptopt_core::{Example, ProgramState};
use promptopt_lm::{ChatRequest, LmError};
use rand_chacha::ChaCha8Rng;

use super::blame::blamed_stage;
use super::config::ModuleSelector;
use super::engine::{pick, stopped, Engine, Step, REFLECTION_SEED_OFFSET};
use super::reflection::{
    extract_instructions, reflection_messages, reflective_dataset, ReflectiveRecord, Rollout,
    REFLECTION_HEADINGS,
};
use super::selection::{best_by_average, select_parent};
use super::state::{IterationRecord, Origin, RunState};
use crate::instruction::{check_instruction, NotAnInstruction};
use crate::{Event, OptimizeError};

/// Distance between the reflection seeds of two slots of a round (slot 0 keeps GEPA's seed).
const SLOT_SEED_STRIDE: u64 = 1 << 24;

/// One slot of a round.
struct Proposal {
    slot: u64,
    parent: usize,
    batch: Vec<Example>,
    record: IterationRecord,
    /// The predictors to rewrite with their reflective examples (empty: nothing to propose).
    plan: Vec<(String, Vec<ReflectiveRecord>)>,
    /// The child and the predictors it rewrote.
    child: Option<(ProgramState, Vec<String>)>,
}

/// What the reflection model proposed for one slot.
struct Reflected {
    child: ProgramState,
    rewritten: Vec<String>,
    calls: u64,
    /// Why each discarded reply was not an instruction.
    rejected: Vec<NotAnInstruction>,
}

impl Engine<'_> {
    /// One round of `parallel_proposals` reflective mutations.
    pub(super) async fn reflect_round(
        &self,
        state: &mut RunState,
        rng: &mut ChaCha8Rng,
    ) -> Result<Step, OptimizeError> {
        let slots = self.config.parallel_proposals.max(1) as u64;
        // 1. Admit.
        let mut proposals: Vec<Proposal> = Vec::new();
        // The pool does not change before the children are validated.
        let frontier = state.frontier();
        let averages = state.active_averages();
        for slot in 0..slots {
            let parent = select_parent(
                self.config.candidate_selection_strategy,
                self.config.tournament_size,
                &frontier,
                &averages,
                rng,
            )
            .or_else(|| best_by_average(&averages))
            .unwrap_or(0);
            let batch_ids = state
                .sampler
                .batch(state.iteration * slots + slot, self.ctx.seed());
            let batch = pick(self.train, &batch_ids);
            let b = batch.len() as u64;
            let children_before: u64 = proposals.iter().map(|p| p.batch.len() as u64).sum();
            if !state.budget.fits(2 * b + children_before) || !state.budget.reserve(b) {
                break;
            }
            let mut record = self.record(state, "reflection");
            record.parents = vec![parent];
            record.examples = batch_ids;
            proposals.push(Proposal {
                slot,
                parent,
                batch,
                record,
                plan: Vec::new(),
                child: None,
            });
        }
        if proposals.is_empty() {
            return Ok(Step::OutOfMetricBudget);
        }

        // 2. Parents.
        let parent_reports: Vec<EvalReport> = try_join_all(proposals.iter().map(|p| {
            self.ctx
                .evaluate(&state.candidates[p.parent].state, &p.batch)
        }))
        .await?;

        // 3. Plan.
        for (p, report) in proposals.iter_mut().zip(&parent_reports) {
            let parent_scores = report.subscores();
            p.record.parent_scores = parent_scores.clone();
            if self.config.skip_perfect_score
                && !parent_scores.is_empty()
                && parent_scores
                    .iter()
                    .all(|&s| s >= self.config.perfect_score)
            {
                p.record.kind = "skip".to_string();
                p.record.note = "parent is perfect on the minibatch".to_string();
                continue;
            }
            let blamed = (self.config.module_selector == ModuleSelector::Blame)
                .then(|| {
                    blamed_stage(
                        report,
                        &p.batch,
                        self.ctx.program().output_keys(),
                        &self.predictors,
                    )
                })
                .flatten();
            let chosen = self.choose_predictors(state, p.parent, blamed, rng);
            let rollouts: Vec<Rollout<'_>> = report
                .results
                .iter()
                .map(|r| Rollout {
                    trace: &r.trace,
                    score: r.score,
                    feedback: r.feedback.as_deref(),
                })
                .collect();
            for name in chosen {
                let records = reflective_dataset(&name, &rollouts, rng);
                if !records.is_empty() {
                    p.plan.push((name, records));
                }
            }
        }

        // 4. Reflect.
        let iteration = state.iteration;
        let reflected: Vec<Option<Reflected>> = try_join_all(proposals.iter().map(|p| {
            let parent_state = &state.candidates[p.parent].state;
            self.propose(iteration, p, parent_state)
        }))
        .await?;
        for (p, reflected) in proposals.iter_mut().zip(reflected) {
            let Some(reflected) = reflected else {
                continue;
            };
            state.reflection_calls += reflected.calls;
            state.rejected_proposals += reflected.rejected.len() as u64;
            p.record.predictors = reflected.rewritten.clone();
            if reflected.rewritten.is_empty() {
                p.record.kind = "skip".to_string();
                p.record.note = match reflected.rejected.first() {
                    Some(reason) => format!("the proposal was discarded: {reason}"),
                    None => "no new instructions were proposed".to_string(),
                };
                continue;
            }
            // Each rewritten predictor with its new instructions, so that a log shows what
            // the reflection wrote.
            let rewrites = reflected
                .rewritten
                .iter()
                .map(|name| {
                    let text = reflected
                        .child
                        .predictor(name)
                        .map_or("", |pr| pr.instructions.as_str());
                    format!("`{name}`: {text}")
                })
                .collect::<Vec<_>>()
                .join("; ");
            self.ctx.emit(Event::CandidateProposed {
                candidate: state.candidates.len(),
                description: format!("reflection on #{}: {rewrites}", p.parent),
            });
            p.child = Some((reflected.child, reflected.rewritten));
        }

        // 5. Children (their minibatch evaluations were provided for at admission).
        let to_test: Vec<usize> = (0..proposals.len())
            .filter(|&i| proposals[i].child.is_some())
            .collect();
        for &i in &to_test {
            if !state.budget.reserve(proposals[i].batch.len() as u64) {
                return Ok(Step::OutOfMetricBudget);
            }
        }
        let child_reports: Vec<EvalReport> = try_join_all(proposals.iter().filter_map(|p| {
            p.child
                .as_ref()
                .map(|(child, _)| self.ctx.evaluate(child, &p.batch))
        }))
        .await?;
        let mut accepted: Vec<usize> = Vec::new();
        for (&i, report) in to_test.iter().zip(&child_reports) {
            let p = &mut proposals[i];
            let child_scores = report.subscores();
            p.record.child_scores = child_scores.clone();
            if child_scores.iter().sum::<f64>() > p.record.parent_scores.iter().sum::<f64>() {
                accepted.push(i);
            } else {
                p.record.note = "no improvement on the minibatch".to_string();
            }
        }

        // 6. Validate: as many accepted children as the budget holds, in slot order.
        let v = self.val.len() as u64;
        let mut validated: Vec<usize> = Vec::new();
        let mut dropped = 0;
        for &i in &accepted {
            if state.budget.reserve(v) {
                validated.push(i);
            } else {
                proposals[i].record.note =
                    "better on the minibatch, but the budget cannot validate it".to_string();
                dropped += 1;
            }
        }
        let val_reports: Vec<EvalReport> = try_join_all(validated.iter().filter_map(|&i| {
            proposals[i]
                .child
                .as_ref()
                .map(|(child, _)| self.ctx.evaluate(child, self.val))
        }))
        .await?;
        for (&i, report) in validated.iter().zip(val_reports) {
            let p = &mut proposals[i];
            let Some((child, rewritten)) = p.child.take() else {
                continue;
            };
            let id = self.add_candidate(
                state,
                child,
                vec![p.parent],
                Origin::Reflection {
                    predictors: rewritten,
                },
                report.subscores(),
            );
            state.last_found_new = true;
            if self.config.use_merge && state.merges_accepted < self.config.max_merge_invocations {
                state.merges_due += 1;
            }
            p.record.accepted = true;
            p.record.candidate = Some(id);
        }
        // A child better on its minibatch that the budget cannot validate keeps its record (its
        // calls were spent), and the run ends after this round.
        let records: Vec<IterationRecord> = proposals
            .into_iter()
            .map(|p| self.finished(state, p.record))
            .collect();
        Ok(Step::Done {
            records,
            budget_spent: dropped > 0,
        })
    }

    /// The reflection calls of one slot: new instructions for each planned predictor (and, with
    /// `tool_selection`, new tool descriptions); `None` when nothing was planned.
    async fn propose(
        &self,
        iteration: u64,
        p: &Proposal,
        parent_state: &ProgramState,
    ) -> Result<Option<Reflected>, OptimizeError> {
        if p.plan.is_empty() {
            return Ok(if p.record.kind == "skip" {
                None
            } else {
                Some(Reflected {
                    child: parent_state.clone(),
                    rewritten: Vec::new(),
                    calls: 0,
                    rejected: Vec::new(),
                })
            });
        }
        let seed = self
            .ctx
            .seed()
            .wrapping_add(REFLECTION_SEED_OFFSET)
            .wrapping_add(iteration)
            .wrapping_add(p.slot.wrapping_mul(SLOT_SEED_STRIDE));
        let mut child = parent_state.clone();
        let mut rewritten = Vec::new();
        let mut calls = 0;
        let mut rejected = Vec::new();
        for (name, records) in &p.plan {
            let current = child
                .predictor(name)
                .map(|pr| pr.instructions.clone())
                .unwrap_or_default();
            let messages = reflection_messages(name, &current, records);
            let request = ChatRequest::new(self.reflection_model.clone(), messages)
                .with_temperature(1.0)
                .with_max_tokens(self.config.reflection_max_tokens)
                .with_seed(seed);
            self.ctx.check()?;
            calls += 1;
            match self.ctx.prompt_lm().chat(&request).await {
                Ok(reply) => {
                    // The fence's language tag is gone from the extracted text, so the whole
                    // reply is checked for code as well.
                    let new = extract_instructions(reply.text()).unwrap_or_default();
                    let checked = check_instruction(reply.text(), &[])
                        .and_then(|()| check_instruction(&new, REFLECTION_HEADINGS));
                    match checked {
                        Err(reason) => rejected.push(reason),
                        Ok(()) if new != current => {
                            let new = self.ctx.fit_instruction(
                                new,
                                &format!(
                                    "the new instruction for `{name}` of iteration {}",
                                    iteration + 1
                                ),
                            );
                            if let Some(pr) = child.predictor_mut(name) {
                                pr.instructions = new;
                                rewritten.push(name.clone());
                            }
                        }
                        Ok(()) => {}
                    }
                }
                Err(LmError::BudgetExhausted(m)) => {
                    return Err(stopped(self.ctx, LmError::BudgetExhausted(m)))
                }
                Err(error) => {
                    self.ctx.warn(format!(
                        "GEPA iteration {}: the reflection call for `{name}` failed: {error}",
                        iteration + 1
                    ));
                    continue;
                }
            }
            if let Some(agent) = self.agents.iter().find(|a| a.predictor == *name) {
                let Some(predictor) = child.predictor(name) else {
                    continue;
                };
                calls += 1;
                if let Some(edit) = self
                    .reflect_tools(iteration, seed.wrapping_add(1), agent, predictor, records)
                    .await?
                {
                    if let Some(pr) = child.predictor_mut(name) {
                        edit.apply(agent, pr);
                        if !rewritten.contains(name) {
                            rewritten.push(name.clone());
                        }
                    }
                }
            }
        }
        Ok(Some(Reflected {
            child,
            rewritten,
            calls,
            rejected,
        }))
    }
}
