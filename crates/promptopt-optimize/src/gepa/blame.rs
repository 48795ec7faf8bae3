//! Blame: which stage of a multi-stage program a reflective mutation should rewrite, read from
//! the traces of the parent's minibatch.
//!
//! For each example the parent did not get fully right, the blame goes to the first stage whose
//! reply could not be parsed; else to the first stage whose outputs no longer contain the
//! expected answer (the stage where the answer was lost, as an extractive flow reads it); else to
//! the last stage (the answer reached it and it still scored below perfect). Each example
//! weighs `1 - score`; the stage with the most blame is rewritten.

use std::collections::BTreeMap;

use promptopt_core::evaluate::EvalReport;
use promptopt_core::{value_to_text, Example};

/// The stage to blame, or `None` when no example of the minibatch fell short (or no trace
/// says anything).
pub(super) fn blamed_stage(
    report: &EvalReport,
    batch: &[Example],
    output_keys: &[String],
    stages: &[String],
) -> Option<String> {
    let mut blame: BTreeMap<&str, f64> = BTreeMap::new();
    for result in &report.results {
        let weight = 1.0 - result.normalized.clamp(0.0, 1.0);
        if weight <= 0.0 || result.trace.steps.is_empty() {
            continue;
        }
        let Some(example) = batch.get(result.index) else {
            continue;
        };
        let gold: Vec<String> = output_keys
            .iter()
            .filter_map(|k| example.get(k))
            .map(|v| value_to_text(v).trim().to_lowercase())
            .filter(|g| !g.is_empty())
            .collect();
        let steps = &result.trace.steps;
        let lost = |step: &promptopt_core::TraceStep| {
            let Some(outputs) = &step.outputs else {
                return true;
            };
            let text = outputs
                .fields()
                .iter()
                .filter(|(k, _)| k.as_str() != "reasoning")
                .map(|(_, v)| value_to_text(v).to_lowercase())
                .collect::<Vec<_>>()
                .join("\n");
            !gold.is_empty() && !gold.iter().all(|g| text.contains(g.as_str()))
        };
        let culprit = steps
            .iter()
            .find(|s| s.parse_error.is_some())
            .or_else(|| steps.iter().find(|s| lost(s)))
            .or(steps.last());
        if let Some(step) = culprit {
            *blame.entry(step.predictor.as_str()).or_default() += weight;
        }
    }
    // The most blamed stage; ties go to the earlier stage.
    let mut best: Option<(&String, f64)> = None;
    for stage in stages {
        let weight = blame.get(stage.as_str()).copied().unwrap_or(0.0);
        if weight > 0.0 && best.is_none_or(|(_, w)| weight > w) {
            best = Some((stage, weight));
        }
    }
    best.map(|(stage, _)| stage.clone())
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]

    use promptopt_core::evaluate::ExampleResult;
    use promptopt_core::{MetricInfo, Trace, TraceStep};
    use promptopt_lm::ChatRequest;

    use super::*;

    fn step(name: &str, output: Option<(&str, &str)>) -> TraceStep {
        TraceStep {
            predictor: name.into(),
            inputs: Example::new(),
            request: ChatRequest::new("m", vec![]),
            raw: String::new(),
            outputs: output.map(|(k, v)| Example::new().with(k, v)),
            parse_error: output.is_none().then(|| "no field".to_string()),
            usage: Default::default(),
            latency: Default::default(),
            cost_usd: None,
            cache_hit: false,
        }
    }

    fn result(index: usize, normalized: f64, steps: Vec<TraceStep>) -> ExampleResult {
        ExampleResult {
            index,
            id: None,
            prediction: None,
            score: normalized,
            normalized,
            feedback: None,
            parse_error: None,
            error: None,
            context_overflow: false,
            retryable_error: false,
            trace: Trace { steps },
        }
    }

    fn report(results: Vec<ExampleResult>) -> EvalReport {
        let mut report = EvalReport::empty(MetricInfo {
            name: "f1".into(),
            higher_is_better: true,
            min: 0.0,
            max: 1.0,
        });
        report.results = results;
        report
    }

    #[test]
    fn blames_the_stage_where_the_answer_was_lost() {
        let stages = vec!["evidence".to_string(), "answer".to_string()];
        let keys = vec!["answer".to_string()];
        let batch = vec![
            Example::new().with("answer", "Paris"),
            Example::new().with("answer", "Oslo"),
            Example::new().with("answer", "Rome"),
        ];
        // Example 0: the evidence holds the answer, the answer stage dropped it (weight 1).
        // Example 1: the evidence lost it (weight 0.5). Example 2: perfect, no blame.
        let r = report(vec![
            result(
                0,
                0.0,
                vec![
                    step("evidence", Some(("evidence", "Paris is the capital."))),
                    step("answer", Some(("answer", "London"))),
                ],
            ),
            result(
                1,
                0.5,
                vec![
                    step("evidence", Some(("evidence", "It is cold."))),
                    step("answer", Some(("answer", "cold"))),
                ],
            ),
            result(2, 1.0, vec![step("evidence", None)]),
        ]);
        assert_eq!(
            blamed_stage(&r, &batch, &keys, &stages).as_deref(),
            Some("answer")
        );
        // A reply that did not parse is blamed first.
        let r = report(vec![result(
            0,
            0.0,
            vec![
                step("evidence", None),
                step("answer", Some(("answer", "x"))),
            ],
        )]);
        assert_eq!(
            blamed_stage(&r, &batch, &keys, &stages).as_deref(),
            Some("evidence")
        );
        // Nothing fell short: no blame.
        let r = report(vec![result(
            2,
            1.0,
            vec![step("answer", Some(("answer", "Rome")))],
        )]);
        assert_eq!(blamed_stage(&r, &batch, &keys, &stages), None);
    }
}
