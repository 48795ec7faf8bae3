//! Events: a run reports what it does as a stream of typed events.
//!
//! The evaluator, the optimizers and the pipeline emit [`Event`]s into an [`EventSink`]; the CLI
//! renders them as progress bars, tracking logs them, a job queue reports them as progress.
//!
//! ```
//! use promptopt_core::events::{Event, EventSink};
//!
//! let (sink, mut receiver) = EventSink::channel();
//! sink.emit(Event::Warning { message: "Slow model".into() });
//! assert!(matches!(receiver.try_recv(), Ok(Event::Warning { .. })));
//! ```

use std::sync::Arc;

use serde::{Deserialize, Serialize};
use tokio::sync::mpsc;

/// Something that happened during a run.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "event", rename_all = "snake_case")]
#[non_exhaustive]
pub enum Event {
    /// A stage began (`evaluate`, `baseline`, `bootstrap`, `propose`, `search`, `validate`).
    StageStarted {
        /// The stage's name.
        stage: String,
        /// How many units of work it has (examples, trials), when known.
        total: Option<u64>,
    },
    /// Progress within the current stage.
    Progress {
        /// Units done.
        done: u64,
        /// Units in all.
        total: u64,
        /// The running score (0–1) over the units done, when there is one.
        score: Option<f64>,
    },
    /// A candidate state was scored.
    TrialScored {
        /// The trial's number, from 0.
        trial: u64,
        /// Its score (0–1).
        score: f64,
        /// How many examples it was scored on.
        examples: u64,
        /// Whether the score is over the full validation set (not a minibatch).
        full: bool,
    },
    /// A new best candidate.
    NewBest {
        /// The trial that produced it.
        trial: u64,
        /// Its score (0–1).
        score: f64,
    },
    /// Budget spent so far.
    BudgetSpent {
        /// LM calls made.
        calls: u64,
        /// Tokens used.
        tokens: u64,
        /// Cost in USD, when known.
        cost_usd: Option<f64>,
    },
    /// Something the user should know that does not stop the run.
    Warning {
        /// What happened.
        message: String,
    },
    /// The run (or stage) ended.
    Finished {
        /// The final score (0–1), when there is one.
        score: Option<f64>,
        /// Why it ended (`completed`, `budget exhausted`, ...).
        reason: String,
    },
}

type Callback = dyn Fn(Event) + Send + Sync;

/// Where events go: nowhere, a callback or a channel. Cheap to clone; emitting never blocks.
#[derive(Clone, Default)]
pub struct EventSink {
    callback: Option<Arc<Callback>>,
}

impl std::fmt::Debug for EventSink {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("EventSink")
            .field("connected", &self.callback.is_some())
            .finish()
    }
}

impl EventSink {
    /// A sink that drops every event.
    pub fn none() -> Self {
        Self::default()
    }

    /// A sink that calls `callback` for each event (on the emitting task: keep it quick).
    pub fn from_fn(callback: impl Fn(Event) + Send + Sync + 'static) -> Self {
        Self {
            callback: Some(Arc::new(callback)),
        }
    }

    /// A sink that sends events to an unbounded channel, and the receiving end.
    pub fn channel() -> (Self, mpsc::UnboundedReceiver<Event>) {
        let (sender, receiver) = mpsc::unbounded_channel();
        let sink = Self::from_fn(move |event| {
            // A closed receiver means nobody listens any more, which is fine.
            let _ = sender.send(event);
        });
        (sink, receiver)
    }

    /// Whether events go anywhere (lets emitters skip building them).
    pub fn is_connected(&self) -> bool {
        self.callback.is_some()
    }

    /// Emits an event.
    pub fn emit(&self, event: Event) {
        if let Some(callback) = &self.callback {
            callback(event);
        }
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]

    use std::sync::Mutex;

    use super::*;

    #[test]
    fn callbacks_receive_events_and_events_serialize_tagged() {
        let seen = Arc::new(Mutex::new(Vec::new()));
        let store = Arc::clone(&seen);
        let sink = EventSink::from_fn(move |e| store.lock().unwrap().push(e));
        sink.emit(Event::NewBest {
            trial: 2,
            score: 0.5,
        });
        assert_eq!(seen.lock().unwrap().len(), 1);
        let json = serde_json::to_string(&Event::NewBest {
            trial: 2,
            score: 0.5,
        })
        .unwrap();
        assert_eq!(json, r#"{"event":"new_best","trial":2,"score":0.5}"#);
        EventSink::none().emit(Event::Warning {
            message: "x".into(),
        });
        assert!(!EventSink::none().is_connected());
    }
}
