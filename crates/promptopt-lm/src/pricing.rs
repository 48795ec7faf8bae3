//! Model prices and the cost of a call.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

use crate::Usage;

/// Price of a model in USD per million tokens.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ModelPrice {
    /// Uncached prompt tokens.
    pub input: f64,
    /// Generated tokens.
    pub output: f64,
    /// Prompt tokens read from the provider's prompt cache; `None` charges them as input.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cached_input: Option<f64>,
}

impl ModelPrice {
    /// A price with a cached-input rate.
    pub const fn new(input: f64, output: f64, cached_input: f64) -> Self {
        Self {
            input,
            output,
            cached_input: Some(cached_input),
        }
    }

    /// The cost in USD of a call with `usage` (prompt tokens include the cached ones).
    pub fn cost(&self, usage: &Usage) -> f64 {
        let cached = usage.cached_tokens.min(usage.prompt_tokens);
        let uncached = usage.prompt_tokens - cached;
        let cached_rate = self.cached_input.unwrap_or(self.input);
        (uncached as f64 * self.input
            + cached as f64 * cached_rate
            + usage.completion_tokens as f64 * self.output)
            / 1_000_000.0
    }
}

/// Built-in prices (USD per million tokens: input, output, cached input), keyed by
/// `provider/model`. Dated snapshots (`-2024-08-06`, `-20241022`, `-001`) and `-latest` aliases
/// resolve to their base name.
const BUILT_IN: &[(&str, ModelPrice)] = &[
    ("openai/gpt-4o", ModelPrice::new(2.50, 10.00, 1.25)),
    ("openai/gpt-4o-mini", ModelPrice::new(0.15, 0.60, 0.075)),
    ("openai/gpt-4.1", ModelPrice::new(2.00, 8.00, 0.50)),
    ("openai/gpt-4.1-mini", ModelPrice::new(0.40, 1.60, 0.10)),
    ("openai/gpt-4.1-nano", ModelPrice::new(0.10, 0.40, 0.025)),
    ("openai/o1", ModelPrice::new(15.00, 60.00, 7.50)),
    ("openai/o3", ModelPrice::new(2.00, 8.00, 0.50)),
    ("openai/o3-mini", ModelPrice::new(1.10, 4.40, 0.55)),
    ("openai/o4-mini", ModelPrice::new(1.10, 4.40, 0.275)),
    ("openai/gpt-5", ModelPrice::new(1.25, 10.00, 0.125)),
    ("openai/gpt-5-mini", ModelPrice::new(0.25, 2.00, 0.025)),
    ("openai/gpt-5-nano", ModelPrice::new(0.05, 0.40, 0.005)),
    (
        "anthropic/claude-opus-4-1",
        ModelPrice::new(15.00, 75.00, 1.50),
    ),
    (
        "anthropic/claude-opus-4-0",
        ModelPrice::new(15.00, 75.00, 1.50),
    ),
    (
        "anthropic/claude-opus-4",
        ModelPrice::new(15.00, 75.00, 1.50),
    ),
    (
        "anthropic/claude-sonnet-4-5",
        ModelPrice::new(3.00, 15.00, 0.30),
    ),
    (
        "anthropic/claude-sonnet-4-0",
        ModelPrice::new(3.00, 15.00, 0.30),
    ),
    (
        "anthropic/claude-sonnet-4",
        ModelPrice::new(3.00, 15.00, 0.30),
    ),
    (
        "anthropic/claude-3-7-sonnet",
        ModelPrice::new(3.00, 15.00, 0.30),
    ),
    (
        "anthropic/claude-3-5-sonnet",
        ModelPrice::new(3.00, 15.00, 0.30),
    ),
    (
        "anthropic/claude-haiku-4-5",
        ModelPrice::new(1.00, 5.00, 0.10),
    ),
    (
        "anthropic/claude-3-5-haiku",
        ModelPrice::new(0.80, 4.00, 0.08),
    ),
    (
        "anthropic/claude-3-haiku",
        ModelPrice::new(0.25, 1.25, 0.03),
    ),
    (
        "gemini/gemini-2.0-flash",
        ModelPrice::new(0.10, 0.40, 0.025),
    ),
    (
        "gemini/gemini-2.0-flash-lite",
        ModelPrice::new(0.075, 0.30, 0.01875),
    ),
    (
        "gemini/gemini-2.5-flash",
        ModelPrice::new(0.30, 2.50, 0.075),
    ),
    (
        "gemini/gemini-2.5-flash-lite",
        ModelPrice::new(0.10, 0.40, 0.025),
    ),
    ("gemini/gemini-2.5-pro", ModelPrice::new(1.25, 10.00, 0.31)),
];

/// Prices of models: the built-in table plus overrides from configuration.
///
/// `local/…` models cost exactly 0; a model neither in the table nor overridden has no price,
/// and its cost is reported as unknown (`None`), never as 0.
///
/// ```
/// use promptopt_lm::{ModelPrice, PriceTable, Usage};
///
/// let mut overrides = std::collections::BTreeMap::new();
/// overrides.insert("openai/my-finetune".to_string(), ModelPrice::new(1.0, 2.0, 0.5));
/// let table = PriceTable::with_overrides(&overrides);
/// let usage = Usage { prompt_tokens: 1_000_000, completion_tokens: 0, cached_tokens: 0 };
/// assert_eq!(table.resolve("openai/my-finetune").map(|p| p.cost(&usage)), Some(1.0));
/// assert!(table.resolve("openai/gpt-4o-2024-08-06").is_some());
/// assert_eq!(table.resolve("local/smollm2-135m").map(|p| p.cost(&usage)), Some(0.0));
/// assert!(table.resolve("acme/unknown").is_none());
/// ```
#[derive(Debug, Clone, Default, PartialEq)]
pub struct PriceTable {
    overrides: BTreeMap<String, ModelPrice>,
}

impl PriceTable {
    /// The built-in table.
    pub fn new() -> Self {
        Self::default()
    }

    /// The built-in table with `overrides` (keyed by `provider/model`) taking precedence.
    pub fn with_overrides(overrides: &BTreeMap<String, ModelPrice>) -> Self {
        Self {
            overrides: overrides.clone(),
        }
    }

    /// The price of `model` (`provider/model`), if known.
    pub fn resolve(&self, model: &str) -> Option<ModelPrice> {
        if model.starts_with("local/") {
            return Some(ModelPrice::new(0.0, 0.0, 0.0));
        }
        let overrides = self.overrides.iter().map(|(k, v)| (k.as_str(), *v));
        lookup(overrides, model).or_else(|| lookup(BUILT_IN.iter().copied(), model))
    }
}

/// The entry whose name is `model` or the longest one of which `model` is a dated snapshot.
fn lookup<'a>(
    entries: impl Iterator<Item = (&'a str, ModelPrice)>,
    model: &str,
) -> Option<ModelPrice> {
    let mut best: Option<(usize, ModelPrice)> = None;
    for (name, price) in entries {
        if name == model {
            return Some(price);
        }
        let matches = model
            .strip_prefix(name)
            .and_then(|rest| rest.strip_prefix('-'))
            .is_some_and(is_version_suffix);
        if matches && best.is_none_or(|(len, _)| name.len() > len) {
            best = Some((name.len(), price));
        }
    }
    best.map(|(_, price)| price)
}

/// `latest`, or digits and dashes (`2024-08-06`, `20241022`, `001`).
fn is_version_suffix(rest: &str) -> bool {
    rest == "latest"
        || (!rest.is_empty()
            && rest.starts_with(|c: char| c.is_ascii_digit())
            && rest.chars().all(|c| c.is_ascii_digit() || c == '-'))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn snapshots_resolve_to_their_base_model_but_variants_do_not() {
        let table = PriceTable::new();
        let mini = table.resolve("openai/gpt-4o-mini-2024-07-18");
        assert_eq!(mini, table.resolve("openai/gpt-4o-mini"));
        assert_eq!(
            table.resolve("anthropic/claude-3-5-haiku-20241022"),
            table.resolve("anthropic/claude-3-5-haiku-latest")
        );
        assert!(table.resolve("gemini/gemini-2.0-flash-001").is_some());
        assert!(table.resolve("openai/gpt-4o-audio-preview").is_none());
        assert!(table.resolve("openai/gpt-4o").is_some());
    }

    #[test]
    fn cached_tokens_are_charged_at_the_cached_rate() {
        let price = ModelPrice::new(2.0, 8.0, 0.5);
        let usage = Usage {
            prompt_tokens: 1_000_000,
            completion_tokens: 500_000,
            cached_tokens: 400_000,
        };
        let cost = price.cost(&usage);
        assert!((cost - (0.6 * 2.0 + 0.4 * 0.5 + 0.5 * 8.0)).abs() < 1e-12);
    }

    #[test]
    fn overrides_win_over_the_built_in_table() {
        let mut overrides = BTreeMap::new();
        overrides.insert("openai/gpt-4o".to_owned(), ModelPrice::new(1.0, 1.0, 1.0));
        let table = PriceTable::with_overrides(&overrides);
        assert_eq!(
            table.resolve("openai/gpt-4o-2024-08-06"),
            Some(ModelPrice::new(1.0, 1.0, 1.0))
        );
    }
}
