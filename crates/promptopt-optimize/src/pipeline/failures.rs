//! Warnings about validation examples whose program run failed.
//!
//! An evaluation scores a failed run (a prompt too long for the context, errors within
//! `max_errors`) as the worst score and goes on; the result says how many failed and why, so a
//! low score is not mistaken for the model's answers.

use crate::EvalReport;

/// The warning for `report` of the `program` (`starting`, `optimized`) on the validation set:
/// how many examples failed and the first error; `None` when none failed.
pub(super) fn failed_examples_warning(program: &str, report: &EvalReport) -> Option<String> {
    let failed = report.errors;
    let first = report.results.iter().find_map(|r| r.error.as_deref())?;
    Some(format!(
        "{failed} of {} validation examples failed with the {program} program and scored as wrong; the first: {first}",
        report.results.len()
    ))
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;
    use crate::ExampleResult;
    use promptopt_core::{MetricInfo, Trace};

    fn result(index: usize, error: Option<&str>) -> ExampleResult {
        ExampleResult {
            index,
            id: None,
            prediction: None,
            score: 0.0,
            normalized: 0.0,
            feedback: None,
            parse_error: None,
            error: error.map(str::to_string),
            context_overflow: false,
            retryable_error: false,
            trace: Trace::default(),
        }
    }

    fn report(results: Vec<ExampleResult>) -> EvalReport {
        let mut report = EvalReport::empty(MetricInfo {
            name: "accuracy".into(),
            higher_is_better: true,
            min: 0.0,
            max: 1.0,
        });
        report.errors = results.iter().filter(|r| r.error.is_some()).count();
        report.examples = results.len();
        report.results = results;
        report
    }

    #[test]
    fn counts_failures_and_names_the_first() {
        let failed = report(vec![
            result(0, None),
            result(1, Some("too long")),
            result(2, Some("x")),
        ]);
        assert_eq!(
            failed_examples_warning("optimized", &failed).unwrap(),
            "2 of 3 validation examples failed with the optimized program and scored as wrong; the first: too long"
        );
        assert_eq!(
            failed_examples_warning("starting", &report(vec![result(0, None)])),
            None
        );
    }
}
