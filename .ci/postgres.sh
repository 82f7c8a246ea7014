#!/usr/bin/env bash
# Start a local PostgreSQL server for the ingest tests (idempotent) and print its DSN.
#
#   .ci/postgres.sh            -> postgresql://postgres:postgres@127.0.0.1:5432/postgres
#
# Installs the server with apt when no PostgreSQL binaries are found, starts the
# Debian cluster (pg_ctlcluster) when there is one, else initdb's a cluster into
# a temp dir owned by the postgres user. Sets the postgres role's password to
# "postgres" so tests connect over TCP with TOKENCENSUS_TEST_PG_DSN.
set -euo pipefail

PORT="${PGPORT:-5432}"
PASSWORD="${TOKENCENSUS_PG_PASSWORD:-postgres}"
DSN="postgresql://postgres:${PASSWORD}@127.0.0.1:${PORT}/postgres"

as_postgres() {
  if [ "$(id -un)" = postgres ]; then "$@"; else
    if command -v runuser >/dev/null; then runuser -u postgres -- "$@"; else su postgres -s /bin/sh -c "$(printf '%q ' "$@")"; fi
  fi
}

find_bindir() {
  local d
  for d in $(ls -d /usr/lib/postgresql/*/bin 2>/dev/null | sort -V -r); do
    [ -x "$d/postgres" ] && { echo "$d"; return 0; }
  done
  if command -v postgres >/dev/null && command -v initdb >/dev/null; then
    dirname "$(readlink -f "$(command -v postgres)")"; return 0
  fi
  return 1
}

ready() { pg_isready -q -h 127.0.0.1 -p "$PORT" 2>/dev/null || "$BINDIR/pg_isready" -q -h 127.0.0.1 -p "$PORT" 2>/dev/null; }

if ! BINDIR="$(find_bindir)"; then
  export DEBIAN_FRONTEND=noninteractive
  apt-get update >&2
  apt-get install -y postgresql >&2
  BINDIR="$(find_bindir)"
fi
id postgres >/dev/null 2>&1 || useradd --system --home /var/lib/postgresql --shell /bin/sh postgres

if ! ready; then
  VER="$(basename "$(dirname "$BINDIR")")"
  if command -v pg_ctlcluster >/dev/null && [ -d "/etc/postgresql/$VER/main" ]; then
    pg_ctlcluster "$VER" main start >&2 || true
  fi
fi
if ! ready; then
  DATA="${TOKENCENSUS_PG_DATA:-/tmp/tokencensus-pg}"
  if [ ! -s "$DATA/PG_VERSION" ]; then
    mkdir -p "$DATA"; chown postgres "$DATA"; chmod 700 "$DATA"
    as_postgres "$BINDIR/initdb" -D "$DATA" -U postgres --auth=trust >&2
  fi
  mkdir -p /var/run/postgresql && chown postgres /var/run/postgresql || true
  as_postgres "$BINDIR/pg_ctl" -D "$DATA" -l "$DATA/server.log" -w \
    -o "-c listen_addresses=127.0.0.1 -p $PORT -k /tmp" start >&2
fi
for _ in $(seq 1 30); do ready && break; sleep 1; done
ready || { echo "postgres did not start on 127.0.0.1:$PORT" >&2; exit 1; }

# Password for TCP logins (the Debian cluster uses scram on 127.0.0.1).
as_postgres psql -q -h /var/run/postgresql -p "$PORT" -d postgres \
  -c "ALTER ROLE postgres PASSWORD '${PASSWORD}'" >&2 2>/dev/null \
  || as_postgres psql -q -h /tmp -p "$PORT" -d postgres \
  -c "ALTER ROLE postgres PASSWORD '${PASSWORD}'" >&2 \
  || PGPASSWORD="$PASSWORD" psql -q "$DSN" -c "select 1" >/dev/null

echo "$DSN"
