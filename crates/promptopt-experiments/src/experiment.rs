//! What an experiment is: its definition (the user guide's names) and its record.

use indexmap::IndexMap;
use serde::{Deserialize, Serialize};

use crate::ExperimentError;

/// An experiment as a user writes it (YAML or JSON):
///
/// ```yaml
/// name: tickets-v1-v2
/// variants: {control: tickets@1.0.0, treatment: tickets@1.1.0}
/// traffic_split: {control: 0.8, treatment: 0.2}
/// success_metric: accuracy
/// minimum_sample_size: 1000
/// significance_level: 0.05
/// max_duration: 14d
/// auto_promote: true
/// ```
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ExperimentSpec {
    /// The experiment's name (letters, digits, `.`, `_`, `-`).
    pub name: String,
    /// Variant name → the model version it serves (`NAME@VERSION` or `NAME@ALIAS`); two or more,
    /// all versions of one model.
    pub variants: IndexMap<String, String>,
    /// Variant name → weight (any positive scale); equal weights when absent.
    #[serde(default)]
    pub traffic_split: Option<IndexMap<String, f64>>,
    /// The metric outcomes are scored with (`accuracy`, `exact_match`, `f1`, ...).
    #[serde(default = "default_metric")]
    pub success_metric: String,
    /// Outcomes each variant needs before a winner can be declared.
    #[serde(default = "default_minimum")]
    pub minimum_sample_size: u64,
    /// The false-positive rate the decision allows (two-sided).
    #[serde(default = "default_alpha")]
    pub significance_level: f64,
    /// Stop after this long without a winner (`14d`, `36h`).
    #[serde(default)]
    pub max_duration: Option<String>,
    /// Point the model's `production` alias at the winner as soon as there is one.
    #[serde(default)]
    pub auto_promote: bool,
    /// The smallest difference worth detecting, on the metric's scale (0.05: five points of
    /// accuracy); it tunes the sequential test's power (its mixing variance is its square).
    #[serde(default = "default_effect")]
    pub minimum_detectable_effect: f64,
    /// The variant the others are compared with (default: `control` if there is one, else the
    /// first).
    #[serde(default)]
    pub control: Option<String>,
    /// A note for people.
    #[serde(default)]
    pub description: Option<String>,
}

fn default_metric() -> String {
    "accuracy".into()
}

fn default_minimum() -> u64 {
    100
}

fn default_alpha() -> f64 {
    0.05
}

fn default_effect() -> f64 {
    0.05
}

/// Where an experiment is in its life.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ExperimentState {
    /// Created, not serving.
    Draft,
    /// Splitting traffic.
    Running,
    /// Stopped without a winner (by hand or at `max_duration`).
    Stopped,
    /// Ended with a winner.
    Concluded,
}

impl ExperimentState {
    /// The state's name.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Draft => "draft",
            Self::Running => "running",
            Self::Stopped => "stopped",
            Self::Concluded => "concluded",
        }
    }

    /// Parses a state's name.
    pub fn parse(text: &str) -> Option<Self> {
        match text {
            "draft" => Some(Self::Draft),
            "running" => Some(Self::Running),
            "stopped" => Some(Self::Stopped),
            "concluded" => Some(Self::Concluded),
            _ => None,
        }
    }
}

impl std::fmt::Display for ExperimentState {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

/// An experiment as stored.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Experiment {
    /// `exp-` and 16 hex digits.
    pub id: String,
    /// The definition.
    pub spec: ExperimentSpec,
    /// The model all variants are versions of.
    pub model: String,
    /// Where it is.
    pub state: ExperimentState,
    /// The salt of its sticky assignment (fixed at creation).
    pub salt: String,
    /// When it was created, started and ended (seconds since the Unix epoch).
    pub created_at: f64,
    /// When it started.
    pub started_at: Option<f64>,
    /// When it stopped or concluded.
    pub ended_at: Option<f64>,
    /// The winning variant, once concluded.
    pub winner: Option<String>,
    /// The version `production` was pointed at, when the winner was promoted.
    pub promoted_version: Option<String>,
    /// The running minimum of each comparison's always-valid p-value, by treatment variant.
    #[serde(default)]
    pub sequential_p: IndexMap<String, f64>,
}

fn check_name(field: &str, name: &str) -> Result<(), ExperimentError> {
    let ok = !name.is_empty()
        && name.len() <= 100
        && name.starts_with(|c: char| c.is_ascii_alphanumeric())
        && name
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '.' | '_' | '-'));
    if ok {
        Ok(())
    } else {
        Err(ExperimentError::invalid(
            field,
            format!("`{name}` is not a valid name: letters, digits, `.`, `_` and `-`, starting with a letter or digit, at most 100 characters"),
        ))
    }
}

impl ExperimentSpec {
    /// Checks the definition; returns the model every variant is a version of.
    pub fn validate(&self) -> Result<String, ExperimentError> {
        check_name("name", &self.name)?;
        if self.variants.len() < 2 {
            return Err(ExperimentError::invalid(
                "variants",
                "needs two or more variants (e.g. `{control: m@1.0.0, treatment: m@1.1.0}`)",
            ));
        }
        let mut model: Option<&str> = None;
        for (variant, reference) in &self.variants {
            check_name(&format!("variants.{variant}"), variant)?;
            let Some((name, selector)) = reference.split_once('@') else {
                return Err(ExperimentError::invalid(
                    &format!("variants.{variant}"),
                    format!("`{reference}` must name a version or an alias: `MODEL@1.2.0` or `MODEL@ALIAS`"),
                ));
            };
            check_name(&format!("variants.{variant}"), name)?;
            if selector.is_empty() {
                return Err(ExperimentError::invalid(
                    &format!("variants.{variant}"),
                    format!("`{reference}` has nothing after `@`"),
                ));
            }
            match model {
                None => model = Some(name),
                Some(m) if m != name => {
                    return Err(ExperimentError::invalid(
                        &format!("variants.{variant}"),
                        format!("`{reference}` is a version of `{name}`, but the experiment is on `{m}`: all variants are versions of one model"),
                    ))
                }
                Some(_) => {}
            }
        }
        if let Some(split) = &self.traffic_split {
            for key in split.keys() {
                if !self.variants.contains_key(key) {
                    return Err(ExperimentError::invalid(
                        &format!("traffic_split.{key}"),
                        "is not one of the variants",
                    ));
                }
            }
            for key in self.variants.keys() {
                if !split.contains_key(key) {
                    return Err(ExperimentError::invalid(
                        &format!("traffic_split.{key}"),
                        "is missing: give every variant a weight",
                    ));
                }
            }
            for (key, weight) in split {
                if !(weight.is_finite() && *weight >= 0.0) {
                    return Err(ExperimentError::invalid(
                        &format!("traffic_split.{key}"),
                        format!("must be a number ≥ 0, not {weight}"),
                    ));
                }
            }
            let positive = split.values().filter(|w| **w > 0.0).count();
            if positive < 2 {
                return Err(ExperimentError::invalid(
                    "traffic_split",
                    "must give at least two variants a positive weight",
                ));
            }
        }
        if !(self.significance_level > 0.0 && self.significance_level <= 0.5) {
            return Err(ExperimentError::invalid(
                "significance_level",
                format!("must be in (0, 0.5], not {}", self.significance_level),
            ));
        }
        if !(self.minimum_detectable_effect.is_finite() && self.minimum_detectable_effect > 0.0) {
            return Err(ExperimentError::invalid(
                "minimum_detectable_effect",
                format!(
                    "must be a positive number, not {}",
                    self.minimum_detectable_effect
                ),
            ));
        }
        if self.minimum_sample_size == 0 {
            return Err(ExperimentError::invalid(
                "minimum_sample_size",
                "must be at least 1",
            ));
        }
        if let Some(d) = &self.max_duration {
            promptopt_core::parse_duration(d)
                .map_err(|m| ExperimentError::invalid("max_duration", m))?;
        }
        if let Some(c) = &self.control {
            if !self.variants.contains_key(c) {
                return Err(ExperimentError::invalid(
                    "control",
                    format!("`{c}` is not one of the variants"),
                ));
            }
        }
        Ok(model.unwrap_or_default().to_string())
    }

    /// The control variant.
    pub fn control(&self) -> &str {
        if let Some(c) = &self.control {
            return c;
        }
        if self.variants.contains_key("control") {
            return "control";
        }
        self.variants.keys().next().map_or("", String::as_str)
    }

    /// Each variant with its weight, in the definition's order.
    pub fn weights(&self) -> Vec<(&str, f64)> {
        self.variants
            .keys()
            .map(|v| {
                let w = self
                    .traffic_split
                    .as_ref()
                    .map_or(1.0, |s| s.get(v).copied().unwrap_or(0.0));
                (v.as_str(), w)
            })
            .collect()
    }

    /// The selector (`1.2.0` or an alias) of a variant's model reference.
    pub fn selector(&self, variant: &str) -> Option<&str> {
        self.variants
            .get(variant)
            .and_then(|r| r.split_once('@'))
            .map(|(_, s)| s)
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    fn spec(yaml: &str) -> ExperimentSpec {
        serde_yaml::from_str(yaml).unwrap()
    }

    #[test]
    fn a_definition_validates_and_names_its_model() {
        let s = spec("name: t\nvariants: {control: m@1.0.0, treatment: m@production}\ntraffic_split: {control: 0.8, treatment: 0.2}\n");
        assert_eq!(s.validate().unwrap(), "m");
        assert_eq!(s.control(), "control");
        assert_eq!(s.weights(), vec![("control", 0.8), ("treatment", 0.2)]);
        assert_eq!(s.selector("treatment"), Some("production"));
        assert_eq!(s.minimum_sample_size, 100);
    }

    #[test]
    fn the_shipped_example_validates() {
        let path =
            std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../../examples/ab-testing.yaml");
        let s = spec(&std::fs::read_to_string(path).unwrap());
        assert_eq!(s.validate().unwrap(), "api-sentiment");
        assert_eq!(s.weights(), vec![("control", 0.8), ("treatment", 0.2)]);
        assert!(s.auto_promote);
    }

    #[test]
    fn bad_definitions_name_the_field() {
        let cases = [
            ("name: t\nvariants: {a: m@1.0.0}\n", "variants"),
            (
                "name: t\nvariants: {a: m@1.0.0, b: other@1.0.0}\n",
                "variants.b",
            ),
            ("name: t\nvariants: {a: m, b: m@1.0.0}\n", "variants.a"),
            (
                "name: t\nvariants: {a: m@1.0.0, b: m@2.0.0}\ntraffic_split: {a: 1, b: 0}\n",
                "traffic_split",
            ),
            (
                "name: t\nvariants: {a: m@1.0.0, b: m@2.0.0}\ntraffic_split: {a: 1}\n",
                "traffic_split.b",
            ),
            (
                "name: t\nvariants: {a: m@1.0.0, b: m@2.0.0}\ntraffic_split: {a: 1, b: -1}\n",
                "traffic_split.b",
            ),
            (
                "name: t\nvariants: {a: m@1.0.0, b: m@2.0.0}\nsignificance_level: 0\n",
                "significance_level",
            ),
            (
                "name: t\nvariants: {a: m@1.0.0, b: m@2.0.0}\nmax_duration: soon\n",
                "max_duration",
            ),
            ("name: ../t\nvariants: {a: m@1.0.0, b: m@2.0.0}\n", "name"),
            (
                "name: t\nvariants: {a: m@1.0.0, b: m@2.0.0}\ncontrol: c\n",
                "control",
            ),
        ];
        for (yaml, field) in cases {
            match spec(yaml).validate() {
                Err(ExperimentError::Invalid { field: f, .. }) => assert_eq!(f, field, "{yaml}"),
                other => panic!("{yaml}: {other:?}"),
            }
        }
    }
}
