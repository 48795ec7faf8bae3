"""Writes the generated parts of `docs/benchmarks.md` and its charts from stored results."""

from __future__ import annotations

import json
from pathlib import Path

from . import paths
from .render import optimizer_chart, optimizer_tables, overhead_chart, overhead_tables
from .report import splice

OVERHEAD_JSON = paths.RESULTS / "overhead.json"
OPTIMIZERS_JSON = paths.RESULTS / "optimizers.json"
TRACKING_JSON = paths.RESULTS / "tracking.json"
CHART_DIR = paths.DOC.parent / "benchmarks"


def load(path: Path) -> dict | None:
    if not path.exists():
        return None
    return json.loads(path.read_text(encoding="utf-8"))


def save(path: Path, results: dict) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(results, indent=1, sort_keys=True) + "\n", encoding="utf-8")


def models_heading(meta: dict) -> str:
    """The line above a section of runs with another task or prompt model, from its results' `meta`."""
    task = meta.get("task_model")
    prompt = meta.get("prompt_model")
    parts = []
    if task:
        parts.append(f"Task model for both frameworks: `{task}`.")
    if prompt:
        parts.append(f"Prompt and reflection model for both frameworks: `{prompt}`.")
    else:
        parts.append("Each framework proposes and reflects with the task model.")
    return " ".join(parts)


def write_doc(doc: Path = paths.DOC) -> list[str]:
    """Regenerates the marked sections of the document from whatever results exist; returns the
    names of the sections written."""
    text = doc.read_text(encoding="utf-8") if doc.exists() else "# Benchmarks\n"
    written = []
    overhead = load(OVERHEAD_JSON)
    if overhead:
        CHART_DIR.mkdir(parents=True, exist_ok=True)
        (CHART_DIR / "overhead.svg").write_text(overhead_chart(overhead), encoding="utf-8")
        body = overhead_tables(overhead) + "\n\n![Evaluations per second](benchmarks/overhead.svg)"
        text = splice(text, "overhead", body)
        written.append("overhead")
    optimizers = load(OPTIMIZERS_JSON)
    if optimizers and optimizers.get("runs"):
        CHART_DIR.mkdir(parents=True, exist_ok=True)
        (CHART_DIR / "optimizers.svg").write_text(optimizer_chart(optimizers), encoding="utf-8")
        body = optimizer_tables(optimizers) + "\n\n![Optimizer wall time](benchmarks/optimizers.svg)"
        text = splice(text, "optimizers", body)
        written.append("optimizers")
    # Runs with another task model or a separate prompt model (`optimizers --task-model NAME`,
    # `--prompt-model NAME`), one section each.
    for path in sorted(OPTIMIZERS_JSON.parent.glob("optimizers-*.json")):
        other = load(path)
        if other and other.get("runs"):
            text = splice(text, path.stem, models_heading(other.get("meta", {})) + "\n\n" + optimizer_tables(other))
            written.append(path.stem)
    tracking_results = load(TRACKING_JSON)
    if tracking_results and tracking_results.get("runs"):
        from .tracking import tables as tracking_tables

        text = splice(text, "tracking", tracking_tables(tracking_results))
        written.append("tracking")
    doc.parent.mkdir(parents=True, exist_ok=True)
    doc.write_text(text, encoding="utf-8")
    return written
