//! Helpers shared by the built-in metrics: reading fields, normalising text, feedback snippets.

use serde_json::Value;

use crate::{value_to_text, Example, MetricInfo, Prediction, Score};

/// Name, direction and range in one call.
pub(crate) fn info(name: &str, higher_is_better: bool, min: f64, max: f64) -> MetricInfo {
    MetricInfo {
        name: name.to_string(),
        higher_is_better,
        min,
        max,
    }
}

/// The texts of a gold value: each element of an array (nulls skipped), a SQuAD-style
/// `{"text": [...]}` object's texts, or the value itself as text.
pub(crate) fn texts_of(value: &Value) -> Vec<String> {
    match value {
        Value::Array(items) => items
            .iter()
            .filter(|v| !v.is_null())
            .flat_map(texts_of)
            .collect(),
        Value::Object(map) => match map.get("text") {
            Some(inner) => texts_of(inner),
            None => vec![value_to_text(value)],
        },
        Value::Null => Vec::new(),
        other => vec![value_to_text(other)],
    }
}

/// The gold value of `key`, or a zero score saying it is missing.
pub(crate) fn gold<'a>(example: &'a Example, key: &str, min: f64) -> Result<&'a Value, Score> {
    match example.get(key) {
        Some(value) if !value.is_null() => Ok(value),
        _ => Err(Score::with_feedback(
            min,
            format!("The example has no `{key}` field to compare with"),
        )),
    }
}

/// The predicted value of `key` as text, or a zero score saying it is missing.
pub(crate) fn predicted(prediction: &Prediction, key: &str, min: f64) -> Result<String, Score> {
    match prediction.outputs.get(key) {
        Some(value) if !value.is_null() => Ok(value_to_text(value)),
        _ => Err(Score::with_feedback(
            min,
            format!("The prediction has no `{key}` field"),
        )),
    }
}

/// Trimmed and lowercased, for label comparison.
pub(crate) fn normalize_label(text: &str) -> String {
    text.trim().to_lowercase()
}

/// Whitespace as Python's `str.isspace` defines it (Rust's set plus the four ASCII
/// information separators U+001C..U+001F), so tokenisers split exactly like their Python
/// references.
pub(crate) fn is_python_space(c: char) -> bool {
    c.is_whitespace() || ('\u{1c}'..='\u{1f}').contains(&c)
}

/// Python's `str.split()` with no arguments.
pub(crate) fn python_split(text: &str) -> impl Iterator<Item = &str> {
    text.split(is_python_space).filter(|t| !t.is_empty())
}

/// A text shortened to at most `max` characters for feedback, with an ellipsis when cut.
pub(crate) fn snippet(text: &str, max: usize) -> String {
    let trimmed = text.trim();
    if trimmed.chars().count() <= max {
        trimmed.to_string()
    } else {
        let cut: String = trimmed.chars().take(max).collect();
        format!("{cut}…")
    }
}

/// A list of words in backticks, at most `max` of them, for feedback.
pub(crate) fn word_list(words: &[String], max: usize) -> String {
    let mut shown: Vec<String> = words.iter().take(max).map(|w| format!("`{w}`")).collect();
    if words.len() > max {
        shown.push(format!("and {} more", words.len() - max));
    }
    shown.join(", ")
}

/// The F-measure of precision and recall as the reference scripts compute it.
pub(crate) fn fmeasure(precision: f64, recall: f64) -> f64 {
    if precision + recall > 0.0 {
        2.0 * precision * recall / (precision + recall)
    } else {
        0.0
    }
}
