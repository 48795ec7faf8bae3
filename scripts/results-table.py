#!/usr/bin/env python3
"""Prints a Markdown table of optimization runs from their `result.json` files.

    scripts/results-table.py RUN_DIR [RUN_DIR ...]

Each RUN_DIR is a `promptopt optimize --output RUN_DIR` folder. Columns: the run (its saved
model name), validation and test scores (baseline -> optimized), LM calls and tokens of the
optimization stage, LM calls of the whole run, the optimization stage's wall time and the
whole run's.
"""
import json
import sys
from pathlib import Path


def stage(analytics: dict, name: str) -> dict:
    for s in analytics.get("stages", []):
        if s["stage"] == name:
            return s
    return {"seconds": 0.0, "lm_calls": 0, "tokens": 0}


def row(run_dir: Path) -> str:
    result = json.loads((run_dir / "result.json").read_text())
    analytics = result.get("analytics") or {}
    opt = stage(analytics, "optimize")
    b, o = result["baseline_metrics"], result["optimized_metrics"]
    test = result.get("test_metrics")
    test_cell = (
        f"{test['baseline']['score']:.3f} → **{test['optimized']['score']:.3f}** ({test['examples']})"
        if test
        else "–"
    )
    name = (result.get("model_id") or run_dir.name).split("@")[0]
    return (
        f"| {name} | {result['algorithm_used']} | {b['score']:.3f} → {o['score']:.3f} | {test_cell} "
        f"| {opt['lm_calls']} ({opt['tokens']:,} tok) | {analytics.get('lm_calls', '–')} "
        f"| {opt['seconds']:.0f} s | {result['duration_seconds']:.0f} s |"
    )


def main(argv: list[str]) -> int:
    if not argv:
        print(__doc__.strip(), file=sys.stderr)
        return 2
    print("| run | algorithm | validation | test | LM calls (optimize) | LM calls (run) | optimize wall | run wall |")
    print("|---|---|---|---|---|---|---|---|")
    for arg in argv:
        path = Path(arg)
        if not (path / "result.json").is_file():
            print(f"error: `{path / 'result.json'}` does not exist", file=sys.stderr)
            return 1
        print(row(path))
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
