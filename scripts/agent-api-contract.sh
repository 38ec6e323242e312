#!/usr/bin/env bash
# The agent API's contract, checked by schemathesis (PyPI) against a live `chaos agent`:
# every operation of docs/agent-openapi.json gets generated requests, valid and invalid,
# and every answer must be no 5xx, a documented status and content type, a body that
# matches its schema, a 4xx for data the schema forbids, a 401 without the token, and a
# 405 with `Allow` for a method a path does not take (QUERY included).
#
# Not run: `positive_data_acceptance`. A request the schema allows may still be refused
# by design: 403 `protected` or 422 `target_not_found` (a PID must exist and be allowed).
#
# Generated requests name arbitrary PIDs, containers and pods, and the agent is root. So
# the agent and schemathesis run in fresh PID and network namespaces (no process of the
# machine is visible, no network but their own loopback), the agent's allow-list matches
# no cgroup (every process target is refused with 403 `protected` before any backend
# runs), and its Docker socket does not exist. A fault cannot land anywhere.
#
# Usage: CHAOS_BIN=target/release/chaos bash scripts/agent-api-contract.sh [MAX_EXAMPLES]
set -euo pipefail
cd "$(dirname "$0")/.."
chaos_bin="${CHAOS_BIN:-target/release/chaos}"
examples="${1:-60}"
venv="${SCHEMATHESIS_VENV:-${CARGO_TARGET_DIR:-$PWD/target}/schemathesis-venv}"

[ "$(id -u)" -eq 0 ] || { echo "agent-api-contract: needs root (PID and network namespaces)" >&2; exit 1; }
[ -x "$chaos_bin" ] || { echo "agent-api-contract: no chaos binary at $chaos_bin" >&2; exit 1; }
chaos_bin="$(realpath "$chaos_bin")"
if [ ! -x "$venv/bin/schemathesis" ]; then
  if ! python3 -m venv "$venv" 2>/dev/null; then
    # Debian's python3 keeps venv (ensurepip) in a package of its own.
    rm -rf "$venv"
    apt-get update -qq && apt-get install -y -qq --no-install-recommends python3-venv >/dev/null
    python3 -m venv "$venv"
  fi
  "$venv/bin/pip" install --quiet --disable-pip-version-check 'schemathesis>=4.0,<5'
fi
echo "schemathesis $("$venv/bin/schemathesis" --version | awk '{print $NF}'), $examples examples per operation"

work="$(mktemp -d)"
trap 'rm -rf "$work"' EXIT
head -c 32 /dev/urandom | od -An -tx1 | tr -d ' \n' >"$work/token"

# Inside the namespaces: loopback up, the agent on a fixed port, then schemathesis.
unshare --pid --fork --mount-proc --net --kill-child -- env \
  CHAOS_BIN="$chaos_bin" WORK="$work" VENV="$venv" EXAMPLES="$examples" \
  DOCKER_HOST="unix://$work/no-docker.sock" bash -euo pipefail -c '
ip link set lo up
"$CHAOS_BIN" agent --listen 127.0.0.1:7070 --token-file "$WORK/token" \
  --state-dir "$WORK/state" --allow cgroup:/faultline-contract-matches-nothing \
  --log-format json >"$WORK/agent.out" 2>"$WORK/agent.log" &
agent=$!
for _ in $(seq 100); do
  grep -q "listening on" "$WORK/agent.out" 2>/dev/null && break
  sleep 0.1
done
grep -q "listening on" "$WORK/agent.out" || { cat "$WORK/agent.log" >&2; exit 1; }
status=0
schema="$PWD/docs/agent-openapi.json"
cd "$WORK"  # schemathesis keeps a cache under the working directory
"$VENV/bin/schemathesis" run "$schema" --url http://127.0.0.1:7070 \
  --header "Authorization: Bearer $(cat "$WORK/token")" \
  --checks all --exclude-checks positive_data_acceptance \
  --max-examples "$EXAMPLES" --seed 20261206 --workers 1 \
  --generation-database none --no-color --warnings off || status=$?
kill -0 "$agent" 2>/dev/null || { echo "the agent died during the run" >&2; tail -20 "$WORK/agent.log" >&2; exit 1; }
kill -TERM "$agent"; wait "$agent" || true
exit "$status"
'
