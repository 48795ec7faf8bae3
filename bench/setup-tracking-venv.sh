#!/usr/bin/env bash
# Creates bench/.venv-tracking: the benchmark's pinned DSPy plus the MLflow 3.18.0 client, for the
# tracking-overhead comparison (`make bench-tracking`, bench/dspy/tracking_overhead.py) only.
#
# It is a separate environment because `mlflow-skinny` 3.18.0 requires `cachetools<8` while
# bench/constraints.txt pins `cachetools==8.0.2` (DSPy accepts `>=5.5.0`): installing MLflow into
# bench/.venv would change the environment the published DSPy figures were measured with. Here every
# other pin of bench/constraints.txt still applies, so DSPy and LiteLLM are the same versions.
#
# `mlflow-skinny` is the whole client side (tracking, tracing, `mlflow.dspy.autolog`); the full
# `mlflow` package only adds the server and the UI, which come from .venv-ci
# (scripts/mlflow-server.sh). `pandas` is what `mlflow.log_table` (autolog's result tables) needs.
# Idempotent: does nothing when the pinned versions are already installed.
set -euo pipefail
cd "$(dirname "$0")"

PYTHON="${PYTHON:-python3}"
VENV=.venv-tracking
PACKAGES=("dspy==3.4.1" "mlflow-skinny==3.18.0" "pandas<3")

if [ ! -x "$VENV/bin/python" ]; then
  "$PYTHON" -m venv "$VENV"
fi
if ! "$VENV/bin/python" - <<'PY' 2>/dev/null
import importlib.metadata as m, sys
sys.exit(0 if m.version("dspy") == "3.4.1" and m.version("mlflow-skinny") == "3.18.0"
         and m.version("pandas") else 1)
PY
then
  constraints="$(mktemp)"
  trap 'rm -f "$constraints"' EXIT
  grep -v -i '^cachetools==' constraints.txt >"$constraints"
  "$VENV/bin/python" -m pip install --quiet --disable-pip-version-check "${PACKAGES[@]}" -c "$constraints"
fi
"$VENV/bin/python" -c "import mlflow.dspy, dspy; assert mlflow.__version__ == '3.18.0' and dspy.__version__ == '3.4.1'"
