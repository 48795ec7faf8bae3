"""Turns stored results into the Markdown sections and SVG charts of `docs/benchmarks.md`."""

from __future__ import annotations

import re
from collections import defaultdict

from .report import markdown_table, svg_grouped_bars
from .stats import fmt_mean_sd, fmt_num, fmt_ratio, summarize

THROUGHPUT_TARGET = 30.0
CPU_TARGET = 30.0
WALL_TARGET = 3.0
OPTIMIZER_NAMES = {"none": "none (zero-shot)", "bootstrap": "BootstrapFewShot", "mipro": "MIPROv2 light",
                   "gepa": "GEPA light"}
CACHE_NAMES = {"off": "uncached", "memory": "memory cache"}


def client_label(run: dict) -> str:
    """`DSPy, 8 threads` or `promptopt, concurrency 32`."""
    if run["framework"] == "dspy":
        n = run["threads"]
        return f"DSPy, {n} thread{'s' if n != 1 else ''}"
    return f"promptopt, concurrency {run['concurrency']}"


def overhead_tables(results: dict) -> str:
    """The overhead section: server capacity, the measurements, and the comparison with targets."""
    meta, server, runs = results["meta"], results["server"], results["runs"]
    lines = [
        f"Measured {meta['date']} on {meta['cpus']} CPUs ({meta['cpu_model'] or 'unknown CPU'}), {meta['system']}, "
        f"commit `{meta['commit']}`; {meta['examples']:,} examples, median of {meta['repeats']} "
        f"run{'s' if meta['repeats'] != 1 else ''} per setting. "
        + (f"Client pinned to CPU {meta['client_cpus']}, server to CPU {meta['server_cpus']}."
           if meta.get("client_cpus") else "Nothing pinned."),
        "",
        f"**Server capacity** (`loadgen`, {server['connections']} keep-alive connections): "
        f"{fmt_num(server['requests_per_s'])} requests/s, p50 latency {server['latency_us']['p50']} µs; "
        f"the server spends {fmt_num(server['server_cpu_us_per_request'], 1)} µs of its own CPU per request, "
        f"so one core serves about {fmt_num(server['server_cpu_bound_requests_per_s'])} requests/s.",
        "",
    ]
    rows = []
    for run in runs:
        rows.append([
            client_label(run),
            CACHE_NAMES.get(run["cache"], run["cache"]),
            fmt_num(run["evals_per_s"], 0),
            fmt_num(run["cpu_ms_per_eval"], 3),
            fmt_num(run["process_cpu_s"], 2),
            fmt_num(run["process_peak_rss_mb"], 1),
            run["server_requests"],
            fmt_num(round(run["score"], 6), 4),
        ])
    lines.append(markdown_table(
        ["client", "cache", "evaluations/s", "client CPU per evaluation (ms)", "process CPU (s)",
         "peak RSS (MB)", "requests at server", "score"],
        rows, "llrrrrrr"))
    lines.append("")
    lines.append(overhead_targets(runs))
    return "\n".join(lines)


def overhead_targets(runs: list[dict]) -> str:
    """Ratios promptopt / DSPy for each cache mode, against the targets."""
    rows = []
    for cache in ("off", "memory"):
        dspy = [r for r in runs if r["framework"] == "dspy" and r["cache"] == cache]
        ours = [r for r in runs if r["framework"] == "promptopt" and r["cache"] == cache]
        if not dspy or not ours:
            continue
        best = max(dspy, key=lambda r: r["evals_per_s"])
        leanest = min(dspy, key=lambda r: r["cpu_ms_per_eval"])
        mine = ours[0]
        speed = mine["evals_per_s"] / best["evals_per_s"]
        cpu = leanest["cpu_ms_per_eval"] / mine["cpu_ms_per_eval"] if mine["cpu_ms_per_eval"] > 0 else float("inf")
        rows.append([
            CACHE_NAMES[cache], "evaluations/s", f"{fmt_num(best['evals_per_s'], 0)} ({client_label(best)})",
            fmt_num(mine["evals_per_s"], 0), fmt_ratio(speed), f"≥ {THROUGHPUT_TARGET:.0f}x",
            verdict(speed, THROUGHPUT_TARGET),
        ])
        rows.append([
            CACHE_NAMES[cache], "client CPU per evaluation (ms)",
            f"{fmt_num(leanest['cpu_ms_per_eval'], 3)} ({client_label(leanest)})",
            fmt_num(mine["cpu_ms_per_eval"], 3), f"1/{fmt_ratio(cpu).rstrip('x')}", f"≤ 1/{CPU_TARGET:.0f}",
            verdict(cpu, CPU_TARGET),
        ])
    return markdown_table(["cache", "figure", "DSPy (best setting)", "promptopt", "ratio", "target", "met"],
                          rows, "llrrrrl")


def verdict(ratio: float, target: float) -> str:
    """`yes`, or `no (NN % of the target)`."""
    if ratio >= target:
        return "yes"
    return f"no ({100 * ratio / target:.0f} % of the target)"


def overhead_chart(results: dict) -> str:
    groups = []
    for cache in ("off", "memory"):
        bars = [(client_label(r), r["evals_per_s"], None) for r in results["runs"] if r["cache"] == cache]
        if bars:
            groups.append((CACHE_NAMES[cache], bars))
    return svg_grouped_bars("Evaluations per second against an instant server", "evaluations/s", groups, log=True)


def _group(runs: list[dict]) -> dict:
    grouped: dict = defaultdict(list)
    for run in runs:
        grouped[(run["task"], run["optimizer"], run["framework"])].append(run)
    return grouped


FRAMEWORK_ORDER = ("dspy", "promptopt-http", "promptopt-inprocess")
FRAMEWORK_NAMES = {"dspy": "DSPy (serve-lm)", "promptopt-http": "promptopt (serve-lm)",
                   "promptopt-inprocess": "promptopt (in-process)"}


def optimizer_tables(results: dict) -> str:
    """Per task and optimizer: score, calls, tokens, time and memory for each framework over seeds,
    then the comparison with the targets."""
    runs = results["runs"]
    grouped = _group(runs)
    keys = sorted({(r["task"], r["optimizer"]) for r in runs},
                  key=lambda k: (k[0], list(OPTIMIZER_NAMES).index(k[1]) if k[1] in OPTIMIZER_NAMES else 99))
    rows = []
    for task, optimizer in keys:
        for framework in FRAMEWORK_ORDER:
            group = grouped.get((task, optimizer, framework))
            if not group:
                continue
            uncached = any(r.get("cache") is False for r in group)
            rows.append([
                task, OPTIMIZER_NAMES.get(optimizer, optimizer), FRAMEWORK_NAMES[framework],
                len(group),
                fmt_mean_sd([r["test_score"] for r in group], 3),
                fmt_num(summarize(r["lm_calls"] for r in group).mean, 0),
                fmt_num(summarize(r["tokens"] for r in group).mean, 0),
                fmt_mean_sd([r["wall_s"] for r in group], 1) + (" †" if uncached else ""),
                other_scoring(group),
                fmt_mean_sd([r["cpu_s"] for r in group], 1),
                fmt_num(max(r["peak_rss_mb"] for r in group), 0),
            ])
    table = markdown_table(
        ["task", "optimizer", "framework", "seeds", "test score", "LM calls", "tokens", "wall (s)",
         "scoring outside the compared stages (s)", "CPU (s)", "peak RSS (MB)"], rows, "lllrrrrrrrr")
    notes = [UNCACHED_NOTE] if any(r.get("cache") is False for r in runs) else []
    failures = optimizer_failures(results)
    return "\n\n".join([table, *notes, optimizer_targets(grouped, keys, results.get("failures")),
                        *([failures] if failures else [])])


UNCACHED_NOTE = ("† promptopt ran without its response cache (DSPy had its in-memory one), so its time is an "
                 "upper bound.")


def other_scoring(group: list[dict]) -> str:
    """Mean seconds promptopt spent scoring outside the stages compared with DSPy's `compile()`
    (`–` for DSPy, and where every scoring stage is compared)."""
    values = [r["other_scoring_s"] for r in group if r.get("other_scoring_s")]
    return fmt_mean_sd(values, 1) if values else "–"


def optimizer_failures(results: dict) -> str:
    """The runs that did not finish, each with the last statement of its error (empty when none failed)."""
    lines = []
    for failure in results.get("failures") or []:
        lines.append(f"- {failure['run']}: {error_summary(str(failure['error']))}")
    heading = ("Runs that failed or were stopped (not in the tables; a DSPy run stopped at the time limit or by "
               "hand counts in the targets with the time it had run):")
    return heading + "\n\n" + "\n".join(lines) if lines else ""


def stopped_runs(failures: list[dict]) -> dict:
    """Seconds after which each run stopped at the time limit ran, by (task, optimizer, framework)."""
    stopped: dict = defaultdict(list)
    for failure in failures:
        if failure.get("stopped_after_s") is not None and "task" in failure:
            stopped[(failure["task"], failure["optimizer"], failure["framework"])].append(failure["stopped_after_s"])
    return stopped


def optimizer_targets(grouped: dict, keys: list, failures: list[dict] | None = None) -> str:
    """Speed-up and score difference against DSPy per task and optimizer. promptopt's side is its
    serve-lm runs, the same engine DSPy calls, or its in-process runs where there are none (runs
    with a separate prompt model have only those). A DSPy run stopped at the time limit counts with
    the time it had run, a lower bound of its wall time, so the speed-up is then a lower bound (`≥`)
    and the target is met only if the bound meets it."""
    stopped = stopped_runs(failures or [])
    rows = []
    for task, optimizer in keys:
        if optimizer == "none":
            continue
        dspy = grouped.get((task, optimizer, "dspy")) or []
        d_stopped = stopped.get((task, optimizer, "dspy"), [])
        ours = grouped.get((task, optimizer, "promptopt-http")) or grouped.get((task, optimizer, "promptopt-inprocess"))
        if not (dspy or d_stopped) or not ours:
            continue
        d_wall = summarize([r["wall_s"] for r in dspy] + d_stopped).mean
        o_wall = summarize(r["wall_s"] for r in ours).mean
        speed = d_wall / o_wall if o_wall > 0 else float("inf")
        if d_stopped and speed < WALL_TARGET:
            wall_verdict = f"not known (at least {100 * speed / WALL_TARGET:.0f} % of the target)"
        else:
            wall_verdict = verdict(speed, WALL_TARGET)
        o_score = summarize(r["test_score"] for r in ours).mean
        if dspy:
            d_score = summarize(r["test_score"] for r in dspy).mean
            difference = f"{o_score - d_score:+.3f}"
            if d_stopped:
                difference += f" (DSPy finished {len(dspy)} of {len(dspy) + len(d_stopped)} runs)"
            score_verdict = "yes" if o_score >= d_score else f"no ({o_score - d_score:+.3f})"
        else:
            difference, score_verdict = "not known (no DSPy run finished)", "not known"
        rows.append([
            task, OPTIMIZER_NAMES.get(optimizer, optimizer), ("≥ " if d_stopped else "") + fmt_ratio(speed),
            wall_verdict, difference, score_verdict,
        ])
    return markdown_table(
        ["task", "optimizer", "wall-time speed-up (DSPy / promptopt)", f"≥ {WALL_TARGET:.0f}x",
         "test score difference (promptopt − DSPy)", "≥ 0"], rows, "llrlrl")


def optimizer_chart(results: dict) -> str:
    grouped = _group(results["runs"])
    groups = []
    for task, optimizer in sorted({(r["task"], r["optimizer"]) for r in results["runs"]}):
        bars = []
        for framework in FRAMEWORK_ORDER:
            group = grouped.get((task, optimizer, framework))
            if group:
                s = summarize(r["wall_s"] for r in group)
                bars.append((FRAMEWORK_NAMES[framework], s.mean, s.sd or None))
        if bars:
            groups.append((f"{task} / {OPTIMIZER_NAMES.get(optimizer, optimizer)}", bars))
    return svg_grouped_bars("Optimizer wall time (mean over seeds, whisker: sd)", "seconds", groups)


EXCEPTION_LINE = re.compile(r"^[A-Za-z_][\w.]*(Error|Exception|Exit|Interrupt)\b(: .*)?$")


def error_summary(error: str) -> str:
    """The line of an error that states it: the last line naming an exception (`...Error: message`),
    since a model's reply quoted after it can end in any text; else the last line that is not advice
    appended after the message (a heading ending in a colon, then `- ...` items); else the last line."""
    lines = [line.strip() for line in error.strip().splitlines() if line.strip()]
    raised = [line for line in lines if EXCEPTION_LINE.match(line)]
    if raised:
        return raised[-1]
    statements = [line for line in lines if not line.startswith("- ") and not line.endswith(":")]
    if statements:
        return statements[-1]
    return lines[-1] if lines else "no error text"
