//! `loadgen`: a tight keep-alive load generator for an OpenAI-compatible chat completions server
//! (the default request) or any JSON endpoint (`--path`, `--body`, `--header`).
//!
//! Each of `--connections` connections sends one request, reads the whole response, and repeats
//! until the duration is over; with `--rate`, the connections together send that many requests
//! per second on a fixed schedule instead of as fast as they can (a late response delays the next
//! send on its connection: latencies under overload are not corrected for that). It prints one
//! JSON object: requests, seconds, requests per second and latency percentiles in microseconds.
#![allow(clippy::print_stdout, clippy::print_stderr)]

use std::process::ExitCode;
use std::time::{Duration, Instant};

use clap::Parser;
use promptopt_bench::{frame, Framing};
use serde_json::json;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

/// Measures how many chat completions per second a server answers.
#[derive(Debug, Parser)]
struct Args {
    /// Server address, `HOST:PORT`.
    #[arg(long)]
    addr: String,
    /// Concurrent keep-alive connections.
    #[arg(long, default_value_t = 32)]
    connections: usize,
    /// Seconds to measure (after the warm-up).
    #[arg(long, default_value_t = 5.0)]
    duration: f64,
    /// Seconds of warm-up that are not counted.
    #[arg(long, default_value_t = 0.5)]
    warmup: f64,
    /// Runtime worker threads for the load generator itself.
    #[arg(long, default_value_t = 1)]
    threads: usize,
    /// The path to `POST` to.
    #[arg(long, default_value = "/v1/chat/completions")]
    path: String,
    /// The JSON body to send (default: a chat completion request).
    #[arg(long)]
    body: Option<String>,
    /// An extra header, `NAME: VALUE` (repeatable), e.g. `authorization: Bearer TOKEN`.
    #[arg(long = "header")]
    headers: Vec<String>,
    /// Requests per second over all connections (default: as fast as responses come).
    #[arg(long)]
    rate: Option<f64>,
}

fn main() -> ExitCode {
    let args = Args::parse();
    let runtime = if args.threads <= 1 {
        tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
    } else {
        tokio::runtime::Builder::new_multi_thread()
            .worker_threads(args.threads)
            .enable_all()
            .build()
    };
    let runtime = match runtime {
        Ok(runtime) => runtime,
        Err(error) => {
            eprintln!("error: Could not start the runtime: {error}");
            return ExitCode::FAILURE;
        }
    };
    match runtime.block_on(run(args)) {
        Ok(()) => ExitCode::SUCCESS,
        Err(error) => {
            eprintln!("error: {error}");
            ExitCode::FAILURE
        }
    }
}

fn request_bytes(args: &Args) -> Vec<u8> {
    let body = args.body.clone().unwrap_or_else(|| {
        json!({
            "model": "bench",
            "messages": [
                {"role": "system", "content": "Your input fields are:\n1. `text` (str)\nYour output fields are:\n1. `label` (str)"},
                {"role": "user", "content": "[[ ## text ## ]]\na gripping , moving film .\n\nRespond with the corresponding output fields."}
            ],
            "temperature": 0.0
        })
        .to_string()
    });
    let mut head = format!(
        "POST {} HTTP/1.1\r\nhost: {}\r\ncontent-type: application/json\r\ncontent-length: {}\r\n",
        args.path,
        args.addr,
        body.len()
    );
    for header in &args.headers {
        head.push_str(header.trim());
        head.push_str("\r\n");
    }
    head.push_str("\r\n");
    let mut out = head.into_bytes();
    out.extend_from_slice(body.as_bytes());
    out
}

async fn run(args: Args) -> Result<(), String> {
    if let Some(rate) = args.rate {
        if !(rate.is_finite() && rate > 0.0) {
            return Err(format!("`--rate` must be a positive number, not {rate}"));
        }
    }
    let request = request_bytes(&args);
    // With `--rate`, each connection sends every `interval`, the connections offset evenly.
    let interval = args
        .rate
        .map(|rate| Duration::from_secs_f64(args.connections as f64 / rate));
    let start = Instant::now();
    let measure_from = start + Duration::from_secs_f64(args.warmup);
    let end = measure_from + Duration::from_secs_f64(args.duration);
    let mut tasks = Vec::with_capacity(args.connections);
    for i in 0..args.connections {
        let stream = TcpStream::connect(&args.addr)
            .await
            .map_err(|e| format!("Could not connect to `{}`: {e}", args.addr))?;
        let request = request.clone();
        let schedule = interval.map(|every| Schedule {
            next: start + every.mul_f64(i as f64 / args.connections as f64),
            every,
        });
        tasks.push(tokio::spawn(connection(
            stream,
            request,
            measure_from,
            end,
            schedule,
        )));
    }
    let mut latencies_us: Vec<u32> = Vec::new();
    for task in tasks {
        let mut part = task
            .await
            .map_err(|e| format!("A connection task failed: {e}"))??;
        latencies_us.append(&mut part);
    }
    let seconds = args.duration;
    latencies_us.sort_unstable();
    let pct = |p: f64| -> u32 {
        if latencies_us.is_empty() {
            return 0;
        }
        let idx = ((latencies_us.len() as f64 - 1.0) * p).round() as usize;
        latencies_us[idx.min(latencies_us.len() - 1)]
    };
    let report = json!({
        "connections": args.connections,
        "rate": args.rate,
        "requests": latencies_us.len(),
        "seconds": seconds,
        "requests_per_s": latencies_us.len() as f64 / seconds,
        "latency_us": {"p50": pct(0.5), "p90": pct(0.9), "p99": pct(0.99), "max": pct(1.0)},
    });
    println!("{report}");
    Ok(())
}

/// When a paced connection sends next.
struct Schedule {
    next: Instant,
    every: Duration,
}

async fn connection(
    mut stream: TcpStream,
    request: Vec<u8>,
    measure_from: Instant,
    end: Instant,
    mut schedule: Option<Schedule>,
) -> Result<Vec<u32>, String> {
    stream
        .set_nodelay(true)
        .map_err(|e| format!("Could not set `TCP_NODELAY`: {e}"))?;
    let mut buf: Vec<u8> = Vec::with_capacity(4096);
    let mut latencies = Vec::new();
    loop {
        if let Some(schedule) = &mut schedule {
            if schedule.next >= end {
                return Ok(latencies);
            }
            tokio::time::sleep_until(schedule.next.into()).await;
            schedule.next += schedule.every;
        }
        let sent = Instant::now();
        if sent >= end {
            return Ok(latencies);
        }
        stream
            .write_all(&request)
            .await
            .map_err(|e| format!("Write failed: {e}"))?;
        loop {
            match frame(&buf).map_err(|e| format!("Bad response: {e}"))? {
                Framing::Complete { total_len, .. } => {
                    if !buf.starts_with(b"HTTP/1.1 200") {
                        return Err(format!(
                            "Unexpected response `{}`",
                            String::from_utf8_lossy(&buf[..total_len.min(200)])
                        ));
                    }
                    buf.drain(..total_len);
                    break;
                }
                Framing::Incomplete => {
                    let n = stream
                        .read_buf(&mut buf)
                        .await
                        .map_err(|e| format!("Read failed: {e}"))?;
                    if n == 0 {
                        return Err("The server closed the connection".to_string());
                    }
                }
            }
        }
        let done = Instant::now();
        if sent >= measure_from && done <= end {
            latencies
                .push(u32::try_from(done.duration_since(sent).as_micros()).unwrap_or(u32::MAX));
        }
    }
}
