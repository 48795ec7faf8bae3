//! Events: a run reports what it does as one stream of typed events.
//!
//! The evaluator, the optimizers and the pipeline emit [`Event`]s into an [`EventSink`]; the CLI
//! renders them as progress bars and the trajectory plot, tracking records them, a job queue
//! reports them as progress. Sinks fan out ([`FanOut`]) and never block the emitter.
//!
//! ```
//! use promptopt_core::events::{CollectSink, Event, EventSink, FanOut};
//! use std::sync::Arc;
//!
//! let collect = CollectSink::new();
//! let (channel, mut receiver) = promptopt_core::events::channel();
//! let sink = FanOut(vec![Arc::new(collect.clone()), Arc::new(channel)]);
//! sink.emit(&Event::Warning { message: "Slow model".into() });
//! assert_eq!(collect.events().len(), 1);
//! assert!(matches!(receiver.try_recv(), Ok(Event::Warning { .. })));
//! ```

use std::sync::{Arc, Mutex};

use serde::{Deserialize, Serialize};
use tokio::sync::mpsc;

/// Why a run stopped before its optimizer finished on its own.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum StopReason {
    /// The limit on model calls was reached.
    BudgetCalls,
    /// The limit on tokens was reached.
    BudgetTokens,
    /// The limit on cost was reached.
    BudgetCost,
    /// The deadline passed.
    Timeout,
    /// The limit on iterations was reached.
    MaxIterations,
    /// The run was cancelled (Ctrl-C, a stop file).
    Cancelled,
    /// The optimizer stopped because its score stopped improving.
    EarlyStopping,
}

impl StopReason {
    /// Every reason, in a fixed order.
    pub const ALL: [StopReason; 7] = [
        StopReason::BudgetCalls,
        StopReason::BudgetTokens,
        StopReason::BudgetCost,
        StopReason::Timeout,
        StopReason::MaxIterations,
        StopReason::Cancelled,
        StopReason::EarlyStopping,
    ];

    /// The name requests and results use.
    pub fn as_str(self) -> &'static str {
        match self {
            StopReason::BudgetCalls => "budget_calls",
            StopReason::BudgetTokens => "budget_tokens",
            StopReason::BudgetCost => "budget_cost",
            StopReason::Timeout => "timeout",
            StopReason::MaxIterations => "max_iterations",
            StopReason::Cancelled => "cancelled",
            StopReason::EarlyStopping => "early_stopping",
        }
    }

    /// A small number for the reason (1–7), for lock-free storage; 0 means none.
    pub fn code(self) -> u8 {
        match self {
            StopReason::BudgetCalls => 1,
            StopReason::BudgetTokens => 2,
            StopReason::BudgetCost => 3,
            StopReason::Timeout => 4,
            StopReason::MaxIterations => 5,
            StopReason::Cancelled => 6,
            StopReason::EarlyStopping => 7,
        }
    }

    /// The reason of a [`StopReason::code`].
    pub fn from_code(code: u8) -> Option<StopReason> {
        StopReason::ALL.into_iter().find(|r| r.code() == code)
    }
}

impl std::fmt::Display for StopReason {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

/// How thoroughly a trial was scored.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum TrialKind {
    /// On the whole validation set.
    Full,
    /// On a minibatch of it (not comparable with full scores).
    Minibatch,
}

/// One thing that happened during a run.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "event", rename_all = "snake_case")]
#[non_exhaustive]
pub enum Event {
    /// An optimization run started.
    RunStarted {
        /// The run's (model's) name.
        name: String,
        /// The algorithm.
        algorithm: String,
        /// The task model.
        model: String,
        /// The program's stages, in order.
        stages: Vec<String>,
    },
    /// A stage of the pipeline (or of an optimizer) started.
    StageStarted {
        /// Its name (`load`, `baseline`, `optimize`, `bootstrap`, `validate`, `save`, ...).
        stage: String,
        /// How many steps it will take, when known.
        total: Option<u64>,
    },
    /// Progress inside the current stage of an optimizer.
    StageProgress {
        /// The stage.
        stage: String,
        /// Steps done.
        done: u64,
        /// Steps in all, when known.
        total: Option<u64>,
    },
    /// Progress of an evaluation: one more example scored.
    EvaluationProgress {
        /// Examples scored.
        done: u64,
        /// Examples in all.
        total: u64,
        /// The running mean of the normalized scores.
        score: f64,
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
    /// A trial (a candidate's evaluation) started.
    TrialStarted {
        /// The trial number (from 1).
        trial: usize,
        /// Full or minibatch evaluation.
        kind: TrialKind,
    },
    /// A trial finished with its score.
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
    /// The whole run finished (after validation and saving).
    RunFinished {
        /// The saved model (`name@version`), when one was saved.
        model_id: Option<String>,
        /// The chosen program's validation score.
        score: f64,
        /// The baseline's validation score.
        baseline: f64,
        /// Wall time in seconds.
        seconds: f64,
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
        self.0
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .clone()
    }
}

impl EventSink for CollectSink {
    fn emit(&self, event: &Event) {
        self.0
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .push(event.clone());
    }
}

/// A sink that forwards every event to a closure.
pub struct FnSink<F>(pub F);

impl<F: Fn(&Event) + Send + Sync> EventSink for FnSink<F> {
    fn emit(&self, event: &Event) {
        (self.0)(event)
    }
}

/// A sink that forwards every event to several sinks, in order.
#[derive(Clone, Default)]
pub struct FanOut(pub Vec<Arc<dyn EventSink>>);

impl EventSink for FanOut {
    fn emit(&self, event: &Event) {
        for sink in &self.0 {
            sink.emit(event);
        }
    }
}

/// A sink that sends events into an unbounded channel (for a consumer on another task).
#[derive(Debug, Clone)]
pub struct ChannelSink(mpsc::UnboundedSender<Event>);

impl EventSink for ChannelSink {
    fn emit(&self, event: &Event) {
        // A closed receiver means nobody listens any more, which is fine.
        let _ = self.0.send(event.clone());
    }
}

/// A channel sink and its receiving end.
pub fn channel() -> (ChannelSink, mpsc::UnboundedReceiver<Event>) {
    let (sender, receiver) = mpsc::unbounded_channel();
    (ChannelSink(sender), receiver)
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]

    use super::*;

    #[test]
    fn fan_out_reaches_every_sink_and_events_serialize_tagged() {
        let a = CollectSink::new();
        let b = CollectSink::new();
        let sink = FanOut(vec![Arc::new(a.clone()), Arc::new(b.clone())]);
        sink.emit(&Event::NewBest {
            trial: 2,
            score: 0.5,
        });
        assert_eq!(a.events(), b.events());
        assert_eq!(a.events().len(), 1);
        let json = serde_json::to_string(&a.events()[0]).unwrap();
        assert_eq!(json, r#"{"event":"new_best","trial":2,"score":0.5}"#);
        NullSink.emit(&Event::Warning {
            message: "x".into(),
        });
    }

    #[test]
    fn stop_reason_codes_round_trip() {
        for reason in StopReason::ALL {
            assert_eq!(StopReason::from_code(reason.code()), Some(reason));
        }
        assert_eq!(StopReason::from_code(0), None);
    }
}
