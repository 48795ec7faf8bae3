//! The job queue's own cost: `N` empty jobs through a queue, submitted by one task while `W`
//! claimers take them and record an empty result at once. Prints submit-to-start latency
//! (p50/p99, from the job's `created_at` to its claim) and throughput, as JSON on stdout. With a
//! rate (jobs per second, 4th argument) submissions are paced, so the latency is the queue's own
//! and not the backlog of a submitter faster than the claimers.
//!
//! ```sh
//! cargo run --release -p promptopt-bench --example queue_overhead -- sqlite:/tmp/q.sqlite 10000 4
//! cargo run --release -p promptopt-bench --example queue_overhead -- redis://127.0.0.1:6379/0 10000 4
//! cargo run --release -p promptopt-bench --example queue_overhead -- sqlite:/tmp/q.sqlite 5000 4 500
//! ```
#![allow(clippy::print_stdout, clippy::print_stderr)]

use std::process::ExitCode;
use std::sync::Arc;
use std::time::{Duration, Instant};

use promptopt_jobs::{now, open_queue, JobSpec, Outcome, Priority, SharedQueue};

fn percentile(sorted: &[f64], p: f64) -> f64 {
    if sorted.is_empty() {
        return f64::NAN;
    }
    let rank = (p / 100.0 * (sorted.len() - 1) as f64).round() as usize;
    sorted[rank.min(sorted.len() - 1)]
}

async fn claimer(
    queue: SharedQueue,
    name: String,
    total: usize,
    done: Arc<std::sync::atomic::AtomicUsize>,
) -> Result<Vec<f64>, String> {
    use std::sync::atomic::Ordering;
    let mut latencies = Vec::new();
    let lease = Duration::from_secs(60);
    while done.load(Ordering::SeqCst) < total {
        match queue
            .claim(&name, &Priority::ALL, lease)
            .await
            .map_err(|e| e.to_string())?
        {
            Some(claim) => {
                latencies.push(now() - claim.record.created_at);
                let outcome = Outcome::Succeeded {
                    result: serde_json::json!({}),
                    model_id: None,
                };
                queue
                    .finish(&claim, outcome)
                    .await
                    .map_err(|e| e.to_string())?;
                done.fetch_add(1, Ordering::SeqCst);
            }
            None => tokio::time::sleep(Duration::from_millis(1)).await,
        }
    }
    Ok(latencies)
}

async fn run(
    url: &str,
    jobs: usize,
    claimers: usize,
    rate: Option<f64>,
) -> Result<serde_json::Value, String> {
    let home = std::env::temp_dir();
    let queue = open_queue(Some(url), &home)
        .await
        .map_err(|e| e.to_string())?;
    let done = Arc::new(std::sync::atomic::AtomicUsize::new(0));
    let started = Instant::now();
    let mut handles = Vec::new();
    for i in 0..claimers {
        handles.push(tokio::spawn(claimer(
            Arc::clone(&queue),
            format!("bench-{i}"),
            jobs,
            Arc::clone(&done),
        )));
    }
    let spec = JobSpec::new(serde_json::json!({"name": "empty"}));
    let submit_started = Instant::now();
    for i in 0..jobs {
        if let Some(rate) = rate {
            let due = Duration::from_secs_f64(i as f64 / rate);
            if let Some(wait) = due.checked_sub(submit_started.elapsed()) {
                tokio::time::sleep(wait).await;
            }
        }
        queue.submit(&spec).await.map_err(|e| e.to_string())?;
    }
    let submit_seconds = submit_started.elapsed().as_secs_f64();
    let mut latencies = Vec::new();
    for handle in handles {
        latencies.extend(handle.await.map_err(|e| e.to_string())??);
    }
    let total_seconds = started.elapsed().as_secs_f64();
    latencies.sort_by(f64::total_cmp);
    Ok(serde_json::json!({
        "queue": queue.url(),
        "jobs": jobs,
        "claimers": claimers,
        "rate": rate,
        "submit_per_s": jobs as f64 / submit_seconds,
        "jobs_per_s": jobs as f64 / total_seconds,
        "latency_p50_ms": percentile(&latencies, 50.0) * 1000.0,
        "latency_p99_ms": percentile(&latencies, 99.0) * 1000.0,
        "seconds": total_seconds,
    }))
}

fn main() -> ExitCode {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let url = args
        .first()
        .cloned()
        .unwrap_or_else(|| "sqlite:/tmp/promptopt-queue-bench.sqlite".into());
    let jobs = args.get(1).and_then(|n| n.parse().ok()).unwrap_or(10_000);
    let claimers = args.get(2).and_then(|n| n.parse().ok()).unwrap_or(4);
    let rate = args.get(3).and_then(|n| n.parse().ok());
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
    {
        Ok(r) => r,
        Err(e) => {
            eprintln!("error: {e}");
            return ExitCode::FAILURE;
        }
    };
    match runtime.block_on(run(&url, jobs, claimers, rate)) {
        Ok(report) => {
            println!("{report}");
            ExitCode::SUCCESS
        }
        Err(e) => {
            eprintln!("error: {e}");
            ExitCode::FAILURE
        }
    }
}
