//! GEPA's loop against scripted models: improvement, acceptance, the metric-call count,
//! resume equivalence, graceful stops and merge inside the loop.
#![allow(clippy::unwrap_used)]

mod support;

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;

use promptopt_core::{Example, Field, PredictorState, Program, ProgramState, Signature, Stage};
use promptopt_lm::{ChatRequest, ChatResponse, Lm, LmError, ScriptedLm};
use promptopt_optimize::gepa::{
    CandidateEntry, Gepa, GepaConfig, Origin, RunDir, RunState, STOP_FILE,
};
use promptopt_optimize::{
    Budget, BudgetLimits, CancelFlag, CollectSink, Event, OptimizeContext, OptimizeError,
    Optimizer, StopReason,
};
use support::{learning_reflection, rule_reply, turns, vocab_context, vocab_data, ExactLabel};

struct Setup {
    ctx: OptimizeContext,
    task: ScriptedLm,
    reflect: ScriptedLm,
    /// The reflection model as the run sees it: `reflect` behind a delay that counts the calls
    /// in flight.
    gauge: Arc<Gauge>,
    events: CollectSink,
    program: Program,
}

/// A model that waits `delay` before answering and keeps the most calls it had in flight.
struct Gauge {
    inner: ScriptedLm,
    delay: std::time::Duration,
    now: AtomicU64,
    peak: AtomicU64,
}

#[async_trait::async_trait]
impl Lm for Gauge {
    async fn chat(&self, request: &ChatRequest) -> Result<ChatResponse, LmError> {
        let now = self.now.fetch_add(1, Ordering::SeqCst) + 1;
        self.peak.fetch_max(now, Ordering::SeqCst);
        if !self.delay.is_zero() {
            tokio::time::sleep(self.delay).await;
        }
        let reply = self.inner.chat(request).await;
        self.now.fetch_sub(1, Ordering::SeqCst);
        reply
    }
}

fn setup(
    seed: u64,
    budget: Budget,
    reflection: impl Fn(&ChatRequest) -> String + Send + Sync + 'static,
) -> Setup {
    setup_delayed(seed, budget, reflection, std::time::Duration::ZERO)
}

/// [`setup`] with a reflection model that takes `delay` per call.
fn setup_delayed(
    seed: u64,
    budget: Budget,
    reflection: impl Fn(&ChatRequest) -> String + Send + Sync + 'static,
    delay: std::time::Duration,
) -> Setup {
    let program = Program::single(
        Signature::new(vec![Field::text("text")], vec![Field::text("label")])
            .with_instructions("Classify the text."),
    );
    let task = ScriptedLm::new(|r| Ok(rule_reply(r)));
    let reflect = ScriptedLm::new(move |r| Ok(reflection(r)));
    let gauge = Arc::new(Gauge {
        inner: reflect.clone(),
        delay,
        now: AtomicU64::new(0),
        peak: AtomicU64::new(0),
    });
    let events = CollectSink::new();
    let ctx = vocab_context(
        &program,
        Arc::new(task.clone()),
        gauge.clone(),
        seed,
        budget,
        &events,
    );
    Setup {
        ctx,
        task,
        reflect,
        gauge,
        events,
        program,
    }
}

fn config(json: serde_json::Value) -> GepaConfig {
    GepaConfig::from_config(&promptopt_optimize::AlgorithmConfig::from_json(json).unwrap()).unwrap()
}

#[tokio::test]
async fn reflection_improves_and_counts_every_metric_call() {
    let s = setup(7, Budget::unlimited(), learning_reflection);
    let (train, val) = vocab_data();
    let gepa = Gepa::new(config(serde_json::json!({"max_metric_calls": 60})));
    let initial = s.program.initial_state();
    let run = gepa.run(&s.ctx, &train, &val, &initial).await.unwrap();

    let seed_score = run.state.candidates[0].average();
    assert_eq!(seed_score, 0.0);
    assert!(
        run.outcome.best_score > 0.5,
        "{} {}",
        run.outcome.best_score,
        run.state.log.len()
    );
    assert!(run.state.candidates.len() > 1);
    // The budget is never passed, and every metric call is one task-model call.
    assert!(run.state.budget.used <= 60);
    assert_eq!(run.state.budget.used, s.task.calls());
    assert_eq!(run.state.reflection_calls, s.reflect.calls());
    // The count adds up: V for the seed, 2b per reflective iteration, V per accepted child.
    let reflective = run
        .state
        .log
        .iter()
        .filter(|r| r.kind == "reflection")
        .count() as u64;
    let skipped = run.state.log.iter().filter(|r| r.kind == "skip").count() as u64;
    let accepted = run.state.log.iter().filter(|r| r.accepted).count() as u64;
    assert_eq!(
        run.state.budget.used,
        6 + reflective * 6 + skipped * 3 + accepted * 6
    );
    // Every accepted child beat its parent on the same minibatch.
    for r in run.state.log.iter().filter(|r| r.accepted) {
        assert!(r.child_scores.iter().sum::<f64>() > r.parent_scores.iter().sum::<f64>());
    }
    // The best is the candidate with the best average, and the lineage is kept.
    let best = run.state.best().unwrap();
    assert_eq!(run.outcome.best, best.state);
    for c in &run.state.candidates[1..] {
        assert_eq!(c.parents.len(), 1);
        assert!(c.parents[0] < c.id);
        assert!(matches!(c.origin, Origin::Reflection { .. }));
    }
    assert_eq!(run.outcome.candidates.len(), run.state.candidates.len());
    assert!(run.outcome.candidates[1]
        .description
        .contains("reflection on `predict` of #"));
    // Each proposal's event shows the instructions the reflection wrote.
    let proposed: Vec<String> = s
        .events
        .events()
        .iter()
        .filter_map(|e| match e {
            Event::CandidateProposed { description, .. } => Some(description.clone()),
            _ => None,
        })
        .collect();
    assert!(!proposed.is_empty());
    assert!(
        proposed.iter().all(|d| d.starts_with("reflection on #")
            && d.contains(": `predict`: Classify the text.\n")
            && d.contains(" -> ")),
        "{proposed:?}"
    );
    // One event per iteration.
    let iterations = s
        .events
        .events()
        .iter()
        .filter(|e| matches!(e, Event::GepaIteration { .. }))
        .count();
    assert_eq!(iterations as u64, run.state.iteration);
    assert_eq!(run.outcome.iterations as u64, run.state.iteration);
}

#[tokio::test]
async fn reflection_calls_carry_their_token_cap() {
    for (settings, cap) in [
        (serde_json::json!({"max_metric_calls": 30}), 512),
        (
            serde_json::json!({"max_metric_calls": 30, "reflection_max_tokens": 64}),
            64,
        ),
    ] {
        let seen = Arc::new(std::sync::Mutex::new(Vec::new()));
        let record = seen.clone();
        let s = setup(3, Budget::unlimited(), move |r| {
            record.lock().unwrap().push(r.max_tokens);
            learning_reflection(r)
        });
        let (train, val) = vocab_data();
        let run = Gepa::new(config(settings))
            .run(&s.ctx, &train, &val, &s.program.initial_state())
            .await
            .unwrap();
        let seen = seen.lock().unwrap().clone();
        assert!(!seen.is_empty());
        assert_eq!(seen.len() as u64, run.state.reflection_calls);
        assert!(seen.iter().all(|m| *m == Some(cap)), "{seen:?}");
    }
}

#[tokio::test]
async fn rejected_proposals_cost_two_minibatches_and_never_overshoot() {
    // Every proposal is useless: the child ties its parent (0 = 0) and strict improvement
    // rejects it. V = 6, b = 3: the seed costs 6, each iteration 6. With 32 calls, four
    // iterations fit (30); the fifth would need 6 with 2 left, so it does not start.
    let s = setup(1, Budget::unlimited(), |_| {
        "```\nBe vague.\n```".to_string()
    });
    let (train, val) = vocab_data();
    let gepa = Gepa::new(config(serde_json::json!({"max_metric_calls": 32})));
    let run = gepa
        .run(&s.ctx, &train, &val, &s.program.initial_state())
        .await
        .unwrap();
    assert_eq!(run.state.iteration, 4);
    assert_eq!(run.state.budget.used, 30);
    assert_eq!(s.task.calls(), 30);
    assert_eq!(s.reflect.calls(), 4);
    assert_eq!(run.state.candidates.len(), 1);
    assert!(run
        .state
        .log
        .iter()
        .all(|r| !r.accepted && r.kind == "reflection"));
    assert_eq!(run.outcome.stop_reason, None);
    assert_eq!(run.outcome.best, s.program.initial_state());
}

#[tokio::test]
async fn resumed_run_ends_where_an_uninterrupted_one_does() {
    let (train, val) = vocab_data();
    let settings = serde_json::json!({"num_generations": 7, "reflection_minibatch_size": 2});
    let dir = tempfile::tempdir().unwrap();

    let full = setup(11, Budget::unlimited(), learning_reflection);
    let initial = full.program.initial_state();
    let uninterrupted = Gepa::new(config(settings.clone()))
        .with_run_dir(dir.path().join("a"))
        .run(&full.ctx, &train, &val, &initial)
        .await
        .unwrap();
    assert_eq!(uninterrupted.state.iteration, 7);

    // Interrupted after 3 iterations by the run's iteration limit.
    let limited = Budget::new(BudgetLimits {
        max_iterations: Some(3),
        ..Default::default()
    });
    let first = setup(11, limited, learning_reflection);
    let gepa = Gepa::new(config(settings)).with_run_dir(dir.path().join("b"));
    let part = gepa.run(&first.ctx, &train, &val, &initial).await.unwrap();
    assert_eq!(part.outcome.stop_reason, Some(StopReason::MaxIterations));
    assert_eq!(part.state.iteration, 3);
    let saved = RunDir::new(dir.path().join("b"))
        .load()
        .await
        .unwrap()
        .unwrap();
    assert_eq!(saved.iteration, 3);

    let second = setup(11, Budget::unlimited(), learning_reflection);
    let resumed = gepa
        .clone()
        .resume(true)
        .run(&second.ctx, &train, &val, &initial)
        .await
        .unwrap();
    assert_eq!(resumed.state.iteration, 7);
    assert_eq!(resumed.state.candidates, uninterrupted.state.candidates);
    assert_eq!(resumed.state.log, uninterrupted.state.log);
    assert_eq!(resumed.state.budget, uninterrupted.state.budget);
    assert_eq!(resumed.outcome.best, uninterrupted.outcome.best);
    assert_eq!(resumed.outcome.best_score, uninterrupted.outcome.best_score);
    assert_eq!(resumed.outcome.candidates, uninterrupted.outcome.candidates);
    // Together the two parts made the calls of one run.
    assert_eq!(first.task.calls() + second.task.calls(), full.task.calls());

    // Resuming with another seed is refused.
    let other = setup(12, Budget::unlimited(), learning_reflection);
    let err = gepa
        .clone()
        .resume(true)
        .run(&other.ctx, &train, &val, &initial)
        .await
        .unwrap_err();
    assert!(err.to_string().contains("seed"), "{err}");
}

#[tokio::test]
async fn stop_file_and_cancel_flag_stop_gracefully() {
    let (train, val) = vocab_data();
    let dir = tempfile::tempdir().unwrap();
    tokio::fs::create_dir_all(dir.path()).await.unwrap();
    tokio::fs::write(dir.path().join(STOP_FILE), b"")
        .await
        .unwrap();
    let s = setup(3, Budget::unlimited(), learning_reflection);
    let run = Gepa::new(config(serde_json::json!({"num_generations": 5})))
        .with_run_dir(dir.path())
        .run(&s.ctx, &train, &val, &s.program.initial_state())
        .await
        .unwrap();
    assert_eq!(run.outcome.stop_reason, Some(StopReason::Cancelled));
    assert_eq!(run.state.iteration, 0);
    assert_eq!(run.outcome.best_score, 0.0);
    let saved = RunDir::new(dir.path()).load().await.unwrap().unwrap();
    assert_eq!(saved.candidates.len(), 1);

    // The cancellation flag, raised by the task model after 20 calls.
    let cancel = CancelFlag::new();
    let raise = cancel.clone();
    let count = Arc::new(AtomicU64::new(0));
    let program = Program::single(Signature::new(
        vec![Field::text("text")],
        vec![Field::text("label")],
    ));
    let task = ScriptedLm::new(move |r| {
        if count.fetch_add(1, Ordering::SeqCst) + 1 >= 20 {
            raise.cancel();
        }
        Ok(rule_reply(r))
    });
    let ctx = OptimizeContext::builder(
        program.clone(),
        Arc::new(task),
        "scripted/task",
        Arc::new(ExactLabel),
    )
    .prompt_model(
        Arc::new(ScriptedLm::new(|r| Ok(learning_reflection(r)))),
        "scripted/reflect",
    )
    .settings(turns())
    .budget(Arc::new(Budget::with_cancel(
        BudgetLimits::default(),
        cancel,
    )))
    .build();
    let run = Gepa::new(config(serde_json::json!({"num_generations": 50})))
        .run(&ctx, &train, &val, &program.initial_state())
        .await
        .unwrap();
    assert_eq!(run.outcome.stop_reason, Some(StopReason::Cancelled));
    assert!(run.state.iteration < 50);
    assert!(!run.outcome.best_score.is_nan());
}

#[tokio::test]
async fn cancelled_before_anything_scored_is_an_error() {
    let cancel = CancelFlag::new();
    cancel.cancel();
    let s = setup(
        0,
        Budget::with_cancel(BudgetLimits::default(), cancel),
        learning_reflection,
    );
    let (train, val) = vocab_data();
    let err = Gepa::default()
        .compile(&s.ctx, &train, &val, &s.program.initial_state())
        .await
        .unwrap_err();
    assert!(matches!(err, OptimizeError::Stopped(StopReason::Cancelled)));
    let err = Gepa::default()
        .compile(&s.ctx, &[], &val, &s.program.initial_state())
        .await
        .unwrap_err();
    assert!(matches!(err, OptimizeError::NoExamples { .. }));
}

/// Two stages: `first` (kind -> draft) answers `kind: x` examples, `second` (kind, draft ->
/// label) passes the draft through for `x` and answers `kind: y` ones itself.
fn two_step() -> Program {
    Program::new(
        vec!["kind".into()],
        vec![
            Stage::new(
                "first",
                Signature::new(vec![Field::text("kind")], vec![Field::text("draft")])
                    .with_instructions("BASE"),
            ),
            Stage::new(
                "second",
                Signature::new(
                    vec![Field::text("kind"), Field::text("draft")],
                    vec![Field::text("label")],
                )
                .with_instructions("BASE"),
            ),
        ],
        vec!["label".into()],
    )
    .unwrap()
}

fn two_step_state(first: &str, second: &str) -> ProgramState {
    let mut s = ProgramState::single("first", PredictorState::new(first));
    s.predictors
        .insert("second".into(), PredictorState::new(second));
    s
}

/// The task model of [`two_step`]: `first` drafts `good` exactly when its instructions hold
/// `FIX-X` and the kind is x; `second` (its user turn carries the draft) keeps an x example's
/// draft and answers `good` for a y example exactly when its instructions hold `FIX-Y`.
fn two_step_reply(request: &ChatRequest) -> String {
    let system = &request.messages[0].content;
    let user = &request.messages[request.messages.len() - 1].content;
    let kind_x = user.lines().any(|l| l == "Kind: x");
    let kind_y = user.lines().any(|l| l == "Kind: y");
    match user.lines().find_map(|l| l.strip_prefix("Draft: ")) {
        None => {
            let good = system.contains("FIX-X") && kind_x;
            format!("draft: {}", if good { "good" } else { "bad" })
        }
        Some(draft) if kind_x => format!("label: {draft}"),
        Some(_) => {
            let good = system.contains("FIX-Y") && kind_y;
            format!("label: {}", if good { "good" } else { "bad" })
        }
    }
}

#[tokio::test]
async fn a_due_merge_combines_the_predictors_each_parent_improved() {
    // Saved pool: seed (BASE, BASE); #1 changed `first`; #2 changed `second`. #1 is best on the
    // x examples, #2 on the y ones; a merge is due. Hand-computed: the triplet is (1, 2, 0);
    // the merge takes `first` from #1 and `second` from #2; the stratified subsample of 4 holds
    // both x and both y examples; the merge scores 4 >= max(2, 2) and is accepted with no
    // further evaluation (the subsample is the whole validation set).
    let program = two_step();
    assert_eq!(program.initial_state(), two_step_state("BASE", "BASE"));
    let task = ScriptedLm::new(|r| Ok(two_step_reply(r)));
    let ctx = OptimizeContext::builder(
        program.clone(),
        Arc::new(task.clone()),
        "scripted/task",
        Arc::new(ExactLabel),
    )
    .prompt_model(
        Arc::new(ScriptedLm::constant("```\nunused\n```")),
        "scripted/reflect",
    )
    .settings(turns())
    .seed(5)
    .build();
    let ex = |kind: &str| Example::new().with("kind", kind).with("label", "good");
    let train: Vec<Example> = ["x", "y", "x", "y", "x", "y"]
        .iter()
        .map(|k| ex(k))
        .collect();
    let val: Vec<Example> = ["x", "x", "y", "y"].iter().map(|k| ex(k)).collect();

    let cfg = config(serde_json::json!({"num_generations": 4, "max_metric_calls": 1000}));
    let mut saved = RunState::new(5, cfg.clone(), train.len(), val.len(), Some(1000));
    let entry = |id: usize, first: &str, second: &str, scores: Vec<f64>, parents: Vec<usize>| {
        CandidateEntry {
            id,
            state: two_step_state(first, second),
            parents: parents.clone(),
            origin: if parents.is_empty() {
                Origin::Seed
            } else {
                Origin::Reflection { predictors: vec![] }
            },
            val_scores: scores,
            iteration: id as u64,
            discovered_at: 0,
            active: true,
            next_predictor: 0,
        }
    };
    saved.candidates = vec![
        entry(0, "BASE", "BASE", vec![0.0; 4], vec![]),
        entry(1, "FIX-X", "BASE", vec![1.0, 1.0, 0.0, 0.0], vec![0]),
        entry(2, "BASE", "FIX-Y", vec![0.0, 0.0, 1.0, 1.0], vec![0]),
    ];
    saved.iteration = 2;
    saved.merges_due = 1;
    saved.last_found_new = true;
    saved.budget.used = 30;
    let dir = tempfile::tempdir().unwrap();
    RunDir::new(dir.path()).save(&saved).await.unwrap();

    let run = Gepa::new(cfg)
        .with_run_dir(dir.path())
        .resume(true)
        .run(&ctx, &train, &val, &program.initial_state())
        .await
        .unwrap();
    let merge = &run.state.log[0];
    assert_eq!(merge.kind, "merge");
    assert_eq!(merge.parents, vec![1, 2]);
    assert_eq!(merge.examples.len(), 4);
    assert_eq!(merge.parent_scores, vec![2.0, 2.0]);
    assert!(merge.accepted);
    let merged = &run.state.candidates[3];
    assert_eq!(merged.state, two_step_state("FIX-X", "FIX-Y"));
    assert_eq!(merged.parents, vec![1, 2]);
    assert_eq!(merged.origin, Origin::Merge { ancestor: 0 });
    assert_eq!(merged.val_scores, vec![1.0; 4]);
    assert_eq!(merged.discovered_at, 34);
    assert_eq!(run.state.merges_accepted, 1);
    assert_eq!(run.state.merges_due, 0);
    assert_eq!(run.outcome.best, two_step_state("FIX-X", "FIX-Y"));
    assert_eq!(run.outcome.best_score, 1.0);
    // The merged candidate is perfect, so the last iteration skips reflection.
    assert_eq!(run.state.log[1].kind, "skip");
    assert_eq!(run.state.iteration, 4);
}

#[tokio::test]
async fn pool_cap_keeps_the_elite_and_other_selection_strategies_run() {
    let (train, val) = vocab_data();
    for settings in [
        serde_json::json!({"max_metric_calls": 90, "population_size": 2, "elite_size": 1}),
        serde_json::json!({"max_metric_calls": 90, "tournament_size": 2, "module_selector": "all"}),
        serde_json::json!({"max_metric_calls": 90, "candidate_selection_strategy": "current_best"}),
    ] {
        let s = setup(4, Budget::unlimited(), learning_reflection);
        let cap = settings.get("population_size").and_then(|v| v.as_u64());
        let run = Gepa::new(config(settings))
            .run(&s.ctx, &train, &val, &s.program.initial_state())
            .await
            .unwrap();
        assert!(run.state.budget.used <= 90);
        assert!(run.outcome.best_score > 0.0);
        let best = run.state.best().unwrap();
        assert!(best.active, "the best candidate is never retired");
        let active = run.state.candidates.iter().filter(|c| c.active).count();
        if let Some(cap) = cap {
            assert!(active as u64 <= cap);
            assert!(
                run.state.candidates.len() > 2,
                "the run made more candidates than the cap"
            );
        }
        for r in run.state.log.iter().filter(|r| r.kind == "reflection") {
            assert_eq!(r.parents.len(), 1);
            assert_eq!(r.predictors, vec!["predict".to_string()]);
        }
    }
}

/// GEPA with `settings` on [`data`], with the models of `s`.
async fn run_gepa(s: &Setup, settings: serde_json::Value) -> promptopt_optimize::gepa::GepaRun {
    let (train, val) = vocab_data();
    Gepa::new(config(settings))
        .run(&s.ctx, &train, &val, &s.program.initial_state())
        .await
        .unwrap()
}

/// The metric calls of a run add up: V for the seed, 2b per reflective proposal, b per skipped
/// one, V per accepted child (V = 6, b = 3). An evaluation the run already made (the same
/// candidate on the same minibatch) counts but is answered from the memo, so the task model sees
/// at most that many calls.
fn assert_calls_add_up(run: &promptopt_optimize::gepa::GepaRun, s: &Setup, max: u64) {
    let log = &run.state.log;
    let reflective = log.iter().filter(|r| r.kind == "reflection").count() as u64;
    let skipped = log.iter().filter(|r| r.kind == "skip").count() as u64;
    let accepted = log.iter().filter(|r| r.accepted).count() as u64;
    assert!(run.state.budget.used <= max);
    assert!(s.task.calls() <= run.state.budget.used);
    assert_eq!(run.state.reflection_calls, s.reflect.calls());
    assert_eq!(
        run.state.budget.used,
        6 + reflective * 6 + skipped * 3 + accepted * 6
    );
}

#[tokio::test]
async fn parallel_proposals_run_a_round_together_within_the_same_budget() {
    let settings = |p: usize| serde_json::json!({"max_metric_calls": 120, "parallel_proposals": p, "use_merge": false});
    let delay = std::time::Duration::from_millis(30);
    let one = setup_delayed(7, Budget::unlimited(), learning_reflection, delay);
    let serial = run_gepa(&one, settings(1)).await;
    let four = setup_delayed(7, Budget::unlimited(), learning_reflection, delay);
    let parallel = run_gepa(&four, settings(4)).await;
    for (run, s) in [(&serial, &one), (&parallel, &four)] {
        assert_calls_add_up(run, s, 120);
        assert!(
            run.outcome.best_score > 0.5,
            "{} {}",
            run.outcome.best_score,
            run.state.log.len()
        );
    }
    // One proposal at a time with P = 1; the reflections of a round are in flight together.
    assert_eq!(one.gauge.peak.load(Ordering::SeqCst), 1);
    assert!(four.gauge.peak.load(Ordering::SeqCst) > 1);
    assert_eq!(serial.state.log.len() as u64, serial.state.iteration);
    // A round's records share its iteration number; each slot has its own minibatch.
    let rounds = parallel.state.iteration;
    assert!(rounds < parallel.state.log.len() as u64, "{rounds} rounds");
    for round in 1..=rounds {
        let records: Vec<_> = parallel
            .state
            .log
            .iter()
            .filter(|r| r.iteration == round)
            .collect();
        assert!((1..=4).contains(&records.len()), "round {round}");
        for (i, a) in records.iter().enumerate() {
            for b in &records[i + 1..] {
                assert_ne!(a.examples, b.examples, "round {round}");
            }
        }
    }
    assert_eq!(
        parallel.outcome.candidates.len(),
        parallel.state.candidates.len()
    );
    let events = four
        .events
        .events()
        .iter()
        .filter(|e| matches!(e, Event::GepaIteration { .. }))
        .count();
    assert_eq!(events, parallel.state.log.len());

    // The same seed gives the same run.
    let again = setup(7, Budget::unlimited(), learning_reflection);
    let rerun = run_gepa(&again, settings(4)).await;
    assert_eq!(rerun.state.log, parallel.state.log);
    assert_eq!(rerun.outcome.best, parallel.outcome.best);
}

#[tokio::test]
async fn a_round_admits_only_the_proposals_the_budget_holds() {
    // Useless proposals: each costs 2b = 6. With 6 for the seed and 20 calls in all, the first
    // round admits two slots (12 of the 14 left); the third would need 6 more with 2 left.
    let s = setup(1, Budget::unlimited(), |_| {
        "```\nBe vague.\n```".to_string()
    });
    let run = run_gepa(
        &s,
        serde_json::json!({"max_metric_calls": 20, "parallel_proposals": 4}),
    )
    .await;
    assert_eq!(run.state.iteration, 1);
    assert_eq!(run.state.log.len(), 2);
    assert_eq!(run.state.budget.used, 18);
    assert_eq!(s.task.calls(), 18);
    assert_eq!(s.reflect.calls(), 2);
    assert_calls_add_up(&run, &s, 20);
}

#[tokio::test]
async fn replies_that_are_not_instructions_are_discarded_and_counted() {
    // A reflection model that copies its prompt back, then one that writes a program.
    for reply in [
        (|r: &ChatRequest| {
            r.messages
                .last()
                .map(|m| m.content.clone())
                .unwrap_or_default()
        }) as fn(&ChatRequest) -> String,
        |_| "```python\ndef classify(text):\n    return 'positive'\n```".to_string(),
    ] {
        let s = setup(3, Budget::unlimited(), reply);
        let run = run_gepa(
            &s,
            serde_json::json!({"max_metric_calls": 30, "parallel_proposals": 2}),
        )
        .await;
        // Nothing was tried: each proposal cost only its parent's minibatch, 3 calls. A slot is
        // admitted while its child's minibatch would still fit too: three rounds of two, then
        // one slot with 6 calls left (6 + 7 * 3 = 27).
        assert_eq!(run.state.candidates.len(), 1);
        assert_eq!(run.state.log.len(), 7);
        assert_eq!(run.state.budget.used, 27);
        assert!(run
            .state
            .log
            .iter()
            .all(|r| r.kind == "skip" && r.note.starts_with("the proposal was discarded: it ")));
        assert_eq!(run.state.rejected_proposals, 7);
        assert_eq!(run.state.reflection_calls, 7);
        assert_calls_add_up(&run, &s, 30);
        let warned = s.events.events().iter().any(|e| {
            matches!(e, Event::Warning { message }
                if message == "GEPA discarded 7 of 7 reflection replies that were not instructions")
        });
        assert!(warned);
    }
}

/// The first words of the padding [`padded_reflection`] adds.
const PADDING: &str = "Note: weigh every word.";

/// [`learning_reflection`], with a paragraph of thousands of bytes after the rules.
fn padded_reflection(request: &ChatRequest) -> String {
    let reply = learning_reflection(request);
    let lines: Vec<&str> = reply
        .lines()
        .filter(|line| !line.starts_with(PADDING))
        .collect();
    let (close, body) = lines.split_last().unwrap();
    format!(
        "{}\n{PADDING} {}\n{close}",
        body.join("\n"),
        "Read the text twice before answering. ".repeat(60)
    )
}

#[tokio::test]
async fn an_instruction_longer_than_the_task_context_is_cut_with_a_warning() {
    // The task model holds 200 words a request; without the cut every proposal (over 360 words,
    // within the reflection's 512-token cap) would overflow it.
    let program = Program::single(
        Signature::new(vec![Field::text("text")], vec![Field::text("label")])
            .with_instructions("Classify the text."),
    );
    let task = ScriptedLm::new(|r| Ok(rule_reply(r))).with_context_tokens(200);
    let reflect = ScriptedLm::new(|r| Ok(padded_reflection(r)));
    let events = CollectSink::new();
    let ctx = OptimizeContext::builder(
        program.clone(),
        Arc::new(task),
        "scripted/task",
        Arc::new(ExactLabel),
    )
    .prompt_model(Arc::new(reflect), "scripted/reflect")
    .settings(turns())
    .seed(7)
    .events(Arc::new(events.clone()))
    .build();
    let (train, val) = vocab_data();
    let run = Gepa::new(config(
        serde_json::json!({"max_metric_calls": 120, "use_merge": false}),
    ))
    .run(&ctx, &train, &val, &program.initial_state())
    .await
    .unwrap();
    // Every instruction tried fits in half the context (200 bytes at two bytes a token), and
    // the rules before the padding were learned.
    for candidate in &run.state.candidates {
        let instructions = &candidate.state.predictor("predict").unwrap().instructions;
        assert!(instructions.len() <= 200, "{}", instructions.len());
    }
    assert!(run.outcome.best_score > 0.5, "{}", run.outcome.best_score);
    let cut = events
        .events()
        .iter()
        .filter(|e| {
            matches!(e, Event::Warning { message }
                if message.starts_with("Cut the new instruction for `predict` of iteration")
                    && message.ends_with("bytes to fit `scripted/task`'s context of 200 tokens"))
        })
        .count();
    assert!(
        cut >= 1 && cut as u64 <= run.state.reflection_calls,
        "{cut}"
    );
}
