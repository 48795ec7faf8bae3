#!/usr/bin/env bash
# Checks the live HTTP API against its own OpenAPI document with schemathesis: starts the instant
# fake model server (bench's `fake-openai`), saves a model with `promptopt optimize`, starts
# `promptopt serve` on a free loopback port, and runs `st run` on `/openapi.json` with a bounded
# number of examples per operation. It fails on any 5xx and on any response that breaks the schema.
#
#   scripts/api-schema-check.sh            # 30 examples per operation
#   SCHEMATHESIS_EXAMPLES=200 scripts/api-schema-check.sh
#
# schemathesis (pinned) lives in its own virtual environment, `.venv-api`, so that its
# dependencies never meet MLflow's in `.venv-ci`. Everything else lives in a temporary folder that
# is removed at exit, with the servers it started.
set -euo pipefail
cd "$(dirname "$0")/.."

EXAMPLES="${SCHEMATHESIS_EXAMPLES:-30}"
SCHEMATHESIS_VERSION="4.32.5"
TARGET="${CARGO_TARGET_DIR:-target}/debug"
BIN="$TARGET/promptopt"
FAKE="$TARGET/fake-openai"
# Only what is missing, one binary at a time: a build of another package selection resolves the
# build tools' features differently, and would compile llama.cpp once more for the same `promptopt`.
if [ ! -x "$BIN" ]; then
  cargo build -p promptopt-cli --bin promptopt
fi
if [ ! -x "$FAKE" ]; then
  cargo build -p promptopt-bench --bin fake-openai
fi

VENV=".venv-api"
PYTHON="${PYTHON:-python3}"
if [ ! -x "$VENV/bin/python" ]; then
  "$PYTHON" -m venv "$VENV"
fi
if ! "$VENV/bin/python" -c "import importlib.metadata as m; assert m.version('schemathesis') == '$SCHEMATHESIS_VERSION'" >/dev/null 2>&1; then
  "$VENV/bin/python" -m pip install --quiet --disable-pip-version-check "schemathesis==$SCHEMATHESIS_VERSION"
fi

WORK="$(mktemp -d)"
PIDS=()
cleanup() {
  for pid in "${PIDS[@]}"; do kill -TERM "$pid" 2>/dev/null || true; done
  wait 2>/dev/null || true
  rm -rf "$WORK"
}
trap cleanup EXIT

# Waits for FILE to hold a line with `PATTERN URL` and prints the URL.
url_from() {
  local file="$1" pattern="$2"
  for _ in $(seq 1 200); do
    if grep -q "$pattern" "$file" 2>/dev/null; then
      grep -o "$pattern http://[0-9.:]*" "$file" | head -1 | awk '{print $NF}'
      return 0
    fi
    sleep 0.05
  done
  echo "api-schema-check.sh: no \`$pattern\` line in $file" >&2
  cat "$file" >&2 || true
  return 1
}

"$FAKE" --port 0 --reply positive >"$WORK/fake.out" 2>&1 &
PIDS+=($!)
LM_URL="$(url_from "$WORK/fake.out" "listening")"

export PROMPTOPT_HOME="$WORK/home"
export OPENAI_BASE_URL="$LM_URL/v1"
export OPENAI_API_KEY="sk-schema-check"
export DISABLE_MLFLOW=1
unset PROMPTOPT_QUEUE MLFLOW_TRACKING_URI

cat >"$WORK/request.yaml" <<'YAML'
name: schema-demo
evaluation_metric: exact_match
algorithm: bootstrapfewshot
model: openai/test-model
input_keys: [text]
output_keys: [label]
training_examples:
  - {text: "a good film", label: positive}
  - {text: "great fun", label: positive}
validation_examples:
  - {text: "lovely", label: positive}
YAML
"$BIN" optimize "$WORK/request.yaml" >/dev/null
"$BIN" models promote schema-demo@1.0.0 --alias production >/dev/null

PROMPTOPT_API_TOKENS="schema-admin" "$BIN" serve --bind 127.0.0.1:0 >"$WORK/serve.out" 2>"$WORK/serve.log" &
PIDS+=($!)
API_URL="$(url_from "$WORK/serve.out" "listening on")"

status=0
"$VENV/bin/st" run "$API_URL/openapi.json" \
  --checks not_a_server_error,response_schema_conformance,content_type_conformance,status_code_conformance \
  --header "Authorization: Bearer schema-admin" \
  --max-examples "$EXAMPLES" \
  --seed 20261205 \
  --request-timeout 20 \
  --workers 1 || status=$?
if [ "$status" -ne 0 ]; then
  echo "api-schema-check.sh: schemathesis found problems; the server's log:" >&2
  tail -50 "$WORK/serve.log" >&2 || true
fi
exit "$status"
