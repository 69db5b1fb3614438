"""Planning a cube (pure): which acquisitions, which date grid, which variables, which chunks.

The cube of one tile holds, for each sensor, one variable per band, per index and per user
feature with dims (``<sensor>_time``, y, x) on that sensor's regular date grid, plus
``<sensor>_valid_count`` (y, x) and ``owned`` (y, x). Model features are the variables' values on
each date, named ``<sensor>_<variable>_<YYYYMMDD>``, in a fixed order: sensors, then bands, then
indices, then user features, then dates. A run whose samples or maps span several periods
names them by position in the season instead, ``<sensor>_<variable>_t<NN>`` (the NN-th date of
the grid, as sample tables name them), so that one model reads the same features in every
period.

Encoders (``features.encoders``, ``pipeline.cube.encoders``) add static (y, x) variables
``<encoder>_e00``, ``<encoder>_e01``...: features after every sensor's, named so in every
period (they have no date).

The plan also decides how each series is stored (``CubePlan.encoding``: scaled int16 codes or
float32, ``pipeline.cube.encoding``), so the encoding is part of the cube's identity.

Several tiles: one plan (and one cube) per tile, each knowing every tile of the run so that its
pixels owned by another tile are left out (``owned`` is 0, features NaN) and chunks it owns no
pixel of are not built at all.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field, fields
from datetime import date
from functools import lru_cache

import numpy as np

from pipeline.catalog.sensors import SensorProfile
from pipeline.cube.encoders import EncoderPlan, check_encoder_inputs
from pipeline.cube.encoding import VariableEncoding, check_cube_encoding, series_encodings
from pipeline.cube.features import default_indices
from pipeline.cube.userfeatures import probe_user_features
from pipeline.grid import Tile, ownership_mask
from pipeline.model import Acquisition, DateGrid, GridSpec, Window, position_tokens

OWNED_VARIABLE = "owned"


@dataclass(frozen=True)
class SensorCube:
    """One sensor's part of the cube: its acquisitions and the regular dates they fill."""

    profile: SensorProfile
    acquisitions: tuple[Acquisition, ...]
    dates: tuple[date, ...]
    indices: tuple[str, ...]
    user_functions: tuple[str, ...] = ()
    user_features: tuple[str, ...] = ()
    """Names the user functions return, in order (learnt when the plan is made)."""

    @property
    def time_dim(self) -> str:
        return f"{self.profile.name}_time"

    @property
    def series_names(self) -> tuple[str, ...]:
        """Bands, indices and user features, without the sensor prefix."""
        return (*self.profile.band_names, *self.indices, *self.user_features)

    @property
    def variables(self) -> tuple[str, ...]:
        """Names of this sensor's time-series variables (bands, indices, user features)."""
        return tuple(f"{self.profile.name}_{v}" for v in self.series_names)

    @property
    def valid_count_variable(self) -> str:
        return f"{self.profile.name}_valid_count"

    def encodings(self, encoding: str) -> dict[str, VariableEncoding | None]:
        """Variable -> its int16 storage under the cube ``encoding`` (None: float32)."""
        chosen = series_encodings(self.profile.bands, self.indices, self.user_features, encoding)
        return dict(zip(self.variables, chosen, strict=True))


@dataclass(frozen=True)
class CubePlan:
    grid: GridSpec
    sensors: tuple[SensorCube, ...]
    chunk_size: int
    tile: Tile | None = None
    """The tile this cube covers when the run has tiles (None: a single-grid run)."""
    tiles: tuple[Tile, ...] = field(default=(), hash=False)
    """Every tile of the run (for ownership); empty for a single-grid run."""
    season_names: bool = False
    """Feature names by position in the season (``t<NN>``) rather than by date."""
    encoding: str = "int16"
    """Storage of the time series (``spec.outputs.cube_encoding``): ``int16`` (scaled codes,
    see ``pipeline.cube.encoding``) or ``float32``. Every path returns the stored values."""
    encoders: tuple[EncoderPlan, ...] = ()
    """Encoders run on the gap-filled series, each writing static float32 variables."""

    def __post_init__(self) -> None:
        check_cube_encoding(self.encoding)

    def __canonical__(self) -> dict[str, object]:
        # The dataclass's own digest form; encoders came later and enter it only when given,
        # so that the cubes of existing run stores keep their digests.
        form: dict[str, object] = {"__type__": type(self).__qualname__}
        form.update({f.name: getattr(self, f.name) for f in fields(self) if f.compare})
        if not self.encoders:
            del form["encoders"]
        return form

    @property
    def encoder_variables(self) -> tuple[str, ...]:
        """The encoders' static (y, x) variables, in feature order."""
        return tuple(v for e in self.encoders for v in e.variables)

    @property
    def pixelwise(self) -> bool:
        """Whether every step after the read computes a pixel from that pixel's inputs alone,
        so that features of a few pixels need no whole window (``compute_pixels``). User
        functions may look at neighbours, and an encoder's batches may round differently."""
        return not self.encoders and not any(s.user_functions for s in self.sensors)

    @property
    def variable_encodings(self) -> dict[str, VariableEncoding | None]:
        """Time-series variable -> its int16 storage (None: float32), in feature order."""
        out: dict[str, VariableEncoding | None] = {}
        for sensor in self.sensors:
            out.update(sensor.encodings(self.encoding))
        return out

    @property
    def all_windows(self) -> list[Window]:
        return self.grid.chunks(self.chunk_size)

    @property
    def windows(self) -> list[Window]:
        """The chunks to build: those holding at least one pixel this tile owns."""
        if self.tile is None or len(self.tiles) < 2:
            return self.all_windows
        return [w for w in self.all_windows if self.owned(w).any()]

    def owned(self, window: Window) -> np.ndarray:
        """(h, w) bool: the pixels of ``window`` this cube's tile owns."""
        if self.tile is None or len(self.tiles) < 2:
            return np.ones((window.height, window.width), dtype=bool)
        return _ownership(self.tile, self.tiles, window)

    @property
    def feature_names(self) -> list[str]:
        names: list[str] = []
        for sensor in self.sensors:
            for variable in sensor.variables:
                if self.season_names:
                    tokens = position_tokens(len(sensor.dates))
                    names.extend(f"{variable}_{token}" for token in tokens)
                else:
                    names.extend(f"{variable}_{d:%Y%m%d}" for d in sensor.dates)
        names.extend(self.encoder_variables)  # static: one feature each, no date
        return names

    @property
    def time_series_variables(self) -> list[tuple[str, str]]:
        """(variable, time dimension) pairs of every feature variable, in feature order; an
        encoder's static variables come last, with the time dimension ``""``."""
        series = [(v, s.time_dim) for s in self.sensors for v in s.variables]
        return series + [(v, "") for v in self.encoder_variables]

    @property
    def chunk_side(self) -> int:
        """The side of the largest chunk: ``chunk_size`` clipped to the grid (a chunk_size
        larger than the image gives one chunk the size of the image)."""
        return min(self.chunk_size, max(self.grid.width, self.grid.height))

    def bytes_per_chunk(self) -> int:
        """Rough peak memory of one chunk build: inputs, gap-filled outputs, temporaries and
        the int16 codes written."""
        pixels = min(self.chunk_size, self.grid.height) * min(self.chunk_size, self.grid.width)
        total = 0
        for s in self.sensors:
            n_in = len(s.acquisitions) * (len(s.profile.bands) + 1)
            n_out = len(s.dates) * len(s.variables)
            n_codes = len(s.dates) * sum(e is not None for e in s.encodings(self.encoding).values())
            total += 4 * pixels * (n_in + 2 * n_out) + 2 * pixels * n_codes
        for encoder in self.encoders:  # its (pixels, dates, inputs) table and its output
            total += 4 * pixels * (encoder.dates * len(encoder.inputs) + 2 * encoder.width)
        return total


@lru_cache(maxsize=1024)
def _ownership(tile: Tile, tiles: tuple[Tile, ...], window: Window) -> np.ndarray:
    mask = ownership_mask(tile, tiles, window)
    mask.flags.writeable = False
    return mask


def plan_cube(
    grid: GridSpec,
    sensors: Sequence[tuple[SensorProfile, Sequence[Acquisition]]],
    start: date,
    end: date,
    indices: Sequence[str] | None,
    chunk_size: int,
    *,
    user_functions: Sequence[str] = (),
    tile: Tile | None = None,
    tiles: Sequence[Tile] = (),
    season_names: bool = False,
    encoding: str = "int16",
    encoders: Sequence[EncoderPlan] = (),
) -> CubePlan:
    """The cube of ``grid``. ``indices`` None: each sensor gets the defaults its bands allow.
    ``encoding``: how its time series are stored (``CubePlan.encoding``). ``encoders``: checked
    against the plan's variables and dates here (``check_encoder_inputs``).

    User functions are imported and run on a small synthetic series here, to learn their
    feature names (a broken function fails the plan, before anything is written).
    """
    parts = []
    for profile, acquisitions in sensors:
        dates = DateGrid(start, end, profile.date_step_days).dates
        chosen = default_indices(profile.band_names) if indices is None else tuple(indices)
        names = probe_user_features(
            user_functions,
            profile.band_names,
            sensor=profile.name,
            reserved=[*profile.band_names, *chosen],
        )
        parts.append(
            SensorCube(
                profile,
                tuple(acquisitions),
                tuple(dates),
                chosen,
                tuple(user_functions),
                names,
            )
        )
    dates_of = {v: len(s.dates) for s in parts for v in s.variables}
    check_encoder_inputs(encoders, dates_of, [*dates_of, *(s.profile.name for s in parts)])
    return CubePlan(
        grid=grid,
        sensors=tuple(parts),
        chunk_size=chunk_size,
        tile=tile,
        tiles=tuple(tiles),
        season_names=season_names,
        encoding=encoding,
        encoders=tuple(encoders),
    )


def plan_tile_cubes(
    tiles: Sequence[Tile],
    sensors: Sequence[tuple[SensorProfile, Sequence[Acquisition]]],
    start: date,
    end: date,
    indices: Sequence[str] | None,
    chunk_size: int,
    *,
    user_functions: Sequence[str] = (),
    season_names: bool = False,
    encoding: str = "int16",
    encoders: Sequence[EncoderPlan] = (),
) -> list[CubePlan]:
    """One plan per tile, each with the acquisitions that meet the tile (a tile may have fewer
    dates than its neighbours) and the ownership of its pixels among all the tiles."""
    from pipeline.grid import acquisitions_over

    ordered = tuple(sorted(tiles, key=lambda t: t.id))
    plans = []
    for tile in ordered:
        per_sensor = [(p, acquisitions_over(tile, acqs)) for p, acqs in sensors]
        plans.append(
            plan_cube(
                tile.grid,
                per_sensor,
                start,
                end,
                indices,
                chunk_size,
                user_functions=user_functions,
                tile=tile,
                tiles=ordered,
                season_names=season_names,
                encoding=encoding,
                encoders=encoders,
            )
        )
    return plans
