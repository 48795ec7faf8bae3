"""DSPy side of the tracking-overhead benchmark: one optimization against the instant
OpenAI-compatible server (`fake-openai`), with and without MLflow's DSPy autologging.

    python tracking_overhead.py --api-base http://127.0.0.1:PORT/v1 --mode off
    python tracking_overhead.py --api-base URL --mode autolog-full --tracking-uri http://127.0.0.1:5000
    python tracking_overhead.py --api-base URL --tracking-uri URI --repeats 5   # every mode, summary

The workload mirrors promptopt's request in `bench/harness/tracking.py`: BootstrapFewShotWithRandomSearch
over one `text -> label` Predict with the SST-2 instructions, the 200 training and 100 validation
examples of `bench/data/sst2`, up to 4 bootstrapped and 4 labeled demos, 6 shuffled candidates (9
candidate programs scored on the 100 validation examples), 8 threads, no response cache.

Modes:
- `off`: MLflow is not imported.
- `autolog`: `mlflow.dspy.autolog()` with its defaults. It traces ordinary calls, but turns tracing off
  inside `compile()` and logs no run for it, so an optimization records nothing.
- `autolog-full`: `mlflow.dspy.autolog(log_compiles=True, log_evals=True)`: a run per `compile()` with
  its parameters, the LM's state, the datasets, the best program, and per candidate evaluation a
  nested run with its score and result table, and the score as a step of the parent's metric. This is
  the closest to what promptopt records of a run.
- `autolog-traces`: as `autolog-full`, plus `log_traces_from_compile=True`: a trace of every module
  and LM call made during `compile()`.

The timed section starts after the imports of DSPy (and MLflow) and covers the set-up of tracking
(`set_tracking_uri`, `set_experiment`, `autolog`), `compile()`, and the flush of MLflow's
asynchronous trace export, so every record has been sent when the clock stops. `import mlflow` is
timed separately (`mlflow_import_s`). One run prints one JSON line; `--repeats N` runs every mode N
times, each in a fresh process, the modes interleaved, and prints a summary.
"""

from __future__ import annotations

import argparse
import json
import statistics
import subprocess
import sys
import time
from pathlib import Path

import common  # noqa: F401  (sets environment variables before DSPy is imported)
from common import Stopwatch, cpu_seconds, emit, lm_usage, peak_rss_mb
from tasks import TASKS, load_split, score

MODES = ("off", "autolog", "autolog-full", "autolog-traces")
NUM_CANDIDATE_PROGRAMS = 6
MAX_BOOTSTRAPPED_DEMOS = 4
MAX_LABELED_DEMOS = 4
THREADS = 8
EXPERIMENT = "dspy-tracking-bench"


def run_once(args) -> dict:
    wall0 = time.perf_counter()
    import dspy  # noqa: E402
    import dspy.clients.base_lm as base_lm  # noqa: E402

    dspy_import_s = time.perf_counter() - wall0
    mlflow_import_s = 0.0
    mlflow = None
    if args.mode != "off":
        t0 = time.perf_counter()
        import mlflow  # noqa: E402
        import mlflow.dspy  # noqa: E402, F401

        mlflow_import_s = time.perf_counter() - t0

    task = TASKS["sst2"]

    def examples(split: str) -> list:
        return [dspy.Example(text=r["text"], label=r["label"]).with_inputs("text") for r in load_split(task, split)]

    trainset, valset = examples("train"), examples("dev")
    lm = dspy.LM("openai/bench", api_base=args.api_base, api_key="none", cache=False)
    dspy.configure(lm=lm)
    base_lm.MAX_HISTORY_SIZE = 10**9

    def metric(example, prediction, trace=None):
        return score(task, example.label, getattr(prediction, "label", None))

    program = dspy.Predict(dspy.Signature("text -> label", task.instructions))
    base_lm.GLOBAL_HISTORY.clear()
    run_id = None
    setup_s = 0.0
    with Stopwatch() as timed:
        if mlflow is not None:
            mlflow.set_tracking_uri(args.tracking_uri)
            mlflow.set_experiment(EXPERIMENT)
            if args.mode == "autolog":
                mlflow.dspy.autolog(silent=True)
            else:
                mlflow.dspy.autolog(log_compiles=True, log_evals=True,
                                    log_traces_from_compile=args.mode == "autolog-traces", silent=True)
            setup_s = time.perf_counter() - timed.wall0
        optimizer = dspy.BootstrapFewShotWithRandomSearch(
            metric=metric,
            max_bootstrapped_demos=MAX_BOOTSTRAPPED_DEMOS,
            max_labeled_demos=MAX_LABELED_DEMOS,
            num_candidate_programs=NUM_CANDIDATE_PROGRAMS,
            num_threads=THREADS,
        )
        compiled = optimizer.compile(program, trainset=trainset, valset=valset)
        compile_end = time.perf_counter()
        if mlflow is not None:
            last = mlflow.last_active_run()
            run_id = last.info.run_id if last is not None else None
            mlflow.flush_trace_async_logging(terminate=False)
        flush_s = time.perf_counter() - compile_end
    usage = lm_usage(base_lm.GLOBAL_HISTORY)
    return {
        "framework": "dspy",
        "dspy_version": dspy.__version__,
        "mlflow_version": mlflow.__version__ if mlflow is not None else None,
        "mode": args.mode,
        "threads": THREADS,
        "wall_s": timed.wall_s,
        "setup_s": setup_s,
        "flush_s": flush_s,
        "cpu_s": timed.cpu_s,
        "process_cpu_s": cpu_seconds(),
        "dspy_import_s": dspy_import_s,
        "mlflow_import_s": mlflow_import_s,
        "peak_rss_mb": peak_rss_mb(),
        "demos": len(compiled.demos),
        "candidate_scores": [round(c["score"], 4) for c in getattr(compiled, "candidate_programs", [])],
        "mlflow_run_id": run_id,
        **usage,
    }


def summarize(records: list[dict]) -> dict:
    by_mode: dict[str, dict] = {}
    for mode in dict.fromkeys(r["mode"] for r in records):
        walls = [r["wall_s"] for r in records if r["mode"] == mode]
        by_mode[mode] = {"median_wall_s": statistics.median(walls), "min_wall_s": min(walls),
                         "wall_s": walls, "lm_calls": [r["lm_calls"] for r in records if r["mode"] == mode]}
    off = by_mode.get("off")
    if off:
        for mode, figures in by_mode.items():
            figures["overhead_median_pct"] = 100.0 * (figures["median_wall_s"] / off["median_wall_s"] - 1)
            figures["overhead_min_pct"] = 100.0 * (figures["min_wall_s"] / off["min_wall_s"] - 1)
    return by_mode


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--api-base", required=True, help="the instant server's URL, ending in /v1")
    parser.add_argument("--mode", choices=MODES, default="off")
    parser.add_argument("--tracking-uri", help="MLflow tracking server for the autolog modes")
    parser.add_argument("--repeats", type=int, default=0,
                        help="run every mode this many times, each in a fresh process, and print a summary")
    parser.add_argument("--modes", default=",".join(MODES), help="modes for --repeats (comma-separated)")
    args = parser.parse_args()
    modes = [m for m in args.modes.split(",") if m]
    if (args.repeats and any(m != "off" for m in modes) or not args.repeats and args.mode != "off") \
            and not args.tracking_uri:
        parser.error("--tracking-uri is required for the autolog modes")
    if not args.repeats:
        emit(run_once(args))
        return
    records = []
    for i in range(args.repeats):
        # Rotate the order, so that no mode always runs first (or right after another one).
        for mode in modes[i % len(modes):] + modes[: i % len(modes)]:
            argv = [sys.executable, str(Path(__file__).resolve()), "--api-base", args.api_base, "--mode", mode]
            if args.tracking_uri:
                argv += ["--tracking-uri", args.tracking_uri]
            out = subprocess.run(argv, check=True, capture_output=True, text=True).stdout
            records.append(json.loads(out.strip().splitlines()[-1]))
            print(f"{mode}: {records[-1]['wall_s']:.3f} s", file=sys.stderr)
    print(json.dumps({"runs": records, "summary": summarize(records)}, indent=1))


if __name__ == "__main__":
    main()
