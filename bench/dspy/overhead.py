"""DSPy side of the overhead benchmark: evaluate one Predict program over a JSONL file against an
instant OpenAI-compatible server and report throughput and client CPU of the evaluation phase.

    python overhead.py --data FILE --api-base http://127.0.0.1:PORT/v1 --threads 1 --cache off

`--cache off` sends every request (`dspy.LM(cache=False)`); `--cache memory` first fills DSPy's
in-memory cache with one untimed pass, then times a second pass that is answered from it.
"""

from __future__ import annotations

import argparse
import time

import common  # noqa: F401  (sets environment variables before DSPy is imported)
from common import Stopwatch, cpu_seconds, emit, lm_usage, peak_rss_mb
from tasks import TASKS, read_jsonl, score

IMPORT_WALL0 = time.perf_counter()
IMPORT_CPU0 = cpu_seconds()
import dspy  # noqa: E402
import dspy.clients.base_lm as base_lm  # noqa: E402

IMPORT_WALL = time.perf_counter() - IMPORT_WALL0
IMPORT_CPU = cpu_seconds() - IMPORT_CPU0


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--data", required=True, help="JSONL file with `text` and `label`")
    parser.add_argument("--api-base", required=True)
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--cache", choices=["off", "memory"], default="off")
    args = parser.parse_args()

    task = TASKS["sst2"]
    rows = read_jsonl(args.data)
    devset = [dspy.Example(text=row["text"], label=row["label"]).with_inputs("text") for row in rows]

    if args.cache == "memory":
        dspy.configure_cache(enable_disk_cache=False, enable_memory_cache=True)
    lm = dspy.LM("openai/bench", api_base=args.api_base, api_key="none", cache=args.cache != "off")
    dspy.configure(lm=lm)
    base_lm.MAX_HISTORY_SIZE = 10**9

    signature = dspy.Signature("text -> label", task.instructions)
    program = dspy.Predict(signature)

    def metric(example, prediction, trace=None):
        return score(task, example.label, getattr(prediction, "label", None))

    evaluate = dspy.Evaluate(
        devset=devset,
        metric=metric,
        num_threads=args.threads,
        display_progress=False,
        max_errors=len(devset) + 1,
    )
    if args.cache == "memory":
        evaluate(program)  # fills the cache; not timed
    base_lm.GLOBAL_HISTORY.clear()
    with Stopwatch() as timed:
        result = evaluate(program)
    usage = lm_usage(base_lm.GLOBAL_HISTORY)
    n = len(devset)
    emit(
        {
            "framework": "dspy",
            "dspy_version": dspy.__version__,
            "threads": args.threads,
            "cache": args.cache,
            "examples": n,
            "score": result.score / 100.0,
            "eval_wall_s": timed.wall_s,
            "eval_cpu_s": timed.cpu_s,
            "evals_per_s": n / timed.wall_s,
            "cpu_ms_per_eval": 1000.0 * timed.cpu_s / n,
            "import_wall_s": IMPORT_WALL,
            "import_cpu_s": IMPORT_CPU,
            "peak_rss_mb": peak_rss_mb(),
            **usage,
        }
    )


if __name__ == "__main__":
    main()
