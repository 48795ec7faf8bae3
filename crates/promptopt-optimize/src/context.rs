//! What an optimizer works with: the program, the models, the metric, the budget and the events.

use std::sync::Arc;

use promptopt_core::evaluate::{EvalMemo, EvalReport, EvalSettings};
use promptopt_core::{
    CoreError, Example, LmRegistry, Metric, Prediction, Program, ProgramState, RunSettings,
    Runtime, Score, Stage, Trace,
};
use promptopt_lm::{LmError, SharedLm};
use rand::SeedableRng;
use rand_chacha::ChaCha8Rng;

use crate::{Budget, BudgetedLm, Event, EventSink, NullSink, OptimizeError, StopReason};

/// Everything an optimizer works with.
///
/// Both models are wrapped in the run's [`Budget`]. Cloning is cheap (everything is shared).
#[derive(Clone)]
pub struct OptimizeContext {
    program: Program,
    raw_task_lm: SharedLm,
    raw_prompt_lm: SharedLm,
    runtime: Runtime,
    prompt_lm: SharedLm,
    prompt_model: String,
    metric: Arc<dyn Metric>,
    concurrency: usize,
    seed: u64,
    max_errors: usize,
    budget: Arc<Budget>,
    events: Arc<dyn EventSink>,
    memo: EvalMemo,
    select_tools: bool,
}

impl std::fmt::Debug for OptimizeContext {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("OptimizeContext")
            .field("program", &self.program)
            .field("task_model", &self.runtime.lms.default_model())
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
    program: Program,
    task_lm: SharedLm,
    task_model: String,
    settings: RunSettings,
    prompt: Option<(SharedLm, String)>,
    metric: Arc<dyn Metric>,
    concurrency: usize,
    seed: u64,
    max_errors: usize,
    budget: Option<Arc<Budget>>,
    events: Arc<dyn EventSink>,
    memo: Option<EvalMemo>,
    select_tools: bool,
    tools: Option<Arc<promptopt_core::tools::Toolbox>>,
}

impl OptimizeContextBuilder {
    /// The toolbox of `react` stages for this run (one with a call budget); without it, the
    /// tools the settings declare.
    pub fn tools(mut self, tools: Option<Arc<promptopt_core::tools::Toolbox>>) -> Self {
        self.tools = tools;
        self
    }

    /// Whether the optimizer also chooses the tools of `react` stages and how each is described
    /// (the `tool_selection` target).
    pub fn select_tools(mut self, select: bool) -> Self {
        self.select_tools = select;
        self
    }

    /// The memo of evaluations (default: a fresh one): pass one preloaded from a checkpoint to
    /// skip the evaluations an interrupted run completed.
    pub fn memo(mut self, memo: EvalMemo) -> Self {
        self.memo = Some(memo);
        self
    }

    /// The model that proposes instructions and reflects (default: the task model).
    pub fn prompt_model(mut self, lm: SharedLm, model: impl Into<String>) -> Self {
        self.prompt = Some((lm, model.into()));
        self
    }

    /// How the task model is called: adapter, JSON fallback, temperature, `max_tokens`
    /// (default: [`RunSettings::default`]).
    pub fn settings(mut self, settings: RunSettings) -> Self {
        self.settings = settings;
        self
    }

    /// The task model's temperature.
    pub fn temperature(mut self, temperature: Option<f32>) -> Self {
        self.settings.temperature = temperature;
        self
    }

    /// The bound on tokens generated per task-model call.
    pub fn max_tokens(mut self, max_tokens: Option<u32>) -> Self {
        self.settings.max_tokens = max_tokens;
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
        let mut runtime = Runtime::new(budgeted_registry(&self.task_model, &self.task_lm, &budget))
            .with_settings(self.settings);
        if let Some(tools) = self.tools {
            runtime = runtime.with_tools(tools);
        }
        OptimizeContext {
            program: self.program,
            raw_task_lm: self.task_lm,
            prompt_lm: BudgetedLm::shared(raw_prompt_lm.clone(), budget.clone()),
            raw_prompt_lm,
            runtime,
            prompt_model,
            metric: self.metric,
            concurrency: self.concurrency,
            seed: self.seed,
            max_errors: self.max_errors,
            budget,
            events: self.events,
            memo: self.memo.unwrap_or_default(),
            select_tools: self.select_tools,
        }
    }
}

/// Every model name resolves to `lm` (which routes by provider) under the budget; `model` is
/// the default.
fn budgeted_registry(model: &str, lm: &SharedLm, budget: &Arc<Budget>) -> LmRegistry {
    let budgeted = BudgetedLm::shared(lm.clone(), budget.clone());
    LmRegistry::new(model, budgeted.clone()).with_fallback(budgeted)
}

impl OptimizeContext {
    /// Starts a context for `program` on the task model `task_model` served by `task_lm`,
    /// scored by `metric`.
    pub fn builder(
        program: Program,
        task_lm: SharedLm,
        task_model: impl Into<String>,
        metric: Arc<dyn Metric>,
    ) -> OptimizeContextBuilder {
        OptimizeContextBuilder {
            program,
            task_lm,
            task_model: task_model.into(),
            settings: RunSettings::default(),
            prompt: None,
            metric,
            concurrency: 4,
            seed: 0,
            max_errors: 10,
            budget: None,
            events: Arc::new(NullSink),
            memo: None,
            select_tools: false,
            tools: None,
        }
    }

    /// The same context spending from another budget.
    pub fn with_budget(&self, budget: Arc<Budget>) -> Self {
        let mut ctx = self.clone();
        ctx.runtime.lms = budgeted_registry(self.task_model(), &self.raw_task_lm, &budget);
        ctx.prompt_lm = BudgetedLm::shared(self.raw_prompt_lm.clone(), budget.clone());
        ctx.budget = budget;
        ctx
    }

    /// The same context with another task model name (model selection).
    pub fn with_task_model(&self, model: impl Into<String>) -> Self {
        let mut ctx = self.clone();
        ctx.runtime.lms = budgeted_registry(&model.into(), &self.raw_task_lm, &self.budget);
        ctx
    }

    /// The same context with another seed.
    pub fn with_seed(&self, seed: u64) -> Self {
        let mut ctx = self.clone();
        ctx.seed = seed;
        ctx
    }

    /// Whether the tools of `react` stages are chosen and described (the `tool_selection`
    /// target).
    pub fn select_tools(&self) -> bool {
        self.select_tools
    }

    /// The program.
    pub fn program(&self) -> &Program {
        &self.program
    }

    /// The program's stages (its predictors), in order.
    pub fn predictors(&self) -> Vec<Stage> {
        self.program.stages().to_vec()
    }

    /// The task model's runtime: the budgeted models and the call settings.
    pub fn runtime(&self) -> &Runtime {
        &self.runtime
    }

    /// The task model's name (`provider/model`).
    pub fn task_model(&self) -> &str {
        self.runtime.lms.default_model()
    }

    /// The tokens the task model's context holds per request, when its backend knows it (the
    /// embedded engine does).
    pub fn task_context_tokens(&self) -> Option<u64> {
        self.raw_task_lm.context_tokens(self.task_model())
    }

    /// The tokens the prompt model's context holds per request, when its backend knows it.
    pub fn prompt_context_tokens(&self) -> Option<u64> {
        self.raw_prompt_lm.context_tokens(self.prompt_model())
    }

    /// `instruction` cut to fit the task model's context (see
    /// [`crate::instruction::fit_to_context`]), with a warning naming `what` when it had to be
    /// cut; unchanged when it fits or the context is unknown.
    pub fn fit_instruction(&self, instruction: String, what: &str) -> String {
        let Some(context) = self.task_context_tokens() else {
            return instruction;
        };
        match crate::instruction::fit_to_context(&instruction, context) {
            Some(cut) => {
                self.warn(format!(
                    "Cut {what} from {} to {} bytes to fit `{}`'s context of {context} tokens",
                    instruction.len(),
                    cut.len(),
                    self.task_model()
                ));
                cut
            }
            None => instruction,
        }
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
            OptimizeError::Lm(LmError::BudgetExhausted(_)) => self.stopped(),
            OptimizeError::Core(error) if error.is_budget_exhausted() => self.stopped(),
            other => other,
        }
    }

    fn stopped(&self) -> OptimizeError {
        OptimizeError::Stopped(
            self.budget
                .stopped_reason()
                .unwrap_or(StopReason::BudgetCalls),
        )
    }

    /// Runs `state` on one example.
    pub async fn run(
        &self,
        state: &ProgramState,
        example: &Example,
    ) -> Result<(Prediction, Trace), OptimizeError> {
        self.run_with(&self.runtime, state, example).await
    }

    /// Runs `state` on one example with other call settings (e.g. a higher temperature and a
    /// seed for resampling): `runtime` should be a modified clone of [`OptimizeContext::runtime`],
    /// so that its models stay under the budget.
    pub async fn run_with(
        &self,
        runtime: &Runtime,
        state: &ProgramState,
        example: &Example,
    ) -> Result<(Prediction, Trace), OptimizeError> {
        self.check()?;
        self.program
            .run(state, example, runtime)
            .await
            .map_err(|e| self.stopped_or(e.into()))
    }

    /// Scores a prediction with the metric, off the runtime's workers when the metric blocks
    /// (a command). A metric that fails is an error: the run stops with its reason.
    pub async fn score(
        &self,
        example: &Example,
        prediction: &Prediction,
        trace: &Trace,
    ) -> Result<Score, OptimizeError> {
        let (score, _, _) = promptopt_core::evaluate::score_off_runtime(
            &self.metric,
            example,
            prediction.clone(),
            trace.clone(),
        )
        .await?;
        Ok(score)
    }

    /// Runs `state` on every example (`concurrency` at a time) with the one evaluator of
    /// `promptopt-core` and scores it. Fails with `Stopped` when the budget runs out part way
    /// (a partial score would not be comparable), and with the last error when more than
    /// `max_errors` runs fail. Runs whose prompt did not fit the model's context score as
    /// failed examples and do not count towards `max_errors`. Evaluations are remembered per
    /// state, task model and examples: a deterministic model would answer the same again.
    pub async fn evaluate(
        &self,
        state: &ProgramState,
        examples: &[Example],
    ) -> Result<EvalReport, OptimizeError> {
        self.check()?;
        let settings = EvalSettings {
            concurrency: self.concurrency,
            max_errors: Some(self.max_errors),
            keep_traces: true,
            events: self.events.clone(),
            memo: Some(self.memo.clone()),
        };
        promptopt_core::evaluate(
            &self.program,
            state,
            examples,
            &self.metric,
            &self.runtime,
            &settings,
        )
        .await
        .map_err(|e| match e {
            CoreError::TooManyErrors { .. } => OptimizeError::Core(e),
            other => self.stopped_or(other.into()),
        })
    }

    /// The evaluation of `state` on `examples` when this context already made it.
    pub fn remembered(&self, state: &ProgramState, examples: &[Example]) -> Option<EvalReport> {
        self.memo.get(&EvalMemo::key(
            &self.program,
            &self.runtime,
            state,
            examples,
        ))
    }
}
