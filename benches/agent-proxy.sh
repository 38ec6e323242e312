#!/usr/bin/env bash
# Agent proxy overhead with no fault vs a direct connection, in the same run.
# Not part of CI: figures depend on the host. Run it on an idle machine (check `uptime`).
# Acceptance (issue 6): added p50 <= 50 us, throughput >= 0.9x direct.
set -euo pipefail
cd "$(dirname "$0")/.."
echo "load: $(uptime)"
cargo build --quiet --release -p faultline-agent --example proxy_overhead
for layout in split shared; do
  "${CARGO_TARGET_DIR:-target}/release/examples/proxy_overhead" "$layout"
done
