#!/usr/bin/env bash
# Time a first `sitsflow demo` right after an install (docs/benchmarks.md, "First demo after install").
#
#   scripts/time-first-demo.sh fresh       numba's cache removed: an install without the compile step
#   scripts/time-first-demo.sh installed   numba's cache removed, then the compile step of
#                                          scripts/bootstrap.sh (what `make demo` runs)
#
# The demo writes into a new temporary store (removed afterwards). Prints one line: seconds to the
# first printed line, the cube stage's seconds (from the log), wall seconds, CPU seconds of the
# driver and its workers, and the load average before the run.
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

first=$(head -1 "$work/log" | cut -d' ' -f1)
wall=$(tail -1 "$work/log" | cut -d' ' -f1)
cube=$(grep -o '"message": "cube done in [0-9.]* s"' "$work/log" | grep -o '[0-9.]* s' || echo "?")
cpu=$(awk '{printf "%.1f", $1 + $2}' "$work/cpu")
echo "$mode: first line ${first} s, cube stage ${cube}, wall ${wall} s, CPU ${cpu} s, load ${load}"
