#!/usr/bin/env bash
# Starts, restarts and stops a throwaway Redis (Debian's `redis-server`) for the job queue's tests
# and benchmarks.
#
#   scripts/redis-server.sh start DIR     # prints the URL (redis://127.0.0.1:PORT/0)
#   scripts/redis-server.sh restart DIR   # stops it (data kept) and starts it again on the same port
#   scripts/redis-server.sh stop DIR
#
# Everything lives under DIR: the append-only file (appendonly yes, fsync always, so a restart
# loses nothing), the log (DIR/redis.log), the process id (DIR/redis.pid), the port (DIR/port) and
# the URL (DIR/url). It listens on a free loopback port only, without a password.
set -euo pipefail

usage() {
  echo "usage: $0 start|restart|stop DIR" >&2
  exit 2
}

[ $# -eq 2 ] || usage
CMD="$1"
case "$CMD" in
  start | restart) mkdir -p "$2" ;;
  stop) [ -d "$2" ] || exit 0 ;;
  *) usage ;;
esac
DIR="$(cd "$2" && pwd)"
PIDFILE="$DIR/redis.pid"

alive() {
  [ -f "$PIDFILE" ] && kill -0 "$(cat "$PIDFILE")" 2>/dev/null
}

stop() {
  alive || { rm -f "$PIDFILE"; return 0; }
  local pid
  pid="$(cat "$PIDFILE")"
  # SHUTDOWN writes the data out; a server that does not answer is killed.
  redis-cli -p "$(cat "$DIR/port")" SHUTDOWN >/dev/null 2>&1 || kill -TERM "$pid" 2>/dev/null || true
  for _ in $(seq 1 100); do
    kill -0 "$pid" 2>/dev/null || break
    sleep 0.05
  done
  kill -KILL "$pid" 2>/dev/null || true
  rm -f "$PIDFILE"
}

start() {
  command -v redis-server >/dev/null || {
    echo "redis-server.sh: redis-server is missing; run scripts/install-prerequisites.sh" >&2
    exit 1
  }
  if alive; then
    echo "redis-server.sh: a server from $DIR is already running (pid $(cat "$PIDFILE"))" >&2
    exit 1
  fi
  local port
  if [ -f "$DIR/port" ]; then
    port="$(cat "$DIR/port")"
  else
    port="$(python3 -c 'import socket
s = socket.socket()
s.bind(("127.0.0.1", 0))
print(s.getsockname()[1])
s.close()')"
    echo "$port" >"$DIR/port"
  fi
  redis-server --bind 127.0.0.1 --port "$port" --dir "$DIR" \
    --appendonly yes --appendfsync always --save "" \
    --daemonize yes --pidfile "$PIDFILE" --logfile "$DIR/redis.log" >/dev/null
  for _ in $(seq 1 200); do
    if redis-cli -p "$port" PING 2>/dev/null | grep -q PONG; then
      echo "redis://127.0.0.1:$port/0" >"$DIR/url"
      echo "redis://127.0.0.1:$port/0"
      return 0
    fi
    sleep 0.05
  done
  echo "redis-server.sh: no answer on port $port; last lines of $DIR/redis.log:" >&2
  tail -n 20 "$DIR/redis.log" >&2 || true
  exit 1
}

case "$CMD" in
  start) start ;;
  restart) stop; start ;;
  stop) stop ;;
esac
