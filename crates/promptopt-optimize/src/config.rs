//! Per-algorithm settings from a request's `algorithm_config`, with typed, checked accessors.

use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};

use crate::OptimizeError;

/// An algorithm's settings: a JSON object from the request, read with typed accessors that
/// name the key in their errors.
///
/// ```
/// use promptopt_optimize::AlgorithmConfig;
///
/// let config = AlgorithmConfig::from_json(serde_json::json!({"num_examples": 3}))?;
/// config.check_keys("algorithm_config", "bootstrapfewshot", &["num_examples", "bootstrap_rounds"])?;
/// assert_eq!(config.usize("num_examples")?, Some(3));
/// assert!(config.check_keys("algorithm_config", "bootstrapfewshot", &["bootstrap_rounds"]).is_err());
/// # Ok::<(), promptopt_optimize::OptimizeError>(())
/// ```
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(transparent)]
pub struct AlgorithmConfig(pub Map<String, Value>);

impl AlgorithmConfig {
    /// Empty settings.
    pub fn new() -> Self {
        Self::default()
    }

    /// Settings from a JSON object.
    pub fn from_json(value: Value) -> Result<Self, OptimizeError> {
        match value {
            Value::Object(map) => Ok(Self(map)),
            Value::Null => Ok(Self::default()),
            other => Err(OptimizeError::InvalidConfig {
                key: "algorithm_config".into(),
                message: format!("expected a map of settings, found `{other}`"),
            }),
        }
    }

    /// Whether there are no settings.
    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }

    /// The keys given.
    pub fn keys(&self) -> impl Iterator<Item = &str> {
        self.0.keys().map(String::as_str)
    }

    /// A raw value.
    pub fn get(&self, key: &str) -> Option<&Value> {
        self.0.get(key).filter(|v| !v.is_null())
    }

    /// Adds every setting of `other` that is not set here.
    pub fn merge_defaults(&mut self, other: &AlgorithmConfig) {
        for (k, v) in &other.0 {
            self.0.entry(k.clone()).or_insert_with(|| v.clone());
        }
    }

    /// Fails on the first key not in `valid`, listing the valid ones.
    pub fn check_keys(
        &self,
        section: &'static str,
        algorithm: &str,
        valid: &[&str],
    ) -> Result<(), OptimizeError> {
        match self.keys().find(|k| !valid.contains(k)) {
            Some(key) => Err(OptimizeError::UnknownConfigKey {
                section,
                algorithm: algorithm.to_string(),
                key: key.to_string(),
                valid: valid
                    .iter()
                    .map(|k| format!("`{k}`"))
                    .collect::<Vec<_>>()
                    .join(", "),
            }),
            None => Ok(()),
        }
    }

    fn invalid(key: &str, expected: &str, value: &Value) -> OptimizeError {
        OptimizeError::InvalidConfig {
            key: key.to_string(),
            message: format!("expected {expected}, found `{value}`"),
        }
    }

    /// A non-negative whole number.
    pub fn usize(&self, key: &str) -> Result<Option<usize>, OptimizeError> {
        match self.get(key) {
            None => Ok(None),
            Some(v) => v
                .as_u64()
                .and_then(|n| usize::try_from(n).ok())
                .map(Some)
                .ok_or_else(|| Self::invalid(key, "a non-negative whole number", v)),
        }
    }

    /// A whole number that is at least 1.
    pub fn positive(&self, key: &str) -> Result<Option<usize>, OptimizeError> {
        match self.usize(key)? {
            Some(0) => Err(OptimizeError::InvalidConfig {
                key: key.to_string(),
                message: "must be at least 1".into(),
            }),
            other => Ok(other),
        }
    }

    /// A number.
    pub fn f64(&self, key: &str) -> Result<Option<f64>, OptimizeError> {
        match self.get(key) {
            None => Ok(None),
            Some(v) => v
                .as_f64()
                .map(Some)
                .ok_or_else(|| Self::invalid(key, "a number", v)),
        }
    }

    /// A number within `[min, max]`.
    pub fn f64_in(&self, key: &str, min: f64, max: f64) -> Result<Option<f64>, OptimizeError> {
        match self.f64(key)? {
            Some(x) if !(min..=max).contains(&x) => Err(OptimizeError::InvalidConfig {
                key: key.to_string(),
                message: format!("{x} is not between {min} and {max}"),
            }),
            other => Ok(other),
        }
    }

    /// `true` or `false`.
    pub fn bool(&self, key: &str) -> Result<Option<bool>, OptimizeError> {
        match self.get(key) {
            None => Ok(None),
            Some(v) => v
                .as_bool()
                .map(Some)
                .ok_or_else(|| Self::invalid(key, "`true` or `false`", v)),
        }
    }

    /// A string.
    pub fn str(&self, key: &str) -> Result<Option<&str>, OptimizeError> {
        match self.get(key) {
            None => Ok(None),
            Some(v) => v
                .as_str()
                .map(Some)
                .ok_or_else(|| Self::invalid(key, "a string", v)),
        }
    }

    /// One of a fixed set of strings.
    pub fn choice<'a>(
        &'a self,
        key: &str,
        allowed: &[&str],
    ) -> Result<Option<&'a str>, OptimizeError> {
        match self.str(key)? {
            Some(s) if !allowed.contains(&s) => Err(OptimizeError::InvalidConfig {
                key: key.to_string(),
                message: format!(
                    "`{s}` is not one of {}",
                    allowed
                        .iter()
                        .map(|a| format!("`{a}`"))
                        .collect::<Vec<_>>()
                        .join(", ")
                ),
            }),
            other => Ok(other),
        }
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;
    use serde_json::json;

    #[test]
    fn unknown_keys_list_the_valid_ones() {
        let c = AlgorithmConfig::from_json(json!({"num_exampels": 3})).unwrap();
        let err = c
            .check_keys(
                "algorithm_config",
                "bootstrapfewshot",
                &["num_examples", "bootstrap_rounds"],
            )
            .unwrap_err()
            .to_string();
        assert_eq!(
            err,
            "Unknown key `num_exampels` in `algorithm_config` for algorithm `bootstrapfewshot`; valid keys: `num_examples`, `bootstrap_rounds`"
        );
    }

    #[test]
    fn typed_accessors_name_the_key() {
        let c = AlgorithmConfig::from_json(json!({"n": -1, "t": 3.0, "s": "x", "b": 1})).unwrap();
        assert!(c.usize("n").unwrap_err().to_string().contains("`n`"));
        assert!(c.f64_in("t", 0.0, 2.0).is_err());
        assert!(c
            .choice("s", &["a", "b"])
            .unwrap_err()
            .to_string()
            .contains("`x` is not one of `a`, `b`"));
        assert!(c.bool("b").is_err());
        assert_eq!(c.usize("missing").unwrap(), None);
        assert!(AlgorithmConfig::from_json(json!([1])).is_err());
    }
}
