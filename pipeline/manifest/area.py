"""The period and area sections: the date grid's period and the output grid's tiles."""

from __future__ import annotations

import re
from datetime import date
from typing import Any, Literal

from pydantic import (
    Field,
    field_validator,
    model_validator,
)

from pipeline.manifest.common import (
    _MGRS_TILE,
    _Strict,
)
from pipeline.model import PeriodConfig


class PeriodSpec(_Strict):
    """A period mapped: the date grids run from start to end, inclusive."""

    start: date = Field(description="First date of the date grid (YYYY-MM-DD).")
    end: date = Field(description="Last date of the date grid (YYYY-MM-DD), after start.")
    name: str | None = Field(
        None,
        pattern=r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,62}$",
        description="Name of the period in output paths (periods/<name>/...); default: the "
        "year for a calendar year (e.g. 2016), else <start>-<end> as YYYYMMDD.",
    )

    @model_validator(mode="after")
    def _ordered(self) -> PeriodSpec:
        if self.end <= self.start:
            raise ValueError(
                f"the period is empty: end {self.end} is not after start {self.start}; "
                "set end to a date after start"
            )
        return self

    @property
    def label(self) -> str:
        """The period's name, given or derived from its dates (the rule is PeriodConfig's)."""
        return PeriodConfig(self.start, self.end, self.name).label


class AreaSpec(_Strict):
    """The output grid and its tiles. Leave every field out to use the items' own native grid.

    Tilings (``grid``): ``native`` (one grid: the items' shared grid, or crs + resolution + bbox),
    ``mgrs`` (Sentinel-2 tiles, listed in ``tiles`` or those covering ``region``) and ``user``
    (square tiles of ``tile_size`` pixels from ``origin`` in ``crs``). Where tiles overlap, each
    ground pixel belongs to one tile (docs/cube.md, "Ownership").
    """

    grid: Literal["native", "mgrs", "user"] | None = Field(
        None,
        description="Tiling: native, mgrs or user (default: mgrs when tiles or a region without "
        "crs are given, user when tile_size is given, else native).",
    )
    tiles: list[str] = Field(
        default_factory=list,
        description="Tiles to map: MGRS ids such as 31TCJ (mgrs grid) or x<col>y<row> ids "
        "(user grid).",
    )
    region: tuple[float, float, float, float] | dict[str, Any] | None = Field(
        None,
        description="Area of interest in longitude/latitude (EPSG:4326): [west, south, east, "
        "north] or a GeoJSON Polygon/MultiPolygon; the tiles that cover it are mapped.",
    )
    crs: str | None = Field(None, description="Grid CRS, e.g. EPSG:32631 (native and user grids).")
    resolution: float | None = Field(
        None, gt=0, description="Pixel size in CRS units (mgrs default: 10 m)."
    )
    bbox: tuple[float, float, float, float] | None = Field(
        None, description="[left, bottom, right, top] in the grid CRS (native and user grids)."
    )
    tile_size: int | None = Field(
        None, ge=16, le=100_000, description="Side of a user-grid tile in pixels."
    )
    origin: tuple[float, float] | None = Field(
        None,
        description="Top-left corner [x, y] of user-grid tile x0y0 in the grid CRS "
        "(default [0, 0]).",
    )

    @field_validator("region")
    @classmethod
    def _region_shape(
        cls, region: tuple[float, float, float, float] | dict[str, Any] | None
    ) -> tuple[float, float, float, float] | dict[str, Any] | None:
        if region is None:
            return None
        if isinstance(region, dict):
            from shapely.geometry import shape

            if region.get("type") not in ("Polygon", "MultiPolygon"):
                raise ValueError(
                    f"region is a GeoJSON {region.get('type')!r}, not a Polygon or MultiPolygon; "
                    "give a Polygon (lon/lat) or a [west, south, east, north] box"
                )
            try:
                geometry = shape(region)
            except Exception as exc:  # shapely raises several types for bad coordinates
                raise ValueError(
                    f"region is not a readable GeoJSON polygon ({exc}); give coordinates as "
                    "[[[lon, lat], ...]] rings"
                ) from None
            if geometry.is_empty or not geometry.is_valid:
                raise ValueError(
                    "region polygon is empty or self-intersecting; give a valid polygon "
                    "(lon/lat, closed rings)"
                )
            west, south, east, north = geometry.bounds
        else:
            west, south, east, north = region
        if not (-180 <= west < east <= 180 and -90 <= south < north <= 90):
            raise ValueError(
                f"region bounds [{west}, {south}, {east}, {north}] are not an area in degrees; "
                "give [west, south, east, north] with -180 <= west < east <= 180 and "
                "-90 <= south < north <= 90"
            )
        return region

    @field_validator("tiles")
    @classmethod
    def _tile_ids(cls, tiles: list[str]) -> list[str]:
        out = []
        for tile in tiles:
            code = tile.strip()
            if re.match(r"^x-?\d+y-?\d+$", code):
                out.append(code)
                continue
            code = code.upper()
            if len(code) == 6 and code.startswith("T"):
                code = code[1:]
            if not re.match(_MGRS_TILE, code):
                raise ValueError(
                    f"tile {tile!r} is neither an MGRS tile id nor a user-grid tile id; write "
                    "MGRS tiles like '31TCJ' and user-grid tiles like 'x0y3'"
                )
            out.append(code.zfill(5))
        return out

    @model_validator(mode="after")
    def _all_or_none(self) -> AreaSpec:
        kind = self.grid
        if kind is None:
            if self.tile_size is not None:
                kind = "user"
            elif self.tiles or (self.region is not None and self.crs is None):
                kind = "mgrs"
            else:
                kind = "native"
        if kind == "native":
            extra = [k for k in ("tiles", "region", "tile_size", "origin") if getattr(self, k)]
            if extra:
                raise ValueError(
                    f"{', '.join(extra)} only apply to the mgrs and user grids; set grid: mgrs "
                    "or grid: user, or remove them"
                )
            given = [self.crs is not None, self.resolution is not None, self.bbox is not None]
            if any(given) and not all(given):
                raise ValueError(
                    "crs, resolution and bbox go together; set all three, or none of them to "
                    "use the items' native grid"
                )
        elif kind == "mgrs":
            extra = [k for k in ("crs", "bbox", "tile_size", "origin") if getattr(self, k)]
            if extra:
                raise ValueError(
                    f"{', '.join(extra)} do not apply to the mgrs grid (each tile has its own "
                    "UTM CRS and extent); remove them, or use grid: user"
                )
            if not self.tiles and self.region is None:
                raise ValueError(
                    "the mgrs grid needs tiles or a region; list tiles (e.g. [31TCJ]) or give "
                    "region: [west, south, east, north] in degrees"
                )
            bad_ids = [t for t in self.tiles if t.startswith("x")]
            if bad_ids:
                raise ValueError(
                    f"tiles {bad_ids} are user-grid ids, not MGRS ids; list MGRS tiles such as "
                    "31TCJ, or use grid: user"
                )
            if (
                self.resolution is not None
                and abs(109_800 / self.resolution - round(109_800 / self.resolution)) > 1e-9
            ):
                raise ValueError(
                    f"resolution {self.resolution} does not divide the 109800 m Sentinel-2 "
                    "tile; use 10, 20 or 60"
                )
        else:
            missing = [k for k in ("crs", "resolution", "tile_size") if getattr(self, k) is None]
            if missing:
                raise ValueError(
                    f"the user grid needs crs, resolution and tile_size (missing: "
                    f"{', '.join(missing)}); set them, e.g. crs: EPSG:2154, resolution: 10, "
                    "tile_size: 5000"
                )
            if not self.tiles and self.region is None and self.bbox is None:
                raise ValueError(
                    "the user grid needs tiles, a bbox or a region to know which tiles to map; "
                    "set one of them"
                )
            bad_ids = [t for t in self.tiles if not t.startswith("x")]
            if bad_ids:
                raise ValueError(
                    f"tiles {bad_ids} are MGRS ids, not user-grid ids; write user-grid tiles "
                    "as x<column>y<row>, e.g. x0y3"
                )
        if self.bbox is not None:
            left, bottom, right, top = self.bbox
            if right <= left or top <= bottom:
                raise ValueError(
                    f"bbox {list(self.bbox)} is empty (right must exceed left and top bottom); "
                    "give it as [left, bottom, right, top]"
                )
        if self.crs is not None:
            from pyproj import CRS
            from pyproj.exceptions import CRSError

            try:
                CRS.from_user_input(self.crs)
            except CRSError:
                raise ValueError(
                    f"crs {self.crs!r} is not a known coordinate reference system; "
                    "use an EPSG code such as 'EPSG:32633'"
                ) from None
        return self
