#!/usr/bin/env bash
# The kill matrix: runs the given experiments (in the order given) against the resilient
# fleet and against each fragile variant of it (one resilience policy removed with
# FL_DISABLE), and prints which variant each experiment caught:
#
#   scripts/kill-matrix.sh [-o DIR] [--switches a,b,...] FILE|DIR...
#
# The resilient fleet runs every experiment and must pass them all (skips aside). Each
# variant runs with --fail-fast, so it stops at the first experiment that does not pass
# it: order the experiments so that cheap killers come first. A variant "killed" means an
# experiment ended FAIL against it; inconclusive or error is not a kill (the gate did not
# earn a verdict). Exit 0 only when the resilient fleet passed everything and every
# variant was killed; the matrix is printed either way (Markdown, for
# docs/verdict-power.md), with the suite reports kept in DIR (default: a temporary
# directory). Needs a release build of `chaos` (CHAOS_BIN, default target/release/chaos)
# and python3.
set -euo pipefail
cd "$(dirname "$0")/.."
out=""
switches=""
files=()
while [ $# -gt 0 ]; do
  case "$1" in
    -o) out="$2"; shift 2 ;;
    --switches) switches="$2"; shift 2 ;;
    *) files+=("$1"); shift ;;
  esac
done
[ "${#files[@]}" -gt 0 ] || { echo "usage: $0 [-o DIR] [--switches a,b,...] FILE|DIR..." >&2; exit 2; }
chaos="${CHAOS_BIN:-target/release/chaos}"
out="${out:-$(mktemp -d)}"
mkdir -p "$out"
if [ -z "$switches" ]; then
  switches="$("$chaos" fleet policies | paste -sd, -)"
fi
variants=(resilient ${switches//,/ })
for v in "${variants[@]}"; do
  mkdir -p "$out/$v"
  args=(run "${files[@]}" --no-progress --json "$out/$v/suite.json")
  if [ "$v" = resilient ]; then
    env_args=()
  else
    args+=(--fail-fast)
    env_args=(--set-env "FL_DISABLE=$v")
  fi
  code=0
  started=$(date +%s)
  env -u FL_RESILIENCE -u FL_DISABLE "$chaos" "${args[@]}" "${env_args[@]}" >"$out/$v/log" 2>&1 || code=$?
  echo "$v: exit $code in $(( $(date +%s) - started )) s" >&2
done
python3 - "$out" "${variants[@]}" <<'PY'
import json, pathlib, sys
out = pathlib.Path(sys.argv[1])
variants = sys.argv[2:]
cell = {"pass": "pass", "fail": "**FAIL**", "aborted": "**FAIL** (aborted)",
        "inconclusive": "inconclusive", "error": "error", "invalid": "invalid"}
rows, columns = {}, []
for v in variants:
    index = json.loads((out / v / "suite.json").read_text())
    row = {}
    for e in index["experiments"]:
        if e["outcome"] == "skipped" and not e.get("notRun"):
            continue  # this mode cannot run it, for every variant alike
        if e["name"] not in columns:
            columns.append(e["name"])
        row[e["name"]] = "—" if e.get("notRun") else cell.get(e["outcome"], e["outcome"])
    rows[v] = row
print("| variant | " + " | ".join(columns) + " | killed |")
print("|---" * (len(columns) + 2) + "|")
ok = True
for v in variants:
    row = rows[v]
    killed = any(c.startswith("**FAIL") for c in row.values())
    if v == "resilient":
        verdict = "passes all" if all(c == "pass" for c in row.values()) else "**does not pass all**"
        ok &= verdict == "passes all"
    else:
        verdict = "yes" if killed else "**no**"
        ok &= killed
    print(f"| {v} | " + " | ".join(row.get(c, "—") for c in columns) + f" | {verdict} |")
not_killed = [v for v in variants[1:] if not any(c.startswith("**FAIL") for c in rows[v].values())]
print()
print(f"{len(variants) - 1 - len(not_killed)} of {len(variants) - 1} variants killed"
      + (f"; not killed: {', '.join(not_killed)}" if not_killed else ""))
sys.exit(0 if ok else 1)
PY
