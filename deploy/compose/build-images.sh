#!/usr/bin/env bash
# Builds the compose stack's three images on this machine, with no registry access:
#
#   faultline/chaos:TAG       FROM scratch + the `chaos` binary (fleet services)
#   faultline/agent:TAG       faultline/chaos + nft, tc and ip with their libraries
#   faultline/prometheus:TAG  FROM scratch + Debian's prometheus binary and its libraries
#
# Usage: deploy/compose/build-images.sh [CHAOS_BINARY]
#   CHAOS_BINARY defaults to the static release build:
#     RUSTFLAGS='-C target-feature=+crt-static' \
#       cargo build --release --target x86_64-unknown-linux-gnu -p faultline-cli
#   A dynamically linked binary also works: its shared libraries are copied in.
# Environment: FL_IMAGE_TAG (default dev), PROMETHEUS_BIN (default: `command -v prometheus`).
#
# With registry access, docs/compose.md shows the equivalent FROM debian:bookworm-slim
# Dockerfiles.
set -euo pipefail

here="$(cd "$(dirname "$0")" && pwd)"
root="$(cd "$here/../.." && pwd)"
tag="${FL_IMAGE_TAG:-dev}"
target_dir="${CARGO_TARGET_DIR:-$root/target}"
chaos="${1:-$target_dir/x86_64-unknown-linux-gnu/release/chaos}"
prometheus="${PROMETHEUS_BIN:-$(command -v prometheus || true)}"

die() { echo "build-images: $*" >&2; exit 1; }
[ -x "$chaos" ] || die "no chaos binary at $chaos (build it first, see the header of this script)"
[ -n "$prometheus" ] && [ -x "$prometheus" ] || die "no prometheus binary (apt-get install prometheus, or set PROMETHEUS_BIN)"
command -v docker >/dev/null || die "docker is not installed"
for tool in nft tc ip ss; do command -v "$tool" >/dev/null || die "$tool is missing (apt-get install nftables iproute2)"; done

stage="$(mktemp -d)"
trap 'rm -rf "$stage"' EXIT

# Copies executable $1 to $2/<same path> with every shared library it loads (and the
# dynamic loader), so it runs in an image with nothing else.
copy_with_libs() {
  local bin="$1" rootfs="$2" dest="${3:-$1}"
  install -D -m 0755 "$bin" "$rootfs$dest"
  ldd "$bin" 2>/dev/null | awk '/=>/ && $3 ~ /^\// {print $3} /^\t\/[^ ]+ \(/ {print $1}' |
    while read -r lib; do
      [ -e "$rootfs$lib" ] || install -D -m 0755 "$(readlink -f "$lib")" "$rootfs$lib"
    done
}

# Minimal /etc: users for USER directives, hosts/nsswitch for name resolution (glibc
# reads them even when statically linked), CA roots for any HTTPS the binary makes.
base_etc() {
  local rootfs="$1"
  mkdir -p "$rootfs/etc" "$rootfs/tmp"
  chmod 1777 "$rootfs/tmp"
  printf 'root:x:0:0:root:/root:/nonexistent\nnobody:x:65534:65534:nobody:/nonexistent:/nonexistent\n' >"$rootfs/etc/passwd"
  printf 'root:x:0:\nnogroup:x:65534:\n' >"$rootfs/etc/group"
  printf 'hosts: files dns\n' >"$rootfs/etc/nsswitch.conf"
  if [ -f /etc/ssl/certs/ca-certificates.crt ]; then
    install -D -m 0644 /etc/ssl/certs/ca-certificates.crt "$rootfs/etc/ssl/certs/ca-certificates.crt"
  fi
}

build() {
  local name="$1" dir="$2"
  local start=$SECONDS
  # The classic builder needs no buildx plugin; its deprecation notice is noise here.
  if ! DOCKER_BUILDKIT=0 docker build --quiet --tag "faultline/$name:$tag" "$dir" >"$stage/$name.log" 2>&1; then
    cat "$stage/$name.log" >&2
    die "docker build of faultline/$name:$tag failed"
  fi
  echo "built faultline/$name:$tag in $((SECONDS - start))s"
}

# faultline/chaos: the binary and a minimal /etc.
mkdir -p "$stage/chaos/rootfs"
copy_with_libs "$chaos" "$stage/chaos/rootfs" /usr/local/bin/chaos
# Debug info is for the host's debugger, not for the image (about 115 MB -> 20 MB).
if command -v strip >/dev/null; then strip --strip-debug "$stage/chaos/rootfs/usr/local/bin/chaos"; fi
base_etc "$stage/chaos/rootfs"
cat >"$stage/chaos/Dockerfile" <<'EOF'
FROM scratch
COPY rootfs/ /
USER 65534:65534
ENTRYPOINT ["/usr/local/bin/chaos"]
CMD ["--help"]
EOF
build chaos "$stage/chaos"

# faultline/agent: the agent shells out to nft, tc and ip inside target namespaces.
mkdir -p "$stage/agent/rootfs"
for tool in nft tc ip ss; do
  path="$(readlink -f "$(command -v "$tool")")"
  copy_with_libs "$path" "$stage/agent/rootfs" "/usr/sbin/$tool"
done
for f in /etc/protocols /etc/services /etc/iproute2/rt_tables; do
  [ -f "$f" ] && install -D -m 0644 "$f" "$stage/agent/rootfs$f"
done
cat >"$stage/agent/Dockerfile" <<EOF
FROM faultline/chaos:$tag
COPY rootfs/ /
ENV PATH=/usr/local/bin:/usr/sbin:/usr/bin
USER 0:0
ENTRYPOINT ["/usr/local/bin/chaos"]
CMD ["agent", "--help"]
EOF
build agent "$stage/agent"

# faultline/prometheus: Debian's binary links only libc.
mkdir -p "$stage/prometheus/rootfs/prometheus"
copy_with_libs "$prometheus" "$stage/prometheus/rootfs" /bin/prometheus
base_etc "$stage/prometheus/rootfs"
install -D -m 0644 "$here/prometheus.yml" "$stage/prometheus/rootfs/etc/prometheus/prometheus.yml"
cat >"$stage/prometheus/Dockerfile" <<'EOF'
FROM scratch
COPY rootfs/ /
USER 65534:65534
EXPOSE 9090
ENTRYPOINT ["/bin/prometheus"]
CMD ["--config.file=/etc/prometheus/prometheus.yml", "--storage.tsdb.path=/prometheus", "--storage.tsdb.retention.time=2h", "--web.listen-address=0.0.0.0:9090"]
EOF
build prometheus "$stage/prometheus"
