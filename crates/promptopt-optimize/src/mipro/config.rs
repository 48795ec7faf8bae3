//! MIPROv2 settings: the guide's `algorithm_config` keys, DSPy's own keys, and how the `auto`
//! presets turn them into a plan.

use serde::{Deserialize, Serialize};

use crate::{AlgorithmConfig, OptimizeError};

/// Every key `algorithm_config` accepts for `miprov2` (aliases included).
pub const CONFIG_KEYS: &[&str] = &[
    "auto",
    "num_candidates",
    "num_iterations",
    "num_trials",
    "temperature",
    "init_temperature",
    "diversity_penalty",
    "early_stopping",
    "patience",
    "max_bootstrapped_demos",
    "max_labeled_demos",
    "max_rounds",
    "metric_threshold",
    "minibatch",
    "minibatch_size",
    "minibatch_full_eval_steps",
    "program_aware",
    "program_aware_proposer",
    "data_aware",
    "data_aware_proposer",
    "use_dataset_summary",
    "tip_aware",
    "tip_aware_proposer",
    "fewshot_aware",
    "fewshot_aware_proposer",
    "view_data_batch_size",
    "use_instruct_history",
];

/// The same list under the name request validation uses.
pub const VALID_KEYS: &[&str] = CONFIG_KEYS;

/// DSPy's `BOOTSTRAPPED_FEWSHOT_EXAMPLES_IN_CONTEXT`: bootstrapped demos shown to the proposer
/// (and the bootstrap size used to build them in zero-shot mode).
pub const PROPOSER_DEMOS_IN_CONTEXT: usize = 3;

/// Validation sets larger than this are minibatched in `auto` mode (DSPy's
/// `MIN_MINIBATCH_SIZE`), unless `minibatch` is given.
pub const AUTO_MINIBATCH_THRESHOLD: usize = 50;

/// The `auto` presets of DSPy's MIPROv2.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum AutoMode {
    /// `n = 6`, validation capped at 100 examples.
    Light,
    /// `n = 12`, validation capped at 300 examples.
    Medium,
    /// `n = 18`, validation capped at 1000 examples.
    Heavy,
}

impl AutoMode {
    /// The preset's `n`: demo-set candidates, and instruction candidates (half of it when demos
    /// are optimized too).
    pub fn n(self) -> usize {
        match self {
            AutoMode::Light => 6,
            AutoMode::Medium => 12,
            AutoMode::Heavy => 18,
        }
    }

    /// The preset's validation-set cap.
    pub fn val_size(self) -> usize {
        match self {
            AutoMode::Light => 100,
            AutoMode::Medium => 300,
            AutoMode::Heavy => 1000,
        }
    }

    /// The preset's name.
    pub fn as_str(self) -> &'static str {
        match self {
            AutoMode::Light => "light",
            AutoMode::Medium => "medium",
            AutoMode::Heavy => "heavy",
        }
    }
}

/// MIPROv2's `algorithm_config`.
///
/// Either `auto` (a preset; the default is `light`) or both `num_candidates` and
/// `num_iterations` (manual). Differences from DSPy, on purpose: the run's seed is used as given
/// (`0` included); every proposed instruction is a candidate and the original instruction is one
/// more (DSPy overwrites its first proposal); `minibatch`, when given, is honoured (DSPy's `auto`
/// ignores it and minibatches exactly when the validation set has more than 50 examples, which
/// stays the rule when `minibatch` is not given).
///
/// ```
/// use promptopt_optimize::mipro::{AutoMode, MiproConfig};
///
/// let config: MiproConfig = serde_json::from_str(r#"{"auto": "medium", "patience": 2}"#).unwrap();
/// let plan = config.plan(1).unwrap();
/// assert_eq!(plan.auto, Some(AutoMode::Medium));
/// assert_eq!((plan.num_instruct_candidates, plan.num_fewshot_candidates, plan.num_trials), (6, 12, 18));
/// ```
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct MiproConfig {
    /// A preset (`light`, `medium`, `heavy`); excludes `num_candidates` and `num_iterations`.
    pub auto: Option<AutoMode>,
    /// Manual mode: instruction proposals and demo-set candidates per predictor.
    pub num_candidates: Option<usize>,
    /// Manual mode: search trials (DSPy's `num_trials`).
    #[serde(alias = "num_trials")]
    pub num_iterations: Option<usize>,
    /// Sampling temperature of the instruction proposals (DSPy's `init_temperature`).
    #[serde(alias = "init_temperature")]
    pub temperature: f64,
    /// From 0 to 1: a proposal whose word-set Jaccard similarity to an earlier candidate of the
    /// same predictor exceeds `1 - diversity_penalty` is proposed once more at a higher
    /// temperature and dropped if it is still too similar. `0` drops only exact duplicates.
    pub diversity_penalty: f64,
    /// Stop the search when `patience` full evaluations in a row did not improve the best.
    pub early_stopping: bool,
    /// Full evaluations without improvement before `early_stopping` stops the search.
    pub patience: usize,
    /// Most bootstrapped demos per demo set.
    pub max_bootstrapped_demos: usize,
    /// Most labeled (raw training) demos per demo set.
    pub max_labeled_demos: usize,
    /// Bootstrapping rounds per training example.
    pub max_rounds: usize,
    /// A bootstrapped trace counts as a success when its metric score reaches this (default:
    /// the metric's own notion of success).
    pub metric_threshold: Option<f64>,
    /// Score trials on minibatches (default: `auto` minibatches when the validation set has
    /// more than 50 examples; manual mode when it is larger than `minibatch_size`).
    pub minibatch: Option<bool>,
    /// Validation examples per minibatch trial.
    pub minibatch_size: usize,
    /// Minibatch trials between full evaluations of the best-averaging candidate.
    pub minibatch_full_eval_steps: usize,
    /// Describe the program and each predictor to the proposer.
    #[serde(alias = "program_aware_proposer")]
    pub program_aware: bool,
    /// Show the proposer a summary of the training data.
    #[serde(alias = "data_aware_proposer", alias = "use_dataset_summary")]
    pub data_aware: bool,
    /// Give each proposal a randomly chosen prompting tip.
    #[serde(alias = "tip_aware_proposer")]
    pub tip_aware: bool,
    /// Show the proposer bootstrapped demos.
    #[serde(alias = "fewshot_aware_proposer")]
    pub fewshot_aware: bool,
    /// Training examples per dataset-summary call.
    pub view_data_batch_size: usize,
    /// Show the proposer the instructions proposed before for the same predictor.
    pub use_instruct_history: bool,
}

impl Default for MiproConfig {
    fn default() -> Self {
        Self {
            auto: None,
            num_candidates: None,
            num_iterations: None,
            temperature: 1.0,
            diversity_penalty: 0.0,
            early_stopping: false,
            patience: 3,
            max_bootstrapped_demos: 4,
            max_labeled_demos: 4,
            max_rounds: 1,
            metric_threshold: None,
            minibatch: None,
            minibatch_size: 35,
            minibatch_full_eval_steps: 5,
            program_aware: true,
            data_aware: true,
            tip_aware: true,
            fewshot_aware: true,
            view_data_batch_size: 10,
            use_instruct_history: false,
        }
    }
}

/// The numbers a run of MIPROv2 follows, derived from a [`MiproConfig`] and the program.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct MiproPlan {
    /// The preset used, if any.
    pub auto: Option<AutoMode>,
    /// Neither bootstrapped nor labeled demos: only instructions are searched.
    pub zero_shot: bool,
    /// Instruction proposals per predictor (the original instruction is one more candidate).
    pub num_instruct_candidates: usize,
    /// Demo-set candidates per predictor (including the empty set).
    pub num_fewshot_candidates: usize,
    /// Search trials after the default program's full evaluation.
    pub num_trials: usize,
    /// The preset's cap on the validation set, if any.
    pub val_size: Option<usize>,
}

impl MiproConfig {
    /// Reads the config from a request's `algorithm_config`; unknown keys are an error that
    /// lists the valid ones.
    pub fn from_algorithm_config(config: &AlgorithmConfig) -> Result<Self, OptimizeError> {
        config.check_keys("algorithm_config", "miprov2", CONFIG_KEYS)?;
        let object: serde_json::Map<String, serde_json::Value> = config
            .0
            .iter()
            .filter(|(_, v)| !v.is_null())
            .map(|(k, v)| (k.clone(), v.clone()))
            .collect();
        let parsed: MiproConfig = serde_json::from_value(serde_json::Value::Object(object))
            .map_err(|e| OptimizeError::InvalidConfig {
                key: "algorithm_config".into(),
                message: e.to_string(),
            })?;
        parsed.validate()?;
        Ok(parsed)
    }

    /// Reads the config from `algorithm_config` given as JSON (`null` means all defaults).
    pub fn from_value(value: &serde_json::Value) -> Result<Self, OptimizeError> {
        Self::from_algorithm_config(&AlgorithmConfig::from_json(value.clone())?)
    }

    /// Checks ranges and combinations.
    pub fn validate(&self) -> Result<(), OptimizeError> {
        let invalid = |key: &str, message: &str| {
            Err(OptimizeError::InvalidConfig {
                key: key.into(),
                message: message.into(),
            })
        };
        if self.auto.is_some() && (self.num_candidates.is_some() || self.num_iterations.is_some()) {
            return invalid(
                "auto",
                "`auto` sets `num_candidates` and `num_iterations`; give either `auto` or both of them",
            );
        }
        if self.auto.is_none() && self.num_candidates.is_some() != self.num_iterations.is_some() {
            return invalid(
                "num_candidates",
                "without `auto`, give both `num_candidates` and `num_iterations`",
            );
        }
        if self.num_candidates == Some(0) {
            return invalid("num_candidates", "must be at least 1");
        }
        if !(0.0..=2.0).contains(&self.temperature) {
            return invalid("temperature", "must be between 0 and 2");
        }
        if !(0.0..=1.0).contains(&self.diversity_penalty) {
            return invalid("diversity_penalty", "must be between 0 and 1");
        }
        if self.early_stopping && self.patience == 0 {
            return invalid("patience", "must be at least 1 with `early_stopping`");
        }
        if self.max_rounds == 0 {
            return invalid("max_rounds", "must be at least 1");
        }
        if self.minibatch_size == 0 {
            return invalid("minibatch_size", "must be at least 1");
        }
        if self.minibatch_full_eval_steps == 0 {
            return invalid("minibatch_full_eval_steps", "must be at least 1");
        }
        if self.view_data_batch_size == 0 {
            return invalid("view_data_batch_size", "must be at least 1");
        }
        Ok(())
    }

    /// Whether only instructions are searched (no demos of either kind).
    pub fn zero_shot(&self) -> bool {
        self.max_bootstrapped_demos == 0 && self.max_labeled_demos == 0
    }

    /// The plan for a program with `num_predictors` predictors.
    ///
    /// With a preset of size `n` (DSPy's `_set_hyperparams_from_run_mode`): demo sets `n`;
    /// instruction proposals `n` in zero-shot mode, else `n / 2`; trials
    /// `floor(max(2 * v * log2(n), 1.5 * n))` with `v` the number of searched variables (one per
    /// predictor in zero-shot mode, else two). In manual mode both candidate counts are
    /// `num_candidates` and the trials `num_iterations`.
    pub fn plan(&self, num_predictors: usize) -> Result<MiproPlan, OptimizeError> {
        self.validate()?;
        let zero_shot = self.zero_shot();
        let manual = self.num_candidates.zip(self.num_iterations);
        let (auto, instruct, fewshot, trials) = match (self.auto, manual) {
            (None, Some((candidates, trials))) => (None, candidates, candidates, trials),
            (auto, _) => {
                let mode = auto.unwrap_or(AutoMode::Light);
                let n = mode.n();
                let instruct = if zero_shot { n } else { n / 2 };
                (
                    Some(mode),
                    instruct,
                    n,
                    trials_for(num_predictors, zero_shot, n),
                )
            }
        };
        Ok(MiproPlan {
            auto,
            zero_shot,
            num_instruct_candidates: instruct,
            num_fewshot_candidates: fewshot,
            num_trials: trials,
            val_size: auto.map(AutoMode::val_size),
        })
    }

    /// Whether trials are scored on minibatches of a validation set of `val_len` examples
    /// (after the preset's cap), and the error when `minibatch` is asked for but the set is
    /// smaller than `minibatch_size`.
    pub fn use_minibatch(&self, plan: &MiproPlan, val_len: usize) -> Result<bool, OptimizeError> {
        match self.minibatch {
            Some(true) if self.minibatch_size > val_len => Err(OptimizeError::InvalidConfig {
                key: "minibatch_size".into(),
                message: format!(
                    "{} exceeds the {val_len} validation examples; lower it or set `minibatch: false`",
                    self.minibatch_size
                ),
            }),
            Some(given) => Ok(given),
            None if plan.auto.is_some() => Ok(val_len > AUTO_MINIBATCH_THRESHOLD
                && self.minibatch_size <= val_len),
            None => Ok(val_len > self.minibatch_size),
        }
    }
}

/// DSPy's `_set_num_trials_from_num_candidates`: `floor(max(2 v log2(n), 1.5 n))`.
pub fn trials_for(num_predictors: usize, zero_shot: bool, n: usize) -> usize {
    let vars = if zero_shot {
        num_predictors
    } else {
        2 * num_predictors
    };
    let n = n.max(1) as f64;
    (2.0 * vars as f64 * n.log2()).max(1.5 * n).floor() as usize
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    fn parse(json: &str) -> Result<MiproConfig, OptimizeError> {
        MiproConfig::from_value(&serde_json::from_str(json).unwrap())
    }

    #[test]
    fn presets_match_dspy() {
        let c = MiproConfig::default();
        let p = c.plan(1).unwrap();
        assert_eq!(p.auto, Some(AutoMode::Light));
        assert_eq!(
            (
                p.num_instruct_candidates,
                p.num_fewshot_candidates,
                p.num_trials
            ),
            (3, 6, 10)
        );
        let medium = parse(r#"{"auto":"medium"}"#).unwrap().plan(1).unwrap();
        assert_eq!((medium.num_instruct_candidates, medium.num_trials), (6, 18));
        let heavy = parse(r#"{"auto":"heavy"}"#).unwrap().plan(1).unwrap();
        assert_eq!((heavy.num_instruct_candidates, heavy.num_trials), (9, 27));
        // Zero-shot, one predictor: light 6 / 9 trials, medium 12 / 18, heavy 18 / 27.
        let zs = |auto: &str| {
            let json =
                format!(r#"{{"auto":"{auto}","max_bootstrapped_demos":0,"max_labeled_demos":0}}"#);
            let p = parse(&json).unwrap().plan(1).unwrap();
            (p.num_instruct_candidates, p.num_trials)
        };
        assert_eq!(zs("light"), (6, 9));
        assert_eq!(zs("medium"), (12, 18));
        assert_eq!(zs("heavy"), (18, 27));
        // Three predictors with demos: light 31, medium 43, heavy 50 trials.
        assert_eq!(trials_for(3, false, 6), 31);
        assert_eq!(trials_for(3, false, 12), 43);
        assert_eq!(trials_for(3, false, 18), 50);
        assert_eq!(c.plan(1).unwrap().val_size, Some(100));
    }

    #[test]
    fn guide_keys_give_manual_mode() {
        let c = parse(
            r#"{"num_candidates":20,"num_iterations":10,"temperature":0.7,
                "diversity_penalty":0.1,"early_stopping":true,"patience":3}"#,
        )
        .unwrap();
        let p = c.plan(2).unwrap();
        assert_eq!(p.auto, None);
        assert_eq!(
            (
                p.num_instruct_candidates,
                p.num_fewshot_candidates,
                p.num_trials
            ),
            (20, 20, 10)
        );
        assert_eq!(p.val_size, None);
        assert_eq!(c.temperature, 0.7);
        let dspy_names =
            parse(r#"{"num_candidates":4,"num_trials":7,"init_temperature":0.5}"#).unwrap();
        assert_eq!(dspy_names.num_iterations, Some(7));
        assert_eq!(dspy_names.temperature, 0.5);
    }

    #[test]
    fn unknown_keys_and_bad_combinations_are_errors() {
        let err = parse(r#"{"num_candidate":3}"#).unwrap_err().to_string();
        assert!(err.contains("`num_candidate`"), "{err}");
        assert!(err.contains("`num_candidates`, `num_iterations`"), "{err}");
        let err = parse(r#"{"auto":"light","num_candidates":3}"#)
            .unwrap_err()
            .to_string();
        assert!(err.contains("`auto`"), "{err}");
        assert!(parse(r#"{"num_candidates":3}"#).is_err());
        assert!(parse(r#"{"auto":"extreme"}"#).is_err());
        assert!(parse(r#"{"diversity_penalty":1.5}"#).is_err());
        assert!(parse(r#"{"early_stopping":true,"patience":0}"#).is_err());
        assert!(parse(r#"{"temperature":0.3,"init_temperature":0.3}"#).is_err());
    }

    #[test]
    fn minibatch_is_honoured_when_given() {
        let light = MiproConfig::default();
        let plan = light.plan(1).unwrap();
        assert!(!light.use_minibatch(&plan, 50).unwrap());
        assert!(light.use_minibatch(&plan, 51).unwrap());
        let forced = MiproConfig {
            minibatch: Some(true),
            ..MiproConfig::default()
        };
        assert!(forced.use_minibatch(&plan, 50).unwrap());
        assert!(forced.use_minibatch(&plan, 20).is_err());
        let off = MiproConfig {
            minibatch: Some(false),
            ..MiproConfig::default()
        };
        assert!(!off.use_minibatch(&plan, 500).unwrap());
    }

    #[test]
    fn every_field_is_a_valid_key() {
        let value = serde_json::to_value(MiproConfig::default()).unwrap();
        for key in value.as_object().unwrap().keys() {
            assert!(CONFIG_KEYS.contains(&key.as_str()), "{key}");
        }
    }
}
