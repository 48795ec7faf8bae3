#!/usr/bin/env bash
# Creates `.venv-ci` (Python virtual environment used by tests that compare against reference
# implementations, by tests that talk to our OpenAI-compatible server and by the tracking tests that
# talk to a real MLflow server, see scripts/mlflow-server.sh) and installs pinned packages.
# Idempotent: reruns only install what is missing.
set -euo pipefail
cd "$(dirname "$0")/.."

VENV=".venv-ci"
PYTHON="${PYTHON:-python3}"

PACKAGES=(
  # Reference metrics for the differential tests of promptopt-core.
  "rouge-score==0.1.2"
  "sacrebleu==2.5.1"
  "nltk==3.9.1"
  # OpenAI client for the engine's compatibility tests.
  "openai==1.109.1"
  # Test runner for the benchmark harness's own tests (bench/tests).
  "pytest==9.2.0"
  # Reference drift detectors for the differential tests of promptopt-learning.
  "river==0.26.1"
)

if [ ! -x "$VENV/bin/python" ]; then
  "$PYTHON" -m venv "$VENV"
fi

installed=$("$VENV/bin/python" -m pip freeze --disable-pip-version-check 2>/dev/null | tr "A-Z_" "a-z-" \
  | grep -cxF -f <(printf '%s\n' "${PACKAGES[@]}") || true)
if [ "$installed" -ne "${#PACKAGES[@]}" ]; then
  "$VENV/bin/python" -m pip install --quiet --disable-pip-version-check "${PACKAGES[@]}"
fi

# MLflow tracking server and client for the promptopt-tracking integration tests.
MLFLOW_VERSION="3.18.0"
if ! "$VENV/bin/python" -c "import mlflow; assert mlflow.__version__ == '$MLFLOW_VERSION'" >/dev/null 2>&1; then
  # `mlflow` pins `mlflow-tracing` to its own version, and some package indexes (mirrors that lag
  # behind PyPI) lack that release, so the plain install fails to resolve there. The tracing code
  # that the server and the client use also ships inside `mlflow-skinny`, so `mlflow-tracing` is
  # not needed: the fallback installs `mlflow-skinny` and the rest of mlflow's dependencies (with
  # the ranges mlflow $MLFLOW_VERSION declares), then `mlflow` itself without dependency
  # resolution. `pip check` reports the missing `mlflow-tracing` in that case; that is expected.
  if ! "$VENV/bin/python" -m pip install --quiet --disable-pip-version-check "mlflow==$MLFLOW_VERSION"; then
    echo "python-venv.sh: 'pip install mlflow==$MLFLOW_VERSION' failed;" \
      "installing mlflow-skinny, mlflow's other dependencies, then mlflow with --no-deps" >&2
    "$VENV/bin/python" -m pip install --quiet --disable-pip-version-check \
      "mlflow-skinny==$MLFLOW_VERSION" \
      "Flask-CORS<7" "Flask<4" "aiohttp>=3.7.0,<4" "alembic!=1.10.0,<2" "cryptography>=43.0.0,<51" \
      "graphene<4" "gunicorn<27" "huey>=2.5.4,<4" "matplotlib<4" "numpy<3" "pandas<4" \
      "pyarrow>=4.0.0,<27" "scikit-learn<2" "scipy<2" "skops<1" "sqlalchemy>=1.4.0,<3" \
      "docker>=4.0.0,<8"
    "$VENV/bin/python" -m pip install --quiet --disable-pip-version-check --no-deps \
      "mlflow==$MLFLOW_VERSION"
  fi
  "$VENV/bin/python" -c "import mlflow; assert mlflow.__version__ == '$MLFLOW_VERSION'"
fi
