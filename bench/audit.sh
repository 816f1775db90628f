#!/usr/bin/env bash
# Write-ahead audit: the latency it adds to a statement run under a grant
# (SQLite state store on disk, synchronous = FULL), with 1 and 8 sessions.
#   bench/audit.sh [statements-per-session=2000]
set -euo pipefail
cd "$(dirname "$0")/.."
cargo build --release -q -p enforcer --example audit_bench
JITGATE_LOG=${JITGATE_LOG:-error} ./target/release/examples/audit_bench "${1:-2000}"
