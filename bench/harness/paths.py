"""Where things are."""

from pathlib import Path

BENCH = Path(__file__).resolve().parent.parent
REPO = BENCH.parent
DATA = BENCH / "data"
OUT = BENCH / "out"
RESULTS = BENCH / "results"
DSPY_DIR = BENCH / "dspy"
VENV_PYTHON = BENCH / ".venv" / "bin" / "python"
DOC = REPO / "docs" / "benchmarks.md"


def target_dir(profile: str) -> Path:
    """Where cargo puts binaries of `profile` (`release` or `debug`), honouring `CARGO_TARGET_DIR`."""
    import os

    root = Path(os.environ.get("CARGO_TARGET_DIR", REPO / "target"))
    return root / profile
