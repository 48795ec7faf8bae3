//! Counters and histograms for `GET /metrics`, in Prometheus' text format.

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::time::{Duration, Instant};

use parking_lot::Mutex;
use promptopt_jobs::JobState;

/// Upper bounds of the latency buckets, in seconds.
const BUCKETS: [f64; 16] = [
    0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0,
    60.0,
];

#[derive(Debug, Clone, Default)]
struct Histogram {
    counts: [u64; BUCKETS.len()],
    sum: f64,
    count: u64,
}

impl Histogram {
    fn observe(&mut self, seconds: f64) {
        if let Some(i) = BUCKETS.iter().position(|b| seconds <= *b) {
            self.counts[i] += 1;
        }
        self.sum += seconds;
        self.count += 1;
    }

    fn render(&self, out: &mut String, name: &str, labels: &str) {
        let sep = if labels.is_empty() { "" } else { "," };
        let mut cumulative = 0;
        for (bound, count) in BUCKETS.iter().zip(self.counts) {
            cumulative += count;
            let _ = writeln!(
                out,
                "{name}_bucket{{{labels}{sep}le=\"{bound}\"}} {cumulative}"
            );
        }
        let _ = writeln!(
            out,
            "{name}_bucket{{{labels}{sep}le=\"+Inf\"}} {}",
            self.count
        );
        let _ = writeln!(out, "{name}_sum{{{labels}}} {}", self.sum);
        let _ = writeln!(out, "{name}_count{{{labels}}} {}", self.count);
    }
}

#[derive(Debug, Clone, Default)]
struct PredictionStats {
    predictions: u64,
    errors: u64,
    prompt_tokens: u64,
    completion_tokens: u64,
    cost_usd: f64,
    latency: Histogram,
}

#[derive(Debug, Default)]
struct Inner {
    requests: BTreeMap<(String, String, u16), u64>,
    latency: BTreeMap<String, Histogram>,
    predictions: BTreeMap<(String, String), PredictionStats>,
}

/// The server's counters.
#[derive(Debug)]
pub struct Metrics {
    inner: Mutex<Inner>,
    started: Instant,
}

impl Default for Metrics {
    fn default() -> Self {
        Self {
            inner: Mutex::new(Inner::default()),
            started: Instant::now(),
        }
    }
}

/// One prediction's figures, for [`Metrics::prediction`].
#[derive(Debug, Clone, Copy, Default)]
pub struct PredictionFigures {
    /// Whether it failed.
    pub failed: bool,
    /// Prompt tokens.
    pub prompt_tokens: u64,
    /// Completion tokens.
    pub completion_tokens: u64,
    /// Cost in USD.
    pub cost_usd: f64,
    /// Time taken.
    pub latency: Duration,
}

fn escape(value: &str) -> String {
    value
        .replace('\\', "\\\\")
        .replace('"', "\\\"")
        .replace('\n', "\\n")
}

impl Metrics {
    /// Counts a request to `route` (its template, e.g. `/v1/jobs/{id}`).
    pub fn request(&self, route: &str, method: &str, status: u16, elapsed: Duration) {
        let mut inner = self.inner.lock();
        *inner
            .requests
            .entry((route.to_string(), method.to_string(), status))
            .or_default() += 1;
        inner
            .latency
            .entry(route.to_string())
            .or_default()
            .observe(elapsed.as_secs_f64());
    }

    /// Counts a prediction by `model` at `version`.
    pub fn prediction(&self, model: &str, version: &str, figures: PredictionFigures) {
        let mut inner = self.inner.lock();
        let stats = inner
            .predictions
            .entry((model.to_string(), version.to_string()))
            .or_default();
        stats.predictions += 1;
        stats.errors += u64::from(figures.failed);
        stats.prompt_tokens += figures.prompt_tokens;
        stats.completion_tokens += figures.completion_tokens;
        stats.cost_usd += figures.cost_usd;
        stats.latency.observe(figures.latency.as_secs_f64());
    }

    /// Everything, in Prometheus' text format; `queue` is the queue's jobs by state (`None`
    /// when the queue did not answer) and `loaded` the programs held in memory.
    pub fn render(&self, queue: Option<&BTreeMap<JobState, u64>>, loaded: usize) -> String {
        let inner = self.inner.lock();
        let mut out = String::with_capacity(4096);
        out.push_str("# HELP promptopt_uptime_seconds Seconds since the server started.\n");
        out.push_str("# TYPE promptopt_uptime_seconds gauge\n");
        let _ = writeln!(
            out,
            "promptopt_uptime_seconds {}",
            self.started.elapsed().as_secs_f64()
        );
        out.push_str(
            "# HELP promptopt_http_requests_total HTTP requests by route, method and status.\n",
        );
        out.push_str("# TYPE promptopt_http_requests_total counter\n");
        for ((route, method, status), n) in &inner.requests {
            let _ = writeln!(
                out,
                "promptopt_http_requests_total{{route=\"{}\",method=\"{method}\",status=\"{status}\"}} {n}",
                escape(route)
            );
        }
        out.push_str(
            "# HELP promptopt_http_request_duration_seconds Time to answer a request, by route.\n",
        );
        out.push_str("# TYPE promptopt_http_request_duration_seconds histogram\n");
        for (route, histogram) in &inner.latency {
            let labels = format!("route=\"{}\"", escape(route));
            histogram.render(&mut out, "promptopt_http_request_duration_seconds", &labels);
        }
        let series: [(&str, &str, &str); 5] = [
            (
                "promptopt_predictions_total",
                "counter",
                "Predictions by model and version.",
            ),
            (
                "promptopt_prediction_errors_total",
                "counter",
                "Predictions that failed.",
            ),
            (
                "promptopt_prediction_prompt_tokens_total",
                "counter",
                "Prompt tokens spent on predictions.",
            ),
            (
                "promptopt_prediction_completion_tokens_total",
                "counter",
                "Completion tokens generated for predictions.",
            ),
            (
                "promptopt_prediction_cost_usd_total",
                "counter",
                "Cost of predictions in USD.",
            ),
        ];
        for (i, (name, kind, help)) in series.iter().enumerate() {
            let _ = writeln!(out, "# HELP {name} {help}\n# TYPE {name} {kind}");
            for ((model, version), s) in &inner.predictions {
                let value = match i {
                    0 => s.predictions.to_string(),
                    1 => s.errors.to_string(),
                    2 => s.prompt_tokens.to_string(),
                    3 => s.completion_tokens.to_string(),
                    _ => s.cost_usd.to_string(),
                };
                let _ = writeln!(
                    out,
                    "{name}{{model=\"{}\",version=\"{}\"}} {value}",
                    escape(model),
                    escape(version)
                );
            }
        }
        out.push_str(
            "# HELP promptopt_prediction_duration_seconds Time to predict, by model and version.\n",
        );
        out.push_str("# TYPE promptopt_prediction_duration_seconds histogram\n");
        for ((model, version), s) in &inner.predictions {
            let labels = format!(
                "model=\"{}\",version=\"{}\"",
                escape(model),
                escape(version)
            );
            s.latency
                .render(&mut out, "promptopt_prediction_duration_seconds", &labels);
        }
        out.push_str("# HELP promptopt_models_loaded Saved model versions held in memory.\n");
        out.push_str("# TYPE promptopt_models_loaded gauge\n");
        let _ = writeln!(out, "promptopt_models_loaded {loaded}");
        out.push_str("# HELP promptopt_queue_up Whether the job queue answered.\n");
        out.push_str("# TYPE promptopt_queue_up gauge\n");
        let _ = writeln!(out, "promptopt_queue_up {}", u8::from(queue.is_some()));
        out.push_str("# HELP promptopt_queue_jobs Jobs in the queue by state.\n");
        out.push_str("# TYPE promptopt_queue_jobs gauge\n");
        if let Some(counts) = queue {
            for (state, n) in counts {
                let _ = writeln!(out, "promptopt_queue_jobs{{state=\"{state}\"}} {n}");
            }
        }
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn counters_and_histograms_render_in_prometheus_text() {
        let metrics = Metrics::default();
        metrics.request("/v1/jobs/{id}", "GET", 200, Duration::from_millis(3));
        metrics.request("/v1/jobs/{id}", "GET", 200, Duration::from_millis(30));
        metrics.prediction(
            "sst2",
            "1.0.0",
            PredictionFigures {
                prompt_tokens: 10,
                completion_tokens: 2,
                cost_usd: 0.5,
                latency: Duration::from_millis(4),
                ..PredictionFigures::default()
            },
        );
        let mut counts = BTreeMap::new();
        counts.insert(JobState::Queued, 3);
        let text = metrics.render(Some(&counts), 1);
        assert!(text.contains(
            "promptopt_http_requests_total{route=\"/v1/jobs/{id}\",method=\"GET\",status=\"200\"} 2"
        ));
        assert!(text.contains(
            "promptopt_http_request_duration_seconds_bucket{route=\"/v1/jobs/{id}\",le=\"0.005\"} 1"
        ));
        assert!(text.contains(
            "promptopt_http_request_duration_seconds_bucket{route=\"/v1/jobs/{id}\",le=\"+Inf\"} 2"
        ));
        assert!(text.contains(
            "promptopt_prediction_prompt_tokens_total{model=\"sst2\",version=\"1.0.0\"} 10"
        ));
        assert!(text
            .contains("promptopt_prediction_cost_usd_total{model=\"sst2\",version=\"1.0.0\"} 0.5"));
        assert!(text.contains("promptopt_queue_jobs{state=\"queued\"} 3"));
        assert!(text.contains("promptopt_queue_up 1"));
    }
}
