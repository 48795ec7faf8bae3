"""The overhead experiment: both frameworks evaluate the same examples against the same instant
OpenAI-compatible server (`fake-openai`), whose own capacity is measured first with `loadgen`."""

from __future__ import annotations

import json
import os
import platform
import subprocess
import time
from pathlib import Path

from . import paths
from .procs import Server, cpu_prefix, proc_cpu_s, run_measured
from .stats import median

DSPY_THREADS = (1, 8, 32)
PROMPTOPT_CONCURRENCY = 32
CACHE_MODES = ("off", "memory")


def build(profile: str) -> Path:
    """Builds the fake server, the load generator and the promptopt-side runner; returns the
    directory of the binaries."""
    flags = ["--release"] if profile == "release" else []
    subprocess.run(
        ["cargo", "build", *flags, "-p", "promptopt-bench", "--bins", "--example", "promptopt_overhead"],
        cwd=paths.REPO,
        check=True,
    )
    return paths.target_dir(profile)


def write_examples(n: int, path: Path) -> Path:
    """`n` sentiment examples cycled from the SST-2 splits in `bench/data`, each text unique."""
    rows = []
    for split in ("train", "dev", "test"):
        with open(paths.DATA / "sst2" / f"{split}.jsonl", encoding="utf-8") as f:
            rows.extend(json.loads(line) for line in f if line.strip())
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "w", encoding="utf-8") as f:
        for i in range(n):
            row = rows[i % len(rows)]
            text = row["text"] if i < len(rows) else f"{row['text']} ({i // len(rows)})"
            f.write(json.dumps({"id": f"ov-{i}", "text": text, "label": row["label"]}) + "\n")
    return path


def cpu_split() -> tuple[str | None, str | None]:
    """CPUs for the client and the server: the server gets the last CPU, the client the rest.

    With one CPU (or no `taskset`) nothing is pinned.
    """
    cpus = sorted(os.sched_getaffinity(0))
    if len(cpus) < 2 or not _has_taskset():
        return None, None
    client = ",".join(str(c) for c in cpus[:-1])
    return client, str(cpus[-1])


def _has_taskset() -> bool:
    return any((Path(d) / "taskset").exists() for d in os.environ.get("PATH", "").split(os.pathsep))


def server_capacity(bins: Path, server: Server, client_cpus: str | None, seconds: float) -> dict:
    """Requests/s the server sustains under `loadgen` (32 keep-alive connections) and its own
    CPU per request."""
    cpu0 = proc_cpu_s(server.pid)
    stats0 = server.get_json("/stats")["completions"]
    result = run_measured(
        [*cpu_prefix(client_cpus), bins / "loadgen", "--addr", server.addr, "--connections", "32",
         "--duration", str(seconds)],
        timeout_s=seconds + 60,
    ).check()
    served = server.get_json("/stats")["completions"] - stats0
    cpu = proc_cpu_s(server.pid) - cpu0
    load = json.loads(result.last_json_line())
    return {
        "connections": load["connections"],
        "requests_per_s": load["requests_per_s"],
        "latency_us": load["latency_us"],
        "server_cpu_us_per_request": 1e6 * cpu / served if served else None,
        "server_cpu_bound_requests_per_s": served / cpu if cpu > 0 else None,
        "loadgen_cpu_s": result.cpu_s,
    }


def run_dspy(server: Server, data: Path, threads: int, cache: str, client_cpus: str | None) -> dict:
    env = {**os.environ, "LITELLM_LOCAL_MODEL_COST_MAP": "True", "PYTHONUNBUFFERED": "1"}
    argv = [*cpu_prefix(client_cpus), paths.VENV_PYTHON, paths.DSPY_DIR / "overhead.py", "--data", data,
            "--api-base", server.url + "/v1", "--threads", str(threads), "--cache", cache]
    return _measure(server, argv, env)


def run_promptopt(bins: Path, server: Server, data: Path, concurrency: int, cache: str, client_cpus: str | None) -> dict:
    argv = [*cpu_prefix(client_cpus), bins / "examples" / "promptopt_overhead", "--data", data,
            "--base-url", server.url + "/v1", "--concurrency", str(concurrency), "--cache", cache]
    return _measure(server, argv, dict(os.environ))


def _measure(server: Server, argv: list, env: dict) -> dict:
    before = server.get_json("/stats")["completions"]
    measured = run_measured(argv, env=env, timeout_s=1800).check()
    record = json.loads(measured.last_json_line())
    record["server_requests"] = server.get_json("/stats")["completions"] - before
    record["process_wall_s"] = measured.wall_s
    record["process_cpu_s"] = measured.cpu_s
    record["process_peak_rss_mb"] = measured.peak_rss_mb
    return record


def best_of(records: list[dict]) -> dict:
    """The median repeat by evaluations/s, with the medians of the noisy figures."""
    ordered = sorted(records, key=lambda r: r["evals_per_s"])
    chosen = dict(ordered[len(ordered) // 2])
    chosen["repeats"] = len(records)
    chosen["evals_per_s_all"] = [r["evals_per_s"] for r in records]
    chosen["cpu_ms_per_eval"] = median(r["cpu_ms_per_eval"] for r in records)
    return chosen


def run(examples: int, repeats: int, loadgen_seconds: float, dspy_threads=DSPY_THREADS,
        profile: str = "release", build_first: bool = True, log=print) -> dict:
    """Runs the whole overhead experiment and returns its results (not yet written anywhere)."""
    bins = build(profile) if build_first else paths.target_dir(profile)
    data = write_examples(examples, paths.OUT / f"overhead-{examples}.jsonl")
    client_cpus, server_cpus = cpu_split()
    server_argv = [*cpu_prefix(server_cpus), bins / "fake-openai", "--port", "0"]
    runs: list[dict] = []
    with Server(server_argv) as server:
        log(f"fake server at {server.url} (server CPUs: {server_cpus or 'any'}, client CPUs: {client_cpus or 'any'})")
        capacity = server_capacity(bins, server, client_cpus, loadgen_seconds)
        log(f"server capacity: {capacity['requests_per_s']:,.0f} requests/s under load, "
            f"{capacity['server_cpu_us_per_request']:.1f} µs server CPU per request")
        for cache in CACHE_MODES:
            records = [run_promptopt(bins, server, data, PROMPTOPT_CONCURRENCY, cache, client_cpus) for _ in range(repeats)]
            runs.append(best_of(records))
            log(f"promptopt concurrency {PROMPTOPT_CONCURRENCY}, cache {cache}: {runs[-1]['evals_per_s']:,.0f} evals/s")
            for threads in dspy_threads:
                records = [run_dspy(server, data, threads, cache, client_cpus) for _ in range(repeats)]
                runs.append(best_of(records))
                log(f"DSPy {threads} threads, cache {cache}: {runs[-1]['evals_per_s']:,.0f} evals/s")
    return {
        "meta": machine_meta() | {
            "examples": examples,
            "repeats": repeats,
            "client_cpus": client_cpus,
            "server_cpus": server_cpus,
            "profile": profile,
        },
        "server": capacity,
        "runs": runs,
    }


def machine_meta() -> dict:
    """Date, CPU model and count, OS and the commit measured."""
    model = ""
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                model = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    try:
        commit = subprocess.run(["git", "rev-parse", "--short", "HEAD"], cwd=paths.REPO, capture_output=True,
                                text=True, check=True).stdout.strip()
    except (OSError, subprocess.CalledProcessError):
        commit = ""
    return {
        "date": time.strftime("%Y-%m-%d"),
        "cpu_model": model,
        "cpus": os.cpu_count(),
        "system": f"{platform.system()} {platform.release()}",
        "python": platform.python_version(),
        "commit": commit,
    }
