# Sourced by the benchmark scripts, not run on its own: the paths, a scratch directory and a
# server process that are cleaned up on exit, and the helpers every script needs.

ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
TARGET=${CARGO_TARGET_DIR:-$ROOT/target}
WORK=$(mktemp -d)
SERVER_PID=""
ADDR=""

stop_server() {
    if [[ -n "$SERVER_PID" ]]; then
        kill "$SERVER_PID" 2>/dev/null || true
        wait "$SERVER_PID" 2>/dev/null || true
    fi
    SERVER_PID=""
}

cleanup() {
    stop_server
    rm -rf "$WORK"
}
trap cleanup EXIT

require() { # tool install-hint
    command -v "$1" >/dev/null || { echo "$1 is required ($2)" >&2; exit 1; }
}

launch() { # log command... -> runs the server in the background, sets SERVER_PID and ADDR
    local log=$1
    shift
    "$@" > "$log" 2>&1 &
    SERVER_PID=$!
    ADDR=""
    # Up to 20 s: a server under valgrind starts slowly.
    for _ in $(seq 400); do
        ADDR=$(sed -n 's|^listening on ||p' "$log")
        [[ -n "$ADDR" ]] && return
        sleep 0.05
    done
    echo "$* did not start" >&2
    cat "$log" >&2
    exit 1
}
