#!/usr/bin/env bash
# Compares faultline-http with a minimal hyper 1.x server, in the same run, with the same
# plaintext and JSON handlers. Not part of CI (needs wrk and two otherwise idle cores).
#
#   benches/http-vs-hyper.sh            # 3 rounds of 10 s per measurement
#   ROUNDS=5 DURATION=15 benches/http-vs-hyper.sh
#
# Each server runs pinned to core 0 (taskset), wrk to core 1, `-t1 -c64`. Rounds rotate the
# server order. Per measurement: requests/s and p99 from wrk, server CPU microseconds per
# request from /proc/<pid>/stat (utime+stime; the user part is shown too), and 16-deep pipelined requests/s (Lua script).
# The table printed at the end holds medians over rounds.
# Each round also measures examples/floor.rs: a responder with no HTTP logic, i.e. what the
# kernel alone costs per request on this host (for reading the CPU ratios) and, pipelined, how
# many requests/s one wrk thread can drive at all (for reading the pipelined ratio).
set -euo pipefail

ROUNDS=${ROUNDS:-3}
DURATION=${DURATION:-10}
SERVER_CORE=${SERVER_CORE:-0}
CLIENT_CORE=${CLIENT_CORE:-1}
source "$(dirname "$0")/common.sh"

require wrk "apt-get install -y wrk"
require taskset util-linux

(cd "$ROOT" && cargo build --release -q -p faultline-http --example server --example hyper_baseline --example floor)

cat > "$WORK/pipeline.lua" <<'LUA'
init = function(args)
  local r = {}
  for i = 1, 16 do r[i] = wrk.format(nil, "/plaintext") end
  req = table.concat(r)
end
request = function() return req end
LUA

CLK_TCK=$(getconf CLK_TCK)

cpu_ticks() { awk '{print $14 + $15}' "/proc/$1/stat"; }
user_ticks() { awk '{print $14}' "/proc/$1/stat"; }

start_server() { # name -> sets SERVER_PID and ADDR
    local bin
    case "$1" in
        faultline) bin="$TARGET/release/examples/server" ;;
        hyper) bin="$TARGET/release/examples/hyper_baseline" ;;
        floor) bin="$TARGET/release/examples/floor" ;;
    esac
    launch "$WORK/$1.out" taskset -c "$SERVER_CORE" "$bin" 127.0.0.1:0
    # Warm up connections, caches and the allocator.
    taskset -c "$CLIENT_CORE" wrk -t1 -c64 -d2s "$ADDR/plaintext" > /dev/null
}

measure() { # server test url [script] -> appends "server test rps p99_us cpu_us_per_req" to results
    local server=$1 test=$2 url=$3 script=${4:-}
    local t0 t1 u0 u1 out
    t0=$(cpu_ticks "$SERVER_PID")
    u0=$(user_ticks "$SERVER_PID")
    if [[ -n "$script" ]]; then
        out=$(taskset -c "$CLIENT_CORE" wrk -t1 -c64 -d"${DURATION}s" --latency -s "$script" "$url")
    else
        out=$(taskset -c "$CLIENT_CORE" wrk -t1 -c64 -d"${DURATION}s" --latency "$url")
    fi
    t1=$(cpu_ticks "$SERVER_PID")
    u1=$(user_ticks "$SERVER_PID")
    echo "$out" > "$WORK/last-wrk.txt"
    python3 - "$server" "$test" "$t0" "$t1" "$u0" "$u1" "$CLK_TCK" "$WORK/last-wrk.txt" >> "$WORK/results" <<'PY'
import re, sys
server, test, t0, t1, u0, u1, tck, path = sys.argv[1:]
out = open(path).read()
reqs = int(re.search(r"(\d+) requests in", out).group(1))
rps = float(re.search(r"Requests/sec:\s+([\d.]+)", out).group(1))
m = re.search(r"99%\s+([\d.]+)(us|ms|s)\b", out)
p99 = float(m.group(1)) * {"us": 1, "ms": 1e3, "s": 1e6}[m.group(2)]
errors = re.search(r"Non-2xx or 3xx responses: (\d+)", out)
if errors or "Socket errors" in out:
    print(f"warning: {server} {test}: {out}", file=sys.stderr)
cpu_us = (int(t1) - int(t0)) * 1e6 / int(tck)
user_us = (int(u1) - int(u0)) * 1e6 / int(tck)
print(f"{server} {test} {rps:.0f} {p99:.0f} {cpu_us / reqs:.3f} {user_us / reqs:.3f}")
PY
    tail -1 "$WORK/results" >&2
}

: > "$WORK/results"
for round in $(seq "$ROUNDS"); do
    if (( round % 2 )); then order="faultline hyper"; else order="hyper faultline"; fi
    echo "round $round: $order (load: $(cut -d' ' -f1-3 /proc/loadavg))" >&2
    for server in $order; do
        start_server "$server"
        measure "$server" plaintext "$ADDR/plaintext"
        measure "$server" json "$ADDR/json"
        measure "$server" pipelined16 "$ADDR/plaintext" "$WORK/pipeline.lua"
        stop_server
    done
    # The floor (examples/floor.rs, no HTTP logic): what the kernel alone costs per request.
    # Pipelined, the floor shows about the most one `wrk -t1` drives on this host: wrk's core is
    # the bottleneck there, so no server measures much more than the floor's ratio to hyper.
    start_server floor
    measure floor plaintext "$ADDR/plaintext"
    measure floor pipelined16 "$ADDR/plaintext" "$WORK/pipeline.lua"
    stop_server
done

python3 - "$WORK/results" <<'PY'
import statistics, sys
rows = [l.split() for l in open(sys.argv[1]) if l.strip()]
data = {}
for server, test, rps, p99, cpu, user in rows:
    data.setdefault((server, test), []).append((float(rps), float(p99), float(cpu), float(user)))
def med(server, test, i):
    return statistics.median(v[i] for v in data[(server, test)])
print("| test | server | requests/s | p99 (µs) | server CPU µs/request | of which user µs |")
print("|---|---|---:|---:|---:|---:|")
for test in ("plaintext", "json", "pipelined16"):
    for server in ("faultline", "hyper"):
        print(f"| {test} | {server} | {med(server, test, 0):,.0f} | {med(server, test, 1):,.0f} | {med(server, test, 2):.2f} | {med(server, test, 3):.2f} |")
print()
for test in ("plaintext", "json", "pipelined16"):
    f = [med("faultline", test, i) for i in range(3)]
    h = [med("hyper", test, i) for i in range(3)]
    # wrk reports a p99 of 0 when it recorded no latency samples (seen with the pipelining script).
    p99 = f"{f[1]/h[1]:.2f}x hyper" if f[1] > 0 and h[1] > 0 else "n/a (wrk recorded no latency)"
    print(f"{test}: throughput {f[0]/h[0]:.2f}x hyper, p99 {p99}, CPU/request {f[2]/h[2]:.2f}x hyper")
fl = med("floor", "plaintext", 2)
print(f"floor (no HTTP logic, plaintext): CPU/request {fl:.2f} us = {fl/med('hyper', 'plaintext', 2):.2f}x hyper; "
      f"a server meeting 0.85x here may spend at most {0.85*med('hyper', 'plaintext', 2) - fl:.2f} us/request above the floor "
      f"(faultline spends {med('faultline', 'plaintext', 2) - fl:.2f})")
fp = med("floor", "pipelined16", 0)
print(f"floor pipelined: {fp:,.0f} requests/s = {fp/med('hyper', 'pipelined16', 0):.2f}x hyper, "
      f"about the most one wrk -t1 thread drives here (faultline {med('faultline', 'pipelined16', 0)/fp:.2f}x of it)")
PY
