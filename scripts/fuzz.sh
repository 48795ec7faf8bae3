#!/usr/bin/env bash
# Runs every fuzz target of `fuzz/` for a bounded time each and prints what each did.
#
#   scripts/fuzz.sh [SECONDS_PER_TARGET]   (default 60; CI runs a short smoke run)
#
# Installs `cargo-fuzz` with cargo when it is missing. The targets are built without a sanitizer
# (`-s none`), which works on the stable toolchain: Rust code is memory-safe, and what the fuzzer
# looks for is a panic, an abort, a hang or runaway memory. Each run starts from the corpus in
# `fuzz/corpus/TARGET` and writes what it finds into a temporary folder, so the committed corpus
# only changes by hand. A crash leaves its input in `fuzz/artifacts/TARGET/` and fails the script.
set -euo pipefail
cd "$(dirname "$0")/.."

SECONDS_PER_TARGET="${1:-60}"
TARGETS=(request signature adapter_reply metric_reply mlflow_filter)

if ! cargo fuzz --version >/dev/null 2>&1; then
  cargo install --locked cargo-fuzz@0.13.2
fi

cargo fuzz build -s none -O
WORK="$(mktemp -d)"
trap 'rm -rf "$WORK"' EXIT
for target in "${TARGETS[@]}"; do
  mkdir -p "$WORK/$target"
  log="$WORK/$target.log"
  if ! cargo fuzz run "$target" -s none -O "$WORK/$target" "fuzz/corpus/$target" -- \
      -max_total_time="$SECONDS_PER_TARGET" -timeout=10 -rss_limit_mb=2048 -print_final_stats=1 >"$log" 2>&1; then
    echo "fuzz.sh: \`$target\` failed; its log:" >&2
    tail -40 "$log" >&2
    exit 1
  fi
  runs="$(grep -o 'stat::number_of_executed_units: *[0-9]*' "$log" | grep -o '[0-9]*$' || echo '?')"
  echo "fuzz.sh: $target: $runs runs in ${SECONDS_PER_TARGET} s, no crash"
done
