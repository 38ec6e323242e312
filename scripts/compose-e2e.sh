#!/usr/bin/env bash
# Compose mode end to end (issue 8, "Compose end to end"); scripts/ci runs it as root.
#
#  1. builds the images with deploy/compose/build-images.sh under a tag of its own;
#  2. brings the stack up on this machine's Docker engine under a project of its own,
#     with a fresh agent token;
#  3. `chaos run --env compose experiments/` must PASS (exit 0): every shipped
#     experiment compose mode can run (the compose-only ones and the promql one, on the
#     stack's Prometheus, included) passes against the resilient fleet, and the rest
#     (pod selectors) are listed as skipped with their reason;
#  4. the dead man's switch: the agent SIGSTOPs notifications' main process, pauses
#     inventory and kills payments under 4 s leases, and its container is `docker kill`ed
#     at once, never restarted; the agent's watchdog, which left the container's cgroups,
#     ends each fault at its lease's deadline (not before TTL - 0.3 s, not after
#     TTL + 1 s). The agent then starts again for the next step;
#  5. with the fleet's FL_RESILIENCE=off the quickstart must FAIL (exit 1; the report's
#     outcome is `fail`, or `aborted` when the abort condition stops it first);
#  6. tears everything down (containers, network, volume, its images) from an EXIT
#     trap, so also on failure, and checks nothing of the project is left.
#
# Binary: $CHAOS_BIN, default the static release build, built here when missing:
#   RUSTFLAGS='-C target-feature=+crt-static' \
#     cargo build --release --target x86_64-unknown-linux-gnu -p faultline-cli
# Under CI=true a missing prerequisite fails; otherwise the test skips and says why.
set -euo pipefail
cd "$(dirname "$0")/.."
root="$PWD"
t0=$SECONDS

log() { printf '[compose-e2e %3ss] %s\n' "$((SECONDS - t0))" "$*"; }
missing() {
  if [ "${CI:-}" = "true" ]; then
    echo "compose-e2e: FAIL: $1 (install: $2)" >&2
    exit 1
  fi
  echo "compose-e2e: SKIP: $1 (install: $2)" >&2
  exit 0
}

command -v docker >/dev/null || missing "docker is not installed" "apt-get install docker.io"
docker info >/dev/null 2>&1 || missing "the Docker engine is not reachable" "apt-get install docker.io; systemctl start docker (run as root)"
if docker compose version >/dev/null 2>&1; then
  dc=(docker compose)
elif command -v docker-compose >/dev/null; then
  dc=(docker-compose)
else
  missing "neither 'docker compose' nor docker-compose exists" "apt-get install docker-compose"
fi
command -v prometheus >/dev/null || missing "prometheus is not installed (its binary goes into an image)" "apt-get install prometheus"
for tool in nft tc ip ss; do
  command -v "$tool" >/dev/null || missing "$tool is not installed (it goes into the agent image)" "apt-get install nftables iproute2"
done
command -v curl >/dev/null || missing "curl is not installed" "apt-get install curl"

target_dir="${CARGO_TARGET_DIR:-$root/target}"
bin="${CHAOS_BIN:-$target_dir/x86_64-unknown-linux-gnu/release/chaos}"
if [ ! -x "$bin" ]; then
  log "building the static release binary ($bin)"
  RUSTFLAGS='-C target-feature=+crt-static' \
    cargo build --release --locked --target x86_64-unknown-linux-gnu -p faultline-cli
fi

project="fle2e$$"
export COMPOSE_PROJECT_NAME="$project" FL_IMAGE_TAG="$project"
work="$(mktemp -d)"
export FL_AGENT_TOKEN_FILE="$work/agent-token"
head -c 32 /dev/urandom | base64 >"$FL_AGENT_TOKEN_FILE"
chmod 0600 "$FL_AGENT_TOKEN_FILE"
dc+=(--project-directory "$root/deploy/compose" -f "$root/deploy/compose/compose.yaml" -p "$project")

leftovers() {
  local label="label=com.docker.compose.project=$project"
  {
    docker ps -aq --filter "$label"
    docker network ls -q --filter "$label"
    docker volume ls -q --filter "$label"
    docker images -q "faultline/*:$project"
  } | sort -u
}

teardown() {
  local rc=$?
  trap - EXIT
  if [ "$rc" -ne 0 ]; then
    log "failed (exit $rc); last logs:"
    "${dc[@]}" logs --no-color --tail=30 2>&1 | tail -120 || true
    log "the agent's warnings and errors:"
    "${dc[@]}" logs --no-color agent 2>&1 | grep -E '"level":"(WARN|ERROR)"' | tail -30 || true
    # Last, so a log that keeps only the tail still says why.
    if [ -s "$work/why" ]; then
      log "why it failed:"
      cat "$work/why"
    fi
  fi
  log "tearing down project $project"
  "${dc[@]}" down --volumes --remove-orphans --timeout 10 >/dev/null 2>&1 || true
  for image in chaos agent prometheus; do
    docker rmi -f "faultline/$image:$project" >/dev/null 2>&1 || true
  done
  rm -rf "$work"
  local left
  left="$(leftovers)"
  if [ -n "$left" ]; then
    echo "compose-e2e: FAIL: left behind after teardown: $left" >&2
    exit 1
  fi
  log "nothing of $project is left (containers, networks, volumes, images)"
  exit "$rc"
}
trap teardown EXIT

published() { # service port -> host:port
  docker port "$project-$1-1" "$2" | grep -m1 '^127\.0\.0\.1:'
}

wait_ready() {
  local deadline=$((SECONDS + 60)) gw ag
  while :; do
    gw="$(published gateway 8080 || true)"
    ag="$(published agent 7070 || true)"
    if [ -n "$gw" ] && [ -n "$ag" ] &&
      curl -fsS -o /dev/null "http://$gw/readyz" &&
      curl -fsS -o /dev/null "http://$ag/healthz"; then
      return 0
    fi
    [ "$SECONDS" -lt "$deadline" ] || fail "the stack did not become ready within 60s"
    sleep 1
  done
}

# Fails the test: $1 is also printed last, after the logs, by the teardown.
fail() {
  echo "compose-e2e: $1" | tee -a "$work/why" >&2
  exit 1
}

# The experiments of suite index $1 that did not pass, with their reasons.
not_passed() {
  python3 - "$1" <<'PY' || echo "compose-e2e: no suite index at $1"
import json, sys
index = json.load(open(sys.argv[1]))
for e in index["experiments"]:
    if e["outcome"] not in ("pass", "skipped"):
        print(f"  {e['name']}: {e['outcome']}: {e['reason']}")
PY
}

# Runs experiments ($3...) against the stack; $1 is the expected exit code, $2 names
# the reports.
run_compose() {
  local want="$1" name="$2" rc=0 start=$SECONDS
  shift 2
  "$bin" run --env compose --compose-project "$project" --no-progress \
    --json "$work/$name.json" --junit "$work/$name.xml" \
    "$@" >"$work/$name.out" 2>&1 || rc=$?
  tail -40 "$work/$name.out"
  log "$name: chaos run exited $rc in $((SECONDS - start))s (want $want)"
  if [ "$rc" -ne "$want" ]; then
    cat "$work/$name.out" >&2
    not_passed "$work/$name.json" >"$work/why"
    return 1
  fi
}

start=$SECONDS
"$root/deploy/compose/build-images.sh" "$bin"
log "images built in $((SECONDS - start))s"

start=$SECONDS
"${dc[@]}" up -d
wait_ready
log "stack up and ready in $((SECONDS - start))s"

mapfile -t suite < <(ls experiments/*.yaml)
run_compose 0 resilient "${suite[@]}"
# The suite index: every experiment passed or was skipped, and the compose-only and
# promql experiments are among those that ran.
python3 - "$work/resilient.json" 2>"$work/why" <<'PY'
import json, sys
index = json.load(open(sys.argv[1]))
runs = {e["name"]: e["outcome"] for e in index["experiments"]}
bad = {n: o for n, o in runs.items() if o not in ("pass", "skipped")}
assert not bad, f"experiments that did not pass: {bad}"
for must in ("notifications-paused", "inventory-restarted", "payments-killed", "orders-memory-pressure", "payments-latency-cpu"):
    assert runs.get(must) == "pass", f"{must} did not run and pass in compose mode: {runs.get(must)}"
print(f"compose suite: {sum(o == 'pass' for o in runs.values())} passed, {sum(o == 'skipped' for o in runs.values())} skipped")
PY

# The dead man's switch survives `docker kill` of the agent's container: three faults
# the kernel cannot time out (SIGSTOP of notifications' main process, a paused inventory,
# a killed payments) under a 4 s lease; the agent's container is killed right after and
# not restarted. Each must end between TTL - 0.3 s and TTL + 1 s after its apply.
ag="$(published agent 7070)"
ttl_ms=4000
docker update --restart=no "$project-agent-1" >/dev/null
apply_fault() { # id target-json fault-json -> apply time in ms
  local t
  t=$(date +%s%3N)
  curl -fsS -o /dev/null -X POST "http://$ag/v1/faults" \
    -H "authorization: Bearer $(cat "$FL_AGENT_TOKEN_FILE")" -H 'content-type: application/json' \
    -d "{\"id\":\"$1\",\"experiment\":\"compose-e2e\",\"target\":$2,\"fault\":$3,\"ttl\":\"${ttl_ms}ms\"}"
  echo "$t"
}
container_id() { docker inspect -f '{{.Id}}' "$project-$1-1"; }
notifications_pid="$(docker inspect -f '{{.State.Pid}}' "$project-notifications-1")"
stop_ms=$(apply_fault watchdog-stop "{\"name\":\"notifications\",\"pid\":$notifications_pid}" '{"process":{"signal":"SIGSTOP"}}')
pause_ms=$(apply_fault watchdog-pause "{\"name\":\"inventory\",\"containerId\":\"$(container_id inventory)\"}" '{"container":{"action":"pause"}}')
kill_ms=$(apply_fault watchdog-kill "{\"name\":\"payments\",\"containerId\":\"$(container_id payments)\"}" '{"container":{"action":"kill"}}')
docker kill "$project-agent-1" >/dev/null
stopped() { [ "$(awk '{sub(/.*\) /, ""); print substr($0, 1, 1)}' "/proc/$notifications_pid/stat")" = T ]; }
paused() { [ "$(docker inspect -f '{{.State.Paused}}' "$project-inventory-1")" = true ]; }
killed() { [ "$(docker inspect -f '{{.State.Running}}' "$project-payments-1")" = false ]; }
faults=("stopped $stop_ms SIGSTOP" "paused $pause_ms pause" "killed $kill_ms kill")
for fault in "${faults[@]}"; do
  set -- $fault
  $1 || { fail "the $3 fault is not in force after the apply"; }
done
# One loop watches all three, so each end is seen within a round of checks.
while [ "${#faults[@]}" -gt 0 ]; do
  left=()
  for fault in "${faults[@]}"; do
    set -- $fault
    if $1; then
      if [ $(($(date +%s%3N) - $2)) -gt $((ttl_ms + 1000)) ]; then
        fail "FAIL: the $3 fault outlived TTL + 1 s with the agent container killed"
      fi
      left+=("$fault")
      continue
    fi
    ended_ms=$(($(date +%s%3N) - $2))
    log "watchdog: $3 with ttl ${ttl_ms}ms ended ${ended_ms}ms after its apply, agent container killed"
    [ "$ended_ms" -ge $((ttl_ms - 300)) ] || { fail "FAIL: $3 ended before its lease (${ended_ms}ms): not the watchdog's doing"; }
  done
  faults=("${left[@]}")
  sleep 0.02
done
[ "$(docker inspect -f '{{.State.Running}}' "$project-agent-1")" = false ] || { fail "the agent container came back; the watchdog was not alone"; }
docker update --restart=unless-stopped "$project-agent-1" >/dev/null
docker start "$project-agent-1" >/dev/null
wait_ready

start=$SECONDS
FL_RESILIENCE=off "${dc[@]}" up -d
wait_ready
log "fleet recreated with FL_RESILIENCE=off in $((SECONDS - start))s"
docker inspect -f '{{range .Config.Env}}{{println .}}{{end}}' "$project-orders-1" | grep -qx 'FL_RESILIENCE=off'

run_compose 1 fragile experiments/quickstart.yaml
# Exit 1 is an SLO violation or an abort (the quickstart's abort condition, gateway
# errors above 20% for 5s, usually stops a fragile fleet's run early).
grep -Eq '"outcome": *"(fail|aborted)"' "$work/fragile.json" || { fail "report says neither fail nor aborted"; }

log "PASS: resilient fleet passed, fragile fleet failed"
