"""Soak run of `promptopt serve`: for `minutes` minutes, predictions paced at the serving benchmark's
rate (16 connections, 1,000/s by default) through an A/B experiment between two versions, and beside
them a client that predicts and sends feedback for each prediction. Each minute records the paced
load's requests and latency percentiles (`loadgen` stops at the first non-200 answer), the feedback
client's calls and errors, and the server's resident memory (VmRSS). Writes `bench/results/soak.json`
and prints a Markdown table for `docs/reliability.md`."""

from __future__ import annotations

import json
import os
import shutil
import tempfile
import threading
import time
import urllib.error
import urllib.request
from pathlib import Path

from . import paths, serving
from .procs import Server

RESULTS = paths.REPO / "bench" / "results" / "soak.json"


def _call(url: str, body: dict | None, method: str = "POST") -> dict:
    data = json.dumps(body).encode() if body is not None else None
    request = urllib.request.Request(url, data=data, method=method, headers={
        "authorization": f"Bearer {serving.TOKEN}", "content-type": "application/json"})
    with urllib.request.urlopen(request, timeout=30) as response:
        return json.loads(response.read() or b"{}")


def _rss_mib(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    return float("nan")


class FeedbackClient(threading.Thread):
    """Predicts for a rotating set of users and sends each prediction's outcome."""

    def __init__(self, base: str):
        super().__init__(daemon=True)
        self.base = base
        self.stop = threading.Event()
        self.lock = threading.Lock()
        self.calls = 0
        self.errors: list[str] = []

    def take(self) -> tuple[int, list[str]]:
        with self.lock:
            calls, errors = self.calls, self.errors
            self.calls, self.errors = 0, []
        return calls, errors

    def run(self) -> None:
        i = 0
        while not self.stop.is_set():
            i += 1
            try:
                predicted = _call(f"{self.base}/v1/models/bench-sst2/predict",
                                  {"inputs": {"text": f"review number {i}"}, "user_id": f"user-{i % 500}"})
                _call(f"{self.base}/v1/feedback", {"prediction_id": predicted["prediction_id"],
                                                   "expected_output": "positive"})
                with self.lock:
                    self.calls += 2
            except (urllib.error.URLError, OSError, KeyError, ValueError) as e:
                with self.lock:
                    self.errors.append(str(e))
            time.sleep(0.02)


def run(minutes: int = 10, rate: float = 1000.0, connections: int = 16, build_first: bool = True) -> dict:
    if build_first:
        serving.build()
    home = Path(tempfile.mkdtemp(prefix="promptopt-bench-soak-"))
    results: dict = {"meta": {"date": time.strftime("%Y-%m-%d"), "cpus": os.cpu_count(), "minutes": minutes,
                              "rate": rate, "connections": connections}, "minutes": []}
    try:
        with Server([serving.RELEASE / "fake-openai", "--port", "0", "--threads", "1"]) as fake:
            env = dict(os.environ, PROMPTOPT_HOME=str(home), OPENAI_BASE_URL=fake.url.rstrip("/") + "/v1",
                       OPENAI_API_KEY="bench", DISABLE_MLFLOW="1", PROMPTOPT_API_TOKENS=serving.TOKEN,
                       PROMPTOPT_LOG="warn")
            env.pop("PROMPTOPT_QUEUE", None)
            serving.saved_model(home, env)  # bench-sst2@1.0.0
            serving.saved_model(home, env)  # bench-sst2@1.0.1
            with Server([serving.RELEASE / "promptopt", "serve", "--bind", "127.0.0.1:0", "--no-cache"], env=env,
                        log=home / "serve.log") as serve:
                base = serve.url.rstrip("/")
                _call(f"{base}/v1/experiments?start=true", {
                    "name": "soak", "success_metric": "exact_match", "minimum_sample_size": 10_000_000,
                    "variants": {"control": "bench-sst2@1.0.0", "treatment": "bench-sst2@1.0.1"}})
                predict = dict(path="/v1/models/bench-sst2/predict", body=serving.PREDICT_BODY,
                               headers=(f"authorization: Bearer {serving.TOKEN}",))
                serving.loadgen(serve.addr, 1, 1.0, **predict)
                feedback = FeedbackClient(base)
                feedback.start()
                try:
                    for minute in range(1, minutes + 1):
                        load = serving.loadgen(serve.addr, connections, 60.0, rate=rate, **predict)
                        calls, errors = feedback.take()
                        row = {"minute": minute, "requests": load["requests"],
                               "requests_per_s": load["requests_per_s"], "latency_us": load["latency_us"],
                               "feedback_calls": calls, "feedback_errors": len(errors),
                               "rss_mib": _rss_mib(serve.pid)}
                        if errors:
                            row["first_error"] = errors[0]
                        results["minutes"].append(row)
                        print(json.dumps(row), flush=True)
                finally:
                    feedback.stop.set()
                    feedback.join(timeout=10)
                experiment = _call(f"{base}/v1/experiments/soak", None, method="GET")
                results["experiment"] = experiment
    finally:
        shutil.rmtree(home, ignore_errors=True)
    RESULTS.parent.mkdir(parents=True, exist_ok=True)
    RESULTS.write_text(json.dumps(results, indent=2) + "\n")
    return results


def check(results: dict) -> list[str]:
    """What the soak promises: no error, memory that levels off, a steady p99."""
    rows = results["minutes"]
    problems = [f"minute {r['minute']}: {r['feedback_errors']} feedback errors ({r.get('first_error')})"
                for r in rows if r["feedback_errors"]]
    if len(rows) >= 3:
        settled = rows[1]["rss_mib"]
        last = rows[-1]["rss_mib"]
        if last > settled * 1.25 + 16:
            problems.append(f"memory grew from {settled:.0f} MiB (minute 2) to {last:.0f} MiB")
        p99s = [r["latency_us"]["p99"] for r in rows[1:]]
        if max(p99s) > 3 * min(p99s) + 1000:
            problems.append(f"p99 drifted: {min(p99s)} to {max(p99s)} µs")
    return problems


def table(results: dict) -> str:
    lines = ["| minute | requests/s | p50 µs | p99 µs | feedback calls | errors | RSS MiB |",
             "|---:|---:|---:|---:|---:|---:|---:|"]
    for r in results["minutes"]:
        lines.append(f"| {r['minute']} | {r['requests_per_s']:,.0f} | {r['latency_us']['p50']:,} | "
                     f"{r['latency_us']['p99']:,} | {r['feedback_calls']:,} | {r['feedback_errors']} | "
                     f"{r['rss_mib']:.1f} |")
    return "\n".join(lines)
