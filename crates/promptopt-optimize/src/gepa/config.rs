//! GEPA's settings: the guide's `algorithm_config` keys and GEPA's own.
//!
//! How the guide's genetic vocabulary maps onto reflective evolution:
//!
//! | key | meaning here |
//! |---|---|
//! | `population_size` | cap on the candidate pool; when a new candidate would exceed it, candidates are retired: first those on no per-example front, then those dominated, then the lowest average score (never one of the `elite_size` best) |
//! | `num_generations` | maximum number of iterations (each iteration is one reflective mutation or one merge attempt) |
//! | `mutation_rate` | with `module_selector: all`, the probability that each predictor is rewritten in a reflective mutation (at least one always is); with `round_robin` (each stage in turn) or `blame` (the stage the parent's traces blame for its misses) exactly one predictor is rewritten and the rate is not used |
//! | `crossover_rate` | the probability that an iteration in which a merge is due tries the merge instead of a reflective mutation (GEPA always does: 1.0) |
//! | `elite_size` | the best candidates (by average validation score) that pruning never retires |
//! | `tournament_size` | parent selection by tournament: that many frontier candidates drawn uniformly, the best average wins; unset: frequency-weighted draw over the frontier as GEPA does |
//!
//! `parallel_proposals` (default 1, GEPA's loop) makes each reflective iteration a round of that
//! many proposals, each with its own parent and minibatch; their evaluations and reflection
//! calls run at the same time, so a batching engine serves them together. Each proposal costs
//! the same metric calls as an iteration of its own, so a budget buys about the same number of
//! proposals in fewer rounds; with `num_generations`, each round counts as one generation.
//!
//! The budget counts metric calls (one example evaluated by one candidate) made by GEPA's own
//! loop. `auto` sizes it for the loop itself (see [`AutoBudget::metric_calls`]).

use serde::{Deserialize, Serialize};

use serde_json::Value;

use crate::{AlgorithmConfig, OptimizeError};

/// Every key `algorithm_config` may hold for GEPA.
pub const VALID_KEYS: &[&str] = &[
    "population_size",
    "num_generations",
    "mutation_rate",
    "crossover_rate",
    "elite_size",
    "tournament_size",
    "reflection_minibatch_size",
    "max_metric_calls",
    "auto",
    "skip_perfect_score",
    "perfect_score",
    "reflection_lm",
    "reflection_max_tokens",
    "candidate_selection_strategy",
    "use_merge",
    "max_merge_invocations",
    "merge_subsample_size",
    "module_selector",
    "parallel_proposals",
];

/// Default cap on a reflection reply, in tokens: the room MIPROv2's proposer gives an instruction.
pub const DEFAULT_REFLECTION_MAX_TOKENS: u32 = 512;

/// Most reflective proposals one iteration may make at once.
pub const MAX_PARALLEL_PROPOSALS: usize = 32;

/// A budget preset for GEPA's own loop.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum AutoBudget {
    /// 12 reflective iterations, room for 3 accepted children.
    Light,
    /// 24 reflective iterations, room for 6 accepted children.
    Medium,
    /// 48 reflective iterations, room for 12 accepted children.
    Heavy,
}

impl AutoBudget {
    /// Reflective iterations the preset pays for.
    pub fn iterations(self) -> u64 {
        match self {
            AutoBudget::Light => 12,
            AutoBudget::Medium => 24,
            AutoBudget::Heavy => 48,
        }
    }

    /// Accepted children (full validation evaluations) the preset pays for.
    pub fn accepted(self) -> u64 {
        match self {
            AutoBudget::Light => 3,
            AutoBudget::Medium => 6,
            AutoBudget::Heavy => 12,
        }
    }

    /// The metric-call budget of the preset for GEPA's loop:
    ///
    /// ```text
    /// (1 + A) * V            seed evaluation + A accepted children on the validation set
    /// + I * 2 * b            I reflective iterations: parent and child on a minibatch of b
    /// + M * s                M merge attempts on a subsample of s (M = min(A, max_merges), 0 without merge)
    /// ```
    ///
    /// with `I`, `A` from the preset. For one light run with V = 50, b = 3, s = 5 and merge on:
    /// 4·50 + 12·6 + 3·5 = 287.
    pub fn metric_calls(
        self,
        valset_size: usize,
        minibatch_size: usize,
        merge_attempts: u64,
        merge_subsample: usize,
    ) -> u64 {
        let v = valset_size as u64;
        let b = minibatch_size as u64;
        let merges = merge_attempts.min(self.accepted());
        (1 + self.accepted()) * v + self.iterations() * 2 * b + merges * merge_subsample as u64
    }
}

/// How the parent of a reflective mutation is chosen.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum CandidateSelection {
    /// From the Pareto frontier, weighted by how many validation examples each candidate is best
    /// on (or by tournament when `tournament_size` is set).
    #[default]
    Pareto,
    /// The candidate with the best average validation score.
    CurrentBest,
}

/// Which predictors a reflective mutation rewrites.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ModuleSelector {
    /// One predictor per mutation, in turn (a child continues its parent's turn).
    #[default]
    RoundRobin,
    /// Every predictor (each with probability `mutation_rate`, at least one).
    All,
    /// The stage the parent's minibatch traces blame (where the expected answer was lost, or
    /// whose reply did not parse); round robin when nothing is to blame.
    Blame,
}

/// GEPA's settings, as `algorithm_config` spells them.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct GepaConfig {
    /// Cap on the candidate pool; `None` keeps every candidate (GEPA's behaviour).
    pub population_size: Option<usize>,
    /// Maximum iterations; `None` stops on the budget only.
    pub num_generations: Option<u64>,
    /// Per-predictor rewrite probability with `module_selector: all`.
    pub mutation_rate: f64,
    /// Probability of trying a due merge instead of a reflective mutation.
    pub crossover_rate: f64,
    /// Best candidates never retired by the pool cap.
    pub elite_size: usize,
    /// Parent selection by tournament of this size; `None`: frequency-weighted frontier draw.
    pub tournament_size: Option<usize>,
    /// Training examples per reflective minibatch.
    pub reflection_minibatch_size: usize,
    /// Metric-call budget of the loop (exclusive with `auto`).
    pub max_metric_calls: Option<u64>,
    /// Budget preset (exclusive with `max_metric_calls`).
    pub auto: Option<AutoBudget>,
    /// Skip reflection when the parent is perfect on the whole minibatch.
    pub skip_perfect_score: bool,
    /// The score that counts as perfect.
    pub perfect_score: f64,
    /// The model that writes new instructions (`provider/model`); `None`: the run's prompt model.
    pub reflection_lm: Option<String>,
    /// Most tokens a reflection reply may have (a paragraph of instructions fits in the default,
    /// [`DEFAULT_REFLECTION_MAX_TOKENS`]); the cap is sent with every reflection call, so it does
    /// not depend on the server's default.
    pub reflection_max_tokens: u32,
    /// Parent selection strategy.
    pub candidate_selection_strategy: CandidateSelection,
    /// Whether to merge candidates.
    pub use_merge: bool,
    /// Maximum merge attempts in a run.
    pub max_merge_invocations: u64,
    /// Validation examples a merged candidate is first checked on.
    pub merge_subsample_size: usize,
    /// Which predictors a mutation rewrites.
    pub module_selector: ModuleSelector,
    /// Reflective proposals per iteration, evaluated together (1: GEPA's loop).
    pub parallel_proposals: usize,
}

impl Default for GepaConfig {
    fn default() -> Self {
        Self {
            population_size: None,
            num_generations: None,
            mutation_rate: 1.0,
            crossover_rate: 1.0,
            elite_size: 1,
            tournament_size: None,
            reflection_minibatch_size: 3,
            max_metric_calls: None,
            auto: None,
            skip_perfect_score: true,
            perfect_score: 1.0,
            reflection_lm: None,
            reflection_max_tokens: DEFAULT_REFLECTION_MAX_TOKENS,
            candidate_selection_strategy: CandidateSelection::Pareto,
            use_merge: true,
            max_merge_invocations: 5,
            merge_subsample_size: 5,
            module_selector: ModuleSelector::RoundRobin,
            parallel_proposals: 1,
        }
    }
}

impl GepaConfig {
    /// Reads the settings from a request's `algorithm_config` and checks them.
    ///
    /// An unknown key is an error that lists the valid ones; `null` values mean the default.
    /// BootstrapFewShot's keys ([`super::DEMO_KEYS`]) are accepted and left to
    /// [`super::Gepa::with_demos`].
    pub fn from_config(config: &AlgorithmConfig) -> Result<Self, OptimizeError> {
        config.check_keys("algorithm_config", "gepa", &super::all_keys())?;
        // The demo keys are BootstrapFewShot's (read by the pipeline with `few_shot_examples`).
        let map: serde_json::Map<String, Value> = config
            .0
            .iter()
            .filter(|(k, v)| !v.is_null() && !super::DEMO_KEYS.contains(&k.as_str()))
            .map(|(k, v)| (k.clone(), v.clone()))
            .collect();
        let parsed: GepaConfig = serde_json::from_value(Value::Object(map)).map_err(|e| {
            OptimizeError::InvalidConfig {
                key: "algorithm_config".to_string(),
                message: format!("invalid GEPA settings: {e}"),
            }
        })?;
        parsed.validate()?;
        Ok(parsed)
    }

    /// Checks ranges and exclusive keys.
    pub fn validate(&self) -> Result<(), OptimizeError> {
        let err = |key: &str, message: &str| {
            Err(OptimizeError::InvalidConfig {
                key: key.to_string(),
                message: message.to_string(),
            })
        };
        if self.auto.is_some() && self.max_metric_calls.is_some() {
            return err("auto", "set either `auto` or `max_metric_calls`, not both");
        }
        if !(0.0..=1.0).contains(&self.mutation_rate) {
            return err("mutation_rate", "must be between 0 and 1");
        }
        if !(0.0..=1.0).contains(&self.crossover_rate) {
            return err("crossover_rate", "must be between 0 and 1");
        }
        if self.reflection_minibatch_size == 0 {
            return err("reflection_minibatch_size", "must be at least 1");
        }
        if self.reflection_max_tokens == 0 {
            return err("reflection_max_tokens", "must be at least 1");
        }
        if self.merge_subsample_size == 0 {
            return err("merge_subsample_size", "must be at least 1");
        }
        if !(1..=MAX_PARALLEL_PROPOSALS).contains(&self.parallel_proposals) {
            return err(
                "parallel_proposals",
                &format!("must be between 1 and {MAX_PARALLEL_PROPOSALS}"),
            );
        }
        if self.tournament_size == Some(0) {
            return err("tournament_size", "must be at least 1");
        }
        if let Some(cap) = self.population_size {
            if cap < 2 {
                return err("population_size", "must be at least 2");
            }
            if self.elite_size > cap {
                return err("elite_size", "must not exceed `population_size`");
            }
        }
        if !self.perfect_score.is_finite() {
            return err("perfect_score", "must be a finite number");
        }
        Ok(())
    }

    /// The metric-call budget of the loop for a validation set of `valset_size` examples:
    /// `max_metric_calls` if set, else the `auto` preset's formula, else light when neither
    /// `num_generations` is set; `None` when only `num_generations` bounds the run.
    pub fn metric_call_budget(&self, valset_size: usize) -> Option<u64> {
        if let Some(max) = self.max_metric_calls {
            return Some(max);
        }
        let preset = match (self.auto, self.num_generations) {
            (Some(preset), _) => preset,
            (None, Some(_)) => return None,
            (None, None) => AutoBudget::Light,
        };
        let merges = if self.use_merge {
            self.max_merge_invocations
        } else {
            0
        };
        Some(preset.metric_calls(
            valset_size,
            self.reflection_minibatch_size,
            merges,
            self.merge_subsample_size.min(valset_size),
        ))
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;
    use serde_json::json;

    fn parse(v: serde_json::Value) -> Result<GepaConfig, OptimizeError> {
        GepaConfig::from_config(&AlgorithmConfig::from_json(v)?)
    }

    #[test]
    fn guide_keys_parse() {
        let c = parse(json!({
            "population_size": 30, "num_generations": 15, "mutation_rate": 0.2,
            "crossover_rate": 0.7, "elite_size": 5, "tournament_size": 3
        }))
        .unwrap();
        assert_eq!(c.population_size, Some(30));
        assert_eq!(c.tournament_size, Some(3));
        assert_eq!(c.reflection_minibatch_size, 3);
        assert_eq!(c.metric_call_budget(50), None);
    }

    #[test]
    fn unknown_key_lists_valid_ones() {
        let e = parse(json!({"populaton_size": 3})).unwrap_err();
        let text = e.to_string();
        assert!(text.contains("`populaton_size`"), "{text}");
        assert!(text.contains("reflection_minibatch_size"), "{text}");
    }

    #[test]
    fn auto_formula_counts_gepa_loop() {
        assert_eq!(AutoBudget::Light.metric_calls(50, 3, 5, 5), 287);
        assert_eq!(
            AutoBudget::Medium.metric_calls(50, 3, 5, 5),
            7 * 50 + 24 * 6 + 5 * 5
        );
        assert_eq!(
            AutoBudget::Heavy.metric_calls(50, 3, 0, 5),
            13 * 50 + 48 * 6
        );
        let c = GepaConfig::default();
        assert_eq!(c.metric_call_budget(50), Some(287));
        let c = parse(json!({"auto": "medium", "use_merge": false})).unwrap();
        assert_eq!(c.metric_call_budget(20), Some(7 * 20 + 24 * 6));
    }

    #[test]
    fn exclusive_and_ranges_checked() {
        assert!(parse(json!({"auto": "light", "max_metric_calls": 10})).is_err());
        assert!(parse(json!({"mutation_rate": 1.5})).is_err());
        assert!(parse(json!({"population_size": 3, "elite_size": 4})).is_err());
        assert!(parse(json!({"auto": "extreme"})).is_err());
        assert!(parse(json!({"reflection_max_tokens": 0})).is_err());
        let e = parse(json!({"parallel_proposals": 0}))
            .unwrap_err()
            .to_string();
        assert!(
            e.contains("`parallel_proposals`") && e.contains("between 1 and 32"),
            "{e}"
        );
        assert!(parse(json!({"parallel_proposals": 33})).is_err());
        assert_eq!(
            parse(json!({"parallel_proposals": 4}))
                .unwrap()
                .parallel_proposals,
            4
        );
        assert_eq!(
            parse(json!({"reflection_max_tokens": 128}))
                .unwrap()
                .reflection_max_tokens,
            128
        );
        assert_eq!(GepaConfig::default().reflection_max_tokens, 512);
        assert!(parse(serde_json::Value::Null).is_ok());
    }
}
