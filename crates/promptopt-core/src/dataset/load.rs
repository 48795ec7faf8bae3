//! Reading examples from JSON Lines, JSON and CSV files.

use std::path::Path;

use serde_json::{Map, Value};

use crate::{CoreError, Example};

/// The file formats [`load_examples`] reads, chosen by extension.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Format {
    /// One JSON object per line (`.jsonl`, `.ndjson`); blank lines are skipped.
    JsonLines,
    /// A JSON array of objects (`.json`). A `.json` file whose first character is `{` is read
    /// as JSON Lines instead.
    JsonArray,
    /// Comma-separated values with a header row (`.csv`); every value is a string.
    Csv,
    /// Tab-separated values with a header row (`.tsv`); every value is a string.
    Tsv,
}

impl Format {
    /// The format for a path's extension (case-insensitive).
    pub fn from_path(path: &Path) -> Result<Self, CoreError> {
        let extension = path
            .extension()
            .and_then(|e| e.to_str())
            .unwrap_or("")
            .to_ascii_lowercase();
        match extension.as_str() {
            "jsonl" | "ndjson" => Ok(Self::JsonLines),
            "json" => Ok(Self::JsonArray),
            "csv" => Ok(Self::Csv),
            "tsv" => Ok(Self::Tsv),
            _ => Err(CoreError::UnsupportedFormat {
                path: path.to_path_buf(),
                extension,
            }),
        }
    }
}

/// Reads every example of a dataset file, choosing the format by extension (see [`Format`]).
///
/// Errors name the file and where in it the problem is: the line for JSON Lines and CSV, the
/// line or the array index for a JSON array.
pub fn load_examples(path: impl AsRef<Path>) -> Result<Vec<Example>, CoreError> {
    let path = path.as_ref();
    let format = Format::from_path(path)?;
    let text = std::fs::read_to_string(path).map_err(|source| CoreError::Io {
        path: path.to_path_buf(),
        source,
    })?;
    parse_examples(&text, format, path)
}

/// Parses examples from text in the given format; `path` is used in error messages only.
pub fn parse_examples(text: &str, format: Format, path: &Path) -> Result<Vec<Example>, CoreError> {
    match format {
        Format::JsonLines => parse_json_lines(text, path),
        Format::JsonArray => {
            if text.trim_start().starts_with('{') {
                parse_json_lines(text, path)
            } else {
                parse_json_array(text, path)
            }
        }
        Format::Csv => parse_delimited(text, b',', path),
        Format::Tsv => parse_delimited(text, b'\t', path),
    }
}

fn malformed(format: &'static str, path: &Path, location: String, message: String) -> CoreError {
    CoreError::Malformed {
        format,
        path: path.to_path_buf(),
        location,
        message,
    }
}

/// serde_json's message without its own " at line L column C" suffix, plus the column.
fn json_message(err: &serde_json::Error, with_column: bool) -> String {
    let full = err.to_string();
    let message = match full.rfind(" at line ") {
        Some(i) => full[..i].to_string(),
        None => full,
    };
    if with_column && err.column() > 0 {
        format!("{message} (column {})", err.column())
    } else {
        message
    }
}

fn kind_of(value: &Value) -> &'static str {
    match value {
        Value::Null => "null",
        Value::Bool(_) => "a boolean",
        Value::Number(_) => "a number",
        Value::String(_) => "a string",
        Value::Array(_) => "an array",
        Value::Object(_) => "an object",
    }
}

fn parse_json_lines(text: &str, path: &Path) -> Result<Vec<Example>, CoreError> {
    let mut examples = Vec::new();
    for (index, line) in text.lines().enumerate() {
        let line_no = index + 1;
        let trimmed = line.trim();
        if trimmed.is_empty() {
            continue;
        }
        let value: Value = serde_json::from_str(trimmed).map_err(|e| {
            malformed(
                "JSON",
                path,
                format!("line {line_no}"),
                json_message(&e, true),
            )
        })?;
        match value {
            Value::Object(map) => examples.push(Example::from_map(map)),
            other => {
                return Err(malformed(
                    "JSON",
                    path,
                    format!("line {line_no}"),
                    format!("expected an object, found {}", kind_of(&other)),
                ))
            }
        }
    }
    Ok(examples)
}

fn parse_json_array(text: &str, path: &Path) -> Result<Vec<Example>, CoreError> {
    let value: Value = serde_json::from_str(text).map_err(|e| {
        malformed(
            "JSON",
            path,
            format!("line {}", e.line()),
            json_message(&e, true),
        )
    })?;
    let Value::Array(items) = value else {
        return Err(malformed(
            "JSON",
            path,
            "top level".to_string(),
            format!("expected an array of objects, found {}", kind_of(&value)),
        ));
    };
    items
        .into_iter()
        .enumerate()
        .map(|(index, item)| match item {
            Value::Object(map) => Ok(Example::from_map(map)),
            other => Err(malformed(
                "JSON",
                path,
                format!("index {index}"),
                format!("expected an object, found {}", kind_of(&other)),
            )),
        })
        .collect()
}

fn parse_delimited(text: &str, delimiter: u8, path: &Path) -> Result<Vec<Example>, CoreError> {
    let name = if delimiter == b'\t' { "TSV" } else { "CSV" };
    let mut reader = csv::ReaderBuilder::new()
        .delimiter(delimiter)
        .flexible(true)
        .has_headers(true)
        .from_reader(text.as_bytes());
    let headers: Vec<String> = reader
        .headers()
        .map_err(|e| malformed(name, path, "line 1".to_string(), e.to_string()))?
        .iter()
        .map(|h| h.trim().to_string())
        .collect();
    if headers.iter().all(String::is_empty) {
        return Err(malformed(
            name,
            path,
            "line 1".to_string(),
            "the header row is empty".to_string(),
        ));
    }
    for (i, header) in headers.iter().enumerate() {
        if header.is_empty() {
            return Err(malformed(
                name,
                path,
                "line 1".to_string(),
                format!("column {} has no name", i + 1),
            ));
        }
        if headers[..i].contains(header) {
            return Err(malformed(
                name,
                path,
                "line 1".to_string(),
                format!("column `{header}` appears twice"),
            ));
        }
    }
    let mut examples = Vec::new();
    for record in reader.records() {
        let record = record.map_err(|e| {
            let line = e.position().map_or(0, |p| p.line());
            malformed(name, path, format!("line {line}"), e.to_string())
        })?;
        let line = record.position().map_or(0, |p| p.line());
        // A line with nothing on it (a trailing newline) is not a record.
        if record.len() == 1 && record.get(0).is_some_and(str::is_empty) && headers.len() > 1 {
            continue;
        }
        if record.len() < headers.len() {
            let missing: Vec<String> = headers[record.len()..]
                .iter()
                .map(|h| format!("`{h}`"))
                .collect();
            return Err(malformed(
                name,
                path,
                format!("line {line}"),
                format!(
                    "the record has {} fields but the header has {} (missing {})",
                    record.len(),
                    headers.len(),
                    missing.join(", ")
                ),
            ));
        }
        if record.len() > headers.len() {
            return Err(malformed(
                name,
                path,
                format!("line {line}"),
                format!(
                    "the record has {} fields but the header has {}",
                    record.len(),
                    headers.len()
                ),
            ));
        }
        let mut fields = Map::new();
        for (header, value) in headers.iter().zip(record.iter()) {
            fields.insert(header.clone(), Value::String(value.to_string()));
        }
        examples.push(Example::from_map(fields));
    }
    Ok(examples)
}
