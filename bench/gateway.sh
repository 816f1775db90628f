#!/usr/bin/env bash
# Gateway overhead, side by side in one run: pgbench against PostgreSQL directly,
# through pgbouncer (session mode) and through jitgate, alternating, same machine.
#
#   bench/gateway.sh [seconds-per-run] [rounds]
#
# Prints TPS per target and mode, and the ratios jitgate/pgbouncer and
# jitgate/direct (medians over rounds). Everything runs on loopback in a
# temporary directory and is stopped at exit.
set -euo pipefail
SECS=${1:-10}
ROUNDS=${2:-2}
CLIENTS=8
here=$(cd "$(dirname "$0")/.." && pwd)
cd "$here"

command -v pgbouncer >/dev/null || { echo "pgbouncer missing: apt-get install pgbouncer" >&2; exit 2; }
command -v pgbench >/dev/null || { echo "pgbench missing: apt-get install postgresql-client" >&2; exit 2; }
PGBIN=$(dirname "$(command -v postgres 2>/dev/null || ls -d /usr/lib/postgresql/*/bin/postgres | sort -V | tail -1)")

cargo build --release -q -p jitgate
JITGATE=$here/target/release/jitgate

work=$(mktemp -d /tmp/jitgate-bench.XXXXXX)
chmod 755 "$work"
as_pg() { if [ "$(id -u)" = 0 ]; then runuser -u postgres -- "$@"; else "$@"; fi; }
pids=()
cleanup() {
  for p in "${pids[@]}"; do kill "$p" 2>/dev/null || true; done
  as_pg "$PGBIN/pg_ctl" -D "$work/data" stop -m immediate >/dev/null 2>&1 || true
  rm -rf "$work"
}
trap cleanup EXIT
free_port() { python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'; }

PGPORT=$(free_port); BPORT=$(free_port); JPORT=$(free_port)
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
psql -q -h 127.0.0.1 -p "$PGPORT" -U postgres -c "CREATE DATABASE bench" postgres
pgbench -q -i -s 10 -h 127.0.0.1 -p "$PGPORT" -U postgres bench >/dev/null 2>&1
psql -q -h 127.0.0.1 -p "$PGPORT" -U postgres bench -c \
  "CREATE ROLE bench_read; GRANT SELECT ON ALL TABLES IN SCHEMA public TO bench_read;
   CREATE ROLE bench_write; GRANT INSERT, UPDATE, DELETE ON ALL TABLES IN SCHEMA public TO bench_write;"

# pgbouncer, session mode, SCRAM toward clients and the server (same as jitgate).
cat > "$work/userlist.txt" <<U
"postgres" "$PW"
U
cat > "$work/pgbouncer.ini" <<B
[databases]
bench = host=127.0.0.1 port=$PGPORT dbname=bench
[pgbouncer]
listen_addr = 127.0.0.1
listen_port = $BPORT
unix_socket_dir =
auth_type = scram-sha-256
auth_file = $work/userlist.txt
pool_mode = session
default_pool_size = 40
max_client_conn = 200
logfile = $work/pgbouncer.log
B
[ "$(id -u)" = 0 ] && chown postgres "$work/pgbouncer.ini" "$work/userlist.txt"
as_pg setsid pgbouncer "$work/pgbouncer.ini" >/dev/null 2>&1 &
pids+=($!)

# Classification and policy on: a managed write role and a rule, as in production.
cat > "$work/jitgate.toml" <<J
[gateway]
listen = "127.0.0.1:$JPORT"
api_listen = "127.0.0.1:$(free_port)"
state = "sqlite://$work/state.db"
log_format = "plain"
worker_threads = ${WORKERS:-1}
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
JITGATE_LOG=warn setsid "$JITGATE" serve --config "$work/jitgate.toml" 2>"$work/jitgate.log" &
pids+=($!)
for p in "$BPORT" "$JPORT"; do
  for _ in $(seq 50); do (echo >/dev/tcp/127.0.0.1/$p) 2>/dev/null && break; sleep 0.1; done
done

run() { # target port mode-args...
  local port=$1; shift
  pgbench -n -h 127.0.0.1 -p "$port" -U postgres -c $CLIENTS -j 2 -T "$SECS" "$@" bench 2>&1 |
    awk '/^tps/ {print int($3); exit}'
}
if [ -n "${STRACE:-}" ]; then # STRACE=1: syscalls per transaction of the gateway
  jpid=${pids[-1]}
  strace -c -f -p "$jpid" -o "$work/strace.txt" >/dev/null 2>&1 &
  st=$!
  pgbench -n -h 127.0.0.1 -p "$JPORT" -U postgres -c $CLIENTS -j 2 -T "$SECS" -S -M simple bench 2>&1 | grep -E "^number of transactions actually"
  kill -INT "$st"; wait "$st" || true; cat "$work/strace.txt"
  exit 0
fi
if [ -n "${PROFILE:-}" ]; then # PROFILE=1: where jitgate's CPU goes under -S simple
  jpid=${pids[-1]}
  perf record -e cpu-clock -F 2000 -g -p "$jpid" -o "$work/perf.data" -- sleep "$SECS" >/dev/null 2>&1 &
  perfpid=$!
  run "$JPORT" -S -M simple >/dev/null; wait "$perfpid"
  perf report -i "$work/perf.data" ${PERF_REPORT_ARGS:---no-children --percent-limit 1.5} --stdio 2>/dev/null | grep -v '^$' | head -${PROFILE_LINES:-80}
  exit 0
fi
declare -A tps
modes=("simple:-S -M simple" "extended:-S -M extended" "prepared:-S -M prepared" "connect:-S -C")
if [ -n "${MODES:-}" ]; then # e.g. MODES="simple prepared" for a quicker look
  sel=(); for m in "${modes[@]}"; do [[ " $MODES " == *" ${m%%:*} "* ]] && sel+=("$m"); done; modes=("${sel[@]}")
fi
for round in $(seq "$ROUNDS"); do
  for m in "${modes[@]}"; do
    name=${m%%:*}; args=${m#*:}
    for target in direct:$PGPORT pgbouncer:$BPORT jitgate:$JPORT; do
      t=${target%%:*}; port=${target#*:}
      # shellcheck disable=SC2086
      v=$(run "$port" $args)
      tps[$name,$t]="${tps[$name,$t]:-} $v"
      echo "round $round  $name  $t  $v tps" >&2
    done
  done
done
median() { tr ' ' '\n' | grep -v '^$' | sort -n | awk '{a[NR]=$1} END {print (NR%2 ? a[(NR+1)/2] : int((a[NR/2]+a[NR/2+1])/2))}'; }
printf '\n| mode (pgbench -c %s -j 2, %ss x %s rounds) | direct | pgbouncer | jitgate | jitgate/pgbouncer | jitgate/direct |\n|---|---|---|---|---|---|\n' "$CLIENTS" "$SECS" "$ROUNDS"
for m in "${modes[@]}"; do
  name=${m%%:*}
  d=$(echo "${tps[$name,direct]}" | median); b=$(echo "${tps[$name,pgbouncer]}" | median); j=$(echo "${tps[$name,jitgate]}" | median)
  printf '| %s | %s | %s | %s | %.2f | %.2f |\n' "$name" "$d" "$b" "$j" "$(echo "$j/$b" | bc -l)" "$(echo "$j/$d" | bc -l)"
done
