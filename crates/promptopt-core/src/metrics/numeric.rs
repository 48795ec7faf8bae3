//! Numeric answers: the final number of the prediction against the final number of the gold.

use super::common::{gold, info, predicted, snippet};
use crate::{value_to_text, Example, Metric, MetricInfo, Prediction, Score, Trace};

/// The numbers in a text, in order, as `f64`.
///
/// A number is a run of digits with optional thousands separators (a comma followed by exactly
/// three digits: `1,234,567`) and an optional decimal part (`.5`, `3.25`); it may start with a
/// decimal point (`.5`). A `-` or `+` directly before it, or before a `$` that directly
/// precedes it, is its sign unless that sign follows a letter or digit (`5-3` holds `5` and `3`).
/// Currency signs, percent signs and a sentence's final period are not part of it.
pub fn extract_numbers(text: &str) -> Vec<f64> {
    let chars: Vec<char> = text.chars().collect();
    let mut numbers = Vec::new();
    let mut i = 0;
    while i < chars.len() {
        let starts_digit = chars[i].is_ascii_digit();
        let starts_point = chars[i] == '.' && chars.get(i + 1).is_some_and(|c| c.is_ascii_digit());
        if !(starts_digit || starts_point) {
            i += 1;
            continue;
        }
        // The sign, looking back over an optional `$`.
        let mut negative = false;
        let mut back = i;
        if back > 0 && chars[back - 1] == '$' {
            back -= 1;
        }
        if back > 0 && matches!(chars[back - 1], '-' | '+' | '−') {
            let before_sign = if back >= 2 {
                Some(chars[back - 2])
            } else {
                None
            };
            if !before_sign.is_some_and(char::is_alphanumeric) {
                negative = chars[back - 1] != '+';
            }
        }
        let mut digits = String::new();
        let mut j = i;
        // Integer part with thousands separators.
        while j < chars.len() {
            let c = chars[j];
            if c.is_ascii_digit() {
                digits.push(c);
                j += 1;
            } else if c == ','
                && !digits.is_empty()
                && j + 3 < chars.len()
                && chars[j + 1..=j + 3].iter().all(char::is_ascii_digit)
                && !chars.get(j + 4).is_some_and(char::is_ascii_digit)
            {
                j += 1;
            } else {
                break;
            }
        }
        // Decimal part.
        if j + 1 < chars.len() && chars[j] == '.' && chars[j + 1].is_ascii_digit() {
            digits.push('.');
            j += 1;
            while j < chars.len() && chars[j].is_ascii_digit() {
                digits.push(chars[j]);
                j += 1;
            }
        }
        if let Ok(value) = digits.parse::<f64>() {
            numbers.push(if negative { -value } else { value });
        }
        i = j.max(i + 1);
    }
    numbers
}

/// The last number in a text.
pub fn final_number(text: &str) -> Option<f64> {
    extract_numbers(text).pop()
}

/// Whether two numbers are equal up to rounding noise (relative 1e-9).
pub fn numbers_equal(a: f64, b: f64) -> bool {
    (a - b).abs() <= 1e-9 * a.abs().max(b.abs()).max(1.0)
}

fn show(n: f64) -> String {
    if n.fract() == 0.0 && n.abs() < 1e15 {
        format!("{}", n as i64)
    } else {
        format!("{n}")
    }
}

/// 1 when the final number of the prediction equals the final number of the gold answer.
#[derive(Debug, Clone)]
pub struct NumericMatch {
    output_key: String,
}

impl NumericMatch {
    /// Compares the field `output_key`.
    pub fn new(output_key: impl Into<String>) -> Self {
        Self {
            output_key: output_key.into(),
        }
    }
}

impl Metric for NumericMatch {
    fn info(&self) -> MetricInfo {
        info("numeric_match", true, 0.0, 1.0)
    }

    fn score(&self, example: &Example, prediction: &Prediction, _trace: &Trace) -> Score {
        let key = self.output_key.as_str();
        let gold_text = match gold(example, key, 0.0) {
            Ok(value) => value_to_text(value),
            Err(score) => return score,
        };
        let Some(expected) = final_number(&gold_text) else {
            return Score::with_feedback(
                0.0,
                format!(
                    "The example's `{key}` holds no number: `{}`",
                    snippet(&gold_text, 100)
                ),
            );
        };
        let got = match predicted(prediction, key, 0.0) {
            Ok(text) => text,
            Err(_) => {
                return Score::with_feedback(
                    0.0,
                    format!(
                        "Expected {}, but the prediction has no `{key}` field",
                        show(expected)
                    ),
                )
            }
        };
        match final_number(&got) {
            Some(value) if numbers_equal(value, expected) => {
                Score::with_feedback(1.0, format!("Correct: {}", show(expected)))
            }
            Some(value) => Score::with_feedback(
                0.0,
                format!("Expected {}, got {}", show(expected), show(value)),
            ),
            None => Score::with_feedback(
                0.0,
                format!(
                    "Expected {}, but the output holds no number: `{}`",
                    show(expected),
                    snippet(&got, 200)
                ),
            ),
        }
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]

    use super::*;

    #[test]
    fn extracts_numbers() {
        assert_eq!(
            extract_numbers("He paid $1,234.50 for 3 items."),
            [1234.5, 3.0]
        );
        assert_eq!(final_number("The answer is -42."), Some(-42.0));
        assert_eq!(final_number("so -$5 each"), Some(-5.0));
        assert_eq!(final_number("5-3"), Some(3.0));
        assert_eq!(final_number("x = +7"), Some(7.0));
        assert_eq!(final_number("about .5 of it"), Some(0.5));
        assert_eq!(final_number("list 1,2,3"), Some(3.0));
        assert_eq!(final_number("1,000,000 people"), Some(1_000_000.0));
        assert_eq!(final_number("12,34"), Some(34.0));
        assert_eq!(final_number("#### 72"), Some(72.0));
        assert_eq!(final_number("50%"), Some(50.0));
        assert_eq!(final_number("no numbers here"), None);
        assert_eq!(final_number("version 3.0."), Some(3.0));
    }

    #[test]
    fn matches_and_explains() {
        let metric = NumericMatch::new("answer");
        let example = Example::new().with("answer", "1,200");
        let ok = Prediction {
            outputs: Example::new().with("answer", "So the total is $1200.00"),
        };
        assert_eq!(metric.score(&example, &ok, &Trace::default()).value, 1.0);
        let wrong = Prediction {
            outputs: Example::new().with("answer", "I think 1100, not 12"),
        };
        let s = metric.score(&example, &wrong, &Trace::default());
        assert_eq!(s.value, 0.0);
        assert_eq!(s.feedback.unwrap(), "Expected 1200, got 12");
        let numeric_gold = Example::new().with("answer", 18);
        let p = Prediction {
            outputs: Example::new().with("answer", "18"),
        };
        assert_eq!(
            metric.score(&numeric_gold, &p, &Trace::default()).value,
            1.0
        );
    }
}
