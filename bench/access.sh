#!/usr/bin/env bash
# Access-model speed: audit appends per second (SQLite, and PostgreSQL when a
# throwaway cluster can be started), and approval -> grant-visible latency.
#   bench/access.sh
set -euo pipefail
cd "$(dirname "$0")/.."
cargo build --release -q -p store --example access_bench
PGBIN=$(dirname "$(command -v postgres 2>/dev/null || ls -d /usr/lib/postgresql/*/bin/postgres | sort -V | tail -1)")
work=$(mktemp -d /tmp/jitgate-access.XXXXXX); chmod 755 "$work"
as_pg() { if [ "$(id -u)" = 0 ]; then runuser -u postgres -- "$@"; else "$@"; fi; }
cleanup() { as_pg "$PGBIN/pg_ctl" -D "$work/data" stop -m immediate >/dev/null 2>&1 || true; rm -rf "$work"; }
trap cleanup EXIT
port=$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])')
echo benchpw > "$work/pw"; [ "$(id -u)" = 0 ] && chown postgres "$work" "$work/pw"
as_pg "$PGBIN/initdb" -D "$work/data" -U postgres --pwfile="$work/pw" --auth-host=scram-sha-256 --auth-local=trust -E UTF8 >/dev/null
# Durable commits, as a real state store would run (fsync on).
printf "listen_addresses='127.0.0.1'\nport=$port\nunix_socket_directories='$work'\n" >> "$work/data/postgresql.conf"
as_pg "$PGBIN/pg_ctl" -D "$work/data" -l "$work/pg.log" -w start >/dev/null
./target/release/examples/access_bench "postgres://postgres:benchpw@127.0.0.1:$port/postgres"
