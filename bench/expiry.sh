#!/usr/bin/env bash
# Expiry speed: expiry -> refusal at the gateway, and expiry -> membership
# revoked in the database, with N grants ending in the same second.
#   bench/expiry.sh [grants=1000] [writing-sessions=50]
set -euo pipefail
cd "$(dirname "$0")/.."
cargo build --release -q -p enforcer --example expiry_bench
JITGATE_LOG=${JITGATE_LOG:-error} ./target/release/examples/expiry_bench "${1:-1000}" "${2:-50}"
