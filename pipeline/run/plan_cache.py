"""What planning computed, kept in the run store so that ``--resume`` does not compute it again.

Planning a large run burns every reference feature onto every tile's grid and draws the sample
pixels: seconds that a run killed half way pays again when it resumes (issue 6 budgets the whole
resume at 55 % of a full run). Each entry is named by a content hash of everything that decides
it, so a changed input is a miss, never a stale hit:

- ``burn-<digest>``: the id raster of features burnt onto a grid, keyed by the features'
  geometries (WKB, in the grid's CRS), their ids, the grid and the rasterio and GDAL versions;
- ``pixels-<digest>``: the sample pixels (split and selection) and their canonical identity,
  keyed by the burnt rasters, the reference table, the sampling rules, the regions and the
  source of the code that draws them.

Planning only reads the cache (a plan writes nothing): what it computed afresh waits in
``pending`` until the run holds the store's lock and calls ``flush``, which also removes the
entries this plan no longer uses. An entry that cannot be read back is a miss.
"""

from __future__ import annotations

import hashlib
import io
import json
import logging
from importlib import import_module
from inspect import getsourcefile
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from pipeline import __version__
from pipeline.model import GridSpec
from pipeline.run.units import content_hash
from pipeline.samples.reference import Burn
from pipeline.storage import RunStore

FOLDER = "state/plan-cache"
FORMAT = 1  # bump when an entry's layout changes
_LOG = logging.getLogger(__name__)
_BLOSC_MAX = 2**31 - 1 - 16  # Blosc's largest buffer, less its header


class PlanCache:
    """Entries of one run store's plan cache: looked up by name, written by ``flush``."""

    def __init__(self, store: RunStore) -> None:
        self.store = store
        self.pending: dict[str, bytes] = {}
        self.used: set[str] = set()
        self.hits = 0
        self.misses = 0
        self._present: set[str] | None = None

    def _stored(self, name: str) -> bytes | None:
        self.used.add(name)
        if self._present is None:  # one listing, not one request per entry
            self._present = set(self.store.list_names(FOLDER))
        if name not in self._present:
            self.misses += 1
            return None
        try:
            data = self.store.read_bytes(f"{FOLDER}/{name}")
        except OSError:
            self.misses += 1
            return None
        self.hits += 1
        return data

    def arrays(self, name: str) -> dict[str, np.ndarray] | None:
        """The arrays of entry ``name`` (an ``.npz``), or None."""
        data = self._stored(f"{name}.npz")
        if data is None:
            return None
        try:
            with np.load(io.BytesIO(_decompress(data)), allow_pickle=False) as archive:
                return {key: archive[key] for key in archive.files}
        except Exception as error:  # damaged: computed again, and rewritten
            self._damaged(f"{name}.npz", error)
            return None

    def put_arrays(self, name: str, arrays: dict[str, np.ndarray]) -> None:
        buffer = io.BytesIO()
        np.savez(buffer, allow_pickle=False, **arrays)
        try:
            data = _compress(buffer.getvalue())
        except ValueError as error:  # over Blosc's 2 GB: planned again on resume, that is all
            _LOG.warning("plan cache entry %s not kept (%s)", name, error)
            return
        self._put(f"{name}.npz", data)

    def frame(self, name: str) -> tuple[pd.DataFrame, Any] | None:
        """The table of entry ``name`` and the JSON value kept with it, or None."""
        data = self._stored(f"{name}.parquet")
        if data is None:
            return None
        try:
            import pyarrow.parquet as pq

            table = pq.read_table(io.BytesIO(data))
            extra = json.loads((table.schema.metadata or {})[b"sitsflow"])
            return table.to_pandas(), extra
        except Exception as error:
            self._damaged(f"{name}.parquet", error)
            return None

    def put_frame(self, name: str, frame: pd.DataFrame, extra: Any) -> None:
        import pyarrow as pa
        import pyarrow.parquet as pq

        table = pa.Table.from_pandas(frame)
        metadata = {**(table.schema.metadata or {}), b"sitsflow": json.dumps(extra).encode()}
        buffer = io.BytesIO()
        pq.write_table(table.replace_schema_metadata(metadata), buffer, compression="lz4")
        self._put(f"{name}.parquet", buffer.getvalue())

    def _put(self, name: str, data: bytes) -> None:
        self.used.add(name)
        self.pending[name] = data

    def _damaged(self, name: str, error: Exception) -> None:
        _LOG.warning("plan cache entry %s is unreadable (%s): computing it again", name, error)
        self.hits -= 1
        self.misses += 1

    def flush(self) -> list[str]:
        """Write the entries computed afresh and remove those this plan did not use; return
        the names written. Called by the run once it holds the store's lock."""
        written = []
        for name in sorted(self.pending):
            data = self.pending.pop(name)
            try:
                self.store.write_bytes(f"{FOLDER}/{name}", data)
            except OSError as error:  # an optimization: the run goes on without it
                _LOG.warning("plan cache entry %s not written (%s)", name, error)
                continue
            written.append(name)
        for name in self.store.list_names(FOLDER):
            if name not in self.used:
                self.store.remove(f"{FOLDER}/{name}")
        self._present = None
        return written


def _compress(data: bytes) -> bytes:
    # LZ4 (through Blosc): a country-sized tile's id raster is hundreds of MB of int32 runs.
    from numcodecs import Blosc

    if len(data) > _BLOSC_MAX:
        raise ValueError(f"{len(data)} bytes exceed what one Blosc buffer holds ({_BLOSC_MAX})")
    return bytes(Blosc(cname="lz4", clevel=5, shuffle=Blosc.NOSHUFFLE).encode(data))


def _decompress(data: bytes) -> bytes:
    from numcodecs import Blosc

    return bytes(Blosc().decode(data))


# --- what planning keeps -------------------------------------------------------------------------


def cached_burn(cache: PlanCache, burn: Burn) -> Burn:
    """``burn`` (features, ids, grid -> id raster, shared pixels) looked up in ``cache`` first."""
    import rasterio
    import shapely

    versions = (rasterio.__version__, rasterio.__gdal_version__, FORMAT)

    def burn_or_reuse(frame: Any, ids: np.ndarray, grid: GridSpec) -> tuple[np.ndarray, int]:
        geometries = hashlib.sha256()
        for wkb in shapely.to_wkb(frame.geometry.to_numpy()).tolist():
            geometries.update(len(wkb).to_bytes(8, "little"))
            geometries.update(wkb)
        name = "burn-" + content_hash(geometries.hexdigest(), ids, grid, versions)
        kept = cache.arrays(name)
        if kept is not None:
            return kept["polygon_ids"], int(kept["shared"])
        polygon_ids, shared = burn(frame, ids, grid)
        cache.put_arrays(
            name, {"polygon_ids": polygon_ids, "shared": np.asarray(shared, dtype=np.int64)}
        )
        return polygon_ids, shared

    return burn_or_reuse


_PIXEL_CODE = (
    "pipeline.stages.sample_plan",
    "pipeline.samples.extract",
    "pipeline.samples.select",
    "pipeline.samples.split",
    "pipeline.samples.regions",
)


def code_digest(modules: tuple[str, ...] = _PIXEL_CODE) -> str:
    """A hash of the source of ``modules``: a cached result of changed code is a miss."""
    digest = hashlib.sha256(__version__.encode())
    for module in modules:
        source = getsourcefile(import_module(module))
        digest.update(module.encode())
        if source is not None:
            digest.update(Path(source).read_bytes())
    return digest.hexdigest()
