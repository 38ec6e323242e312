#!/usr/bin/env bash
# User-space instructions per request for faultline-http and the hyper baseline, counted by
# valgrind's callgrind: nearly the same count on every run whatever else the machine is doing,
# unlike the CPU figures of http-vs-hyper.sh. Not part of CI.
#
#   benches/http-instructions.sh
#
# Each server runs under callgrind on 127.0.0.1; a Python client warms it up, callgrind's
# counters are zeroed (start-up excluded), then it sends a fixed number of requests:
# plaintext and JSON with one request per write on 16 keep-alive connections, and plaintext
# 16-deep pipelined on 4 connections. Prints instructions per request.
set -euo pipefail

source "$(dirname "$0")/common.sh"

for tool in valgrind callgrind_control callgrind_annotate python3; do
    require "$tool" "apt-get install -y valgrind python3"
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
    local bin=$1 conns=$2 batches=$3 depth=$4 path=$5
    launch "$WORK/out" valgrind --tool=callgrind --callgrind-out-file="$WORK/cg.%p" \
        "$TARGET/release/examples/$bin" 127.0.0.1:0
    python3 "$WORK/client.py" "$ADDR" "$conns" 10 "$depth" "$path"
    callgrind_control -z "$SERVER_PID" > /dev/null 2>&1
    python3 "$WORK/client.py" "$ADDR" "$conns" "$batches" "$depth" "$path"
    callgrind_control -d "$SERVER_PID" > /dev/null 2>&1
    stop_server
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
