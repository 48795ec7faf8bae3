//! The evaluator: a program state scored over examples, concurrently.
//!
//! [`evaluate`] runs `(program, state)` on every example with bounded concurrency, scores each
//! prediction with the metric and aggregates: the score on a 0–1 scale, latency percentiles,
//! tokens, cost, cache hits, parse failures and errors. Results come back in input order and do
//! not depend on completion order, so a rerun with a warm cache gives the same report. It is the
//! one evaluator: the pipeline, every optimizer and `promptopt evaluate` use it.
//!
//! Metrics that block ([`Metric::is_blocking`], such as a command metric) are scored on tokio's
//! blocking pool, never on the runtime's workers; a metric that fails ([`Metric::try_score`])
//! stops the evaluation with its reason. A model call refused by the budget stops it at once
//! ([`CoreError::is_budget_exhausted`]): a partial score would not be comparable.
use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Instant;

use futures::stream::{self, StreamExt};
use promptopt_lm::Usage;
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

use crate::events::{Event, EventSink, NullSink};
use crate::program::{Program, Runtime};
use crate::{CoreError, Example, Metric, MetricInfo, Prediction, ProgramState, Score, Trace};

mod summary;

pub use summary::{normalize, percentile, LatencySummary};

/// Evaluations remembered by `(program, runtime settings, state, examples)`: a deterministic
/// model would answer the same again, so optimizers never pay twice for one candidate.
///
/// With a [`MemoJournal`], every new evaluation is also handed to the journal, and a memo
/// [`preload`](EvalMemo::preload)ed from a journal lets a run that was cut off (a worker that
/// died) skip the evaluations it had completed: a checkpoint of completed trials.
#[derive(Clone, Default)]
pub struct EvalMemo {
    entries: Arc<Mutex<HashMap<String, EvalReport>>>,
    journal: Option<Arc<dyn MemoJournal>>,
}

impl std::fmt::Debug for EvalMemo {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("EvalMemo")
            .field("entries", &self.lock().len())
            .field("journal", &self.journal.is_some())
            .finish()
    }
}

/// Where an [`EvalMemo`] writes each new evaluation (a job's checkpoint). `record` is called on
/// the evaluating task and must not block: hand the entry to a queue.
pub trait MemoJournal: Send + Sync {
    /// Records the evaluation stored under `key`.
    fn record(&self, key: &str, report: &EvalReport);
}

impl EvalMemo {
    /// An empty memo.
    pub fn new() -> Self {
        Self::default()
    }

    /// An empty memo that hands every new evaluation to `journal`.
    pub fn with_journal(journal: Arc<dyn MemoJournal>) -> Self {
        Self {
            entries: Arc::default(),
            journal: Some(journal),
        }
    }

    /// Adds evaluations recorded earlier (by a journal), without recording them again.
    pub fn preload(&self, entries: impl IntoIterator<Item = (String, EvalReport)>) {
        self.lock().extend(entries);
    }

    /// Evaluations remembered.
    pub fn len(&self) -> usize {
        self.lock().len()
    }

    /// Whether nothing is remembered.
    pub fn is_empty(&self) -> bool {
        self.lock().is_empty()
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<String, EvalReport>> {
        self.entries
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    /// The key of an evaluation.
    pub fn key(
        program: &Program,
        runtime: &Runtime,
        state: &ProgramState,
        examples: &[Example],
    ) -> String {
        let mut hasher = Sha256::new();
        hasher.update(
            serde_json::to_string(program)
                .unwrap_or_default()
                .as_bytes(),
        );
        hasher.update(runtime.lms.default_model().as_bytes());
        hasher.update(
            serde_json::to_string(&runtime.settings)
                .unwrap_or_default()
                .as_bytes(),
        );
        hasher.update(state.canonical_json().as_bytes());
        for example in examples {
            hasher.update(
                serde_json::to_string(example)
                    .unwrap_or_default()
                    .as_bytes(),
            );
            hasher.update(b"\n");
        }
        hex::encode(hasher.finalize())
    }

    /// The remembered report under a key.
    pub fn get(&self, key: &str) -> Option<EvalReport> {
        self.lock().get(key).cloned()
    }

    fn insert(&self, key: String, report: EvalReport) {
        if let Some(journal) = &self.journal {
            journal.record(&key, &report);
        }
        self.lock().insert(key, report);
    }
}

/// How an evaluation runs.
#[derive(Clone)]
pub struct EvalSettings {
    /// Examples in flight at once.
    pub concurrency: usize,
    /// Stop with [`CoreError::TooManyErrors`] once more examples than this have failed with an
    /// error (model errors, invalid inputs; replies that cannot be parsed and prompts too long
    /// for the model's context are scored failures, not errors). `None`: never stop.
    pub max_errors: Option<usize>,
    /// Whether per-example results keep their traces.
    pub keep_traces: bool,
    /// Where progress goes.
    pub events: Arc<dyn EventSink>,
    /// Remembered evaluations, when set.
    pub memo: Option<EvalMemo>,
}

impl std::fmt::Debug for EvalSettings {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("EvalSettings")
            .field("concurrency", &self.concurrency)
            .field("max_errors", &self.max_errors)
            .field("keep_traces", &self.keep_traces)
            .field("memo", &self.memo.is_some())
            .finish_non_exhaustive()
    }
}

impl Default for EvalSettings {
    fn default() -> Self {
        Self {
            concurrency: 16,
            max_errors: Some(10),
            keep_traces: true,
            events: Arc::new(NullSink),
            memo: None,
        }
    }
}

/// One example's outcome.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ExampleResult {
    /// Position in the evaluated examples.
    pub index: usize,
    /// The example's `id` field, when it has one.
    pub id: Option<String>,
    /// The prediction (empty after a parse failure), `None` after an error.
    pub prediction: Option<Prediction>,
    /// The metric's value (the worst value of its range after a failure; `NaN` when that is
    /// unbounded).
    pub score: f64,
    /// The score on a 0–1 scale, higher better (0 after a failure); the raw value for an
    /// unbounded metric.
    pub normalized: f64,
    /// The metric's feedback, or what went wrong.
    pub feedback: Option<String>,
    /// Why the reply could not be parsed, when it could not.
    pub parse_error: Option<String>,
    /// The error, when the run failed.
    pub error: Option<String>,
    /// Whether the run failed because its prompt did not fit the model's context.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub context_overflow: bool,
    /// Whether `error` may go away if the call is sent again later (the model server was
    /// unreachable, answered 5xx or timed out).
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub retryable_error: bool,
    /// The run's trace (empty when traces are not kept).
    pub trace: Trace,
}

/// An evaluation's outcome.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct EvalReport {
    /// The metric.
    pub metric: MetricInfo,
    /// The aggregate on a 0–1 scale, higher better (the raw aggregate for an unbounded metric).
    pub score: f64,
    /// The aggregate in the metric's own units: its corpus score, or the mean over examples.
    pub raw_score: f64,
    /// Whether the aggregate is the metric's corpus score.
    pub corpus: bool,
    /// Whether `score` is normalised (the metric has a finite range).
    pub normalized: bool,
    /// Examples evaluated.
    pub examples: usize,
    /// Examples whose reply could not be parsed.
    pub parse_failures: usize,
    /// Examples that failed with an error.
    pub errors: usize,
    /// Per example, in input order.
    pub results: Vec<ExampleResult>,
    /// Model time per example.
    pub latency: LatencySummary,
    /// Tokens used.
    pub usage: Usage,
    /// Cost in USD; `None` when any call's cost is unknown.
    pub cost_usd: Option<f64>,
    /// Model calls made.
    pub lm_calls: u64,
    /// Calls answered from the cache.
    pub cache_hits: u64,
    /// Wall time of the whole evaluation, in milliseconds.
    pub wall_ms: f64,
}

impl EvalReport {
    /// The report of an evaluation of no examples (score 0).
    pub fn empty(metric: MetricInfo) -> Self {
        Self {
            metric,
            score: 0.0,
            raw_score: 0.0,
            corpus: false,
            normalized: true,
            examples: 0,
            parse_failures: 0,
            errors: 0,
            results: Vec::new(),
            latency: LatencySummary::default(),
            usage: Usage::default(),
            cost_usd: None,
            lm_calls: 0,
            cache_hits: 0,
            wall_ms: 0.0,
        }
    }

    /// Per-example scores (0–1, higher better) in input order.
    pub fn subscores(&self) -> Vec<f64> {
        self.results.iter().map(|r| r.normalized).collect()
    }

    /// The `p`-th percentile (0–100, nearest rank) of per-example model latency in ms, over
    /// the examples that reached the model.
    pub fn latency_percentile_ms(&self, p: f64) -> Option<f64> {
        let mut ms: Vec<f64> = self
            .results
            .iter()
            .filter(|r| r.error.is_none())
            .map(|r| r.trace.latency().as_secs_f64() * 1000.0)
            .collect();
        percentile(&mut ms, p)
    }
}

/// Evaluates `state` of `program` on `examples` with `metric`.
///
/// Errors: [`CoreError::TooManyErrors`] when more than `settings.max_errors` examples fail
/// (the remaining runs are cancelled), [`CoreError::MissingPredictorState`] for an incomplete
/// state, the budget's refusal as soon as a call is refused, a failing metric's error.
pub async fn evaluate(
    program: &Program,
    state: &ProgramState,
    examples: &[Example],
    metric: &Arc<dyn Metric>,
    runtime: &Runtime,
    settings: &EvalSettings,
) -> Result<EvalReport, CoreError> {
    program.check_state(state)?;
    let key = settings
        .memo
        .as_ref()
        .map(|_| EvalMemo::key(program, runtime, state, examples));
    if let (Some(memo), Some(key)) = (&settings.memo, &key) {
        if let Some(report) = memo.get(key) {
            return Ok(report);
        }
    }
    let started = Instant::now();
    let info = metric.info();
    let total = examples.len();
    let events = settings.events.as_ref();
    let mut slots: Vec<Option<ExampleResult>> = vec![None; total];
    let mut errors = 0usize;
    let mut done = 0usize;
    let mut normalized_sum = 0.0;
    let info_ref = &info;
    // The stream maps indices, not borrowed examples, so its closure has no higher-ranked
    // lifetime in its argument and the evaluation stays `Send` inside `async_trait` methods.
    let mut runs = stream::iter(0..total)
        .map(|index| async move {
            let example = &examples[index];
            let output = program.run_traced(state, example, runtime).await;
            let result = score_one(
                info_ref,
                metric,
                index,
                example,
                output.result,
                output.trace,
            );
            (index, result.await)
        })
        .buffer_unordered(settings.concurrency.max(1));
    while let Some((index, result)) = runs.next().await {
        let result = result?;
        if result.error.is_some() && !result.context_overflow {
            errors += 1;
            if settings.max_errors.is_some_and(|max| errors > max) {
                return Err(CoreError::TooManyErrors {
                    errors,
                    max: settings.max_errors.unwrap_or_default(),
                    index,
                    last: result.error.unwrap_or_default(),
                    retryable: result.retryable_error,
                });
            }
        }
        done += 1;
        normalized_sum += result.normalized;
        events.emit(&Event::EvaluationProgress {
            done: done as u64,
            total: total as u64,
            score: normalized_sum / done as f64,
        });
        slots[index] = Some(result);
    }
    drop(runs);
    let mut results: Vec<ExampleResult> = slots.into_iter().flatten().collect();
    let report = summary::aggregate(
        info,
        metric.as_ref(),
        examples,
        &mut results,
        started.elapsed(),
    );
    if !settings.keep_traces {
        for result in &mut results {
            result.trace = Trace::default();
        }
    }
    let report = EvalReport { results, ..report };
    // An evaluation with calls that may succeed later (server down, 5xx) is not one to reuse.
    if let (Some(memo), Some(key)) = (&settings.memo, key) {
        if report.results.iter().all(|r| !r.retryable_error) {
            memo.insert(key, report.clone());
        }
    }
    Ok(report)
}

/// Scores one run. Errors are the run's budget refusal and the metric's failure, which stop
/// the evaluation; other run errors become a failed result.
async fn score_one(
    info: &MetricInfo,
    metric: &Arc<dyn Metric>,
    index: usize,
    example: &Example,
    result: Result<Prediction, CoreError>,
    trace: Trace,
) -> Result<ExampleResult, CoreError> {
    let worst = if info.higher_is_better {
        info.min
    } else {
        info.max
    };
    let failed_score = if worst.is_finite() { worst } else { f64::NAN };
    let mut outcome = ExampleResult {
        index,
        id: example.id(),
        prediction: None,
        score: failed_score,
        normalized: 0.0,
        feedback: None,
        parse_error: None,
        error: None,
        context_overflow: false,
        retryable_error: false,
        trace,
    };
    match result {
        Ok(prediction) => {
            let (score, prediction, trace) = score_off_runtime(
                metric,
                example,
                prediction,
                std::mem::take(&mut outcome.trace),
            )
            .await?;
            outcome.trace = trace;
            outcome.score = score.value;
            outcome.normalized = normalize(info, score.value);
            outcome.feedback = score.feedback;
            outcome.prediction = Some(prediction);
        }
        Err(CoreError::Parse {
            predictor,
            message,
            raw,
        }) => {
            outcome.feedback = Some(format!(
                "The reply of predictor `{predictor}` could not be parsed ({message}); it was: {raw}"
            ));
            outcome.parse_error = Some(message);
            outcome.prediction = Some(Prediction::default());
        }
        Err(error) if error.is_budget_exhausted() => return Err(error),
        Err(error) => {
            outcome.context_overflow = error.is_context_overflow();
            outcome.retryable_error = error.is_retryable();
            outcome.feedback = Some(error.to_string());
            outcome.error = Some(error.to_string());
        }
    }
    Ok(outcome)
}

/// Scores with the metric: inline when it is quick, on the blocking pool when it blocks (an
/// external command), so the runtime's workers keep running other examples. Returns the
/// prediction and trace it was given back with the score; a failing metric is an error.
pub async fn score_off_runtime(
    metric: &Arc<dyn Metric>,
    example: &Example,
    prediction: Prediction,
    trace: Trace,
) -> Result<(Score, Prediction, Trace), CoreError> {
    if !metric.is_blocking() {
        let score = metric.try_score(example, &prediction, &trace)?;
        return Ok((score, prediction, trace));
    }
    let metric = Arc::clone(metric);
    let example = example.clone();
    tokio::task::spawn_blocking(move || {
        let score = metric.try_score(&example, &prediction, &trace);
        score.map(|score| (score, prediction, trace))
    })
    .await
    .map_err(|e| CoreError::Invalid {
        what: "metric".to_string(),
        message: format!("The metric's scoring task failed: {e}"),
    })?
}

#[cfg(test)]
mod tests;
