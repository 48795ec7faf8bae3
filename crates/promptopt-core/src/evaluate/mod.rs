//! The evaluator: a program state scored over examples, concurrently.
//!
//! [`evaluate`] runs `(program, state)` on every example with bounded concurrency, scores each
//! prediction with the metric and aggregates: the score on a 0–1 scale, latency percentiles,
//! tokens, cost, cache hits, parse failures and errors. Results come back in input order and do
//! not depend on completion order, so a rerun with a warm cache gives the same report.

use std::time::Instant;

use futures::stream::{self, StreamExt};
use promptopt_lm::Usage;
use serde::{Deserialize, Serialize};

use crate::events::{Event, EventSink};
use crate::program::{Program, Runtime};
use crate::{CoreError, Example, Metric, MetricInfo, Prediction, ProgramState, Trace};

mod summary;

pub use summary::{normalize, LatencySummary};

/// How an evaluation runs.
#[derive(Debug, Clone)]
pub struct EvalSettings {
    /// Examples in flight at once.
    pub concurrency: usize,
    /// Stop with [`CoreError::TooManyErrors`] once more examples than this have failed with an
    /// error (model errors, invalid inputs; replies that cannot be parsed are scored failures,
    /// not errors). `None`: never stop.
    pub max_errors: Option<usize>,
    /// Whether per-example results keep their traces.
    pub keep_traces: bool,
    /// Where progress goes.
    pub events: EventSink,
}

impl Default for EvalSettings {
    fn default() -> Self {
        Self {
            concurrency: 16,
            max_errors: Some(10),
            keep_traces: true,
            events: EventSink::none(),
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

/// Evaluates `state` of `program` on `examples` with `metric`.
///
/// Errors: [`CoreError::TooManyErrors`] when more than `settings.max_errors` examples fail
/// (the remaining runs are cancelled), [`CoreError::MissingPredictorState`] for an incomplete
/// state.
pub async fn evaluate(
    program: &Program,
    state: &ProgramState,
    examples: &[Example],
    metric: &dyn Metric,
    runtime: &Runtime,
    settings: &EvalSettings,
) -> Result<EvalReport, CoreError> {
    program.check_state(state)?;
    let started = Instant::now();
    let info = metric.info();
    let total = examples.len();
    let events = &settings.events;
    events.emit(Event::StageStarted {
        stage: "evaluate".to_string(),
        total: Some(total as u64),
    });
    let mut slots: Vec<Option<ExampleResult>> = vec![None; total];
    let mut errors = 0usize;
    let mut done = 0usize;
    let mut normalized_sum = 0.0;
    let mut runs = stream::iter(examples.iter().enumerate())
        .map(|(index, example)| async move {
            (index, program.run_traced(state, example, runtime).await)
        })
        .buffer_unordered(settings.concurrency.max(1));
    while let Some((index, output)) = runs.next().await {
        let example = &examples[index];
        let result = score_one(&info, metric, index, example, output.result, output.trace);
        if let Some(error) = &result.error {
            errors += 1;
            if settings.max_errors.is_some_and(|max| errors > max) {
                return Err(CoreError::TooManyErrors {
                    errors,
                    max: settings.max_errors.unwrap_or_default(),
                    index,
                    last: error.clone(),
                });
            }
        }
        done += 1;
        normalized_sum += result.normalized;
        if events.is_connected() {
            events.emit(Event::Progress {
                done: done as u64,
                total: total as u64,
                score: Some(normalized_sum / done as f64),
            });
        }
        slots[index] = Some(result);
    }
    drop(runs);
    let mut results: Vec<ExampleResult> = slots.into_iter().flatten().collect();
    let report = summary::aggregate(info, metric, examples, &mut results, started.elapsed());
    if !settings.keep_traces {
        for result in &mut results {
            result.trace = Trace::default();
        }
    }
    let report = EvalReport { results, ..report };
    events.emit(Event::Finished {
        score: Some(report.score),
        reason: "completed".to_string(),
    });
    Ok(report)
}

fn score_one(
    info: &MetricInfo,
    metric: &dyn Metric,
    index: usize,
    example: &Example,
    result: Result<Prediction, CoreError>,
    trace: Trace,
) -> ExampleResult {
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
        trace,
    };
    match result {
        Ok(prediction) => {
            let score = score_blocking_aware(metric, example, &prediction, &outcome.trace);
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
        Err(error) => {
            outcome.error = Some(error.to_string());
        }
    }
    outcome
}

/// Scores with the metric; a blocking metric (an external command) runs under
/// `block_in_place` on a multi-threaded runtime so other runs keep going (on a current-thread
/// runtime there is no other thread to hand the work to, and it runs inline).
fn score_blocking_aware(
    metric: &dyn Metric,
    example: &Example,
    prediction: &Prediction,
    trace: &Trace,
) -> crate::Score {
    let multi_thread = tokio::runtime::Handle::try_current()
        .is_ok_and(|h| h.runtime_flavor() == tokio::runtime::RuntimeFlavor::MultiThread);
    if metric.is_blocking() && multi_thread {
        tokio::task::block_in_place(|| metric.score(example, prediction, trace))
    } else {
        metric.score(example, prediction, trace)
    }
}

#[cfg(test)]
mod tests;
