"""Building one cube chunk: read -> mask -> gap-fill -> features -> region write.

``compute_window`` is the whole computation of one window, in memory; ``build_chunk`` (what a
dask worker runs) writes its result to the cube store, and ``stream_features`` hands it straight
to prediction or extraction without any cube (the streamed path: same function, same numbers).
Task arguments are small and deterministic (the plan and a window); the store's credentials
come from the worker's environment, never from the task.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from functools import lru_cache
from typing import Any

import numpy as np

from pipeline.cube.features import compute_indices
from pipeline.cube.gapfill import gapfill_bands
from pipeline.cube.plan import OWNED_VARIABLE, CubePlan, SensorCube
from pipeline.cube.read import RasterioReader, Reader
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


def read_sensor(
    sensor: SensorCube, grid: GridSpec, reader: Reader
) -> tuple[np.ndarray, np.ndarray]:
    """(T, B, h, w) scaled band values (NaN where no data), and the (T, h, w) validity mask:
    the profile's quality masks, no-data in the quality layer and no-data in any band."""
    profile = sensor.profile
    n_t, n_b = len(sensor.acquisitions), len(profile.bands)
    values = np.empty((n_t, n_b, grid.height, grid.width), dtype=np.float32)
    valid = np.ones((n_t, grid.height, grid.width), dtype=bool)
    for t, acquisition in enumerate(sensor.acquisitions):
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
            valid[t] &= ~np.isnan(target)
        for rule in profile.masks:
            ref = acquisition.assets[rule.asset]
            quality = reader.read(ref.href, ref.band_index, grid, resampling="nearest")
            missing = np.isnan(quality)
            valid[t] &= ~missing
            valid[t] &= ~_invalid(rule, np.where(missing, 0, quality))
    return values, valid


def _invalid(rule: Any, quality: np.ndarray) -> np.ndarray:
    """``rule.invalid`` through a lookup table when the quality codes are 16-bit integers (the
    usual case: a 20x faster gather than set membership on int64)."""
    low, high = float(quality.min(initial=0)), float(quality.max(initial=0))
    if low < 0 or high > 65535:
        return np.asarray(rule.invalid(quality))
    codes = quality.astype(np.uint16)
    if not np.array_equal(codes, quality):  # not integer codes
        return np.asarray(rule.invalid(quality))
    return _lookup_table(rule)[codes]


@lru_cache(maxsize=32)
def _lookup_table(rule: Any) -> np.ndarray:
    return np.asarray(rule.invalid(np.arange(65536, dtype=np.int64)), dtype=bool)


def _sensor_series(
    sensor: SensorCube, grid: GridSpec, reader: Reader
) -> tuple[dict[str, np.ndarray], np.ndarray, np.ndarray]:
    """Gap-filled bands, indices and user features of one sensor, the valid count and mask."""
    values, valid = read_sensor(sensor, grid, reader)
    acquisition_days = np.array([day_number(a.datetime) for a in sensor.acquisitions])
    target_days = np.array([day_number(d) for d in sensor.dates], dtype=np.float64)
    filled = gapfill_bands(values, valid, acquisition_days, target_days)
    del values
    bands = {name: filled.values[i] for i, name in enumerate(sensor.profile.band_names)}
    series = {**bands, **compute_indices(bands, sensor.indices)}
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
            field="spec.features.user_functions",
        )
    return series, filled.valid_count, valid


@dataclass(frozen=True)
class WindowResult:
    arrays: dict[str, np.ndarray]
    """Every cube variable of the window: time series (D, h, w), counts and ``owned`` (h, w)."""
    report: ChunkReport


def compute_window(plan: CubePlan, window: Window, reader: Reader | None = None) -> WindowResult:
    """Every cube variable of ``window`` (any window of the grid, chunk-aligned or not).

    Pixels the tile does not own are NaN in every series and 0 in the counts and ``owned``.
    """
    reader = reader or RasterioReader()
    grid = plan.grid.window_grid(window)
    owned = plan.owned(window)
    arrays: dict[str, np.ndarray] = {}
    valid_total = 0
    observations = 0
    never_valid = np.zeros(grid.shape, dtype=bool)
    for sensor in plan.sensors:
        series, count, valid = _sensor_series(sensor, grid, reader)
        for name, data in series.items():
            out = np.ascontiguousarray(data, dtype=np.float32)
            if not owned.all():
                out[:, ~owned] = np.nan
            arrays[f"{sensor.profile.name}_{name}"] = out
        count = np.where(owned, count, 0).astype(np.uint16)
        arrays[sensor.valid_count_variable] = count
        valid_total += int(valid[:, owned].sum())
        observations += int(valid.shape[0] * owned.sum())
        never_valid |= (count == 0) & owned
    arrays[OWNED_VARIABLE] = owned.astype(np.uint8)
    report = ChunkReport(
        window=window,
        pixels=int(owned.sum()),
        acquisitions=sum(len(s.acquisitions) for s in plan.sensors),
        valid_fraction=valid_total / observations if observations else 0.0,
        never_valid_pixels=int(never_valid.sum()),
    )
    return WindowResult(arrays, report)


def build_chunk(task: CubeChunkTask, reader: Reader | None = None) -> ChunkReport:
    """Compute one chunk and write it (a repeatable region write), then mark it done."""
    result = compute_window(task.plan, task.window, reader)
    write_region(task.store, task.window, result.arrays, task.storage_options)
    mark_chunk_done(task.store, task.plan.chunk_size, task.window, task.storage_options)
    return result.report


def stream_features(plan: CubePlan, window: Window, reader: Reader | None = None) -> np.ndarray:
    """The (n_features, h, w) float32 stack of ``window`` computed from the images, no cube:
    the same values ``read_features`` returns from a cube built from the same plan."""
    arrays = compute_window(plan, window, reader).arrays
    return np.concatenate([arrays[name] for name, _ in plan.time_series_variables], axis=0)


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
