"""Building one cube chunk: read -> mask -> gap-fill -> indices -> region write.

``build_chunk`` is what a dask worker runs; its argument is small and deterministic (the plan and a
window), and it returns a few numbers for the progress report.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from pipeline.cube.features import compute_indices
from pipeline.cube.gapfill import gapfill
from pipeline.cube.plan import CubePlan, SensorCube
from pipeline.cube.read import RasterioReader, Reader
from pipeline.cube.store import write_region
from pipeline.model import GridSpec, Window, day_number


@dataclass(frozen=True)
class CubeChunkTask:
    plan: CubePlan
    window: Window
    store: str


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
    """(T, B, h, w) scaled band values with NaN where invalid, and the (T, h, w) validity mask."""
    profile = sensor.profile
    n_t, n_b = len(sensor.acquisitions), len(profile.bands)
    values = np.empty((n_t, n_b, grid.height, grid.width), dtype=np.float32)
    valid = np.ones((n_t, grid.height, grid.width), dtype=bool)
    for t, acquisition in enumerate(sensor.acquisitions):
        for b, band in enumerate(profile.bands):
            ref = acquisition.assets[band.asset]
            raw = reader.read(
                ref.href, ref.band_index, grid, resampling="bilinear", nodata=band.nodata
            )
            values[t, b] = raw * np.float32(band.scale) + np.float32(band.offset)
        for rule in profile.masks:
            ref = acquisition.assets[rule.asset]
            quality = reader.read(ref.href, ref.band_index, grid, resampling="nearest")
            missing = np.isnan(quality)
            valid[t] &= ~missing
            valid[t] &= ~rule.invalid(np.where(missing, 0, quality))
    valid &= ~np.isnan(values).any(axis=1)
    return values, valid


def build_chunk(task: CubeChunkTask, reader: Reader | None = None) -> ChunkReport:
    reader = reader or RasterioReader()
    grid = task.plan.grid.window_grid(task.window)
    arrays: dict[str, np.ndarray] = {}
    valid_total = 0
    observations = 0
    never_valid = np.zeros(grid.shape, dtype=bool)
    for sensor in task.plan.sensors:
        values, valid = read_sensor(sensor, grid, reader)
        acquisition_days = np.array([day_number(a.datetime) for a in sensor.acquisitions])
        target_days = np.array([day_number(d) for d in sensor.dates])
        filled = gapfill(values, valid[:, None], acquisition_days, target_days)
        bands = {name: filled.values[:, i] for i, name in enumerate(sensor.profile.band_names)}
        series = {**bands, **compute_indices(bands, sensor.indices)}
        for name, data in series.items():
            arrays[f"{sensor.profile.name}_{name}"] = data
        count = filled.valid_count.reshape(-1, *grid.shape).min(axis=0).astype(np.uint16)
        arrays[sensor.valid_count_variable] = count
        valid_total += int(valid.sum())
        observations += valid.size
        never_valid |= count == 0
    write_region(task.store, task.window, arrays)
    return ChunkReport(
        window=task.window,
        pixels=task.window.n_pixels,
        acquisitions=sum(len(s.acquisitions) for s in task.plan.sensors),
        valid_fraction=valid_total / observations if observations else 0.0,
        never_valid_pixels=int(never_valid.sum()),
    )
