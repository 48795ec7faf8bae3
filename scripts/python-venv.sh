#!/usr/bin/env bash
# Creates `.venv-ci` (Python virtual environment used by tests that compare against reference
# implementations and by tests that talk to our OpenAI-compatible server) and installs pinned packages.
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
)

if [ ! -x "$VENV/bin/python" ]; then
  "$PYTHON" -m venv "$VENV"
fi

installed=$("$VENV/bin/python" -m pip freeze --disable-pip-version-check 2>/dev/null | tr "A-Z_" "a-z-" \
  | grep -cxF -f <(printf '%s\n' "${PACKAGES[@]}") || true)
if [ "$installed" -ne "${#PACKAGES[@]}" ]; then
  "$VENV/bin/python" -m pip install --quiet --disable-pip-version-check "${PACKAGES[@]}"
fi
