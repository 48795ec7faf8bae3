"""The tracking-overhead experiment: the same optimization against the instant OpenAI-compatible
server (`fake-openai`), timed with MLflow tracking off and on, for promptopt and for DSPy.

promptopt runs its real command, `promptopt optimize REQUEST --json --no-cache`, in three settings:
`DISABLE_MLFLOW=1` (off), neither variable set (the embedded store under a fresh `PROMPTOPT_HOME`) and
`MLFLOW_TRACKING_URI` pointing at a real MLflow 3.18.0 server (`scripts/mlflow-server.sh`, SQLite backend,
artifacts proxied by the server). DSPy 3.4.1 runs the same optimizer on the same data
(`bench/dspy/tracking_overhead.py`, from `bench/.venv-tracking`) without MLflow and with
`mlflow.dspy.autolog()` in three configurations, tracking to the same server. The settings of each
framework are interleaved, each run is a fresh process, and what each tracked run recorded is read back
from the server.
"""

from __future__ import annotations

import json
import os
import subprocess
import time
import urllib.parse
import urllib.request
from pathlib import Path

from . import paths
from .overhead import machine_meta
from .procs import Server, run_measured
from .report import markdown_table
from .stats import median

TRACKING_PYTHON = paths.BENCH / ".venv-tracking" / "bin" / "python"
MLFLOW_SCRIPT = paths.REPO / "scripts" / "mlflow-server.sh"
RESULTS_JSON = paths.RESULTS / "tracking.json"
WORK = paths.OUT / "tracking"

PROMPTOPT_MODES = ("off", "embedded", "server")
DSPY_MODES = ("off", "autolog", "autolog-full", "autolog-traces")
CONCURRENCY = 8
# The same instructions as `bench/dspy/tasks.py` gives DSPy for SST-2.
INSTRUCTIONS = "Classify the sentiment of the sentence. Answer with one word: positive or negative."

LABELS = {
    ("promptopt", "off"): "promptopt, `DISABLE_MLFLOW=1`",
    ("promptopt", "embedded"): "promptopt, embedded store",
    ("promptopt", "server"): "promptopt, MLflow server",
    ("dspy", "off"): "DSPy, no MLflow",
    ("dspy", "autolog"): "DSPy, `autolog()`",
    ("dspy", "autolog-full"): "DSPy, `autolog(log_compiles, log_evals)`",
    ("dspy", "autolog-traces"): "DSPy, the same + `log_traces_from_compile`",
}


def request() -> dict:
    """promptopt's side of the workload: BootstrapFewShotWithRandomSearch as DSPy runs it (zero-shot,
    labeled, in-order and 6 shuffled bootstraps: 9 candidates scored on the 100 validation examples).
    `balance_labels` is off because DSPy has no such step: with the instant server answering
    `positive` to everything, keeping the demos' labels even would try every training example."""
    return {
        "name": "sst2-tracking-bench",
        "target": "few_shot_examples",
        "objective": "maximize_accuracy",
        "evaluation_metric": "accuracy",
        "algorithm": "bootstrapfewshot_random_search",
        "model": "openai/bench",
        "seed": 0,
        "training_examples": str(paths.DATA / "sst2" / "train.jsonl"),
        "validation_examples": str(paths.DATA / "sst2" / "dev.jsonl"),
        "input_keys": ["text"],
        "output_keys": ["label"],
        "instructions": INSTRUCTIONS,
        "concurrency": CONCURRENCY,
        "max_iterations": 20,
        "timeout_seconds": 600,
        "algorithm_config": {
            "max_bootstrapped_demos": 4,
            "max_labeled_demos": 4,
            "num_candidate_programs": 6,
            "balance_labels": False,
        },
    }


def build() -> Path:
    """Builds `promptopt` and `fake-openai` in release mode; returns the directory of the binaries."""
    subprocess.run(["cargo", "build", "--release", "-p", "promptopt-cli", "-p", "promptopt-bench",
                    "--bin", "promptopt", "--bin", "fake-openai"], cwd=paths.REPO, check=True)
    return paths.target_dir("release")


class MlflowServer:
    """A real MLflow tracking server (`scripts/mlflow-server.sh`, from `.venv-ci`), stopped on exit."""

    def __init__(self, folder: Path):
        self.folder = folder
        out = subprocess.run([MLFLOW_SCRIPT, "start", folder], capture_output=True, text=True)
        if out.returncode != 0:
            raise RuntimeError(f"The MLflow server did not start:\n{out.stderr.strip()}\n"
                               "(it needs .venv-ci with MLflow: scripts/python-venv.sh)")
        self.url = out.stdout.strip().splitlines()[-1]

    def requests_served(self) -> int:
        """HTTP requests the server has logged so far."""
        log = self.folder / "server.log"
        return sum(1 for line in log.read_text(errors="replace").splitlines() if "HTTP/1.1\"" in line)

    def get(self, endpoint: str, **query) -> dict:
        url = f"{self.url}{endpoint}?{urllib.parse.urlencode(query)}"
        with urllib.request.urlopen(url, timeout=30) as resp:
            return json.loads(resp.read())

    def post(self, endpoint: str, body: dict) -> dict:
        req = urllib.request.Request(self.url + endpoint, data=json.dumps(body).encode(), method="POST",
                                     headers={"content-type": "application/json"})
        with urllib.request.urlopen(req, timeout=30) as resp:
            return json.loads(resp.read())

    def close(self) -> None:
        subprocess.run([MLFLOW_SCRIPT, "stop", self.folder], check=False)

    def __enter__(self) -> "MlflowServer":
        return self

    def __exit__(self, *exc) -> None:
        self.close()


def describe_run(server: MlflowServer, run_id: str) -> dict:
    """What one run holds on the server: parameters, tags, metric keys and values (every step of
    every series), artifact files and bytes, nested runs (their records added in), registered model
    versions."""
    run = server.get("/api/2.0/mlflow/runs/get", run_id=run_id)["run"]
    data = run["data"]
    children = server.post("/api/2.0/mlflow/runs/search", {
        "experiment_ids": [run["info"]["experiment_id"]],
        "filter": f"tags.mlflow.parentRunId = '{run_id}'",
        "max_results": 1000,
    }).get("runs", [])
    figures = {"params": len(data.get("params", [])), "tags": len(data.get("tags", [])),
               "metric_keys": 0, "metric_values": 0, "artifacts": 0, "artifact_bytes": 0,
               "nested_runs": len(children)}
    for r in [run, *children]:
        rid = r["info"]["run_id"]
        keys = [m["key"] for m in r["data"].get("metrics", [])]
        figures["metric_keys"] += len(keys)
        for key in keys:
            history = server.get("/api/2.0/mlflow/metrics/get-history", run_id=rid, metric_key=key,
                                 max_results=25000)
            figures["metric_values"] += len(history.get("metrics", []))
        files, size = list_artifacts(server, rid)
        figures["artifacts"] += files
        figures["artifact_bytes"] += size
    versions = server.get("/api/2.0/mlflow/model-versions/search", filter=f"run_id='{run_id}'")
    figures["model_versions"] = len(versions.get("model_versions", []))
    return figures


def list_artifacts(server: MlflowServer, run_id: str, path: str = "") -> tuple[int, int]:
    """Files and bytes under a run's artifact `path`, recursively."""
    query = {"run_id": run_id, **({"path": path} if path else {})}
    files = size = 0
    for entry in server.get("/api/2.0/mlflow/artifacts/list", **query).get("files", []):
        if entry.get("is_dir"):
            f, s = list_artifacts(server, run_id, entry["path"])
            files, size = files + f, size + s
        else:
            files, size = files + 1, size + int(entry.get("file_size") or 0)
    return files, size


def count_traces(server: MlflowServer, experiment_id: str) -> int:
    """Traces stored in an experiment."""
    count, token = 0, None
    while True:
        query = {"experiment_ids": experiment_id, "max_results": 500, **({"page_token": token} if token else {})}
        page = server.get("/api/2.0/mlflow/traces", **query)
        count += len(page.get("traces", []))
        token = page.get("next_page_token")
        if not token:
            return count


def describe_local_run(home: Path, run_id: str) -> dict:
    """What one run holds in the embedded store (MLflow's file layout): metric values, files."""
    found = next((p for p in (home / "mlruns").glob(f"*/{run_id}") if p.is_dir()), None)
    if found is None:
        return {}
    metric_files = [p for p in (found / "metrics").rglob("*") if p.is_file()]
    artifacts = [p for p in (found / "artifacts").rglob("*") if p.is_file()]
    return {
        "params": sum(1 for p in (found / "params").rglob("*") if p.is_file()),
        "tags": sum(1 for p in (found / "tags").rglob("*") if p.is_file()),
        "metric_keys": len(metric_files),
        "metric_values": sum(len(p.read_text().splitlines()) for p in metric_files),
        "artifacts": len(artifacts),
        "artifact_bytes": sum(p.stat().st_size for p in artifacts),
    }


def run_promptopt(binary: Path, fake_url: str, mlflow_url: str, mode: str, home: Path, req: Path) -> dict:
    env = {k: v for k, v in os.environ.items() if k not in ("DISABLE_MLFLOW", "MLFLOW_TRACKING_URI")}
    env.update({"OPENAI_BASE_URL": fake_url + "/v1", "OPENAI_API_KEY": "none", "PROMPTOPT_HOME": str(home)})
    if mode == "off":
        env["DISABLE_MLFLOW"] = "1"
    elif mode == "server":
        env["MLFLOW_TRACKING_URI"] = mlflow_url
    # No time limit: with one, `run_measured` polls for the child's exit every 20 ms, too coarse for a
    # command of a few tens of milliseconds; without, it blocks in `wait4` and the wall time is exact.
    measured = run_measured([binary, "optimize", req, "--json", "--no-cache"], env=env).check()
    result = json.loads(measured.stdout[measured.stdout.index("{"):])
    analytics = result.get("analytics") or {}
    return {
        "framework": "promptopt", "mode": mode, "home": str(home),
        "wall_s": measured.wall_s, "cpu_s": measured.cpu_s, "peak_rss_mb": measured.peak_rss_mb,
        "pipeline_s": result["duration_seconds"],
        "stages_s": {s["stage"]: s["seconds"] for s in analytics.get("stages", [])},
        "lm_calls": analytics.get("lm_calls"), "score": result["optimized_metrics"]["score"],
        "mlflow_run_id": result.get("mlflow_run_id"), "warnings": result.get("warnings", []),
    }


def run_dspy(fake_url: str, mlflow_url: str, mode: str) -> dict:
    env = {**os.environ, "LITELLM_LOCAL_MODEL_COST_MAP": "True", "PYTHONUNBUFFERED": "1"}
    env.pop("MLFLOW_TRACKING_URI", None)
    argv = [TRACKING_PYTHON, paths.DSPY_DIR / "tracking_overhead.py", "--api-base", fake_url + "/v1",
            "--mode", mode, "--tracking-uri", mlflow_url]
    measured = run_measured(argv, env=env, timeout_s=1800).check()
    record = json.loads(measured.last_json_line())
    record["process_wall_s"] = measured.wall_s
    record["process_cpu_s"] = measured.cpu_s
    record["process_peak_rss_mb"] = measured.peak_rss_mb
    return record


def rotated(modes: tuple[str, ...], i: int) -> list[str]:
    """The modes starting at a different one each repeat, so that none always runs first."""
    k = i % len(modes)
    return list(modes[k:] + modes[:k])


def check(records: list[dict]) -> list[str]:
    """Every run did the same work, tracked runs have a run id and no warning, untracked ones none."""
    problems = []
    for framework in ("promptopt", "dspy"):
        calls = {r["lm_calls"] for r in records if r["framework"] == framework}
        if len(calls) > 1:
            problems.append(f"{framework} runs made different numbers of LM calls: {sorted(calls)}")
    for r in records:
        tracked = r["mode"] not in ("off", "autolog")
        if tracked != bool(r.get("mlflow_run_id")):
            problems.append(f"{r['framework']} {r['mode']}: MLflow run id {r.get('mlflow_run_id')!r}")
        if r.get("warnings"):
            problems.append(f"{r['framework']} {r['mode']}: warnings {r['warnings']}")
    return problems


def run(repeats: int, dspy_repeats: int, dspy_modes=DSPY_MODES, build_first: bool = True, log=print) -> dict:
    """Runs the whole experiment and returns its results (not yet written anywhere)."""
    bins = build() if build_first else paths.target_dir("release")
    if dspy_repeats and not TRACKING_PYTHON.exists():
        raise RuntimeError(f"{TRACKING_PYTHON} is missing: run bench/setup-tracking-venv.sh")
    WORK.mkdir(parents=True, exist_ok=True)
    req = WORK / "request.json"
    req.write_text(json.dumps(request(), indent=1), encoding="utf-8")
    homes = WORK / "homes"
    subprocess.run(["rm", "-rf", homes, WORK / "mlflow"], check=True)
    records: list[dict] = []
    recorded: dict[str, dict] = {}
    with Server([bins / "fake-openai", "--port", "0"]) as fake, MlflowServer(WORK / "mlflow") as mlflow:
        log(f"fake server at {fake.url}, MLflow server at {mlflow.url}")

        def promptopt(mode: str, tag: str) -> dict:
            return run_promptopt(bins / "promptopt", fake.url, mlflow.url, mode, homes / f"{mode}-{tag}", req)

        for mode in PROMPTOPT_MODES:  # warm-up (page cache, the server's experiment), not timed
            promptopt(mode, "warmup")
        served0 = mlflow.requests_served()
        for i in range(repeats):
            for mode in rotated(PROMPTOPT_MODES, i):
                records.append(promptopt(mode, str(i)))
                log(f"promptopt {mode}: {records[-1]['wall_s']:.3f} s")
        time.sleep(0.5)  # the server logs a request after answering it
        per_run = (mlflow.requests_served() - served0) / repeats
        last = {r["mode"]: r for r in records if r["framework"] == "promptopt"}
        recorded["promptopt/server"] = describe_run(mlflow, last["server"]["mlflow_run_id"])
        recorded["promptopt/server"]["server_requests"] = per_run
        recorded["promptopt/embedded"] = describe_local_run(Path(last["embedded"]["home"]),
                                                            last["embedded"]["mlflow_run_id"])

        if dspy_repeats:
            for mode in ("off", "autolog"):  # warm-up (imports), not timed
                run_dspy(fake.url, mlflow.url, mode)
            for i in range(dspy_repeats):
                for mode in rotated(tuple(dspy_modes), i):
                    records.append(run_dspy(fake.url, mlflow.url, mode))
                    log(f"DSPy {mode}: {records[-1]['wall_s']:.3f} s")
            last = {r["mode"]: r for r in records if r["framework"] == "dspy"}
            for mode in ("autolog-full", "autolog-traces"):
                if mode in last:
                    recorded[f"dspy/{mode}"] = describe_run(mlflow, last[mode]["mlflow_run_id"])
            experiment = mlflow.get("/api/2.0/mlflow/experiments/get-by-name",
                                    experiment_name="dspy-tracking-bench")["experiment"]["experiment_id"]
            traced = sum(1 for r in records if r["framework"] == "dspy" and r["mode"] == "autolog-traces")
            if traced:
                # Only `autolog-traces` traces anything during compile(); the warm-up runs trace nothing.
                recorded["dspy/autolog-traces"]["traces"] = count_traces(mlflow, experiment) / traced
    return {
        "meta": machine_meta() | {"repeats": repeats, "dspy_repeats": dspy_repeats, "concurrency": CONCURRENCY,
                                  "mlflow_server": "MLflow 3.18.0, SQLite backend, proxied artifacts, 1 worker"},
        "request": request(),
        "runs": records,
        "recorded": recorded,
    }


def summary(results: dict) -> list[dict]:
    """Median and min wall time per framework and mode, and the overhead against the same
    framework without tracking."""
    rows = []
    runs = results["runs"]
    for framework, modes in (("promptopt", PROMPTOPT_MODES), ("dspy", DSPY_MODES)):
        base = [r for r in runs if r["framework"] == framework and r["mode"] == "off"]
        for mode in modes:
            mine = [r for r in runs if r["framework"] == framework and r["mode"] == mode]
            if not mine:
                continue
            walls = [r["wall_s"] for r in mine]
            row = {
                "framework": framework, "mode": mode, "n": len(mine), "lm_calls": mine[0]["lm_calls"],
                "median_s": median(walls), "min_s": min(walls),
                "cpu_s": median(r["cpu_s"] for r in mine),
            }
            if framework == "promptopt":
                row["pipeline_s"] = median(r["pipeline_s"] for r in mine)
                row["outside_s"] = median(r["wall_s"] - r["pipeline_s"] for r in mine)
            else:
                row["setup_s"] = median(r["setup_s"] for r in mine)
                row["dspy_import_s"] = median(r["dspy_import_s"] for r in mine)
                row["mlflow_import_s"] = median(r["mlflow_import_s"] for r in mine)
            if base:
                row["overhead_median_pct"] = 100.0 * (row["median_s"] / median(r["wall_s"] for r in base) - 1)
                row["overhead_min_pct"] = 100.0 * (row["min_s"] / min(r["wall_s"] for r in base) - 1)
                row["extra_median_s"] = row["median_s"] - median(r["wall_s"] for r in base)
            rows.append(row)
    return rows


def _pct(value: float | None) -> str:
    return "–" if value is None else f"{value:+.1f} %"


def _records(figures: dict | None) -> str:
    if not figures:
        return "nothing"
    parts = [f"{figures['metric_values']:,} metric values ({figures['metric_keys']} series)",
             f"{figures['params']} params", f"{figures['artifacts']} artifacts"]
    if figures.get("nested_runs"):
        parts.append(f"{figures['nested_runs']} nested runs")
    if figures.get("model_versions"):
        parts.append(f"{figures['model_versions']} model version")
    if figures.get("traces"):
        parts.append(f"{figures['traces']:,.0f} traces")
    return ", ".join(parts)


def tables(results: dict) -> str:
    """The generated part of the document: setup line, the side-by-side table, what was recorded."""
    meta = results["meta"]
    recorded = results.get("recorded", {})
    rows = []
    for row in summary(results):
        key = f"{row['framework']}/{row['mode']}"
        what = _records(recorded.get(key)) if row["mode"] not in ("off", "autolog") else "nothing"
        if key == "promptopt/embedded":
            what = _records(recorded.get(key)) + " (files)"
        rows.append([
            LABELS[(row["framework"], row["mode"])], row["n"], f"{row['lm_calls']:,}",
            f"{row['median_s']:.3f}", f"{row['min_s']:.3f}",
            _pct(row.get("overhead_median_pct")) if row["mode"] != "off" else "–",
            _pct(row.get("overhead_min_pct")) if row["mode"] != "off" else "–",
            f"{row['extra_median_s'] * 1000:+,.0f}" if row["mode"] != "off" else "–",
            f"{row['cpu_s']:.2f}", what,
        ])
    head = (f"Measured {meta['date']} on {meta['cpus']} CPUs ({meta['cpu_model']}), {meta['system']}, commit "
            f"`{meta['commit']}`; {meta['mlflow_server']}; {meta['repeats']} runs per promptopt setting and "
            f"{meta['dspy_repeats']} per DSPy setting, interleaved, nothing pinned. CPU is the client "
            f"process's own (promptopt: the whole command; DSPy: its timed section).")
    table = markdown_table(
        ["client, tracking", "runs", "LM calls", "wall median (s)", "wall min (s)", "overhead (median)",
         "overhead (min)", "extra (ms, median)", "CPU (s, median)", "recorded per run"],
        rows, align="lrrrrrrrrl")
    pipeline = [r for r in summary(results) if r["framework"] == "promptopt"]
    split = markdown_table(
        ["promptopt, tracking", "whole command (s)", "optimization stages (s)", "outside the stages (s)"],
        [[LABELS[("promptopt", r["mode"])], f"{r['median_s']:.3f}", f"{r['pipeline_s']:.3f}",
          f"{r['outside_s']:.3f}"] for r in pipeline],
        align="lrrr")
    server = recorded.get("promptopt/server", {})
    notes = []
    if server.get("server_requests"):
        notes.append(f"A promptopt run sent {server['server_requests']:.0f} HTTP requests to the server "
                     f"({server['artifact_bytes']:,} bytes of artifacts).")
    dspy_rows = [r for r in summary(results) if r["framework"] == "dspy"]
    if any(r["mode"] != "off" for r in dspy_rows):
        setups = ", ".join(f"{LABELS[('dspy', r['mode'])].removeprefix('DSPy, ')} {r['setup_s']:.3f} s"
                           for r in dspy_rows if r["mode"] != "off")
        imported = [r["mlflow_import_s"] for r in dspy_rows if r["mode"] != "off"]
        notes.append(f"DSPy's wall time is the timed section of `bench/dspy/tracking_overhead.py`: tracking set-up, "
                     f"`compile()` and the flush of MLflow's trace queue. Of it, the set-up (`set_tracking_uri`, "
                     f"`set_experiment`, `autolog`) took (median) {setups}. Not in it: `import dspy` "
                     f"({median(r['dspy_import_s'] for r in dspy_rows):.2f} s) and, with autolog, `import mlflow` "
                     f"({median(imported):.2f} s), paid once per process.")
    split_text = f"Medians of promptopt's own timing (`duration_seconds` of the result):\n\n{split}"
    return "\n\n".join([head, table, split_text, *notes])


def save(results: dict, path: Path = RESULTS_JSON) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(results, indent=1, sort_keys=True) + "\n", encoding="utf-8")

