#!/bin/sh
# The image's entrypoint (after tini): seed this pod's numba cache from the kernels compiled into
# the image at build time, then run the command. numba loads a cache only from a folder it can
# write, and the image's root file system is read-only in the pods: NUMBA_CACHE_DIR is in /tmp.
if [ -n "${NUMBA_CACHE_DIR:-}" ] && [ ! -d "$NUMBA_CACHE_DIR" ] && [ -d /opt/sitsflow/numba-cache ]; then
  cp -r /opt/sitsflow/numba-cache "$NUMBA_CACHE_DIR" 2>/dev/null \
    && touch "$NUMBA_CACHE_DIR/.seeded" || true
fi
exec "$@"
