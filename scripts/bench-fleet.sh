#!/usr/bin/env bash
# Benchmark the reference fleet end to end: wrk against the gateway's POST /api/orders, each
# request flowing gateway -> orders -> inventory, payments, notifications.
# Not run in CI. Needs wrk (`apt-get install -y wrk`).
#
# Usage: scripts/bench-fleet.sh [duration=15s] [connections=32] [threads=2]
set -euo pipefail

duration=${1:-15s}
connections=${2:-32}
threads=${3:-2}
root=$(cd "$(dirname "$0")/.." && pwd)
command -v wrk >/dev/null || { echo "wrk not found: apt-get install -y wrk" >&2; exit 2; }

cargo build --release --quiet --manifest-path "$root/Cargo.toml" -p faultline-cli
target=${CARGO_TARGET_DIR:-$root/target}
work=$(mktemp -d)
fleet_pid=
cleanup() {
    if [ -n "$fleet_pid" ]; then kill -TERM "$fleet_pid" 2>/dev/null || true; wait "$fleet_pid" 2>/dev/null || true; fi
    rm -rf "$work"
}
trap cleanup EXIT INT TERM

# Raise the gateway's rate limit so the benchmark measures the fleet, not the 429 path.
FL_GATEWAY_RATE_LIMIT=1000000 RUST_LOG=warn "$target/release/chaos" fleet up --log-dir "$work/logs" >"$work/table" &
fleet_pid=$!
for _ in $(seq 100); do grep -q '^gateway' "$work/table" 2>/dev/null && break; sleep 0.1; done
gateway=$(awk '$1 == "gateway" {print $2}' "$work/table")
[ -n "$gateway" ] || { echo "fleet did not start; logs in $work/logs" >&2; exit 3; }

cat >"$work/post.lua" <<'LUA'
wrk.method = "POST"
wrk.body = '{"sku":"A-1","qty":1}'
wrk.headers["Content-Type"] = "application/json"
LUA
curl -sf -X POST "$gateway/api/orders" -d '{"sku":"A-1","qty":1}' >/dev/null
echo "load: $(cut -d' ' -f1-3 /proc/loadavg)  cores: $(nproc)"
wrk -t"$threads" -c"$connections" -d"$duration" --latency -s "$work/post.lua" "$gateway/api/orders"
echo "gateway 5xx after the run:"
curl -s "$gateway/metrics" | grep -E '^http_server_requests_total\{.*route="/api/orders".*code="5' || echo "  none"
echo "load: $(cut -d' ' -f1-3 /proc/loadavg)"
