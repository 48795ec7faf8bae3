#!/usr/bin/env bash
# Starts and stops a throwaway PostgreSQL (Debian's `postgresql` binaries) for the server's
# database tests: a cluster created with `initdb` in DIR, listening on a free loopback port only,
# with a `promptopt` database and user (password `promptopt`).
#
#   scripts/postgres-server.sh start DIR   # prints the URL (postgres://promptopt:promptopt@127.0.0.1:PORT/promptopt)
#   scripts/postgres-server.sh stop DIR
#
# PostgreSQL refuses to run as root: as root, the cluster is owned by and run as the `postgres`
# user the Debian package creates. The URL is also written to DIR/url; the log is DIR/postgres.log.
set -euo pipefail

usage() {
  echo "usage: $0 start|stop DIR" >&2
  exit 2
}
[ $# -eq 2 ] || usage
CMD="$1"
DIR="$2"

BIN="$(ls -d /usr/lib/postgresql/*/bin 2>/dev/null | sort -V | tail -1 || true)"
if [ -z "$BIN" ] || [ ! -x "$BIN/initdb" ]; then
  echo "postgres-server.sh: PostgreSQL is not installed (apt-get install postgresql)" >&2
  exit 1
fi

as_owner() {
  if [ "$(id -u)" -eq 0 ]; then
    runuser -u postgres -- "$@"
  else
    "$@"
  fi
}

case "$CMD" in
  start)
    mkdir -p "$DIR"
    DIR="$(cd "$DIR" && pwd)"
    if [ "$(id -u)" -eq 0 ]; then
      chown postgres "$DIR"
      # The postgres user must be able to reach DIR.
      chmod o+x "$(dirname "$DIR")" 2>/dev/null || true
    fi
    PORT="$(python3 -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1]); s.close()')"
    as_owner "$BIN/initdb" -D "$DIR/data" -U postgres --auth=trust --no-sync >/dev/null
    as_owner "$BIN/pg_ctl" -D "$DIR/data" -l "$DIR/postgres.log" -w -t 60 \
      -o "-p $PORT -k $DIR -c listen_addresses=127.0.0.1 -c fsync=off" start >/dev/null
    as_owner "$BIN/psql" -h 127.0.0.1 -p "$PORT" -U postgres -v ON_ERROR_STOP=1 -q \
      -c "CREATE USER promptopt PASSWORD 'promptopt'" \
      -c "CREATE DATABASE promptopt OWNER promptopt" >/dev/null
    URL="postgres://promptopt:promptopt@127.0.0.1:$PORT/promptopt"
    echo "$PORT" >"$DIR/port"
    echo "$URL" >"$DIR/url"
    echo "$URL"
    ;;
  stop)
    [ -d "$DIR/data" ] || exit 0
    as_owner "$BIN/pg_ctl" -D "$DIR/data" -m fast -w stop >/dev/null 2>&1 || true
    ;;
  *) usage ;;
esac
