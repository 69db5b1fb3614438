"""Planning a cube (pure): which acquisitions, which date grid, which variables, which chunks.

The cube holds, for each sensor, one variable per band and per index with dims
(``<sensor>_time``, y, x) on that sensor's regular date grid, plus ``<sensor>_valid_count``
(y, x). Model features are the variables' values on each date, named
``<sensor>_<variable>_<YYYYMMDD>``, in a fixed order: sensors, then bands, then indices, then dates.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import date

from pipeline.catalog.sensors import SensorProfile
from pipeline.model import Acquisition, DateGrid, GridSpec, Window


@dataclass(frozen=True)
class SensorCube:
    """One sensor's part of the cube: its acquisitions and the regular dates they fill."""

    profile: SensorProfile
    acquisitions: tuple[Acquisition, ...]
    dates: tuple[date, ...]
    indices: tuple[str, ...]

    @property
    def time_dim(self) -> str:
        return f"{self.profile.name}_time"

    @property
    def variables(self) -> tuple[str, ...]:
        """Names of this sensor's time-series variables (bands then indices)."""
        return tuple(f"{self.profile.name}_{v}" for v in (*self.profile.band_names, *self.indices))

    @property
    def valid_count_variable(self) -> str:
        return f"{self.profile.name}_valid_count"


@dataclass(frozen=True)
class CubePlan:
    grid: GridSpec
    sensors: tuple[SensorCube, ...]
    chunk_size: int

    @property
    def windows(self) -> list[Window]:
        return self.grid.chunks(self.chunk_size)

    @property
    def feature_names(self) -> list[str]:
        names: list[str] = []
        for sensor in self.sensors:
            for variable in sensor.variables:
                names.extend(f"{variable}_{d:%Y%m%d}" for d in sensor.dates)
        return names

    @property
    def time_series_variables(self) -> list[tuple[str, str]]:
        """(variable, time dimension) pairs, in feature order."""
        return [(v, s.time_dim) for s in self.sensors for v in s.variables]

    def bytes_per_chunk(self) -> int:
        """Rough peak memory of one chunk build: inputs, gap-filled outputs and temporaries."""
        pixels = self.chunk_size * self.chunk_size
        total = 0
        for s in self.sensors:
            n_in = len(s.acquisitions) * (len(s.profile.bands) + 1)
            n_out = len(s.dates) * len(s.variables)
            total += 4 * pixels * (2 * n_in + 2 * n_out)
        return total


def plan_cube(
    grid: GridSpec,
    sensors: Sequence[tuple[SensorProfile, Sequence[Acquisition]]],
    start: date,
    end: date,
    indices: Sequence[str],
    chunk_size: int,
) -> CubePlan:
    parts = []
    for profile, acquisitions in sensors:
        dates = DateGrid(start, end, profile.date_step_days).dates
        parts.append(SensorCube(profile, tuple(acquisitions), tuple(dates), tuple(indices)))
    return CubePlan(grid=grid, sensors=tuple(parts), chunk_size=chunk_size)
