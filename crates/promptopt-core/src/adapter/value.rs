//! Tolerant conversion of reply text (or JSON values) into typed field values.
//!
//! Small models rarely answer cleanly: a label comes wrapped in a sentence, a number with a unit,
//! a boolean as "Yes.". These functions recover the value when it is unambiguous and say why when
//! it is not.

use serde_json::{Map, Value};

use crate::{Field, FieldType};

/// Converts reply text into a value of the field's type.
pub(crate) fn parse_text(field: &Field, text: &str) -> Result<Value, String> {
    let text = text.trim();
    match &field.ty {
        FieldType::Text => Ok(Value::String(text.to_string())),
        FieldType::Label { allowed } => match_label(allowed, text)
            .map(|label| Value::String(label.to_string()))
            .ok_or_else(|| {
                format!(
                    "`{}` is none of the allowed values {}",
                    excerpt(text),
                    allowed.join(", ")
                )
            }),
        FieldType::Integer => {
            let number = extract_number(text)
                .ok_or_else(|| format!("`{}` holds no number", excerpt(text)))?;
            integer_value(number)
                .ok_or_else(|| format!("`{}` is not a whole number", excerpt(text)))
        }
        FieldType::Number => extract_number(text)
            .and_then(number_value)
            .ok_or_else(|| format!("`{}` holds no number", excerpt(text))),
        FieldType::Bool => parse_bool(text)
            .map(Value::Bool)
            .ok_or_else(|| format!("`{}` is neither yes/true nor no/false", excerpt(text))),
        FieldType::List => Ok(parse_list(text)),
        FieldType::Json => {
            extract_json(text).ok_or_else(|| format!("`{}` holds no JSON value", excerpt(text)))
        }
    }
}

/// Converts a JSON value (from a JSON reply) into a value of the field's type.
pub(crate) fn parse_json_value(field: &Field, value: &Value) -> Result<Value, String> {
    match (&field.ty, value) {
        (FieldType::Json, v) => Ok(v.clone()),
        (FieldType::Text, Value::String(s)) => Ok(Value::String(s.trim().to_string())),
        (FieldType::Text, Value::Null) => Ok(Value::String(String::new())),
        (FieldType::Text, v) => Ok(Value::String(v.to_string())),
        (FieldType::Integer, Value::Number(n)) => n
            .as_f64()
            .and_then(integer_value)
            .ok_or_else(|| format!("`{n}` is not a whole number")),
        (FieldType::Number, Value::Number(n)) => Ok(Value::Number(n.clone())),
        (FieldType::Bool, Value::Bool(b)) => Ok(Value::Bool(*b)),
        (FieldType::List, Value::Array(items)) => Ok(Value::Array(
            items
                .iter()
                .map(|v| match v {
                    Value::String(s) => Value::String(s.clone()),
                    other => Value::String(other.to_string()),
                })
                .collect(),
        )),
        (_, Value::String(s)) => parse_text(field, s),
        (_, v) => parse_text(field, &v.to_string()),
    }
}

/// Finds the allowed label a reply means.
///
/// In order: an exact match after normalisation (lower case, punctuation dropped); the labels
/// that occur in the text as whole words, the earliest occurrence winning (the longest label when
/// two start at the same place).
pub(crate) fn match_label<'a>(allowed: &'a [String], text: &str) -> Option<&'a str> {
    let norm_text = normalize(text);
    if norm_text.is_empty() {
        return None;
    }
    let mut best: Option<(usize, usize, &str)> = None; // (position, negative length, label)
    for label in allowed {
        let norm_label = normalize(label);
        if norm_label.is_empty() {
            continue;
        }
        if norm_label == norm_text {
            return Some(label);
        }
        if let Some(pos) = find_word(&norm_text, &norm_label) {
            let candidate = (pos, usize::MAX - norm_label.len(), label.as_str());
            if best.is_none_or(|b| (candidate.0, candidate.1) < (b.0, b.1)) {
                best = Some(candidate);
            }
        }
    }
    best.map(|(_, _, label)| label)
}

/// Lower case, every run of non-alphanumeric characters turned into one space, trimmed.
fn normalize(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    let mut pending_space = false;
    for c in text.chars() {
        if c.is_alphanumeric() {
            if pending_space && !out.is_empty() {
                out.push(' ');
            }
            pending_space = false;
            out.extend(c.to_lowercase());
        } else {
            pending_space = true;
        }
    }
    out
}

/// The byte position of `word` in `text` at word boundaries (both normalised).
fn find_word(text: &str, word: &str) -> Option<usize> {
    let bytes = text.as_bytes();
    let mut start = 0;
    while let Some(found) = text[start..].find(word) {
        let pos = start + found;
        let end = pos + word.len();
        let before_ok = pos == 0 || bytes[pos - 1] == b' ';
        let after_ok = end == bytes.len() || bytes[end] == b' ';
        if before_ok && after_ok {
            return Some(pos);
        }
        start = pos + text[pos..].chars().next().map_or(1, char::len_utf8);
    }
    None
}

/// The first number in the text: an optional sign, digits with optional thousands commas, an
/// optional fraction and exponent.
pub(crate) fn extract_number(text: &str) -> Option<f64> {
    let bytes = text.as_bytes();
    let mut i = 0;
    while i < bytes.len() {
        let c = bytes[i];
        let starts_number =
            c.is_ascii_digit() || (c == b'.' && bytes.get(i + 1).is_some_and(u8::is_ascii_digit));
        if !starts_number {
            i += 1;
            continue;
        }
        let negative = i > 0 && bytes[i - 1] == b'-';
        let mut digits = String::new();
        let mut j = i;
        let mut seen_dot = false;
        while j < bytes.len() {
            let b = bytes[j];
            if b.is_ascii_digit() {
                digits.push(b as char);
            } else if b == b',' && !seen_dot && bytes.get(j + 1).is_some_and(u8::is_ascii_digit) {
                // thousands separator
            } else if b == b'.' && !seen_dot && bytes.get(j + 1).is_some_and(u8::is_ascii_digit) {
                seen_dot = true;
                digits.push('.');
            } else {
                break;
            }
            j += 1;
        }
        if matches!(bytes.get(j), Some(b'e' | b'E')) {
            let mut k = j + 1;
            let mut exp = String::from("e");
            if let Some(&sign @ (b'+' | b'-')) = bytes.get(k) {
                exp.push(sign as char);
                k += 1;
            }
            let exp_start = k;
            while bytes.get(k).is_some_and(u8::is_ascii_digit) {
                exp.push(bytes[k] as char);
                k += 1;
            }
            if k > exp_start {
                digits.push_str(&exp);
            }
        }
        let value: f64 = digits.parse().ok()?;
        return Some(if negative { -value } else { value });
    }
    None
}

fn integer_value(number: f64) -> Option<Value> {
    if number.is_finite() && number.fract() == 0.0 && number.abs() < 9.0e15 {
        // The range check above keeps the cast exact.
        #[allow(clippy::cast_possible_truncation)]
        Some(Value::from(number as i64))
    } else {
        None
    }
}

fn number_value(number: f64) -> Option<Value> {
    serde_json::Number::from_f64(number).map(Value::Number)
}

/// `true` for yes/true/y/correct/1, `false` for no/false/n/incorrect/0: the first such word.
pub(crate) fn parse_bool(text: &str) -> Option<bool> {
    normalize(text).split(' ').find_map(|word| match word {
        "yes" | "true" | "y" | "correct" | "1" => Some(true),
        "no" | "false" | "n" | "incorrect" | "0" => Some(false),
        _ => None,
    })
}

/// A JSON array of strings, or the lines (bullets and numbering dropped), or comma-separated
/// items.
fn parse_list(text: &str) -> Value {
    if let Ok(Value::Array(items)) = serde_json::from_str::<Value>(text) {
        return Value::Array(
            items
                .into_iter()
                .map(|v| match v {
                    Value::String(s) => Value::String(s),
                    other => Value::String(other.to_string()),
                })
                .collect(),
        );
    }
    let lines: Vec<&str> = text
        .lines()
        .map(str::trim)
        .filter(|l| !l.is_empty())
        .collect();
    let items: Vec<String> = if lines.len() > 1 {
        lines.iter().map(|l| strip_bullet(l).to_string()).collect()
    } else if text.is_empty() {
        Vec::new()
    } else {
        text.split(',')
            .map(|s| strip_bullet(s.trim()).to_string())
            .filter(|s| !s.is_empty())
            .collect()
    };
    Value::Array(items.into_iter().map(Value::String).collect())
}

fn strip_bullet(line: &str) -> &str {
    let line = line.trim_start_matches(['-', '*', '•']).trim_start();
    let digits = line.bytes().take_while(u8::is_ascii_digit).count();
    if digits > 0 {
        if let Some(rest) = line[digits..].strip_prefix(['.', ')']) {
            return rest.trim_start();
        }
    }
    line
}

/// The whole text as JSON, or else the first balanced `{...}` or `[...]` in it.
pub(crate) fn extract_json(text: &str) -> Option<Value> {
    if let Ok(value) = serde_json::from_str::<Value>(text) {
        return Some(value);
    }
    let start = text.find(['{', '['])?;
    let mut search = start;
    loop {
        let slice = &text[search..];
        let end = balanced_end(slice)?;
        if let Ok(value) = serde_json::from_str::<Value>(&slice[..end]) {
            return Some(value);
        }
        let next = text[search + 1..].find(['{', '['])?;
        search = search + 1 + next;
    }
}

/// The first balanced JSON object in the text, when there is one.
pub(crate) fn extract_object(text: &str) -> Option<Map<String, Value>> {
    if let Ok(Value::Object(map)) = serde_json::from_str::<Value>(text.trim()) {
        return Some(map);
    }
    let mut search = 0;
    while let Some(found) = text[search..].find('{') {
        let start = search + found;
        if let Some(end) = balanced_end(&text[start..]) {
            if let Ok(Value::Object(map)) = serde_json::from_str::<Value>(&text[start..start + end])
            {
                return Some(map);
            }
        }
        search = start + 1;
    }
    None
}

/// The length of the balanced bracket group that `text` starts with, strings respected.
fn balanced_end(text: &str) -> Option<usize> {
    let mut depth = 0usize;
    let mut in_string = false;
    let mut escaped = false;
    for (i, c) in text.char_indices() {
        if in_string {
            match c {
                _ if escaped => escaped = false,
                '\\' => escaped = true,
                '"' => in_string = false,
                _ => {}
            }
            continue;
        }
        match c {
            '"' => in_string = true,
            '{' | '[' => depth += 1,
            '}' | ']' => {
                depth = depth.checked_sub(1)?;
                if depth == 0 {
                    return Some(i + 1);
                }
            }
            _ => {}
        }
    }
    None
}

/// The first 80 characters of a text, for messages.
pub(crate) fn excerpt(text: &str) -> String {
    const MAX: usize = 80;
    match text.char_indices().nth(MAX) {
        Some((cut, _)) => format!("{}…", &text[..cut]),
        None => text.to_string(),
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;
    use serde_json::json;

    fn labels(values: &[&str]) -> Vec<String> {
        values.iter().map(|s| (*s).to_string()).collect()
    }

    #[test]
    fn labels_are_matched_tolerantly() {
        let allowed = labels(&["positive", "negative", "neutral"]);
        assert_eq!(match_label(&allowed, "positive"), Some("positive"));
        assert_eq!(match_label(&allowed, "  Positive. "), Some("positive"));
        assert_eq!(match_label(&allowed, "\"NEGATIVE\""), Some("negative"));
        assert_eq!(
            match_label(&allowed, "The sentiment is Positive."),
            Some("positive")
        );
        assert_eq!(
            match_label(&allowed, "negative\n\nText: I loved it\nLabel: positive"),
            Some("negative")
        );
        assert_eq!(match_label(&allowed, "positively great"), None);
        assert_eq!(match_label(&allowed, "no idea"), None);
        assert_eq!(match_label(&allowed, ""), None);
    }

    #[test]
    fn longer_labels_win_at_the_same_position() {
        let allowed = labels(&["very", "very positive", "negative"]);
        assert_eq!(
            match_label(&allowed, "Very positive!"),
            Some("very positive")
        );
        let allowed = labels(&["Sci/Tech", "World"]);
        assert_eq!(match_label(&allowed, "sci tech"), Some("Sci/Tech"));
        assert_eq!(
            match_label(&allowed, "This is about Sci/Tech."),
            Some("Sci/Tech")
        );
    }

    #[test]
    fn numbers_are_extracted_from_text() {
        assert_eq!(extract_number("42"), Some(42.0));
        assert_eq!(extract_number("The answer is -3.5 meters"), Some(-3.5));
        assert_eq!(extract_number("about 1,234 people"), Some(1234.0));
        assert_eq!(extract_number("1e3"), Some(1000.0));
        assert_eq!(extract_number("x = .5"), Some(0.5));
        assert_eq!(extract_number("none"), None);
        let int = Field::new("n", FieldType::Integer);
        assert_eq!(parse_text(&int, "Answer: 7.").unwrap(), json!(7));
        assert_eq!(parse_text(&int, "7.0").unwrap(), json!(7));
        assert!(parse_text(&int, "7.5").is_err());
        assert!(parse_text(&int, "seven").is_err());
        let num = Field::new("x", FieldType::Number);
        assert_eq!(parse_text(&num, "≈ 2.25 kg").unwrap(), json!(2.25));
    }

    #[test]
    fn booleans_come_from_yes_no_true_false() {
        let b = Field::new("ok", FieldType::Bool);
        assert_eq!(parse_text(&b, "Yes.").unwrap(), json!(true));
        assert_eq!(parse_text(&b, "FALSE").unwrap(), json!(false));
        assert_eq!(
            parse_text(&b, "I think no, it is not").unwrap(),
            json!(false)
        );
        assert!(parse_text(&b, "maybe").is_err());
    }

    #[test]
    fn lists_and_json_are_recovered() {
        let l = Field::new("tags", FieldType::List);
        assert_eq!(parse_text(&l, "[\"a\", \"b\"]").unwrap(), json!(["a", "b"]));
        assert_eq!(parse_text(&l, "- a\n- b\n").unwrap(), json!(["a", "b"]));
        assert_eq!(parse_text(&l, "1. a\n2) b").unwrap(), json!(["a", "b"]));
        assert_eq!(parse_text(&l, "a, b").unwrap(), json!(["a", "b"]));
        let j = Field::new("obj", FieldType::Json);
        assert_eq!(
            parse_text(&j, "Here: ```json\n{\"a\": \"}\"}\n```").unwrap(),
            json!({"a": "}"})
        );
        assert!(parse_text(&j, "nothing").is_err());
        assert_eq!(
            extract_object("noise {bad} then {\"x\": 1}").unwrap()["x"],
            json!(1)
        );
    }

    #[test]
    fn json_values_are_coerced_to_the_field_type() {
        let label = Field::label("l", labels(&["yes", "no"]));
        assert_eq!(
            parse_json_value(&label, &json!("Yes")).unwrap(),
            json!("yes")
        );
        let int = Field::new("n", FieldType::Integer);
        assert_eq!(
            parse_json_value(&int, &json!("12 items")).unwrap(),
            json!(12)
        );
        assert_eq!(parse_json_value(&int, &json!(3.0)).unwrap(), json!(3));
        let text = Field::text("t");
        assert_eq!(parse_json_value(&text, &json!(5)).unwrap(), json!("5"));
    }
}
