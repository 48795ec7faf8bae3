#!/usr/bin/env bash
# Runs a request on the embedded model four times and prints what injected LM faults did to it:
#
#   scripts/faults-embedded.sh [REQUEST] [RATE] [CONCURRENCY]
#                              (default examples/sst2-bootstrap.yaml, 0.2, 1)
#
# 1. clean:     no faults, an empty response cache.
# 2. transport: RATE of the attempts fail the way a remote provider does (429 with and without
#               `Retry-After`, 5xx, a reset connection, a body cut off, a slow reply); the retry
#               layer must hide them all.
# 3. replies:   the transport faults plus malformed replies (empty, or in no adapter's format),
#               which the adapters handle the way they handle a real model's bad answer.
# 4. replay:    run 3 again on its home with every live call failing: the response cache must
#               replay the whole run.
# With CONCURRENCY 1 the model sees the same requests in the same order in every run (a faulted
# attempt never reaches it), so the runs must agree exactly; with more, the engine batches requests
# as they happen to arrive, and its rounding can flip near ties (see `promptopt-engine`'s
# "Determinism").
# The `timeout` kind is left out: with the default 120 s per-call timeout one hung call costs two
# minutes (the deterministic fault tests in `promptopt-optimize/tests/faults.rs` cover it).
# Needs `target/release/promptopt` and the request's model under `models/`.
set -euo pipefail
cd "$(dirname "$0")/.."

REQUEST="${1:-examples/sst2-bootstrap.yaml}"
RATE="${2:-0.2}"
CONCURRENCY="${3:-1}"
BIN=target/release/promptopt
[ -x "$BIN" ] || { echo "faults-embedded.sh: build \`$BIN\` first (cargo build --release -p promptopt-cli)" >&2; exit 2; }

WORK="$(mktemp -d)"
trap 'rm -rf "$WORK"' EXIT
export PROMPTOPT_THREADS="${PROMPTOPT_THREADS:-2}" OMP_WAIT_POLICY=passive DISABLE_MLFLOW=1
TRANSPORT='"throttled_with_retry_after","throttled","server_error","connection_reset","truncated_json","slow"'

run() { # name home faults
  local name="$1" home="$2" faults="$3" start end
  start=$(date +%s.%N)
  if ! PROMPTOPT_HOME="$home" PROMPTOPT_LM_FAULTS="$faults" "$BIN" optimize "$REQUEST" --json \
      --concurrency "$CONCURRENCY" --output "$WORK/out-$name" >"$WORK/$name.json" 2>"$WORK/$name.err"; then
    echo "faults-embedded.sh: the \`$name\` run failed; its log:" >&2
    tail -20 "$WORK/$name.err" >&2
    exit 1
  fi
  end=$(date +%s.%N)
  echo "$end - $start" | bc >"$WORK/$name.secs"
}

# A rate of 0 draws no fault: the clean run goes through the same layers.
run clean "$WORK/home-clean" '{"rate":0.0,"seed":1}'
run transport "$WORK/home-transport" "{\"rate\":$RATE,\"seed\":1,\"kinds\":[$TRANSPORT]}"
run replies "$WORK/home-replies" "{\"rate\":$RATE,\"seed\":1,\"kinds\":[$TRANSPORT,\"empty_reply\",\"wrong_format\"]}"
run replay "$WORK/home-replies" '{"rate":1.0,"seed":2,"kinds":["server_error","connection_reset"]}'

python3 - "$WORK" <<'EOF'
import json, sys
work = sys.argv[1]
runs = ["clean", "transport", "replies", "replay"]
data = {r: json.load(open(f"{work}/{r}.json")) for r in runs}
print("| run | baseline | winner | LM calls | retries | failed calls | cache hits | same winner as clean | wall |")
print("|---|---|---|---|---|---|---|---|---|")
for r in runs:
    d, a = data[r], data[r]["analytics"]
    same = "yes" if d["optimized_config"] == data["clean"]["optimized_config"] else "no"
    secs = float(open(f"{work}/{r}.secs").read())
    print(f"| {r} | {d['baseline_metrics']['score']:.2f} | {d['optimized_metrics']['score']:.2f} | "
          f"{a['lm_calls']} | {a['retries']} | {a['failed_calls']} | {a['cache_hits']} | {same} | {secs:.1f} s |")
EOF
