//! Events of an optimization run: what happened, as it happens.
//!
//! Optimizers and the pipeline emit [`Event`]s into an [`EventSink`]; the command line renders
//! them as progress bars, tracking can log them, a job queue can report them as progress.

use std::sync::Arc;

use parking_lot::Mutex;
use serde::{Deserialize, Serialize};

use crate::{StopReason, TrialKind};

/// One thing that happened during a run.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "event", rename_all = "snake_case")]
#[non_exhaustive]
pub enum Event {
    /// A stage of the pipeline (or of an optimizer) started.
    StageStarted {
        /// Its name (`load`, `baseline`, `optimize`, `bootstrap`, `validate`, `save`, ...).
        stage: String,
        /// How many steps it will take, when known.
        total: Option<u64>,
    },
    /// Progress inside the current stage.
    StageProgress {
        /// The stage.
        stage: String,
        /// Steps done.
        done: u64,
        /// Steps in all, when known.
        total: Option<u64>,
    },
    /// A stage finished.
    StageFinished {
        /// The stage.
        stage: String,
        /// Its wall time in seconds.
        seconds: f64,
    },
    /// An optimizer proposed a candidate.
    CandidateProposed {
        /// The candidate's index in the optimizer's candidate list.
        candidate: usize,
        /// What it is, in a few words.
        description: String,
    },
    /// A candidate was scored.
    TrialScored {
        /// The trial number (from 1).
        trial: usize,
        /// Its score.
        score: f64,
        /// The best full-evaluation score so far.
        best_so_far: f64,
        /// Full or minibatch evaluation.
        kind: TrialKind,
    },
    /// A new best candidate.
    NewBest {
        /// The trial that found it.
        trial: usize,
        /// Its score.
        score: f64,
    },
    /// What the run has spent so far.
    BudgetSpent {
        /// Model calls.
        lm_calls: u64,
        /// Tokens.
        tokens: u64,
        /// Known cost in USD.
        cost_usd: f64,
    },
    /// A GEPA iteration finished.
    GepaIteration {
        /// The iteration (from 1).
        iteration: u64,
        /// `reflection`, `merge` or `skip`.
        kind: String,
        /// The parent candidate(s).
        parents: Vec<usize>,
        /// The predictors whose instructions were rewritten.
        predictors: Vec<String>,
        /// The parent's score sum on the minibatch (merge: both parents' sums on the subsample).
        parent_score: f64,
        /// The proposal's score sum on the same examples.
        child_score: f64,
        /// Whether the proposal joined the pool.
        accepted: bool,
        /// The new candidate's id, when accepted.
        candidate: Option<usize>,
        /// Distinct candidates on the Pareto frontier.
        frontier_size: usize,
        /// Metric calls used so far.
        metric_calls: u64,
    },
    /// Something the user should know.
    Warning {
        /// The message.
        message: String,
    },
    /// The optimizer finished.
    Finished {
        /// The best score.
        best_score: f64,
        /// Why it stopped early, if it did.
        stop_reason: Option<StopReason>,
    },
}

/// Receives events. Implementations must be cheap and must not block.
pub trait EventSink: Send + Sync {
    /// Handles one event.
    fn emit(&self, event: &Event);
}

/// A sink that drops every event.
#[derive(Debug, Clone, Copy, Default)]
pub struct NullSink;

impl EventSink for NullSink {
    fn emit(&self, _event: &Event) {}
}

/// A sink that keeps every event in memory (for tests and analytics).
#[derive(Debug, Clone, Default)]
pub struct CollectSink(Arc<Mutex<Vec<Event>>>);

impl CollectSink {
    /// An empty sink.
    pub fn new() -> Self {
        Self::default()
    }

    /// The events received so far.
    pub fn events(&self) -> Vec<Event> {
        self.0.lock().clone()
    }
}

impl EventSink for CollectSink {
    fn emit(&self, event: &Event) {
        self.0.lock().push(event.clone());
    }
}

/// A sink that forwards every event to a closure.
pub struct FnSink<F>(pub F);

impl<F: Fn(&Event) + Send + Sync> EventSink for FnSink<F> {
    fn emit(&self, event: &Event) {
        (self.0)(event)
    }
}

/// A sink that forwards every event to several sinks.
#[derive(Clone, Default)]
pub struct FanOut(pub Vec<Arc<dyn EventSink>>);

impl EventSink for FanOut {
    fn emit(&self, event: &Event) {
        for sink in &self.0 {
            sink.emit(event);
        }
    }
}
