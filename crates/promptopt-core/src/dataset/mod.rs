//! Datasets: examples plus which of their fields are inputs and which are outputs.
//!
//! # Key inference
//!
//! When the input and output keys are not given, they are inferred: the output is the first of
//! [`OUTPUT_KEY_CANDIDATES`] (`expected_output`, `label`, `answer`, `output`, `summary`) that the
//! examples have, and every other field except `id` is an input. This is deliberately simple and
//! predictable: extra fields such as `title` (AG News), `fine_label` (TREC), `rationale` (GSM8K),
//! `topic` or `answers` become inputs too, so name the keys explicitly when that is not what the
//! task means. Inference refuses to guess when no candidate output key exists or when the
//! examples do not all have the same fields.
//!
//! ```
//! use promptopt_core::{Dataset, Example, FieldType};
//!
//! let examples = vec![
//!     Example::new().with("id", 1).with("text", "great film").with("label", "positive"),
//!     Example::new().with("id", 2).with("text", "dull").with("label", "negative"),
//!     Example::new().with("id", 3).with("text", "loved it").with("label", "positive"),
//!     Example::new().with("id", 4).with("text", "boring").with("label", "negative"),
//! ];
//! let dataset = Dataset::new(examples, None, None, "inline")?;
//! assert_eq!(dataset.input_keys, ["text"]);
//! assert_eq!(dataset.output_keys, ["label"]);
//! let signature = dataset.signature();
//! assert!(matches!(&signature.outputs[0].ty, FieldType::Label { allowed } if allowed.len() == 2));
//! let (train, validation) = dataset.split(0.75, 42)?;
//! assert_eq!((train.len(), validation.len()), (3, 1));
//! # Ok::<(), promptopt_core::CoreError>(())
//! ```

mod load;

use std::collections::BTreeMap;
use std::path::Path;

use rand::seq::SliceRandom;
use rand::SeedableRng;
use rand_chacha::ChaCha8Rng;
use serde_json::Value;

pub use load::{load_examples, parse_examples, Format};

use crate::{CoreError, Example, Field, Signature};

/// Output keys tried in order when the output key is not given.
pub const OUTPUT_KEY_CANDIDATES: [&str; 5] =
    ["expected_output", "label", "answer", "output", "summary"];

/// Fields that are never inferred as inputs.
pub const NEVER_INPUT_KEYS: [&str; 1] = ["id"];

/// The most distinct values [`infer_labels`] accepts as a label set.
pub const MAX_LABELS: usize = 100;

/// The longest value (in characters) [`infer_labels`] accepts as a label.
pub const MAX_LABEL_CHARS: usize = 100;

/// Examples with their input and output keys.
#[derive(Debug, Clone, PartialEq)]
pub struct Dataset {
    /// The examples, in file order.
    pub examples: Vec<Example>,
    /// The fields a program is given.
    pub input_keys: Vec<String>,
    /// The fields a program must produce.
    pub output_keys: Vec<String>,
}

impl Dataset {
    /// A dataset from examples, with keys given or inferred (see the module docs), validated.
    ///
    /// `source` names where the examples came from in error messages (e.g. a quoted path).
    pub fn new(
        examples: Vec<Example>,
        input_keys: Option<Vec<String>>,
        output_keys: Option<Vec<String>>,
        source: &str,
    ) -> Result<Self, CoreError> {
        if examples.is_empty() {
            return Err(CoreError::EmptyDataset {
                source_name: source.to_string(),
            });
        }
        let (input_keys, output_keys) = match (input_keys, output_keys) {
            (Some(inputs), Some(outputs)) => (inputs, outputs),
            (None, None) => infer_keys(&examples)?,
            (None, Some(outputs)) => {
                let inputs = all_keys(&examples)
                    .into_iter()
                    .filter(|k| !outputs.contains(k) && !NEVER_INPUT_KEYS.contains(&k.as_str()))
                    .collect();
                (inputs, outputs)
            }
            (Some(inputs), None) => {
                let keys = all_keys(&examples);
                let output = OUTPUT_KEY_CANDIDATES
                    .iter()
                    .find(|c| keys.iter().any(|k| k == *c) && !inputs.iter().any(|i| i == *c))
                    .ok_or_else(|| CoreError::AmbiguousKeys {
                        reason: format!(
                            "none of the output key candidates {} is present (the examples have {})",
                            quoted(OUTPUT_KEY_CANDIDATES.iter().copied()),
                            quoted(keys.iter().map(String::as_str))
                        ),
                    })?;
                (inputs, vec![(*output).to_string()])
            }
        };
        let dataset = Self {
            examples,
            input_keys,
            output_keys,
        };
        dataset.validate()?;
        Ok(dataset)
    }

    /// Loads a dataset file (JSON Lines, JSON array or CSV, by extension) with keys given or
    /// inferred.
    pub fn load(
        path: impl AsRef<Path>,
        input_keys: Option<Vec<String>>,
        output_keys: Option<Vec<String>>,
    ) -> Result<Self, CoreError> {
        let path = path.as_ref();
        let examples = load_examples(path)?;
        Self::new(
            examples,
            input_keys,
            output_keys,
            &format!("`{}`", path.display()),
        )
    }

    /// Checks the keys against the examples: at least one output key, no key both input and
    /// output, and every key present in some example.
    pub fn validate(&self) -> Result<(), CoreError> {
        if self.output_keys.is_empty() {
            return Err(CoreError::Invalid {
                what: "dataset keys".to_string(),
                message: "there must be at least one output key".to_string(),
            });
        }
        if let Some(both) = self
            .input_keys
            .iter()
            .find(|k| self.output_keys.contains(k))
        {
            return Err(CoreError::Invalid {
                what: "dataset keys".to_string(),
                message: format!("`{both}` is both an input and an output key"),
            });
        }
        let keys = all_keys(&self.examples);
        let available = || quoted(keys.iter().map(String::as_str));
        for (role, list) in [("Input", &self.input_keys), ("Output", &self.output_keys)] {
            for key in list {
                if !keys.contains(key) {
                    return Err(CoreError::MissingKey {
                        role,
                        key: key.clone(),
                        available: available(),
                    });
                }
            }
        }
        Ok(())
    }

    /// Number of examples.
    pub fn len(&self) -> usize {
        self.examples.len()
    }

    /// Whether there are no examples.
    pub fn is_empty(&self) -> bool {
        self.examples.is_empty()
    }

    /// The allowed values of an output key, when the examples look like a label set
    /// (see [`infer_labels`]).
    pub fn labels(&self, key: &str) -> Option<Vec<String>> {
        infer_labels(&self.examples, key)
    }

    /// A signature for this dataset: text inputs; outputs are labels with their allowed values
    /// when [`infer_labels`] finds a label set, text otherwise.
    pub fn signature(&self) -> Signature {
        let inputs = self.input_keys.iter().map(Field::text).collect();
        let outputs = self
            .output_keys
            .iter()
            .map(|key| match infer_labels(&self.examples, key) {
                Some(allowed) => Field::label(key, allowed),
                None => Field::text(key),
            })
            .collect();
        Signature::new(inputs, outputs)
    }

    /// Splits into two datasets with the same keys: the first holds `round(ratio × len)`
    /// examples (at least one and at most `len - 1` when there are two or more), drawn by a
    /// seeded shuffle; both keep the original relative order of their examples.
    pub fn split(&self, ratio: f64, seed: u64) -> Result<(Dataset, Dataset), CoreError> {
        if !(ratio > 0.0 && ratio < 1.0) {
            return Err(CoreError::InvalidSplit { ratio });
        }
        let n = self.examples.len();
        if n < 2 {
            return Err(CoreError::Invalid {
                what: "split".to_string(),
                message: format!("a dataset of {n} example(s) cannot be split in two"),
            });
        }
        let first_len = ((ratio * n as f64).round() as usize).clamp(1, n - 1);
        let mut order: Vec<usize> = (0..n).collect();
        let mut rng = ChaCha8Rng::seed_from_u64(seed);
        order.shuffle(&mut rng);
        let mut in_first = vec![false; n];
        for &i in &order[..first_len] {
            in_first[i] = true;
        }
        let mut first = Vec::with_capacity(first_len);
        let mut second = Vec::with_capacity(n - first_len);
        for (i, example) in self.examples.iter().enumerate() {
            if in_first[i] {
                first.push(example.clone());
            } else {
                second.push(example.clone());
            }
        }
        let with = |examples| Dataset {
            examples,
            input_keys: self.input_keys.clone(),
            output_keys: self.output_keys.clone(),
        };
        Ok((with(first), with(second)))
    }
}

/// Every key of every example, in order of first appearance.
fn all_keys(examples: &[Example]) -> Vec<String> {
    let mut keys: Vec<String> = Vec::new();
    for example in examples {
        for key in example.keys() {
            if !keys.iter().any(|k| k == key) {
                keys.push(key.to_string());
            }
        }
    }
    keys
}

fn quoted<'a>(names: impl Iterator<Item = &'a str>) -> String {
    let list: Vec<String> = names.map(|n| format!("`{n}`")).collect();
    if list.is_empty() {
        "no fields".to_string()
    } else {
        list.join(", ")
    }
}

/// Infers `(input_keys, output_keys)`: the output is the first of [`OUTPUT_KEY_CANDIDATES`]
/// present, the inputs are all other fields except `id`, in field order.
///
/// Errors when there are no examples, when the examples do not all have the same fields, or
/// when no candidate output key is present.
pub fn infer_keys(examples: &[Example]) -> Result<(Vec<String>, Vec<String>), CoreError> {
    let first = examples.first().ok_or_else(|| CoreError::AmbiguousKeys {
        reason: "there are no examples".to_string(),
    })?;
    let mut first_keys: Vec<&str> = first.keys().collect();
    first_keys.sort_unstable();
    for (index, example) in examples.iter().enumerate().skip(1) {
        let mut keys: Vec<&str> = example.keys().collect();
        keys.sort_unstable();
        if keys != first_keys {
            return Err(CoreError::AmbiguousKeys {
                reason: format!(
                    "example {} has the fields {} but example 1 has {}",
                    index + 1,
                    quoted(example.keys()),
                    quoted(first.keys())
                ),
            });
        }
    }
    let output = OUTPUT_KEY_CANDIDATES
        .iter()
        .find(|c| first.contains(c))
        .ok_or_else(|| CoreError::AmbiguousKeys {
            reason: format!(
                "none of the output key candidates {} is present (the examples have {})",
                quoted(OUTPUT_KEY_CANDIDATES.iter().copied()),
                quoted(first.keys())
            ),
        })?;
    let inputs = first
        .keys()
        .filter(|k| k != output && !NEVER_INPUT_KEYS.contains(k))
        .map(str::to_string)
        .collect();
    Ok((inputs, vec![(*output).to_string()]))
}

/// The allowed values of `key` when the examples look like a label set, sorted and unique.
///
/// The rule: every example has the key with a string, integer or boolean value (integers and
/// booleans are taken as their text) of at most [`MAX_LABEL_CHARS`] characters and no line
/// break; there are between 2 and [`MAX_LABELS`] distinct values; and either every value occurs
/// at least twice or there are at most half as many distinct values as examples. Free text
/// (summaries, answers, numbers from arithmetic) fails the last condition and gives `None`.
pub fn infer_labels(examples: &[Example], key: &str) -> Option<Vec<String>> {
    let mut counts: BTreeMap<String, usize> = BTreeMap::new();
    for example in examples {
        let text = match example.get(key)? {
            Value::String(s) => s.trim().to_string(),
            Value::Bool(b) => b.to_string(),
            Value::Number(n) if n.is_i64() || n.is_u64() => n.to_string(),
            _ => return None,
        };
        if text.is_empty() || text.chars().count() > MAX_LABEL_CHARS || text.contains('\n') {
            return None;
        }
        *counts.entry(text).or_default() += 1;
    }
    let distinct = counts.len();
    if !(2..=MAX_LABELS).contains(&distinct) {
        return None;
    }
    let all_repeated = counts.values().all(|&c| c >= 2);
    if all_repeated || distinct * 2 <= examples.len() {
        Some(counts.into_keys().collect())
    } else {
        None
    }
}

#[cfg(test)]
mod tests;
