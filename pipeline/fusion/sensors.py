"""A fusion source on one sensor's features: which cube variables and which feature columns of
the samples table are that sensor's (radar and optical models, say, fused where clouds persist).
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass

from pipeline.cube.plan import CubePlan
from pipeline.errors import InputDataError

FIELD = "fusion.sources"
ORBIT_SERIES = ("asc", "des")
"""The suffixes of the sensors a sensor's orbit series become (``pipeline.catalog.profiles``)."""


@dataclass(frozen=True)
class SensorColumns:
    """One sensor's part of the cube as a model reads it."""

    sensor: str
    variables: tuple[tuple[str, str], ...]
    """(variable, time dimension) of its time series, in feature order (what a chunk reads)."""
    features: tuple[str, ...]
    """Its feature columns (``<sensor>_<variable>_<date>``), in the cube's feature order."""


def sensor_columns(cube: CubePlan, sensor: str) -> SensorColumns:
    """The variables and feature columns of ``sensor`` in ``cube``: its own time series only
    (no other sensor's, no encoder's; both orbit series of a sensor kept apart by orbit), in the
    order the whole cube gives them. Refused when the cube has no such sensor, or when it is all
    of the cube's sensors (its model would be the run's own model)."""
    names = [s.profile.name for s in cube.sensors]
    mine = [s for s in cube.sensors if s.profile.name == sensor]
    if not mine:  # a sensor split into orbit series (Sentinel-1: <name>_asc, <name>_des)
        series = {f"{sensor}_{suffix}" for suffix in ORBIT_SERIES}
        mine = [s for s in cube.sensors if s.profile.name in series]
    if not mine:
        raise InputDataError(
            f"fusion source sensor {sensor!r} is not in this run's cube (sensors: {names})",
            fix="name a sensor of the sensors section, or remove the source",
            field=FIELD,
        )
    if len(mine) == len(cube.sensors):
        raise InputDataError(
            f"fusion source sensor {sensor!r} is the run's only sensor: its model would be run "
            "0's model on the same features",
            fix="fuse sensors of a run with two or more sensors, or use the source run: 0",
            field=FIELD,
        )
    part = dataclasses.replace(cube, sensors=tuple(mine), encoders=())
    features = tuple(part.feature_names)
    if not features:
        raise InputDataError(
            f"fusion source sensor {sensor!r} gives the cube no feature",
            fix="give that sensor bands or indices, or remove the source",
            field=FIELD,
        )
    return SensorColumns(sensor, tuple(part.time_series_variables), features)
