//! `fake-openai`: an OpenAI-compatible chat completions server on loopback that answers every
//! `POST` with the same reply, at once or after `--delay-ms`.
//!
//! It prints `listening http://HOST:PORT` on stdout once bound (use `--port 0` for any free
//! port). `GET /stats` returns how many completions it has served. Replies are written in one
//! piece on sockets with `TCP_NODELAY`, so no request waits on Nagle's algorithm.
#![allow(clippy::print_stdout, clippy::print_stderr)]

use std::io::Write;
use std::net::SocketAddr;
use std::process::ExitCode;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;

use clap::Parser;
use promptopt_bench::{frame, json_response, Framing, ReplyTemplate, DEFAULT_REPLY};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};

/// An instant OpenAI-compatible server for benchmarks.
#[derive(Debug, Parser)]
struct Args {
    /// Address to bind.
    #[arg(long, default_value = "127.0.0.1")]
    host: String,
    /// Port to bind (0 picks a free one).
    #[arg(long, default_value_t = 0)]
    port: u16,
    /// The assistant message content of every reply.
    #[arg(long, default_value = DEFAULT_REPLY)]
    reply: String,
    /// The model name in every reply.
    #[arg(long, default_value = "bench")]
    model: String,
    /// Runtime worker threads (1 runs everything on one thread).
    #[arg(long, default_value_t = 1)]
    threads: usize,
    /// Wait this many milliseconds before each completion (a model that takes time; other
    /// connections are served meanwhile).
    #[arg(long, default_value_t = 0)]
    delay_ms: u64,
}

/// Responses built once at start-up.
struct Shared {
    keep_alive: Vec<u8>,
    close: Vec<u8>,
    completions: AtomicU64,
    connections: AtomicU64,
    delay: std::time::Duration,
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
    match runtime.block_on(serve(args)) {
        Ok(()) => ExitCode::SUCCESS,
        Err(error) => {
            eprintln!("error: {error}");
            ExitCode::FAILURE
        }
    }
}

async fn serve(args: Args) -> Result<(), String> {
    let addr = format!("{}:{}", args.host, args.port);
    let listener = TcpListener::bind(&addr)
        .await
        .map_err(|e| format!("Could not bind `{addr}`: {e}"))?;
    let local: SocketAddr = listener
        .local_addr()
        .map_err(|e| format!("Could not read the bound address: {e}"))?;
    let template = ReplyTemplate::new(&args.model, &args.reply);
    let shared = Arc::new(Shared {
        keep_alive: template.http_response(false),
        close: template.http_response(true),
        completions: AtomicU64::new(0),
        connections: AtomicU64::new(0),
        delay: std::time::Duration::from_millis(args.delay_ms),
    });
    {
        let mut stdout = std::io::stdout().lock();
        let _ = writeln!(stdout, "listening http://{local}");
        let _ = stdout.flush();
    }
    loop {
        let (stream, _) = match listener.accept().await {
            Ok(accepted) => accepted,
            Err(error) => {
                eprintln!("warning: accept failed: {error}");
                continue;
            }
        };
        let shared = Arc::clone(&shared);
        tokio::spawn(async move {
            if let Err(error) = handle(stream, &shared).await {
                if error.kind() != std::io::ErrorKind::ConnectionReset {
                    eprintln!("warning: connection ended with an error: {error}");
                }
            }
        });
    }
}

async fn handle(mut stream: TcpStream, shared: &Shared) -> std::io::Result<()> {
    stream.set_nodelay(true)?;
    shared.connections.fetch_add(1, Ordering::Relaxed);
    let mut buf: Vec<u8> = Vec::with_capacity(16 * 1024);
    loop {
        match frame(&buf) {
            Ok(Framing::Complete {
                total_len,
                keep_alive,
            }) => {
                let start = &buf[..total_len.min(buf.len())];
                if start.starts_with(b"GET /stats") {
                    let body = format!(
                        "{{\"completions\":{},\"connections\":{}}}",
                        shared.completions.load(Ordering::Relaxed),
                        shared.connections.load(Ordering::Relaxed)
                    );
                    stream
                        .write_all(&json_response(200, "OK", body.as_bytes(), !keep_alive))
                        .await?;
                } else if start.starts_with(b"GET ") {
                    let body = b"{\"object\":\"list\",\"data\":[{\"id\":\"bench\",\"object\":\"model\",\"owned_by\":\"bench\"}]}";
                    stream
                        .write_all(&json_response(200, "OK", body, !keep_alive))
                        .await?;
                } else {
                    if !shared.delay.is_zero() {
                        tokio::time::sleep(shared.delay).await;
                    }
                    shared.completions.fetch_add(1, Ordering::Relaxed);
                    let reply = if keep_alive {
                        &shared.keep_alive
                    } else {
                        &shared.close
                    };
                    stream.write_all(reply).await?;
                }
                buf.drain(..total_len);
                if !keep_alive {
                    return Ok(());
                }
            }
            Ok(Framing::Incomplete) => {
                if stream.read_buf(&mut buf).await? == 0 {
                    return Ok(());
                }
            }
            Err(error) => {
                let body = format!("{{\"error\":{{\"message\":{:?}}}}}", error.to_string());
                stream
                    .write_all(&json_response(400, "Bad Request", body.as_bytes(), true))
                    .await?;
                return Ok(());
            }
        }
    }
}
