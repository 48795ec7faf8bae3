//! Checking a tool call's arguments against the tool's JSON schema: the subset tools use
//! (`type`, `properties`, `required`, `additionalProperties: false`, `enum`, `items`,
//! `minimum`, `maximum`), with messages that name the argument.

use serde_json::Value;

/// `Ok` when `arguments` fit `schema`, else what is wrong, naming the argument.
pub fn check_arguments(schema: &Value, arguments: &Value) -> Result<(), String> {
    check(schema, arguments, "")
}

/// `schema`'s arguments as one short line a small model can follow, e.g. `{"query": string
/// (keywords to look for), "k": optional integer (how many)}`: each property's name, whether it
/// may be left out, its type or allowed values, and its description. `None` when the schema is
/// not an object with `properties` (the caller shows the schema itself).
pub fn describe_arguments(schema: &Value) -> Option<String> {
    let properties = schema.get("properties")?.as_object()?;
    let required: Vec<&str> = schema
        .get("required")
        .and_then(Value::as_array)
        .map(|r| r.iter().filter_map(Value::as_str).collect())
        .unwrap_or_default();
    let parts: Vec<String> = properties
        .iter()
        .map(|(name, property)| {
            let mut part = format!("{}: ", Value::String(name.clone()));
            if !required.contains(&name.as_str()) {
                part.push_str("optional ");
            }
            match property.get("enum").and_then(Value::as_array) {
                Some(values) => {
                    let values: Vec<String> = values.iter().map(Value::to_string).collect();
                    part.push_str(&format!("one of {}", values.join(", ")));
                }
                None => part.push_str(
                    property
                        .get("type")
                        .and_then(Value::as_str)
                        .unwrap_or("value"),
                ),
            }
            if let Some(description) = property
                .get("description")
                .and_then(Value::as_str)
                .map(str::trim)
                .filter(|d| !d.is_empty())
            {
                part.push_str(&format!(" ({description})"));
            }
            part
        })
        .collect();
    Some(format!("{{{}}}", parts.join(", ")))
}

fn type_name(value: &Value) -> &'static str {
    match value {
        Value::Null => "null",
        Value::Bool(_) => "a boolean",
        Value::Number(n) if n.is_i64() || n.is_u64() => "an integer",
        Value::Number(_) => "a number",
        Value::String(_) => "a string",
        Value::Array(_) => "an array",
        Value::Object(_) => "an object",
    }
}

fn fits_type(expected: &str, value: &Value) -> bool {
    match expected {
        "object" => value.is_object(),
        "array" => value.is_array(),
        "string" => value.is_string(),
        "boolean" => value.is_boolean(),
        "null" => value.is_null(),
        "number" => value.is_number(),
        "integer" => {
            value.is_i64() || value.is_u64() || value.as_f64().is_some_and(|f| f.fract() == 0.0)
        }
        _ => true,
    }
}

fn article(kind: &str) -> &'static str {
    match kind {
        "object" => "an object",
        "array" => "an array",
        "string" => "a string",
        "boolean" => "a boolean",
        "integer" => "an integer",
        "number" => "a number",
        "null" => "null",
        _ => "a value of the declared type",
    }
}

fn check(schema: &Value, value: &Value, at: &str) -> Result<(), String> {
    let name = if at.is_empty() {
        "The arguments".to_string()
    } else {
        format!("`{at}`")
    };
    let types: Vec<&str> = match &schema["type"] {
        Value::String(t) => vec![t.as_str()],
        Value::Array(list) => list.iter().filter_map(Value::as_str).collect(),
        _ => Vec::new(),
    };
    if !types.is_empty() && !types.iter().any(|t| fits_type(t, value)) {
        let wanted: Vec<&str> = types.iter().map(|t| article(t)).collect();
        return Err(format!(
            "{name} must be {}, not {}",
            wanted.join(" or "),
            type_name(value)
        ));
    }
    if let Some(options) = schema["enum"].as_array() {
        if !options.contains(value) {
            let list: Vec<String> = options.iter().map(Value::to_string).collect();
            return Err(format!("{name} must be one of {}", list.join(", ")));
        }
    }
    if let Some(x) = value.as_f64() {
        if let Some(min) = schema["minimum"].as_f64().filter(|m| x < *m) {
            return Err(format!("{name} must be at least {min}"));
        }
        if let Some(max) = schema["maximum"].as_f64().filter(|m| x > *m) {
            return Err(format!("{name} must be at most {max}"));
        }
    }
    if let Value::Object(map) = value {
        let properties = schema["properties"].as_object();
        for required in schema["required"].as_array().into_iter().flatten() {
            if let Some(key) = required.as_str() {
                if !map.contains_key(key) {
                    return Err(format!("`{}` is required", join(at, key)));
                }
            }
        }
        for (key, v) in map {
            match properties.and_then(|p| p.get(key)) {
                Some(sub) => check(sub, v, &join(at, key))?,
                None if schema["additionalProperties"] == Value::Bool(false) => {
                    let known: Vec<String> = properties
                        .map(|p| p.keys().map(|k| format!("`{k}`")).collect())
                        .unwrap_or_default();
                    return Err(format!(
                        "`{}` is not an argument (the arguments are {})",
                        join(at, key),
                        if known.is_empty() {
                            "none".to_string()
                        } else {
                            known.join(", ")
                        }
                    ));
                }
                None => {}
            }
        }
    }
    if let (Value::Array(items), Some(item_schema)) = (value, schema.get("items")) {
        for (i, item) in items.iter().enumerate() {
            check(
                item_schema,
                item,
                &format!("{}[{i}]", if at.is_empty() { "arguments" } else { at }),
            )?;
        }
    }
    Ok(())
}

fn join(at: &str, key: &str) -> String {
    if at.is_empty() {
        key.to_string()
    } else {
        format!("{at}.{key}")
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use serde_json::json;

    use super::*;

    #[test]
    fn arguments_are_described_in_one_short_line() {
        let schema = json!({
            "type": "object",
            "properties": {
                "query": {"type": "string", "description": "Keywords to look for"},
                "k": {"type": "integer"},
                "mode": {"enum": ["fast", "exact"]}
            },
            "required": ["query"]
        });
        assert_eq!(
            describe_arguments(&schema).unwrap(),
            r#"{"query": string (Keywords to look for), "k": optional integer, "mode": optional one of "fast", "exact"}"#
        );
        let empty = json!({"type": "object", "properties": {}});
        assert_eq!(describe_arguments(&empty).unwrap(), "{}");
        assert_eq!(describe_arguments(&json!({"type": "string"})), None);
    }

    #[test]
    fn arguments_are_checked_and_the_culprit_named() {
        let schema = json!({
            "type": "object",
            "properties": {
                "query": {"type": "string"},
                "k": {"type": "integer", "minimum": 1, "maximum": 20},
                "mode": {"enum": ["fast", "exact"]},
                "tags": {"type": "array", "items": {"type": "string"}}
            },
            "required": ["query"],
            "additionalProperties": false
        });
        assert_eq!(
            check_arguments(&schema, &json!({"query": "x", "k": 3})),
            Ok(())
        );
        let e = |v: Value| check_arguments(&schema, &v).unwrap_err();
        assert_eq!(e(json!({"k": 3})), "`query` is required");
        assert_eq!(
            e(json!({"query": 1})),
            "`query` must be a string, not an integer"
        );
        assert_eq!(
            e(json!({"query": "x", "k": 2.5})),
            "`k` must be an integer, not a number"
        );
        assert_eq!(e(json!({"query": "x", "k": 0})), "`k` must be at least 1");
        assert_eq!(
            e(json!({"query": "x", "mode": "slow"})),
            "`mode` must be one of \"fast\", \"exact\""
        );
        assert_eq!(
            e(json!({"query": "x", "tags": ["a", 2]})),
            "`tags[1]` must be a string, not an integer"
        );
        assert_eq!(
            e(json!({"query": "x", "limit": 2})),
            "`limit` is not an argument (the arguments are `query`, `k`, `mode`, `tags`)"
        );
        assert_eq!(
            e(json!("x")),
            "The arguments must be an object, not a string"
        );
    }
}
