#!/usr/bin/env bash
# From a fresh clone to the demo's first approval, as a new user goes:
# clone this repository's HEAD into a temporary directory, run scripts/demo
# (installs what is missing, builds, serves), then alice's DELETE is refused
# with a request, bob approves it with the CLI, and alice's DELETE runs.
# Prints the seconds to "serving" and to the approved statement.
#
#   bench/first-approval.sh
#
# Uses ports 6432 and 8080 (the demo's); stops the demo and removes the clone.
set -euo pipefail
here=$(cd "$(dirname "$0")/.." && pwd)
work=$(mktemp -d /tmp/jitgate-first.XXXXXX)
demo=""
cleanup() {
  [ -n "$demo" ] && pkill -INT -f "jitgate demo" 2>/dev/null || true
  [ -n "$demo" ] && wait "$demo" 2>/dev/null || true
  rm -rf "$work"
}
trap cleanup EXIT
git clone -q "$here" "$work/jitgate"
cd "$work/jitgate"
start=$(date +%s.%N)
scripts/demo > "$work/demo.log" 2>&1 &
demo=$!
until (echo > /dev/tcp/127.0.0.1/6432) 2>/dev/null && (echo > /dev/tcp/127.0.0.1/8080) 2>/dev/null; do
  kill -0 "$demo" 2>/dev/null || { cat "$work/demo.log"; exit 1; }
  sleep 0.5
done
served=$(date +%s.%N)
export PGPASSWORD=alice
alice() { psql -X -v ON_ERROR_STOP=0 "host=127.0.0.1 port=6432 dbname=app user=alice" -c "SET jitgate.reason = 'first approval'" -c "$1" 2>&1; }
out=$(alice "DELETE FROM orders WHERE id = 1" || true); grep -q "filed request 1" <<< "$out" || { echo "alice was not refused with request 1: $out"; exit 1; }
target/demo/jitgate approve 1 --user bob --password bob >/dev/null
out=$(alice "DELETE FROM orders WHERE id = 1" || true); grep -q "DELETE 1" <<< "$out" || { echo "the approved DELETE did not run: $out"; exit 1; }
done_at=$(date +%s.%N)
printf 'serving after %.0f s; first approved statement after %.0f s\n' \
  "$(echo "$served - $start" | bc)" "$(echo "$done_at - $start" | bc)"
