//! Signatures: instructions plus typed input and output fields.

use serde::{Deserialize, Serialize};

/// The type of a field, which decides how a reply is parsed and how the field is described.
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(tag = "type", rename_all = "snake_case")]
pub enum FieldType {
    /// Free text.
    Text,
    /// One of a fixed set of labels.
    Label {
        /// The allowed values, in a stable order.
        allowed: Vec<String>,
    },
    /// A whole number.
    Integer,
    /// A real number.
    Number,
    /// `true` or `false`.
    Bool,
    /// A list of strings.
    List,
    /// Any JSON value.
    Json,
}

/// One input or output field.
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct Field {
    /// The field's name, as in the examples.
    pub name: String,
    /// What the field holds, shown to the model.
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub description: String,
    /// The field's type.
    #[serde(flatten)]
    pub ty: FieldType,
}

impl Field {
    /// A text field.
    pub fn text(name: impl Into<String>) -> Self {
        Self {
            name: name.into(),
            description: String::new(),
            ty: FieldType::Text,
        }
    }

    /// A label field with the allowed values.
    pub fn label(name: impl Into<String>, allowed: Vec<String>) -> Self {
        Self {
            name: name.into(),
            description: String::new(),
            ty: FieldType::Label { allowed },
        }
    }

    /// A field of any type.
    pub fn new(name: impl Into<String>, ty: FieldType) -> Self {
        Self {
            name: name.into(),
            description: String::new(),
            ty,
        }
    }

    /// Builder: sets the description.
    pub fn describe(mut self, description: impl Into<String>) -> Self {
        self.description = description.into();
        self
    }
}

/// What a predictor does: instructions, input fields and output fields.
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct Signature {
    /// The task instructions (the part optimizers rewrite).
    pub instructions: String,
    /// Input fields in order.
    pub inputs: Vec<Field>,
    /// Output fields in order.
    pub outputs: Vec<Field>,
}

impl Signature {
    /// A signature with default instructions: "Given the fields `a`, `b`, produce the fields `c`."
    pub fn new(inputs: Vec<Field>, outputs: Vec<Field>) -> Self {
        let names = |fields: &[Field]| {
            fields
                .iter()
                .map(|f| format!("`{}`", f.name))
                .collect::<Vec<_>>()
                .join(", ")
        };
        let instructions = format!(
            "Given the fields {}, produce the fields {}.",
            names(&inputs),
            names(&outputs)
        );
        Self {
            instructions,
            inputs,
            outputs,
        }
    }

    /// Builder: sets the instructions.
    pub fn with_instructions(mut self, instructions: impl Into<String>) -> Self {
        self.instructions = instructions.into();
        self
    }

    /// Names of the input fields.
    pub fn input_names(&self) -> Vec<String> {
        self.inputs.iter().map(|f| f.name.clone()).collect()
    }

    /// Names of the output fields.
    pub fn output_names(&self) -> Vec<String> {
        self.outputs.iter().map(|f| f.name.clone()).collect()
    }

    /// An output field by name.
    pub fn output(&self, name: &str) -> Option<&Field> {
        self.outputs.iter().find(|f| f.name == name)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn default_instructions_name_the_fields() {
        let s = Signature::new(vec![Field::text("text")], vec![Field::text("label")]);
        assert_eq!(
            s.instructions,
            "Given the fields `text`, produce the fields `label`."
        );
    }
}
