//! MIPROv2 with scripted models: LM calls per preset, replay, multi-predictor search, events.
#![allow(clippy::unwrap_used)]

mod support;

use std::sync::Arc;

use promptopt_core::{Example, Field, Program, ProgramState, Signature, Stage};
use promptopt_lm::ScriptedLm;
use promptopt_optimize::mipro::{MiproConfig, MiproRun, MiproV2};
use promptopt_optimize::{CollectSink, Event, OptimizeContext, TrialKind};
use support::{last_user, turns, ExactLabel};

fn dataset(n: usize, offset: usize) -> Vec<Example> {
    (0..n)
        .map(|i| {
            let good = (i + offset) % 3 != 0;
            let text = if good {
                format!("a good film number {}", i + offset)
            } else {
                format!("a dull film number {}", i + offset)
            };
            let label = if good { "positive" } else { "negative" };
            Example::new().with("text", text).with("label", label)
        })
        .collect()
}

/// Always right: bootstrapping succeeds on every example. A `rewrite` stage of [`two_step`]
/// (asked for a summary) copies its text.
fn task_lm() -> ScriptedLm {
    ScriptedLm::new(|request| {
        let text = last_user(request);
        let system = request
            .messages
            .first()
            .map(|m| m.content.as_str())
            .unwrap_or("");
        if system.contains("Answer with the summary only.") {
            let text = text.strip_prefix("Text: ").unwrap_or(text);
            return Ok(format!("summary: {text}"));
        }
        Ok(if text.contains("good") {
            "label: positive".into()
        } else {
            "label: negative".into()
        })
    })
}

/// A distinct instruction per proposal (keyed by its rollout id), fixed text otherwise.
fn prompt_lm() -> ScriptedLm {
    ScriptedLm::new(|request| {
        Ok(match request.rollout_id {
            Some(id) => format!("Instruction: Label review {id} by its overall tone."),
            None => "Reviews of films, labeled positive or negative.".into(),
        })
    })
}

struct Setup {
    ctx: OptimizeContext,
    task: ScriptedLm,
    prompt: ScriptedLm,
    events: CollectSink,
    initial: ProgramState,
}

fn setup(program: Program, seed: u64) -> Setup {
    setup_with(program, seed, prompt_lm())
}

/// [`setup`] with `prompt` as the prompt model.
fn setup_with(program: Program, seed: u64, prompt: ScriptedLm) -> Setup {
    setup_models(program, seed, task_lm(), prompt)
}

/// [`setup`] with both models given.
fn setup_models(program: Program, seed: u64, task: ScriptedLm, prompt: ScriptedLm) -> Setup {
    let events = CollectSink::new();
    let initial = program.initial_state();
    let ctx = OptimizeContext::builder(
        program,
        Arc::new(task.clone()),
        "scripted/task",
        Arc::new(ExactLabel),
    )
    .prompt_model(Arc::new(prompt.clone()), "scripted/prompt")
    .settings(turns())
    .seed(seed)
    .events(Arc::new(events.clone()))
    .build();
    Setup {
        ctx,
        task,
        prompt,
        events,
        initial,
    }
}

/// The warnings a run emitted, in order.
fn warnings(s: &Setup) -> Vec<String> {
    s.events
        .events()
        .iter()
        .filter_map(|e| match e {
            Event::Warning { message } => Some(message.clone()),
            _ => None,
        })
        .collect()
}

fn classifier() -> Program {
    Program::single(
        Signature::new(vec![Field::text("text")], vec![Field::text("label")])
            .with_instructions("Classify the review."),
    )
}

async fn optimize(config: &str, train: usize, val: usize, seed: u64) -> (Setup, MiproRun) {
    let s = setup(classifier(), seed);
    let config = MiproConfig::from_value(&serde_json::from_str(config).unwrap()).unwrap();
    let run = MiproV2::new(config)
        .optimize(&s.ctx, &dataset(train, 0), &dataset(val, 1000), &s.initial)
        .await
        .unwrap();
    (s, run)
}

fn bootstrapped_demos(run: &MiproRun) -> usize {
    run.demo_sets
        .iter()
        .flatten()
        .map(|set| set.n_bootstrapped)
        .sum()
}

/// Task-model calls: bootstrapping (every run it made, spare ones of a concurrent wave included)
/// `+ |V|` for the default program `+ T * b + ceil(T / s) * |V|` with minibatches, else
/// `+ T * |V|`, where evaluating a combination again on the same examples costs nothing (the
/// context remembers evaluations), so only distinct full evaluations count. Prompt-model calls:
/// summary `2 + min(ceil(|train| / 10) - 1, 9)`, descriptions `P + 1`, proposals `P * min(N, n)`.
fn expected_calls(run: &MiproRun, train: usize, predictors: usize, steps: usize) -> (usize, usize) {
    let v = run.valset_size;
    let t = run.plan.num_trials;
    let distinct_full: std::collections::BTreeSet<&Vec<usize>> = run
        .trials
        .iter()
        .filter(|t| t.kind == TrialKind::Full)
        .map(|t| &t.params)
        .collect();
    let eval = if run.minibatch {
        assert_eq!(distinct_full.len(), 1 + t.div_ceil(steps));
        v + t * 35 + t.div_ceil(steps) * v
    } else {
        assert_eq!(run.trials.len(), 1 + t);
        distinct_full.len() * v
    };
    let summary = 2 + (train.div_ceil(10) - 1).min(9);
    let proposals = predictors
        * run
            .plan
            .num_instruct_candidates
            .min(run.plan.num_fewshot_candidates);
    (
        run.bootstrap_runs + eval,
        summary + predictors + 1 + proposals,
    )
}

#[tokio::test]
async fn light_preset_spends_what_the_formula_says() {
    let (s, run) = optimize(r#"{"auto": "light"}"#, 40, 60, 9).await;
    assert_eq!(
        (
            run.plan.num_instruct_candidates,
            run.plan.num_fewshot_candidates,
            run.plan.num_trials
        ),
        (3, 6, 10)
    );
    assert!(run.minibatch, "60 validation examples are minibatched");
    // Every run succeeds, so runs beyond one per demo come only from a set's last wave of
    // concurrent runs (at most `concurrency - 1` = 3 per bootstrapped set).
    let sets = run
        .demo_sets
        .iter()
        .flatten()
        .filter(|set| set.n_bootstrapped > 0)
        .count();
    let demos = bootstrapped_demos(&run);
    assert!(
        (demos..=demos + 3 * sets).contains(&run.bootstrap_runs),
        "{} runs for {demos} demos in {sets} sets",
        run.bootstrap_runs
    );
    let (task, prompt) = expected_calls(&run, 40, 1, 5);
    assert_eq!(s.task.calls() as usize, task);
    assert_eq!(s.prompt.calls() as usize, prompt);
    // 5 summary + 2 descriptions + 3 proposals.
    assert_eq!(prompt, 10);
    assert_eq!(run.proposer_calls.total(), prompt);
    // The original instruction plus every paid proposal.
    assert_eq!(run.instructions[0].len(), 4);
    assert_eq!(run.instructions[0][0], "Classify the review.");
    assert!(run.instructions[0][1].starts_with("Label review "));
    // 1 default + 10 minibatch trials + 2 full evaluations.
    let kinds: Vec<TrialKind> = run.trials.iter().map(|t| t.kind).collect();
    assert_eq!(kinds.len(), 13);
    assert_eq!(
        kinds.iter().filter(|k| **k == TrialKind::Minibatch).count(),
        10
    );
    assert_eq!(run.outcome.candidates.len(), 13);
    assert_eq!(run.outcome.iterations, 10);
    assert_eq!(run.outcome.best_score, 1.0);
    // The full evaluations come after minibatch trials 5 and 10 (DSPy's trial numbers 7, 13).
    let fulls: Vec<usize> = run
        .trials
        .iter()
        .skip(1)
        .filter(|t| t.kind == TrialKind::Full)
        .map(|t| t.trial)
        .collect();
    assert_eq!(fulls, vec![7, 13]);
    // Every trial was reported.
    let scored = s
        .events
        .events()
        .iter()
        .filter(|e| matches!(e, Event::TrialScored { .. }))
        .count();
    assert_eq!(scored, 13);
}

#[tokio::test]
async fn medium_and_heavy_presets_cap_validation_and_scale_trials() {
    let (s, run) = optimize(r#"{"auto": "medium"}"#, 30, 320, 3).await;
    assert_eq!(run.valset_size, 300);
    assert_eq!(run.plan.num_trials, 18);
    let (task, prompt) = expected_calls(&run, 30, 1, 5);
    assert_eq!(s.task.calls() as usize, task);
    assert_eq!(s.prompt.calls() as usize, prompt);
    assert_eq!(run.instructions[0].len(), 7);

    let (s, run) = run_heavy().await;
    assert_eq!(run.valset_size, 120);
    assert_eq!(run.plan.num_trials, 27);
    let (task, prompt) = expected_calls(&run, 120, 1, 5);
    assert_eq!(s.task.calls() as usize, task);
    // Summary 2 + 9 (capped), descriptions 2, proposals 9.
    assert_eq!(prompt, 22);
    assert_eq!(s.prompt.calls() as usize, prompt);
}

async fn run_heavy() -> (Setup, MiproRun) {
    optimize(r#"{"auto": "heavy"}"#, 120, 120, 5).await
}

#[tokio::test]
async fn small_validation_sets_are_scored_in_full() {
    let (s, run) = optimize(r#"{"auto": "light"}"#, 20, 50, 0).await;
    assert!(!run.minibatch);
    let (task, prompt) = expected_calls(&run, 20, 1, 5);
    // At most 1 + 10 full evaluations of 50, fewer when the search repeats a combination.
    assert!(task <= run.bootstrap_runs + 50 + 10 * 50);
    assert_eq!(s.task.calls() as usize, task);
    assert_eq!(s.prompt.calls() as usize, prompt);
    assert!(run.trials.iter().all(|t| t.kind == TrialKind::Full));

    // Asked for, minibatching is honoured on the same 50 examples.
    let (s, run) = optimize(r#"{"auto": "light", "minibatch": true}"#, 20, 50, 0).await;
    assert!(run.minibatch);
    let (task, _) = expected_calls(&run, 20, 1, 5);
    assert_eq!(s.task.calls() as usize, task);
}

#[tokio::test]
async fn manual_mode_and_zero_shot() {
    let (s, run) = optimize(
        r#"{"num_candidates": 4, "num_iterations": 6, "minibatch": false,
            "max_bootstrapped_demos": 0, "max_labeled_demos": 0, "program_aware": false,
            "data_aware": false}"#,
        12,
        8,
        1,
    )
    .await;
    assert!(run.plan.zero_shot);
    // Zero-shot: only instructions are searched; the demo sets only informed the proposer.
    assert!(run.demo_sets.is_empty());
    assert_eq!(run.instructions[0].len(), 5);
    assert_eq!(s.prompt.calls(), 4);
    let (task, _) = expected_calls(&run, 12, 1, 5);
    assert_eq!(s.task.calls() as usize, task);
    assert!(run.trials.iter().all(|t| t.params.len() == 1));
}

#[tokio::test]
async fn same_seed_replays_and_seed_zero_is_a_seed() {
    let config = r#"{"auto": "light"}"#;
    let (_, a) = optimize(config, 30, 60, 0).await;
    let (_, b) = optimize(config, 30, 60, 0).await;
    assert_eq!(a.trials, b.trials);
    assert_eq!(a.instructions, b.instructions);
    assert_eq!(a.outcome.best, b.outcome.best);
    assert_eq!(a.outcome.trajectory, b.outcome.trajectory);
    let (_, c) = optimize(config, 30, 60, 9).await;
    assert_ne!(
        a.trials, c.trials,
        "seed 0 differs from DSPy's default seed 9"
    );
}

#[tokio::test]
async fn early_stopping_ends_the_search() {
    // Every state scores 1.0, so no full evaluation after the default improves.
    let (_, run) = optimize(
        r#"{"auto": "light", "minibatch": false, "early_stopping": true, "patience": 2}"#,
        20,
        30,
        4,
    )
    .await;
    assert_eq!(
        run.outcome.stop_reason,
        Some(promptopt_optimize::StopReason::EarlyStopping)
    );
    assert_eq!(run.outcome.iterations, 2);
}

#[tokio::test]
async fn diversity_penalty_retries_near_duplicates() {
    let s = setup(classifier(), 2);
    // Every proposal says the same thing but for one word: all but the first are too similar.
    let prompt = ScriptedLm::new(|request| {
        Ok(match request.rollout_id {
            Some(id) => format!("Read the review carefully and label its tone {}", id % 2),
            None => "Film reviews.".into(),
        })
    });
    let ctx = OptimizeContext::builder(
        classifier(),
        Arc::new(s.task.clone()),
        "scripted/task",
        Arc::new(ExactLabel),
    )
    .prompt_model(Arc::new(prompt.clone()), "scripted/prompt")
    .settings(turns())
    .build();
    let config = MiproConfig::from_value(&serde_json::json!({
        "auto": "light", "diversity_penalty": 0.5, "program_aware": false, "data_aware": false
    }))
    .unwrap();
    let run = MiproV2::new(config)
        .optimize(&ctx, &dataset(20, 0), &dataset(30, 500), &s.initial)
        .await
        .unwrap();
    // Each proposal's word set overlaps every other's in 8 of 9 or 10 words; only distinct
    // enough ones survive, and each rejected first try was retried once.
    assert!(run.instructions[0].len() < 4, "{:?}", run.instructions[0]);
    assert!(prompt.calls() > 3);
    assert!(run.proposals.iter().all(|p| !p.instruction.is_empty()));
}

/// Two steps: `rewrite` (text → summary, which [`task_lm`] makes a copy of the text), then
/// `classify` (summary → label).
fn two_step() -> Program {
    Program::new(
        vec!["text".into()],
        vec![
            Stage::new(
                "rewrite",
                Signature::new(vec![Field::text("text")], vec![Field::text("summary")])
                    .with_instructions("Summarize the review."),
            ),
            Stage::new(
                "classify",
                Signature::new(vec![Field::text("summary")], vec![Field::text("label")])
                    .with_instructions("Classify the summary."),
            ),
        ],
        vec!["label".into()],
    )
    .unwrap()
}

#[tokio::test]
async fn multi_predictor_programs_are_searched_jointly() {
    let s = setup(two_step(), 11);
    let run = MiproV2::new(MiproConfig::default())
        .optimize(&s.ctx, &dataset(30, 0), &dataset(60, 300), &s.initial)
        .await
        .unwrap();
    // P = 2 with demos: light gives floor(max(2 * 4 * log2 6, 9)) = 20 trials.
    assert_eq!(run.plan.num_trials, 20);
    assert_eq!(run.instructions.len(), 2);
    assert_eq!(run.demo_sets.len(), 2);
    // Both predictors got demos from the same successful traces.
    assert_eq!(run.demo_sets[0][2].n_bootstrapped, 4);
    assert_eq!(run.demo_sets[1][2].n_bootstrapped, 4);
    assert!(run.demo_sets[1][2].demos[0].contains("summary"));
    // Four parameters per trial: instruction and demo set of each predictor.
    assert!(run.trials.iter().all(|t| t.params.len() == 4));
    let distinct_second: std::collections::BTreeSet<(usize, usize)> = run
        .trials
        .iter()
        .map(|t| (t.params[2], t.params[3]))
        .collect();
    assert!(distinct_second.len() > 3);
    // Program runs make two task calls each; prompt calls: summary 4, descriptions 3,
    // proposals 2 * 3.
    let (task, prompt) = expected_calls(&run, 30, 2, 5);
    assert_eq!(s.task.calls() as usize, 2 * task);
    assert_eq!(s.prompt.calls() as usize, prompt);
    assert_eq!(prompt, 13);
    let best = &run.outcome.best;
    assert!(best.predictor("rewrite").is_some() && best.predictor("classify").is_some());
}

#[tokio::test]
async fn a_budget_stop_keeps_the_best_so_far() {
    let s = setup(classifier(), 5);
    let budget = Arc::new(promptopt_optimize::Budget::new(
        promptopt_optimize::BudgetLimits {
            max_lm_calls: Some(150),
            ..Default::default()
        },
    ));
    let ctx = s.ctx.with_budget(budget);
    let run = MiproV2::new(MiproConfig::default())
        .optimize(&ctx, &dataset(20, 0), &dataset(60, 200), &s.initial)
        .await
        .unwrap();
    assert_eq!(
        run.outcome.stop_reason,
        Some(promptopt_optimize::StopReason::BudgetCalls)
    );
    assert_eq!(run.outcome.best_score, 1.0);
    assert!(ctx.budget().calls() <= 150 + 4);
}

#[test]
fn the_example_request_configures_light_mode() {
    let path = concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/../../examples/sst2-mipro.yaml"
    );
    let text = std::fs::read_to_string(path).unwrap();
    let request: serde_json::Value = serde_yaml::from_str(&text).unwrap();
    assert_eq!(request["algorithm"], "miprov2");
    let config = MiproConfig::from_value(&request["algorithm_config"]).unwrap();
    let plan = config.plan(1).unwrap();
    assert_eq!(plan.num_trials, 10);
    assert!(config.use_minibatch(&plan, 100).unwrap());
}

#[tokio::test]
async fn proposals_that_copy_the_prompt_back_are_discarded_and_counted() {
    // Every proposal repeats the prompt's last sections instead of writing an instruction.
    let prompt = ScriptedLm::new(|request| {
        Ok(match request.rollout_id {
            Some(_) => {
                "About the data:\nFilm reviews.\n\nCurrent instruction:\nClassify the review."
                    .into()
            }
            None => "Reviews of films, labeled positive or negative.".into(),
        })
    });
    let s = setup_with(classifier(), 4, prompt);
    let config = MiproConfig::from_value(&serde_json::json!({"auto": "light"})).unwrap();
    let run = MiproV2::new(config)
        .optimize(&s.ctx, &dataset(40, 0), &dataset(60, 1000), &s.initial)
        .await
        .unwrap();
    // Every proposal asked for was discarded: only the original instruction is left.
    assert!(run.proposer_calls.propose >= 3);
    assert_eq!(run.proposer_calls.rejected, run.proposer_calls.propose);
    assert_eq!(
        run.instructions[0],
        vec!["Classify the review.".to_string()]
    );
    let discarded = s
        .events
        .events()
        .iter()
        .filter(|e| {
            matches!(e, Event::Warning { message }
                if message.starts_with("Discarded proposal")
                    && message.ends_with("it copies the prompt back (a line starts with `About the data:`)"))
        })
        .count();
    assert_eq!(discarded, run.proposer_calls.rejected);
}

#[tokio::test]
async fn a_proposal_longer_than_the_task_context_is_cut_with_a_warning() {
    // The task model holds 200 words a request; each proposal is thousands of bytes long.
    let task = task_lm().with_context_tokens(200);
    let prompt = ScriptedLm::new(|request| {
        Ok(match request.rollout_id {
            Some(id) => format!(
                "Label review {id} by its overall tone. {}",
                "Weigh every sentence of the review with care. ".repeat(100)
            ),
            None => "Reviews of films, labeled positive or negative.".into(),
        })
    });
    let s = setup_models(classifier(), 2, task, prompt);
    assert_eq!(s.ctx.task_context_tokens(), Some(200));
    let config = MiproConfig::from_value(&serde_json::json!({
        "num_candidates": 3, "num_iterations": 4, "minibatch": false,
        "max_bootstrapped_demos": 0, "max_labeled_demos": 0
    }))
    .unwrap();
    let run = MiproV2::new(config)
        .optimize(&s.ctx, &dataset(12, 0), &dataset(8, 1000), &s.initial)
        .await
        .unwrap();
    // Every proposal was kept, cut to half the context (200 bytes at two bytes a token).
    assert_eq!(run.instructions[0].len(), 4);
    for instruction in &run.instructions[0][1..] {
        assert!(instruction.len() <= 200, "{}", instruction.len());
        assert!(instruction.starts_with("Label review"), "{instruction}");
    }
    let cut = warnings(&s)
        .iter()
        .filter(|message| {
            message.starts_with("Cut proposal")
                && message.ends_with("bytes to fit `scripted/task`'s context of 200 tokens")
        })
        .count();
    assert_eq!(cut, 3);
    // No prompt went over the context: every trial scored every example right.
    assert_eq!(run.outcome.best_score, 1.0);
    assert!(
        run.trials.iter().all(|t| t.score == 1.0),
        "{:?}",
        run.trials
    );
}

#[tokio::test]
async fn the_dataset_summary_keeps_its_prompts_within_the_prompt_model_context() {
    // The prompt model holds 400 words a request and writes 120 words of observations per batch:
    // left to grow over four batches, the observations alone would overflow it.
    let prompt = ScriptedLm::new(|request| {
        let system = request
            .messages
            .first()
            .map(|m| m.content.as_str())
            .unwrap_or("");
        Ok(if system.contains("observations") {
            "The reviews are short and mostly about films and acting. ".repeat(12)
        } else if let Some(id) = request.rollout_id {
            format!("Label review {id} by its overall tone.")
        } else {
            "Reviews of films, labeled positive or negative.".into()
        })
    })
    .with_context_tokens(400);
    let s = setup_with(classifier(), 3, prompt);
    let config = MiproConfig::from_value(&serde_json::json!({
        "num_candidates": 2, "num_iterations": 2, "minibatch": false,
        "max_bootstrapped_demos": 0, "max_labeled_demos": 0, "program_aware": false
    }))
    .unwrap();
    let run = MiproV2::new(config)
        .optimize(&s.ctx, &dataset(40, 0), &dataset(8, 1000), &s.initial)
        .await
        .unwrap();
    let warnings = warnings(&s);
    assert!(warnings.is_empty(), "{warnings:?}");
    // The first batch's observations already fill half the context: no second batch is read,
    // and the condensing call gets them cut to fit.
    assert_eq!(run.proposer_calls.summary, 2);
    assert!(run.dataset_summary.is_some());
}

/// Three proposals and three full trials with no demos, so every candidate is an instruction.
async fn instructions_only(s: &Setup, train: &[Example]) -> MiproRun {
    let config = MiproConfig::from_value(&serde_json::json!({
        "num_candidates": 3, "num_iterations": 3, "minibatch": false,
        "max_bootstrapped_demos": 0, "max_labeled_demos": 0
    }))
    .unwrap();
    MiproV2::new(config)
        .optimize(&s.ctx, train, &dataset(8, 1000), &s.initial)
        .await
        .unwrap()
}

#[tokio::test]
async fn proposals_that_copy_the_program_description_are_discarded() {
    // Qwen2.5-Coder 0.5B often starts its reply with the program's step line, then the fields,
    // or restates the step line after a preamble.
    let proposals = std::sync::atomic::AtomicUsize::new(0);
    let prompt = ScriptedLm::new(move |request| {
        let Some(id) = request.rollout_id else {
            return Ok("Reviews of films, labeled positive or negative.".into());
        };
        Ok(
            match proposals.fetch_add(1, std::sync::atomic::Ordering::SeqCst) % 3 {
                0 => format!(
                    "Step 1 `predict`: Predict(text) -> label\n- input `text`\n- output `label`\n\
                     Label review {id} by its overall tone."
                ),
                1 => format!(
                    "Based on your requirements, the improved instruction:\n\
                     Steps `predict`, Predict(text) -> label, label review {id}."
                ),
                _ => format!(
                    "Step `predict` reads the text.\nLabel review {id} by its overall tone."
                ),
            },
        )
    });
    let s = setup_with(classifier(), 6, prompt);
    let run = instructions_only(&s, &dataset(12, 0)).await;
    assert_eq!(run.proposer_calls.rejected, 3);
    assert_eq!(
        run.instructions[0],
        vec!["Classify the review.".to_string()]
    );
    let warnings = warnings(&s);
    for line_start in ["Step 1 `predict`:", "Step `predict`", "Steps `predict`"] {
        let reason = format!("it copies the prompt back (a line starts with `{line_start}`)");
        assert!(
            warnings.iter().any(|message| message.ends_with(&reason)),
            "{line_start}: {warnings:?}"
        );
    }
}

#[tokio::test]
async fn proposals_that_quote_a_training_example_are_discarded() {
    // Qwen2.5-Coder 0.5B wrote instructions around one training question it was shown; such an
    // instruction fits that question, not the task.
    let train: Vec<Example> = dataset(12, 0)
        .into_iter()
        .map(|e| {
            let text = format!(
                "{}, shot in black and white with a patient camera",
                e.text("text").unwrap_or_default()
            );
            e.with("text", text)
        })
        .collect();
    let proposals = std::sync::atomic::AtomicUsize::new(0);
    let prompt = ScriptedLm::new(move |request| {
        let Some(id) = request.rollout_id else {
            return Ok("Reviews of films, labeled positive or negative.".into());
        };
        Ok(
            match proposals.fetch_add(1, std::sync::atomic::Ordering::SeqCst) % 2 {
                0 => format!(
                    "Label review {id}: films \"Shot in black and white, with a patient camera\" \
                     are positive."
                ),
                _ => format!("Label review {id} by its overall tone."),
            },
        )
    });
    let s = setup_with(classifier(), 6, prompt);
    let run = instructions_only(&s, &train).await;
    assert_eq!(run.proposer_calls.propose, 3);
    assert_eq!(run.proposer_calls.rejected, 2);
    assert_eq!(run.instructions[0].len(), 2);
    assert!(
        run.instructions[0].iter().all(|i| !i.contains("camera")),
        "{:?}",
        run.instructions[0]
    );
    let reason = "it quotes a training example (`shot in black and white with a patient`)";
    let quoted = warnings(&s)
        .iter()
        .filter(|message| message.ends_with(reason))
        .count();
    assert_eq!(quoted, 2, "{:?}", warnings(&s));
}

#[tokio::test]
async fn a_proposal_that_is_the_bare_module_line_is_discarded() {
    // Qwen2.5-Coder 1.5B answered one SST-2 proposal with the program description's module line
    // alone, which says nothing about the task.
    let prompt = ScriptedLm::new(move |request| {
        Ok(match request.rollout_id {
            Some(_) => "Predict(text) -> label".into(),
            None => "Reviews of films, labeled positive or negative.".into(),
        })
    });
    let s = setup_with(classifier(), 6, prompt);
    let run = instructions_only(&s, &dataset(12, 0)).await;
    assert_eq!(run.proposer_calls.rejected, run.proposer_calls.propose);
    assert_eq!(
        run.instructions[0],
        vec!["Classify the review.".to_string()]
    );
    let reason = "it copies the prompt back (a line starts with `Predict(text) -> label`)";
    assert!(
        warnings(&s).iter().any(|message| message.ends_with(reason)),
        "{:?}",
        warnings(&s)
    );
}
