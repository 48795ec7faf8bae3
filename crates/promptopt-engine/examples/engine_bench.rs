//! Measures the embedded engine against llama.cpp's own `llama-bench`, side by side in one run.
//!
//! ```text
//! scripts/fetch-model.sh && scripts/build-llama-bench.sh
//! CARGO_TARGET_DIR=target-engine cargo run --release -p promptopt-engine --example engine_bench -- \
//!     [--model local/smollm2-135m] [--threads N] [--split test] [--examples 100] [--llama-bench PATH] \
//!     [--sections single,concurrency,eval]
//! ```
//!
//! `--llama-bench` (or the `LLAMA_BENCH` environment variable) names the `llama-bench` binary;
//! the default is where `scripts/build-llama-bench.sh` puts it. The run prints the machine's load
//! average before and after: on a shared machine, compare the ratios, not the absolute rates.
//!
//! 1. Single stream: prompt and generation tokens per second of the engine (a ~256-token prompt;
//!    then a 64-token reply) next to `llama-bench -p 256 -n 64` on the same file and threads.
//! 2. Short requests at 1, 8 and 32 concurrent: classification (a one-word reply, so the
//!    prompt dominates) and a 32-token rewrite (generation dominates); request and generated
//!    token rates, and the most batching could gain on this machine: llama-bench's rate for a
//!    32-token batch against its one-token rate, applied to the prompt tokens and decode steps each
//!    request took when sent alone.
//! 3. Evaluating sst2 examples with a 5-demo prompt (demos as user/assistant turns), 8 at a time,
//!    with prefix reuse on and off.
//! 4. `throughput` (not run by default): generation tokens per second of 32-token rewrites at
//!    each of `--levels` (default `1,8,32,128`) concurrent requests, `max(level, 8) × --rounds`
//!    requests per level, with the batch occupancy (mean and most requests per decode call).
//!
//! `--gpu 0` (CUDA device ids; with `--gpu-layers N`, default all) runs every section on the GPU
//! of a `--features cuda` build, each engine holding as many sequences as its section needs.
//! `--json PATH` also writes the single-stream and throughput figures as JSON, for
//! `scripts/gpu-check.sh`.
#![allow(clippy::print_stdout, clippy::print_stderr, clippy::unwrap_used)]

use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::Arc;
use std::time::{Duration, Instant};

use promptopt_engine::{resolve_in, search_dirs, Engine, EngineConfig, EngineStats};
use promptopt_lm::gpu::{parse_devices, parse_layers, GpuConfig, GpuDevices};
use promptopt_lm::{ChatRequest, ChatResponse, Lm, Message};
use tokio::sync::Semaphore;

struct Args {
    model: String,
    threads: u32,
    split: String,
    examples: usize,
    llama_bench: PathBuf,
    sections: Vec<String>,
    gpu: Option<GpuConfig>,
    levels: Vec<usize>,
    rounds: usize,
    json: Option<PathBuf>,
}

impl Args {
    fn runs(&self, section: &str) -> bool {
        self.sections.iter().any(|s| s == section)
    }

    /// `config` on the GPU of `--gpu` with `slots` sequences, or on the CPU with `--threads`.
    fn engine_config(&self, config: EngineConfig) -> EngineConfig {
        let config = config.with_threads(self.threads);
        let Some(gpu) = &self.gpu else {
            return config;
        };
        let gpu = GpuConfig {
            batch_size: config.slots as usize,
            ..gpu.clone()
        };
        let placed = config
            .place_gpu(Some(&gpu))
            .unwrap_or_else(|e| panic!("{e}"));
        assert!(placed.on_gpu(), "{:?}", placed.warnings);
        placed.config
    }
}

fn repo_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../..")
}

fn parse_args() -> Args {
    let mut args = Args {
        model: String::new(),
        threads: EngineConfig::default().effective_threads(),
        split: "test".to_string(),
        examples: 100,
        llama_bench: std::env::var_os("LLAMA_BENCH").map_or_else(
            || repo_root().join("target-engine/llama-bench/bin/llama-bench"),
            PathBuf::from,
        ),
        sections: vec!["single".into(), "concurrency".into(), "eval".into()],
        gpu: None,
        levels: vec![1, 8, 32, 128],
        rounds: 1,
        json: None,
    };
    let mut gpu_layers = None;
    let mut it = std::env::args().skip(1);
    while let Some(flag) = it.next() {
        let value = it
            .next()
            .unwrap_or_else(|| panic!("`{flag}` needs a value"));
        match flag.as_str() {
            "--model" => args.model = value,
            "--threads" => args.threads = value.parse().unwrap(),
            "--split" => args.split = value,
            "--examples" => args.examples = value.parse().unwrap(),
            "--llama-bench" => args.llama_bench = PathBuf::from(value),
            "--sections" => args.sections = value.split(',').map(str::to_string).collect(),
            "--gpu" => {
                args.gpu = match parse_devices("--gpu", &value).unwrap_or_else(|e| panic!("{e}")) {
                    GpuDevices::Ids(device_ids) => Some(GpuConfig {
                        device_ids,
                        ..GpuConfig::default()
                    }),
                    GpuDevices::Cpu => None,
                }
            }
            "--gpu-layers" => {
                gpu_layers =
                    Some(parse_layers("--gpu-layers", &value).unwrap_or_else(|e| panic!("{e}")));
            }
            "--levels" => {
                args.levels = value
                    .split(',')
                    .map(|v| v.trim().parse().unwrap())
                    .collect();
            }
            "--rounds" => args.rounds = value.parse::<usize>().unwrap().max(1),
            "--json" => args.json = Some(PathBuf::from(value)),
            other => panic!("unknown flag `{other}`"),
        }
    }
    if let (Some(gpu), Some(layers)) = (args.gpu.as_mut(), gpu_layers) {
        gpu.layers = layers;
    }
    if args.model.is_empty() {
        let mut dirs = search_dirs();
        dirs.push(repo_root().join("models"));
        let path = resolve_in("local/smollm2-135m", &dirs).unwrap_or_else(|e| panic!("{e}"));
        args.model = format!("local/{}", std::fs::canonicalize(path).unwrap().display());
    }
    args
}

#[derive(Clone)]
struct Example {
    text: String,
    label: String,
}

fn load_split(split: &str) -> Vec<Example> {
    let path = PathBuf::from(format!("/work/shared/datasets/sst2/{split}.jsonl"));
    let path = std::env::var_os("SST2_DIR")
        .map(|d| Path::new(&d).join(format!("{split}.jsonl")))
        .unwrap_or(path);
    let text = std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    text.lines()
        .filter(|l| !l.trim().is_empty())
        .map(|line| {
            let value: serde_json::Value = serde_json::from_str(line).unwrap();
            Example {
                text: value["text"].as_str().unwrap().to_string(),
                label: value["label"].as_str().unwrap().to_string(),
            }
        })
        .collect()
}

async fn run_all(
    engine: &Engine,
    requests: Vec<ChatRequest>,
    concurrency: usize,
) -> (Duration, Vec<ChatResponse>) {
    let gate = Arc::new(Semaphore::new(concurrency));
    let started = Instant::now();
    let handles: Vec<_> = requests
        .into_iter()
        .map(|request| {
            let engine = engine.clone();
            let gate = Arc::clone(&gate);
            tokio::spawn(async move {
                let _permit = gate.acquire().await.unwrap();
                engine.chat(&request).await.unwrap()
            })
        })
        .collect();
    let mut replies = Vec::new();
    for handle in handles {
        replies.push(handle.await.unwrap());
    }
    (started.elapsed(), replies)
}

/// (prompt tok/s, generated tok/s) of llama-bench for a `prompt`-token prompt and a 64-token
/// reply, if it is built.
fn llama_bench(args: &Args, path: &str, prompt: u32) -> Option<(f64, f64)> {
    if !args.llama_bench.exists() {
        println!(
            "llama-bench: not found at `{}` (run scripts/build-llama-bench.sh)",
            args.llama_bench.display()
        );
        return None;
    }
    let output = Command::new(&args.llama_bench)
        .args([
            "-m",
            path,
            "-t",
            &args.threads.to_string(),
            "-p",
            &prompt.to_string(),
            "-n",
            "64",
            "-r",
            "3",
            "-o",
            "json",
        ])
        .output()
        .ok()?;
    let rows: serde_json::Value = serde_json::from_slice(&output.stdout).ok()?;
    let rate = |prompt: bool| {
        rows.as_array()?.iter().find_map(|row| {
            let n_prompt = row["n_prompt"].as_u64()?;
            let n_gen = row["n_gen"].as_u64()?;
            ((n_prompt > 0) == prompt && (n_gen > 0) != prompt).then(|| row["avg_ts"].as_f64())?
        })
    };
    Some((rate(true)?, rate(false)?))
}

async fn single_stream(args: &Args, path: &str) -> serde_json::Value {
    let engine = Engine::load_async(
        args.engine_config(
            EngineConfig::new(&args.model)
                .with_slots(1)
                .with_ctx_per_slot(1024)
                .with_prefix_reuse(false),
        ),
    )
    .await
    .unwrap();
    let model = engine.model_name().to_string();
    // About 256 prompt tokens.
    let filler = "The quick brown fox jumps over the lazy dog near the river bank. ".repeat(18);
    let prompt_request =
        ChatRequest::new(&model, vec![Message::user(format!("{filler}\nSummarize."))])
            .with_temperature(0.0)
            .with_max_tokens(1);
    let story = ChatRequest::new(
        &model,
        vec![Message::user(
            "Write a long, detailed story about a dragon who learns to cook.",
        )],
    )
    .with_temperature(0.0)
    .with_max_tokens(64);
    engine.chat(&prompt_request).await.unwrap();
    let (mut pp_tokens, mut pp_time) = (0u64, 0.0f64);
    let (mut tg_tokens, mut tg_time) = (0u64, 0.0f64);
    for _ in 0..3 {
        let reply = engine.chat(&prompt_request).await.unwrap();
        pp_tokens += reply.usage.prompt_tokens;
        pp_time += reply.latency.as_secs_f64();
        let short = engine
            .chat(&story.clone().with_max_tokens(1))
            .await
            .unwrap();
        let long = engine.chat(&story).await.unwrap();
        tg_tokens += long.usage.completion_tokens - 1;
        tg_time += (long.latency - short.latency).as_secs_f64();
    }
    let ours = (pp_tokens as f64 / pp_time, tg_tokens as f64 / tg_time);
    println!("\n== Single stream ({}) ==", device(args));
    println!("{:<28} {:>12} {:>12}", "", "prompt tok/s", "gen tok/s");
    println!(
        "{:<28} {:>12.1} {:>12.1}",
        "promptopt engine", ours.0, ours.1
    );
    if let Some(theirs) = llama_bench(args, path, 256) {
        println!(
            "{:<28} {:>12.1} {:>12.1}",
            "llama-bench (pp256, tg64)", theirs.0, theirs.1
        );
        println!(
            "{:<28} {:>11.2}x {:>11.2}x",
            "ratio",
            ours.0 / theirs.0,
            ours.1 / theirs.1
        );
    }
    serde_json::json!({"prompt_tok_s": ours.0, "gen_tok_s": ours.1})
}

/// Where the engines run, in words.
fn device(args: &Args) -> String {
    match &args.gpu {
        Some(gpu) => format!("GPU {}", gpu.devices_text()),
        None => format!("CPU, {} threads", args.threads),
    }
}

/// 32-token rewrites at each concurrency level: generated tokens per second and how full the
/// batch was.
async fn throughput(args: &Args, examples: &[Example]) -> serde_json::Value {
    let top = args.levels.iter().copied().max().unwrap_or(1).max(1);
    let engine = Engine::load_async(
        args.engine_config(
            EngineConfig::new(&args.model)
                .with_slots(u32::try_from(top).unwrap())
                .with_ctx_per_slot(512),
        ),
    )
    .await
    .unwrap();
    let model = engine.model_name().to_string();
    let slots = engine.config().slots;
    println!(
        "\n== Throughput: 32-token rewrites ({}, {slots} slots) ==",
        device(args)
    );
    println!(
        "{:<12} {:>9} {:>10} {:>12} {:>16} {:>10}",
        "concurrency", "requests", "seconds", "gen tok/s", "mean per decode", "max batch"
    );
    run_all(
        &engine,
        examples
            .iter()
            .take(2)
            .map(|e| rewrite(&model, &e.text))
            .collect(),
        1,
    )
    .await;
    let mut rows = Vec::new();
    for &level in &args.levels {
        let count = level.max(8) * args.rounds;
        let requests: Vec<ChatRequest> = examples
            .iter()
            .cycle()
            .take(count)
            .enumerate()
            .map(|(i, e)| rewrite(&model, &format!("{} ({i})", e.text)))
            .collect();
        let before = engine.stats();
        let (elapsed, replies) = run_all(&engine, requests, level).await;
        let stats = engine.stats().since(&before);
        let seconds = elapsed.as_secs_f64();
        let generated: u64 = replies.iter().map(|r| r.usage.completion_tokens).sum();
        let rate = generated as f64 / seconds;
        println!(
            "{:<12} {:>9} {:>10.2} {:>12.1} {:>16.1} {:>10}",
            level,
            count,
            seconds,
            rate,
            stats.mean_sequences_per_decode(),
            stats.max_sequences_per_decode
        );
        rows.push(serde_json::json!({
            "concurrency": level,
            "requests": count,
            "seconds": seconds,
            "generated_tokens": generated,
            "gen_tok_s": rate,
            "req_s": count as f64 / seconds,
            "mean_sequences_per_decode": stats.mean_sequences_per_decode(),
            "decode_calls": stats.decode_calls,
        }));
    }
    serde_json::json!({"slots": slots, "levels": rows})
}

fn zero_shot(model: &str, text: &str) -> ChatRequest {
    ChatRequest::new(
        model,
        vec![
            Message::system("Classify the sentiment of the movie review as positive or negative. Answer with one word."),
            Message::user(text),
        ],
    )
    .with_temperature(0.0)
    .with_max_tokens(3)
}

async fn concurrency(args: &Args, path: &str, examples: &[Example]) {
    let engine = Engine::load_async(
        args.engine_config(
            EngineConfig::new(&args.model)
                .with_slots(32)
                .with_ctx_per_slot(512),
        ),
    )
    .await
    .unwrap();
    let model = engine.model_name().to_string();
    let classify: Vec<ChatRequest> = examples
        .iter()
        .take(64)
        .map(|e| zero_shot(&model, &e.text))
        .collect();
    let rewrite: Vec<ChatRequest> = examples
        .iter()
        .take(64)
        .map(|e| rewrite(&model, &e.text))
        .collect();
    run_all(&engine, classify[..4].to_vec(), 1).await;
    // llama.cpp's own rates for a 32-token batch and for one token at a time bound what batching
    // can gain here: a decode step of 32 sequences costs at least what a 32-token prompt chunk does.
    let rates = llama_bench(args, path, 32);
    for (name, requests) in [
        ("classification (max_tokens 3)", classify),
        ("rewrite (max_tokens 32)", rewrite),
    ] {
        println!("\n== {} short requests: {name} ==", requests.len());
        println!(
            "{:<14} {:>10} {:>12} {:>10} {:>10}",
            "concurrency", "req/s", "gen tok/s", "speedup", "max batch"
        );
        let mut base = None;
        let mut per_request = None;
        for n in [1usize, 8, 32] {
            let before = engine.stats();
            let (elapsed, replies) = run_all(&engine, requests.clone(), n).await;
            if n == 1 {
                per_request = Some(work_per_request(&before, &engine.stats()));
            }
            let seconds = elapsed.as_secs_f64();
            let rate = requests.len() as f64 / seconds;
            let generated: u64 = replies.iter().map(|r| r.usage.completion_tokens).sum();
            let base = *base.get_or_insert(rate);
            println!(
                "{:<14} {:>10.1} {:>12.1} {:>9.2}x {:>10}",
                n,
                rate,
                generated as f64 / seconds,
                rate / base,
                engine.stats().max_sequences_per_decode
            );
        }
        if let (Some((pp, tg)), Some((prompt, steps))) = (rates, per_request) {
            // One at a time: the prompt at prompt speed, then one decode step per token. Ideal
            // batching: every token at the 32-token batch rate.
            let alone = prompt / pp + steps / tg;
            let batched = (prompt + steps) / pp;
            println!(
                "bound from llama-bench (pp32 {pp:.1} tok/s, tg64 {tg:.1} tok/s) for {prompt:.1} \
                 uncached prompt tokens and {steps:.1} decode steps per request: {:.2}x",
                alone / batched
            );
        }
    }
}

/// Uncached prompt tokens and generation decode steps per request between two snapshots of a
/// run that sent one request at a time (each prompt then takes one decode call).
fn work_per_request(before: &EngineStats, after: &EngineStats) -> (f64, f64) {
    let requests = (after.requests - before.requests).max(1) as f64;
    let prompt =
        (after.prompt_tokens - before.prompt_tokens) - (after.cached_tokens - before.cached_tokens);
    let calls = after.decode_calls - before.decode_calls;
    let steps = calls.saturating_sub(after.requests - before.requests);
    (prompt as f64 / requests, steps as f64 / requests)
}

fn rewrite(model: &str, text: &str) -> ChatRequest {
    ChatRequest::new(
        model,
        vec![
            Message::system("Rewrite the movie review in your own words."),
            Message::user(text),
        ],
    )
    .with_temperature(0.0)
    .with_max_tokens(32)
}

fn few_shot(model: &str, demos: &[Example], text: &str) -> ChatRequest {
    let mut messages = vec![Message::system(
        "Classify the sentiment of the movie review as positive or negative. Answer with one word.",
    )];
    for demo in demos {
        messages.push(Message::user(demo.text.clone()));
        messages.push(Message::assistant(demo.label.clone()));
    }
    messages.push(Message::user(text));
    ChatRequest::new(model, messages)
        .with_temperature(0.0)
        .with_max_tokens(3)
}

async fn evaluation(args: &Args, examples: &[Example], demos: &[Example]) {
    println!(
        "\n== sst2 {}: {} examples, 5 demos as turns, 8 concurrent ==",
        args.split,
        examples.len()
    );
    println!(
        "{:<18} {:>9} {:>10} {:>14} {:>10}",
        "prefix reuse", "seconds", "accuracy", "cached/prompt", "speedup"
    );
    let mut off_time = None;
    for reuse in [false, true] {
        let engine = Engine::load_async(
            args.engine_config(
                EngineConfig::new(&args.model)
                    .with_slots(8)
                    .with_ctx_per_slot(1024)
                    .with_prefix_reuse(reuse),
            ),
        )
        .await
        .unwrap();
        let model = engine.model_name().to_string();
        let requests = examples
            .iter()
            .map(|e| few_shot(&model, demos, &e.text))
            .collect();
        let (elapsed, replies) = run_all(&engine, requests, 8).await;
        let correct = replies
            .iter()
            .zip(examples)
            .filter(|(r, e)| r.text().trim().to_lowercase().starts_with(&e.label))
            .count();
        let stats = engine.stats();
        let seconds = elapsed.as_secs_f64();
        let off = *off_time.get_or_insert(seconds);
        println!(
            "{:<18} {:>9.2} {:>9.0}% {:>7}/{:<6} {:>9.2}x",
            if reuse { "on" } else { "off" },
            seconds,
            100.0 * correct as f64 / examples.len() as f64,
            stats.cached_tokens,
            stats.prompt_tokens,
            off / seconds
        );
    }
}

#[tokio::main]
async fn main() {
    let args = parse_args();
    let path = args
        .model
        .strip_prefix("local/")
        .unwrap_or(&args.model)
        .to_string();
    println!("model: {path}");
    println!(
        "threads: {}, OMP_WAIT_POLICY: {}, load average: {}",
        args.threads,
        std::env::var("OMP_WAIT_POLICY").unwrap_or_else(|_| "(unset)".to_string()),
        load_average()
    );
    let mut report = serde_json::json!({
        "model": path,
        "device": device(&args),
        "threads": args.threads,
    });
    if args.runs("single") {
        report["single"] = single_stream(&args, &path).await;
    }
    let examples: Vec<Example> = load_split(&args.split)
        .into_iter()
        .take(args.examples)
        .collect();
    if args.runs("concurrency") {
        concurrency(&args, &path, &load_split(&args.split)).await;
    }
    let train = load_split("train");
    // Five demos, both labels represented.
    let mut demos: Vec<Example> = Vec::new();
    for label in ["positive", "negative", "positive", "negative", "positive"] {
        if let Some(e) = train
            .iter()
            .find(|e| e.label == label && !demos.iter().any(|d| d.text == e.text))
        {
            demos.push(e.clone());
        }
    }
    if args.runs("eval") {
        evaluation(&args, &examples, &demos).await;
    }
    if args.runs("throughput") {
        report["throughput"] = throughput(&args, &load_split(&args.split)).await;
    }
    if let Some(path) = &args.json {
        std::fs::write(path, serde_json::to_string_pretty(&report).unwrap()).unwrap();
    }
    println!("\nload average after the run: {}", load_average());
}

/// The 1, 5 and 15 minute load averages, where the system reports them.
fn load_average() -> String {
    std::fs::read_to_string("/proc/loadavg")
        .map(|text| {
            text.split_whitespace()
                .take(3)
                .collect::<Vec<_>>()
                .join(" ")
        })
        .unwrap_or_else(|_| "unknown".to_string())
}
