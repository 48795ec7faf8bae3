//! The worker: claims jobs and runs their optimizations.
//!
//! Each claimed job runs the optimization pipeline with
//! - its events turned into [`Progress`] (stored with the heartbeat, at most every
//!   `progress_every`) and into the job's event log (stages, trials, warnings; not the
//!   per-example evaluation progress);
//! - a heartbeat every `lease / 3` that renews the lease and learns of cancels, and of a lost
//!   lease (another worker reclaimed the job: this attempt stops and its work is discarded);
//! - the job's timeout, after which the run stops and keeps its best so far (`timed_out`);
//! - an evaluation memo whose new entries go to the job's checkpoint, preloaded from it when an
//!   earlier attempt was cut off, so a resumed job repeats none of its completed evaluations
//!   (the other calls of a resumed run are answered by the response cache when it is shared);
//! - a save gate: only the attempt that still holds the job saves its model.

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use async_trait::async_trait;
use promptopt_core::events::FanOut;
use promptopt_lm::SharedLm;
use promptopt_optimize::{
    CancelFlag, EvalMemo, EvalReport, Event, EventSink, MemoJournal, OptimizationRequest, Pipeline,
    SaveGate,
};
use promptopt_registry::Registry;
use promptopt_tracking::{Tracker, TrackingConfig};
use tokio::sync::{mpsc, watch};

use crate::{claim_order, Claim, JobError, Outcome, Priority, Progress, SharedQueue};

/// Builds the model stack a request needs (the binary routes to the embedded engine and the
/// providers).
#[async_trait]
pub trait LmFactory: Send + Sync {
    /// The models of `request`, served under `concurrency` calls at once.
    async fn lm_for(
        &self,
        request: &OptimizationRequest,
        concurrency: usize,
    ) -> Result<SharedLm, String>;

    /// Examples a job evaluates at once when its request sets no `concurrency`: `default` (the
    /// worker's `eval_concurrency`) unless the models want another, e.g. an engine on a GPU
    /// whose batch holds more sequences.
    fn concurrency_for(&self, request: &OptimizationRequest, default: usize) -> usize {
        let _ = request;
        default
    }
}

/// How a worker runs.
#[derive(Debug, Clone)]
pub struct WorkerConfig {
    /// The worker's name in job records and logs.
    pub name: String,
    /// Jobs run at once.
    pub concurrency: usize,
    /// The priorities it takes, most urgent first.
    pub priorities: Vec<Priority>,
    /// How long a claim lasts without a heartbeat.
    pub lease: Duration,
    /// How often progress is stored, at most.
    pub progress_every: Duration,
    /// How long an idle worker waits before looking for work again.
    pub poll: Duration,
    /// Examples evaluated at once inside a job (unless the request says otherwise).
    pub eval_concurrency: usize,
    /// On shutdown, how long running jobs may go on before they are handed back.
    pub grace: Duration,
    /// Stop once the queue has nothing ready for this worker (benchmarks, one-shot drains).
    pub exit_when_empty: bool,
    /// `PROMPTOPT_HOME`: the embedded tracking store lives under it.
    pub home: std::path::PathBuf,
}

impl WorkerConfig {
    /// Defaults: one job at a time, every priority, a 30-second lease.
    pub fn new(name: impl Into<String>, home: impl Into<std::path::PathBuf>) -> Self {
        Self {
            name: name.into(),
            concurrency: 1,
            priorities: Priority::ALL.to_vec(),
            lease: Duration::from_secs(30),
            progress_every: Duration::from_millis(500),
            poll: Duration::from_millis(500),
            eval_concurrency: 4,
            grace: Duration::from_secs(10),
            exit_when_empty: false,
            home: home.into(),
        }
    }
}

/// What a worker did.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct WorkerStats {
    /// Jobs claimed.
    pub claimed: u64,
    /// Attempts recorded (any outcome).
    pub finished: u64,
    /// Attempts whose job was taken over by another worker (work discarded).
    pub lost: u64,
    /// Jobs handed back at shutdown.
    pub released: u64,
}

/// Claims and runs jobs (see the module documentation).
pub struct Worker {
    queue: SharedQueue,
    lm: Arc<dyn LmFactory>,
    registry: Registry,
    config: WorkerConfig,
    claims: AtomicU64,
}

impl std::fmt::Debug for Worker {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Worker")
            .field("queue", &self.queue.url())
            .field("config", &self.config)
            .finish_non_exhaustive()
    }
}

#[derive(Default)]
struct Counters {
    claimed: AtomicU64,
    finished: AtomicU64,
    lost: AtomicU64,
    released: AtomicU64,
}

impl Worker {
    /// A worker on `queue` that saves models into `registry`.
    pub fn new(
        queue: SharedQueue,
        lm: Arc<dyn LmFactory>,
        registry: Registry,
        config: WorkerConfig,
    ) -> Self {
        Self {
            queue,
            lm,
            registry,
            config,
            claims: AtomicU64::new(0),
        }
    }

    /// Runs `concurrency` job loops until `shutdown` turns true (then running jobs get `grace`
    /// to finish and are handed back after it) or, with `exit_when_empty`, until nothing is
    /// ready. Queue errors (Redis restarting) are logged and retried.
    pub async fn run(
        self: Arc<Self>,
        shutdown: watch::Receiver<bool>,
    ) -> Result<WorkerStats, JobError> {
        let counters = Arc::new(Counters::default());
        let mut loops = Vec::new();
        for slot in 0..self.config.concurrency.max(1) {
            let worker = Arc::clone(&self);
            let counters = Arc::clone(&counters);
            let shutdown = shutdown.clone();
            loops.push(tokio::spawn(async move {
                worker.job_loop(slot, shutdown, &counters).await;
            }));
        }
        for handle in loops {
            if let Err(e) = handle.await {
                tracing::error!(worker = %self.config.name, "a job loop failed: {e}");
            }
        }
        Ok(WorkerStats {
            claimed: counters.claimed.load(Ordering::SeqCst),
            finished: counters.finished.load(Ordering::SeqCst),
            lost: counters.lost.load(Ordering::SeqCst),
            released: counters.released.load(Ordering::SeqCst),
        })
    }

    async fn job_loop(&self, slot: usize, mut shutdown: watch::Receiver<bool>, c: &Counters) {
        let mut queue_down_since: Option<Instant> = None;
        loop {
            if *shutdown.borrow() {
                return;
            }
            let n = self.claims.fetch_add(1, Ordering::SeqCst);
            let order = claim_order(&self.config.priorities, n);
            match self
                .queue
                .claim(&self.config.name, &order, self.config.lease)
                .await
            {
                Ok(Some(claim)) => {
                    queue_down_since = None;
                    c.claimed.fetch_add(1, Ordering::SeqCst);
                    tracing::info!(
                        worker = %self.config.name, slot, job_id = %claim.job_id,
                        attempt = claim.record.attempts, resumed = claim.resumed,
                        "job claimed"
                    );
                    match self.run_claim(&claim, shutdown.clone()).await {
                        Ran::Finished => c.finished.fetch_add(1, Ordering::SeqCst),
                        Ran::Lost => c.lost.fetch_add(1, Ordering::SeqCst),
                        Ran::Released => c.released.fetch_add(1, Ordering::SeqCst),
                    };
                }
                Ok(None) => {
                    queue_down_since = None;
                    if self.config.exit_when_empty {
                        return;
                    }
                    tokio::select! {
                        _ = tokio::time::sleep(self.config.poll) => {}
                        _ = shutdown.changed() => {}
                    }
                }
                Err(e) => {
                    let since = *queue_down_since.get_or_insert_with(Instant::now);
                    tracing::warn!(
                        worker = %self.config.name, error = %e,
                        down_s = since.elapsed().as_secs_f64(),
                        "cannot claim from the queue; retrying"
                    );
                    tokio::select! {
                        _ = tokio::time::sleep(self.config.poll.max(Duration::from_millis(500))) => {}
                        _ = shutdown.changed() => {}
                    }
                }
            }
        }
    }

    /// Runs one claimed job to its outcome and records it.
    async fn run_claim(&self, claim: &Claim, shutdown: watch::Receiver<bool>) -> Ran {
        let job = Arc::new(JobRun::new(claim.clone(), Arc::clone(&self.queue)));
        let heartbeat = tokio::spawn(
            Arc::clone(&job).heartbeat_loop(self.config.lease, self.config.progress_every),
        );
        let events = tokio::spawn(Arc::clone(&job).event_writer());
        let timer = claim.spec.timeout_seconds.map(|seconds| {
            let job = Arc::clone(&job);
            let started = claim.record.started_at.unwrap_or_else(crate::now);
            let left = (started + seconds - crate::now()).max(0.0);
            tokio::spawn(async move {
                tokio::time::sleep(Duration::from_secs_f64(left)).await;
                job.timed_out.store(true, Ordering::SeqCst);
                job.cancel.cancel();
            })
        });

        let mut run = Box::pin(self.optimize(&job));
        let mut shutdown = shutdown;
        let outcome = loop {
            tokio::select! {
                outcome = &mut run => break Some(outcome),
                // Another worker took the job over: stop at once, the work is discarded.
                () = job.lost_notify.notified() => break None,
                changed = shutdown.changed() => {
                    if changed.is_err() || *shutdown.borrow() {
                        tracing::info!(worker = %self.config.name, job_id = %claim.job_id,
                            grace_s = self.config.grace.as_secs_f64(), "shutting down: waiting for the job");
                        match tokio::time::timeout(self.config.grace, &mut run).await {
                            Ok(outcome) => break Some(outcome),
                            Err(_) => break None,
                        }
                    }
                }
            }
        };
        drop(run);
        if let Some(timer) = timer {
            timer.abort();
        }
        job.done.store(true, Ordering::SeqCst);
        job.flush_events().await;
        heartbeat.abort();
        let _ = events.await;
        if job.lost.load(Ordering::SeqCst) {
            tracing::warn!(worker = %self.config.name, job_id = %claim.job_id,
                "the job was taken over by another worker; discarding this attempt's work");
            return Ran::Lost;
        }
        let Some(outcome) = outcome else {
            tracing::info!(worker = %self.config.name, job_id = %claim.job_id,
                "handing the job back to the queue");
            if let Err(e) = self.queue.release(claim).await {
                tracing::warn!(job_id = %claim.job_id, error = %e, "could not hand the job back; its lease will expire");
            }
            return Ran::Released;
        };
        let summary = outcome_summary(&outcome);
        match self.queue.finish(claim, outcome).await {
            Ok(Some(record)) => {
                tracing::info!(worker = %self.config.name, job_id = %claim.job_id,
                    state = %record.state, model_id = record.model_id.as_deref().unwrap_or("-"),
                    "{summary}");
                Ran::Finished
            }
            Ok(None) => {
                tracing::warn!(worker = %self.config.name, job_id = %claim.job_id,
                    "the job was finished by another worker; discarding this attempt's result");
                Ran::Lost
            }
            Err(e) => {
                tracing::error!(worker = %self.config.name, job_id = %claim.job_id, error = %e,
                    "could not record the outcome; the lease will expire and the job runs again");
                Ran::Lost
            }
        }
    }

    /// Runs the optimization of a claimed job and turns its end into an [`Outcome`].
    async fn optimize(&self, job: &Arc<JobRun>) -> Outcome {
        let claim = &job.claim;
        let mut request: OptimizationRequest =
            match serde_json::from_value(claim.spec.request.clone()) {
                Ok(r) => r,
                Err(e) => {
                    return Outcome::Failed {
                        error: format!("The job's request does not parse: {e}"),
                        transient: false,
                    }
                }
            };
        if let Err(e) = request.validate(None) {
            return Outcome::Failed {
                error: e.to_string(),
                transient: false,
            };
        }
        if let Some(timeout) = claim.spec.timeout_seconds {
            request.timeout_seconds = request.timeout_seconds.min(timeout.ceil() as u64).max(1);
        }
        let concurrency = request.concurrency.unwrap_or_else(|| {
            self.lm
                .concurrency_for(&request, self.config.eval_concurrency)
                .max(1)
        });
        let lm = match self.lm.lm_for(&request, concurrency).await {
            Ok(lm) => lm,
            Err(error) => {
                return Outcome::Failed {
                    error,
                    transient: false,
                }
            }
        };
        let memo = self.checkpoint_memo(job).await;
        let tracker = match TrackingConfig::for_request(&request, &self.config.home, None) {
            Ok(Some(config)) => match Tracker::start(config, &request).await {
                Ok(t) => Some(t),
                Err(e) => {
                    tracing::warn!(job_id = %claim.job_id, error = %e, "tracking is off for this job");
                    None
                }
            },
            Ok(None) => None,
            Err(e) => {
                return Outcome::Failed {
                    error: e.to_string(),
                    transient: false,
                }
            }
        };
        let sink: Arc<dyn EventSink> = match &tracker {
            Some(t) => Arc::new(FanOut(vec![
                Arc::clone(job) as Arc<dyn EventSink>,
                t.sink(),
            ])),
            None => Arc::clone(job) as Arc<dyn EventSink>,
        };
        let pipeline = Pipeline::new(lm, self.registry.clone())
            .with_events(sink)
            .with_cancel(job.cancel.clone())
            .with_concurrency(concurrency)
            .with_memo(memo)
            .with_save_gate(Arc::clone(job) as Arc<dyn SaveGate>);
        let outcome = pipeline.optimize(&request).await;
        let mut result = match outcome {
            Ok(result) => result,
            Err(e) => {
                drop(tracker);
                return if job.timed_out.load(Ordering::SeqCst) {
                    Outcome::TimedOut {
                        result: serde_json::Value::Null,
                        model_id: None,
                    }
                } else if job.cancelled.load(Ordering::SeqCst) {
                    Outcome::Cancelled { result: None }
                } else {
                    Outcome::Failed {
                        error: e.to_string(),
                        transient: e.is_transient(),
                    }
                };
            }
        };
        if let Some(tracker) = tracker {
            tracker.finish(&request, &mut result, &self.registry).await;
        }
        let model_id = result.model_id.clone();
        let value = serde_json::to_value(&result).unwrap_or(serde_json::Value::Null);
        if job.timed_out.load(Ordering::SeqCst) {
            Outcome::TimedOut {
                result: value,
                model_id,
            }
        } else if job.cancelled.load(Ordering::SeqCst) {
            Outcome::Cancelled {
                result: Some(value),
            }
        } else {
            Outcome::Succeeded {
                result: value,
                model_id,
            }
        }
    }

    /// A memo that journals new evaluations to the job's checkpoint, preloaded from it.
    async fn checkpoint_memo(&self, job: &Arc<JobRun>) -> EvalMemo {
        let memo = EvalMemo::with_journal(Arc::clone(job) as Arc<dyn MemoJournal>);
        if !job.claim.resumed {
            return memo;
        }
        match self.queue.checkpoint(&job.claim.job_id).await {
            Ok(entries) => {
                let loaded: Vec<(String, EvalReport)> = entries
                    .into_iter()
                    .filter_map(|(key, value)| {
                        serde_json::from_str::<EvalReport>(&value)
                            .ok()
                            .map(|r| (key, r))
                    })
                    .collect();
                tracing::info!(job_id = %job.claim.job_id, evaluations = loaded.len(),
                    "resuming from the job's checkpoint");
                memo.preload(loaded);
            }
            Err(e) => {
                tracing::warn!(job_id = %job.claim.job_id, error = %e, "cannot read the checkpoint; starting over");
            }
        }
        memo
    }
}

enum Ran {
    Finished,
    Lost,
    Released,
}

fn outcome_summary(outcome: &Outcome) -> String {
    match outcome {
        Outcome::Succeeded { .. } => "job succeeded".into(),
        Outcome::TimedOut { .. } => "job timed out; the best so far is kept".into(),
        Outcome::Cancelled { .. } => "job cancelled".into(),
        Outcome::Failed { error, transient } => {
            format!("job attempt failed (transient: {transient}): {error}")
        }
    }
}

/// What gets written from the run's (synchronous) event callbacks, in order.
enum Write {
    Event(serde_json::Value),
    Checkpoint(String, String),
    Flush(tokio::sync::oneshot::Sender<()>),
}

/// The state of one running attempt, shared by its pipeline, heartbeat and writer.
struct JobRun {
    claim: Claim,
    queue: SharedQueue,
    cancel: CancelFlag,
    progress: Mutex<Progress>,
    progress_changed: AtomicBool,
    timed_out: AtomicBool,
    cancelled: AtomicBool,
    lost: AtomicBool,
    lost_notify: tokio::sync::Notify,
    done: AtomicBool,
    writes: mpsc::UnboundedSender<Write>,
    receiver: Mutex<Option<mpsc::UnboundedReceiver<Write>>>,
}

impl JobRun {
    fn new(claim: Claim, queue: SharedQueue) -> Self {
        let (writes, receiver) = mpsc::unbounded_channel();
        Self {
            claim,
            queue,
            cancel: CancelFlag::new(),
            progress: Mutex::new(Progress::default()),
            progress_changed: AtomicBool::new(false),
            timed_out: AtomicBool::new(false),
            cancelled: AtomicBool::new(false),
            lost: AtomicBool::new(false),
            lost_notify: tokio::sync::Notify::new(),
            done: AtomicBool::new(false),
            writes,
            receiver: Mutex::new(Some(receiver)),
        }
    }

    fn progress(&self) -> std::sync::MutexGuard<'_, Progress> {
        self.progress
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    /// Renews the lease and stores progress until the attempt is done.
    async fn heartbeat_loop(self: Arc<Self>, lease: Duration, progress_every: Duration) {
        let beat = (lease / 3).max(Duration::from_millis(50));
        let mut last_beat = Instant::now();
        loop {
            tokio::time::sleep(progress_every.min(beat)).await;
            if self.done.load(Ordering::SeqCst) {
                return;
            }
            let changed = self.progress_changed.swap(false, Ordering::SeqCst);
            if !changed && last_beat.elapsed() < beat {
                continue;
            }
            let progress = changed.then(|| self.progress().clone());
            match self
                .queue
                .heartbeat(&self.claim, lease, progress.as_ref())
                .await
            {
                Ok(hb) => {
                    last_beat = Instant::now();
                    if hb.lost {
                        self.lost.store(true, Ordering::SeqCst);
                        self.cancel.cancel();
                        self.lost_notify.notify_one();
                        return;
                    }
                    if hb.cancel_requested && !self.cancelled.swap(true, Ordering::SeqCst) {
                        tracing::info!(job_id = %self.claim.job_id, "cancel requested: stopping");
                        self.cancel.cancel();
                    }
                }
                Err(e) => {
                    if changed {
                        self.progress_changed.store(true, Ordering::SeqCst);
                    }
                    tracing::warn!(job_id = %self.claim.job_id, error = %e, "heartbeat failed; retrying");
                }
            }
        }
    }

    /// Writes events and checkpoint entries in order, until the channel closes.
    async fn event_writer(self: Arc<Self>) {
        let receiver = self
            .receiver
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .take();
        let Some(mut receiver) = receiver else { return };
        while let Some(write) = receiver.recv().await {
            match write {
                Write::Event(event) => {
                    if let Err(e) = self.queue.push_event(&self.claim.job_id, &event).await {
                        tracing::debug!(job_id = %self.claim.job_id, error = %e, "event not stored");
                    }
                }
                Write::Checkpoint(key, value) => {
                    if let Err(e) = self
                        .queue
                        .save_checkpoint(&self.claim.job_id, &key, &value)
                        .await
                    {
                        tracing::warn!(job_id = %self.claim.job_id, error = %e, "checkpoint entry not stored");
                    }
                }
                Write::Flush(done) => {
                    let _ = done.send(());
                    return;
                }
            }
        }
    }

    /// Waits until everything sent so far is written, then stops the writer.
    async fn flush_events(&self) {
        let (tx, rx) = tokio::sync::oneshot::channel();
        if self.writes.send(Write::Flush(tx)).is_ok() {
            let _ = rx.await;
        }
    }
}

impl EventSink for JobRun {
    fn emit(&self, event: &Event) {
        let mut keep = true;
        {
            let mut p = self.progress();
            match event {
                Event::StageStarted { stage, .. }
                    if matches!(
                        stage.as_str(),
                        "load" | "baseline" | "optimize" | "validate" | "test" | "save"
                    ) =>
                {
                    p.stage = stage.clone();
                }
                // Only the stages that count trials (or GEPA's iterations) say how many there
                // will be; a bootstrap's count of demos is not that.
                Event::StageProgress { stage, total, .. }
                    if p.stage == "optimize"
                        && (matches!(stage.as_str(), "search" | "gepa")
                            || stage.contains("trial")) =>
                {
                    p.trials_total = total.or(p.trials_total);
                }
                Event::TrialScored {
                    trial, best_so_far, ..
                } => {
                    p.trial = p.trial.max(*trial as u64);
                    if best_so_far.is_finite() {
                        p.best_score = Some(*best_so_far);
                    }
                }
                Event::BudgetSpent {
                    lm_calls, cost_usd, ..
                } => {
                    p.lm_calls = *lm_calls;
                    p.cost_usd = *cost_usd;
                    keep = false;
                }
                Event::EvaluationProgress { .. } => keep = false,
                _ => {}
            }
        }
        self.progress_changed.store(true, Ordering::SeqCst);
        if keep {
            if let Ok(value) = serde_json::to_value(event) {
                let _ = self.writes.send(Write::Event(value));
            }
        }
    }
}

impl MemoJournal for JobRun {
    fn record(&self, key: &str, report: &EvalReport) {
        if let Ok(value) = serde_json::to_string(report) {
            let _ = self.writes.send(Write::Checkpoint(key.to_string(), value));
        }
    }
}

#[async_trait]
impl SaveGate for JobRun {
    async fn allow(&self) -> bool {
        if self.lost.load(Ordering::SeqCst) {
            return false;
        }
        match self.queue.begin_finish(&self.claim).await {
            Ok(true) => true,
            Ok(false) => {
                self.lost.store(true, Ordering::SeqCst);
                false
            }
            Err(e) => {
                tracing::warn!(job_id = %self.claim.job_id, error = %e, "cannot check the lease before saving; not saving");
                false
            }
        }
    }
}
