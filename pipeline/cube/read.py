"""Pixel I/O behind a protocol: read one band of one file onto a target grid.

Everything else in the cube stage is pure numpy; only a Reader touches files. ``RasterioReader``
picks the cheapest exact way for each read:

* same CRS, pixel size and phase: a plain windowed read of the intersecting blocks;
* same CRS and phase, source pixels an integer multiple of the target's (Sentinel-2 20 m bands
  on a 10 m grid): one read at the source resolution, then ``np.repeat`` (nearest) or a separable
  bilinear kernel with GDAL's pixel-centre convention;
* anything else (another CRS, a fractional ratio, a shifted phase): GDAL's warper (WarpedVRT).

docs/cube.md explains why this reader was chosen over stackstac and odc-stac (by measurement).
Open datasets are kept per thread (``DatasetCache``) so that the chunks of one tile that land on
the same worker do not reopen every file: an open costs about 1.5 ms locally, far more on S3.

Remote reads (/vsicurl/, /vsis3/ ...) are bounded like catalog requests (``HttpLimits``): GDAL's
GDAL_HTTP_TIMEOUT bounds a whole request (curl's total time, not a per-read wait), the low-speed
settings cut a transfer that crawls, and GDAL_HTTP_MAX_RETRY retries it; a read therefore gives
up after about ``(retries + 1) * timeout_s``. Settings the environment gives win.
"""

from __future__ import annotations

import math
import os
import threading
from collections import OrderedDict
from collections.abc import Mapping
from dataclasses import dataclass, field, replace
from typing import Any, Protocol

import numba
import numpy as np
import rasterio
from rasterio.enums import Resampling
from rasterio.errors import RasterioIOError
from rasterio.vrt import WarpedVRT
from rasterio.windows import Window as RioWindow

from pipeline.errors import CatalogError
from pipeline.model import GridSpec


@dataclass(frozen=True)
class HttpLimits:
    """How long a remote read may take: ``timeout_s`` per request whole, ``retries`` more tries
    (the catalog's ``timeout_s`` / ``retries`` defaults)."""

    timeout_s: float = 30.0
    retries: int = 5
    min_bytes_per_s: int = 1

    def gdal_options(self, environ: Mapping[str, str] | None = None) -> dict[str, str]:
        """GDAL configuration options, leaving out those the environment sets."""
        env = os.environ if environ is None else environ
        seconds = str(max(1, math.ceil(self.timeout_s)))
        options = {
            "GDAL_HTTP_TIMEOUT": seconds,  # curl's CURLOPT_TIMEOUT: connection, headers, body
            "GDAL_HTTP_CONNECTTIMEOUT": seconds,
            "GDAL_HTTP_LOW_SPEED_TIME": seconds,
            "GDAL_HTTP_LOW_SPEED_LIMIT": str(self.min_bytes_per_s),
            "GDAL_HTTP_MAX_RETRY": str(self.retries),
            "GDAL_HTTP_RETRY_DELAY": "0.5",
        }
        return {k: v for k, v in options.items() if k not in env}

    def remote_options(self, environ: Mapping[str, str] | None = None) -> dict[str, str]:
        """``gdal_options`` for a remote file: no probing of sibling files (.aux.xml, .ovr ...),
        each of which would be one more bounded request."""
        env = os.environ if environ is None else environ
        options = self.gdal_options(env)
        if "GDAL_DISABLE_READDIR_ON_OPEN" not in env:
            options["GDAL_DISABLE_READDIR_ON_OPEN"] = "EMPTY_DIR"
        return options


DEFAULT_HTTP_LIMITS = HttpLimits()


class Reader(Protocol):
    """Reads one band of a raster onto ``grid`` as float32, NaN where there is no data.

    No data means: outside the file, the file's no-data value, or ``nodata`` when given (it
    overrides the file's). Integer quality layers come back as exact floats (< 2**24).
    """

    def read(
        self,
        href: str,
        band_index: int,
        grid: GridSpec,
        *,
        resampling: str = "nearest",
        nodata: float | None = None,
    ) -> np.ndarray: ...


def _aligned_offset(src_transform: tuple[float, ...], grid: GridSpec) -> tuple[int, int] | None:
    """Row/column offset of ``grid`` inside the source grid when both share pixel size and phase."""
    return _integer_factor(src_transform, grid, 1)


def _integer_factor(
    src_transform: tuple[float, ...], grid: GridSpec, factor: int
) -> tuple[int, int] | None:
    """Offset (in target pixels) of ``grid`` from the source origin when the source pixel is
    exactly ``factor`` target pixels and both grids share their pixel edges."""
    a, b, c, d, e, f = src_transform[:6]
    ga, gb, gc, gd, ge, gf = grid.transform
    if b or d or gb or gd or ga <= 0 or ge >= 0:
        return None
    if not (
        math.isclose(a, ga * factor, rel_tol=1e-9) and math.isclose(e, ge * factor, rel_tol=1e-9)
    ):
        return None
    col = (gc - c) / ga
    row = (gf - f) / ge
    if abs(col - round(col)) > 1e-6 or abs(row - round(row)) > 1e-6:
        return None
    return round(row), round(col)


def _source_factor(src_transform: tuple[float, ...], grid: GridSpec) -> int | None:
    """The integer ratio source pixel / target pixel (1, 2, 3, 6...) when there is one."""
    ratio = abs(src_transform[0]) / abs(grid.transform[0])
    k = round(ratio)
    if k >= 1 and math.isclose(ratio, k, rel_tol=1e-9):
        return k
    return None


class DatasetCache:
    """Open rasterio datasets of one thread, least recently used closed first.

    A local file is reopened when its size or modification time changed; remote assets (STAC
    assets are immutable objects) are trusted for the life of the worker.
    """

    def __init__(self, capacity: int = 256) -> None:
        self.capacity = capacity
        self._local = threading.local()

    def _entries(self) -> OrderedDict[str, tuple[Any, Any]]:
        entries = getattr(self._local, "entries", None)
        if entries is None:
            entries = OrderedDict()
            self._local.entries = entries
        return entries

    def open(self, href: str) -> Any:
        _limit_block_cache()
        entries = self._entries()
        stamp = _local_stamp(href)
        cached = entries.get(href)
        if cached is not None and cached[1] == stamp and not cached[0].closed:
            entries.move_to_end(href)
            return cached[0]
        if cached is not None:
            cached[0].close()
        dataset = rasterio.open(href)
        entries[href] = (dataset, stamp)
        while len(entries) > self.capacity:
            _, (old, _) = entries.popitem(last=False)
            old.close()
        return dataset

    def clear(self) -> None:
        entries = self._entries()
        while entries:
            _, (dataset, _) = entries.popitem()
            dataset.close()


def _local_stamp(href: str) -> tuple[int, int] | None:
    if "://" in href or href.startswith("/vsi"):
        return None
    try:
        stat = os.stat(href)  # noqa: PTH116 (per read: pathlib costs as much as the stat)
    except OSError:
        return None
    return (stat.st_size, stat.st_mtime_ns)


_DATASETS = DatasetCache()
BLOCK_CACHE_BYTES = 64 * 2**20
_block_cache_set = False


def _limit_block_cache() -> None:
    """Cap GDAL's block cache (default 5 % of RAM) once per process, unless the environment sets
    GDAL_CACHEMAX: a cube build reads each block for one chunk only, so a large cache just holds
    memory, and with datasets kept open it grew with the number of chunks a worker built."""
    global _block_cache_set
    if _block_cache_set:
        return
    _block_cache_set = True
    from rasterio._env import set_gdal_config

    if "GDAL_CACHEMAX" not in os.environ:
        set_gdal_config("GDAL_CACHEMAX", BLOCK_CACHE_BYTES)
    # Remote reads are bounded in every process, whoever builds the reader.
    for name, value in DEFAULT_HTTP_LIMITS.gdal_options().items():
        set_gdal_config(name, value)


def _read_clipped(
    src: Any, band_index: int, row: int, col: int, height: int, width: int, nodata: float | None
) -> np.ndarray:
    """Source pixels rows row..row+height, cols col..col+width as float32, NaN outside/no-data."""
    r0, c0 = max(row, 0), max(col, 0)
    r1, c1 = min(row + height, src.height), min(col + width, src.width)
    inside = (r0, c0, r1, c1) == (row, col, row + height, col + width)
    # Inside the file (the usual case): GDAL converts to float32 straight into the result.
    out = (
        np.empty((height, width), np.float32)
        if inside
        else np.full((height, width), np.nan, np.float32)
    )
    if r1 <= r0 or c1 <= c0:
        return out
    part = out[r0 - row : r1 - row, c0 - col : c1 - col]
    src.read(band_index, window=RioWindow(c0, r0, c1 - c0, r1 - r0), out=part)
    if nodata is not None and not np.isnan(nodata):
        _nodata_to_nan(part, np.float32(nodata))
    if src.nodata is None and nodata is None:
        # No no-data value: the internal mask (if any) marks what is missing.
        flags = src.mask_flag_enums[band_index - 1]
        if any(f.name == "per_dataset" for f in flags):
            mask = src.read_masks(band_index, window=RioWindow(c0, r0, c1 - c0, r1 - r0))
            part[mask == 0] = np.nan
    return out


@numba.njit(cache=True, nogil=True)
def _nodata_to_nan(data: np.ndarray, nodata: np.float32) -> None:  # pragma: no cover  (compiled)
    """``data[data == nodata] = NaN`` in one pass, without the boolean temporary."""
    rows, cols = data.shape
    for r in range(rows):
        for c in range(cols):
            if data[r, c] == nodata:
                data[r, c] = np.nan


def _upsample_nearest(
    data: np.ndarray, factor: int, r_off: int, c_off: int, h: int, w: int
) -> np.ndarray:
    """Target pixels (r_off.., c_off..) of ``data`` repeated ``factor`` times on both axes."""
    big = np.repeat(np.repeat(data, factor, axis=0), factor, axis=1)
    return np.ascontiguousarray(big[r_off : r_off + h, c_off : c_off + w])


def _bilinear_axis(n: int, offset: int, factor: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Indices (lower, upper) and weight of the upper source pixel for ``n`` target pixels.

    GDAL's convention: the target pixel centre i + 0.5 sits at source coordinate (i + 0.5) / k,
    i.e. at (i + 0.5) / k - 0.5 in units of source pixel centres.
    """
    u = (np.arange(n) + offset + 0.5) / factor - 0.5
    lower = np.floor(u).astype(np.intp)
    weight = (u - lower).astype(np.float32)
    return lower, lower + 1, weight


def _upsample_bilinear(
    src: Any,
    band_index: int,
    factor: int,
    offset: tuple[int, int],
    h: int,
    w: int,
    nodata: float | None,
) -> np.ndarray:
    """Separable bilinear interpolation at the target pixels (GDAL's convention at the file's
    edge: the edge pixel is repeated for centres within half a source pixel of it). NaN where a
    contributing pixel is no-data and where the target centre lies outside the file."""
    row, col = offset
    r_lo, r_hi, r_w = _bilinear_axis(h, row, factor)
    c_lo, c_hi, c_w = _bilinear_axis(w, col, factor)
    r_lo, r_hi = np.clip(r_lo, 0, src.height - 1), np.clip(r_hi, 0, src.height - 1)
    c_lo, c_hi = np.clip(c_lo, 0, src.width - 1), np.clip(c_hi, 0, src.width - 1)
    r0, c0 = int(r_lo.min()), int(c_lo.min())
    data = _read_clipped(
        src, band_index, r0, c0, int(r_hi.max()) - r0 + 1, int(c_hi.max()) - c0 + 1, nodata
    )
    top = data[r_lo - r0, :]
    bottom = data[r_hi - r0, :]
    with np.errstate(invalid="ignore"):
        rows = top + r_w[:, None] * (bottom - top)
        left = rows[:, c_lo - c0]
        right = rows[:, c_hi - c0]
        out = (left + c_w[None, :] * (right - left)).astype(np.float32, copy=False)
    # Target centres outside the file: (i + 0.5) / k outside [0, size].
    inside_r = (np.arange(h) + row + 0.5) / factor
    inside_c = (np.arange(w) + col + 0.5) / factor
    out[(inside_r < 0) | (inside_r > src.height), :] = np.nan
    out[:, (inside_c < 0) | (inside_c > src.width)] = np.nan
    return out


@dataclass(frozen=True)
class GatheringReader:
    """Reads each of its windows (grids) through ``inner`` and hands back only their pixels
    (``rows``, ``cols`` of each), one window's after the other, as one (1, n) row, whatever grid
    it is asked for (a row of n pixels): what the per-pixel steps after the read need to compute
    a few pixels (``compute_pixels``). A file's windows are read one after the other, so windows
    sharing one of its blocks decode it once (GDAL's block cache)."""

    inner: Reader
    parts: tuple[tuple[GridSpec, np.ndarray, np.ndarray], ...] = field(hash=False, compare=False)

    def read(
        self,
        href: str,
        band_index: int,
        grid: GridSpec,
        *,
        resampling: str = "nearest",
        nodata: float | None = None,
    ) -> np.ndarray:
        pieces = [
            self.inner.read(href, band_index, window, resampling=resampling, nodata=nodata)[
                rows, cols
            ]
            for window, rows, cols in self.parts
        ]
        return np.concatenate(pieces)[np.newaxis]


def bounded_reader(reader: Reader, timeout_s: float | None, retries: int | None) -> Reader:
    """``reader`` with its remote reads bounded by a sensor's ``timeout_s`` / ``retries`` (the
    production reader, unless it was given limits of its own; any other reader as it is)."""
    if isinstance(reader, GatheringReader):
        return replace(reader, inner=bounded_reader(reader.inner, timeout_s, retries))
    if not isinstance(reader, RasterioReader) or reader.http is not None:
        return reader
    if timeout_s is None and retries is None:
        return reader
    limits = HttpLimits(
        DEFAULT_HTTP_LIMITS.timeout_s if timeout_s is None else timeout_s,
        DEFAULT_HTTP_LIMITS.retries if retries is None else retries,
    )
    return RasterioReader(reader.cache, limits)


class RasterioReader:
    """The production reader: GDAL through rasterio (local files, /vsis3/, /vsicurl/).

    ``http``: the limits of its remote reads (``bounded_reader``: a sensor's timeout_s and
    retries); None: ``DEFAULT_HTTP_LIMITS``, the catalog's defaults. GDAL settings that the
    environment gives win over either."""

    def __init__(self, cache: DatasetCache | None = None, http: HttpLimits | None = None) -> None:
        self.cache = cache or _DATASETS
        self.http = http

    def read(
        self,
        href: str,
        band_index: int,
        grid: GridSpec,
        *,
        resampling: str = "nearest",
        nodata: float | None = None,
    ) -> np.ndarray:
        _limit_block_cache()  # the process defaults first: set inside an Env, they would win
        if _local_stamp(href) is not None:
            return self._read(href, band_index, grid, resampling=resampling, nodata=nodata)
        limits = DEFAULT_HTTP_LIMITS if self.http is None else self.http
        with rasterio.Env(**limits.remote_options()):
            return self._read(href, band_index, grid, resampling=resampling, nodata=nodata)

    def _read(
        self,
        href: str,
        band_index: int,
        grid: GridSpec,
        *,
        resampling: str = "nearest",
        nodata: float | None = None,
    ) -> np.ndarray:
        try:
            src = self.cache.open(href)
            if band_index > src.count:
                raise CatalogError(
                    f"{href!r} has {src.count} band(s); band {band_index} was asked for",
                    fix="check the asset's band index",
                )
            src_nodata = nodata if nodata is not None else src.nodata
            same_crs = src.crs is not None and src.crs == _crs(grid.crs)
            transform = tuple(src.transform)[:6]
            factor = _source_factor(transform, grid) if same_crs else None
            offset = _integer_factor(transform, grid, factor) if factor else None
            if offset is not None and factor is not None:
                return self._read_integer_factor(
                    src, band_index, grid, factor, offset, resampling, src_nodata
                )
            return self._read_warped(src, band_index, grid, resampling, src_nodata)
        except RasterioIOError as exc:
            raise CatalogError(
                f"cannot read {href!r}: {exc}",
                fix="check that the asset exists and is a readable GeoTIFF/COG (a corrupt or "
                "missing file must be replaced or its item removed from the catalog)",
            ) from None

    @staticmethod
    def _read_integer_factor(
        src: Any,
        band_index: int,
        grid: GridSpec,
        factor: int,
        offset: tuple[int, int],
        resampling: str,
        nodata: float | None,
    ) -> np.ndarray:
        row, col = offset  # target pixel offset of the grid from the source origin
        if factor == 1:
            return _read_clipped(src, band_index, row, col, grid.height, grid.width, nodata)
        if resampling == "nearest":
            r0, c0 = row // factor, col // factor
            r1 = (row + grid.height - 1) // factor + 1
            c1 = (col + grid.width - 1) // factor + 1
            data = _read_clipped(src, band_index, r0, c0, r1 - r0, c1 - c0, nodata)
            return _upsample_nearest(
                data, factor, row - r0 * factor, col - c0 * factor, grid.height, grid.width
            )
        if resampling == "bilinear":
            return _upsample_bilinear(
                src, band_index, factor, offset, grid.height, grid.width, nodata
            )
        return RasterioReader._read_warped(src, band_index, grid, resampling, nodata)

    @staticmethod
    def _read_warped(
        src: Any, band_index: int, grid: GridSpec, resampling: str, nodata: float | None
    ) -> np.ndarray:
        with WarpedVRT(
            src,
            crs=grid.crs,
            transform=grid.affine,
            width=grid.width,
            height=grid.height,
            resampling=Resampling[resampling],
            src_nodata=nodata,
            add_alpha=nodata is None,  # without no-data, an alpha band marks what lies outside
        ) as vrt:
            data = vrt.read(band_index, masked=True)
            outside = vrt.read(vrt.count) == 0 if nodata is None else False
        out = np.ma.getdata(data).astype(np.float32)
        missing = np.ma.getmaskarray(data) | outside
        if nodata is not None and not np.isnan(nodata):
            missing = missing | (np.ma.getdata(data) == nodata)
        out[missing] = np.nan
        return out


_CRS_CACHE: dict[str, Any] = {}


def _crs(text: str) -> Any:
    crs = _CRS_CACHE.get(text)
    if crs is None:
        crs = rasterio.crs.CRS.from_user_input(text)
        _CRS_CACHE[text] = crs
    return crs
