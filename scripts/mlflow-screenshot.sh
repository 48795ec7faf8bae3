#!/usr/bin/env bash
# Takes a screenshot of an MLflow UI page with headless Chromium (installed from Debian's packages
# when missing).
#
#   scripts/mlflow-screenshot.sh URL OUT.png
#
# The MLflow UI is a single-page app with hash routes; with MLflow 3.18 useful pages are
#   $SERVER/#/experiments/<experiment_id>/runs/<run_id>/model-metrics   (a run's metric charts)
#   $SERVER/#/experiments/<experiment_id>/runs/<run_id>                 (a run's overview)
#   $SERVER/#/experiments/<experiment_id>/runs                          (an experiment's runs)
# (scripts/mlflow-server.sh starts a local server and writes $SERVER to DIR/url).
#
# The page is rendered in virtual time: Chromium runs the app's scripts and requests until
# SCREENSHOT_BUDGET_MS (15000 by default) of virtual time has passed without pending network
# requests, then captures a SCREENSHOT_SIZE (1400,900 by default) window.
set -euo pipefail

if [ $# -ne 2 ]; then
  echo "usage: $0 URL OUT.png" >&2
  exit 2
fi
URL="$1"
OUT="$2"

if ! command -v chromium >/dev/null 2>&1; then
  SUDO=""
  if [ "$(id -u)" -ne 0 ]; then
    SUDO="sudo"
  fi
  $SUDO apt-get update
  DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y --no-install-recommends chromium fonts-liberation
fi

mkdir -p "$(dirname "$OUT")"
OUT="$(cd "$(dirname "$OUT")" && pwd)/$(basename "$OUT")"
# A throwaway profile: no first-run state, no lock on the user's own profile.
PROFILE="$(mktemp -d)"
trap 'rm -rf "$PROFILE"' EXIT
rm -f "$OUT"

# --no-sandbox: Chromium's sandbox needs user namespaces, which containers (and root) lack.
timeout 120 chromium \
  --headless \
  --no-sandbox \
  --disable-gpu \
  --disable-dev-shm-usage \
  --no-first-run \
  --user-data-dir="$PROFILE" \
  --hide-scrollbars \
  --window-size="${SCREENSHOT_SIZE:-1400,900}" \
  --virtual-time-budget="${SCREENSHOT_BUDGET_MS:-15000}" \
  --screenshot="$OUT" \
  "$URL" >"$PROFILE/chromium.log" 2>&1 || {
  echo "mlflow-screenshot.sh: chromium failed; its output:" >&2
  tail -n 40 "$PROFILE/chromium.log" >&2
  exit 1
}
if [ ! -s "$OUT" ]; then
  echo "mlflow-screenshot.sh: chromium wrote no screenshot; its output:" >&2
  tail -n 40 "$PROFILE/chromium.log" >&2
  exit 1
fi
echo "$OUT"
