//! The grounded instruction proposer: a summary of the training data, a description of the
//! program and of each predictor, a random prompting tip, bootstrapped demos and (optionally)
//! the earlier instructions with their scores, all given to the prompt model, which writes a new
//! instruction for one predictor.
//!
//! Call counts (prompt model), for `T` training examples, batch size `b`, `P` predictors and
//! `k` proposals per predictor, when no proposal is retried for diversity:
//! * dataset summary (`data_aware`): `1 + min(max(ceil(T / b) - 1, 0), 9) + 1` (first batch,
//!   up to nine more batches, the summary); fewer when the model answers `COMPLETE` five times;
//! * descriptions (`program_aware`): `1 + P` (the program once, each predictor once; DSPy asks
//!   for both again with every proposal);
//! * proposals: `P * k`, each at the configured temperature with its own `rollout_id`, so the
//!   cache keeps them apart.

use std::collections::BTreeSet;

use promptopt_core::{value_to_text, Example, ProgramState, Signature, Strategy};
use promptopt_lm::{ChatRequest, LmError, Message};
use rand::seq::SliceRandom;
use rand::Rng;
use rand_chacha::ChaCha8Rng;
use serde::{Deserialize, Serialize};

use super::demos::DemoSet;
use super::diversity::too_similar;
use crate::instruction::{check_instruction, check_not_quoted};
use crate::{OptimizeContext, OptimizeError, StopReason};
use promptopt_core::Stage;

/// Most calls the dataset summary spends on batches after the first (DSPy's limit).
const MAX_EXTRA_SUMMARY_BATCHES: usize = 9;
/// `COMPLETE` answers after which the dataset summary stops reading batches.
const MAX_COMPLETE_ANSWERS: usize = 5;
/// Characters kept of each field value shown to the prompt model.
const MAX_VALUE_CHARS: usize = 600;
/// Token bound of the proposer's replies.
pub(crate) const MAX_REPLY_TOKENS: u32 = 512;

/// A prompting tip given to one proposal.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Tip {
    /// No tip.
    None,
    /// Encourage an inventive framing.
    Creative,
    /// Ask for a short, plain instruction.
    Simple,
    /// Ask for a detailed, explicit instruction.
    Description,
    /// Frame mistakes as costly.
    HighStakes,
    /// Give the model a role.
    Persona,
}

impl Tip {
    /// Every tip, in the order random choices index them.
    pub const ALL: [Tip; 6] = [
        Tip::None,
        Tip::Creative,
        Tip::Simple,
        Tip::Description,
        Tip::HighStakes,
        Tip::Persona,
    ];

    /// The tip's text (empty for [`Tip::None`]).
    pub fn text(self) -> &'static str {
        match self {
            Tip::None => "",
            Tip::Creative => "Feel free to be inventive in how the instruction frames the task.",
            Tip::Simple => "Keep the instruction short and plain.",
            Tip::Description => {
                "Make the instruction detailed and explicit about what a good answer contains."
            }
            Tip::HighStakes => {
                "Frame the task as one where mistakes are costly, so the model must be careful."
            }
            Tip::Persona => {
                "Open the instruction by giving the model a fitting role (for example \"You are a ...\")."
            }
        }
    }
}

/// One proposed instruction.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Proposal {
    /// The predictor it is for.
    pub predictor: String,
    /// The instruction.
    pub instruction: String,
    /// The tip it was proposed with.
    pub tip: Tip,
    /// The demo set whose bootstrapped demos it was shown first.
    pub demo_set: usize,
    /// The `rollout_id` of the request that produced it.
    pub rollout_id: u64,
    /// Whether it took a second request because the first was too similar to a candidate.
    pub retried: bool,
}

/// What the proposer looks at and how it proposes.
#[derive(Debug, Clone, PartialEq)]
pub struct ProposerSettings {
    /// Describe the program and each predictor.
    pub program_aware: bool,
    /// Summarize the training data.
    pub data_aware: bool,
    /// Give each proposal a random tip.
    pub tip_aware: bool,
    /// Show bootstrapped demos.
    pub fewshot_aware: bool,
    /// Show earlier instructions (with scores where known).
    pub use_instruct_history: bool,
    /// Training examples per summary call.
    pub view_data_batch_size: usize,
    /// Bootstrapped demos shown per proposal.
    pub demos_in_context: usize,
    /// Proposal temperature.
    pub temperature: f64,
    /// The diversity rule's penalty (see [`super::diversity`]).
    pub diversity_penalty: f64,
}

/// The line starts of the proposal prompt's sections: a proposal with a line that starts with
/// one of them copied the prompt back (see [`crate::instruction`]).
const PROPOSAL_HEADINGS: &[&str] = &[
    "About the data:",
    "The program:",
    "What the program does:",
    "What step `",
    "Worked examples of this step:",
    "Instructions tried for this step:",
    "Current instruction:",
    "Instructions already proposed",
    "(score ",
    "(not scored yet)",
    "Write a better instruction",
];

/// Prompt-model calls of one proposer run, by purpose.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct ProposerCalls {
    /// Dataset-summary calls.
    pub summary: usize,
    /// Program and predictor descriptions.
    pub describe: usize,
    /// Instruction proposals, retries included.
    pub propose: usize,
    /// Proposals discarded because they were not instructions (see [`crate::instruction`]).
    #[serde(default)]
    pub rejected: usize,
}

impl ProposerCalls {
    /// All prompt-model calls.
    pub fn total(&self) -> usize {
        self.summary + self.describe + self.propose
    }
}

/// The grounded proposer for one run.
pub struct GroundedProposer<'a> {
    ctx: &'a OptimizeContext,
    settings: ProposerSettings,
    predictors: Vec<Stage>,
    initial: &'a ProgramState,
    /// The dataset summary, once written.
    pub dataset_summary: Option<String>,
    /// The program's description, once written.
    pub program_description: Option<String>,
    /// Each predictor's description, in predictor order, once written.
    pub predictor_descriptions: Vec<Option<String>>,
    /// Calls spent so far.
    pub calls: ProposerCalls,
    used_rollouts: BTreeSet<u64>,
    /// The training examples' text values, which a proposal must not quote.
    example_values: Vec<String>,
}

fn stopped(ctx: &OptimizeContext, error: LmError) -> OptimizeError {
    match error {
        LmError::BudgetExhausted(_) => OptimizeError::Stopped(
            ctx.budget()
                .stopped_reason()
                .unwrap_or(StopReason::BudgetCalls),
        ),
        other => OptimizeError::Lm(other),
    }
}

fn clip(text: &str) -> String {
    match text.char_indices().nth(MAX_VALUE_CHARS) {
        Some((cut, _)) => format!("{}...", &text[..cut]),
        None => text.to_string(),
    }
}

/// An example as `field: value` lines: the given fields in order, then any other fields.
pub fn render_example(example: &Example, order: &[String]) -> String {
    let mut names: Vec<&str> = order
        .iter()
        .map(String::as_str)
        .filter(|n| example.contains(n))
        .collect();
    for key in example.keys() {
        if !names.contains(&key) {
            names.push(key);
        }
    }
    names
        .iter()
        .filter_map(|n| {
            example
                .get(n)
                .map(|v| format!("{n}: {}", clip(&value_to_text(v))))
        })
        .collect::<Vec<_>>()
        .join("\n")
}

/// Removes a short leading label (`Instruction:`, `**New prompt:**`), surrounding quotes and
/// markdown emphasis from a reply.
pub fn strip_label(reply: &str) -> String {
    let mut text = reply.trim();
    if let Some((head, rest)) = text.split_once(':') {
        let words: Vec<String> = head
            .split_whitespace()
            .map(|w| {
                w.trim_matches(|c: char| !c.is_alphanumeric())
                    .to_lowercase()
            })
            .collect();
        let labelled = !head.contains('\n')
            && words.len() <= 5
            && words.iter().any(|w| {
                matches!(
                    w.as_str(),
                    "instruction"
                        | "instructions"
                        | "prompt"
                        | "summary"
                        | "observations"
                        | "description"
                )
            });
        if labelled {
            text = rest.trim();
        }
    }
    let text = text.trim_matches(|c: char| c == '*' || c.is_whitespace());
    let text = text
        .strip_prefix('"')
        .and_then(|t| t.strip_suffix('"'))
        .unwrap_or(text);
    text.trim().to_string()
}

/// The program's structure as text: each predictor with its fields and current instruction.
pub fn describe_structure(predictors: &[Stage], state: &ProgramState) -> String {
    predictors
        .iter()
        .enumerate()
        .map(|(i, p)| {
            let strategy = state
                .predictor(&p.name)
                .map(|s| s.strategy)
                .unwrap_or_default();
            let instruction = state
                .predictor(&p.name)
                .map(|s| s.instructions.as_str())
                .unwrap_or(p.signature.instructions.as_str());
            format!(
                "Step {} `{}`: {}\n{}\nCurrent instruction: {}",
                i + 1,
                p.name,
                module_line(&p.signature, strategy),
                field_lines(&p.signature),
                instruction
            )
        })
        .collect::<Vec<_>>()
        .join("\n\n")
}

fn module_line(signature: &Signature, strategy: Strategy) -> String {
    let kind = match strategy {
        Strategy::Predict => "Predict",
        Strategy::ChainOfThought => "ChainOfThought",
        Strategy::React => "ReAct",
    };
    format!(
        "{kind}({}) -> {}",
        signature.input_names().join(", "),
        signature.output_names().join(", ")
    )
}

fn field_lines(signature: &Signature) -> String {
    let describe = |role: &str, f: &promptopt_core::Field| {
        if f.description.is_empty() {
            format!("- {role} `{}`", f.name)
        } else {
            format!("- {role} `{}`: {}", f.name, f.description)
        }
    };
    signature
        .inputs
        .iter()
        .map(|f| describe("input", f))
        .chain(signature.outputs.iter().map(|f| describe("output", f)))
        .collect::<Vec<_>>()
        .join("\n")
}

impl<'a> GroundedProposer<'a> {
    /// A proposer for the program of `ctx`, starting from `initial`.
    pub fn new(
        ctx: &'a OptimizeContext,
        settings: ProposerSettings,
        initial: &'a ProgramState,
    ) -> Self {
        let predictors = ctx.predictors();
        let n = predictors.len();
        Self {
            ctx,
            settings,
            predictors,
            initial,
            dataset_summary: None,
            program_description: None,
            predictor_descriptions: vec![None; n],
            calls: ProposerCalls::default(),
            used_rollouts: BTreeSet::new(),
            example_values: Vec::new(),
        }
    }

    async fn ask(
        &self,
        system: String,
        user: String,
        temperature: f64,
        rollout_id: Option<u64>,
    ) -> Result<String, OptimizeError> {
        self.ctx.check()?;
        let mut request = ChatRequest::new(
            self.ctx.prompt_model(),
            vec![Message::system(system), Message::user(user)],
        )
        .with_temperature(temperature as f32)
        .with_max_tokens(MAX_REPLY_TOKENS);
        request.rollout_id = rollout_id;
        let response = self
            .ctx
            .prompt_lm()
            .chat(&request)
            .await
            .map_err(|e| stopped(self.ctx, e))?;
        Ok(response.text().to_string())
    }

    /// Writes the dataset summary from batches of `trainset`. A failed call (other than a stop)
    /// turns data awareness off, as the run can go on without it. The examples' text values
    /// are kept (with data awareness on or off): a later proposal that quotes one is discarded
    /// (see [`check_not_quoted`]).
    pub async fn summarize_data(&mut self, trainset: &[Example]) -> Result<(), OptimizeError> {
        self.example_values = trainset
            .iter()
            .flat_map(|e| e.fields().values())
            .filter_map(|v| v.as_str().map(str::to_string))
            .collect();
        if !self.settings.data_aware || trainset.is_empty() {
            return Ok(());
        }
        match self.try_summarize(trainset).await {
            Ok(summary) => {
                self.dataset_summary = Some(summary).filter(|s| !s.is_empty());
                Ok(())
            }
            Err(OptimizeError::Stopped(reason)) => Err(OptimizeError::Stopped(reason)),
            Err(error) => {
                self.ctx.warn(format!(
                    "Dataset summary failed, proposing without it: {error}"
                ));
                self.settings.data_aware = false;
                Ok(())
            }
        }
    }

    fn field_order(&self) -> Vec<String> {
        let mut order = Vec::new();
        for p in &self.predictors {
            for n in p
                .signature
                .input_names()
                .into_iter()
                .chain(p.signature.output_names())
            {
                if !order.contains(&n) {
                    order.push(n);
                }
            }
        }
        order
    }

    fn render_batch(&self, batch: &[Example]) -> String {
        let order = self.field_order();
        batch
            .iter()
            .enumerate()
            .map(|(i, e)| format!("Example {}:\n{}", i + 1, render_example(e, &order)))
            .collect::<Vec<_>>()
            .join("\n\n")
    }

    async fn try_summarize(&mut self, trainset: &[Example]) -> Result<String, OptimizeError> {
        let b = self.settings.view_data_batch_size.max(1);
        let first = &trainset[..b.min(trainset.len())];
        self.calls.summary += 1;
        let mut observations = strip_label(
            &self
                .ask(
                    "You study the data of a machine learning task. Read the examples and write \
                     short observations about them: what the inputs look like, what the outputs \
                     look like, their topics, style and length, and any regularity that someone \
                     writing instructions for the task should know. Reply with the observations \
                     only."
                        .into(),
                    format!("Examples:\n\n{}", self.render_batch(first)),
                    1.0,
                    None,
                )
                .await?,
        );
        // The observations grow with every batch; they stop growing at half the prompt model's
        // context, so that each summary prompt (observations, a batch, the reply) fits in it.
        let limit = self
            .ctx
            .prompt_context_tokens()
            .map(crate::instruction::instruction_byte_limit);
        let full = |observations: &str| limit.is_some_and(|limit| observations.len() >= limit);
        let mut completes = 0;
        for (extra, start) in (b..trainset.len()).step_by(b).enumerate() {
            if extra >= MAX_EXTRA_SUMMARY_BATCHES || full(&observations) {
                break;
            }
            let batch = &trainset[start..(start + b).min(trainset.len())];
            self.calls.summary += 1;
            let reply = self
                .ask(
                    "You study the data of a machine learning task and have already written \
                     observations about earlier examples. Read the new examples and add only \
                     what they teach beyond the earlier observations. If they add nothing, reply \
                     with the single word COMPLETE."
                        .into(),
                    format!(
                        "Earlier observations:\n{observations}\n\nNew examples:\n\n{}",
                        self.render_batch(batch)
                    ),
                    1.0,
                    None,
                )
                .await?;
            if reply.trim_start().to_uppercase().starts_with("COMPLETE") {
                completes += 1;
                if completes >= MAX_COMPLETE_ANSWERS {
                    break;
                }
                continue;
            }
            observations.push('\n');
            observations.push_str(&strip_label(&reply));
        }
        if let Some(cut) = self
            .ctx
            .prompt_context_tokens()
            .and_then(|context| crate::instruction::fit_to_context(&observations, context))
        {
            observations = cut;
        }
        self.calls.summary += 1;
        let summary = self
            .ask(
                "Condense these observations about a dataset into one short paragraph (at most \
                 five sentences) with the facts that matter most for solving the task. Reply \
                 with the paragraph only."
                    .into(),
                observations,
                1.0,
                None,
            )
            .await?;
        Ok(strip_label(&summary))
    }

    /// Describes the program and each predictor, once each. A failed call (other than a stop)
    /// turns program awareness off.
    pub async fn describe_program(
        &mut self,
        demo_sets: &[Vec<DemoSet>],
    ) -> Result<(), OptimizeError> {
        if !self.settings.program_aware {
            return Ok(());
        }
        match self.try_describe(demo_sets).await {
            Err(OptimizeError::Stopped(reason)) => Err(OptimizeError::Stopped(reason)),
            Err(error) => {
                self.ctx.warn(format!(
                    "Program description failed, proposing without it: {error}"
                ));
                self.settings.program_aware = false;
                self.program_description = None;
                self.predictor_descriptions
                    .iter_mut()
                    .for_each(|d| *d = None);
                Ok(())
            }
            Ok(()) => Ok(()),
        }
    }

    async fn try_describe(&mut self, demo_sets: &[Vec<DemoSet>]) -> Result<(), OptimizeError> {
        let structure = describe_structure(&self.predictors, self.initial);
        let examples = (0..self.predictors.len())
            .map(|i| self.task_demos(demo_sets, i, 1))
            .filter(|s| !s.is_empty())
            .collect::<Vec<_>>()
            .join("\n\n");
        let examples = if examples.is_empty() {
            "None available.".to_string()
        } else {
            examples
        };
        self.calls.describe += 1;
        let description = strip_label(
            &self
                .ask(
                    "You explain programs built from language-model steps. Given the program's \
                     steps (each with its input fields, output fields and current instruction) \
                     and example runs, describe in two or three sentences what the program does \
                     and which task it solves."
                        .into(),
                    format!("Program:\n{structure}\n\nExample runs:\n{examples}"),
                    self.settings.temperature,
                    None,
                )
                .await?,
        );
        self.program_description = Some(description.clone());
        for i in 0..self.predictors.len() {
            let p = &self.predictors[i];
            let strategy = self
                .initial
                .predictor(&p.name)
                .map(|s| s.strategy)
                .unwrap_or_default();
            let step = format!("`{}`: {}", p.name, module_line(&p.signature, strategy));
            self.calls.describe += 1;
            let reply = self
                .ask(
                    "You explain one step of a program built from language-model steps. Given \
                     the program, its description and the name of a step, say in one or two \
                     sentences what that step does and how it serves the program's goal."
                        .into(),
                    format!(
                        "Program:\n{structure}\n\nProgram description:\n{description}\n\nStep: {step}"
                    ),
                    self.settings.temperature,
                    None,
                )
                .await?;
            self.predictor_descriptions[i] = Some(strip_label(&reply));
        }
        Ok(())
    }

    /// Up to `demos_in_context` bootstrapped demos of predictor `p`, from demo set `start` on,
    /// wrapping around; empty for set 0 (as DSPy does) or when there are none.
    fn task_demos(&self, demo_sets: &[Vec<DemoSet>], p: usize, start: usize) -> String {
        let Some(sets) = demo_sets.get(p) else {
            return String::new();
        };
        if !self.settings.fewshot_aware || sets.is_empty() || start == 0 {
            return String::new();
        }
        let info = &self.predictors[p];
        let mut order = vec!["reasoning".to_string()];
        order.splice(0..0, info.signature.input_names());
        order.extend(info.signature.output_names());
        let n = sets.len();
        let rendered: Vec<String> = (0..n)
            .map(|k| &sets[(start + k) % n])
            .flat_map(|set| set.bootstrapped())
            .take(self.settings.demos_in_context)
            .map(|d| render_example(d, &order))
            .collect();
        rendered.join("\n\n")
    }

    fn fresh_rollout(&mut self, rng: &mut ChaCha8Rng) -> u64 {
        loop {
            let id = rng.gen_range(0..1_000_000_000u64);
            if self.used_rollouts.insert(id) {
                return id;
            }
        }
    }

    /// Proposes `count` instructions for predictor `p`. `history` lists the instructions known
    /// so far with their scores where known (shown when `use_instruct_history` is on);
    /// `existing` are the predictor's candidates so far, for the diversity rule. Returns the
    /// accepted proposals (a proposal that fails or stays too similar after one retry is left
    /// out, with a warning).
    pub async fn propose_for(
        &mut self,
        p: usize,
        count: usize,
        demo_sets: &[Vec<DemoSet>],
        history: &[(String, Option<f64>)],
        existing: &[String],
        rng: &mut ChaCha8Rng,
    ) -> Result<Vec<Proposal>, OptimizeError> {
        // The prompt's section headings, and the program description's step lines (`Step 1
        // `predict`: Predict(text) -> label`), which small models copy back, as they are,
        // restated (`Steps `solve`, ...`) or as the bare module line (`Predict(text) -> label`).
        let steps: Vec<String> = self
            .predictors
            .iter()
            .enumerate()
            .flat_map(|(i, stage)| {
                [
                    format!("Step {} `{}`:", i + 1, stage.name),
                    format!("Step `{}`", stage.name),
                    format!("Steps `{}`", stage.name),
                ]
                .into_iter()
                .chain(
                    [Strategy::Predict, Strategy::ChainOfThought, Strategy::React]
                        .map(|kind| module_line(&stage.signature, kind)),
                )
            })
            .collect();
        let headings: Vec<&str> = PROPOSAL_HEADINGS
            .iter()
            .copied()
            .chain(steps.iter().map(String::as_str))
            .collect();
        let mut accepted: Vec<Proposal> = Vec::new();
        let mut candidates: Vec<String> = existing.to_vec();
        let mut shown_history: Vec<(String, Option<f64>)> = history.to_vec();
        for demo_set in 0..count {
            let tip = if self.settings.tip_aware {
                *Tip::ALL.choose(rng).unwrap_or(&Tip::None)
            } else {
                Tip::None
            };
            let demos = self.task_demos(demo_sets, p, demo_set);
            let mut retried = false;
            let mut temperature = self.settings.temperature;
            let mut avoid: Vec<String> = Vec::new();
            let proposal = loop {
                let rollout_id = self.fresh_rollout(rng);
                let user = self.instruction_prompt(p, tip, &demos, &shown_history, &avoid);
                self.calls.propose += 1;
                let reply = self
                    .ask(
                        "You write instructions for one step of a program built from \
                         language-model steps. The instruction is the system prompt the model \
                         reads before it answers: it says what to do with the input fields and \
                         how to produce the output fields. Reply with the new instruction only, \
                         without a preamble or quotes."
                            .into(),
                        user,
                        temperature,
                        Some(rollout_id),
                    )
                    .await;
                let text = match reply {
                    Ok(reply) => strip_label(&reply),
                    Err(OptimizeError::Stopped(reason)) => {
                        return Err(OptimizeError::Stopped(reason))
                    }
                    Err(error) => {
                        self.ctx.warn(format!(
                            "Instruction proposal {} for `{}` failed: {error}",
                            demo_set + 1,
                            self.predictors[p].name
                        ));
                        break None;
                    }
                };
                let checked = check_instruction(&text, &headings).and_then(|()| {
                    check_not_quoted(&text, self.example_values.iter().map(String::as_str))
                });
                if let Err(reason) = checked {
                    self.calls.rejected += 1;
                    self.ctx.warn(format!(
                        "Discarded proposal {} for `{}`: {reason}",
                        demo_set + 1,
                        self.predictors[p].name
                    ));
                    break None;
                }
                let text = self.ctx.fit_instruction(
                    text,
                    &format!(
                        "proposal {} for `{}`",
                        demo_set + 1,
                        self.predictors[p].name
                    ),
                );
                let similar = too_similar(
                    &text,
                    candidates.iter().map(String::as_str),
                    self.settings.diversity_penalty,
                );
                if !similar {
                    break Some(Proposal {
                        predictor: self.predictors[p].name.clone(),
                        instruction: text,
                        tip,
                        demo_set,
                        rollout_id,
                        retried,
                    });
                }
                if retried {
                    self.ctx.warn(format!(
                        "Dropped a proposal for `{}` too similar to an earlier candidate",
                        self.predictors[p].name
                    ));
                    break None;
                }
                retried = true;
                temperature = (temperature + self.settings.diversity_penalty.max(0.3)).min(2.0);
                avoid = candidates.clone();
            };
            if let Some(proposal) = proposal {
                candidates.push(proposal.instruction.clone());
                if self.settings.use_instruct_history {
                    shown_history.push((proposal.instruction.clone(), None));
                }
                accepted.push(proposal);
            }
        }
        Ok(accepted)
    }

    fn instruction_prompt(
        &self,
        p: usize,
        tip: Tip,
        demos: &str,
        history: &[(String, Option<f64>)],
        avoid: &[String],
    ) -> String {
        let info = &self.predictors[p];
        let mut sections: Vec<String> = Vec::new();
        if let Some(summary) = self
            .dataset_summary
            .as_ref()
            .filter(|_| self.settings.data_aware)
        {
            sections.push(format!("About the data:\n{summary}"));
        }
        if self.settings.program_aware {
            sections.push(format!(
                "The program:\n{}",
                describe_structure(&self.predictors, self.initial)
            ));
            if let Some(d) = &self.program_description {
                sections.push(format!("What the program does:\n{d}"));
            }
            if let Some(Some(d)) = self.predictor_descriptions.get(p) {
                sections.push(format!("What step `{}` does:\n{d}", info.name));
            }
        } else {
            sections.push(format!(
                "The step `{}`:\n{}",
                info.name,
                field_lines(&info.signature)
            ));
        }
        if self.settings.fewshot_aware {
            let demos = if demos.is_empty() {
                "None available."
            } else {
                demos
            };
            sections.push(format!("Worked examples of this step:\n{demos}"));
        }
        if self.settings.use_instruct_history && !history.is_empty() {
            let lines = history
                .iter()
                .map(|(text, score)| match score {
                    Some(s) => format!("- (score {s:.3}) {text}"),
                    None => format!("- (not scored yet) {text}"),
                })
                .collect::<Vec<_>>()
                .join("\n");
            sections.push(format!("Instructions tried for this step:\n{lines}"));
        }
        let current = self
            .initial
            .predictor(&info.name)
            .map(|s| s.instructions.as_str())
            .unwrap_or(info.signature.instructions.as_str());
        sections.push(format!("Current instruction:\n{current}"));
        if !avoid.is_empty() {
            let lines = avoid
                .iter()
                .map(|a| format!("- {a}"))
                .collect::<Vec<_>>()
                .join("\n");
            sections.push(format!(
                "Instructions already proposed (write one that is clearly different):\n{lines}"
            ));
        }
        if tip != Tip::None {
            sections.push(format!("Tip: {}", tip.text()));
        }
        sections.push(format!(
            "Write a better instruction for step `{}`.",
            info.name
        ));
        sections.join("\n\n")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn labels_and_quotes_are_stripped() {
        assert_eq!(strip_label("Instruction: Classify it."), "Classify it.");
        assert_eq!(strip_label("**New Prompt:** \"Be brief.\""), "Be brief.");
        assert_eq!(
            strip_label("Classify the sentiment: positive or negative."),
            "Classify the sentiment: positive or negative."
        );
        assert_eq!(strip_label("  plain  "), "plain");
    }

    #[test]
    fn examples_render_in_field_order() {
        let e = Example::new()
            .with("label", "pos")
            .with("text", "good")
            .with("id", 1);
        let order = vec!["text".to_string(), "label".to_string()];
        assert_eq!(render_example(&e, &order), "text: good\nlabel: pos\nid: 1");
    }
}
