//! Predictions and traces: what a program run produced and how.

use std::time::Duration;

use promptopt_lm::{ChatRequest, Usage};
use serde::{Deserialize, Serialize};

use crate::Example;

/// One predictor call inside a program run.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct TraceStep {
    /// The predictor's name.
    pub predictor: String,
    /// The inputs it was given.
    pub inputs: Example,
    /// The request sent to the model.
    pub request: ChatRequest,
    /// The model's raw reply text.
    pub raw: String,
    /// The parsed outputs (with `reasoning` for chain of thought), when the reply could be parsed.
    pub outputs: Option<Example>,
    /// Why the reply could not be parsed, when it could not.
    pub parse_error: Option<String>,
    /// Token counts.
    pub usage: Usage,
    /// Wall time of the model call.
    #[serde(with = "duration_ms")]
    pub latency: Duration,
    /// Cost in USD, `None` when unknown.
    pub cost_usd: Option<f64>,
    /// Whether the reply came from the cache.
    pub cache_hit: bool,
}

/// Every predictor call of one program run, in order.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct Trace {
    /// The calls.
    pub steps: Vec<TraceStep>,
}

impl Trace {
    /// Total token usage.
    pub fn usage(&self) -> Usage {
        let mut total = Usage::default();
        for step in &self.steps {
            total += step.usage;
        }
        total
    }

    /// Total model wall time.
    pub fn latency(&self) -> Duration {
        self.steps.iter().map(|s| s.latency).sum()
    }

    /// Total cost, `None` if any call's cost is unknown.
    pub fn cost_usd(&self) -> Option<f64> {
        self.steps.iter().map(|s| s.cost_usd).sum()
    }

    /// Whether any step failed to parse.
    pub fn has_parse_failure(&self) -> bool {
        self.steps.iter().any(|s| s.parse_error.is_some())
    }
}

/// What a program returned: its output fields.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct Prediction {
    /// The output fields (and `reasoning` when the last predictor reasoned).
    pub outputs: Example,
}

impl Prediction {
    /// An output field as text.
    pub fn text(&self, name: &str) -> Option<String> {
        self.outputs.text(name)
    }
}

mod duration_ms {
    use std::time::Duration;

    use serde::{Deserialize, Deserializer, Serializer};

    pub fn serialize<S: Serializer>(d: &Duration, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_f64(d.as_secs_f64() * 1000.0)
    }

    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Duration, D::Error> {
        let ms = f64::deserialize(d)?;
        Ok(Duration::from_secs_f64((ms / 1000.0).max(0.0)))
    }
}
