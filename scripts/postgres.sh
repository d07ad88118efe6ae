#!/usr/bin/env bash
# Start (or reuse) a private PostgreSQL server for tests and benchmarks on 127.0.0.1 and print its
# URL. Installs PostgreSQL from Debian's packages when it is missing. Usage:
#   scripts/postgres.sh [start|stop|url]
set -euo pipefail

PORT="${TALLY_PG_PORT:-54329}"
DATA="${TALLY_PG_DATA:-/tmp/tally-pg-${PORT}}"
DB="${TALLY_PG_DB:-tally_test}"
URL="postgresql://postgres@127.0.0.1:${PORT}/${DB}"
action="${1:-start}"

pg_bin() {
  local dir
  dir=$(ls -d /usr/lib/postgresql/*/bin 2>/dev/null | sort -V | tail -n 1 || true)
  if [ -z "$dir" ] || [ ! -x "$dir/initdb" ]; then
    if [ "$(id -u)" != 0 ]; then
      echo "PostgreSQL is not installed and this user cannot install it (apt-get install postgresql)" >&2
      exit 1
    fi
    echo "installing PostgreSQL from Debian's packages..." >&2
    export DEBIAN_FRONTEND=noninteractive
    apt-get update -qq >&2
    apt-get install -y -qq postgresql >&2
    dir=$(ls -d /usr/lib/postgresql/*/bin | sort -V | tail -n 1)
  fi
  echo "$dir"
}

# PostgreSQL refuses to run as root: run its programs as the `postgres` user when we are root.
as_pg() {
  if [ "$(id -u)" = 0 ]; then
    id postgres >/dev/null 2>&1 || useradd --system --no-create-home postgres
    runuser -u postgres -- "$@"
  else
    "$@"
  fi
}

case "$action" in
  url)
    echo "$URL"
    exit 0
    ;;
  stop)
    BIN=$(pg_bin)
    [ -d "$DATA" ] && as_pg "$BIN/pg_ctl" -D "$DATA" -m fast stop >&2 || true
    exit 0
    ;;
esac

BIN=$(pg_bin)
if ! "$BIN/pg_isready" -q -h 127.0.0.1 -p "$PORT"; then
  if [ ! -f "$DATA/PG_VERSION" ]; then
    rm -rf "$DATA"
    mkdir -p "$DATA"
    [ "$(id -u)" = 0 ] && chown postgres "$DATA"
    as_pg "$BIN/initdb" -D "$DATA" -U postgres --auth=trust -E UTF8 --no-locale >/dev/null
  fi
  # Durability is traded for speed: this server only ever holds test and benchmark data.
  as_pg "$BIN/pg_ctl" -D "$DATA" -l "$DATA/server.log" -w -t 60 start -o \
    "-p $PORT -k /tmp -c listen_addresses=127.0.0.1 -c max_connections=300 -c fsync=off \
     -c synchronous_commit=off -c full_page_writes=off -c shared_buffers=256MB" >/dev/null
fi
if ! "$BIN/psql" -h 127.0.0.1 -p "$PORT" -U postgres -tAc "SELECT 1 FROM pg_database WHERE datname='$DB'" | grep -q 1; then
  "$BIN/createdb" -h 127.0.0.1 -p "$PORT" -U postgres "$DB"
fi
echo "$URL"
