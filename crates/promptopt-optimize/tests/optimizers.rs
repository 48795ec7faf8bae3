//! Optimizers against a scripted model: which demos they keep, and how budgets stop them.
#![allow(clippy::unwrap_used)]

use std::sync::Arc;
use std::time::Duration;

use promptopt_core::adapter::AdapterKind;
use promptopt_core::{metrics, Example, Field, Program, ProgramState, RunSettings, Signature};
use promptopt_lm::{ChatRequest, Role, ScriptedLm};
use promptopt_optimize::{
    BootstrapFewShot, BootstrapFewShotWithRandomSearch, Budget, BudgetLimits, LabeledFewShot,
    OptimizeContext, Optimizer, SelectionStrategy, StopReason,
};

fn last_user(request: &ChatRequest) -> String {
    request
        .messages
        .iter()
        .rev()
        .find(|m| m.role == Role::User)
        .map(|m| m.content.clone())
        .unwrap_or_default()
}

/// Says `positive` exactly when the text mentions "great".
fn scripted() -> ScriptedLm {
    ScriptedLm::new(|request| {
        let text = last_user(request);
        Ok(if text.contains("great") {
            "label: positive".into()
        } else {
            "label: negative".into()
        })
    })
}

fn ex(text: &str, label: &str) -> Example {
    Example::new().with("text", text).with("label", label)
}

fn trainset() -> Vec<Example> {
    vec![
        ex("a great film", "positive"),
        ex("lovely acting", "positive"), // the model gets this wrong
        ex("dull and slow", "negative"),
        ex("great fun", "positive"),
        ex("warm and touching", "positive"), // wrong
        ex("a mess", "negative"),
        ex("great cast", "positive"),
        ex("boring", "negative"),
    ]
}

/// The `text` of each demo of the `predict` predictor, in order.
fn demo_texts(state: &ProgramState) -> Vec<String> {
    state
        .predictor("predict")
        .unwrap()
        .demos
        .iter()
        .map(|d| d.text("text").unwrap())
        .collect()
}

fn context(lm: ScriptedLm, budget: Option<Budget>) -> (Program, OptimizeContext) {
    context_with(lm, budget, 1)
}

fn context_with(
    lm: ScriptedLm,
    budget: Option<Budget>,
    concurrency: usize,
) -> (Program, OptimizeContext) {
    let program = Program::single(Signature::new(
        vec![Field::text("text")],
        vec![Field::text("label")],
    ));
    let metric = metrics::by_name("accuracy", "label").unwrap();
    let mut builder =
        OptimizeContext::builder(program.clone(), Arc::new(lm), "scripted/test", metric)
            .settings(RunSettings {
                adapter: AdapterKind::Turns,
                json_fallback: false,
                ..RunSettings::default()
            })
            .concurrency(concurrency)
            .seed(0);
    if let Some(budget) = budget {
        builder = builder.budget(Arc::new(budget));
    }
    (program, builder.build())
}

#[tokio::test]
async fn bootstrap_keeps_only_runs_that_pass_the_metric() {
    let lm = scripted();
    let (program, ctx) = context(lm.clone(), None);
    let optimizer = BootstrapFewShot {
        max_labeled_demos: 0,
        ..Default::default()
    };
    let train = trainset();
    let mut rng = ctx.rng();
    let run = optimizer
        .bootstrap(&ctx, &train, &program.initial_state(), &mut rng)
        .await
        .unwrap();
    let demos = &run.state.predictor("predict").unwrap().demos;
    assert_eq!(run.bootstrapped, 4);
    // In order: 1 passes, 2 fails, 3 and 4 pass, 5 fails, 6 passes: six tried for four demos.
    assert_eq!(run.tried, 6);
    assert_eq!(lm.calls(), 6);
    assert_eq!(
        demo_texts(&run.state),
        ["a great film", "dull and slow", "great fun", "a mess"]
    );
    for d in demos {
        assert_eq!(d.keys().collect::<Vec<_>>(), ["text", "label"]);
    }
}

#[tokio::test]
async fn concurrent_bootstrap_keeps_the_demos_of_trying_one_by_one() {
    let train = trainset();
    let optimizer = BootstrapFewShot {
        max_labeled_demos: 0,
        ..Default::default()
    };
    // (concurrency, runs): with 3 at once the waves are examples 1-3 and 4-6, six runs as one by
    // one; with 8 at once all eight run in one wave and the last two runs are spare.
    for (concurrency, runs) in [(1, 6), (3, 6), (8, 8)] {
        let lm = scripted();
        let (program, ctx) = context_with(lm.clone(), None, concurrency);
        let mut rng = ctx.rng();
        let run = optimizer
            .bootstrap(&ctx, &train, &program.initial_state(), &mut rng)
            .await
            .unwrap();
        assert_eq!(
            (run.tried as u64, lm.calls()),
            (runs, runs),
            "concurrency {concurrency}"
        );
        assert_eq!(
            demo_texts(&run.state),
            ["a great film", "dull and slow", "great fun", "a mess"],
            "concurrency {concurrency}"
        );
    }
}

#[tokio::test]
async fn bootstrap_fills_with_labeled_examples_and_leaves_scoring_to_the_pipeline() {
    let (program, ctx) = context(scripted(), None);
    let optimizer = BootstrapFewShot {
        max_bootstrapped_demos: 2,
        max_labeled_demos: 3,
        ..Default::default()
    };
    let train = trainset();
    let val = vec![
        ex("great", "positive"),
        ex("bad", "negative"),
        ex("nice", "positive"),
    ];
    let outcome = optimizer
        .compile(&ctx, &train, &val, &program.initial_state())
        .await
        .unwrap();
    assert_eq!(outcome.best.predictor("predict").unwrap().demos.len(), 3);
    // As DSPy's, it does not score its result: no validation example is run.
    assert!(outcome.best_score.is_nan());
    assert!(outcome.trajectory.is_empty());
    assert_eq!(outcome.iterations, 1);
    assert_eq!(outcome.stop_reason, None);
    let calls = ctx.budget().calls();
    let rescored = ctx.evaluate(&outcome.best, &val).await.unwrap();
    assert!((rescored.score - 2.0 / 3.0).abs() < 1e-9);
    assert_eq!(
        ctx.budget().calls(),
        calls + 3,
        "the validation set was not run before"
    );
}

#[tokio::test]
async fn hard_selection_tries_the_baselines_failures_first() {
    let lm = scripted();
    let (program, ctx) = context(lm, None);
    let optimizer = BootstrapFewShot {
        max_bootstrapped_demos: 2,
        max_labeled_demos: 0,
        selection: SelectionStrategy::Hard,
        // Every run "passes" so the order of trying shows in the demos.
        metric_threshold: Some(0.0),
        ..Default::default()
    };
    let train = trainset();
    let mut rng = ctx.rng();
    let run = optimizer
        .bootstrap(&ctx, &train, &program.initial_state(), &mut rng)
        .await
        .unwrap();
    let mut texts = demo_texts(&run.state);
    texts.sort();
    assert_eq!(texts, ["lovely acting", "warm and touching"]);
}

#[tokio::test]
async fn labeled_few_shot_is_seeded_and_makes_no_calls_to_build() {
    let lm = scripted();
    let (program, ctx) = context(lm.clone(), None);
    let train = trainset();
    let a = LabeledFewShot { k: 3, sample: true }.apply(
        &ctx.predictors(),
        &train,
        &program.initial_state(),
        &mut ctx.rng(),
    );
    let b = LabeledFewShot { k: 3, sample: true }.apply(
        &ctx.predictors(),
        &train,
        &program.initial_state(),
        &mut ctx.rng(),
    );
    assert_eq!(a, b);
    assert_eq!(a.predictor("predict").unwrap().demos.len(), 3);
    assert_eq!(lm.calls(), 0);
}

#[tokio::test]
async fn random_search_picks_the_best_candidate_on_validation() {
    let (program, ctx) = context(scripted(), None);
    let optimizer = BootstrapFewShotWithRandomSearch {
        num_candidate_programs: 2,
        ..Default::default()
    };
    let train = trainset();
    let val = vec![ex("great", "positive"), ex("awful", "negative")];
    let outcome = optimizer
        .compile(&ctx, &train, &val, &program.initial_state())
        .await
        .unwrap();
    assert_eq!(outcome.candidates.len(), 5);
    assert_eq!(outcome.candidates[0].description, "zero-shot");
    assert_eq!(outcome.best_score, 1.0);
    assert_eq!(outcome.iterations, 5);
    let best_sofar: Vec<f64> = outcome.trajectory.iter().map(|t| t.best_so_far).collect();
    assert!(best_sofar.windows(2).all(|w| w[1] >= w[0]));
}

#[tokio::test]
async fn a_call_budget_stops_cleanly_with_the_best_so_far() {
    let lm = scripted();
    let budget = Budget::new(BudgetLimits {
        max_lm_calls: Some(5),
        ..Default::default()
    });
    let (program, ctx) = context(lm.clone(), Some(budget));
    let optimizer = BootstrapFewShotWithRandomSearch::default();
    let train = trainset();
    let val = vec![ex("great", "positive"), ex("awful", "negative")];
    let outcome = optimizer
        .compile(&ctx, &train, &val, &program.initial_state())
        .await
        .unwrap();
    assert_eq!(outcome.stop_reason, Some(StopReason::BudgetCalls));
    assert!(lm.calls() <= 5, "{} calls", lm.calls());
    assert!(!outcome.candidates.is_empty());
    assert_eq!(outcome.best_score, 1.0);
}

#[tokio::test]
async fn max_iterations_and_timeout_stop_the_search() {
    let budget = Budget::new(BudgetLimits {
        max_iterations: Some(2),
        ..Default::default()
    });
    let (program, ctx) = context(scripted(), Some(budget));
    let train = trainset();
    let val = vec![ex("great", "positive")];
    let outcome = BootstrapFewShotWithRandomSearch::default()
        .compile(&ctx, &train, &val, &program.initial_state())
        .await
        .unwrap();
    assert_eq!(outcome.stop_reason, Some(StopReason::MaxIterations));
    assert_eq!(outcome.candidates.len(), 2);

    let budget = Budget::new(BudgetLimits {
        timeout: Some(Duration::ZERO),
        ..Default::default()
    });
    let lm = scripted();
    let (program, ctx) = context(lm.clone(), Some(budget));
    let outcome = BootstrapFewShot::default()
        .compile(&ctx, &train, &val, &program.initial_state())
        .await
        .unwrap();
    assert_eq!(outcome.stop_reason, Some(StopReason::Timeout));
    assert_eq!(lm.calls(), 0);
}

#[tokio::test]
async fn cancellation_stops_before_the_next_call() {
    let lm = scripted();
    let (program, ctx) = context(lm.clone(), None);
    ctx.budget().cancel_flag().cancel();
    let outcome = BootstrapFewShotWithRandomSearch::default()
        .compile(
            &ctx,
            &trainset(),
            &[ex("great", "positive")],
            &program.initial_state(),
        )
        .await
        .unwrap();
    assert_eq!(outcome.stop_reason, Some(StopReason::Cancelled));
    assert_eq!(lm.calls(), 0);
}

/// Fails with a context overflow for texts with "long", cannot be reached for texts with "down",
/// else answers as [`scripted`].
fn overflowing() -> ScriptedLm {
    ScriptedLm::new(|request| {
        let text = last_user(request);
        if text.contains("long") {
            return Err(promptopt_lm::LmError::PromptTooLong {
                provider: "openai".into(),
                message: "The prompt has 2483 tokens but the context holds 2048".into(),
            });
        }
        if text.contains("down") {
            return Err(promptopt_lm::LmError::Connect {
                provider: "openai".into(),
                url: "http://127.0.0.1:9/v1".into(),
                message: "connection refused".into(),
            });
        }
        Ok(if text.contains("great") {
            "label: positive".into()
        } else {
            "label: negative".into()
        })
    })
}

#[tokio::test]
async fn prompts_too_long_for_the_context_score_as_failures_but_server_errors_stop() {
    let (program, ctx) = context(overflowing(), None);
    let state = program.initial_state();
    // Twelve prompts too long (more than the 10 errors allowed) and two that fit.
    let mut val: Vec<Example> = (0..12)
        .map(|i| ex(&format!("a long review {i}"), "positive"))
        .collect();
    val.push(ex("a great film", "positive"));
    val.push(ex("boring", "negative"));
    let report = ctx.evaluate(&state, &val).await.unwrap();
    assert_eq!(report.errors, 12);
    assert!((report.score - 2.0 / 14.0).abs() < 1e-9, "{}", report.score);
    let failed = report.results.iter().find(|r| r.error.is_some()).unwrap();
    assert!(failed.error.as_deref().unwrap().contains("context"));

    // Eleven calls the server never answered are more than the 10 errors allowed.
    let down: Vec<Example> = (0..11)
        .map(|i| ex(&format!("down {i}"), "positive"))
        .collect();
    let error = ctx.evaluate(&state, &down).await.unwrap_err();
    assert!(!error.is_context_overflow());
    assert!(error.to_string().contains("connection refused"), "{error}");

    // Bootstrapping goes past the training examples whose prompt is too long.
    let mut train: Vec<Example> = (0..12)
        .map(|i| ex(&format!("a long review {i}"), "positive"))
        .collect();
    train.extend(trainset());
    let optimizer = BootstrapFewShot {
        max_labeled_demos: 0,
        ..Default::default()
    };
    let run = optimizer
        .bootstrap(&ctx, &train, &state, &mut ctx.rng())
        .await
        .unwrap();
    assert_eq!(
        demo_texts(&run.state),
        ["a great film", "dull and slow", "great fun", "a mess"]
    );
}
