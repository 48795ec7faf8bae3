//! BootstrapFewShot: the program's own successful runs on training examples become demos.

use std::collections::{BTreeMap, BTreeSet};

use async_trait::async_trait;
use promptopt_core::evaluate::normalize;
use promptopt_core::{Example, MetricInfo, ProgramState, Trace};
use rand::seq::SliceRandom;
use rand_chacha::ChaCha8Rng;

use crate::balance::{label_counts, LabelBalance};
use crate::labeled::demo_of;
use crate::select::{self, SelectionStrategy};
use crate::{
    AlgorithmConfig, Event, LabeledFewShot, OptimizeContext, OptimizeError, Optimizer,
    OptimizerOutcome, OutcomeBuilder, StopReason,
};
use promptopt_core::Stage;

/// Bootstraps demos as DSPy's `BootstrapFewShot` does, with the guide's selection strategies.
///
/// 1. The teacher is the initial state; when it has no demos it gets up to
///    `max_labeled_demos` labeled training examples (seeded sample), as DSPy's teacher does.
/// 2. Training examples are tried in the order the selection strategy gives (`in_order`:
///    the training set's order, DSPy's behaviour; `diverse`: spread over the input space;
///    `hard`: examples the zero-shot program scores lowest first; `random`), each up to
///    `max_rounds` times (rounds after the first resample at temperature 1 with a new seed),
///    with the example itself removed from the teacher's demos. A run whose score passes the
///    metric (normalized score `>= metric_threshold`, or `> 0` without a threshold) and whose
///    reply parsed gives one demo per predictor: its inputs and outputs (with `reasoning` under
///    chain of thought). Trying stops when `max_bootstrapped` demos are collected. Examples run
///    concurrently (up to the context's concurrency, in waves sized by the success rate so far)
///    and their results are taken in order, so the demos are the ones trying them one by one
///    gives; the last wave may hold a few spare runs.
/// 3. Each predictor gets `max_bootstrapped_demos` of them (chosen by the strategy when more
///    were collected) plus labeled examples not bootstrapped, up to `max_labeled_demos` demos.
///
/// With `balance_labels` (the default; not in DSPy) and a label output, every step keeps the
/// labels even (see [`crate::balance`]): a training example whose label already has its share
/// of the bootstrapped demos is not tried, the labeled fill prefers the labels with fewest demos,
/// and the final demos take turns by label.
#[derive(Debug, Clone, PartialEq)]
pub struct BootstrapFewShot {
    /// Bootstrapped demos per predictor (default 4).
    pub max_bootstrapped_demos: usize,
    /// Demos per predictor in all, labeled ones filling up (default 16).
    pub max_labeled_demos: usize,
    /// Tries per training example (default 1).
    pub max_rounds: usize,
    /// The normalized score a run needs to become a demo (`None`: any score above 0).
    pub metric_threshold: Option<f64>,
    /// The order of trying and choosing.
    pub selection: SelectionStrategy,
    /// Demos to collect before choosing (`None`: `max_bootstrapped_demos`).
    pub max_bootstrapped: Option<usize>,
    /// Failed runs tolerated before bootstrapping fails (default 10).
    pub max_errors: usize,
    /// Whether a classifier's demos are balanced by label (default `true`).
    pub balance_labels: bool,
}

impl Default for BootstrapFewShot {
    fn default() -> Self {
        Self {
            max_bootstrapped_demos: 4,
            max_labeled_demos: 16,
            max_rounds: 1,
            metric_threshold: None,
            selection: SelectionStrategy::InOrder,
            max_bootstrapped: None,
            max_errors: 10,
            balance_labels: true,
        }
    }
}

/// What bootstrapping produced.
#[derive(Debug, Clone, PartialEq)]
pub struct BootstrapRun {
    /// The state with its new demos.
    pub state: ProgramState,
    /// Demos bootstrapped (collected, before choosing).
    pub bootstrapped: usize,
    /// Training examples run (spare runs of the last concurrent wave included).
    pub tried: usize,
    /// Why bootstrapping stopped early, if it did.
    pub stop_reason: Option<StopReason>,
}

impl BootstrapRun {
    /// What was bootstrapped, in a line: `bootstrapped 4 of 12 tried, 8 demos` (the most demos
    /// any predictor got).
    pub fn summary(&self) -> String {
        let demos = self
            .state
            .predictors
            .values()
            .map(|p| p.demos.len())
            .max()
            .unwrap_or(0);
        format!(
            "bootstrapped {} of {} tried, {demos} demos",
            self.bootstrapped, self.tried
        )
    }
}

impl BootstrapFewShot {
    /// Keys of `algorithm_config`: DSPy's names and the guide's (`num_examples` sets both demo
    /// counts, `bootstrap_rounds` is `max_rounds`, `max_bootstrapped` the demos collected).
    pub const CONFIG_KEYS: &'static [&'static str] = &[
        "max_bootstrapped_demos",
        "max_labeled_demos",
        "max_rounds",
        "metric_threshold",
        "num_examples",
        "bootstrap_rounds",
        "selection_strategy",
        "max_bootstrapped",
        "max_errors",
        "balance_labels",
    ];

    /// Settings from a request's `algorithm_config`.
    pub fn from_config(config: &AlgorithmConfig) -> Result<Self, OptimizeError> {
        config.check_keys("algorithm_config", "bootstrapfewshot", Self::CONFIG_KEYS)?;
        Self::from_checked(config)
    }

    /// Settings from a config whose keys were already checked (by a wider key list).
    pub fn from_checked(config: &AlgorithmConfig) -> Result<Self, OptimizeError> {
        let d = Self::default();
        let num_examples = config.usize("num_examples")?;
        let selection = match config.choice("selection_strategy", &SelectionStrategy::NAMES)? {
            Some(name) => SelectionStrategy::from_name(name).unwrap_or_default(),
            None => d.selection,
        };
        Ok(Self {
            max_bootstrapped_demos: config
                .usize("max_bootstrapped_demos")?
                .or(num_examples)
                .unwrap_or(d.max_bootstrapped_demos),
            max_labeled_demos: config
                .usize("max_labeled_demos")?
                .or(num_examples)
                .unwrap_or(d.max_labeled_demos),
            max_rounds: config
                .positive("max_rounds")?
                .or(config.positive("bootstrap_rounds")?)
                .unwrap_or(d.max_rounds),
            metric_threshold: config.f64_in("metric_threshold", 0.0, 1.0)?,
            selection,
            max_bootstrapped: config.usize("max_bootstrapped")?,
            max_errors: config.usize("max_errors")?.unwrap_or(d.max_errors),
            balance_labels: config.bool("balance_labels")?.unwrap_or(d.balance_labels),
        })
    }

    /// Bootstraps demos for `initial` from `trainset` (no evaluation on a validation set).
    pub async fn bootstrap(
        &self,
        ctx: &OptimizeContext,
        trainset: &[Example],
        initial: &ProgramState,
        rng: &mut ChaCha8Rng,
    ) -> Result<BootstrapRun, OptimizeError> {
        let predictors = ctx.predictors();
        let input_keys: Vec<String> = predictors
            .first()
            .map(|p| p.signature.input_names())
            .unwrap_or_default();
        let has_demos = initial.predictors.values().any(|p| !p.demos.is_empty());
        let teacher = if has_demos || self.max_labeled_demos == 0 {
            initial.clone()
        } else {
            LabeledFewShot {
                k: self.max_labeled_demos,
                sample: true,
            }
            .apply(&predictors, trainset, initial, rng)
        };
        let mut stop_reason = None;
        let baseline = if self.selection == SelectionStrategy::Hard {
            match self.zero_shot_scores(ctx, trainset, initial, rng).await {
                Ok(w) => Some(w),
                Err(OptimizeError::Stopped(r)) => {
                    stop_reason = Some(r);
                    None
                }
                Err(e) => return Err(e),
            }
        } else {
            None
        };
        let order = select::order(
            self.selection,
            trainset,
            &input_keys,
            baseline.as_deref(),
            rng,
        );
        let target = self
            .max_bootstrapped
            .unwrap_or(self.max_bootstrapped_demos)
            .max(self.max_bootstrapped_demos);
        let info = ctx.metric().info();
        let balance = self
            .balance_labels
            .then(|| LabelBalance::for_predictors(&predictors))
            .flatten();
        let quota = balance.as_ref().map(|b| b.quota(target));
        let mut label_found: BTreeMap<String, usize> = BTreeMap::new();
        // Per predictor: (training index, demo), in the order found.
        let mut found: BTreeMap<String, Vec<(usize, Example)>> = BTreeMap::new();
        let mut bootstrapped: BTreeSet<usize> = BTreeSet::new();
        let mut tried = 0usize;
        let mut errors = 0usize;
        ctx.emit(Event::StageStarted {
            stage: "bootstrap".into(),
            total: Some(target as u64),
        });
        // Examples run concurrently in waves sized by the success rate so far, and their results
        // are taken in order, so the demos are those that trying the examples one by one gives;
        // a wave only adds runs past the point where enough demos were found.
        let mut next = 0usize;
        while stop_reason.is_none() && bootstrapped.len() < target && next < order.len() {
            let size = wave_size(
                target - bootstrapped.len(),
                bootstrapped.len(),
                tried,
                ctx.concurrency(),
            );
            let mut wave: Vec<(usize, Option<String>)> = Vec::with_capacity(size);
            while wave.len() < size && next < order.len() {
                let i = order[next];
                next += 1;
                let label = balance.as_ref().and_then(|b| b.label_of(&trainset[i]));
                if !at_quota(&label_found, label.as_deref(), quota) {
                    wave.push((i, label));
                }
            }
            tried += wave.len();
            let attempts = wave
                .iter()
                .map(|(i, _)| self.attempt(ctx, &teacher, &predictors, &trainset[*i], &info));
            let outcomes = futures::future::join_all(attempts).await;
            for ((i, label), attempt) in wave.into_iter().zip(outcomes) {
                if bootstrapped.len() >= target || at_quota(&label_found, label.as_deref(), quota) {
                    continue;
                }
                if let Some(error) = attempt.metric_error {
                    return Err(error);
                }
                // A teacher prompt too long for the context fails this example only.
                for error in attempt.errors {
                    if error.is_context_overflow() {
                        continue;
                    }
                    errors += 1;
                    if errors > self.max_errors {
                        return Err(error);
                    }
                }
                if let Some(reason) = attempt.stopped {
                    stop_reason = Some(reason);
                    break;
                }
                let Some(per_predictor) = attempt.demos else {
                    continue;
                };
                for (name, demo) in per_predictor {
                    found.entry(name).or_default().push((i, demo));
                }
                bootstrapped.insert(i);
                if let Some(label) = label {
                    *label_found.entry(label).or_insert(0) += 1;
                }
                ctx.emit(Event::StageProgress {
                    stage: "bootstrap".into(),
                    done: bootstrapped.len() as u64,
                    total: Some(target as u64),
                });
            }
        }
        // Labeled fill: the examples not bootstrapped, shuffled.
        let mut rest: Vec<&Example> = trainset
            .iter()
            .enumerate()
            .filter(|(i, _)| !bootstrapped.contains(i))
            .map(|(_, e)| e)
            .collect();
        rest.shuffle(rng);
        let mut state = initial.clone();
        for info in &predictors {
            let Some(predictor) = state.predictor_mut(&info.name) else {
                continue;
            };
            let pool = found.remove(&info.name).unwrap_or_default();
            let chosen = self.choose(
                pool,
                &input_keys,
                baseline.as_deref(),
                balance.as_ref(),
                rng,
            );
            let mut demos: Vec<Example> = chosen;
            let fill = self.max_labeled_demos.saturating_sub(demos.len());
            match &balance {
                Some(b) => {
                    let total = demos.len() + fill;
                    let mut counts = label_counts(b, &demos);
                    let labeled: Vec<Example> =
                        rest.iter().map(|e| demo_of(e, &info.signature)).collect();
                    demos.extend(b.pick(&labeled, fill, b.quota(total), &mut counts));
                    demos = b.interleave(demos);
                }
                None => {
                    demos.extend(rest.iter().take(fill).map(|e| demo_of(e, &info.signature)));
                }
            }
            predictor.demos = demos;
        }
        Ok(BootstrapRun {
            state,
            bootstrapped: bootstrapped.len(),
            tried,
            stop_reason,
        })
    }

    /// Runs the teacher (without `example` among its demos) on `example`, up to `max_rounds`
    /// times (rounds after the first at temperature 1 with a new seed), until a run parses and
    /// passes the metric.
    async fn attempt(
        &self,
        ctx: &OptimizeContext,
        teacher: &ProgramState,
        predictors: &[Stage],
        example: &Example,
        info: &MetricInfo,
    ) -> Attempt {
        let teacher = without_example(teacher, predictors, example);
        let mut attempt = Attempt {
            demos: None,
            errors: Vec::new(),
            metric_error: None,
            stopped: None,
        };
        for round in 0..self.max_rounds {
            let mut runtime = ctx.runtime().clone();
            if round > 0 {
                runtime.settings.temperature = Some(1.0);
                runtime.settings.seed = Some(round as u64);
            }
            match ctx.run_with(&runtime, &teacher, example).await {
                Ok((prediction, trace)) => {
                    if final_parse_failure(&trace) {
                        continue;
                    }
                    let score = match ctx.score(example, &prediction, &trace).await {
                        Ok(score) => score,
                        Err(error) => {
                            attempt.metric_error = Some(error);
                            break;
                        }
                    };
                    let normalized = normalize(info, score.value);
                    let success = match self.metric_threshold {
                        Some(t) => normalized >= t,
                        None => normalized > 0.0,
                    };
                    if !success {
                        continue;
                    }
                    let mut per_predictor = BTreeMap::new();
                    for step in &trace.steps {
                        if let Some(outputs) = &step.outputs {
                            let mut demo = step.inputs.clone();
                            demo.merge(outputs);
                            per_predictor.insert(step.predictor.clone(), demo);
                        }
                    }
                    attempt.demos = Some(per_predictor);
                    break;
                }
                Err(OptimizeError::Stopped(reason)) => {
                    attempt.stopped = Some(reason);
                    break;
                }
                Err(error) => attempt.errors.push(error),
            }
        }
        attempt
    }

    /// Picks `max_bootstrapped_demos` of the collected demos by the selection strategy.
    fn choose(
        &self,
        pool: Vec<(usize, Example)>,
        input_keys: &[String],
        baseline: Option<&[f64]>,
        balance: Option<&LabelBalance>,
        rng: &mut ChaCha8Rng,
    ) -> Vec<Example> {
        if pool.len() <= self.max_bootstrapped_demos {
            return pool.into_iter().map(|(_, d)| d).collect();
        }
        let demos: Vec<Example> = pool.iter().map(|(_, d)| d.clone()).collect();
        let pool_scores: Option<Vec<f64>> = baseline.map(|b| {
            pool.iter()
                .map(|(i, _)| b.get(*i).copied().unwrap_or(1.0))
                .collect()
        });
        let order = select::order(
            self.selection,
            &demos,
            input_keys,
            pool_scores.as_deref(),
            rng,
        );
        let k = self.max_bootstrapped_demos;
        match balance {
            Some(b) => b.pick(
                order.iter().map(|&i| &demos[i]),
                k,
                b.quota(k),
                &mut BTreeMap::new(),
            ),
            None => order
                .into_iter()
                .take(k)
                .map(|i| demos[i].clone())
                .collect(),
        }
    }

    /// The zero-shot program's normalized score on the training examples (probing at most
    /// `max(8 × demos to collect, 64)` of them, chosen at random; the others count as right).
    async fn zero_shot_scores(
        &self,
        ctx: &OptimizeContext,
        trainset: &[Example],
        initial: &ProgramState,
        rng: &mut ChaCha8Rng,
    ) -> Result<Vec<f64>, OptimizeError> {
        let target = self
            .max_bootstrapped
            .unwrap_or(self.max_bootstrapped_demos)
            .max(1);
        let cap = (8 * target).max(64).min(trainset.len());
        let mut idx: Vec<usize> = (0..trainset.len()).collect();
        idx.shuffle(rng);
        idx.truncate(cap);
        idx.sort_unstable();
        let probe: Vec<Example> = idx.iter().map(|&i| trainset[i].clone()).collect();
        let mut zero_shot = initial.clone();
        for p in zero_shot.predictors.values_mut() {
            p.demos.clear();
        }
        ctx.emit(Event::StageStarted {
            stage: "hard_examples".into(),
            total: Some(probe.len() as u64),
        });
        let report = ctx.evaluate(&zero_shot, &probe).await?;
        let mut scores = vec![1.0; trainset.len()];
        for (k, r) in report.results.iter().enumerate() {
            scores[idx[k]] = r.normalized;
        }
        Ok(scores)
    }
}

/// What the runs on one training example gave.
struct Attempt {
    /// One demo per predictor, from the first run that passed the metric.
    demos: Option<BTreeMap<String, Example>>,
    /// Runs that failed with an error.
    errors: Vec<OptimizeError>,
    /// The metric failed (a command metric that died twice): the run stops.
    metric_error: Option<OptimizeError>,
    /// Why the runs stopped, when the budget or a cancellation stopped them.
    stopped: Option<StopReason>,
}

/// How many examples to run at once: enough to find `needed` demos at the success rate seen so
/// far (smoothed, so one half before any result), at least one and at most `concurrency`.
fn wave_size(needed: usize, successes: usize, tried: usize, concurrency: usize) -> usize {
    (needed * (tried + 2))
        .div_ceil(successes + 1)
        .clamp(1, concurrency.max(1))
}

/// Whether `label` already has its share of bootstrapped demos.
fn at_quota(found: &BTreeMap<String, usize>, label: Option<&str>, quota: Option<usize>) -> bool {
    match (label, quota) {
        (Some(label), Some(quota)) => found.get(label).copied().unwrap_or(0) >= quota,
        _ => false,
    }
}

/// The teacher state without `example` among its demos (as DSPy removes the current example).
fn without_example(
    teacher: &ProgramState,
    predictors: &[Stage],
    example: &Example,
) -> ProgramState {
    let mut state = teacher.clone();
    for info in predictors {
        if let Some(p) = state.predictor_mut(&info.name) {
            let own = demo_of(example, &info.signature);
            p.demos.retain(|d| *d != own && d != example);
        }
    }
    state
}

#[async_trait]
impl Optimizer for BootstrapFewShot {
    fn name(&self) -> &'static str {
        "bootstrapfewshot"
    }

    async fn compile(
        &self,
        ctx: &OptimizeContext,
        trainset: &[Example],
        _valset: &[Example],
        initial: &ProgramState,
    ) -> Result<OptimizerOutcome, OptimizeError> {
        let mut rng = ctx.rng();
        let run = self.bootstrap(ctx, trainset, initial, &mut rng).await?;
        let description = run.summary();
        // Like DSPy's, the optimizer only bootstraps: the result is scored on the validation set
        // by the pipeline's validation stage.
        ctx.emit(Event::CandidateProposed {
            candidate: 0,
            description,
        });
        let mut outcome = OutcomeBuilder::new(run.state);
        outcome.iteration_done();
        Ok(outcome.finish(run.stop_reason))
    }
}

/// Whether some predictor's last reply in `trace` could not be parsed. A reply that failed and was
/// then recovered by a later attempt (the JSON fallback) counts as parsed: the trace holds both
/// attempts, and the prediction comes from the recovered one.
fn final_parse_failure(trace: &Trace) -> bool {
    last_attempt_failed(
        trace
            .steps
            .iter()
            .map(|s| (s.predictor.as_str(), s.parse_error.is_some())),
    )
}

/// Whether the last of some predictor's attempts (`(predictor, failed)`, in order) failed.
fn last_attempt_failed<'a>(attempts: impl IntoIterator<Item = (&'a str, bool)>) -> bool {
    let mut last: BTreeMap<&str, bool> = BTreeMap::new();
    for (predictor, failed) in attempts {
        last.insert(predictor, failed);
    }
    last.values().any(|&failed| failed)
}

#[cfg(test)]
mod parse_failure_tests {
    use super::last_attempt_failed;

    #[test]
    fn a_reply_recovered_by_the_fallback_counts_as_parsed() {
        assert!(!last_attempt_failed([
            ("predict", true),
            ("predict", false)
        ]));
        assert!(last_attempt_failed([("predict", false), ("predict", true)]));
        assert!(last_attempt_failed([("a", true), ("b", false)]));
        assert!(!last_attempt_failed([("a", false)]));
    }
}
