#!/usr/bin/env bash
# Runs the given experiments N times, as one `chaos run` suite per round, and prints, per
# SLO, the worst value of every run with its min / median / max, and how the threshold
# compares: the figures each experiment file's header quotes for its thresholds.
#
#   scripts/calibrate.sh [-n RUNS] [-o DIR] [--env local|compose] [--set-env K=V ...] FILE|DIR...
#
# Reports stay in DIR (default: a new temporary directory) as round-<i>/report*.json, with
# the round's log beside them. Skipped experiments have no samples and are left out.
# Needs a release build of `chaos` (CHAOS_BIN, default target/release/chaos) and python3.
set -euo pipefail
cd "$(dirname "$0")/.."
runs=10
out=""
extra=()
files=()
while [ $# -gt 0 ]; do
  case "$1" in
    -n) runs="$2"; shift 2 ;;
    -o) out="$2"; shift 2 ;;
    --set-env) extra+=(--set-env "$2"); shift 2 ;;
    --env) extra+=(--env "$2"); shift 2 ;;
    *) files+=("$1"); shift ;;
  esac
done
[ "${#files[@]}" -gt 0 ] || { echo "usage: $0 [-n RUNS] [-o DIR] [--env MODE] [--set-env K=V] FILE|DIR..." >&2; exit 2; }
chaos="${CHAOS_BIN:-target/release/chaos}"
out="${out:-$(mktemp -d)}"
mkdir -p "$out"
for i in $(seq 1 "$runs"); do
  mkdir -p "$out/round-$i"
  code=0
  "$chaos" run "${files[@]}" --no-progress "${extra[@]}" --json "$out/round-$i/report.json" \
    >"$out/round-$i/log" 2>&1 || code=$?
  echo "round $i: exit $code ($(date -u +%H:%M:%S))"
done
python3 - "$out" <<'PY'
import json, pathlib, statistics, sys
by = {}
for p in sorted(pathlib.Path(sys.argv[1]).glob("round-*/*.json")):
    r = json.loads(p.read_text())
    if "slos" not in r:  # a suite's index.json
        continue
    for rep in [r] if r["verdict"]["outcome"] != "skipped" else []:
        name = rep["experiment"]["name"]
        e = by.setdefault(name, {"outcomes": [], "slos": {}})
        e["outcomes"].append(rep["verdict"]["outcome"])
        for s in rep["slos"]:
            vals = [x["value"] for x in s["samples"] if x.get("value") is not None]
            if not vals:
                continue
            t = s["threshold"]
            worst = max(vals) if t.get("max") is not None else min(vals)
            e["slos"].setdefault(s["name"], {"t": t, "worst": []})["worst"].append(worst)
for name, e in by.items():
    print(f"{name}: {len(e['outcomes'])} runs, outcomes {e['outcomes']}")
    for sname, s in e["slos"].items():
        w = s["worst"]
        t = s["t"]
        bound = t["max"] if t.get("max") is not None else t["min"]
        side = "max" if t.get("max") is not None else "min"
        print(f"  {sname}: worst per run min {min(w):.4g} median {statistics.median(w):.4g} max {max(w):.4g} ({t['unit']}); threshold {side} {bound:.4g}")
PY
