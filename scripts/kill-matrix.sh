#!/usr/bin/env bash
# The kill matrix: runs the given experiments (in the order given) against the resilient
# fleet and against each fragile variant of it (one resilience policy removed with
# FL_DISABLE), and prints which variant each experiment caught:
#
#   scripts/kill-matrix.sh [-o DIR] [--switches a,b,...] [--killers FILE] FILE|DIR...
#
# The resilient fleet runs every experiment and must pass them all (skips aside). Each
# variant runs with --fail-fast, so it stops at the first experiment that does not pass
# it: order the experiments so that cheap killers come first. `--killers FILE` names, one
# line per switch (`switch experiment-file`), the experiment expected to kill it: that
# variant runs that file first and the rest after it, and the switches default to the
# ones it lists. A variant "killed" means an
# experiment ended FAIL against it; inconclusive or error is not a kill (the gate did not
# earn a verdict). An inconclusive run is run once more (--rerun-inconclusive 1): it
# earned no verdict, so a second attempt is a fair one; a pass or a failure never is. Exit 0 only when the resilient fleet passed everything and every
# variant was killed; the matrix is printed either way (Markdown, for
# docs/verdict-power.md), with the suite reports kept in DIR (default: a temporary
# directory). Needs a release build of `chaos` (CHAOS_BIN, default target/release/chaos)
# and python3.
set -euo pipefail
cd "$(dirname "$0")/.."
out=""
switches=""
killers=""
args_in=()
while [ $# -gt 0 ]; do
  case "$1" in
    -o) out="$2"; shift 2 ;;
    --switches) switches="$2"; shift 2 ;;
    --killers) killers="$2"; shift 2 ;;
    *) args_in+=("$1"); shift ;;
  esac
done
[ "${#args_in[@]}" -gt 0 ] || { echo "usage: $0 [-o DIR] [--switches a,b,...] [--killers FILE] FILE|DIR..." >&2; exit 2; }
# The files in the order `chaos run` reads them: directories searched for *.yaml and
# *.yml, sorted.
files=()
for a in "${args_in[@]}"; do
  if [ -d "$a" ]; then
    while IFS= read -r f; do files+=("$f"); done < <(find "${a%/}" -type f \( -name '*.yaml' -o -name '*.yml' \) | LC_ALL=C sort)
  else
    files+=("$a")
  fi
done
# killer_of SWITCH: the file --killers names for it, if any.
killer_of() {
  [ -n "$killers" ] || return 0
  awk -v s="$1" '$1 == s { print $2; exit }' "$killers"
}
chaos="${CHAOS_BIN:-target/release/chaos}"
out="${out:-$(mktemp -d)}"
mkdir -p "$out"
if [ -z "$switches" ] && [ -n "$killers" ]; then
  switches="$(awk '!/^#/ && NF { print $1 }' "$killers" | paste -sd, -)"
elif [ -z "$switches" ]; then
  switches="$("$chaos" fleet policies | paste -sd, -)"
fi
variants=(resilient ${switches//,/ })
for v in "${variants[@]}"; do
  mkdir -p "$out/$v"
  first="$(killer_of "$v")"
  ordered=()
  [ -n "$first" ] && ordered+=("$first")
  for f in "${files[@]}"; do
    [ "$f" = "$first" ] || ordered+=("$f")
  done
  args=(run "${ordered[@]}" --no-progress --rerun-inconclusive 1 --json "$out/$v/suite.json" --junit "$out/$v/junit.xml")
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
        if v == variants[0]:
            if e["outcome"] == "skipped":
                continue  # this mode cannot run it, for every variant alike
            columns.append(e["name"])
        if e.get("notRun"):
            row[e["name"]] = "—"
        else:
            row[e["name"]] = cell.get(e["outcome"], e["outcome"])
            if e["outcome"] != "pass":
                # What failed: the SLO past its bound, or else the reason (a recovery
                # or steady state that failed, an error, an unearned verdict).
                why = (e.get("worstSlo") if e.get("failedOnSlos") else None) or e.get("reason", "")
                row[e["name"]] += ": " + why.replace("|", "\\|")
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
