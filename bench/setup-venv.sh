#!/usr/bin/env bash
# Creates bench/.venv with the pinned DSPy (and optuna, pytest) used by the benchmark.
# Idempotent: does nothing when the pinned versions are already installed.
set -euo pipefail
cd "$(dirname "$0")"

PYTHON="${PYTHON:-python3}"
if [ ! -x .venv/bin/python ]; then
  "$PYTHON" -m venv .venv
fi
if ! .venv/bin/python - <<'PY' 2>/dev/null
import importlib.metadata as m, sys
wanted = [l.split("==") for l in open("requirements.txt") if "==" in l and not l.startswith("#")]
sys.exit(0 if all(m.version(n) == v.strip() for n, v in wanted) else 1)
PY
then
  .venv/bin/python -m pip install --quiet --disable-pip-version-check -r requirements.txt -c constraints.txt
fi
