#!/usr/bin/env bash
# The demo: fetches the embedded model, builds promptopt, and optimizes a sentiment classifier on
# SST-2 with BootstrapFewShot on the local model (no API key, no network beyond the first fetch).
#
#   scripts/demo.sh [REQUEST.yaml]
set -euo pipefail
cd "$(dirname "$0")/.."

request="${1:-examples/sst2-bootstrap.yaml}"
scripts/install-prerequisites.sh
scripts/fetch-model.sh gemma3-270m
cargo build -p promptopt-cli
export OMP_WAIT_POLICY="${OMP_WAIT_POLICY:-passive}"
export PROMPTOPT_HOME="${PROMPTOPT_HOME:-$PWD/.promptopt}"
exec target/debug/promptopt optimize "$request" --output runs/demo
