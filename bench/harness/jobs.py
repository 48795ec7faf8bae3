"""The job queue: queue overhead (empty jobs), scale-out of worker processes on LM-bound jobs, and
the calls repeated when a worker is killed mid-job. Writes `bench/results/jobs.json` and prints
Markdown tables for `docs/benchmarks.md`.

Uses the release `promptopt` binary, `fake-openai` (with `--delay-ms`) and the `queue_overhead`
example; Redis through `scripts/redis-server.sh` when `redis-server` is installed."""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import tempfile
import time
from pathlib import Path

from . import paths
from .procs import Server

RELEASE = paths.REPO / "target" / "release"
RESULTS = paths.REPO / "bench" / "results" / "jobs.json"
# Submissions per second of the paced run: below both queues' throughput, so its latency is the
# queue's own.
PACED_RATE = 500.0


def build() -> None:
    subprocess.run(["cargo", "build", "--release", "-p", "promptopt-cli", "--bin", "promptopt",
                    "-p", "promptopt-bench", "--bin", "fake-openai", "--example", "queue_overhead"],
                   cwd=paths.REPO, check=True)


class Redis:
    """A throwaway Redis (AOF on) started by `scripts/redis-server.sh`."""

    def __init__(self):
        self.dir = Path(tempfile.mkdtemp(prefix="promptopt-bench-redis-"))
        subprocess.run([str(paths.REPO / "scripts" / "redis-server.sh"), "start", str(self.dir)],
                       check=True, stdout=subprocess.DEVNULL)
        self.url = (self.dir / "url").read_text().strip()

    def flush(self) -> None:
        subprocess.run(["redis-cli", "-u", self.url, "FLUSHALL"], check=True, stdout=subprocess.DEVNULL)

    def close(self) -> None:
        subprocess.run([str(paths.REPO / "scripts" / "redis-server.sh"), "stop", str(self.dir)],
                       check=False, stdout=subprocess.DEVNULL)
        shutil.rmtree(self.dir, ignore_errors=True)


def queue_overhead(url: str, jobs: int, claimers: int, rate: float | None = None) -> dict:
    argv = [str(RELEASE / "examples" / "queue_overhead"), url, str(jobs), str(claimers)]
    if rate:
        argv.append(str(rate))
    out = subprocess.run(argv, check=True, capture_output=True, text=True)
    return json.loads(out.stdout.strip().splitlines()[-1])


def request(name: str, examples: int, candidates: int) -> dict:
    """An LM-bound job: random search over `candidates` programs scored on `examples` validation
    examples, one call at a time, every call answered by the delayed fake server."""
    data = [json.loads(line) for line in (paths.DATA / "sst2" / "dev.jsonl").read_text().splitlines()[: 2 * examples]]
    return {
        "name": name,
        "evaluation_metric": "accuracy",
        "algorithm": "bootstrapfewshot_random_search",
        "model": "openai/bench",
        "seed": 0,
        "input_keys": ["text"],
        "output_keys": ["label"],
        "concurrency": 1,
        "training_examples": data[:examples],
        "validation_examples": data[examples:],
        "algorithm_config": {"max_bootstrapped_demos": 2, "max_labeled_demos": 2,
                             "num_candidate_programs": candidates, "balance_labels": False},
        "tracking": False,
    }


class Home:
    """A fresh `PROMPTOPT_HOME` with the environment of the `promptopt` processes."""

    def __init__(self, lm_url: str, queue: str | None):
        self.dir = Path(tempfile.mkdtemp(prefix="promptopt-bench-jobs-"))
        self.env = dict(os.environ, PROMPTOPT_HOME=str(self.dir), OPENAI_BASE_URL=lm_url.rstrip("/") + "/v1",
                        OPENAI_API_KEY="bench", DISABLE_MLFLOW="1", PROMPTOPT_LOG="info")
        self.queue = queue or f"sqlite:{self.dir / 'queue.sqlite'}"
        self.env["PROMPTOPT_QUEUE"] = self.queue

    def promptopt(self, *args: str) -> str:
        out = subprocess.run([str(RELEASE / "promptopt"), *args], env=self.env, check=True,
                             capture_output=True, text=True)
        return out.stdout

    def submit(self, req: dict) -> str:
        path = self.dir / f"{req['name']}.json"
        path.write_text(json.dumps(req))
        return self.promptopt("jobs", "submit", str(path)).strip()

    def worker(self, name: str, *extra: str) -> subprocess.Popen:
        log = open(self.dir / f"{name}.log", "wb")
        return subprocess.Popen([str(RELEASE / "promptopt"), "worker", "--name", name, *extra],
                                env=self.env, stdout=subprocess.DEVNULL, stderr=log)

    def status(self, job_id: str) -> dict:
        return json.loads(self.promptopt("jobs", "status", job_id, "--json"))

    def close(self) -> None:
        shutil.rmtree(self.dir, ignore_errors=True)


def completions(fake: Server) -> int:
    return int(fake.get_json("/stats")["completions"])


def scale_out(fake: Server, workers: list[int], jobs: int, examples: int, candidates: int,
              queue: str | None) -> list[dict]:
    rows = []
    for k in workers:
        home = Home(fake.url, queue)
        try:
            for i in range(jobs):
                home.submit(request(f"scale{i}", examples, candidates))
            before = completions(fake)
            started = time.monotonic()
            procs = [home.worker(f"w{j}", "--exit-when-empty", "--no-cache") for j in range(k)]
            for p in procs:
                if p.wait() != 0:
                    raise RuntimeError(f"a worker exited with {p.returncode}; see {home.dir}")
            wall = time.monotonic() - started
            calls = completions(fake) - before
            states = [home.status(j["job_id"])["state"] for j in json.loads(home.promptopt("jobs", "list", "--json"))]
            if any(s != "succeeded" for s in states):
                raise RuntimeError(f"not every job succeeded: {states}")
            rows.append({"workers": k, "jobs": jobs, "wall_s": wall, "jobs_per_s": jobs / wall, "lm_calls": calls})
        finally:
            home.close()
    base = rows[0]["jobs_per_s"] / rows[0]["workers"]
    for row in rows:
        row["ratio_to_linear"] = row["jobs_per_s"] / (row["workers"] * base)
    return rows


def kill_recovery(fake: Server, examples: int, candidates: int, kill_after_trials: int, cache: bool) -> dict:
    """One job run cleanly, then the same job with its worker killed (`kill -9`) after
    `kill_after_trials` trials and finished by a second worker: how many calls were made again."""
    extra = () if cache else ("--no-cache",)
    home = Home(fake.url, None)
    try:
        before = completions(fake)
        job = home.submit(request("clean", examples, candidates))
        w = home.worker("clean", "--exit-when-empty", *extra)
        w.wait()
        clean = completions(fake) - before
        assert home.status(job)["state"] == "succeeded"
    finally:
        home.close()
    home = Home(fake.url, None)
    try:
        before = completions(fake)
        job = home.submit(request("clean", examples, candidates))
        first = home.worker("first", "--lease", "2s", *extra)
        while (home.status(job).get("progress") or {}).get("trial", 0) < kill_after_trials:
            time.sleep(0.05)
        first.send_signal(signal.SIGKILL)
        first.wait()
        at_kill = completions(fake) - before
        second = home.worker("second", "--lease", "2s", "--exit-when-empty", *extra)
        # The second worker finds the job once the first one's lease has passed.
        while home.status(job)["state"] != "succeeded":
            time.sleep(0.1)
            if second.poll() is not None and home.status(job)["state"] != "succeeded":
                second = home.worker("second", "--lease", "2s", "--exit-when-empty", *extra)
        second.wait()
        total = completions(fake) - before
        status = home.status(job)
        return {"cache": cache, "clean_calls": clean, "calls_before_kill": at_kill,
                "calls_after_kill": total - at_kill, "total_calls": total, "repeated": total - clean,
                "attempts": status["attempts"], "in_flight_max": 1}
    finally:
        home.close()


def tables(results: dict) -> str:
    lines = ["| queue | jobs | claimers | submissions | submit (jobs/s) | throughput (jobs/s) "
             "| submit-to-start p50 (ms) | p99 (ms) |",
             "|:---|---:|---:|:---|---:|---:|---:|---:|"]
    for r in results["queue_overhead"]:
        kind = "Redis" if r["queue"].startswith("redis") else "embedded (SQLite)"
        paced = f"paced, {r['rate']:,.0f}/s" if r.get("rate") else "all at once"
        lines.append(f"| {kind} | {r['jobs']:,} | {r['claimers']} | {paced} | {r['submit_per_s']:,.0f} "
                     f"| {r['jobs_per_s']:,.0f} | {r['latency_p50_ms']:,.1f} | {r['latency_p99_ms']:,.1f} |")
    lines += ["", "| queue | worker processes | jobs | wall (s) | jobs/s | of linear |", "|:---|---:|---:|---:|---:|---:|"]
    for queue, rows in results["scale_out"].items():
        for r in rows:
            lines.append(f"| {queue} | {r['workers']} | {r['jobs']} | {r['wall_s']:.1f} | {r['jobs_per_s']:.2f} "
                         f"| {r['ratio_to_linear']:.2f} |")
    lines += ["", "| response cache | calls, clean run | before the kill | after it | repeated | attempts |",
              "|:---|---:|---:|---:|---:|---:|"]
    for r in results["kill"]:
        lines.append(f"| {'on' if r['cache'] else 'off (checkpoint only)'} | {r['clean_calls']} | {r['calls_before_kill']} "
                     f"| {r['calls_after_kill']} | {r['repeated']} | {r['attempts']} |")
    return "\n".join(lines)


def run(jobs: int = 10_000, claimers: int = 4, workers: tuple[int, ...] = (1, 2, 4), scale_jobs: int = 12,
        delay_ms: int = 50, build_first: bool = True) -> dict:
    if build_first:
        build()
    results: dict = {"meta": {"date": time.strftime("%Y-%m-%d"), "cpus": os.cpu_count(), "delay_ms": delay_ms},
                     "queue_overhead": [], "scale_out": {}, "kill": []}
    redis = Redis() if shutil.which("redis-server") else None
    try:
        for rate in (None, PACED_RATE):
            with tempfile.TemporaryDirectory() as tmp:
                results["queue_overhead"].append(queue_overhead(f"sqlite:{tmp}/q.sqlite", jobs, claimers, rate))
            if redis:
                redis.flush()
                results["queue_overhead"].append(queue_overhead(redis.url, jobs, claimers, rate))
        with Server([RELEASE / "fake-openai", "--port", "0", "--threads", "2", "--delay-ms", str(delay_ms)]) as fake:
            results["scale_out"]["embedded"] = scale_out(fake, list(workers), scale_jobs, 8, 3, None)
            if redis:
                redis.flush()
                results["scale_out"]["Redis"] = scale_out(fake, list(workers), scale_jobs, 8, 3, redis.url)
            for cache in (True, False):
                results["kill"].append(kill_recovery(fake, 10, 8, 4, cache))
    finally:
        if redis:
            redis.close()
    RESULTS.parent.mkdir(parents=True, exist_ok=True)
    RESULTS.write_text(json.dumps(results, indent=2) + "\n")
    return results
