//! The JSON adapter: replies as one JSON object.

use promptopt_lm::{Message, ResponseFormat};
use serde_json::{json, Map, Value};

use super::chat::{strip_field_prefix, ChatAdapter};
use super::value::{extract_object, parse_json_value};
use super::{
    collect_outputs, describe_fields, output_fields, usable_demo, value_rule, Adapter,
    ParseFailure, Rendered, REASONING_FIELD,
};
use crate::{Example, Field, FieldType, PredictorState, Signature, Strategy};

/// Asks for the outputs as one JSON object.
///
/// Messages: the system message describes the fields, the input layout (`[[ ## name ## ]]`
/// blocks) and the keys of the JSON answer; demos are user turns (inputs) and assistant turns
/// (the outputs as pretty JSON). With `structured: true` the request carries a JSON schema of the
/// outputs ([`ResponseFormat::JsonSchema`]: every key required, no others), otherwise a
/// [`ResponseFormat::JsonObject`] hint. A `Json`-typed output field always uses the hint, since a
/// strict schema cannot say "any value".
#[derive(Debug, Clone, Copy, Default)]
pub struct JsonAdapter {
    /// Whether to send a JSON schema (when the model supports structured output).
    pub structured: bool,
}

impl JsonAdapter {
    /// An adapter that sends a schema when `structured` is true.
    pub fn new(structured: bool) -> Self {
        Self { structured }
    }

    fn system(signature: &Signature, predictor: &PredictorState, outputs: &[&Field]) -> String {
        let mut out = String::with_capacity(512 + predictor.instructions.len());
        describe_fields(&mut out, signature, outputs);
        out.push_str("\nInputs arrive in this layout:\n\n");
        for field in &signature.inputs {
            out.push_str("[[ ## ");
            out.push_str(&field.name);
            out.push_str(" ## ]]\n{");
            out.push_str(&field.name);
            out.push_str("}\n\n");
        }
        out.push_str("Answer with one JSON object holding these keys:\n\n{\n");
        for (i, field) in outputs.iter().enumerate() {
            out.push_str("  \"");
            out.push_str(&field.name);
            out.push_str("\": \"{");
            out.push_str(&field.name);
            out.push('}');
            if let Some(rule) = value_rule(&field.ty) {
                out.push_str("    (");
                out.push_str(&rule);
                out.push(')');
            }
            out.push('"');
            if i + 1 < outputs.len() {
                out.push(',');
            }
            out.push('\n');
        }
        out.push_str("}\n\nYour task:\n");
        out.push_str(predictor.instructions.trim());
        out
    }

    fn response_format(&self, outputs: &[&Field]) -> ResponseFormat {
        if !self.structured || outputs.iter().any(|f| f.ty == FieldType::Json) {
            return ResponseFormat::JsonObject;
        }
        let mut properties = Map::new();
        for field in outputs {
            properties.insert(field.name.clone(), schema_of(&field.ty));
        }
        let required: Vec<Value> = outputs
            .iter()
            .map(|f| Value::String(f.name.clone()))
            .collect();
        ResponseFormat::JsonSchema {
            name: "outputs".to_string(),
            schema: json!({
                "type": "object",
                "properties": properties,
                "required": required,
                "additionalProperties": false,
            }),
        }
    }
}

fn schema_of(ty: &FieldType) -> Value {
    match ty {
        FieldType::Text => json!({"type": "string"}),
        FieldType::Label { allowed } => json!({"type": "string", "enum": allowed}),
        FieldType::Integer => json!({"type": "integer"}),
        FieldType::Number => json!({"type": "number"}),
        FieldType::Bool => json!({"type": "boolean"}),
        FieldType::List => json!({"type": "array", "items": {"type": "string"}}),
        FieldType::Json => json!({}),
    }
}

impl Adapter for JsonAdapter {
    fn render(
        &self,
        signature: &Signature,
        predictor: &PredictorState,
        inputs: &Example,
    ) -> Rendered {
        let outputs = output_fields(signature, predictor.strategy);
        let mut messages = Vec::with_capacity(2 + 2 * predictor.demos.len());
        messages.push(Message::system(Self::system(
            signature, predictor, &outputs,
        )));
        for demo in &predictor.demos {
            if !usable_demo(signature, &outputs, demo) {
                continue;
            }
            let mut user = String::with_capacity(256);
            ChatAdapter::inputs_block(&mut user, signature, demo);
            messages.push(Message::user(user));
            let mut answer = Map::new();
            for field in &outputs {
                if let Some(value) = demo.get(&field.name) {
                    answer.insert(field.name.clone(), value.clone());
                }
            }
            let answer = serde_json::to_string_pretty(&Value::Object(answer)).unwrap_or_default();
            messages.push(Message::assistant(answer));
        }
        let mut user = String::with_capacity(512);
        ChatAdapter::inputs_block(&mut user, signature, inputs);
        user.push_str("\n\nAnswer with a JSON object with the keys ");
        for (i, field) in outputs.iter().enumerate() {
            if i > 0 {
                user.push_str(", then ");
            }
            user.push('`');
            user.push_str(&field.name);
            user.push('`');
            if let Some(rule) = value_rule(&field.ty) {
                user.push_str(" (");
                user.push_str(&rule);
                user.push(')');
            }
        }
        user.push('.');
        messages.push(Message::user(user));
        Rendered {
            messages,
            response_format: Some(self.response_format(&outputs)),
            stop: Vec::new(),
        }
    }

    fn parse(
        &self,
        signature: &Signature,
        strategy: Strategy,
        reply: &str,
    ) -> Result<Example, ParseFailure> {
        let outputs = output_fields(signature, strategy);
        let Some(object) = extract_object(reply) else {
            if let [only] = outputs.as_slice() {
                let text = strip_field_prefix(reply.trim(), &only.name);
                return collect_outputs(&outputs, |_| Some(text.to_string()));
            }
            return Err(ParseFailure::new("The reply holds no JSON object"));
        };
        let mut parsed = Example::new();
        let mut missing = Vec::new();
        for field in &outputs {
            let value = object.get(&field.name).or_else(|| {
                object
                    .iter()
                    .find(|(k, _)| k.eq_ignore_ascii_case(&field.name))
                    .map(|(_, v)| v)
            });
            match value {
                Some(value) => match parse_json_value(field, value) {
                    Ok(v) => parsed.insert(field.name.clone(), v),
                    Err(why) => {
                        return Err(ParseFailure::new(format!("Field `{}`: {why}", field.name)))
                    }
                },
                None if field.name == REASONING_FIELD => {
                    parsed.insert(REASONING_FIELD, String::new());
                }
                None => missing.push(format!("`{}`", field.name)),
            }
        }
        if missing.is_empty() {
            Ok(parsed)
        } else {
            Err(ParseFailure::new(format!(
                "The JSON reply has no key {}",
                missing.join(", ")
            )))
        }
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]

    use super::*;

    fn signature() -> Signature {
        Signature::new(
            vec![Field::text("question")],
            vec![
                Field::label("answer", vec!["yes".into(), "no".into()]),
                Field::new("confidence", FieldType::Number).describe("From 0 to 1."),
            ],
        )
        .with_instructions("Answer the question.")
    }

    fn transcript(rendered: &Rendered) -> String {
        let mut text = rendered.transcript();
        text.push_str(&format!(
            "\n--- response_format ---\n{}",
            serde_json::to_string_pretty(&rendered.response_format).unwrap()
        ));
        text
    }

    #[test]
    fn renders_json_demos_and_a_schema() {
        let mut state = PredictorState::new("Answer the question.");
        state.strategy = Strategy::ChainOfThought;
        state.demos = vec![Example::new()
            .with("question", "Is water wet?")
            .with("reasoning", "Water makes things wet.")
            .with("answer", "yes")
            .with("confidence", 0.8)];
        let rendered = JsonAdapter::new(true).render(
            &signature(),
            &state,
            &Example::new().with("question", "Is fire cold?"),
        );
        insta::assert_snapshot!(transcript(&rendered));
        let hint = JsonAdapter::new(false).render(&signature(), &state, &Example::new());
        assert_eq!(hint.response_format, Some(ResponseFormat::JsonObject));
    }

    #[test]
    fn parses_json_tolerantly() {
        let sig = signature();
        let out = JsonAdapter::default()
            .parse(
                &sig,
                Strategy::Predict,
                "Sure! ```json\n{\"Answer\": \"Yes.\", \"confidence\": \"0.75\"}\n```",
            )
            .unwrap();
        assert_eq!(out.get("answer"), Some(&json!("yes")));
        assert_eq!(out.get("confidence"), Some(&json!(0.75)));
        let err = JsonAdapter::default()
            .parse(
                &sig,
                Strategy::Predict,
                "{\"answer\": \"maybe\", \"confidence\": 1}",
            )
            .unwrap_err();
        assert!(err.message.contains("`answer`"), "{err}");
        let err = JsonAdapter::default()
            .parse(&sig, Strategy::Predict, "{\"answer\": \"no\"}")
            .unwrap_err();
        assert!(err.message.contains("`confidence`"), "{err}");
        assert!(JsonAdapter::default()
            .parse(&sig, Strategy::Predict, "yes")
            .is_err());
    }
}
