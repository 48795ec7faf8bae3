#!/usr/bin/env python3
"""Prints a Markdown table of optimization runs from their `result.json` files.

    scripts/results-table.py RUN_DIR [RUN_DIR ...]
    scripts/results-table.py --seeds RUN_DIR [RUN_DIR ...]

Each RUN_DIR is a `promptopt optimize --output RUN_DIR` folder. Columns: the run (its saved
model name), validation and test scores (baseline -> optimized), LM calls and tokens of the
optimization stage, LM calls of the whole run, the optimization stage's wall time and the
whole run's.

With `--seeds`, folders named `<request>-s<seed>` (as `scripts/remeasure.sh` writes them) are
grouped by request: one row per request with the mean ± standard deviation over its seeds of the
validation and test scores, the mean LM calls, tokens and wall times; then, for every run, the
winner's instruction of each stage and its number of demos, so that a reader can judge them.
"""
import json
import re
import statistics
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


def mean_sd(values: list[float]) -> str:
    """`mean ± sd` with three decimals (the sample standard deviation; no spread for one value)."""
    if not values:
        return "–"
    if len(values) == 1:
        return f"{values[0]:.3f}"
    return f"{statistics.mean(values):.3f} ± {statistics.stdev(values):.3f}"


def seed_of(run_dir: Path) -> tuple[str, int] | None:
    match = re.fullmatch(r"(.+)-s(\d+)", run_dir.name)
    if not match:
        return None
    return match.group(1), int(match.group(2))


def winner(result: dict) -> list[str]:
    """One line per stage of the winner: its instruction on one line, and its demos."""
    lines = []
    predictors = (result.get("optimized_config") or {}).get("predictors", {})
    for stage_name, predictor in predictors.items():
        instruction = " ".join(predictor.get("instructions", "").split())
        demos = len(predictor.get("demos", []))
        tools = predictor.get("tools") or []
        extra = f", tools: {', '.join(tools)}" if tools else ""
        lines.append(f"`{stage_name}` ({demos} demos{extra}): \"{instruction}\"")
    return lines


def seeds_table(run_dirs: list[Path]) -> int:
    groups: dict[str, list[tuple[int, dict]]] = {}
    for run_dir in run_dirs:
        parsed = seed_of(run_dir)
        if parsed is None:
            print(f"error: `{run_dir}` is not named `<request>-s<seed>`", file=sys.stderr)
            return 1
        name, seed = parsed
        groups.setdefault(name, []).append((seed, json.loads((run_dir / "result.json").read_text())))
    print(
        "| request | algorithm | seeds | validation (baseline) | validation (winner) | test (baseline) "
        "| test (winner) | LM calls (optimize) | tokens (optimize) | optimize wall | run wall |"
    )
    print("|---|---|---:|---|---|---|---|---:|---:|---:|---:|")
    for name, runs in groups.items():
        runs.sort(key=lambda r: r[0])
        results = [r for _, r in runs]
        tests = [r["test_metrics"] for r in results if r.get("test_metrics")]
        stages = [stage(r.get("analytics") or {}, "optimize") for r in results]
        print(
            f"| {name} | {results[0]['algorithm_used']} | {len(runs)} "
            f"| {mean_sd([r['baseline_metrics']['score'] for r in results])} "
            f"| {mean_sd([r['optimized_metrics']['score'] for r in results])} "
            f"| {mean_sd([t['baseline']['score'] for t in tests])} "
            f"| **{mean_sd([t['optimized']['score'] for t in tests])}** "
            f"| {statistics.mean(s['lm_calls'] for s in stages):.0f} "
            f"| {statistics.mean(s['tokens'] for s in stages):,.0f} "
            f"| {statistics.mean(s['seconds'] for s in stages):.0f} s "
            f"| {statistics.mean(r['duration_seconds'] for r in results):.0f} s |"
        )
    print()
    print("Winners:")
    print()
    for name, runs in groups.items():
        for seed, result in runs:
            for line in winner(result):
                print(f"- {name}, seed {seed}, {line}")
    return 0


def main(argv: list[str]) -> int:
    seeds = bool(argv) and argv[0] == "--seeds"
    if seeds:
        argv = argv[1:]
    if not argv:
        print(__doc__.strip(), file=sys.stderr)
        return 2
    run_dirs = [Path(arg) for arg in argv]
    for path in run_dirs:
        if not (path / "result.json").is_file():
            print(f"error: `{path / 'result.json'}` does not exist", file=sys.stderr)
            return 1
    if seeds:
        return seeds_table(run_dirs)
    print("| run | algorithm | validation | test | LM calls (optimize) | LM calls (run) | optimize wall | run wall |")
    print("|---|---|---|---|---|---|---|---|")
    for path in run_dirs:
        print(row(path))
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
