#!/usr/bin/env bash
# Replicas, side by side in one run: pgbench -S through HAProxy in front of two
# jitgate replicas (one PostgreSQL state store) vs through one replica alone
# vs PostgreSQL directly; and the latency from an approval on one replica's API
# to the held statement running on another (vs on the same one).
#
#   bench/replicas.sh [seconds-per-run] [rounds] [approval-rounds]
#
# Everything runs on loopback in a temporary directory and is stopped at exit.
set -euo pipefail
SECS=${1:-10}
ROUNDS=${2:-2}
APPROVALS=${3:-50}
CLIENTS=8
here=$(cd "$(dirname "$0")/.." && pwd)
cd "$here"

for c in haproxy pgbench; do command -v $c >/dev/null || { echo "$c missing: scripts/install-deps --tests" >&2; exit 2; }; done
python3 -c 'import psycopg' 2>/dev/null || { echo "psycopg missing: scripts/install-deps --tests" >&2; exit 2; }
PGBIN=$(dirname "$(command -v postgres 2>/dev/null || ls -d /usr/lib/postgresql/*/bin/postgres | sort -V | tail -1)")

cargo build --release -q -p jitgate
JITGATE=$here/target/release/jitgate

work=$(mktemp -d /tmp/jitgate-replicas.XXXXXX)
chmod 755 "$work"
as_pg() { if [ "$(id -u)" = 0 ]; then runuser -u postgres -- "$@"; else "$@"; fi; }
pids=()
cleanup() {
  for p in "${pids[@]}"; do kill "$p" 2>/dev/null || true; done
  [ -n "${KEEP_LOGS:-}" ] && cp "$work"/r*.log "$KEEP_LOGS"/ 2>/dev/null
  as_pg "$PGBIN/pg_ctl" -D "$work/data" stop -m immediate >/dev/null 2>&1 || true
  rm -rf "$work"
}
trap cleanup EXIT
free_port() { python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'; }
wait_port() { for _ in $(seq 100); do (echo >/dev/tcp/127.0.0.1/$1) 2>/dev/null && return; sleep 0.1; done; echo "port $1 never opened" >&2; exit 1; }

PGPORT=$(free_port); LB=$(free_port)
PW=benchpw
echo "$PW" > "$work/pw"; [ "$(id -u)" = 0 ] && chown postgres "$work" "$work/pw"
as_pg "$PGBIN/initdb" -D "$work/data" -U postgres --pwfile="$work/pw" --auth-local=trust \
  --auth-host=scram-sha-256 --no-sync -E UTF8 --locale=C >/dev/null
cat >> "$work/data/postgresql.conf" <<CONF
listen_addresses = '127.0.0.1'
port = $PGPORT
unix_socket_directories = '$work'
fsync = off
synchronous_commit = off
max_connections = 200
shared_buffers = 128MB
CONF
as_pg "$PGBIN/pg_ctl" -D "$work/data" -l "$work/pg.log" -w start >/dev/null
export PGPASSWORD=$PW
psql -q -h 127.0.0.1 -p "$PGPORT" -U postgres -c "CREATE DATABASE bench" -c "CREATE DATABASE jitstate" postgres
pgbench -q -i -s 10 -h 127.0.0.1 -p "$PGPORT" -U postgres bench >/dev/null 2>&1
psql -q -h 127.0.0.1 -p "$PGPORT" -U postgres bench -c \
  "CREATE ROLE bench_read; GRANT SELECT ON ALL TABLES IN SCHEMA public TO bench_read;
   CREATE ROLE bench_write; GRANT INSERT, UPDATE, DELETE ON ALL TABLES IN SCHEMA public TO bench_write;"
head -c 32 /dev/urandom | base64 > "$work/cluster.secret"

ports=(); apis=()
for i in 0 1; do
  port=$(free_port); api=$(free_port); ports+=("$port"); apis+=("$api")
  cat > "$work/r$i.toml" <<J
[gateway]
listen = "127.0.0.1:$port"
api_listen = "127.0.0.1:$api"
state = "postgres://postgres:$PW@127.0.0.1:$PGPORT/jitstate?sslmode=disable"
cluster_secret_file = "$work/cluster.secret"
on_missing_grant = "hold"
log_format = "plain"
[[database]]
name = "bench"
admin_url = "postgres://postgres:$PW@127.0.0.1:$PGPORT/bench"
baseline_roles = ["bench_read"]
tls = "disable"
[[group]]
name = "dev"
[[group]]
name = "leads"
[[user]]
name = "postgres"
password = "$PW"
groups = ["dev"]
[[user]]
name = "lead"
password = "$PW"
groups = ["leads"]
[[role]]
name = "bench_write"
database = "bench"
requesters = ["dev"]
chain = [{ approvers = ["leads"], min = 1 }]
[[rule]]
database = "bench"
actions = ["write"]
objects = ["public.*"]
role = "bench_write"
J
  JITGATE_LOG=${JITGATE_LOG:-warn} setsid "$JITGATE" serve --config "$work/r$i.toml" 2>"$work/r$i.log" &
  pids+=($!)
  wait_port "$port"; wait_port "$api"
done
cat > "$work/haproxy.cfg" <<H
global
  maxconn 2000
defaults
  mode tcp
  timeout connect 2s
  timeout client 120s
  timeout server 120s
frontend pg
  bind 127.0.0.1:$LB
  default_backend jitgate
backend jitgate
  balance roundrobin
  option httpchk GET /healthz
  http-check expect status 200
  server r0 127.0.0.1:${ports[0]} check port ${apis[0]} inter 1s
  server r1 127.0.0.1:${ports[1]} check port ${apis[1]} inter 1s
H
setsid haproxy -db -f "$work/haproxy.cfg" >/dev/null 2>&1 &
pids+=($!)
wait_port "$LB"

run() { # port mode-args...
  local port=$1; shift
  pgbench -n -h 127.0.0.1 -p "$port" -U postgres -c $CLIENTS -j 2 -T "$SECS" "$@" bench 2>&1 |
    awk '/^tps/ {print int($3); exit}'
}
declare -A tps
targets=(direct:$PGPORT one-replica:${ports[0]} haproxy+2:$LB)
for round in $(seq "$ROUNDS"); do
  for target in "${targets[@]}"; do
    t=${target%%:*}; port=${target#*:}
    v=$(run "$port" -S -M simple)
    tps[$t]="${tps[$t]:-} $v"
    echo "round $round  $t  $v tps" >&2
  done
done
median() { tr ' ' '\n' | grep -v '^$' | sort -n | awk '{a[NR]=$1} END {print (NR%2 ? a[(NR+1)/2] : int((a[NR/2]+a[NR/2+1])/2))}'; }
d=$(echo "${tps[direct]}" | median); o=$(echo "${tps[one-replica]}" | median); h=$(echo "${tps[haproxy+2]}" | median)
printf '\n| pgbench -S -M simple -c %s -j 2, %ss x %s rounds | direct | one replica | HAProxy + 2 replicas | (HAProxy + 2) / one |\n|---|---|---|---|---|\n' "$CLIENTS" "$SECS" "$ROUNDS"
printf '| tps | %s | %s | %s | %.2f |\n' "$d" "$o" "$h" "$(echo "$h/$o" | bc -l)"
printf '\n| approval -> held statement runs (ms) | rounds | p50 | p99 | max |\n|---|---|---|---|---|\n'
python3 bench/replicas.py "${ports[0]}" "${apis[0]}" "${ports[1]}" "${apis[1]}" "$APPROVALS"
