"""Building one cube chunk: read -> mask -> gap-fill -> features -> encode -> region write.

Encoders (``pipeline.cube.encoders``) run last, on the series as stored, and add static (y, x)
variables.

``compute_window`` is the whole computation of one window, in memory; ``build_chunk`` (what a
dask worker runs) writes its result to the cube store, and ``stream_features`` hands it straight
to prediction or extraction without any cube (the streamed path: same function, same numbers).
With the int16 encoding, ``compute_window`` quantizes every encoded series once: the codes go to
the store and the series hold their decoded values, which is what ``read_features`` returns.
Task arguments are small and deterministic (the plan and a window); the store's credentials
come from the worker's environment, never from the task.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field, replace
from functools import lru_cache
from typing import Any

import numba
import numpy as np

from pipeline.buffers import ChunkBuffers, thread_buffers
from pipeline.catalog.sensors import MaskRule
from pipeline.cube.encoders import encode
from pipeline.cube.encoding import quantize
from pipeline.cube.features import compute_indices
from pipeline.cube.gapfill import gapfill_bands
from pipeline.cube.plan import OWNED_VARIABLE, CubePlan, SensorCube
from pipeline.cube.read import GatheringReader, RasterioReader, Reader, bounded_reader
from pipeline.cube.store import mark_chunk_done, write_region
from pipeline.cube.userfeatures import apply_user_function
from pipeline.model import GridSpec, Window, day_number


@dataclass(frozen=True)
class CubeChunkTask:
    plan: CubePlan
    window: Window
    store: str
    storage_options: Mapping[str, Any] | None = field(default=None, hash=False, compare=False)
    """fsspec options without secrets (e.g. an endpoint URL); keys come from the environment."""


@dataclass(frozen=True)
class ChunkReport:
    window: Window
    pixels: int
    acquisitions: int
    valid_fraction: float
    never_valid_pixels: int


def _new_array(name: str, shape: tuple[int, ...], dtype: Any = np.float32) -> np.ndarray:
    return np.empty(shape, dtype=dtype)


def _checked_out(out: np.ndarray, shape: tuple[int, ...]) -> np.ndarray:
    if out.shape != shape or out.dtype != np.float32 or not out.flags.c_contiguous:
        raise ValueError(
            f"out must be a C-contiguous float32 array of shape {shape}, "
            f"got {out.dtype} {out.shape}"
        )
    return out


def read_sensor(
    sensor: SensorCube, grid: GridSpec, reader: Reader, *, out: np.ndarray | None = None
) -> tuple[np.ndarray, np.ndarray]:
    """(T, B, h, w) scaled band values (NaN where no data), and the (T, h, w) validity mask:
    the profile's quality masks, no-data in the quality layer and no-data (a value that is not
    finite) in any band. Every band is therefore finite wherever the mask is True.

    With the profile's ``masking: band`` a band's own no-data and its own flags (the band bits
    of a saturation layer) make only that band NaN there; the mask then holds the rules shared
    by every band (and a band may be NaN where it is True).

    out: a float32 array of that shape to fill (and return) instead of a new one. Remote reads
    are bounded by the sensor's catalog ``timeout_s`` / ``retries`` (``bounded_reader``).
    """
    profile = sensor.profile
    reader = bounded_reader(reader, profile.read_timeout_s, profile.read_retries)
    per_band = profile.masking == "band"
    n_t, n_b = len(sensor.acquisitions), len(profile.bands)
    shape = (n_t, n_b, grid.height, grid.width)
    values = np.empty(shape, dtype=np.float32) if out is None else _checked_out(out, shape)
    valid = np.ones((n_t, grid.height, grid.width), dtype=bool)
    for t, acquisition in enumerate(sensor.acquisitions):
        valid_t = valid[t].reshape(-1)
        for b, band in enumerate(profile.bands):
            ref = acquisition.assets[band.asset]
            raw = reader.read(
                ref.href,
                ref.band_index,
                grid,
                resampling=getattr(band, "resampling", "bilinear"),
                nodata=band.nodata,
            )
            target = values[t, b]
            profile.physical(band, raw, acquisition, out=target)  # scale, item offset, dB
            if not per_band:
                _and_finite(valid_t, target.reshape(-1))
        for rule in profile.masks:
            ref = acquisition.assets[rule.asset]
            quality = reader.read(ref.href, ref.band_index, grid, resampling="nearest")
            if not per_band or not rule.band_bits:
                _apply_rule(rule, quality, valid[t])
                continue
            _apply_rule(replace(rule, band_bits=()), quality, valid[t])  # the shared part
            for name, bit in rule.band_bits:  # each band's flag: that band only
                if name not in profile.band_names:
                    continue
                flagged = np.ones(quality.shape, dtype=bool)
                _apply_rule(MaskRule(rule.asset, band_bits=((name, bit),)), quality, flagged)
                values[t, profile.band_names.index(name)][~flagged] = np.nan
    return values, valid


@numba.njit(cache=True, nogil=True)
def _and_finite(valid: np.ndarray, values: np.ndarray) -> None:  # pragma: no cover  (compiled)
    for i in range(valid.shape[0]):
        valid[i] &= np.isfinite(values[i])


def _apply_rule(rule: Any, quality: np.ndarray, valid: np.ndarray) -> None:
    """``valid &= quality present and not rule.invalid``, through a lookup table when the codes
    are integers in 0..65535 (the usual case: one compiled pass, no temporary)."""
    flat = np.ascontiguousarray(quality, dtype=np.float32).reshape(-1)
    valid_flat = valid.reshape(-1)
    if _apply_table(flat, _lookup_table(rule), valid_flat):
        return
    # Codes that are not 16-bit integers: the rule itself, on the values (the table's result
    # for the integer codes above agrees with it, so applying both is the same).
    missing = np.isnan(flat)
    valid_flat &= ~missing
    valid_flat &= ~np.asarray(rule.invalid(np.where(missing, 0, flat)), dtype=bool)


@lru_cache(maxsize=32)
def _lookup_table(rule: Any) -> np.ndarray:
    """``rule.invalid`` of every 16-bit code (a gather is 20x faster than set membership)."""
    return np.asarray(rule.invalid(np.arange(65536, dtype=np.int64)), dtype=bool)


@numba.njit(cache=True, nogil=True)
def _apply_table(
    quality: np.ndarray, invalid: np.ndarray, valid: np.ndarray
) -> bool:  # pragma: no cover  (compiled)
    """False as soon as a code is not an integer of 0..65535 (the caller then uses the rule)."""
    for i in range(quality.shape[0]):
        q = quality[i]
        if np.isnan(q):
            valid[i] = False
            continue
        if not (q >= 0 and q <= 65535):
            return False
        code = np.int64(q)
        if code != q:
            return False
        if invalid[code]:
            valid[i] = False
    return True


def _sensor_series(
    sensor: SensorCube, grid: GridSpec, reader: Reader, buffers: ChunkBuffers | None = None
) -> tuple[dict[str, np.ndarray], np.ndarray, np.ndarray]:
    """Gap-filled bands, indices and user features of one sensor, the valid count and mask
    (bands and indices in ``buffers`` when given)."""
    key = sensor.profile.name
    n_t, n_b, n_d = len(sensor.acquisitions), len(sensor.profile.bands), len(sensor.dates)
    size = (grid.height, grid.width)
    take = buffers.take if buffers is not None else _new_array
    values, valid = read_sensor(sensor, grid, reader, out=take(f"{key}/inputs", (n_t, n_b, *size)))
    acquisition_days = np.array([day_number(a.datetime) for a in sensor.acquisitions])
    target_days = np.array([day_number(d) for d in sensor.dates], dtype=np.float64)
    out = take(f"{key}/bands", (n_b, n_d, *size))
    if sensor.profile.masking == "band":
        filled_values, valid_count, valid = _gapfill_each_band(
            values, valid, acquisition_days, target_days, out
        )
    else:
        filled = gapfill_bands(
            values, valid, acquisition_days, target_days, valid_is_finite=True, out=out
        )
        filled_values, valid_count = filled.values, filled.valid_count
    del values
    bands = {name: filled_values[i] for i, name in enumerate(sensor.profile.band_names)}
    indices_out = {index: take(f"{key}/{index}", (n_d, *size)) for index in sensor.indices}
    series = {**bands, **compute_indices(bands, sensor.indices, out=indices_out)}
    reserved = list(series)
    for path in sensor.user_functions:
        produced = apply_user_function(path, bands, sensor=sensor.profile.name, reserved=reserved)
        reserved.extend(produced)
        series.update(produced)
    if tuple(series) != sensor.series_names:
        from pipeline.errors import ManifestError

        raise ManifestError(
            f"the user functions of sensor {sensor.profile.name!r} returned features "
            f"{list(series)[len(sensor.series_names) - len(sensor.user_features) :]} on real data "
            f"but {list(sensor.user_features)} when the cube was planned",
            fix="return the same feature names whatever the input values",
            field="features.user_functions",
        )
    return series, valid_count, valid


def _gapfill_each_band(
    values: np.ndarray,
    shared: np.ndarray,
    acquisition_days: np.ndarray,
    target_days: np.ndarray,
    out: np.ndarray,
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """``masking: band``: each band gap-filled on its own valid dates (the shared mask and its
    own finite values). The valid count is the smallest band's (0 where a band was never valid,
    so such a pixel is unmapped, as under the date rule); the mask returned is where any band
    was observed (for the chunk's valid fraction)."""
    observed = np.zeros(shared.shape, dtype=bool)
    count: np.ndarray | None = None
    for b in range(values.shape[1]):
        band = np.ascontiguousarray(values[:, b : b + 1])
        usable = shared & np.isfinite(band[:, 0])
        observed |= usable
        filled = gapfill_bands(
            band, usable, acquisition_days, target_days, valid_is_finite=True, out=out[b : b + 1]
        )
        count = filled.valid_count if count is None else np.minimum(count, filled.valid_count)
    if count is None:
        count = np.zeros(shared.shape[1:], dtype=np.uint16)
    return out, count, observed


@dataclass(frozen=True)
class WindowResult:
    arrays: dict[str, np.ndarray]
    """Every cube variable of the window: time series (D, h, w) float32 as stored and read
    back (decoded), encoder outputs, counts and ``owned`` (h, w)."""
    report: ChunkReport
    codes: dict[str, np.ndarray] = field(default_factory=dict)
    """The int16 codes of the encoded time series (``CubePlan.variable_encodings``)."""

    @property
    def stored(self) -> dict[str, np.ndarray]:
        """What the store holds: the codes of encoded series, the other arrays as they are."""
        return {name: self.codes.get(name, data) for name, data in self.arrays.items()}


def compute_window(
    plan: CubePlan,
    window: Window,
    reader: Reader | None = None,
    *,
    buffers: ChunkBuffers | None = None,
    decoded: bool = True,
) -> WindowResult:
    """Every cube variable of ``window`` (any window of the grid, chunk-aligned or not).

    Pixels the tile does not own are NaN in every series and 0 in the counts and ``owned``.
    Series the plan encodes as int16 are quantized: their codes are in ``codes`` and the series
    hold the decoded values. With ``buffers``, the arrays of the time series and their codes are
    those buffers (valid until they are taken again: see ``ChunkBuffers``); without, new arrays.
    ``decoded=False`` (a chunk only written to the store) leaves the encoded series unquantized:
    only ``codes`` (and ``stored``) are then what a reader gets. Encoders read the series as
    stored (decoded), so a plan with encoders always decodes.
    """
    grid = plan.grid.window_grid(window)
    reader = reader or RasterioReader()
    return _compute(plan, window, grid, plan.owned(window), reader, buffers, decoded)


def compute_pixels(
    plan: CubePlan,
    parts: Sequence[tuple[Window, Any, Any]],
    reader: Reader | None = None,
) -> np.ndarray:
    """(n, n_features) float32: the features ``compute_window(plan, window)`` gives at each
    part's pixels (``rows``, ``cols`` relative to its ``window``), the parts one after the
    other, to the bit.

    The windows' inputs are decoded as for whole windows, but when the plan is ``pixelwise``
    everything after the read (masks, gap-filling, indices, encoding) runs on those pixels
    only, all parts at once: extracting a few samples per window costs the decoding, not the
    windows' computation (the steps are per pixel: a pixel's values do not depend on its
    neighbours).
    """
    reader = reader or RasterioReader()
    pixels = [(w, np.asarray(r, dtype=np.intp), np.asarray(c, dtype=np.intp)) for w, r, c in parts]
    if not plan.pixelwise:
        tables = [
            feature_stack(plan, compute_window(plan, window, reader).arrays)[:, rows, cols].T
            for window, rows, cols in pixels
        ]
        return np.ascontiguousarray(np.concatenate(tables) if tables else _no_rows(plan))
    if not pixels or not sum(rows.size for _, rows, _ in pixels):
        return _no_rows(plan)
    gathering = GatheringReader(
        reader, tuple((plan.grid.window_grid(w), rows, cols) for w, rows, cols in pixels)
    )
    owned = np.concatenate([plan.owned(w)[rows, cols] for w, rows, cols in pixels])[np.newaxis]
    first = plan.grid.window_grid(pixels[0][0])
    row = replace(
        first, width=owned.size, height=1
    )  # the pixels side by side: only its shape counts
    arrays = _compute(plan, pixels[0][0], row, owned, gathering, None, decoded=True).arrays
    return np.ascontiguousarray(feature_stack(plan, arrays)[:, 0, :].T)


def _no_rows(plan: CubePlan) -> np.ndarray:
    return np.empty((0, len(plan.feature_names)), dtype=np.float32)


def _compute(
    plan: CubePlan,
    window: Window,
    grid: GridSpec,
    owned: np.ndarray,
    reader: Reader,
    buffers: ChunkBuffers | None,
    decoded: bool,
) -> WindowResult:
    """``compute_window`` on the pixels of ``grid`` (the window's, or a row of some of its
    pixels that ``reader`` gathers), ``owned`` on that grid's shape."""
    decoded = decoded or bool(plan.encoders)
    encodings = plan.variable_encodings
    arrays: dict[str, np.ndarray] = {}
    codes: dict[str, np.ndarray] = {}
    valid_total = 0
    observations = 0
    never_valid = np.zeros(grid.shape, dtype=bool)
    for sensor in plan.sensors:
        series, count, valid = _sensor_series(sensor, grid, reader, buffers)
        for name, data in series.items():
            variable = f"{sensor.profile.name}_{name}"
            out = np.ascontiguousarray(data, dtype=np.float32)
            if not owned.all():
                out[:, ~owned] = np.nan
            encoding = encodings[variable]
            if encoding is not None:
                target = _code_array(buffers, variable, out.shape)
                codes[variable] = quantize(out, encoding, out=target, write_back=decoded)
            arrays[variable] = out
        count = np.where(owned, count, 0).astype(np.uint16)
        arrays[sensor.valid_count_variable] = count
        valid_total += int(valid[:, owned].sum())
        observations += int(valid.shape[0] * owned.sum())
        never_valid |= (count == 0) & owned
    for encoder in plan.encoders:  # static (y, x) variables, NaN where inputs are not finite
        embedded = encode(encoder, arrays)
        arrays.update(zip(encoder.variables, embedded, strict=True))
    arrays[OWNED_VARIABLE] = owned.astype(np.uint8)
    report = ChunkReport(
        window=window,
        pixels=int(owned.sum()),
        acquisitions=sum(len(s.acquisitions) for s in plan.sensors),
        valid_fraction=valid_total / observations if observations else 0.0,
        never_valid_pixels=int(never_valid.sum()),
    )
    return WindowResult(arrays, report, codes)


def _code_array(buffers: ChunkBuffers | None, variable: str, shape: tuple[int, ...]) -> np.ndarray:
    if buffers is None:
        return np.empty(shape, dtype=np.int16)
    return buffers.take(f"codes/{variable}", shape, np.int16)


def build_chunk(task: CubeChunkTask, reader: Reader | None = None) -> ChunkReport:
    """Compute one chunk and write it (a repeatable region write), then mark it done.

    The chunk's arrays are this thread's ``ChunkBuffers``, reused by its next chunk.
    """
    result = compute_window(task.plan, task.window, reader, buffers=thread_buffers(), decoded=False)
    write_region(task.store, task.window, result.stored, task.storage_options)
    mark_chunk_done(task.store, task.plan.chunk_size, task.window, task.storage_options)
    return result.report


def load_kernels() -> None:
    """Load every compiled kernel of a chunk build (from numba's cache, else compiling it):
    0.7 CPU s per process that a worker's warm-up pays while the driver plans, not its first
    chunk. Each kernel runs once on a few values of the types a build uses."""
    from pipeline.cube.encoding import VariableEncoding, decode
    from pipeline.cube.read import _nodata_to_nan

    values = np.ones((2, 1, 2, 2), dtype=np.float32)
    gapfill_bands(values, np.ones((2, 2, 2), dtype=bool), np.array([0.0, 1.0]), np.array([0.5]),
                  valid_is_finite=True)  # fmt: skip
    band = np.ones((1, 2, 2), dtype=np.float32)
    compute_indices({"red": band, "nir": band, "green": band}, ("ndvi", "brightness"))
    step = VariableEncoding(1e-4)
    decode(quantize(band.copy(), step), step)
    _nodata_to_nan(band[0], np.float32(0))
    _and_finite(np.ones(4, dtype=bool), band.reshape(-1))
    _apply_table(band.reshape(-1), np.zeros(65536, dtype=bool), np.ones(4, dtype=bool))


def stream_features(plan: CubePlan, window: Window, reader: Reader | None = None) -> np.ndarray:
    """The (n_features, h, w) float32 stack of ``window`` computed from the images, no cube:
    the same values ``read_features`` returns from a cube built from the same plan."""
    arrays = compute_window(plan, window, reader, buffers=thread_buffers()).arrays
    return feature_stack(plan, arrays)


def feature_stack(plan: CubePlan, arrays: Mapping[str, np.ndarray]) -> np.ndarray:
    """The (n_features, h, w) float32 stack of a window's variables, in feature order (time
    series (D, h, w), then the encoders' static (h, w) variables, one feature each)."""
    parts = [arrays[name] for name, _ in plan.time_series_variables]
    return np.concatenate([p if p.ndim == 3 else p[np.newaxis] for p in parts], axis=0)


def check_user_features(plan: CubePlan, reader: Reader | None = None, size: int = 16) -> None:
    """Run the user functions on a small window of real data before the run starts.

    The window is the centre of the first chunk to build; any failure is a ManifestError that
    names the function.
    """
    if not any(s.user_functions for s in plan.sensors) or not plan.windows:
        return
    first = plan.windows[0]
    h, w = min(size, first.height), min(size, first.width)
    window = Window(
        first.row_off + (first.height - h) // 2, first.col_off + (first.width - w) // 2, h, w
    )
    grid = plan.grid.window_grid(window)
    for sensor in plan.sensors:
        if sensor.user_functions:
            _sensor_series(sensor, grid, reader or RasterioReader())
