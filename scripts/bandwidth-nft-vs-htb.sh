#!/usr/bin/env bash
# Issue 17, "kernel-side expiry where the kernel offers it": could a bandwidth cap live in
# nftables, whose set elements time out in the kernel like the partition's, instead of tc
# htb, which nothing times out? nft has no shaper, only a policer (`limit rate over ...
# drop`), so this measures how close each gets to the asked rate for TCP.
#
# Two network namespaces joined by a veth pair; a sender in `target` streams to a receiver
# in `client` for 6 s per run; goodput is counted after a 1 s warm-up. Each cap is the
# target's egress at RATE (bit/s), tried ROUNDS times:
#   htb            the agent's backend: htb root, capped class, 1 ms quantum
#   nft-policer    `ip daddr @lease limit rate over R bytes/second burst B drop`, with the
#                  client's address a set element that carries a kernel timeout
# It prints goodput against the asked rate and the packets the policer dropped.
# Usage (root): scripts/bandwidth-nft-vs-htb.sh [RATE_BITS] [ROUNDS]
set -euo pipefail
rate_bits="${1:-16000000}"
rounds="${2:-3}"
for tool in ip nft tc python3; do
  command -v "$tool" >/dev/null || { echo "needs $tool" >&2; exit 1; }
done
[ "$(id -u)" = 0 ] || { echo "run as root" >&2; exit 1; }

tag="bw$$"
client="${tag}c" target="${tag}t"
cleanup() {
  ip netns del "$client" 2>/dev/null || true
  ip netns del "$target" 2>/dev/null || true
}
trap cleanup EXIT
ip netns add "$client"
ip netns add "$target"
ip link add "${tag}a" netns "$client" type veth peer name "${tag}b" netns "$target"
ip -n "$client" addr add 10.214.0.1/24 dev "${tag}a"
ip -n "$target" addr add 10.214.0.2/24 dev "${tag}b"
ip -n "$client" link set "${tag}a" up
ip -n "$target" link set "${tag}b" up
ip -n "$client" link set lo up
ip -n "$target" link set lo up

# The sender streams until the receiver closes; the receiver prints goodput in bit/s.
ip netns exec "$target" python3 - <<'PY' &
import socket
s = socket.socket(); s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
s.bind(("10.214.0.2", 5201)); s.listen(8)
chunk = b"x" * 65536
while True:
    c, _ = s.accept()
    try:
        while True:
            c.sendall(chunk)
    except OSError:
        c.close()
PY
sender=$!
trap 'kill $sender 2>/dev/null; cleanup' EXIT
sleep 0.3

goodput() {
  ip netns exec "$client" python3 - <<'PY'
import socket, time
s = socket.create_connection(("10.214.0.2", 5201), timeout=5)
buf = bytearray(1 << 16)
start = time.monotonic(); warm = None; got = 0
while True:
    n = s.recv_into(buf)
    now = time.monotonic()
    if warm is None and now - start >= 1.0:
        warm = (now, got)
    got += n
    if now - start >= 6.0:
        break
s.close()
t0, g0 = warm
print(int((got - g0) * 8 / (now - t0)))
PY
}

bytes_per_s=$((rate_bits / 8))
apply() {
  case "$1" in
    none) ;;
    htb)
      tc -n "$target" qdisc add dev "${tag}b" root handle 1: htb default 10
      tc -n "$target" class add dev "${tag}b" parent 1: classid 1:10 htb rate "${rate_bits}bit" ceil "${rate_bits}bit"
      ;;
    nft-policer)
      # Burst: 10 ms of the rate, at least 2 full-size segments (the agent's htb uses the
      # kernel's default burst for the rate).
      local burst=$((bytes_per_s / 100))
      [ "$burst" -ge 3000 ] || burst=3000
      ip netns exec "$target" nft -f - <<NFT
table inet $tag {
  set lease { type ipv4_addr; flags timeout; elements = { 10.214.0.1 timeout 60s } }
  chain out {
    type filter hook output priority 0;
    ip daddr @lease limit rate over $bytes_per_s bytes/second burst $burst bytes counter drop
  }
}
NFT
      ;;
  esac
}
remove() {
  case "$1" in
    htb) tc -n "$target" qdisc del dev "${tag}b" root ;;
    nft-policer)
      # The policer's drops: loss the fault did not ask for, which a shaper does not add.
      dropped="$(ip netns exec "$target" nft list chain inet "$tag" out | grep -o 'packets [0-9]*' | cut -d' ' -f2)"
      ip netns exec "$target" nft delete table inet "$tag"
      ;;
  esac
}

printf '%-12s %-6s %14s %9s %s\n' cap round goodput_bit/s vs_asked dropped_packets
for cap in none htb nft-policer; do
  for round in $(seq 1 "$rounds"); do
    dropped=-
    apply "$cap"
    g="$(goodput)"
    remove "$cap"
    printf '%-12s %-6s %14s %+8.1f%% %s\n' "$cap" "$round" "$g" "$(python3 -c "print(($g / $rate_bits - 1) * 100)")" "$dropped"
  done
done
