#!/usr/bin/env bash
# Load generator benchmark: open-model accuracy at 1k, 10k and 30k req/s, and maximum
# closed-loop throughput compared with wrk, in the same run against the same server.
# Not part of CI (needs wrk, taskset and two otherwise idle cores).
#
#   benches/loadgen-vs-wrk.sh            # 3 rounds of 10 s per measurement
#   ROUNDS=5 DURATION=15 benches/loadgen-vs-wrk.sh
#
# The faultline-http example server (one worker) is pinned to SERVER_CORE and every load
# tool to CLIENT_CORE, so each gets one core, as in a fair benchmark. Closed-loop runs use
# one thread and 64 connections for both tools (`wrk -t1 -c64`, `chaos load --closed-loop
# --connections 64`); their order alternates between rounds. Client CPU per request comes
# from bash's `time` (user + system). The table holds medians over rounds; the load average
# is printed before and after, since figures taken on a busy machine mean little.
set -euo pipefail

ROUNDS=${ROUNDS:-3}
DURATION=${DURATION:-10}
SERVER_CORE=${SERVER_CORE:-0}
CLIENT_CORE=${CLIENT_CORE:-1}
CONNECTIONS=${CONNECTIONS:-64}
source "$(dirname "$0")/common.sh"

require wrk "apt-get install -y wrk"
require taskset util-linux

(cd "$ROOT" && cargo build --release -q -p faultline-cli --bin chaos -p faultline-http --example server)
CHAOS="$TARGET/release/chaos"

echo "load average before: $(cut -d' ' -f1-3 /proc/loadavg) on $(nproc) CPUs"

launch "$WORK/server.out" taskset -c "$SERVER_CORE" "$TARGET/release/examples/server" 127.0.0.1:0
URL="$ADDR/plaintext"
# Warm up connections, caches and the allocator.
taskset -c "$CLIENT_CORE" wrk -t1 -c"$CONNECTIONS" -d2s "$URL" > /dev/null

json_field() { # file field -> the first numeric value of "field"
    sed -n "s/^  \"$2\": \([0-9.e+-]*\),\{0,1\}$/\1/p" "$1" | head -1
}
latency_p99() { # file -> latencyMs.p99
    sed -n '/"latencyMs": {/,/}/s/^ *"p99": \([0-9.]*\),$/\1/p' "$1" | head -1
}
lag_p99() { # file -> sendLagMs.p99
    sed -n '/"sendLagMs": {/,/}/s/^ *"p99": \([0-9.]*\),$/\1/p' "$1" | head -1
}

timed() { # out_file cpu_file cmd... -> runs cmd pinned, stdout to out_file, "user sys" to cpu_file
    local out=$1 cpu=$2
    shift 2
    local TIMEFORMAT='%U %S'
    { time taskset -c "$CLIENT_CORE" "$@" > "$out"; } 2> "$cpu"
}

cpu_us_per_req() { # cpu_file requests
    awk -v n="$2" '{ printf "%.2f", ($1 + $2) * 1e6 / n }' "$1"
}

RESULTS="$WORK/results"
: > "$RESULTS"

open_model() { # rate
    local rate=$1 out="$WORK/open-$1.json" cpu="$WORK/open-$1.cpu"
    timed "$out" "$cpu" "$CHAOS" load "$URL" --rate "$rate/s" --duration "${DURATION}s" \
        --connections "$CONNECTIONS" --format json
    local achieved requests
    achieved=$(json_field "$out" achievedRate)
    requests=$(sed -n 's/^  "started": \([0-9]*\),$/\1/p' "$out")
    echo "open $rate $achieved $(latency_p99 "$out") $(lag_p99 "$out") $(cpu_us_per_req "$cpu" "$requests")" >> "$RESULTS"
}

closed_chaos() {
    local out="$WORK/closed.json" cpu="$WORK/closed.cpu"
    timed "$out" "$cpu" "$CHAOS" load "$URL" --closed-loop --duration "${DURATION}s" \
        --connections "$CONNECTIONS" --format json
    local rps requests
    rps=$(json_field "$out" achievedRate)
    requests=$(sed -n 's/^    "requests": \([0-9]*\),$/\1/p' "$out" | head -1)
    echo "closed chaos $rps $(latency_p99 "$out") - $(cpu_us_per_req "$cpu" "$requests")" >> "$RESULTS"
}

closed_wrk() {
    local out="$WORK/wrk.txt" cpu="$WORK/wrk.cpu"
    timed "$out" "$cpu" wrk -t1 -c"$CONNECTIONS" -d"${DURATION}s" --latency "$URL"
    local rps requests p99
    rps=$(awk '/^Requests\/sec:/ {print $2}' "$out")
    requests=$(awk '/requests in/ {print $1}' "$out")
    p99=$(awk '$1 == "99%" { v = $2; if (v ~ /us$/) { sub(/us/, "", v); v /= 1000 } else if (v ~ /ms$/) { sub(/ms/, "", v) } else if (v ~ /s$/) { sub(/s/, "", v); v *= 1000 } print v }' "$out")
    echo "closed wrk $rps $p99 - $(cpu_us_per_req "$cpu" "$requests")" >> "$RESULTS"
}

for round in $(seq "$ROUNDS"); do
    echo "round $round/$ROUNDS" >&2
    for rate in 1000 10000 30000; do open_model "$rate"; done
    if (( round % 2 )); then closed_chaos; closed_wrk; else closed_wrk; closed_chaos; fi
done

stop_server

echo "load average after: $(cut -d' ' -f1-3 /proc/loadavg)"
echo
median() { sort -g | awk '{ v[NR] = $1 } END { if (NR % 2) m = v[(NR + 1) / 2]; else m = (v[NR / 2] + v[NR / 2 + 1]) / 2; printf "%.2f\n", m }'; }
col() { # kind key column
    awk -v k="$1" -v t="$2" -v c="$3" '$1 == k && $2 == t { print $c }' "$RESULTS" | median
}
printf '%-28s %14s %12s %14s %16s\n' "measurement (medians, ${ROUNDS}x${DURATION}s)" "req/s" "p99 ms" "send lag p99" "client CPU us/req"
for rate in 1000 10000 30000; do
    achieved=$(col open "$rate" 3)
    printf '%-28s %14s %12s %14s %16s   (%s%% of target)\n' "chaos load open $rate/s" "$achieved" \
        "$(col open "$rate" 4)" "$(col open "$rate" 5)" "$(col open "$rate" 6)" \
        "$(awk -v a="$achieved" -v r="$rate" 'BEGIN { printf "%.2f", 100 * a / r }')"
done
chaos_rps=$(col closed chaos 3)
wrk_rps=$(col closed wrk 3)
printf '%-28s %14s %12s %14s %16s\n' "chaos load --closed-loop" "$chaos_rps" "$(col closed chaos 4)" "-" "$(col closed chaos 6)"
printf '%-28s %14s %12s %14s %16s\n' "wrk -t1 -c$CONNECTIONS" "$wrk_rps" "$(col closed wrk 4)" "-" "$(col closed wrk 6)"
echo
awk -v a="$chaos_rps" -v b="$wrk_rps" 'BEGIN { printf "closed-loop throughput ratio chaos/wrk: %.3f (goal >= 0.9)\n", a / b }'
