#!/usr/bin/env bash
# Validates the Kubernetes manifests offline against the Kubernetes OpenAPI schemas
# (PyPI's kubernetes-validate ships them; no cluster, no network once installed), and
# the Prometheus alert rules with promtool (Debian's `prometheus` package).
#
# The CRD's schema accepting every file in experiments/ is a Rust test
# (faultline-controller, operator::crd::tests), run by `cargo test`.
#
# Under CI=true a missing tool is an error; otherwise it is installed (pip) or skipped
# with a message (promtool).
set -euo pipefail
cd "$(dirname "$0")/.."

K8S_VERSION="${K8S_VERSION:-1.33.0}"
DIR=deploy/kubernetes

if ! command -v kubernetes-validate >/dev/null 2>&1; then
  echo "kubernetes-validate not found: installing it with pip (python3 -m pip install kubernetes-validate)"
  python3 -m pip install --quiet kubernetes-validate || {
    echo "error: install kubernetes-validate: python3 -m pip install kubernetes-validate" >&2
    exit 1
  }
fi

# Every file the kustomization lists must exist, and every manifest must be listed.
mapfile -t resources < <(sed -n '/^resources:/,/^[a-z]/{s/^  - //p}' "$DIR/kustomization.yaml")
[ "${#resources[@]}" -gt 0 ] || { echo "error: $DIR/kustomization.yaml lists no resources" >&2; exit 1; }
for f in "$DIR"/*.yaml; do
  name=$(basename "$f")
  [ "$name" = kustomization.yaml ] && continue
  printf '%s\n' "${resources[@]}" | grep -qx "$name" || {
    echo "error: $f is not listed in $DIR/kustomization.yaml" >&2
    exit 1
  }
done
files=()
for r in "${resources[@]}"; do
  [ -f "$DIR/$r" ] || { echo "error: $DIR/kustomization.yaml lists missing $r" >&2; exit 1; }
  files+=("$DIR/$r")
done

echo "== kubernetes-validate --strict (Kubernetes $K8S_VERSION): ${files[*]}"
kubernetes-validate --strict --quiet -k "$K8S_VERSION" "${files[@]}"
echo "manifests valid"

RULES=deploy/prometheus/faultline-alerts.yaml
if command -v promtool >/dev/null 2>&1; then
  echo "== promtool check rules $RULES"
  promtool check rules "$RULES"
elif [ "${CI:-}" = "true" ]; then
  echo "error: promtool missing: apt-get install prometheus" >&2
  exit 1
else
  echo "skipping $RULES: promtool not installed (apt-get install prometheus)"
fi
