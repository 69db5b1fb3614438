#!/usr/bin/env bash
# Build the sitsflow image without a Docker engine (`make image`): buildah with the vfs storage
# driver and chroot isolation, on a Debian 12 base made locally with debootstrap, from a wheelhouse
# built on this host (deploy/wheels/). Needs root (debootstrap, buildah), buildah and debootstrap
# (Debian packages). Elsewhere, `docker build -f deploy/Dockerfile .` builds the same Dockerfile on
# the public Python image (see docs/kubernetes.md).
#
#   deploy/image.sh            prepare, then build          -> localhost/sitsflow:dev
#   deploy/image.sh prepare    what needs the network, once: the Debian base (debootstrap) and the
#                              wheelhouse of sitsflow's dependencies (`scripts/bootstrap.sh --dev`
#                              runs it, so that the tests build the image offline)
#   deploy/image.sh build      offline: sitsflow's own wheel from this tree, then `buildah bud`
#
# Settings (environment): TAG, BASE_TAG, DEBIAN_MIRROR, PYTHON (the host python whose pip builds
# the wheelhouse; default .venv/bin/python), STATS (where the build's timings go, as JSON).
set -euo pipefail
cd "$(dirname "$0")/.."

TAG=${TAG:-localhost/sitsflow:dev}
BASE_TAG=${BASE_TAG:-localhost/sitsflow-base:bookworm-python3}
MIRROR=${DEBIAN_MIRROR:-http://deb.debian.org/debian}
PYTHON=${PYTHON:-.venv/bin/python}
STATS=${STATS:-build/image-stats.json}
WHEELS=deploy/wheels
# No overlay file system inside an unprivileged build machine or CI container: vfs and chroot.
export STORAGE_DRIVER=vfs BUILDAH_ISOLATION=chroot

phase=${1:-all}
case "$phase" in
  all | prepare | build) ;;
  *) echo "deploy/image.sh: unknown phase '$phase'; use prepare, build or nothing (both)" >&2; exit 2 ;;
esac
for tool in buildah debootstrap; do
  command -v "$tool" >/dev/null || { echo "$tool is missing: apt-get install buildah debootstrap" >&2; exit 1; }
done
[ "$(id -u)" = 0 ] || { echo "deploy/image.sh needs root (debootstrap, buildah with vfs)" >&2; exit 1; }
now() { date +%s; }

# The base: Debian 12 from the Debian archive (made once, kept in buildah's storage), with what the
# Dockerfile would otherwise fetch with apt-get (python3 and its venv module, tini, CA roots).
make_base() {
  buildah inspect --type image "$BASE_TAG" >/dev/null 2>&1 && return 0
  local work container
  work=$(mktemp -d)
  trap 'rm -rf "$work"' RETURN
  echo "== debootstrap bookworm (minbase) from $MIRROR"
  debootstrap --variant=minbase --include=python3,python3-venv,tini,ca-certificates \
    bookworm "$work/rootfs" "$MIRROR" >"$work/debootstrap.log" 2>&1 \
    || { tail -20 "$work/debootstrap.log" >&2; return 1; }
  rm -rf "$work/rootfs/var/cache/apt/archives/"*.deb "$work/rootfs/var/lib/apt/lists/"*
  tar -C "$work/rootfs" -cf "$work/rootfs.tar" .
  container=$(buildah from scratch)
  buildah add "$container" "$work/rootfs.tar" / >/dev/null
  buildah config --cmd /bin/bash --env LANG=C.UTF-8 "$container"
  buildah commit --rm "$container" "$BASE_TAG" >/dev/null
}

# The dependencies' wheels, as the host's pip resolves them against the constraints (the CPU build
# of torch included); wheels already there are reused, so a rerun fetches only what changed.
fetch_wheels() {
  echo "== wheelhouse of the dependencies ($WHEELS)"
  "$PYTHON" -m pip wheel --quiet . -w "$WHEELS" --find-links "$WHEELS" -c requirements/constraints.txt
  rm -f "$WHEELS"/sitsflow-*.whl
}

start=$(now)
base_s=0; wheels_s=0
if [ "$phase" != build ]; then
  t=$(now); make_base; base_s=$(( $(now) - t ))
  t=$(now); fetch_wheels; wheels_s=$(( $(now) - t ))
  [ "$phase" = prepare ] && { echo "== prepared: base $BASE_TAG, wheelhouse $WHEELS"; exit 0; }
fi

# The build, offline: the base and the dependencies' wheels must be there already.
buildah inspect --type image "$BASE_TAG" >/dev/null 2>&1 \
  || { echo "no base image $BASE_TAG: run 'deploy/image.sh prepare' (needs the network) first" >&2; exit 1; }
t=$(now)
rm -f "$WHEELS"/sitsflow-*.whl
"$PYTHON" -m pip wheel --quiet --no-deps --no-build-isolation --no-index . -w "$WHEELS"
own_s=$(( $(now) - t ))
# Every dependency must be in the wheelhouse (a dependency added since `prepare` is not): say so
# here, in seconds, rather than as a resolver error in the middle of the build.
if ! "$PYTHON" -m pip install --quiet --dry-run --ignore-installed --no-index --find-links "$WHEELS" \
    -c requirements/constraints.txt "$WHEELS"/sitsflow-*.whl >/dev/null 2>build/image-wheels-check.log; then
  tail -5 build/image-wheels-check.log >&2
  echo "the wheelhouse $WHEELS lacks a dependency of this checkout: run 'deploy/image.sh prepare'" \
    "(needs the network; 'make test' runs it when pyproject.toml changes)" >&2
  exit 1
fi

build_start=$(now)
echo "== buildah bud $TAG (base $BASE_TAG)"
buildah bud --layers=false --format oci \
  -f deploy/Dockerfile --ignorefile deploy/Dockerfile.dockerignore \
  --build-arg BASE="$BASE_TAG" -t "$TAG" .
build_s=$(( $(now) - build_start ))

size=$(buildah images --noheading --format '{{.Size}}' "$TAG" | head -n 1)
total_s=$(( $(now) - start ))
mkdir -p "$(dirname "$STATS")"
printf '{"tag": "%s", "size": "%s", "total_s": %d, "base_s": %d, "wheels_s": %d, "own_wheel_s": %d, "build_s": %d}\n' \
  "$TAG" "$size" "$total_s" "$base_s" "$wheels_s" "$own_s" "$build_s" > "$STATS"
echo "== $TAG: $size, ${total_s}s (base ${base_s}s, wheelhouse ${wheels_s}s, own wheel ${own_s}s, build ${build_s}s)"
