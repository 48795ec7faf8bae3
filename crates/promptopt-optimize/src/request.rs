//! `OptimizationRequest`: what to optimize, how to measure it and within which limits.

use std::path::{Path, PathBuf};

use promptopt_core::metrics::{self, METRIC_NAMES};
use promptopt_core::program::{parse_signature, StageSpec};
use promptopt_core::{dataset, Example};
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

use crate::{
    gepa, mipro, AlgorithmConfig, BootstrapFewShot, BootstrapFewShotWithRandomSearch,
    LabeledFewShot, OptimizeError, Optimizer,
};

/// The task model when a request names none: the embedded SmolLM2-135M-Instruct.
pub const DEFAULT_MODEL: &str = "local/smollm2-135m";

/// The prompt model of MIPROv2 and GEPA when the task model is embedded and the request names
/// none: of the embedded models it wrote the most coherent instructions per minute
/// (`docs/results.md`, "Choosing the prompt model"). `promptopt models pull` fetches it (1.1 GB).
pub const DEFAULT_LOCAL_PROMPT_MODEL: &str = "local/qwen2.5-coder-1.5b";

/// What the optimization may change.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Target {
    /// Instructions (MIPROv2, GEPA).
    PromptTemplate,
    /// Demonstrations (LabeledFewShot, BootstrapFewShot, random search; MIPROv2 too).
    FewShotExamples,
    /// Predict or chain of thought, chosen on the validation set.
    ReasoningStrategy,
    /// Which tools a predictor may use.
    ToolSelection,
    /// Which model runs the program, chosen by the objective under the constraints.
    ModelSelection,
}

impl Target {
    /// Every kind.
    pub const ALL: [Target; 5] = [
        Target::PromptTemplate,
        Target::FewShotExamples,
        Target::ReasoningStrategy,
        Target::ToolSelection,
        Target::ModelSelection,
    ];
}

/// A request's `target`: one of the five kinds, or a free-form name such as
/// `summarization_prompt` (the saved model's name unless `name` is given; what is optimized then
/// follows the algorithm).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(untagged)]
pub enum TargetSpec {
    /// One of the kinds.
    Kind(Target),
    /// A name.
    Name(String),
}

impl Target {
    /// The name request files use.
    pub fn as_str(self) -> &'static str {
        match self {
            Target::PromptTemplate => "prompt_template",
            Target::FewShotExamples => "few_shot_examples",
            Target::ReasoningStrategy => "reasoning_strategy",
            Target::ToolSelection => "tool_selection",
            Target::ModelSelection => "model_selection",
        }
    }
}

/// What the optimization tries to achieve.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Objective {
    /// The highest metric score.
    #[default]
    MaximizeAccuracy,
    /// The lowest cost per example among candidates that meet the constraints.
    MinimizeCost,
    /// The lowest p95 latency among candidates that meet the constraints.
    MinimizeLatency,
    /// The best value of the custom metric `evaluation_metric` names (its own direction).
    Custom,
}

/// Which optimizer runs.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Algorithm {
    /// MIPROv2: proposed instructions and demo sets searched with TPE.
    Miprov2,
    /// BootstrapFewShot.
    Bootstrapfewshot,
    /// GEPA: reflective evolution with a Pareto frontier.
    Gepa,
    /// LabeledFewShot.
    Labeledfewshot,
    /// BootstrapFewShotWithRandomSearch.
    BootstrapfewshotRandomSearch,
}

impl Algorithm {
    /// Every algorithm.
    pub const ALL: [Algorithm; 5] = [
        Algorithm::Miprov2,
        Algorithm::Bootstrapfewshot,
        Algorithm::Gepa,
        Algorithm::Labeledfewshot,
        Algorithm::BootstrapfewshotRandomSearch,
    ];

    /// The name request files use.
    pub fn as_str(self) -> &'static str {
        match self {
            Algorithm::Miprov2 => "miprov2",
            Algorithm::Bootstrapfewshot => "bootstrapfewshot",
            Algorithm::Gepa => "gepa",
            Algorithm::Labeledfewshot => "labeledfewshot",
            Algorithm::BootstrapfewshotRandomSearch => "bootstrapfewshot_random_search",
        }
    }
}

/// The `algorithm_config` keys an algorithm accepts.
pub fn valid_keys(algorithm: Algorithm) -> Vec<&'static str> {
    match algorithm {
        Algorithm::Miprov2 => mipro::CONFIG_KEYS.to_vec(),
        Algorithm::Gepa => gepa::all_keys(),
        Algorithm::Bootstrapfewshot => BootstrapFewShot::CONFIG_KEYS.to_vec(),
        Algorithm::Labeledfewshot => LabeledFewShot::CONFIG_KEYS.to_vec(),
        Algorithm::BootstrapfewshotRandomSearch => BootstrapFewShotWithRandomSearch::config_keys(),
    }
}

/// The keys `few_shot_config` accepts.
pub const FEW_SHOT_KEYS: &[&str] = &[
    "num_examples",
    "selection_strategy",
    "include_reasoning",
    "bootstrap_rounds",
    "max_bootstrapped",
];

/// The optimizer an algorithm and its settings describe, for a run that optimizes `targets`:
/// GEPA with `few_shot_examples` bootstraps demos for its seed first ([`gepa::Gepa::with_demos`]).
pub fn build_optimizer(
    algorithm: Algorithm,
    config: &AlgorithmConfig,
    targets: &[Target],
) -> Result<Box<dyn Optimizer>, OptimizeError> {
    Ok(match algorithm {
        Algorithm::Miprov2 => Box::new(mipro::MiproV2::from_algorithm_config(config)?),
        Algorithm::Gepa => {
            let gepa = gepa::Gepa::from_config(config)?;
            if targets.contains(&Target::FewShotExamples) {
                Box::new(gepa.with_demos(BootstrapFewShot::from_checked(config)?))
            } else {
                Box::new(gepa)
            }
        }
        Algorithm::Bootstrapfewshot => Box::new(BootstrapFewShot::from_config(config)?),
        Algorithm::Labeledfewshot => Box::new(LabeledFewShot::from_config(config)?),
        Algorithm::BootstrapfewshotRandomSearch => {
            Box::new(BootstrapFewShotWithRandomSearch::from_config(config)?)
        }
    })
}

/// Examples inline, or a path to a JSON Lines, JSON or CSV file (relative to the request file).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(untagged)]
pub enum DataSource {
    /// The examples themselves.
    Inline(Vec<Example>),
    /// A dataset file.
    Path(PathBuf),
}

impl DataSource {
    /// The examples, reading a file relative to `base_dir`.
    pub fn load(&self, base_dir: &Path) -> Result<Vec<Example>, OptimizeError> {
        match self {
            DataSource::Inline(examples) => Ok(examples.clone()),
            DataSource::Path(path) => {
                let path = if path.is_absolute() {
                    path.clone()
                } else {
                    base_dir.join(path)
                };
                Ok(dataset::load_examples(&path)?)
            }
        }
    }
}

/// Limits and requirements (the guide's `OptimizationConstraints`).
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Constraints {
    /// Most cost in USD of the baseline and the search together (the search gets what the
    /// baseline left). The winner's validation and test evaluations come on top: about one
    /// baseline's cost each, less what was already evaluated.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_cost_usd: Option<f64>,
    /// Candidates whose p95 latency per example exceeds this are rejected.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_latency_ms: Option<f64>,
    /// The optimized score (0–1) must reach this, or the result fails the constraint.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub min_accuracy: Option<f64>,
    /// Most tokens per reply; prompts that cannot fit are rejected.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_tokens: Option<u32>,
    /// The task model to use (overrides `model`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub target_model: Option<String>,
    /// Most language model calls for the optimization.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_lm_calls: Option<u64>,
    /// Most prompt plus completion tokens for the optimization.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_total_tokens: Option<u64>,
    /// Most tool calls of `react` stages for the whole run; past it, each call is answered with
    /// an observation saying the budget is spent.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_tool_calls: Option<u64>,
}

/// A metric computed by an external command (the guide's `CustomMetric`).
///
/// The command reads one JSON object per line on stdin (`example`, `prediction`) and writes one
/// score per line (see `promptopt_core::metrics::CommandMetric`).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CustomMetricSpec {
    /// The name `evaluation_metric` refers to.
    pub name: String,
    /// The command line (run through the shell).
    pub command: String,
    /// Whether higher is better (default true).
    #[serde(default = "yes")]
    pub higher_is_better: bool,
    /// The lowest value (default 0).
    #[serde(default)]
    pub min_value: f64,
    /// The highest value (default 1).
    #[serde(default = "one")]
    pub max_value: f64,
    /// Seconds one score may take.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub timeout_seconds: Option<u64>,
}

fn yes() -> bool {
    true
}

fn one() -> f64 {
    1.0
}

fn default_max_iterations() -> u64 {
    50
}

fn default_timeout() -> u64 {
    3600
}

fn default_model() -> String {
    DEFAULT_MODEL.to_string()
}

/// A request for one optimization run (the guide's `OptimizationRequest`), from YAML or JSON.
///
/// ```
/// use promptopt_optimize::{Algorithm, OptimizationRequest, Target};
///
/// let request = OptimizationRequest::from_yaml_str(r#"
/// target: few_shot_examples
/// evaluation_metric: accuracy
/// algorithm: bootstrapfewshot
/// training_examples:
///   - {text: "I loved it", label: positive}
///   - {text: "Dull", label: negative}
/// "#)?;
/// assert_eq!(request.target_kinds(), [Target::FewShotExamples]);
/// assert_eq!(request.algorithm, Algorithm::Bootstrapfewshot);
/// assert_eq!(request.model, "local/smollm2-135m");
///
/// let error = OptimizationRequest::from_yaml_str("target: few_shot_examples\nalgoritm: gepa\n")
///     .unwrap_err().to_string();
/// assert!(error.contains("unknown field `algoritm`"));
/// assert!(error.contains("`algorithm`"));
/// # Ok::<(), promptopt_optimize::OptimizeError>(())
/// ```
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct OptimizationRequest {
    /// What to optimize: a target kind or a free-form name (see [`TargetSpec`]).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub target: Option<TargetSpec>,
    /// Several target kinds at once (instead of, or besides, a named `target`).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub targets: Vec<Target>,
    /// The program's stages, in order; without it the program is one `predict` stage from the
    /// input keys to the output keys.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub program: Vec<StageSpec>,
    /// The tools `react` stages may call: `{builtin: calculator}`, `{builtin: search, corpus:
    /// docs.jsonl}` (paths relative to the request's folder).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub tools: Vec<promptopt_core::tools::ToolSpec>,
    /// What to achieve.
    #[serde(default)]
    pub objective: Objective,
    /// How to measure success: a built-in metric or a `custom_metrics` name.
    pub evaluation_metric: String,
    /// Which optimizer runs.
    pub algorithm: Algorithm,
    /// Training examples, inline or a file.
    pub training_examples: DataSource,
    /// Validation examples; without them, 20 % of the training examples (seeded split).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub validation_examples: Option<DataSource>,
    /// Held-out test examples: never seen by the optimizer or the choice of the winner; the
    /// baseline and the optimized program are scored on them after validation
    /// ([`OptimizationResult::test_metrics`](crate::OptimizationResult::test_metrics)).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub test_examples: Option<DataSource>,
    /// Most optimizer iterations (trials, candidates, generations).
    #[serde(default = "default_max_iterations")]
    pub max_iterations: u64,
    /// Wall-time limit of the optimization, in seconds.
    #[serde(default = "default_timeout")]
    pub timeout_seconds: u64,
    /// Limits and requirements.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub constraints: Option<Constraints>,
    /// Settings of the algorithm (keys checked per algorithm).
    #[serde(default, skip_serializing_if = "AlgorithmConfig::is_empty")]
    pub algorithm_config: AlgorithmConfig,
    /// Few-shot settings (`num_examples`, `selection_strategy`, `include_reasoning`, ...).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub few_shot_config: Option<AlgorithmConfig>,
    /// Metrics computed by external commands.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub custom_metrics: Vec<CustomMetricSpec>,
    /// Whether the result carries analytics.
    #[serde(default = "yes")]
    pub enable_analytics: bool,
    /// Whether costs are tracked and reported.
    #[serde(default = "yes")]
    pub track_costs: bool,
    /// Whether the validation predictions are kept in the analytics.
    #[serde(default)]
    pub log_predictions: bool,
    /// The seed of every random choice (0 is a seed like any other).
    #[serde(default)]
    pub seed: u64,
    /// The task model (`provider/model`).
    #[serde(default = "default_model")]
    pub model: String,
    /// The model that proposes instructions and reflects (default: see
    /// [`OptimizationRequest::effective_prompt_model`]).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub prompt_model: Option<String>,
    /// The models `model_selection` chooses among.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub candidate_models: Vec<String>,
    /// Input fields (inferred when absent).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub input_keys: Option<Vec<String>>,
    /// Output fields (inferred when absent).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub output_keys: Option<Vec<String>>,
    /// The initial instructions.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub instructions: Option<String>,
    /// The model's name in the registry.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub name: Option<String>,
    /// How prompts are rendered: `chat` (default), `json` or `completion`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub adapter: Option<String>,
    /// Examples evaluated at once.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub concurrency: Option<usize>,
    /// The MLflow experiment the run is recorded in (default: the model's name).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub experiment: Option<String>,
    /// `false` turns experiment tracking off for this run (as `DISABLE_MLFLOW=1` does).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tracking: Option<bool>,
    /// Where the run is tracked: an MLflow server URL (`MLFLOW_TRACKING_URI` wins when set);
    /// without one, the embedded store under `PROMPTOPT_HOME`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tracking_uri: Option<String>,
    /// Run the embedded model (`local/…` models) on GPUs: device ids, layers, memory fraction,
    /// batch size, whether a GPU is required (see [`promptopt_lm::gpu::GpuConfig`]). The
    /// `PROMPTOPT_GPU_*` variables and the `--gpu*` flags of the command or worker that runs the
    /// request win over it, setting by setting; without it anywhere the model runs on the CPU.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub gpu: Option<promptopt_lm::gpu::GpuConfig>,
    /// Where relative data paths are resolved (the request file's folder).
    #[serde(skip)]
    pub base_dir: Option<PathBuf>,
}

impl OptimizationRequest {
    fn invalid(location: Option<&Path>, message: impl Into<String>) -> OptimizeError {
        OptimizeError::InvalidRequest {
            location: location.map(Path::to_path_buf),
            message: message.into(),
        }
    }

    /// Parses YAML (JSON is YAML too) and checks it.
    pub fn from_yaml_str(text: &str) -> Result<Self, OptimizeError> {
        Self::parse(text, None)
    }

    /// Parses JSON and checks it.
    pub fn from_json_str(text: &str) -> Result<Self, OptimizeError> {
        let request: Self =
            serde_json::from_str(text).map_err(|e| Self::invalid(None, e.to_string()))?;
        request.validate(None)?;
        Ok(request)
    }

    /// Reads a request file (`.json` as JSON, anything else as YAML); relative data paths are
    /// resolved against its folder.
    pub fn from_path(path: impl AsRef<Path>) -> Result<Self, OptimizeError> {
        let path = path.as_ref();
        let text = std::fs::read_to_string(path).map_err(|e| OptimizeError::io(path, e))?;
        let mut request = if path.extension().is_some_and(|e| e == "json") {
            let r: Self = serde_json::from_str(&text)
                .map_err(|e| Self::invalid(Some(path), e.to_string()))?;
            r.validate(Some(path))?;
            r
        } else {
            Self::parse(&text, Some(path))?
        };
        request.base_dir = Some(
            path.parent()
                .map(Path::to_path_buf)
                .unwrap_or_else(|| PathBuf::from(".")),
        );
        Ok(request)
    }

    /// Reads every dataset file the request names into the request itself, so that it runs the
    /// same on any machine (a queued job). A file that does not load is an error naming it.
    pub fn inline_data(&mut self) -> Result<(), OptimizeError> {
        let base = self.base_dir.clone().unwrap_or_else(|| PathBuf::from("."));
        let inline = |source: &DataSource| -> Result<DataSource, OptimizeError> {
            Ok(DataSource::Inline(source.load(&base)?))
        };
        self.training_examples = inline(&self.training_examples)?;
        if let Some(v) = &self.validation_examples {
            self.validation_examples = Some(inline(v)?);
        }
        if let Some(t) = &self.test_examples {
            self.test_examples = Some(inline(t)?);
        }
        Ok(())
    }

    fn parse(text: &str, location: Option<&Path>) -> Result<Self, OptimizeError> {
        let request: Self =
            serde_yaml::from_str(text).map_err(|e| Self::invalid(location, e.to_string()))?;
        request.validate(location)?;
        Ok(request)
    }

    /// Checks what serde cannot: the metric name, the algorithm's keys, value ranges.
    pub fn validate(&self, location: Option<&Path>) -> Result<(), OptimizeError> {
        let custom = self
            .custom_metrics
            .iter()
            .any(|m| m.name == self.evaluation_metric);
        let known = custom || metrics::by_name(&self.evaluation_metric, "output").is_ok();
        if !known {
            let mut names: Vec<String> = METRIC_NAMES.iter().map(|n| format!("`{n}`")).collect();
            names.extend(self.custom_metrics.iter().map(|m| format!("`{}`", m.name)));
            return Err(Self::invalid(
                location,
                format!(
                    "unknown evaluation_metric `{}`; valid metrics: {}",
                    self.evaluation_metric,
                    names.join(", ")
                ),
            ));
        }
        let keys = valid_keys(self.algorithm);
        self.algorithm_config
            .check_keys("algorithm_config", self.algorithm.as_str(), &keys)?;
        if let Some(few_shot) = &self.few_shot_config {
            few_shot.check_keys("few_shot_config", self.algorithm.as_str(), FEW_SHOT_KEYS)?;
        }
        if self.algorithm == Algorithm::Gepa && !self.has_target(Target::FewShotExamples) {
            if let Some(key) = gepa::DEMO_KEYS
                .iter()
                .find(|k| self.algorithm_config.0.contains_key(**k))
            {
                return Err(Self::invalid(
                    location,
                    format!(
                        "algorithm_config `{key}` sets GEPA's demos, which it bootstraps only with the `few_shot_examples` target: add `targets: [prompt_template, few_shot_examples]` or remove the key"
                    ),
                ));
            }
        }
        if self.objective == Objective::Custom && !custom {
            return Err(Self::invalid(
                location,
                format!(
                    "objective `custom` needs `evaluation_metric` to name one of `custom_metrics`, and `{}` is not one of them",
                    self.evaluation_metric
                ),
            ));
        }
        if let Some(adapter) = &self.adapter {
            if promptopt_core::adapter::AdapterKind::from_name(adapter).is_none() {
                return Err(Self::invalid(
                    location,
                    format!(
                        "unknown adapter `{adapter}`; valid adapters: `chat`, `json`, `completion`, `turns`"
                    ),
                ));
            }
        }
        if !self.program.is_empty() && self.instructions.is_some() {
            return Err(Self::invalid(
                location,
                "`instructions` is for the single-stage program; with `program`, give each stage its own `instructions`",
            ));
        }
        for stage in &self.program {
            parse_signature(&stage.signature, &[]).map_err(|message| {
                Self::invalid(
                    location,
                    format!("program stage `{}`: {message}", stage.name),
                )
            })?;
        }
        if self.has_target(Target::ModelSelection) && self.candidate_models.is_empty() {
            return Err(Self::invalid(
                location,
                "target `model_selection` needs `candidate_models` (at least one model)",
            ));
        }
        if let Some(c) = &self.constraints {
            if let Some(m) = c.min_accuracy.filter(|m| !(0.0..=1.0).contains(m)) {
                return Err(Self::invalid(
                    location,
                    format!("constraints.min_accuracy {m} is not between 0 and 1"),
                ));
            }
            if c.max_cost_usd.is_some_and(|x| x < 0.0) {
                return Err(Self::invalid(
                    location,
                    "constraints.max_cost_usd is negative",
                ));
            }
        }
        if let Some(gpu) = &self.gpu {
            gpu.check()
                .map_err(|error| Self::invalid(location, error.to_string()))?;
        }
        if let Some(name) = self.model_name() {
            promptopt_registry::check_name(name)?;
        }
        Ok(())
    }

    /// What the run optimizes: `targets`, else the `target` kind, else what the algorithm
    /// searches (instructions and demos for MIPROv2, instructions for GEPA, demos otherwise).
    pub fn target_kinds(&self) -> Vec<Target> {
        if !self.targets.is_empty() {
            return self.targets.clone();
        }
        match &self.target {
            Some(TargetSpec::Kind(kind)) => vec![*kind],
            _ => match self.algorithm {
                Algorithm::Miprov2 => vec![Target::PromptTemplate, Target::FewShotExamples],
                Algorithm::Gepa => vec![Target::PromptTemplate],
                _ => vec![Target::FewShotExamples],
            },
        }
    }

    /// Whether the run optimizes this kind of target.
    pub fn has_target(&self, kind: Target) -> bool {
        self.target_kinds().contains(&kind)
    }

    /// The saved model's name: `name`, else a free-form `target`.
    pub fn model_name(&self) -> Option<&str> {
        match (&self.name, &self.target) {
            (Some(name), _) => Some(name),
            (None, Some(TargetSpec::Name(name))) => Some(name),
            _ => None,
        }
    }

    /// The task model: `constraints.target_model` when set, else `model`.
    pub fn task_model(&self) -> &str {
        self.constraints
            .as_ref()
            .and_then(|c| c.target_model.as_deref())
            .unwrap_or(&self.model)
    }

    /// The model that proposes instructions and reflects: `prompt_model` when set; else, for an
    /// algorithm that writes instructions (MIPROv2, GEPA) and an embedded (`local/…`) task
    /// model, [`DEFAULT_LOCAL_PROMPT_MODEL`]; else the task model.
    ///
    /// ```
    /// use promptopt_optimize::OptimizationRequest;
    ///
    /// let yaml = |algorithm: &str, model: &str| {
    ///     format!(
    ///         "algorithm: {algorithm}\nmodel: {model}\nevaluation_metric: accuracy\n\
    ///          training_examples: [{{text: fine, label: positive}}]\n"
    ///     )
    /// };
    /// let request = |algorithm: &str, model: &str| {
    ///     OptimizationRequest::from_yaml_str(&yaml(algorithm, model)).unwrap()
    /// };
    /// assert_eq!(
    ///     request("miprov2", "local/gemma3-270m").effective_prompt_model(),
    ///     "local/qwen2.5-coder-1.5b"
    /// );
    /// assert_eq!(request("gepa", "openai/gpt-4o-mini").effective_prompt_model(), "openai/gpt-4o-mini");
    /// assert_eq!(
    ///     request("bootstrapfewshot", "local/gemma3-270m").effective_prompt_model(),
    ///     "local/gemma3-270m"
    /// );
    /// ```
    pub fn effective_prompt_model(&self) -> String {
        if let Some(model) = &self.prompt_model {
            return model.clone();
        }
        let task = self.task_model();
        let writes_instructions = matches!(self.algorithm, Algorithm::Miprov2 | Algorithm::Gepa);
        if writes_instructions && task.starts_with("local/") {
            DEFAULT_LOCAL_PROMPT_MODEL.to_string()
        } else {
            task.to_string()
        }
    }

    /// The constraints (empty when none were given).
    pub fn constraints(&self) -> Constraints {
        self.constraints.clone().unwrap_or_default()
    }

    /// The algorithm settings with `few_shot_config` merged in (explicit `algorithm_config`
    /// keys win; `include_reasoning` is not an algorithm setting and is left out).
    pub fn effective_algorithm_config(&self) -> AlgorithmConfig {
        let mut config = self.algorithm_config.clone();
        if let Some(few_shot) = &self.few_shot_config {
            let keys = valid_keys(self.algorithm);
            let mut extra = AlgorithmConfig::new();
            for (k, v) in &few_shot.0 {
                if keys.contains(&k.as_str()) {
                    extra.0.insert(k.clone(), v.clone());
                }
            }
            config.merge_defaults(&extra);
        }
        config
    }

    /// Whether `few_shot_config.include_reasoning` asks for chain of thought.
    pub fn include_reasoning(&self) -> bool {
        self.few_shot_config
            .as_ref()
            .and_then(|c| c.get("include_reasoning"))
            .and_then(serde_json::Value::as_bool)
            .unwrap_or(false)
    }

    /// A stable hash of the request (its canonical JSON), for provenance.
    pub fn hash(&self) -> String {
        let json = serde_json::to_string(self).unwrap_or_default();
        hex::encode(Sha256::digest(json.as_bytes()))
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    const BASE: &str =
        "target: few_shot_examples\nevaluation_metric: accuracy\ntraining_examples: []\n";

    #[test]
    fn unknown_fields_and_variants_list_the_valid_ones() {
        let e = OptimizationRequest::from_yaml_str(&format!(
            "{BASE}algorithm: bootstrapfewshot\nseeed: 3\n"
        ))
        .unwrap_err()
        .to_string();
        assert!(e.contains("unknown field `seeed`"), "{e}");
        assert!(
            e.contains("`seed`") && e.contains("`training_examples`"),
            "{e}"
        );
        let e = OptimizationRequest::from_yaml_str(&format!("{BASE}algorithm: simba\n"))
            .unwrap_err()
            .to_string();
        assert!(e.contains("unknown variant `simba`"), "{e}");
        assert!(e.contains("`bootstrapfewshot_random_search`"), "{e}");
    }

    #[test]
    fn algorithm_config_keys_are_checked_per_algorithm() {
        let e = OptimizationRequest::from_yaml_str(&format!(
            "{BASE}algorithm: bootstrapfewshot\nalgorithm_config: {{num_candidates: 3}}\n"
        ))
        .unwrap_err()
        .to_string();
        assert!(e.starts_with("Unknown key `num_candidates` in `algorithm_config` for algorithm `bootstrapfewshot`; valid keys: `max_bootstrapped_demos`"), "{e}");
        let ok = OptimizationRequest::from_yaml_str(&format!(
            "{BASE}algorithm: bootstrapfewshot\nalgorithm_config: {{num_examples: 3, selection_strategy: diverse}}\n"
        ));
        assert!(ok.is_ok());
    }

    #[test]
    fn metric_names_are_checked_and_listed() {
        let text = "target: few_shot_examples\nevaluation_metric: acuracy\nalgorithm: bootstrapfewshot\ntraining_examples: []\n";
        let e = OptimizationRequest::from_yaml_str(text)
            .unwrap_err()
            .to_string();
        assert!(
            e.contains("unknown evaluation_metric `acuracy`; valid metrics: "),
            "{e}"
        );
        assert!(e.contains("`accuracy`"), "{e}");
    }

    #[test]
    fn free_form_targets_name_the_model_and_custom_objectives_need_a_custom_metric() {
        let r = OptimizationRequest::from_yaml_str(
            "target: summarization_prompt\nevaluation_metric: rouge_l\nalgorithm: miprov2\ntraining_examples: []\n",
        )
        .unwrap();
        assert_eq!(r.model_name(), Some("summarization_prompt"));
        assert_eq!(
            r.target_kinds(),
            [Target::PromptTemplate, Target::FewShotExamples]
        );
        let r = OptimizationRequest::from_yaml_str(
            "targets: [prompt_template, reasoning_strategy]\nevaluation_metric: accuracy\nalgorithm: gepa\ntraining_examples: []\n",
        )
        .unwrap();
        assert!(r.has_target(Target::ReasoningStrategy));
        assert_eq!(r.model_name(), None);
        let e = OptimizationRequest::from_yaml_str(
            "objective: custom\nevaluation_metric: accuracy\nalgorithm: gepa\ntraining_examples: []\n",
        )
        .unwrap_err()
        .to_string();
        assert!(e.contains("objective `custom` needs"), "{e}");
        let ok = OptimizationRequest::from_yaml_str(
            "objective: custom\nevaluation_metric: brevity\ncustom_metrics: [{name: brevity, command: ./score.py}]\nalgorithm: gepa\ntraining_examples: []\n",
        );
        assert!(ok.is_ok(), "{ok:?}");
    }

    #[test]
    fn program_stages_are_checked_with_their_position() {
        let text = "evaluation_metric: accuracy\nalgorithm: gepa\ntraining_examples: []\nprogram:\n  - name: a\n    signature: q -> x\n  - name: b\n    signatur: x -> answer\n";
        let e = OptimizationRequest::from_yaml_str(text)
            .unwrap_err()
            .to_string();
        assert!(e.contains("unknown field `signatur`"), "{e}");
        assert!(e.contains("program[1]") && e.contains("line 8"), "{e}");
        let text = "evaluation_metric: accuracy\nalgorithm: gepa\ntraining_examples: []\nprogram:\n  - name: a\n    signature: q x\n";
        let e = OptimizationRequest::from_yaml_str(text)
            .unwrap_err()
            .to_string();
        assert!(
            e.contains("program stage `a`: The signature `q x` has no `->`"),
            "{e}"
        );
    }

    #[test]
    fn a_gpu_block_parses_and_bad_values_name_the_setting() {
        let r = OptimizationRequest::from_yaml_str(&format!(
            "{BASE}algorithm: bootstrapfewshot\ngpu:\n  device_ids: [0, 1]\n  memory_fraction: 0.8\n  batch_size: 64\n  required: false\n"
        ))
        .unwrap();
        let gpu = r.gpu.clone().unwrap();
        assert_eq!(gpu.device_ids, [0, 1]);
        assert_eq!(gpu.layers, None);
        assert_eq!(gpu.batch_size, 64);
        assert!(!gpu.required);
        // An empty block asks for the defaults: device 0, all layers.
        let r = OptimizationRequest::from_yaml_str(&format!(
            "{BASE}algorithm: bootstrapfewshot\ngpu: {{}}\n"
        ))
        .unwrap();
        assert_eq!(r.gpu.unwrap().device_ids, [0]);
        // No block: the CPU, and the request's hash is what it was before GPUs existed.
        let r = OptimizationRequest::from_yaml_str(&format!("{BASE}algorithm: bootstrapfewshot\n"))
            .unwrap();
        assert!(r.gpu.is_none());
        assert!(!serde_json::to_string(&r).unwrap().contains("gpu"));
        for (block, setting) in [
            ("{memory_fraction: 1.5}", "`gpu.memory_fraction`"),
            ("{memory_fraction: 0}", "`gpu.memory_fraction`"),
            ("{batch_size: 0}", "`gpu.batch_size`"),
            ("{device_ids: []}", "`gpu.device_ids`"),
            ("{device_ids: [0, 0]}", "`gpu.device_ids`"),
        ] {
            let e = OptimizationRequest::from_yaml_str(&format!(
                "{BASE}algorithm: bootstrapfewshot\ngpu: {block}\n"
            ))
            .unwrap_err()
            .to_string();
            assert!(e.contains(setting), "{block}: {e}");
        }
        let e = OptimizationRequest::from_yaml_str(&format!(
            "{BASE}algorithm: bootstrapfewshot\ngpu: {{devices: [0]}}\n"
        ))
        .unwrap_err()
        .to_string();
        assert!(
            e.contains("unknown field `devices`") && e.contains("`device_ids`"),
            "{e}"
        );
        let e = OptimizationRequest::from_json_str(
            r#"{"evaluation_metric": "accuracy", "algorithm": "gepa", "training_examples": [], "gpu": {"memory_fraction": 2}}"#,
        )
        .unwrap_err()
        .to_string();
        assert!(e.contains("`gpu.memory_fraction`"), "{e}");
    }

    #[test]
    fn defaults_and_paths() {
        let r = OptimizationRequest::from_yaml_str(&format!(
            "{BASE}algorithm: labeledfewshot\ntraining_examples: data/train.jsonl\nconstraints: {{target_model: openai/gpt-4o-mini}}\n"
        ))
        .unwrap_err();
        // `training_examples` given twice is a YAML error.
        assert!(r.to_string().contains("duplicate"), "{r}");
        let r = OptimizationRequest::from_yaml_str(
            "target: few_shot_examples\nevaluation_metric: accuracy\nalgorithm: labeledfewshot\ntraining_examples: data/train.jsonl\nconstraints: {target_model: openai/gpt-4o-mini}\n",
        )
        .unwrap();
        assert_eq!(
            r.training_examples,
            DataSource::Path("data/train.jsonl".into())
        );
        assert_eq!(r.task_model(), "openai/gpt-4o-mini");
        assert_eq!((r.max_iterations, r.timeout_seconds, r.seed), (50, 3600, 0));
        assert!(r.enable_analytics && r.track_costs && !r.log_predictions);
    }
}
