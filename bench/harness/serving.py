"""Prediction serving overhead of `promptopt serve`: `loadgen` calls the instant fake model
server directly and through `promptopt serve` (a saved one-stage classifier, response cache off,
so every prediction makes one model call), at 1, 16 and 64 connections as fast as they go, and
paced at 1,000 requests/s. The latency the server adds is the difference. Writes
`bench/results/serving.json` and prints a Markdown table for `docs/benchmarks.md`."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import tempfile
import time
from pathlib import Path

from . import paths
from .procs import Server

RELEASE = paths.REPO / "target" / "release"
RESULTS = paths.REPO / "bench" / "results" / "serving.json"
TOKEN = "bench-token"
# What the saved model sends: the same text every time, so each call is one chat completion.
PREDICT_BODY = json.dumps({"inputs": {"text": "a gripping , moving film ."}})


def build() -> None:
    subprocess.run(["cargo", "build", "--release", "-p", "promptopt-cli", "--bin", "promptopt",
                    "-p", "promptopt-bench", "--bin", "fake-openai", "--bin", "loadgen"],
                   cwd=paths.REPO, check=True)


def loadgen(addr: str, connections: int, seconds: float, rate: float | None = None,
            path: str | None = None, body: str | None = None, headers: tuple[str, ...] = ()) -> dict:
    argv = [str(RELEASE / "loadgen"), "--addr", addr, "--connections", str(connections),
            "--duration", str(seconds), "--threads", "1"]
    if rate:
        argv += ["--rate", str(rate)]
    if path:
        argv += ["--path", path]
    if body:
        argv += ["--body", body]
    for h in headers:
        argv += ["--header", h]
    out = subprocess.run(argv, check=True, capture_output=True, text=True)
    return json.loads(out.stdout.strip().splitlines()[-1])


def saved_model(home: Path, env: dict) -> None:
    """Saves `bench-sst2@1.0.0` (zero-shot: no demos, so every prediction is one short call)."""
    data = [json.loads(line) for line in (paths.DATA / "sst2" / "dev.jsonl").read_text().splitlines()[:8]]
    request = {
        "name": "bench-sst2", "evaluation_metric": "accuracy", "algorithm": "bootstrapfewshot",
        "model": "openai/bench", "seed": 0, "input_keys": ["text"], "output_keys": ["label"],
        "training_examples": data[:4], "validation_examples": data[4:],
        "algorithm_config": {"max_bootstrapped_demos": 0, "max_labeled_demos": 0}, "tracking": False,
    }
    path = home / "request.json"
    path.write_text(json.dumps(request))
    subprocess.run([str(RELEASE / "promptopt"), "optimize", str(path), "--no-cache"], env=env, check=True,
                   capture_output=True, text=True)


def run(seconds: float = 5.0, connections: tuple[int, ...] = (1, 16, 64), rate: float = 1000.0,
        build_first: bool = True) -> dict:
    if build_first:
        build()
    home = Path(tempfile.mkdtemp(prefix="promptopt-bench-serve-"))
    results: dict = {"meta": {"date": time.strftime("%Y-%m-%d"), "cpus": os.cpu_count(), "seconds": seconds},
                     "runs": []}
    try:
        with Server([RELEASE / "fake-openai", "--port", "0", "--threads", "1"]) as fake:
            env = dict(os.environ, PROMPTOPT_HOME=str(home), OPENAI_BASE_URL=fake.url.rstrip("/") + "/v1",
                       OPENAI_API_KEY="bench", DISABLE_MLFLOW="1", PROMPTOPT_API_TOKENS=TOKEN,
                       PROMPTOPT_LOG="warn")
            env.pop("PROMPTOPT_QUEUE", None)
            saved_model(home, env)
            with Server([RELEASE / "promptopt", "serve", "--bind", "127.0.0.1:0", "--no-cache"], env=env,
                        log=home / "serve.log") as serve:
                predict = dict(path="/v1/models/bench-sst2/predict?version=latest", body=PREDICT_BODY,
                               headers=(f"authorization: Bearer {TOKEN}",))
                # Warm up: the first prediction loads the model and opens the pool.
                loadgen(serve.addr, 1, 1.0, **predict)
                plans = [(c, None) for c in connections] + [(16, rate)]
                for c, r in plans:
                    direct = loadgen(fake.addr, c, seconds, rate=r)
                    served = loadgen(serve.addr, c, seconds, rate=r, **predict)
                    results["runs"].append({"connections": c, "rate": r, "direct": direct, "served": served})
    finally:
        shutil.rmtree(home, ignore_errors=True)
    RESULTS.parent.mkdir(parents=True, exist_ok=True)
    RESULTS.write_text(json.dumps(results, indent=2) + "\n")
    return results


def tables(results: dict) -> str:
    lines = ["| load | direct req/s | via serve req/s | direct p50 / p99 (ms) | via serve p50 / p99 (ms) | added p50 / p99 (ms) |",
             "|:---|---:|---:|---:|---:|---:|"]
    for r in results["runs"]:
        d, s = r["direct"], r["served"]
        load = f"{r['connections']} clients" + (f", paced {r['rate']:,.0f}/s" if r["rate"] else "")
        ms = lambda x: x / 1000.0  # noqa: E731
        lines.append(
            f"| {load} | {d['requests_per_s']:,.0f} | {s['requests_per_s']:,.0f} "
            f"| {ms(d['latency_us']['p50']):.2f} / {ms(d['latency_us']['p99']):.2f} "
            f"| {ms(s['latency_us']['p50']):.2f} / {ms(s['latency_us']['p99']):.2f} "
            f"| {ms(s['latency_us']['p50'] - d['latency_us']['p50']):.2f} / {ms(s['latency_us']['p99'] - d['latency_us']['p99']):.2f} |")
    return "\n".join(lines)
