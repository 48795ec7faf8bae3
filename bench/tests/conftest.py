"""Makes `harness` (in `bench/`) and the DSPy-side task helpers (in `bench/dspy/`) importable."""

import sys
from pathlib import Path

BENCH = Path(__file__).resolve().parent.parent
for path in (BENCH, BENCH / "dspy"):
    if str(path) not in sys.path:
        sys.path.insert(0, str(path))
