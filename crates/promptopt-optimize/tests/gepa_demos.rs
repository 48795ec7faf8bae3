//! GEPA over bootstrapped demos (`few_shot_examples` target): the seed gets BootstrapFewShot's
//! demos, every candidate keeps them, the loop's budget leaves bootstrapping out, and a run with
//! demos resumes.
#![allow(clippy::unwrap_used)]

mod support;

use std::sync::Arc;

use promptopt_core::{Example, Field, Program, ProgramState, Signature};
use promptopt_lm::{ChatRequest, Role, ScriptedLm};
use promptopt_optimize::gepa::{Gepa, GepaConfig, RunDir};
use promptopt_optimize::{
    AlgorithmConfig, BootstrapFewShot, Budget, BudgetLimits, CollectSink, OptimizeContext,
    Optimizer, StopReason,
};
use support::{learning_reflection, rule_reply, stages_started, vocab_context, vocab_data, VOCAB};

/// The task model copies the answer of a demo (an earlier user turn) about the same word, or
/// follows a `word -> label` line of the instructions; without either it cannot answer.
fn task_reply(request: &ChatRequest) -> String {
    let messages = &request.messages;
    let Some(last) = messages.last() else {
        return "label: unknown".to_string();
    };
    let Some(word) = VOCAB
        .iter()
        .map(|(w, _)| *w)
        .find(|w| last.content.contains(w))
    else {
        return "label: unknown".to_string();
    };
    for pair in messages[..messages.len() - 1].windows(2) {
        if pair[0].role == Role::User
            && pair[0].content.contains(word)
            && pair[1].role == Role::Assistant
        {
            return pair[1].content.clone();
        }
    }
    rule_reply(request)
}

struct Setup {
    ctx: OptimizeContext,
    task: ScriptedLm,
    events: CollectSink,
    program: Program,
}

fn setup(seed: u64, budget: Budget) -> Setup {
    let program = Program::single(
        Signature::new(vec![Field::text("text")], vec![Field::text("label")])
            .with_instructions("Classify the text."),
    );
    let task = ScriptedLm::new(|r| Ok(task_reply(r)));
    let events = CollectSink::new();
    let ctx = vocab_context(
        &program,
        Arc::new(task.clone()),
        Arc::new(ScriptedLm::new(|r| Ok(learning_reflection(r)))),
        seed,
        budget,
        &events,
    );
    Setup {
        ctx,
        task,
        events,
        program,
    }
}

fn settings() -> AlgorithmConfig {
    AlgorithmConfig::from_json(serde_json::json!({
        "max_metric_calls": 60,
        "max_bootstrapped_demos": 2,
        "max_labeled_demos": 6,
    }))
    .unwrap()
}

fn gepa_with_demos() -> Gepa {
    let settings = settings();
    Gepa::new(GepaConfig::from_config(&settings).unwrap())
        .with_demos(BootstrapFewShot::from_checked(&settings).unwrap())
}

fn demos(state: &ProgramState) -> Vec<Example> {
    state.predictors["predict"].demos.clone()
}

#[tokio::test]
async fn the_seed_gets_bootstrapfewshots_demos_and_every_candidate_keeps_them() {
    let (train, val) = vocab_data();

    // BootstrapFewShot alone, with the same seed and settings.
    let alone = setup(5, Budget::unlimited());
    let boot = BootstrapFewShot::from_checked(&settings())
        .unwrap()
        .compile(&alone.ctx, &train, &val, &alone.program.initial_state())
        .await
        .unwrap();
    let bootstrap_calls = alone.task.calls();
    assert!(bootstrap_calls > 0);

    let s = setup(5, Budget::unlimited());
    let run = gepa_with_demos()
        .run(&s.ctx, &train, &val, &s.program.initial_state())
        .await
        .unwrap();
    let seed = &run.state.candidates[0];
    assert!(!demos(&seed.state).is_empty());
    assert!(demos(&seed.state).len() <= 6);
    assert_eq!(demos(&seed.state), demos(&boot.best));
    // The demos do what instructions cannot for this model.
    assert!(seed.average() > 0.0, "{}", seed.average());
    assert!(run.state.candidates.len() > 1);
    for c in &run.state.candidates {
        assert_eq!(demos(&c.state), demos(&seed.state), "candidate {}", c.id);
    }
    assert!(run.state.candidates[1].state.predictors["predict"]
        .instructions
        .contains(" -> "));
    assert_eq!(demos(&run.outcome.best), demos(&seed.state));
    // The loop's budget counts its own evaluations; bootstrapping is outside it.
    assert!(run.state.budget.used <= 60);
    assert!(s.task.calls() >= bootstrap_calls);
    assert!(s.task.calls() - bootstrap_calls <= run.state.budget.used);
    // Bootstrapping is a stage of its own, before GEPA's.
    let stages = stages_started(&s.events);
    assert_eq!(stages.first().map(String::as_str), Some("bootstrap"));
    assert!(stages.iter().any(|s| s == "gepa"));

    // Without demos, the same model scores nothing zero-shot.
    let bare = setup(5, Budget::unlimited());
    let zero = Gepa::new(GepaConfig::from_config(&settings()).unwrap())
        .run(&bare.ctx, &train, &val, &bare.program.initial_state())
        .await
        .unwrap();
    assert!(demos(&zero.state.candidates[0].state).is_empty());
    assert_eq!(zero.state.candidates[0].average(), 0.0);
}

#[tokio::test]
async fn an_initial_state_with_demos_of_its_own_keeps_them() {
    let (train, val) = vocab_data();
    let s = setup(5, Budget::unlimited());
    let mut initial = s.program.initial_state();
    let own = vec![train[0].clone()];
    initial.predictor_mut("predict").unwrap().demos = own.clone();
    let run = gepa_with_demos()
        .run(&s.ctx, &train, &val, &initial)
        .await
        .unwrap();
    assert_eq!(demos(&run.state.candidates[0].state), own);
    assert!(!stages_started(&s.events).contains(&"bootstrap".to_string()));
}

#[tokio::test]
async fn a_run_with_demos_resumes_where_it_stopped() {
    let (train, val) = vocab_data();
    let dir = tempfile::tempdir().unwrap();
    let full = setup(9, Budget::unlimited());
    let uninterrupted = gepa_with_demos()
        .with_run_dir(dir.path().join("a"))
        .run(&full.ctx, &train, &val, &full.program.initial_state())
        .await
        .unwrap();

    let limited = Budget::new(BudgetLimits {
        max_iterations: Some(2),
        ..Default::default()
    });
    let first = setup(9, limited);
    let gepa = gepa_with_demos().with_run_dir(dir.path().join("b"));
    let part = gepa
        .run(&first.ctx, &train, &val, &first.program.initial_state())
        .await
        .unwrap();
    assert_eq!(part.outcome.stop_reason, Some(StopReason::MaxIterations));
    let saved = RunDir::new(dir.path().join("b"))
        .load()
        .await
        .unwrap()
        .unwrap();
    assert!(!demos(&saved.candidates[0].state).is_empty());

    let second = setup(9, Budget::unlimited());
    let resumed = gepa
        .clone()
        .resume(true)
        .run(&second.ctx, &train, &val, &second.program.initial_state())
        .await
        .unwrap();
    assert_eq!(resumed.state.candidates, uninterrupted.state.candidates);
    assert_eq!(resumed.outcome.best, uninterrupted.outcome.best);
    // The resumed part bootstraps nothing again.
    assert!(!stages_started(&second.events).contains(&"bootstrap".to_string()));
}
