#!/usr/bin/env bash
# Memory per idle client connection: opens N idle sessions through jitgate
# (each with its upstream connection) and reports the growth of jitgate's RSS.
#   bench/memory.sh [N]      (default 1000)
set -euo pipefail
N=${1:-1000}
here=$(cd "$(dirname "$0")/.." && pwd); cd "$here"
PGBIN=$(dirname "$(command -v postgres 2>/dev/null || ls -d /usr/lib/postgresql/*/bin/postgres | sort -V | tail -1)")
cargo build --release -q -p jitgate
work=$(mktemp -d /tmp/jitgate-mem.XXXXXX); chmod 755 "$work"
as_pg() { if [ "$(id -u)" = 0 ]; then runuser -u postgres -- "$@"; else "$@"; fi; }
jpid=""
cleanup() { [ -n "$jpid" ] && kill "$jpid" 2>/dev/null; as_pg "$PGBIN/pg_ctl" -D "$work/data" stop -m immediate >/dev/null 2>&1 || true; rm -rf "$work"; }
trap cleanup EXIT
free_port() { python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'; }
PGPORT=$(free_port); JPORT=$(free_port); APIPORT=$(free_port)
echo pw > "$work/pw"; [ "$(id -u)" = 0 ] && chown postgres "$work" "$work/pw"
as_pg "$PGBIN/initdb" -D "$work/data" -U postgres --pwfile="$work/pw" --auth-host=scram-sha-256 --auth-local=trust --no-sync -E UTF8 >/dev/null
printf "listen_addresses='127.0.0.1'\nport=$PGPORT\nunix_socket_directories='$work'\nfsync=off\nmax_connections=$((N + 50))\nshared_buffers=128MB\n" >> "$work/data/postgresql.conf"
as_pg "$PGBIN/pg_ctl" -D "$work/data" -l "$work/pg.log" -w start >/dev/null
cat > "$work/j.toml" <<J
[gateway]
listen = "127.0.0.1:$JPORT"
api_listen = "127.0.0.1:$APIPORT"
state = "sqlite://$work/state.db"
[[database]]
name = "postgres"
admin_url = "postgres://postgres:pw@127.0.0.1:$PGPORT/postgres"
tls = "disable"
[[user]]
name = "u"
password = "pw"
J
JITGATE_LOG=warn ./target/release/jitgate serve --config "$work/j.toml" 2>"$work/j.log" &
jpid=$!
for _ in $(seq 50); do (echo >/dev/tcp/127.0.0.1/$JPORT) 2>/dev/null && break; sleep 0.1; done
rss() { awk '/VmRSS/ {print $2}' "/proc/$jpid/status"; }
python3 - "$JPORT" "$N" "$jpid" <<'PY'
import sys, time, psycopg
port, n, pid = int(sys.argv[1]), int(sys.argv[2]), sys.argv[3]
def rss():
    return int(next(l.split()[1] for l in open(f"/proc/{pid}/status") if l.startswith("VmRSS")))
dsn = f"host=127.0.0.1 port={port} dbname=postgres user=u password=pw"
warm = [psycopg.connect(dsn) for _ in range(10)]   # allocator and pools warmed up
before = rss()
conns = [psycopg.connect(dsn) for _ in range(n)]
for c in conns[:: max(1, n // 20)]:
    c.execute("SELECT 1").fetchone()
time.sleep(1)
after = rss()
print(f"jitgate RSS: {before} KiB with 10 sessions, {after} KiB with {n + 10}: "
      f"{(after - before) / n:.1f} KiB per idle client connection (client and upstream sockets, buffers, task)")
PY
