#!/usr/bin/env bash
# A throwaway PostgreSQL server for the tests and benchmarks (the audit store's production
# database): one cluster under .cache/postgres, listening on 127.0.0.1 only, database
# "modelyard", trust authentication (loopback, no password to leak), fsync off (a test cluster
# is rebuilt, never recovered). Uses Debian's `postgresql` package, which `make setup` installs.
#
#   scripts/postgres.sh start   start it (reusing one already running) and print its URL
#   scripts/postgres.sh url     print its URL (it must be running)
#   scripts/postgres.sh stop    stop it
#
# Run as root, the server runs as the `postgres` user (PostgreSQL refuses to run as root).
# MODELYARD_PG_DIR overrides the directory, MODELYARD_PG_PORT the port (default: a free one,
# chosen once and kept in <dir>/port).
set -euo pipefail
cd "$(dirname "$0")/.."

DIR="$(realpath -m "${MODELYARD_PG_DIR:-.cache/postgres}")"
DATA="$DIR/data"
BIN="$(ls -d /usr/lib/postgresql/*/bin 2>/dev/null | sort -V | tail -n 1 || true)"
[ -n "$BIN" ] || { echo "postgres.sh: PostgreSQL is not installed (run make setup)" >&2; exit 1; }

as_owner() {  # run a server tool as the cluster's owner
  if [ "$(id -u)" -eq 0 ]; then runuser -u postgres -- "$@"; else "$@"; fi
}

port() {
  if [ ! -s "$DIR/port" ]; then
    local chosen="${MODELYARD_PG_PORT:-}"
    [ -n "$chosen" ] || chosen="$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])')"
    echo "$chosen" >"$DIR/port"
  fi
  cat "$DIR/port"
}

url() { echo "postgresql://postgres@127.0.0.1:$(port)/modelyard"; }

init() {
  [ -f "$DATA/PG_VERSION" ] && return
  mkdir -p "$DIR"
  rm -rf "$DATA"
  mkdir -p "$DATA"
  [ "$(id -u)" -ne 0 ] || chown -R postgres: "$DIR"
  as_owner "$BIN/initdb" -D "$DATA" -U postgres --auth=trust -E UTF8 --locale=C.UTF-8 >"$DIR/initdb.log"
}

running() { as_owner "$BIN/pg_ctl" -D "$DATA" status >/dev/null 2>&1; }

start() {
  init
  local p; p="$(port)"
  if ! running; then
    [ "$(id -u)" -ne 0 ] || chown postgres: "$DIR" "$DIR/port"
    as_owner "$BIN/pg_ctl" -D "$DATA" -l "$DIR/server.log" -w -t 60 start \
      -o "-c listen_addresses=127.0.0.1 -p $p -k $DATA -c fsync=off -c full_page_writes=off" >/dev/null
  fi
  local exists
  exists="$(as_owner "$BIN/psql" -h 127.0.0.1 -p "$p" -U postgres -tAc \
    "SELECT 1 FROM pg_database WHERE datname = 'modelyard'")"
  [ "$exists" = 1 ] || as_owner "$BIN/createdb" -h 127.0.0.1 -p "$p" -U postgres modelyard
  url
}

stop() {
  [ -f "$DATA/PG_VERSION" ] && running || return 0
  as_owner "$BIN/pg_ctl" -D "$DATA" -w -m fast stop >/dev/null
}

case "${1:-}" in
  start) start ;;
  stop) stop ;;
  url) running || { echo "postgres.sh: not running (scripts/postgres.sh start)" >&2; exit 1; }; url ;;
  *) echo "usage: $0 start|stop|url" >&2; exit 2 ;;
esac
