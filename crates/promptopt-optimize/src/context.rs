//! What an optimizer works with: the program, the models, the metric, the budget and the events.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use parking_lot::Mutex;
use sha2::{Digest, Sha256};

use async_trait::async_trait;
use futures::StreamExt;
use promptopt_core::evaluate::normalize;
use promptopt_core::{
    CoreError, Example, Metric, Prediction, ProgramState, Score, Signature, Trace,
};
use promptopt_lm::{ChatRequest, LmError, SharedLm, Usage};
use rand::SeedableRng;
use rand_chacha::ChaCha8Rng;
use serde::{Deserialize, Serialize};

use crate::{Budget, BudgetedLm, Event, EventSink, NullSink, OptimizeError, StopReason};

/// A predictor of a program: its name and signature.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct PredictorInfo {
    /// The predictor's name (the key of its state in [`ProgramState::predictors`]).
    pub name: String,
    /// What it does.
    pub signature: Signature,
}

/// The task model a program runs on, with its generation settings.
#[derive(Clone)]
pub struct TaskModel {
    /// The model (already wrapped in the run's budget when it comes from a context).
    pub lm: SharedLm,
    /// `provider/model`; a predictor's [`promptopt_core::PredictorState::model`] overrides it.
    pub model: String,
    /// Sampling temperature (`None`: the provider's default).
    pub temperature: Option<f32>,
    /// Upper bound on generated tokens per call.
    pub max_tokens: Option<u32>,
    /// Sampling seed sent with each call (also distinguishes cache entries of resampled runs).
    pub seed: Option<u64>,
}

impl std::fmt::Debug for TaskModel {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TaskModel")
            .field("model", &self.model)
            .field("temperature", &self.temperature)
            .field("max_tokens", &self.max_tokens)
            .field("seed", &self.seed)
            .finish_non_exhaustive()
    }
}

/// A program's structure: what runs a [`ProgramState`] on one example.
///
/// Optimizers never see code, only this: the predictors (to propose instructions for) and a way
/// to run a state. [`crate::SinglePredictorProgram`] is the program requests describe.
#[async_trait]
pub trait ProgramRunner: Send + Sync {
    /// The predictors, in a stable order.
    fn predictors(&self) -> Vec<PredictorInfo>;

    /// The state before any optimization (the signatures' instructions, no demos).
    fn initial_state(&self) -> ProgramState;

    /// Runs `state` on the input fields of `example`. A reply that cannot be parsed is not an
    /// error: it gives an empty prediction and a trace step with its parse error.
    async fn run(
        &self,
        task: &TaskModel,
        state: &ProgramState,
        example: &Example,
    ) -> Result<(Prediction, Trace), OptimizeError>;

    /// The requests the first predictor would send for `example` (the optimized prompt shown
    /// to users).
    fn render(
        &self,
        task: &TaskModel,
        state: &ProgramState,
        example: &Example,
    ) -> Result<Vec<ChatRequest>, OptimizeError>;
}

/// The result of running a state on one example.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ExampleResult {
    /// The example's position in the evaluated slice.
    pub index: usize,
    /// The prediction (`None` when the run failed).
    pub prediction: Option<Prediction>,
    /// The run's trace (empty when the run failed).
    pub trace: Trace,
    /// The metric's score in its own units, with its feedback (the worst value of the metric's
    /// range when the run failed).
    pub score: Score,
    /// The score on a 0–1 scale, higher better (0 when the run failed; the raw value for an
    /// unbounded metric).
    pub normalized: f64,
    /// Why the run failed, when it did.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
    /// Whether the run failed because its prompt did not fit the model's context.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub context_overflow: bool,
}

/// The evaluation of one state on a set of examples.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct EvalReport {
    /// The aggregate on a 0–1 scale, higher better (what optimizers compare): the metric's corpus
    /// score or the mean of per-example scores, normalized by the metric's range.
    pub score: f64,
    /// The aggregate in the metric's own units.
    pub raw_score: f64,
    /// Per example, in input order.
    pub results: Vec<ExampleResult>,
    /// Wall time of the whole evaluation.
    #[serde(with = "secs")]
    pub wall_time: Duration,
}

impl EvalReport {
    /// Per-example scores (0–1, higher better) in input order.
    pub fn subscores(&self) -> Vec<f64> {
        self.results.iter().map(|r| r.normalized).collect()
    }

    /// Number of runs that failed.
    pub fn errors(&self) -> usize {
        self.results.iter().filter(|r| r.error.is_some()).count()
    }

    /// Total token usage.
    pub fn usage(&self) -> Usage {
        let mut usage = Usage::default();
        for r in &self.results {
            usage += r.trace.usage();
        }
        usage
    }

    /// Model calls made (cache hits included).
    pub fn lm_calls(&self) -> usize {
        self.results.iter().map(|r| r.trace.steps.len()).sum()
    }

    /// Calls answered from the cache.
    pub fn cache_hits(&self) -> usize {
        self.results
            .iter()
            .flat_map(|r| &r.trace.steps)
            .filter(|s| s.cache_hit)
            .count()
    }

    /// Total cost in USD, `None` when any call's cost is unknown.
    pub fn cost_usd(&self) -> Option<f64> {
        self.results
            .iter()
            .filter(|r| !r.trace.steps.is_empty())
            .map(|r| r.trace.cost_usd())
            .sum()
    }

    /// The `p`-th percentile (0–100, nearest rank) of per-example model latency in ms.
    pub fn latency_percentile_ms(&self, p: f64) -> Option<f64> {
        let mut ms: Vec<f64> = self
            .results
            .iter()
            .filter(|r| r.error.is_none())
            .map(|r| r.trace.latency().as_secs_f64() * 1000.0)
            .collect();
        percentile(&mut ms, p)
    }
}

/// The `p`-th percentile (0–100, nearest rank) of `values`; `None` when empty.
pub fn percentile(values: &mut [f64], p: f64) -> Option<f64> {
    if values.is_empty() {
        return None;
    }
    values.sort_by(f64::total_cmp);
    let rank = ((p / 100.0) * values.len() as f64).ceil() as usize;
    let idx = rank.clamp(1, values.len()) - 1;
    Some(values[idx])
}

mod secs {
    use std::time::Duration;

    use serde::{Deserialize, Deserializer, Serializer};

    pub fn serialize<S: Serializer>(d: &Duration, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_f64(d.as_secs_f64())
    }

    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Duration, D::Error> {
        let s = f64::deserialize(d)?;
        Ok(Duration::from_secs_f64(s.max(0.0)))
    }
}

/// Everything an optimizer works with.
///
/// Both models are wrapped in the run's [`Budget`]. Cloning is cheap (everything is shared).
#[derive(Clone)]
pub struct OptimizeContext {
    program: Arc<dyn ProgramRunner>,
    raw_task_lm: SharedLm,
    raw_prompt_lm: SharedLm,
    task: TaskModel,
    prompt_lm: SharedLm,
    prompt_model: String,
    metric: Arc<dyn Metric>,
    concurrency: usize,
    seed: u64,
    max_errors: usize,
    budget: Arc<Budget>,
    events: Arc<dyn EventSink>,
    memo: Arc<Mutex<HashMap<String, EvalReport>>>,
}

impl std::fmt::Debug for OptimizeContext {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("OptimizeContext")
            .field("task", &self.task)
            .field("prompt_model", &self.prompt_model)
            .field("metric", &self.metric.info().name)
            .field("concurrency", &self.concurrency)
            .field("seed", &self.seed)
            .field("budget", &self.budget)
            .finish_non_exhaustive()
    }
}

/// Builds an [`OptimizeContext`].
pub struct OptimizeContextBuilder {
    program: Arc<dyn ProgramRunner>,
    task_lm: SharedLm,
    task_model: String,
    temperature: Option<f32>,
    max_tokens: Option<u32>,
    prompt: Option<(SharedLm, String)>,
    metric: Arc<dyn Metric>,
    concurrency: usize,
    seed: u64,
    max_errors: usize,
    budget: Option<Arc<Budget>>,
    events: Arc<dyn EventSink>,
}

impl OptimizeContextBuilder {
    /// The model that proposes instructions and reflects (default: the task model).
    pub fn prompt_model(mut self, lm: SharedLm, model: impl Into<String>) -> Self {
        self.prompt = Some((lm, model.into()));
        self
    }

    /// The task model's temperature.
    pub fn temperature(mut self, temperature: Option<f32>) -> Self {
        self.temperature = temperature;
        self
    }

    /// The bound on tokens generated per task-model call.
    pub fn max_tokens(mut self, max_tokens: Option<u32>) -> Self {
        self.max_tokens = max_tokens;
        self
    }

    /// How many examples are evaluated at once (default 4).
    pub fn concurrency(mut self, concurrency: usize) -> Self {
        self.concurrency = concurrency.max(1);
        self
    }

    /// The seed of every random choice (default 0; 0 is a seed like any other).
    pub fn seed(mut self, seed: u64) -> Self {
        self.seed = seed;
        self
    }

    /// How many failed runs an evaluation tolerates before it fails (default 10).
    pub fn max_errors(mut self, max_errors: usize) -> Self {
        self.max_errors = max_errors;
        self
    }

    /// The run's budget (default: unlimited).
    pub fn budget(mut self, budget: Arc<Budget>) -> Self {
        self.budget = Some(budget);
        self
    }

    /// Where events go (default: nowhere).
    pub fn events(mut self, events: Arc<dyn EventSink>) -> Self {
        self.events = events;
        self
    }

    /// The context.
    pub fn build(self) -> OptimizeContext {
        let budget = self.budget.unwrap_or_else(|| Arc::new(Budget::unlimited()));
        let (raw_prompt_lm, prompt_model) = self
            .prompt
            .unwrap_or_else(|| (self.task_lm.clone(), self.task_model.clone()));
        let task = TaskModel {
            lm: BudgetedLm::shared(self.task_lm.clone(), budget.clone()),
            model: self.task_model,
            temperature: self.temperature,
            max_tokens: self.max_tokens,
            seed: None,
        };
        OptimizeContext {
            program: self.program,
            raw_task_lm: self.task_lm,
            prompt_lm: BudgetedLm::shared(raw_prompt_lm.clone(), budget.clone()),
            raw_prompt_lm,
            task,
            prompt_model,
            metric: self.metric,
            concurrency: self.concurrency,
            seed: self.seed,
            max_errors: self.max_errors,
            budget,
            events: self.events,
            memo: Arc::new(Mutex::new(HashMap::new())),
        }
    }
}

impl OptimizeContext {
    /// Starts a context for `program` on the task model `task_model` served by `task_lm`,
    /// scored by `metric`.
    pub fn builder(
        program: Arc<dyn ProgramRunner>,
        task_lm: SharedLm,
        task_model: impl Into<String>,
        metric: Arc<dyn Metric>,
    ) -> OptimizeContextBuilder {
        OptimizeContextBuilder {
            program,
            task_lm,
            task_model: task_model.into(),
            temperature: None,
            max_tokens: None,
            prompt: None,
            metric,
            concurrency: 4,
            seed: 0,
            max_errors: 10,
            budget: None,
            events: Arc::new(NullSink),
        }
    }

    /// The same context spending from another budget.
    pub fn with_budget(&self, budget: Arc<Budget>) -> Self {
        let mut ctx = self.clone();
        ctx.task.lm = BudgetedLm::shared(self.raw_task_lm.clone(), budget.clone());
        ctx.prompt_lm = BudgetedLm::shared(self.raw_prompt_lm.clone(), budget.clone());
        ctx.budget = budget;
        ctx
    }

    /// The same context with another task model name (model selection).
    pub fn with_task_model(&self, model: impl Into<String>) -> Self {
        let mut ctx = self.clone();
        ctx.task.model = model.into();
        ctx
    }

    /// The same context with another seed.
    pub fn with_seed(&self, seed: u64) -> Self {
        let mut ctx = self.clone();
        ctx.seed = seed;
        ctx
    }

    /// The program.
    pub fn program(&self) -> &Arc<dyn ProgramRunner> {
        &self.program
    }

    /// The program's predictors.
    pub fn predictors(&self) -> Vec<PredictorInfo> {
        self.program.predictors()
    }

    /// The task model (budgeted).
    pub fn task(&self) -> &TaskModel {
        &self.task
    }

    /// The prompt model (budgeted), for proposals and reflection.
    pub fn prompt_lm(&self) -> &SharedLm {
        &self.prompt_lm
    }

    /// The prompt model's name (`provider/model`).
    pub fn prompt_model(&self) -> &str {
        &self.prompt_model
    }

    /// The metric.
    pub fn metric(&self) -> &Arc<dyn Metric> {
        &self.metric
    }

    /// How many examples are evaluated at once.
    pub fn concurrency(&self) -> usize {
        self.concurrency
    }

    /// The run's seed.
    pub fn seed(&self) -> u64 {
        self.seed
    }

    /// A fresh generator seeded with the run's seed.
    pub fn rng(&self) -> ChaCha8Rng {
        ChaCha8Rng::seed_from_u64(self.seed)
    }

    /// A generator for an independent stream (`stream` distinguishes uses of the same seed).
    pub fn rng_for(&self, stream: u64) -> ChaCha8Rng {
        let mut rng = ChaCha8Rng::seed_from_u64(self.seed);
        rng.set_stream(stream);
        rng
    }

    /// The run's budget.
    pub fn budget(&self) -> &Arc<Budget> {
        &self.budget
    }

    /// Whether the run was cancelled.
    pub fn is_cancelled(&self) -> bool {
        self.budget.cancel_flag().is_cancelled()
    }

    /// `Err(Stopped)` when the budget, the deadline or a cancellation says stop.
    pub fn check(&self) -> Result<(), OptimizeError> {
        self.budget.check().map_err(OptimizeError::Stopped)
    }

    /// Counts one iteration; `Err(Stopped)` when it may not run.
    pub fn next_iteration(&self) -> Result<u64, OptimizeError> {
        self.budget.next_iteration().map_err(OptimizeError::Stopped)
    }

    /// Sends an event.
    pub fn emit(&self, event: Event) {
        self.events.emit(&event);
    }

    /// Sends a warning event.
    pub fn warn(&self, message: impl Into<String>) {
        self.emit(Event::Warning {
            message: message.into(),
        });
    }

    /// Sends a `BudgetSpent` event with the counters now.
    pub fn emit_spent(&self) {
        self.emit(Event::BudgetSpent {
            lm_calls: self.budget.calls(),
            tokens: self.budget.tokens(),
            cost_usd: self.budget.cost_usd(),
        });
    }

    /// The event sink.
    pub fn events(&self) -> &Arc<dyn EventSink> {
        &self.events
    }

    fn stopped_or(&self, error: OptimizeError) -> OptimizeError {
        match error {
            OptimizeError::Lm(LmError::BudgetExhausted(_))
            | OptimizeError::Core(CoreError::Lm {
                source: LmError::BudgetExhausted(_),
                ..
            }) => OptimizeError::Stopped(
                self.budget
                    .stopped_reason()
                    .unwrap_or(StopReason::BudgetCalls),
            ),
            other => other,
        }
    }

    /// Runs `state` on one example.
    pub async fn run(
        &self,
        state: &ProgramState,
        example: &Example,
    ) -> Result<(Prediction, Trace), OptimizeError> {
        self.run_with(&self.task, state, example).await
    }

    /// Runs `state` on one example with other task-model settings (e.g. a higher temperature
    /// and a seed for resampling). `task.lm` should be this context's (budgeted) model.
    pub async fn run_with(
        &self,
        task: &TaskModel,
        state: &ProgramState,
        example: &Example,
    ) -> Result<(Prediction, Trace), OptimizeError> {
        self.check()?;
        self.program
            .run(task, state, example)
            .await
            .map_err(|e| self.stopped_or(e))
    }

    async fn run_indexed(
        &self,
        index: usize,
        state: &ProgramState,
        example: &Example,
    ) -> (usize, Result<(Prediction, Trace), OptimizeError>) {
        (index, self.run(state, example).await)
    }

    /// Scores a prediction with the metric.
    pub fn score(&self, example: &Example, prediction: &Prediction, trace: &Trace) -> Score {
        self.metric.score(example, prediction, trace)
    }

    /// Runs `state` on every example (`concurrency` at a time) and scores it. Fails with
    /// `Stopped` when the budget runs out part way (a partial score would not be comparable),
    /// and with the last error when more than `max_errors` runs fail. Runs whose prompt did not
    /// fit the model's context score as failed examples and do not count towards `max_errors`.
    pub async fn evaluate(
        &self,
        state: &ProgramState,
        examples: &[Example],
    ) -> Result<EvalReport, OptimizeError> {
        let key = self.memo_key(state, examples);
        if let Some(report) = self.memo.lock().get(&key) {
            return Ok(report.clone());
        }
        let report = self.evaluate_uncached(state, examples).await?;
        self.memo.lock().insert(key, report.clone());
        Ok(report)
    }

    /// The evaluation of `state` on `examples` when this context already made it (evaluations
    /// are remembered per state, task model and examples: a deterministic model would answer
    /// the same again).
    pub fn remembered(&self, state: &ProgramState, examples: &[Example]) -> Option<EvalReport> {
        self.memo
            .lock()
            .get(&self.memo_key(state, examples))
            .cloned()
    }

    fn memo_key(&self, state: &ProgramState, examples: &[Example]) -> String {
        let mut hasher = Sha256::new();
        hasher.update(self.task.model.as_bytes());
        hasher.update(format!(
            "{:?}|{:?}|{:?}",
            self.task.temperature, self.task.max_tokens, self.task.seed
        ));
        hasher.update(state.canonical_json().as_bytes());
        for example in examples {
            hasher.update(
                serde_json::to_string(example)
                    .unwrap_or_default()
                    .as_bytes(),
            );
            hasher.update(b"\n");
        }
        hex::encode(hasher.finalize())
    }

    async fn evaluate_uncached(
        &self,
        state: &ProgramState,
        examples: &[Example],
    ) -> Result<EvalReport, OptimizeError> {
        self.check()?;
        let info = self.metric.info();
        let started = std::time::Instant::now();
        // The futures are made up front (they do nothing until polled), so the stream's type
        // holds no closure over borrowed examples.
        let runs: Vec<_> = examples
            .iter()
            .enumerate()
            .map(|(index, example)| self.run_indexed(index, state, example))
            .collect();
        let mut stream = futures::stream::iter(runs).buffered(self.concurrency);
        let mut results = Vec::with_capacity(examples.len());
        let mut errors = 0usize;
        let total = Some(examples.len() as u64);
        while let Some((index, outcome)) = stream.next().await {
            self.emit(Event::StageProgress {
                stage: "evaluate".into(),
                done: results.len() as u64 + 1,
                total,
            });
            let example = &examples[index];
            match outcome {
                Ok((prediction, trace)) => {
                    let score = self.metric.score(example, &prediction, &trace);
                    let normalized = normalize(&info, score.value);
                    results.push(ExampleResult {
                        index,
                        prediction: Some(prediction),
                        trace,
                        score,
                        normalized,
                        error: None,
                        context_overflow: false,
                    });
                }
                Err(OptimizeError::Stopped(reason)) => return Err(OptimizeError::Stopped(reason)),
                Err(error) => {
                    // A prompt too long for the model's context fails the same way whenever it
                    // is sent: the example scores as a failure, as a reply that cannot be
                    // parsed does, and is not one of the server errors `max_errors` bounds.
                    let context_overflow = error.is_context_overflow();
                    if !context_overflow {
                        errors += 1;
                    }
                    if errors > self.max_errors {
                        return Err(error);
                    }
                    let worst = if info.higher_is_better {
                        info.min
                    } else {
                        info.max
                    };
                    results.push(ExampleResult {
                        index,
                        prediction: None,
                        trace: Trace::default(),
                        score: Score::with_feedback(
                            if worst.is_finite() { worst } else { 0.0 },
                            error.to_string(),
                        ),
                        normalized: 0.0,
                        error: Some(error.to_string()),
                        context_overflow,
                    });
                }
            }
        }
        let pairs: Vec<(&Example, &Prediction)> = results
            .iter()
            .filter_map(|r| r.prediction.as_ref().map(|p| (&examples[r.index], p)))
            .collect();
        let (raw_score, score) = match self.metric.corpus_score(&pairs) {
            Some(corpus) => {
                // Failed runs count as the worst score in the corpus aggregate too.
                let share = if results.is_empty() {
                    0.0
                } else {
                    pairs.len() as f64 / results.len() as f64
                };
                (corpus, normalize(&info, corpus) * share)
            }
            None if results.is_empty() => (0.0, 0.0),
            None => {
                let n = results.len() as f64;
                (
                    results.iter().map(|r| r.score.value).sum::<f64>() / n,
                    results.iter().map(|r| r.normalized).sum::<f64>() / n,
                )
            }
        };
        Ok(EvalReport {
            score,
            raw_score,
            results,
            wall_time: started.elapsed(),
        })
    }
}
