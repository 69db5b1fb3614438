#!/usr/bin/env bash
# Time a first `sitsflow demo` right after an install (docs/benchmarks.md, "First demo after install").
#
#   scripts/time-first-demo.sh fresh       numba's cache removed: an install without the compile step
#   scripts/time-first-demo.sh installed   numba's cache removed, then the compile step of
#                                          scripts/bootstrap.sh (what `make demo` runs)
#
# The demo writes into a new temporary store (removed afterwards). Prints one line: seconds to the
# first printed line, planning's end, the workers ready (after their warm-up), the cube stage's
# seconds, the units' compute seconds (summed), wall seconds, CPU seconds of the driver and its
# workers, and the load average before the run.
set -euo pipefail
cd "$(dirname "$0")/.."
VENV=${VENV:-.venv}
[[ "$VENV" == /* ]] || VENV="$PWD/$VENV"
mode=${1:-}
if [[ "$mode" != fresh && "$mode" != installed ]]; then
  echo "usage: scripts/time-first-demo.sh fresh|installed" >&2
  exit 2
fi
PY="$VENV/bin/python"
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT

# numba's cache of this checkout's kernels: *.nbi/*.nbc in pipeline/**/__pycache__ (NUMBA_CACHE_DIR,
# when set, holds it instead).
cache_root=${NUMBA_CACHE_DIR:-pipeline}
find "$cache_root" \( -name '*.nbi' -o -name '*.nbc' \) -delete
if [[ $mode == installed ]]; then
  "$VENV/bin/sitsflow" warm
fi
load=$(cut -d' ' -f1 /proc/loadavg)

# Every line of the JSON log, stamped with the seconds since the start as it arrives.
start=$(date +%s.%N)
/usr/bin/time -o "$work/cpu" -f "%U %S" env SITSFLOW_LOG_FORMAT=json \
  "$VENV/bin/sitsflow" demo --store "$work/store" 2>&1 |
  "$PY" -u -c '
import sys, time
start = float(sys.argv[1])
for line in sys.stdin:
    print(f"{time.time() - start:.1f} {line}", end="", flush=True)
' "$start" >"$work/log"

cpu=$(awk '{printf "%.1f", $1 + $2}' "$work/cpu")
"$PY" - "$work/log" "$mode" "$cpu" "$load" <<'PY'
import json, sys

log, mode, cpu, load = sys.argv[1:]
first = None
marks, stages, compute = {}, {}, 0.0
for line in open(log, encoding="utf-8"):
    stamp, _, text = line.partition(" ")
    seconds = float(stamp)
    first = seconds if first is None else first
    wall = seconds
    try:
        event = json.loads(text)
    except ValueError:
        continue
    name = event.get("event")
    if name in ("run.estimate", "run.workers") and name not in marks:
        marks[name] = seconds
    if name == "unit.finished":
        compute += event["seconds"]
    if name == "stage.finished":
        stages[event["stage"]] = event["seconds"]
print(
    f"{mode}: first line {first:.1f} s, planned {marks.get('run.estimate', 0):.1f} s, workers "
    f"ready {marks.get('run.workers', 0):.1f} s, cube stage {stages.get('cube', 0):.1f} s, "
    f"compute (units) {compute:.1f} s, wall {wall:.1f} s, CPU {cpu} s, load {load}"
)
PY
