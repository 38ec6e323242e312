#!/usr/bin/env bash
# User-space instructions per request for faultline-http and the hyper baseline, counted by
# valgrind's callgrind (deterministic: the same binary and client give the same count whatever
# else the machine is doing, unlike the CPU figures of http-vs-hyper.sh). Not part of CI.
#
#   benches/http-instructions.sh
#
# Each server runs under callgrind on 127.0.0.1; a Python client warms it up, callgrind's
# counters are zeroed (start-up excluded), then it sends a fixed number of requests:
# plaintext and JSON with one request per write on 16 keep-alive connections, and plaintext
# 16-deep pipelined on 4 connections. Prints instructions per request.
set -euo pipefail

ROOT=$(cd "$(dirname "$0")/.." && pwd)
TARGET=${CARGO_TARGET_DIR:-$ROOT/target}
WORK=$(mktemp -d)
VG_PID=""
cleanup() {
    if [[ -n "$VG_PID" ]]; then kill "$VG_PID" 2>/dev/null || true; fi
    rm -rf "$WORK"
}
trap cleanup EXIT

for tool in valgrind callgrind_control callgrind_annotate python3; do
    command -v "$tool" >/dev/null || { echo "$tool is required (apt-get install -y valgrind python3)" >&2; exit 1; }
done
(cd "$ROOT" && cargo build --release -q -p faultline-http --example server --example hyper_baseline)

cat > "$WORK/client.py" <<'PY'
import socket, sys
host, port = sys.argv[1].removeprefix("http://").split(":")
conns, batches, depth, path = int(sys.argv[2]), int(sys.argv[3]), int(sys.argv[4]), sys.argv[5]
req = f"GET {path} HTTP/1.1\r\nHost: {host}:{port}\r\n\r\n".encode() * depth
socks = [socket.create_connection((host, int(port))) for _ in range(conns)]
for _ in range(batches):
    for s in socks:
        s.sendall(req)
    for s in socks:
        got = 0
        while got < depth:
            data = s.recv(65536)
            if not data:
                sys.exit("server closed the connection")
            got += data.count(b"HTTP/1.1 200 ")
PY

count() { # binary conns batches depth path -> instructions per request
    local bin=$1 conns=$2 batches=$3 depth=$4 path=$5 addr=""
    valgrind --tool=callgrind --callgrind-out-file="$WORK/cg.%p" "$TARGET/release/examples/$bin" \
        127.0.0.1:0 > "$WORK/out" 2> "$WORK/err" &
    VG_PID=$!
    for _ in $(seq 200); do
        addr=$(sed -n 's|^listening on ||p' "$WORK/out")
        [[ -n "$addr" ]] && break
        sleep 0.1
    done
    [[ -n "$addr" ]] || { echo "$bin did not start" >&2; cat "$WORK/err" >&2; exit 1; }
    python3 "$WORK/client.py" "$addr" "$conns" 10 "$depth" "$path"
    callgrind_control -z "$VG_PID" > /dev/null 2>&1
    python3 "$WORK/client.py" "$addr" "$conns" "$batches" "$depth" "$path"
    callgrind_control -d "$VG_PID" > /dev/null 2>&1
    kill "$VG_PID"; wait "$VG_PID" 2>/dev/null || true
    VG_PID=""
    local dump
    dump=$(ls "$WORK"/cg.*.1)
    callgrind_annotate --auto=no "$dump" | awk -v n=$((conns * batches * depth)) \
        '/PROGRAM TOTALS/ { gsub(",", "", $1); printf "%.0f", $1 / n }'
    rm -f "$WORK"/cg.*
}

printf "| workload | faultline | hyper | ratio |\n|---|---:|---:|---:|\n"
while read -r name conns batches depth path; do
    f=$(count server "$conns" "$batches" "$depth" "$path")
    h=$(count hyper_baseline "$conns" "$batches" "$depth" "$path")
    printf "| %s | %s | %s | %.2fx |\n" "${name//_/ }" "$f" "$h" "$(python3 -c "print($f / $h)")"
done <<'RUNS'
plaintext,_16_connections 16 400 1 /plaintext
json,_16_connections 16 400 1 /json
plaintext,_16-deep_pipelined 4 500 16 /plaintext
RUNS
