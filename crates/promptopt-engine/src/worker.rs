//! The engine thread: owns the llama.cpp context, admits requests into sequence slots, reuses
//! cached prompt prefixes and decodes every active request together in one batch per step.

use std::collections::VecDeque;
use std::num::NonZeroU32;
use std::path::{Path, PathBuf};
use std::sync::mpsc::{Receiver, TryRecvError};
use std::sync::Arc;

use llama_cpp_2::context::params::LlamaContextParams;
use llama_cpp_2::context::LlamaContext;
use llama_cpp_2::llama_batch::LlamaBatch;
use llama_cpp_2::model::params::LlamaModelParams;
use llama_cpp_2::model::LlamaModel;
use llama_cpp_2::sampling::LlamaSampler;
use llama_cpp_2::token::data::LlamaTokenData;
use llama_cpp_2::token::data_array::LlamaTokenDataArray;
use llama_cpp_2::token::LlamaToken;
use llama_cpp_2::DecodeError;
use promptopt_lm::{FinishReason, LmError};
use tokio::sync::oneshot;

use crate::backend::backend;
use crate::choice::{token_pieces, ChoiceConstraint};
use crate::gpu::{plan_memory, Footprint, MemoryBudget};
use crate::stats::Stats;
use crate::stop::{common_prefix, find_stop};
use crate::template::{PromptRenderer, RenderedPrompt};
use crate::threads::LiveThread;
use crate::{EngineConfig, EngineError, ModelInfo};

/// A job deferred for a slot that is still decoding a prompt it shares must gain at least this
/// many cached tokens by waiting.
const DEFER_MIN_TOKENS: usize = 32;

/// How a token is chosen.
#[derive(Debug, Clone, PartialEq)]
pub(crate) enum Sampling {
    /// The most likely token.
    Greedy,
    /// Seeded sampling.
    Random {
        temperature: f32,
        top_p: Option<f32>,
        top_k: Option<u32>,
        seed: u32,
    },
}

impl Sampling {
    fn sampler(&self) -> LlamaSampler {
        match self {
            Sampling::Greedy => LlamaSampler::greedy(),
            Sampling::Random {
                temperature,
                top_p,
                top_k,
                seed,
            } => {
                let mut chain = Vec::new();
                if let Some(k) = top_k.filter(|k| *k > 0) {
                    chain.push(LlamaSampler::top_k(i32::try_from(k).unwrap_or(i32::MAX)));
                }
                if let Some(p) = top_p.filter(|p| *p < 1.0) {
                    chain.push(LlamaSampler::top_p(p, 1));
                }
                chain.push(LlamaSampler::temp(*temperature));
                chain.push(LlamaSampler::dist(*seed));
                LlamaSampler::chain_simple(chain)
            }
        }
    }
}

/// One request for one reply.
pub(crate) struct Job {
    pub prompt: RenderedPrompt,
    pub max_tokens: u32,
    pub stop: Vec<String>,
    pub sampling: Sampling,
    /// The replies allowed, when the request restricts them.
    pub choices: Option<Arc<ChoiceConstraint>>,
    pub reply: oneshot::Sender<Result<JobOutput, LmError>>,
}

/// A finished reply.
#[derive(Debug)]
pub(crate) struct JobOutput {
    pub text: String,
    pub finish_reason: FinishReason,
    pub prompt_tokens: u64,
    pub cached_tokens: u64,
    pub completion_tokens: u64,
}

/// What the engine thread reports once the model is loaded.
pub(crate) struct Loaded {
    pub info: ModelInfo,
    pub renderer: PromptRenderer,
    /// The settings in effect: the slots and batch may be lower than asked, to fit the GPU
    /// memory fraction.
    pub config: EngineConfig,
}

/// A queued job with its prompt tokenized (once).
struct Queued {
    job: Job,
    tokens: Vec<LlamaToken>,
}

struct Active {
    job: Job,
    prompt: Vec<LlamaToken>,
    cached: usize,
    sampler: LlamaSampler,
    pending: Option<LlamaToken>,
    output: Vec<u8>,
    completion_tokens: u32,
    stops: Vec<Vec<u8>>,
    admitted: u64,
}

struct Slot {
    seq: i32,
    /// The tokens this sequence holds in the KV cache, at positions `0..len`.
    tokens: Vec<LlamaToken>,
    active: Option<Active>,
    last_used: u64,
}

impl Slot {
    fn in_prompt(&self) -> Option<&Active> {
        self.active
            .as_ref()
            .filter(|a| self.tokens.len() < a.prompt.len())
    }
}

/// Starts the engine thread and waits until it has loaded the model.
pub(crate) fn spawn(
    config: EngineConfig,
    path: PathBuf,
    jobs: Receiver<Job>,
    stats: Arc<Stats>,
) -> Result<Loaded, EngineError> {
    let (ready_tx, ready_rx) = std::sync::mpsc::sync_channel(1);
    std::thread::Builder::new()
        .name("promptopt-engine".to_string())
        .spawn(move || {
            let _live = LiveThread::enter();
            // The devices' memory is read before the model takes its share of it.
            let budget = MemoryBudget::read(&config);
            let model = match load_model(&config, &path) {
                Ok(model) => model,
                Err(error) => {
                    let _ = ready_tx.send(Err(error));
                    return;
                }
            };
            let config = match budget {
                Some(budget) => match fit_memory(config, &budget, &model) {
                    Ok(config) => config,
                    Err(error) => {
                        let _ = ready_tx.send(Err(error));
                        return;
                    }
                },
                None => config,
            };
            let ctx = match new_context(&config, &path, &model) {
                Ok(ctx) => ctx,
                Err(error) => {
                    let _ = ready_tx.send(Err(error));
                    return;
                }
            };
            let loaded = describe(&config, &path, &model);
            if ready_tx.send(loaded).is_err() {
                return;
            }
            Worker::new(&config, &model, ctx, jobs, stats).run();
        })
        .map_err(|error| EngineError::Stopped(error.to_string()))?;
    ready_rx
        .recv()
        .map_err(|_| EngineError::Stopped("it exited while loading the model".to_string()))?
}

/// `config` with the slots and decode batch lowered to fit `budget` (see
/// [`EngineConfig::gpu_memory_fraction`]).
fn fit_memory(
    config: EngineConfig,
    budget: &MemoryBudget,
    model: &LlamaModel,
) -> Result<EngineConfig, EngineError> {
    let footprint = Footprint::of(model, config.gpu_layers);
    let (slots, batch_size) = plan_memory(
        budget,
        &footprint,
        config.slots,
        config.ctx_per_slot,
        config.batch_size,
    )
    .map_err(|message| EngineError::Gpu {
        setting: "gpu.memory_fraction",
        message: format!("`{}`: {message}", config.model),
    })?;
    if slots < config.slots {
        tracing::warn!(
            model = %config.model,
            "`gpu.memory_fraction` {} leaves room for {slots} of the {} sequences asked for ({} tokens each); the batch holds {slots}",
            budget.fraction, config.slots, config.ctx_per_slot
        );
    }
    Ok(EngineConfig {
        slots,
        batch_size,
        ..config
    })
}

fn load_model(config: &EngineConfig, path: &Path) -> Result<LlamaModel, EngineError> {
    let backend = backend(config.llama_logs)?;
    let mut params = LlamaModelParams::default()
        .with_n_gpu_layers(config.gpu_layers)
        .with_main_gpu(config.main_gpu);
    if !config.devices.is_empty() {
        params =
            params
                .with_devices(&config.devices)
                .map_err(|error| EngineError::InvalidConfig {
                    field: "devices",
                    message: error.to_string(),
                })?;
    }
    LlamaModel::load_from_file(backend, path, &params).map_err(|_| EngineError::ModelLoad {
        path: path.to_path_buf(),
    })
}

fn new_context<'m>(
    config: &EngineConfig,
    path: &Path,
    model: &'m LlamaModel,
) -> Result<LlamaContext<'m>, EngineError> {
    let backend = backend(config.llama_logs)?;
    let total = config.slots.saturating_mul(config.ctx_per_slot);
    let threads = i32::try_from(config.effective_threads()).unwrap_or(i32::MAX);
    let params = LlamaContextParams::default()
        .with_n_ctx(NonZeroU32::new(total))
        .with_n_batch(config.batch_size)
        .with_n_ubatch(config.batch_size.min(512))
        .with_n_seq_max(config.sequences())
        .with_n_threads(threads)
        .with_n_threads_batch(threads)
        .with_kv_unified(true)
        .with_swa_full(true);
    model
        .new_context(backend, params)
        .map_err(|error| EngineError::Context {
            path: path.to_path_buf(),
            tokens: total,
            message: error.to_string(),
        })
}

fn describe(config: &EngineConfig, path: &Path, model: &LlamaModel) -> Result<Loaded, EngineError> {
    let vocab = model.vocab();
    let piece = |token: LlamaToken| {
        if token.0 < 0 {
            String::new()
        } else {
            String::from_utf8_lossy(&vocab.token_to_piece(token, true, None)).into_owned()
        }
    };
    let add_bos = vocab.should_add_bos();
    let template = model
        .chat_template(None)
        .ok()
        .and_then(|t| t.to_string().ok());
    let renderer = match &template {
        Some(source) => PromptRenderer::chat(
            &config.model,
            source,
            &piece(vocab.bos()),
            &piece(vocab.eos()),
            add_bos,
        )?,
        None => PromptRenderer::plain(&config.model, add_bos),
    };
    let info = ModelInfo {
        name: config.model.clone(),
        path: path.to_path_buf(),
        description: model.meta_val_str("general.name").unwrap_or_default(),
        parameters: model.n_params(),
        ctx_train: model.n_ctx_train(),
        has_chat_template: template.is_some(),
        slots: config.slots,
        ctx_per_slot: config.ctx_per_slot,
        threads: config.effective_threads(),
    };
    Ok(Loaded {
        info,
        renderer,
        config: config.clone(),
    })
}

struct Worker<'m> {
    model: &'m LlamaModel,
    ctx: LlamaContext<'m>,
    batch: LlamaBatch<'static>,
    batch_size: usize,
    ctx_per_slot: usize,
    prefix_reuse: bool,
    /// Requests decoded at once; the other sequences only keep finished prompts.
    max_active: usize,
    slots: Vec<Slot>,
    queue: VecDeque<Queued>,
    jobs: Receiver<Job>,
    disconnected: bool,
    stats: Arc<Stats>,
    clock: u64,
    /// Every token's text, read on the first request restricted to choices.
    pieces: Option<Vec<Vec<u8>>>,
}

impl<'m> Worker<'m> {
    fn new(
        config: &EngineConfig,
        model: &'m LlamaModel,
        ctx: LlamaContext<'m>,
        jobs: Receiver<Job>,
        stats: Arc<Stats>,
    ) -> Self {
        let batch_size = config.batch_size as usize;
        let slots = (0..config.sequences())
            .map(|seq| Slot {
                seq: i32::try_from(seq).unwrap_or(i32::MAX),
                tokens: Vec::new(),
                active: None,
                last_used: 0,
            })
            .collect();
        Self {
            model,
            ctx,
            batch: LlamaBatch::new(batch_size, 1),
            batch_size,
            ctx_per_slot: config.ctx_per_slot as usize,
            prefix_reuse: config.prefix_reuse,
            max_active: config.slots as usize,
            slots,
            queue: VecDeque::new(),
            jobs,
            disconnected: false,
            stats,
            clock: 0,
            pieces: None,
        }
    }

    fn run(mut self) {
        loop {
            let busy = self.slots.iter().any(|s| s.active.is_some()) || !self.queue.is_empty();
            if !busy {
                if self.disconnected {
                    return;
                }
                match self.jobs.recv() {
                    Ok(job) => self.enqueue(job),
                    Err(_) => return,
                }
            }
            loop {
                match self.jobs.try_recv() {
                    Ok(job) => self.enqueue(job),
                    Err(TryRecvError::Empty) => break,
                    Err(TryRecvError::Disconnected) => {
                        self.disconnected = true;
                        break;
                    }
                }
            }
            self.drop_cancelled();
            self.admit();
            if self.slots.iter().any(|s| s.active.is_some()) {
                self.step();
            }
        }
    }

    fn enqueue(&mut self, job: Job) {
        self.stats.requests.inc(1);
        let tokens =
            self.model
                .vocab()
                .tokenize(job.prompt.text.as_bytes(), job.prompt.add_bos, true);
        if tokens.is_empty() {
            let _ = job.reply.send(Err(LmError::InvalidRequest(
                "The prompt is empty".to_string(),
            )));
            return;
        }
        if tokens.len() > self.ctx_per_slot {
            let _ = job.reply.send(Err(LmError::ContextOverflow {
                prompt_tokens: tokens.len() as u64,
                context_tokens: self.ctx_per_slot as u64,
            }));
            return;
        }
        tracing::trace!(prompt = %job.prompt.text, "request queued");
        self.queue.push_back(Queued { job, tokens });
    }

    fn drop_cancelled(&mut self) {
        self.queue.retain(|q| !q.job.reply.is_closed());
        for slot in &mut self.slots {
            if slot
                .active
                .as_ref()
                .is_some_and(|a| a.job.reply.is_closed())
            {
                slot.active = None;
            }
        }
    }

    fn tick(&mut self) -> u64 {
        self.clock += 1;
        self.clock
    }

    /// Moves queued jobs into idle slots, reusing the longest cached prefix.
    fn admit(&mut self) {
        let mut i = 0;
        while i < self.queue.len() {
            let active = self.slots.iter().filter(|s| s.active.is_some()).count();
            if active >= self.max_active || active == self.slots.len() {
                return;
            }
            if self.prefix_reuse && self.should_wait(&self.queue[i].tokens) {
                i += 1;
                continue;
            }
            let Some(queued) = self.queue.remove(i) else {
                return;
            };
            self.start(queued);
        }
    }

    /// Whether a slot still decoding a prompt will soon hold a much longer prefix of `tokens`
    /// than anything cached now.
    fn should_wait(&self, tokens: &[LlamaToken]) -> bool {
        let available = self
            .slots
            .iter()
            .map(|s| common_prefix(&s.tokens, tokens))
            .max()
            .unwrap_or(0);
        let promised = self
            .slots
            .iter()
            .filter_map(Slot::in_prompt)
            .map(|a| common_prefix(&a.prompt, tokens))
            .max()
            .unwrap_or(0);
        promised.min(tokens.len().saturating_sub(1)) >= available + DEFER_MIN_TOKENS
    }

    fn start(&mut self, queued: Queued) {
        let Queued { job, tokens } = queued;
        let limit = tokens.len().saturating_sub(1);
        // The idle sequence to use: the longest that the prompt extends (nothing cached is
        // lost), else the least recently used; a longer prefix held elsewhere is copied in.
        let Some(target) = self
            .slots
            .iter()
            .enumerate()
            .filter(|(_, s)| s.active.is_none())
            .max_by_key(|(_, s)| {
                let extends = self.prefix_reuse
                    && !s.tokens.is_empty()
                    && common_prefix(&s.tokens, &tokens) == s.tokens.len();
                let kept = if extends { s.tokens.len() } else { 0 };
                (kept, std::cmp::Reverse(s.last_used))
            })
            .map(|(i, _)| i)
        else {
            return;
        };
        let own = common_prefix(&self.slots[target].tokens, &tokens).min(limit);
        let source = self
            .slots
            .iter()
            .enumerate()
            .filter(|(i, _)| *i != target)
            .map(|(i, s)| (common_prefix(&s.tokens, &tokens).min(limit), i))
            .max();
        let seq = self.slots[target].seq;
        let mut reused = 0;
        if self.prefix_reuse {
            match source {
                Some((shared, from)) if shared > own => {
                    let from_seq = self.slots[from].seq;
                    // The source stays cached longer: other requests may share it too.
                    self.slots[from].last_used = self.clock + 1;
                    let _ = self.ctx.kv_cache_seq_rm(seq, None, None);
                    let copied = u32::try_from(shared).ok().and_then(|end| {
                        self.ctx
                            .kv_cache_seq_cp(from_seq, seq, Some(0), Some(end))
                            .ok()
                    });
                    if copied.is_some() {
                        reused = shared;
                    }
                }
                _ => {
                    let kept = u32::try_from(own)
                        .ok()
                        .and_then(|p0| self.ctx.kv_cache_seq_rm(seq, Some(p0), None).ok());
                    if kept.is_some() {
                        reused = own;
                    }
                }
            }
        }
        if reused == 0 {
            let _ = self.ctx.kv_cache_seq_rm(seq, None, None);
        }
        tracing::debug!(
            slot = target,
            prompt_tokens = tokens.len(),
            own_prefix = own,
            best_prefix = source.map_or(0, |(shared, _)| shared),
            reused,
            "request admitted"
        );
        let now = self.tick();
        let slot = &mut self.slots[target];
        slot.tokens.clear();
        slot.tokens.extend_from_slice(&tokens[..reused]);
        self.stats.cached_tokens.inc(reused as u64);
        self.stats.prompt_tokens.inc(tokens.len() as u64);
        let stops = job.stop.iter().map(|s| s.as_bytes().to_vec()).collect();
        slot.active = Some(Active {
            sampler: job.sampling.sampler(),
            job,
            prompt: tokens,
            cached: reused,
            pending: None,
            output: Vec::new(),
            completion_tokens: 0,
            stops,
            admitted: now,
        });
    }

    /// One decode call over every active slot: the next token of each generating request first,
    /// then prompt chunks in admission order while the batch has room.
    fn step(&mut self) {
        self.batch.clear();
        // (slot index, batch index of its logits, tokens added)
        let mut plan: Vec<(usize, Option<i32>, Vec<LlamaToken>)> = Vec::new();
        let mut used = 0usize;
        for (i, slot) in self.slots.iter().enumerate() {
            let Some(token) = slot.active.as_ref().and_then(|a| a.pending) else {
                continue;
            };
            let pos = i32::try_from(slot.tokens.len()).unwrap_or(i32::MAX);
            if self.batch.add(token, pos, &[slot.seq], true).is_err() {
                break;
            }
            plan.push((i, Some(batch_index(used)), vec![token]));
            used += 1;
        }
        let mut prompting: Vec<(u64, usize)> = self
            .slots
            .iter()
            .enumerate()
            .filter_map(|(i, s)| s.in_prompt().map(|a| (a.admitted, i)))
            .collect();
        prompting.sort_unstable();
        for (_, i) in prompting {
            let room = self.batch_size.saturating_sub(used);
            if room == 0 {
                break;
            }
            let slot = &self.slots[i];
            let Some(active) = slot.active.as_ref() else {
                continue;
            };
            let start = slot.tokens.len();
            let end = active.prompt.len().min(start + room);
            let mut chunk = Vec::with_capacity(end - start);
            let mut logits_at = None;
            for (pos, token) in active.prompt.iter().enumerate().take(end).skip(start) {
                let last = pos + 1 == active.prompt.len();
                let pos = i32::try_from(pos).unwrap_or(i32::MAX);
                if self.batch.add(*token, pos, &[slot.seq], last).is_err() {
                    break;
                }
                if last {
                    logits_at = Some(batch_index(used));
                }
                chunk.push(*token);
                used += 1;
            }
            plan.push((i, logits_at, chunk));
        }
        if plan.is_empty() {
            return;
        }
        loop {
            match self.ctx.decode(&mut self.batch) {
                Ok(()) => break,
                // The cache is full: drop a kept prompt and try again (llama.cpp leaves the
                // cache as it was when it finds no room for the batch).
                Err(DecodeError::NoKvCacheSlot) if self.evict_kept() => {}
                Err(error) => {
                    self.fail(&plan, &error.to_string());
                    return;
                }
            }
        }
        self.stats.record_decode(plan.len() as u64, used as u64);
        for (i, logits_at, added) in plan {
            let slot = &mut self.slots[i];
            slot.tokens.extend_from_slice(&added);
            if let Some(index) = logits_at {
                self.sample(i, index);
            }
        }
    }

    /// Drops the least recently used finished prompt from the KV cache; `false` when none is
    /// left to drop.
    fn evict_kept(&mut self) -> bool {
        let Some(i) = self
            .slots
            .iter()
            .enumerate()
            .filter(|(_, s)| s.active.is_none() && !s.tokens.is_empty())
            .min_by_key(|(_, s)| s.last_used)
            .map(|(i, _)| i)
        else {
            return false;
        };
        let slot = &mut self.slots[i];
        let _ = self.ctx.kv_cache_seq_rm(slot.seq, None, None);
        tracing::debug!(
            seq = slot.seq,
            tokens = slot.tokens.len(),
            "kept prompt dropped for room"
        );
        slot.tokens.clear();
        self.stats.kept_prompts_dropped.inc(1);
        true
    }

    fn fail(&mut self, plan: &[(usize, Option<i32>, Vec<LlamaToken>)], message: &str) {
        for (i, _, _) in plan {
            let seq = self.slots[*i].seq;
            let _ = self.ctx.kv_cache_seq_rm(seq, None, None);
            let slot = &mut self.slots[*i];
            slot.tokens.clear();
            if let Some(active) = slot.active.take() {
                let _ = active
                    .job
                    .reply
                    .send(Err(LmError::Engine(format!("Decoding failed: {message}"))));
            }
        }
    }

    fn sample(&mut self, i: usize, index: i32) {
        let vocab = self.model.vocab();
        let ctx_per_slot = self.ctx_per_slot;
        let constrained = self.slots[i]
            .active
            .as_ref()
            .is_some_and(|a| a.job.choices.is_some());
        if constrained && self.pieces.is_none() {
            self.pieces = Some(token_pieces(self.model));
        }
        let pieces = self.pieces.as_deref().unwrap_or(&[]);
        let slot = &mut self.slots[i];
        let Some(active) = slot.active.as_mut() else {
            return;
        };
        let token = match &active.job.choices {
            None => Some(active.sampler.sample(&self.ctx, index)),
            Some(choices) => {
                let logits = self.ctx.get_logits_ith(index);
                let mut candidates: Vec<LlamaTokenData> = choices
                    .allowed(&active.output, pieces)
                    .into_iter()
                    .filter_map(|id| {
                        let logit = *logits.get(usize::try_from(id).ok()?)?;
                        Some(LlamaTokenData::new(LlamaToken(id), logit, 0.0))
                    })
                    .collect();
                let end = vocab.eos();
                if choices.complete(&active.output) && end.0 >= 0 {
                    if let Some(logit) = usize::try_from(end.0).ok().and_then(|e| logits.get(e)) {
                        candidates.push(LlamaTokenData::new(end, *logit, 0.0));
                    }
                }
                if candidates.is_empty() {
                    None
                } else {
                    let mut array = LlamaTokenDataArray::new(candidates, false);
                    array.apply_sampler(&mut active.sampler);
                    array.selected_token()
                }
            }
        };
        active.pending = None;
        let finish = match token {
            None => Some(FinishReason::Stop),
            Some(token) if vocab.is_eog(token) => Some(FinishReason::Stop),
            Some(token) => {
                let before = active.output.len();
                vocab.token_to_piece_into(token, &mut active.output, false, None);
                active.completion_tokens += 1;
                let chosen =
                    active.job.choices.as_ref().is_some_and(|c| {
                        c.complete(&active.output) && !c.extendable(&active.output)
                    });
                if let Some(cut) = find_stop(&active.output, &active.stops, before) {
                    active.output.truncate(cut);
                    Some(FinishReason::Stop)
                } else if chosen {
                    Some(FinishReason::Stop)
                } else if active.completion_tokens >= active.job.max_tokens
                    || slot.tokens.len() >= ctx_per_slot
                {
                    Some(FinishReason::Length)
                } else {
                    active.pending = Some(token);
                    None
                }
            }
        };
        if let Some(finish_reason) = finish {
            self.finish(i, finish_reason);
        }
    }

    fn finish(&mut self, i: usize, finish_reason: FinishReason) {
        let now = self.tick();
        let slot = &mut self.slots[i];
        slot.last_used = now;
        let Some(active) = slot.active.take() else {
            return;
        };
        self.stats
            .completion_tokens
            .inc(u64::from(active.completion_tokens));
        let output = JobOutput {
            text: String::from_utf8_lossy(&active.output).into_owned(),
            finish_reason,
            prompt_tokens: active.prompt.len() as u64,
            cached_tokens: active.cached as u64,
            completion_tokens: u64::from(active.completion_tokens),
        };
        let _ = active.job.reply.send(Ok(output));
    }
}

fn batch_index(used: usize) -> i32 {
    i32::try_from(used).unwrap_or(i32::MAX)
}
