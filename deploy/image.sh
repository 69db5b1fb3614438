#!/usr/bin/env bash
# Build the sitsflow image without a Docker engine (`make image`): buildah with the vfs storage
# driver and chroot isolation, on a Debian 12 base made locally with debootstrap, from a wheelhouse
# built on this host (deploy/wheels/). Needs root (debootstrap, buildah), buildah and debootstrap
# (Debian packages). Elsewhere, `docker build -f deploy/Dockerfile .` builds the same Dockerfile on
# the public Python image (see docs/kubernetes.md).
#
#   deploy/image.sh                 # -> localhost/sitsflow:dev, timings in build/image-stats.json
#
# Settings (environment): TAG, BASE_TAG, DEBIAN_MIRROR, PYTHON (the host python whose pip builds
# the wheelhouse; default .venv/bin/python), STATS (where the timings go).
set -euo pipefail
cd "$(dirname "$0")/.."

TAG=${TAG:-localhost/sitsflow:dev}
BASE_TAG=${BASE_TAG:-localhost/sitsflow-base:bookworm}
MIRROR=${DEBIAN_MIRROR:-http://deb.debian.org/debian}
PYTHON=${PYTHON:-.venv/bin/python}
STATS=${STATS:-build/image-stats.json}
# No overlay file system inside an unprivileged build machine or CI container: vfs and chroot.
export STORAGE_DRIVER=vfs BUILDAH_ISOLATION=chroot

for tool in buildah debootstrap; do
  command -v "$tool" >/dev/null || { echo "$tool is missing: apt-get install buildah debootstrap" >&2; exit 1; }
done
[ "$(id -u)" = 0 ] || { echo "deploy/image.sh needs root (debootstrap, buildah with vfs)" >&2; exit 1; }

now() { date +%s; }
start=$(now)

# 1. The base: Debian 12 from the Debian archive (made once, kept in buildah's storage).
base_start=$(now)
if ! buildah inspect --type image "$BASE_TAG" >/dev/null 2>&1; then
  work=$(mktemp -d)
  trap 'rm -rf "$work"' EXIT
  echo "== debootstrap bookworm (minbase) from $MIRROR"
  debootstrap --variant=minbase bookworm "$work/rootfs" "$MIRROR" >"$work/debootstrap.log" 2>&1 \
    || { tail -20 "$work/debootstrap.log" >&2; exit 1; }
  rm -rf "$work/rootfs/var/cache/apt/archives/"*.deb "$work/rootfs/var/lib/apt/lists/"*
  tar -C "$work/rootfs" -cf "$work/rootfs.tar" .
  container=$(buildah from scratch)
  buildah add "$container" "$work/rootfs.tar" / >/dev/null
  buildah config --cmd /bin/bash --env LANG=C.UTF-8 "$container"
  buildah commit --rm "$container" "$BASE_TAG" >/dev/null
  rm -rf "$work"
  trap - EXIT
fi
base_s=$(( $(now) - base_start ))

# 2. The wheelhouse: sitsflow's wheel and its dependencies', as the host's pip resolves them
# against the constraints (the CPU build of torch included): the build needs no index.
wheels_start=$(now)
echo "== wheelhouse (deploy/wheels)"
rm -f deploy/wheels/sitsflow-*.whl
"$PYTHON" -m pip wheel --quiet . -w deploy/wheels -c requirements/constraints.txt
wheels_s=$(( $(now) - wheels_start ))

# 3. The image.
build_start=$(now)
echo "== buildah bud $TAG (base $BASE_TAG)"
buildah bud --layers=false --format oci \
  -f deploy/Dockerfile --ignorefile deploy/Dockerfile.dockerignore \
  --build-arg BASE="$BASE_TAG" -t "$TAG" . 
build_s=$(( $(now) - build_start ))

size=$(buildah images --noheading --format '{{.Size}}' "$TAG" | head -n 1)
total_s=$(( $(now) - start ))
mkdir -p "$(dirname "$STATS")"
printf '{"tag": "%s", "size": "%s", "total_s": %d, "base_s": %d, "wheels_s": %d, "build_s": %d}\n' \
  "$TAG" "$size" "$total_s" "$base_s" "$wheels_s" "$build_s" > "$STATS"
echo "== $TAG: $size, ${total_s}s (base ${base_s}s, wheelhouse ${wheels_s}s, build ${build_s}s)"
