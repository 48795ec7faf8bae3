//! Examples: ordered field name → JSON value.

use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};

/// One example: an ordered map from field name to JSON value.
///
/// Field order is kept as given (datasets, demos and rendered prompts follow it).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(transparent)]
pub struct Example {
    fields: Map<String, Value>,
}

impl Example {
    /// An empty example.
    pub fn new() -> Self {
        Self::default()
    }

    /// An example from a JSON object's fields.
    pub fn from_map(fields: Map<String, Value>) -> Self {
        Self { fields }
    }

    /// Builder: adds a field.
    pub fn with(mut self, name: impl Into<String>, value: impl Into<Value>) -> Self {
        self.fields.insert(name.into(), value.into());
        self
    }

    /// Sets a field, keeping its position when it already exists.
    pub fn insert(&mut self, name: impl Into<String>, value: impl Into<Value>) {
        self.fields.insert(name.into(), value.into());
    }

    /// A field's value.
    pub fn get(&self, name: &str) -> Option<&Value> {
        self.fields.get(name)
    }

    /// A field's value as text: strings as they are, other values as compact JSON, `None` if absent.
    pub fn text(&self, name: &str) -> Option<String> {
        self.fields.get(name).map(value_to_text)
    }

    /// Whether the field exists.
    pub fn contains(&self, name: &str) -> bool {
        self.fields.contains_key(name)
    }

    /// The `id` field as text, when there is one.
    pub fn id(&self) -> Option<String> {
        self.text("id")
    }

    /// The fields in order.
    pub fn fields(&self) -> &Map<String, Value> {
        &self.fields
    }

    /// Field names in order.
    pub fn keys(&self) -> impl Iterator<Item = &str> {
        self.fields.keys().map(String::as_str)
    }

    /// A new example with only the named fields (in the order of `names`; absent ones skipped).
    pub fn project(&self, names: &[String]) -> Example {
        let mut fields = Map::new();
        for name in names {
            if let Some(value) = self.fields.get(name) {
                fields.insert(name.clone(), value.clone());
            }
        }
        Example { fields }
    }

    /// Adds every field of `other`, overwriting fields of the same name.
    pub fn merge(&mut self, other: &Example) {
        for (name, value) in &other.fields {
            self.fields.insert(name.clone(), value.clone());
        }
    }

    /// Number of fields.
    pub fn len(&self) -> usize {
        self.fields.len()
    }

    /// Whether it has no fields.
    pub fn is_empty(&self) -> bool {
        self.fields.is_empty()
    }
}

/// Renders a JSON value as prompt text: strings verbatim, everything else as compact JSON.
pub fn value_to_text(value: &Value) -> String {
    match value {
        Value::String(s) => s.clone(),
        Value::Null => String::new(),
        other => other.to_string(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keeps_field_order_and_projects() {
        let e = Example::new()
            .with("text", "hi")
            .with("label", "positive")
            .with("id", 3);
        assert_eq!(e.keys().collect::<Vec<_>>(), ["text", "label", "id"]);
        assert_eq!(e.id().as_deref(), Some("3"));
        let p = e.project(&["label".to_string(), "text".to_string()]);
        assert_eq!(p.keys().collect::<Vec<_>>(), ["label", "text"]);
    }
}
