#!/usr/bin/env bash
# Starts and stops a local MLflow tracking server (from `.venv-ci`, see scripts/python-venv.sh) for
# the tracking integration tests.
#
#   scripts/mlflow-server.sh start DIR   # prints the server's URL (http://127.0.0.1:PORT)
#   scripts/mlflow-server.sh stop DIR
#
# `start` keeps everything under DIR: the SQLite backend store (DIR/mlflow.db), the artifacts
# served through the server's proxy (DIR/mlartifacts), the log (DIR/server.log), the process id
# (DIR/server.pid) and the URL (DIR/url). The server listens on a free loopback port and `start`
# returns once `GET /health` answers (or fails with the log's tail after MLFLOW_START_TIMEOUT
# seconds, 120 by default). `mlflow server` runs its web server (uvicorn or gunicorn) as child
# processes, so it is started in its own session and `stop` ends the whole process group.
#
# MLflow's background job runner (a dozen huey worker processes for GenAI evaluation and prompt
# optimization jobs, none of which the tracking tests use) is off unless
# MLFLOW_SERVER_ENABLE_JOB_EXECUTION=true is set by the caller.
set -euo pipefail

ROOT="$(cd "$(dirname "$0")/.." && pwd)"
VENV="$ROOT/.venv-ci"

usage() {
  echo "usage: $0 start|stop DIR" >&2
  exit 2
}

[ $# -eq 2 ] || usage
CMD="$1"
case "$CMD" in
  start) mkdir -p "$2" ;;
  stop) [ -d "$2" ] || exit 0 ;;
  *) usage ;;
esac
DIR="$(cd "$2" && pwd)"
PIDFILE="$DIR/server.pid"
LOG="$DIR/server.log"

# True while any process of the server's process group is alive.
group_alive() {
  kill -0 -- "-$1" 2>/dev/null
}

stop() {
  [ -f "$PIDFILE" ] || return 0
  local pid
  pid="$(cat "$PIDFILE")"
  if group_alive "$pid"; then
    kill -TERM -- "-$pid" 2>/dev/null || true
    for _ in $(seq 1 100); do
      group_alive "$pid" || break
      sleep 0.1
    done
    if group_alive "$pid"; then
      kill -KILL -- "-$pid" 2>/dev/null || true
      for _ in $(seq 1 50); do
        group_alive "$pid" || break
        sleep 0.1
      done
    fi
  fi
  rm -f "$PIDFILE"
}

start() {
  if [ ! -x "$VENV/bin/mlflow" ]; then
    echo "mlflow-server.sh: $VENV/bin/mlflow is missing; run scripts/python-venv.sh first" >&2
    exit 1
  fi
  if [ -f "$PIDFILE" ] && group_alive "$(cat "$PIDFILE")"; then
    echo "mlflow-server.sh: a server from $DIR is already running (pid $(cat "$PIDFILE"))" >&2
    exit 1
  fi

  local port url
  # The kernel picks a free port; the short window until mlflow binds it is acceptable for tests.
  port="$("$VENV/bin/python" -c 'import socket
s = socket.socket()
s.bind(("127.0.0.1", 0))
print(s.getsockname()[1])
s.close()')"
  url="http://127.0.0.1:$port"

  mkdir -p "$DIR/mlartifacts"
  export MLFLOW_SERVER_ENABLE_JOB_EXECUTION="${MLFLOW_SERVER_ENABLE_JOB_EXECUTION:-false}"
  # setsid: the server leads a new process group (its id is the server's pid), which `stop` ends.
  setsid "$VENV/bin/mlflow" server \
    --backend-store-uri "sqlite:///$DIR/mlflow.db" \
    --artifacts-destination "$DIR/mlartifacts" \
    --serve-artifacts \
    --host 127.0.0.1 \
    --port "$port" \
    --workers 1 \
    >"$LOG" 2>&1 </dev/null &
  echo $! >"$PIDFILE"

  local timeout="${MLFLOW_START_TIMEOUT:-120}" deadline
  deadline=$((SECONDS + timeout))
  until curl -sf -o /dev/null --max-time 2 "$url/health"; do
    if ! group_alive "$(cat "$PIDFILE")"; then
      echo "mlflow-server.sh: the server exited during startup; last lines of $LOG:" >&2
      tail -n 40 "$LOG" >&2
      rm -f "$PIDFILE"
      exit 1
    fi
    if [ "$SECONDS" -ge "$deadline" ]; then
      echo "mlflow-server.sh: no answer from $url/health after ${timeout}s; last lines of $LOG:" >&2
      tail -n 40 "$LOG" >&2
      stop
      exit 1
    fi
    sleep 0.5
  done
  echo "$url" >"$DIR/url"
  echo "$url"
}

case "$CMD" in
  start) start ;;
  stop) stop ;;
esac
