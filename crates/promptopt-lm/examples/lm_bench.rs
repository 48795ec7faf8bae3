//! Throughput and client CPU cost of the full promptopt-lm stack.
//!
//! Drives N requests at concurrency C through cost accounting, cache, retry, concurrency limit
//! and timeout around the OpenAI provider, against the fixed-reply server of
//! `promptopt_lm::testing`, once with the cache bypassed and once with every request a hit.
//!
//! ```text
//! cargo run --release -p promptopt-lm --example lm_bench --features testing -- --requests 20000 --concurrency 32
//! ```
#![allow(clippy::print_stdout, clippy::print_stderr)]

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use promptopt_lm::testing::{process_cpu_time, FixedReplyServer};
use promptopt_lm::{ChatRequest, LmConfig, LmError, LmStack, Message, SharedLm, UsageTracker};

struct Args {
    requests: usize,
    concurrency: usize,
    threads: usize,
}

fn parse_args() -> Result<Args, String> {
    let mut args = Args {
        requests: 20_000,
        concurrency: 32,
        threads: 1,
    };
    let mut it = std::env::args().skip(1);
    while let Some(flag) = it.next() {
        let mut value = |name: &str| -> Result<usize, String> {
            it.next()
                .and_then(|v| v.parse().ok())
                .filter(|v| *v > 0)
                .ok_or(format!("`{name}` needs a positive number"))
        };
        match flag.as_str() {
            "--requests" => args.requests = value("--requests")?,
            "--concurrency" => args.concurrency = value("--concurrency")?,
            "--threads" => args.threads = value("--threads")?,
            other => {
                return Err(format!(
                    "Unknown argument `{other}`; use --requests N --concurrency C [--threads T]"
                ))
            }
        }
    }
    Ok(args)
}

/// One measured phase.
struct Figures {
    wall: Duration,
    client_cpu: Duration,
    server_cpu: Duration,
}

/// Sends `n` requests from `concurrency` tasks; `make(i)` builds request `i`.
async fn drive(
    lm: &SharedLm,
    n: usize,
    concurrency: usize,
    make: Arc<dyn Fn(usize) -> ChatRequest + Send + Sync>,
) -> Result<(), LmError> {
    let next = Arc::new(AtomicUsize::new(0));
    let workers: Vec<_> = (0..concurrency)
        .map(|_| {
            let lm = Arc::clone(lm);
            let next = Arc::clone(&next);
            let make = Arc::clone(&make);
            tokio::spawn(async move {
                loop {
                    let i = next.fetch_add(1, Ordering::Relaxed);
                    if i >= n {
                        return Ok::<(), LmError>(());
                    }
                    lm.chat(&make(i)).await?;
                }
            })
        })
        .collect();
    for worker in workers {
        worker
            .await
            .map_err(|e| LmError::Engine(format!("A benchmark task failed: {e}")))??;
    }
    Ok(())
}

async fn measure(
    server: &FixedReplyServer,
    lm: &SharedLm,
    n: usize,
    concurrency: usize,
    make: Arc<dyn Fn(usize) -> ChatRequest + Send + Sync>,
) -> Result<Figures, LmError> {
    let cpu = || (process_cpu_time(), server.cpu_time());
    let (process_before, server_before) = cpu();
    let started = Instant::now();
    drive(lm, n, concurrency, make).await?;
    let wall = started.elapsed();
    let (process_after, server_after) = cpu();
    let diff = |a: Option<Duration>, b: Option<Duration>| match (a, b) {
        (Some(a), Some(b)) => a.saturating_sub(b),
        _ => Duration::ZERO,
    };
    let process = diff(process_after, process_before);
    let server_cpu = diff(server_after, server_before);
    Ok(Figures {
        wall,
        client_cpu: process.saturating_sub(server_cpu),
        server_cpu,
    })
}

fn report(label: &str, n: usize, figures: &Figures) {
    let per = |d: Duration| d.as_secs_f64() * 1e6 / n as f64;
    println!(
        "{label:<22} {:>10.0} req/s   client CPU {:>7.1} µs/req   server CPU {:>6.1} µs/req   wall {:>7.3} s",
        n as f64 / figures.wall.as_secs_f64(),
        per(figures.client_cpu),
        per(figures.server_cpu),
        figures.wall.as_secs_f64(),
    );
}

async fn run(args: &Args) -> Result<(), LmError> {
    let server = FixedReplyServer::start("positive")?;
    let mut config = LmConfig::default().with_base_url("openai", server.base_url());
    config.timeout_ms = Some(30_000);
    config.retry.max_retries = 3;
    config.concurrency = Some(args.concurrency);
    config.cache.memory_entries = 10_000;
    let tracker = Arc::new(UsageTracker::new());
    let lm = LmStack::new(config)
        .with_tracker(Arc::clone(&tracker))
        .assemble()?;

    let uncached: Arc<dyn Fn(usize) -> ChatRequest + Send + Sync> = Arc::new(|i| {
        ChatRequest::new(
            "openai/gpt-4o-mini",
            vec![
                Message::system("Classify the sentiment of the review as positive or negative."),
                Message::user(format!(
                    "Review {i}: the food was great and the staff friendly."
                )),
            ],
        )
        .with_temperature(0.0)
        .with_max_tokens(8)
        .without_cache()
    });
    const DISTINCT: usize = 256;
    let cached: Arc<dyn Fn(usize) -> ChatRequest + Send + Sync> = Arc::new(|i| {
        ChatRequest::new(
            "openai/gpt-4o-mini",
            vec![
                Message::system("Classify the sentiment of the review as positive or negative."),
                Message::user(format!(
                    "Review {}: the food was great and the staff friendly.",
                    i % DISTINCT
                )),
            ],
        )
        .with_temperature(0.0)
        .with_max_tokens(8)
    });

    // Warm-up: open the connections, fill the cache with the entries the hit phase will use.
    drive(
        &lm,
        args.requests.min(2_000),
        args.concurrency,
        Arc::clone(&uncached),
    )
    .await?;
    drive(&lm, DISTINCT, args.concurrency, Arc::clone(&cached)).await?;
    let hits_before = tracker.snapshot().cache_hits;

    println!(
        "promptopt-lm stack benchmark: {} requests, concurrency {}, {} client runtime thread(s)",
        args.requests, args.concurrency, args.threads
    );
    println!(
        "stack: cost accounting > cache > retry (3) > concurrency limit ({}) > timeout (30 s) > OpenAI provider (reqwest) > fixed-reply server on loopback",
        args.concurrency
    );
    let off = measure(&server, &lm, args.requests, args.concurrency, uncached).await?;
    report("cache off (bypassed)", args.requests, &off);
    let hit = measure(&server, &lm, args.requests, args.concurrency, cached).await?;
    report("cache hit (memory)", args.requests, &hit);

    let snapshot = tracker.snapshot();
    println!(
        "served by the server: {}, cache hits in the hit phase: {}, errors: {}",
        server.requests_served(),
        snapshot.cache_hits - hits_before,
        snapshot.errors
    );
    println!(
        "CPU: client = getrusage(RUSAGE_SELF) of the whole process minus the CPU clock of the \
         server's own thread (pthread_getcpuclockid); the server runs on a separate \
         current-thread runtime thread in this process, so the client figure covers the client \
         runtime, the stack, reqwest/hyper and the kernel's socket work on the client side."
    );
    println!(
        "targets: <= 100 µs client CPU per uncached request (set at concurrency 32; this run: {}) \
         -> {:.1} µs ({}); >= 20,000 cache hits/s -> {:.0}/s ({})",
        args.concurrency,
        off.client_cpu.as_secs_f64() * 1e6 / args.requests as f64,
        if off.client_cpu.as_secs_f64() * 1e6 / args.requests as f64 <= 100.0 {
            "met"
        } else {
            "missed"
        },
        args.requests as f64 / hit.wall.as_secs_f64(),
        if args.requests as f64 / hit.wall.as_secs_f64() >= 20_000.0 {
            "met"
        } else {
            "missed"
        },
    );
    Ok(())
}

fn main() {
    let args = match parse_args() {
        Ok(args) => args,
        Err(message) => {
            eprintln!("{message}");
            std::process::exit(2);
        }
    };
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .worker_threads(args.threads)
        .enable_all()
        .build()
    {
        Ok(runtime) => runtime,
        Err(e) => {
            eprintln!("Could not start the runtime: {e}");
            std::process::exit(1);
        }
    };
    if let Err(e) = runtime.block_on(run(&args)) {
        eprintln!("Benchmark failed: {e}");
        std::process::exit(1);
    }
}
