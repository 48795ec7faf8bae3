//! The pipeline: request → data → baseline → optimization → validation → registry → result.

use std::collections::{BTreeMap, HashMap};
use std::sync::Arc;
use std::time::{Duration, Instant};

use parking_lot::Mutex;
use promptopt_core::adapter::AdapterKind;
use promptopt_core::metrics::{self, CommandMetric};
use promptopt_core::tools::{ToolSpec, Toolbox};
use promptopt_core::{
    Dataset, EvalMemo, Example, Field, Metric, Prediction, Program, ProgramState, RunSettings,
    Runtime, Strategy, Trace,
};
use promptopt_lm::{Role, SharedLm};
use promptopt_registry::{ModelArtifact, ModelSettings, Provenance, Registry, VersionSpec};
use serde_json::{json, Value};
use sha2::{Digest, Sha256};

use crate::request::build_optimizer;
use crate::result::{
    improvement_percentage, Analytics, DatasetSummary, LoggedPrediction, StageTiming, TestMetrics,
};
use crate::{
    Algorithm, Budget, BudgetLimits, CancelFlag, EvalReport, Event, EventSink, NullSink,
    OptimizationRequest, OptimizationResult, OptimizeContext, OptimizeError, OptimizerOutcome,
    PerformanceMetrics, Target,
};

mod choose;
mod failures;
mod models;

use crate::plot::TrajectoryRecorder;
use crate::FanOut;
use choose::{choose, validation_candidates, Choice};
use failures::failed_examples_warning;

/// Runs optimization requests, serves saved models and keeps run analytics.
///
/// The model `lm` answers every model name a request uses (task, prompt and candidate models):
/// typically a router over the embedded engine and the providers.
#[derive(Clone)]
pub struct Pipeline {
    lm: SharedLm,
    registry: Registry,
    events: Arc<dyn EventSink>,
    cancel: CancelFlag,
    concurrency: usize,
    analytics: Arc<Mutex<HashMap<String, Analytics>>>,
    memo: Option<EvalMemo>,
    save_gate: Option<Arc<dyn SaveGate>>,
}

/// Asked just before a run saves its model: `false` skips the save (with a warning). A job
/// worker uses it so that, of two workers finishing the same job, only the one still holding
/// the job saves a model version.
#[async_trait::async_trait]
pub trait SaveGate: Send + Sync {
    /// Whether the model may be saved now.
    async fn allow(&self) -> bool;
}

impl std::fmt::Debug for Pipeline {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Pipeline")
            .field("registry", &self.registry)
            .field("concurrency", &self.concurrency)
            .finish_non_exhaustive()
    }
}

/// Data, metric and program of a request, ready to run.
struct Prepared {
    train: Vec<Example>,
    val: Vec<Example>,
    test: Vec<Example>,
    dataset: Dataset,
    metric: Arc<dyn Metric>,
    program: Program,
    settings: RunSettings,
    initial: ProgramState,
    /// The run's tools (with the call budget, when the request sets one).
    toolbox: Option<Arc<Toolbox>>,
}

impl DatasetSummary {
    fn of(examples: &[Example]) -> Self {
        let mut hasher = Sha256::new();
        for e in examples {
            hasher.update(serde_json::to_string(e).unwrap_or_default().as_bytes());
            hasher.update(b"\n");
        }
        Self {
            examples: examples.len(),
            sha256: hex::encode(hasher.finalize()),
        }
    }
}

impl Pipeline {
    /// A pipeline whose models are served by `lm`, saving into `registry`.
    pub fn new(lm: SharedLm, registry: Registry) -> Self {
        Self {
            lm,
            registry,
            events: Arc::new(NullSink),
            cancel: CancelFlag::new(),
            concurrency: 4,
            analytics: Arc::new(Mutex::new(HashMap::new())),
            memo: None,
            save_gate: None,
        }
    }

    /// Builder: the memo of evaluations the run starts from (preloaded from a checkpoint, or
    /// with a journal that writes one), so an interrupted run repeats none of its completed
    /// evaluations. Use a fresh memo per run.
    pub fn with_memo(mut self, memo: EvalMemo) -> Self {
        self.memo = Some(memo);
        self
    }

    /// Builder: asked before the model is saved (see [`SaveGate`]).
    pub fn with_save_gate(mut self, gate: Arc<dyn SaveGate>) -> Self {
        self.save_gate = Some(gate);
        self
    }

    /// Builder: where events go.
    pub fn with_events(mut self, events: Arc<dyn EventSink>) -> Self {
        self.events = events;
        self
    }

    /// Builder: the flag that stops a run (it then keeps its best so far).
    pub fn with_cancel(mut self, cancel: CancelFlag) -> Self {
        self.cancel = cancel;
        self
    }

    /// Builder: examples evaluated at once unless a request says otherwise (default 4).
    pub fn with_concurrency(mut self, concurrency: usize) -> Self {
        self.concurrency = concurrency.max(1);
        self
    }

    /// The registry.
    pub fn registry(&self) -> &Registry {
        &self.registry
    }

    fn emit(&self, event: Event) {
        self.events.emit(&event);
    }

    async fn prepare(&self, request: &OptimizationRequest) -> Result<Prepared, OptimizeError> {
        let base = request.base_dir.clone().unwrap_or_else(|| ".".into());
        let train_examples = request.training_examples.load(&base)?;
        let source = match &request.training_examples {
            crate::DataSource::Path(p) => format!("`{}`", p.display()),
            crate::DataSource::Inline(_) => "`training_examples`".to_string(),
        };
        let dataset = Dataset::new(
            train_examples,
            request.input_keys.clone(),
            request.output_keys.clone(),
            &source,
        )?;
        let (train, val) = match &request.validation_examples {
            Some(v) => (dataset.examples.clone(), v.load(&base)?),
            None => {
                let (t, v) = dataset.split(0.8, request.seed)?;
                (t.examples, v.examples)
            }
        };
        if train.is_empty() {
            return Err(OptimizeError::NoExamples {
                purpose: "train",
                message: "the training set is empty".into(),
            });
        }
        if val.is_empty() {
            return Err(OptimizeError::NoExamples {
                purpose: "validate",
                message: "the validation set is empty; give `validation_examples` or more training examples".into(),
            });
        }
        let output_key = dataset.output_keys.first().cloned().unwrap_or_default();
        let metric: Arc<dyn Metric> = match request
            .custom_metrics
            .iter()
            .find(|m| m.name == request.evaluation_metric)
        {
            Some(spec) => {
                let mut m = CommandMetric::shell_in(spec.name.clone(), &spec.command, &base)?
                    .with_higher_is_better(spec.higher_is_better)
                    .with_range(spec.min_value, spec.max_value);
                if let Some(t) = spec.timeout_seconds {
                    m = m.with_timeout(Duration::from_secs(t));
                }
                // Checked before any model call: the first training example's own outputs as
                // the prediction must get a score (a missing command, one that exits or
                // prints something else fails here, with its reason).
                let probe = &train[0];
                let gold = Prediction {
                    outputs: probe.project(&dataset.output_keys),
                };
                m.try_score(probe, &gold, &Trace::default()).map_err(|e| {
                    OptimizeError::InvalidRequest {
                        location: None,
                        message: format!(
                            "custom metric `{}` failed on the first training example: {e}",
                            spec.name
                        ),
                    }
                })?;
                Arc::new(m)
            }
            None => metrics::by_name(&request.evaluation_metric, &output_key)?,
        };
        let mut signature = dataset.signature();
        if let Some(instructions) = &request.instructions {
            signature.instructions = instructions.clone();
        }
        let adapter = request
            .adapter
            .as_deref()
            .and_then(AdapterKind::from_name)
            .unwrap_or_else(|| AdapterKind::default_for_model(request.task_model()));
        // The tools, their files found from the request's folder, built now (MCP servers
        // started) so that a missing collection or a server that does not start is an error
        // before any model call.
        let tools: Vec<ToolSpec> = request
            .tools
            .iter()
            .cloned()
            .map(|t| t.resolved(Some(&base)))
            .collect();
        let toolbox = if tools.is_empty() {
            None
        } else {
            Some(Toolbox::shared(&tools).await?)
        };
        let declared: Vec<String> = toolbox
            .iter()
            .flat_map(|t| t.names())
            .map(str::to_string)
            .collect();
        // A call budget makes a toolbox of the run's own (the shared one counts every run).
        let toolbox = match (
            toolbox,
            request.constraints.as_ref().and_then(|c| c.max_tool_calls),
        ) {
            (Some(shared), Some(limit)) => Some(Arc::new(
                Toolbox::new(shared.tools().to_vec()).with_budget(limit),
            )),
            (toolbox, _) => toolbox,
        };
        let settings = RunSettings {
            adapter,
            max_tokens: request.constraints.as_ref().and_then(|c| c.max_tokens),
            seed: None,
            tools,
            ..RunSettings::default()
        };
        let program = if request.program.is_empty() {
            Program::single(signature)
        } else {
            // Fields a stage names that the dataset has keep the dataset's types (labels).
            let known: Vec<Field> = signature
                .inputs
                .iter()
                .chain(&signature.outputs)
                .cloned()
                .collect();
            let stages = request
                .program
                .iter()
                .cloned()
                .map(|spec| spec.into_stage(&known))
                .collect::<Result<Vec<_>, _>>()?;
            check_stage_tools(&stages, &declared)?;
            Program::new(
                dataset.input_keys.clone(),
                stages,
                dataset.output_keys.clone(),
            )?
        };
        let mut initial = program.initial_state();
        if request.include_reasoning() {
            for p in initial.predictors.values_mut() {
                p.strategy = Strategy::ChainOfThought;
            }
        }
        let test = match &request.test_examples {
            Some(t) => t.load(&base)?,
            None => Vec::new(),
        };
        Ok(Prepared {
            train,
            val,
            test,
            dataset,
            metric,
            program,
            settings,
            initial,
            toolbox,
        })
    }

    fn warnings(request: &OptimizationRequest, prepared: &Prepared) -> Vec<String> {
        let mut warnings = Vec::new();
        let n = prepared.train.len();
        if request.algorithm == Algorithm::Miprov2 && n < 50 {
            warnings.push(format!(
                "Only {n} training examples: MIPROv2 needs 50 or more to do well; consider `bootstrapfewshot`"
            ));
        } else if n < 10 {
            warnings.push(format!(
                "Only {n} training examples: fewer than 10 is too few for most optimizers; `bootstrapfewshot` copes best"
            ));
        }
        let metric = request.evaluation_metric.to_ascii_lowercase();
        if metric == "accuracy" {
            if let Some(key) = prepared.dataset.output_keys.first() {
                let mut counts: BTreeMap<String, usize> = BTreeMap::new();
                for e in &prepared.dataset.examples {
                    *counts.entry(e.text(key).unwrap_or_default()).or_default() += 1;
                }
                let total: usize = counts.values().sum();
                let max = counts.values().copied().max().unwrap_or(0);
                let min = counts.values().copied().min().unwrap_or(0);
                if counts.len() >= 2
                    && counts.len() <= 100
                    && total > 0
                    && (max as f64 / total as f64 > 0.7 || (min as f64) < 0.5 * max as f64)
                {
                    warnings.push(format!(
                        "The classes of `{key}` are imbalanced ({min} to {max} examples per class): `accuracy` can look good by always answering the common class; consider `f1_score`"
                    ));
                }
            }
        }
        warnings
    }

    /// Runs one optimization request.
    pub async fn optimize(
        &self,
        request: &OptimizationRequest,
    ) -> Result<OptimizationResult, OptimizeError> {
        let started = Instant::now();
        let optimization_id = {
            let nanos = std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .map(|d| d.as_nanos())
                .unwrap_or(0);
            let digest = Sha256::digest(format!("{}{nanos}", request.hash()).as_bytes());
            format!("opt-{}", &hex::encode(digest)[..12])
        };
        let mut stages: Vec<StageTiming> = Vec::new();

        // Load and check everything before the first model call.
        let t = Instant::now();
        self.emit(Event::StageStarted {
            stage: "load".into(),
            total: None,
        });
        if request.has_target(Target::ToolSelection)
            && !matches!(request.algorithm, Algorithm::Miprov2 | Algorithm::Gepa)
        {
            return Err(OptimizeError::Unsupported(format!(
                "Target `tool_selection` with algorithm `{}` (tools are chosen and described by `miprov2` and `gepa`)",
                request.algorithm.as_str()
            )));
        }
        if request.has_target(Target::PromptTemplate)
            && !matches!(request.algorithm, Algorithm::Miprov2 | Algorithm::Gepa)
        {
            return Err(OptimizeError::Unsupported(format!(
                "Target `prompt_template` with algorithm `{}` (instructions are optimized by `miprov2` and `gepa`)",
                request.algorithm.as_str()
            )));
        }
        let config = request.effective_algorithm_config();
        let optimizer = build_optimizer(request.algorithm, &config, &request.target_kinds())?;
        let prepared = self.prepare(request).await?;
        if request.has_target(Target::ToolSelection)
            && !prepared
                .program
                .stages()
                .iter()
                .any(|s| s.module == Strategy::React && !s.tools.is_empty())
        {
            return Err(OptimizeError::InvalidRequest {
                location: None,
                message: "`tool_selection` chooses the tools of `react` stages, and the program has none: add a `program` stage with `module: react` and `tools`".into(),
            });
        }
        let mut warnings = Self::warnings(request, &prepared);
        for w in &warnings {
            self.emit(Event::Warning { message: w.clone() });
        }
        let constraints = request.constraints();
        let task_model = request.task_model().to_string();
        let prompt_model = request.effective_prompt_model();
        let concurrency = request.concurrency.unwrap_or(self.concurrency);
        // The run's trajectory is a subscriber of its events, like the caller's sink.
        let recorder = TrajectoryRecorder::new();
        let events: Arc<dyn EventSink> = Arc::new(FanOut(vec![
            self.events.clone(),
            Arc::new(recorder.clone()),
        ]));
        self.emit(Event::RunStarted {
            name: model_name(request),
            algorithm: request.algorithm.as_str().to_string(),
            model: task_model.clone(),
            stages: prepared
                .program
                .stages()
                .iter()
                .map(|s| s.name.clone())
                .collect(),
        });
        stages.push(StageTiming {
            stage: "load".into(),
            seconds: t.elapsed().as_secs_f64(),
            lm_calls: 0,
            cache_hits: 0,
            tokens: 0,
            cost_usd: 0.0,
        });
        self.emit(Event::StageFinished {
            stage: "load".into(),
            seconds: t.elapsed().as_secs_f64(),
        });

        // Baseline.
        // The baseline spends from the run's cost limit first (the search gets what is left).
        let baseline_budget = Arc::new(Budget::with_cancel(
            BudgetLimits {
                max_cost_usd: constraints.max_cost_usd,
                ..BudgetLimits::default()
            },
            self.cancel.clone(),
        ));
        let base_ctx = OptimizeContext::builder(
            prepared.program.clone(),
            self.lm.clone(),
            task_model.clone(),
            prepared.metric.clone(),
        )
        .prompt_model(self.lm.clone(), prompt_model)
        .settings(prepared.settings.clone())
        .concurrency(concurrency)
        .seed(request.seed)
        .events(events.clone())
        .budget(baseline_budget.clone())
        .memo(self.memo.clone().unwrap_or_default())
        .select_tools(request.has_target(Target::ToolSelection))
        .tools(prepared.toolbox.clone())
        .build();
        let baseline = self
            .stage(&mut stages, "baseline", &baseline_budget, async {
                base_ctx.evaluate(&prepared.initial, &prepared.val).await
            })
            .await?;
        if !baseline.results.is_empty()
            && baseline
                .results
                .iter()
                .all(|r| r.error.is_some() && !r.context_overflow)
        {
            return Err(OptimizeError::BaselineFailed {
                examples: baseline.results.len(),
                last: baseline
                    .results
                    .iter()
                    .rev()
                    .find_map(|r| r.error.clone())
                    .unwrap_or_default(),
                retryable: baseline.results.iter().all(|r| r.retryable_error),
            });
        }

        // Optimization.
        let remaining_cost = constraints
            .max_cost_usd
            .map(|c| (c - baseline_budget.cost_usd()).max(0.0));
        let opt_budget = Arc::new(Budget::with_cancel(
            BudgetLimits {
                max_lm_calls: constraints.max_lm_calls,
                max_tokens: constraints.max_total_tokens,
                max_cost_usd: remaining_cost,
                timeout: Some(Duration::from_secs(request.timeout_seconds)),
                max_iterations: Some(request.max_iterations),
            },
            self.cancel.clone(),
        ));
        let opt_ctx = base_ctx.with_budget(opt_budget.clone());
        let runs = self
            .stage(&mut stages, "optimize", &opt_budget, async {
                self.run_target(request, &opt_ctx, optimizer.as_ref(), &prepared)
                    .await
            })
            .await?;
        let stop_reason = runs.iter().find_map(|(_, o)| o.stop_reason);
        let iterations: usize = runs.iter().map(|(_, o)| o.iterations).sum();

        // Validation of the candidates and choice by objective under constraints.
        let validate_budget = Arc::new(Budget::unlimited());
        let val_ctx = base_ctx.with_budget(validate_budget.clone());
        // Scores of the runs' bests that their optimizer did not score (BootstrapFewShot), by run.
        let mut validated_bests: Vec<Option<f64>> = vec![None; runs.len()];
        let choice = self
            .stage(&mut stages, "validate", &validate_budget, async {
                let candidates = validation_candidates(
                    request,
                    &constraints,
                    &runs,
                    &prepared,
                    &baseline,
                    &val_ctx,
                    &mut validated_bests,
                )
                .await?;
                Ok(choose(request, &constraints, candidates, &task_model))
            })
            .await?;
        let Choice {
            winner,
            report: winner_report,
            model_reports,
            failures: mut constraint_failures,
            set_aside,
        } = choice;
        warnings.extend(set_aside);
        // Runs whose optimizer scored nothing (BootstrapFewShot) are one trial: their best, as
        // validated.
        for ((_, outcome), validated) in runs.iter().zip(&validated_bests) {
            if let (true, Some(score)) = (outcome.trajectory.is_empty(), validated) {
                events.emit(&Event::TrialScored {
                    trial: 1,
                    score: *score,
                    best_so_far: *score,
                    kind: crate::TrialKind::Full,
                });
            }
        }
        let trajectory = recorder.points();

        let metric_name = prepared.metric.info().name;
        let baseline_metrics = PerformanceMetrics::from_report(&metric_name, &baseline);
        let optimized_metrics = PerformanceMetrics::from_report(&metric_name, &winner_report);
        if let Some(min) = constraints.min_accuracy {
            if optimized_metrics.score < min {
                constraint_failures.push(format!(
                    "min_accuracy: the optimized score {:.4} is below {min}",
                    optimized_metrics.score
                ));
            }
        }
        warnings.extend(failed_examples_warning("starting", &baseline));
        if winner.fingerprint() != prepared.initial.fingerprint() {
            warnings.extend(failed_examples_warning("optimized", &winner_report));
        }
        if let (Some(toolbox), Some(limit)) = (
            &prepared.toolbox,
            request.constraints.as_ref().and_then(|c| c.max_tool_calls),
        ) {
            if toolbox.calls() > limit {
                warnings.push(format!(
                    "The run's budget of {limit} tool calls was spent; {} later calls were answered that the budget is spent",
                    toolbox.calls() - limit
                ));
            }
        }
        if stop_reason.is_some() {
            warnings.push(format!(
                "The optimizer stopped early ({}); the result is the best found so far",
                stop_reason.map(|r| r.as_str()).unwrap_or_default()
            ));
        }
        let winner_model = winner
            .predictors
            .values()
            .find_map(|p| p.model.clone())
            .unwrap_or_else(|| task_model.clone());
        let shown_runtime = Runtime::new(
            promptopt_core::LmRegistry::new(winner_model.clone(), self.lm.clone())
                .with_fallback(self.lm.clone()),
        )
        .with_settings(prepared.settings.clone());
        let optimized_prompt = render_prompt(&prepared.program, &shown_runtime, &winner);

        // Test: the baseline and the winner on held-out examples.
        let test_budget = Arc::new(Budget::unlimited());
        let test_metrics = if prepared.test.is_empty() {
            None
        } else {
            let test_ctx = base_ctx.with_budget(test_budget.clone());
            let (base_test, winner_test) = self
                .stage(&mut stages, "test", &test_budget, async {
                    let base = test_ctx.evaluate(&prepared.initial, &prepared.test).await?;
                    let best = test_ctx.evaluate(&winner, &prepared.test).await?;
                    Ok((base, best))
                })
                .await?;
            let baseline = PerformanceMetrics::from_report(&metric_name, &base_test);
            let optimized = PerformanceMetrics::from_report(&metric_name, &winner_test);
            Some(TestMetrics {
                examples: prepared.test.len(),
                improvement_percentage: improvement_percentage(baseline.score, optimized.score),
                baseline,
                optimized,
            })
        };

        let mut datasets = BTreeMap::from([
            ("train".to_string(), DatasetSummary::of(&prepared.train)),
            ("validation".to_string(), DatasetSummary::of(&prepared.val)),
        ]);
        if !prepared.test.is_empty() {
            datasets.insert("test".to_string(), DatasetSummary::of(&prepared.test));
        }

        // Save.
        let t = Instant::now();
        let model_id = if constraint_failures.is_empty() {
            let mut artifact = ModelArtifact::new(
                model_name(request),
                prepared.program.clone(),
                winner.clone(),
                ModelSettings {
                    model: winner_model,
                    adapter: prepared.settings.adapter,
                    temperature: prepared.settings.temperature,
                    max_tokens: prepared.settings.max_tokens,
                },
            );
            artifact.tools = prepared.settings.tools.clone();
            artifact.metrics = json!({
                "metric": metric_name,
                "baseline_score": baseline_metrics.score,
                "optimized_score": optimized_metrics.score,
                "validation_examples": prepared.val.len(),
                "optimized": optimized_metrics,
                "test": test_metrics,
            })
            .as_object()
            .cloned()
            .unwrap_or_default();
            artifact.metadata = json!({
                "targets": request.target_kinds().iter().map(|t| t.as_str()).collect::<Vec<_>>(),
                "algorithm": request.algorithm.as_str(),
                "objective": request.objective,
                "input_keys": prepared.dataset.input_keys,
                "output_keys": prepared.dataset.output_keys,
            })
            .as_object()
            .cloned()
            .unwrap_or_default();
            let dataset_hashes = datasets
                .iter()
                .map(|(split, d)| (split.clone(), d.sha256.clone()))
                .collect();
            artifact.provenance = Provenance {
                optimization_id: Some(optimization_id.clone()),
                request_hash: Some(request.hash()),
                request: serde_json::to_value(request).ok(),
                dataset_hashes,
                seed: Some(request.seed),
                algorithm: Some(request.algorithm.as_str().to_string()),
                parent_version: None,
            };
            let allowed = match &self.save_gate {
                Some(gate) => gate.allow().await,
                None => true,
            };
            if allowed {
                let saved = self.registry.save(artifact, VersionSpec::NextPatch)?;
                Some(saved.id())
            } else {
                warnings.push(
                    "The model was not saved: another attempt of this job finished it".into(),
                );
                None
            }
        } else {
            warnings.push("The model was not saved because it fails its constraints".into());
            None
        };
        stages.push(StageTiming {
            stage: "save".into(),
            seconds: t.elapsed().as_secs_f64(),
            lm_calls: 0,
            cache_hits: 0,
            tokens: 0,
            cost_usd: 0.0,
        });

        let budgets = [
            &baseline_budget,
            &opt_budget,
            &validate_budget,
            &test_budget,
        ];
        let lm_calls: u64 = budgets.iter().map(|b| b.calls()).sum();
        let total_tokens: u64 = budgets.iter().map(|b| b.tokens()).sum();
        let cost: f64 = budgets.iter().map(|b| b.cost_usd()).sum();
        let cost_known = baseline.cost_usd.is_some() && winner_report.cost_usd.is_some();
        let total_cost_usd = (request.track_costs && cost_known).then_some(cost);
        let validation_results = logged_predictions(&prepared.val, &winner_report);
        let analytics = request.enable_analytics.then(|| Analytics {
            total_cost_usd,
            cost_per_sample: optimized_metrics.cost_per_sample,
            latency_p50_ms: optimized_metrics.latency_p50_ms,
            latency_p95_ms: optimized_metrics.latency_p95_ms,
            lm_calls,
            total_tokens,
            cache_hits: budgets.iter().map(|b| b.cache_hits()).sum(),
            retries: budgets.iter().map(|b| b.retries()).sum(),
            failed_calls: budgets.iter().map(|b| b.failed_calls()).sum(),
            stages: stages.clone(),
            predictions: if request.log_predictions {
                validation_results.clone()
            } else {
                Vec::new()
            },
        });
        if let Some(a) = &analytics {
            self.analytics
                .lock()
                .insert(optimization_id.clone(), a.clone());
        }
        let result = OptimizationResult {
            optimization_id,
            model_id,
            improvement_percentage: improvement_percentage(
                baseline_metrics.score,
                optimized_metrics.score,
            ),
            baseline_metrics,
            optimized_metrics,
            optimized_prompt,
            optimized_config: winner,
            algorithm_used: optimizer.name().to_string(),
            iterations_completed: iterations,
            duration_seconds: started.elapsed().as_secs_f64(),
            total_cost_usd,
            mlflow_run_id: None,
            stop_reason,
            warnings,
            constraint_failures,
            analytics,
            trajectory,
            model_reports,
            test_metrics,
            datasets,
            validation_results,
        };
        self.emit(Event::RunFinished {
            model_id: result.model_id.clone(),
            score: result.optimized_metrics.score,
            baseline: result.baseline_metrics.score,
            seconds: result.duration_seconds,
        });
        Ok(result)
    }

    async fn stage<T>(
        &self,
        stages: &mut Vec<StageTiming>,
        name: &str,
        budget: &Budget,
        work: impl std::future::Future<Output = Result<T, OptimizeError>>,
    ) -> Result<T, OptimizeError> {
        let t = Instant::now();
        let (calls, hits, tokens, cost) = (
            budget.calls(),
            budget.cache_hits(),
            budget.tokens(),
            budget.cost_usd(),
        );
        self.emit(Event::StageStarted {
            stage: name.into(),
            total: None,
        });
        let out = work.await;
        let seconds = t.elapsed().as_secs_f64();
        stages.push(StageTiming {
            stage: name.into(),
            seconds,
            lm_calls: budget.calls() - calls,
            cache_hits: budget.cache_hits() - hits,
            tokens: budget.tokens() - tokens,
            cost_usd: budget.cost_usd() - cost,
        });
        self.emit(Event::StageFinished {
            stage: name.into(),
            seconds,
        });
        out
    }

    /// The optimizer runs a target needs: one, one per strategy, or one per candidate model.
    async fn run_target(
        &self,
        request: &OptimizationRequest,
        ctx: &OptimizeContext,
        optimizer: &dyn crate::Optimizer,
        prepared: &Prepared,
    ) -> Result<Vec<(Option<String>, OptimizerOutcome)>, OptimizeError> {
        let mut starts: Vec<(Option<String>, ProgramState)> = Vec::new();
        let strategies = if request.has_target(Target::ReasoningStrategy) {
            vec![Some(Strategy::Predict), Some(Strategy::ChainOfThought)]
        } else {
            vec![None]
        };
        let models: Vec<Option<String>> = if request.has_target(Target::ModelSelection) {
            request.candidate_models.iter().cloned().map(Some).collect()
        } else {
            vec![None]
        };
        for model in &models {
            for strategy in &strategies {
                let mut s = prepared.initial.clone();
                for p in s.predictors.values_mut() {
                    if let Some(strategy) = strategy {
                        p.strategy = *strategy;
                    }
                    if let Some(model) = model {
                        p.model = Some(model.clone());
                    }
                }
                starts.push((model.clone(), s));
            }
        }
        let mut runs = Vec::new();
        for (model, start) in starts {
            if let Some(reason) = ctx.budget().stopped_reason() {
                // Every start still gets an (unscored) entry so the result names its candidates.
                runs.push((
                    model,
                    crate::OutcomeBuilder::new(start).finish(Some(reason)),
                ));
                continue;
            }
            let outcome = match optimizer
                .compile(ctx, &prepared.train, &prepared.val, &start)
                .await
            {
                Ok(o) => o,
                Err(OptimizeError::Stopped(reason)) => {
                    crate::OutcomeBuilder::new(start).finish(Some(reason))
                }
                Err(e) => return Err(e),
            };
            runs.push((model, outcome));
        }
        Ok(runs)
    }

    /// The analytics of a run of this pipeline.
    pub fn get_analytics(&self, optimization_id: &str) -> Option<Analytics> {
        self.analytics.lock().get(optimization_id).cloned()
    }
}

/// The saved model's name: `name`, a free-form `target`, else `model`.
fn model_name(request: &OptimizationRequest) -> String {
    request.model_name().unwrap_or("model").to_string()
}

/// The winner's prompts, stage by stage, with `{field}` placeholders for every input: exactly
/// the messages each stage sends ([`Program::render`]), as text.
fn render_prompt(program: &Program, runtime: &Runtime, state: &ProgramState) -> Option<String> {
    let mut out = String::new();
    let several = program.stages().len() > 1;
    for stage in program.stages() {
        let mut template = Example::new();
        for field in &stage.signature.inputs {
            template.insert(
                field.name.clone(),
                Value::String(format!("{{{}}}", field.name)),
            );
        }
        let request = program
            .render(&stage.name, state, &template, runtime)
            .ok()?;
        if several {
            out.push_str(&format!("## stage `{}`\n\n", stage.name));
        }
        for m in &request.messages {
            let role = match m.role {
                Role::System => "system",
                Role::User => "user",
                Role::Assistant => "assistant",
            };
            out.push_str(&format!("[{role}]\n{}\n\n", m.content));
        }
    }
    Some(out.trim_end().to_string())
}

fn logged_predictions(val: &[Example], report: &EvalReport) -> Vec<LoggedPrediction> {
    report
        .results
        .iter()
        .map(|r| LoggedPrediction {
            example: val[r.index].clone(),
            prediction: r
                .prediction
                .as_ref()
                .map(|p| p.outputs.clone())
                .unwrap_or_default(),
            score: r.normalized,
        })
        .collect()
}

/// Every tool a stage names is declared in the request's `tools`, and a `react` stage names at
/// least one.
fn check_stage_tools(
    stages: &[promptopt_core::Stage],
    declared: &[String],
) -> Result<(), OptimizeError> {
    for stage in stages {
        let invalid = |message: String| {
            OptimizeError::Core(promptopt_core::CoreError::InvalidProgram {
                stage: stage.name.clone(),
                message,
            })
        };
        if let Some(unknown) = stage.tools.iter().find(|t| !declared.contains(t)) {
            return Err(invalid(format!(
                "it names the tool `{unknown}`, which the request's `tools` do not declare ({})",
                if declared.is_empty() {
                    "none are".to_string()
                } else {
                    declared.join(", ")
                }
            )));
        }
        if stage.module == Strategy::React && stage.tools.is_empty() {
            return Err(invalid(
                "a `react` stage needs `tools`: the names of tools the request declares".into(),
            ));
        }
    }
    Ok(())
}
