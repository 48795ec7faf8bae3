"""Helpers for the DSPy-side scripts: settings that must be in place before DSPy is imported,
resource measurement of the current process, and LM call accounting from DSPy's history."""

from __future__ import annotations

import json
import os
import resource
import sys
import time

# DSPy would otherwise download LiteLLM's price list on first use.
os.environ.setdefault("LITELLM_LOCAL_MODEL_COST_MAP", "True")
os.environ.setdefault("DSPY_NOTEBOOK_MODE", "False")


def cpu_seconds() -> float:
    """User + system CPU time of this process (all threads) so far."""
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return usage.ru_utime + usage.ru_stime


def peak_rss_mb() -> float:
    """Peak resident set size of this process so far, in MB (Linux reports KiB)."""
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024.0


class Stopwatch:
    """Wall and CPU time of a block."""

    def __enter__(self) -> "Stopwatch":
        self.wall0 = time.perf_counter()
        self.cpu0 = cpu_seconds()
        return self

    def __exit__(self, *exc) -> None:
        self.wall_s = time.perf_counter() - self.wall0
        self.cpu_s = cpu_seconds() - self.cpu0


def lm_usage(history: list[dict]) -> dict:
    """LM requests that reached the server (cache hits excluded) and their token counts."""
    calls = 0
    prompt_tokens = 0
    completion_tokens = 0
    cache_hits = 0
    for entry in history:
        if getattr(entry.get("response"), "cache_hit", False):
            cache_hits += 1
            continue
        calls += 1
        usage = entry.get("usage") or {}
        prompt_tokens += int(usage.get("prompt_tokens") or 0)
        completion_tokens += int(usage.get("completion_tokens") or 0)
    return {
        "lm_calls": calls,
        "cache_hits": cache_hits,
        "prompt_tokens": prompt_tokens,
        "completion_tokens": completion_tokens,
        "tokens": prompt_tokens + completion_tokens,
    }


def emit(result: dict) -> None:
    """Prints the result as one JSON line on stdout (the harness reads the last line)."""
    sys.stdout.write(json.dumps(result, sort_keys=True) + "\n")
    sys.stdout.flush()
