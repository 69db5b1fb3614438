"""The data model every stage shares.

Small, frozen, hashable dataclasses: they are what crosses from the planner to dask workers, so
they hold no open files, no arrays and no secrets, and dask tokenizes them deterministically.
"""

from __future__ import annotations

import math
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field, fields, is_dataclass
from datetime import date, datetime, timedelta

import numpy as np
from affine import Affine


@dataclass(frozen=True)
class GridSpec:
    """A north-up pixel grid: CRS, affine transform and size.

    ``transform`` is the 6 GDAL/affine coefficients (a, b, c, d, e, f): x = a*col + b*row + c,
    y = d*col + e*row + f, with ``b == d == 0`` and ``e < 0`` for the grids sitsflow writes.
    """

    crs: str
    transform: tuple[float, float, float, float, float, float]
    width: int
    height: int

    @property
    def affine(self) -> Affine:
        return Affine(*self.transform)

    @property
    def resolution(self) -> tuple[float, float]:
        return (abs(self.transform[0]), abs(self.transform[4]))

    @property
    def bounds(self) -> tuple[float, float, float, float]:
        """(left, bottom, right, top) in the grid CRS."""
        a, _, c, _, e, f = self.transform
        right = c + a * self.width
        bottom = f + e * self.height
        return (min(c, right), min(f, bottom), max(c, right), max(f, bottom))

    @property
    def shape(self) -> tuple[int, int]:
        return (self.height, self.width)

    def x_coords(self) -> np.ndarray:
        """Pixel-centre x coordinates (one per column)."""
        a, _, c = self.transform[:3]
        return c + a * (np.arange(self.width) + 0.5)

    def y_coords(self) -> np.ndarray:
        """Pixel-centre y coordinates (one per row)."""
        e, f = self.transform[4], self.transform[5]
        return f + e * (np.arange(self.height) + 0.5)

    def window_grid(self, window: Window) -> GridSpec:
        """The sub-grid covered by ``window``."""
        a, b, c, d, e, f = self.transform
        return GridSpec(
            crs=self.crs,
            transform=(a, b, c + a * window.col_off, d, e, f + e * window.row_off),
            width=window.width,
            height=window.height,
        )

    def chunks(self, size: int) -> list[Window]:
        """Cut the grid into square windows of ``size`` pixels (smaller at the right and bottom)."""
        if size <= 0:
            raise ValueError(f"chunk size must be positive, got {size}")
        return [
            Window(row, col, min(size, self.height - row), min(size, self.width - col))
            for row in range(0, self.height, size)
            for col in range(0, self.width, size)
        ]

    @classmethod
    def from_bounds(
        cls, crs: str, bounds: tuple[float, float, float, float], resolution: float
    ) -> GridSpec:
        """The grid of ``resolution``-sized pixels covering ``bounds``, anchored at its top-left."""
        left, bottom, right, top = bounds
        width = max(1, math.ceil(round((right - left) / resolution, 6)))
        height = max(1, math.ceil(round((top - bottom) / resolution, 6)))
        return cls(crs, (resolution, 0.0, left, 0.0, -resolution, top), width, height)


@dataclass(frozen=True, order=True)
class Window:
    """A rectangle of pixels in a grid: offsets and size, in rows and columns."""

    row_off: int
    col_off: int
    height: int
    width: int

    @property
    def slices(self) -> tuple[slice, slice]:
        return (
            slice(self.row_off, self.row_off + self.height),
            slice(self.col_off, self.col_off + self.width),
        )

    @property
    def n_pixels(self) -> int:
        return self.height * self.width

    def __str__(self) -> str:
        rows = f"{self.row_off}:{self.row_off + self.height}"
        return f"rows {rows}, cols {self.col_off}:{self.col_off + self.width}"


def position_tokens(n_dates: int) -> list[str]:
    """Names of the positions in a series of ``n_dates`` (``t0``.. or ``t00``..): what features
    are named by when samples of several seasons are aligned by position, not by date."""
    width = len(str(n_dates - 1))
    return [f"t{i:0{width}d}" for i in range(n_dates)]


@dataclass(frozen=True)
class DateGrid:
    """A regular grid of dates, ``start`` to ``end`` inclusive every ``step_days`` days.

    Gap-filling interpolates every sensor's acquisitions onto such a grid, so that pixels of
    tiles with different acquisition dates get the same features.
    """

    start: date
    end: date
    step_days: int

    def __post_init__(self) -> None:
        if self.step_days <= 0:
            raise ValueError(f"step_days must be positive, got {self.step_days}")
        if self.end < self.start:
            raise ValueError(f"end {self.end} is before start {self.start}")

    @property
    def dates(self) -> list[date]:
        n = (self.end - self.start).days // self.step_days + 1
        return [self.start + timedelta(days=i * self.step_days) for i in range(n)]

    def __len__(self) -> int:
        return (self.end - self.start).days // self.step_days + 1

    def __iter__(self) -> Iterator[date]:
        return iter(self.dates)


def day_number(when: date | datetime) -> float:
    """Days since 1970-01-01 (fractional for datetimes): the time axis gap-filling works on."""
    if isinstance(when, datetime):
        epoch = datetime(1970, 1, 1, tzinfo=when.tzinfo)
        return (when - epoch).total_seconds() / 86400.0
    return float((when - date(1970, 1, 1)).days)


@dataclass(frozen=True)
class AssetRef:
    """One file of an acquisition: where it is and which band of it to read (1-based)."""

    href: str
    band_index: int = 1


@dataclass(frozen=True)
class Acquisition:
    """One STAC item, parsed once: the sensor it belongs to, its time, grid and assets.

    ``assets`` maps the STAC asset key to its file. ``grid`` is the native grid from the
    projection extension, when the item has it. ``band_offsets`` holds the physical offsets of
    bands whose offset depends on the item (e.g. the Sen2Cor processing baseline), by band name.
    """

    item_id: str
    sensor: str
    datetime: datetime
    assets: Mapping[str, AssetRef] = field(hash=False)
    grid: GridSpec | None = None
    band_offsets: Mapping[str, float] = field(default_factory=dict, hash=False)

    def __hash__(self) -> int:
        return hash((self.item_id, self.sensor, self.datetime, tuple(sorted(self.assets.items()))))


@dataclass(frozen=True)
class ClassInfo:
    """A class of the legend: the integer code in maps and tables, its name and colour."""

    code: int
    name: str
    color: str = "#808080"


def section_canonical(config: object, type_name: str) -> dict[str, object]:
    """The digest form of a config that replaced the pydantic manifest section ``type_name``:
    ``{"__type__": type_name, **model_dump(mode="json")}`` as the section gave it, so the digests
    of existing run stores stay valid (see ``pipeline.run.units.canonical``)."""
    return {"__type__": type_name, **section_json(config)}


def section_json(config: object) -> dict[str, object]:
    """A config's fields as the manifest section's ``model_dump(mode="json")`` gave them."""
    return {
        f.name: _as_json(getattr(config, f.name))
        for f in fields(config)  # type: ignore[arg-type]
        if f.compare
    }


def _as_json(value: object) -> object:
    """``value`` as pydantic's ``model_dump(mode="json")`` writes it."""
    if is_dataclass(value) and not isinstance(value, type):
        return section_json(value)
    if isinstance(value, Mapping):
        return {k: _as_json(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_as_json(v) for v in value]
    if isinstance(value, datetime | date):
        return value.isoformat()
    return value


@dataclass(frozen=True)
class PeriodConfig:
    """A period mapped: the date grids run from start to end, inclusive (``spec.period``)."""

    start: date
    end: date
    name: str | None = None

    @property
    def label(self) -> str:
        """The period's name, given or derived from its dates."""
        if self.name:
            return self.name
        start, end = self.start, self.end
        if (start.month, start.day, end.month, end.day) == (1, 1, 12, 31) and (
            start.year == end.year
        ):
            return str(start.year)
        return f"{start:%Y%m%d}-{end:%Y%m%d}"

    def __canonical__(self) -> dict[str, object]:
        # The digest of the pydantic PeriodSpec it replaces: run stores keep their units.
        return section_canonical(self, "PeriodSpec")
