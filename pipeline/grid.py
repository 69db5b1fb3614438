"""The output grid of a run: tiles and who owns each ground pixel (pure: no pixel is read here).

Three tilings:

* ``native``: one tile, the grid every acquisition shares (or the manifest's crs/resolution/bbox).
* ``mgrs``: Sentinel-2 tiles (the original chain's default), 109.8 km squares in their UTM zone,
  anchored on the MGRS 100 km square and overlapping their neighbours by 9.8 km.
* ``user``: a regular grid of square tiles (CRS, resolution, tile size in pixels, origin).

Ownership rule (docs/cube.md): a ground point covered by several tiles belongs to the tile with
the smallest key ``(not in the tile's UTM zone, distance to the tile's core, not in the tile's
latitude band, tile id)``. The core of an MGRS tile is its 100 km MGRS square; a user or native
tile is all core. In practice: the tile whose own square holds the point, else (a neighbour is
not part of the run) the tile whose square is nearest. ``owner_index`` is a function of the
point, so no point is lost or owned twice; a tile's pixel is owned when the owner of its centre
is the tile. Tiles of one UTM zone share their pixel lattice, so their pixels partition the
ground exactly; between two zones the grids do not align and the seam is exact to a pixel.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass, field
from functools import lru_cache
from typing import Any, Literal

import numpy as np
import numpy.typing as npt
from pyproj import CRS, Transformer

from pipeline.errors import CatalogError, ManifestError
from pipeline.model import Acquisition, GridSpec, Window, section_canonical


@dataclass(frozen=True)
class AreaConfig:
    """The output grid and its tiles (``area``; every field None or empty: the items' own grid).

    ``grid`` is the tiling the manifest gave (None: chosen by ``grid_kind``); ``region`` is a
    [west, south, east, north] box or a GeoJSON polygon in degrees.
    """

    grid: Literal["native", "mgrs", "user"] | None = None
    tiles: tuple[str, ...] = ()
    region: tuple[float, float, float, float] | dict[str, Any] | None = field(
        default=None, hash=False
    )
    crs: str | None = None
    resolution: float | None = None
    bbox: tuple[float, float, float, float] | None = None
    tile_size: int | None = None
    origin: tuple[float, float] | None = None

    def __canonical__(self) -> dict[str, object]:
        # The digest of the pydantic AreaSpec it replaces: run stores keep their units.
        return section_canonical(self, "AreaSpec")


# --- MGRS (Sentinel-2 tiling) ---------------------------------------------------------------------

S2_TILE_METRES = 109_800.0
"""Side of a Sentinel-2 tile: 10980 pixels of 10 m."""
_SQUARE = 100_000.0
_S2_ALIGN = 60.0  # tile corners sit on multiples of 60 m so that 10, 20 and 60 m pixels nest
_BANDS = "CDEFGHJKLMNPQRSTUVWX"  # 8-degree latitude bands from 80 S (X runs to 84 N)
_ROW_LETTERS = "ABCDEFGHJKLMNPQRSTUV"  # 100 km rows, repeating every 2000 km
_COLUMN_SETS = ("ABCDEFGH", "JKLMNPQR", "STUVWXYZ")
# Lowest northing of each band (GeoTrans' table): picks the 2000 km cycle a row letter is in.
_BAND_MIN_NORTHING = dict(
    zip(
        _BANDS,
        (1.1e6, 2.0e6, 2.8e6, 3.7e6, 4.6e6, 5.5e6, 6.4e6, 7.3e6, 8.2e6, 9.1e6,
         0.0, 0.8e6, 1.7e6, 2.6e6, 3.5e6, 4.4e6, 5.3e6, 6.2e6, 7.0e6, 7.9e6),
        strict=True,
    )
)  # fmt: skip


def utm_zone(lon: npt.ArrayLike, lat: npt.ArrayLike) -> npt.NDArray[np.int16]:
    """UTM zone of points (degrees), with the MGRS exceptions of Norway and Svalbard."""
    lon_a = np.asarray(lon, dtype=np.float64)
    lat_a = np.asarray(lat, dtype=np.float64)
    zone = (np.floor((lon_a + 180.0) / 6.0).astype(np.int16) % 60) + 1
    norway = (lat_a >= 56) & (lat_a < 64) & (lon_a >= 3) & (lon_a < 12)
    zone = np.where(norway, 32, zone)
    svalbard = (lat_a >= 72) & (lat_a <= 84)
    for west, east, svalbard_zone in ((0, 9, 31), (9, 21, 33), (21, 33, 35), (33, 42, 37)):
        zone = np.where(svalbard & (lon_a >= west) & (lon_a < east), svalbard_zone, zone)
    return zone.astype(np.int16)


def latitude_band(lat: npt.ArrayLike) -> npt.NDArray[np.str_]:
    """MGRS latitude band letter of latitudes between 80 S and 84 N."""
    lat_a = np.asarray(lat, dtype=np.float64)
    index = np.clip(np.floor((lat_a + 80.0) / 8.0).astype(np.int64), 0, len(_BANDS) - 1)
    return np.asarray(list(_BANDS))[index]


def utm_crs(zone: int, south: bool) -> str:
    return f"EPSG:{32700 + zone if south else 32600 + zone}"


@dataclass(frozen=True)
class MgrsSquare:
    """An MGRS 100 km square: its zone, band and south-west corner in its UTM zone."""

    zone: int
    band: str
    easting: float
    northing: float  # with the 10 000 km false northing in the southern hemisphere

    @property
    def south(self) -> bool:
        return self.band < "N"

    @property
    def crs(self) -> str:
        return utm_crs(self.zone, self.south)


def parse_mgrs_tile(tile_id: str) -> MgrsSquare:
    """Decode a tile id such as ``31TCJ`` (or ``T31TCJ``) to its 100 km square."""
    text = tile_id.strip().upper()
    if len(text) == 6 and text.startswith("T"):
        text = text[1:]  # product names write tiles as T31TCJ
    fix = "give a Sentinel-2 tile id: zone 01-60, latitude band C-X, two square letters (31TCJ)"
    if len(text) != 5 or not text[:2].isdigit():
        raise ManifestError(f"tile {tile_id!r} is not an MGRS tile id", fix=fix, field="area")
    zone, band, column, row = int(text[:2]), text[2], text[3], text[4]
    column_set = _COLUMN_SETS[(zone - 1) % 3] if 1 <= zone <= 60 else ""
    if not 1 <= zone <= 60 or band not in _BANDS or column not in column_set:
        raise ManifestError(
            f"tile {tile_id!r} is not an MGRS tile id (zone {zone} uses column letters "
            f"{column_set or 'none'}, bands are {_BANDS})",
            fix=fix,
            field="area",
        )
    if row not in _ROW_LETTERS:
        raise ManifestError(
            f"tile {tile_id!r} has row letter {row!r}, not one of {_ROW_LETTERS}",
            fix=fix,
            field="area",
        )
    easting = (column_set.index(column) + 1) * _SQUARE
    row_offset = 5 if zone % 2 == 0 else 0  # even zones start their rows at F
    cycle_northing = ((_ROW_LETTERS.index(row) - row_offset) % 20) * _SQUARE
    minimum = _BAND_MIN_NORTHING[band]
    northing = minimum + (cycle_northing - minimum % 2e6) % 2e6
    return MgrsSquare(zone, band, easting, northing)


def mgrs_tile_id(zone: int, band: str, easting: float, northing: float) -> str:
    """The tile id of the 100 km square that holds (easting, northing) in ``zone``."""
    column_set = _COLUMN_SETS[(zone - 1) % 3]
    column = column_set[int(easting // _SQUARE) - 1]
    row_offset = 5 if zone % 2 == 0 else 0
    row = _ROW_LETTERS[(int(northing // _SQUARE) + row_offset) % 20]
    return f"{zone:02d}{band}{column}{row}"


def mgrs_tile_grid(square: MgrsSquare, resolution: float = 10.0) -> GridSpec:
    """The Sentinel-2 tile grid of a square: 109.8 km from the square's corner snapped to 60 m."""
    left = math.floor(square.easting / _S2_ALIGN) * _S2_ALIGN
    top = math.ceil((square.northing + _SQUARE) / _S2_ALIGN) * _S2_ALIGN
    size = round(S2_TILE_METRES / resolution)
    if not math.isclose(size * resolution, S2_TILE_METRES):
        raise ManifestError(
            f"resolution {resolution} does not divide the 109800 m Sentinel-2 tile",
            fix="use 10, 20, 60 or another divisor of 109800 with the mgrs grid",
            field="area.resolution",
        )
    return GridSpec(square.crs, (resolution, 0.0, left, 0.0, -resolution, top), size, size)


# --- tiles and ownership ------------------------------------------------------------------


@dataclass(frozen=True)
class Tile:
    """One output tile: its grid and the part it owns first (``core``, in the grid's CRS).

    ``zone``/``band`` are the UTM zone and latitude band of an MGRS tile (None otherwise).
    """

    id: str
    grid: GridSpec
    core: tuple[float, float, float, float]
    zone: int | None = None
    band: str | None = None


@dataclass(frozen=True)
class TileSet:
    """Every tile of a run, sorted by id (the last tie-break of the ownership rule)."""

    kind: str
    tiles: tuple[Tile, ...]

    def __post_init__(self) -> None:
        ids = [t.id for t in self.tiles]
        if ids != sorted(ids) or len(set(ids)) != len(ids):
            raise ValueError(f"tiles must be unique and sorted by id, got {ids}")

    def __len__(self) -> int:
        return len(self.tiles)

    def get(self, tile_id: str) -> Tile:
        for tile in self.tiles:
            if tile.id == tile_id:
                return tile
        raise KeyError(tile_id)


def mgrs_tile(tile_id: str, resolution: float = 10.0) -> Tile:
    square = parse_mgrs_tile(tile_id)
    core = (square.easting, square.northing, square.easting + _SQUARE, square.northing + _SQUARE)
    canonical = f"{square.zone:02d}{square.band}{tile_id.strip().upper()[-2:]}"
    return Tile(canonical, mgrs_tile_grid(square, resolution), core, square.zone, square.band)


def user_tile(
    crs: str, resolution: float, tile_size: int, origin: tuple[float, float], col: int, row: int
) -> Tile:
    """Tile (col, row) of a regular grid whose tile (0, 0) has its top-left corner at ``origin``."""
    side = tile_size * resolution
    left, top = origin[0] + col * side, origin[1] - row * side
    grid = GridSpec(crs, (resolution, 0.0, left, 0.0, -resolution, top), tile_size, tile_size)
    return Tile(f"x{col}y{row}", grid, grid.bounds)


@lru_cache(maxsize=64)
def _transformer(src: str, dst: str) -> Transformer:
    return Transformer.from_crs(CRS.from_user_input(src), CRS.from_user_input(dst), always_xy=True)


def _inside(
    x: np.ndarray, y: np.ndarray, box: tuple[float, float, float, float]
) -> npt.NDArray[np.bool_]:
    """Half-open box test [left, right) x (bottom, top]: tiles that touch never share a point."""
    left, bottom, right, top = box
    return (x >= left) & (x < right) & (y > bottom) & (y <= top)


def _distance_to_box(
    x: np.ndarray, y: np.ndarray, box: tuple[float, float, float, float]
) -> npt.NDArray[np.float64]:
    left, bottom, right, top = box
    dx = np.maximum(np.maximum(left - x, x - right), 0.0)
    dy = np.maximum(np.maximum(bottom - y, y - top), 0.0)
    return np.hypot(dx, dy)


def owner_index(
    tiles: Sequence[Tile], x: npt.ArrayLike, y: npt.ArrayLike, crs: str
) -> npt.NDArray[np.int64]:
    """Index in ``tiles`` of the owner of each point (x, y in ``crs``), -1 where no tile covers it.

    The key, compared in order (lower wins): the point is outside the tile's UTM zone; its
    distance to the tile's core (0 inside); it is outside the tile's latitude band; the tile's
    position in ``tiles`` (sorted by id).
    """
    xa = np.asarray(x, dtype=np.float64)
    ya = np.asarray(y, dtype=np.float64)
    zone = band = None
    if any(t.zone is not None for t in tiles):
        lon, lat = _transformer(crs, "EPSG:4326").transform(xa, ya)
        zone, band = utm_zone(lon, lat), latitude_band(lat)
    owner = np.full(xa.shape, -1, dtype=np.int64)
    best_zone = np.full(xa.shape, 2, dtype=np.int8)
    best_distance = np.full(xa.shape, np.inf)
    best_band = np.full(xa.shape, 2, dtype=np.int8)
    for i, tile in enumerate(tiles):
        if tile.grid.crs == crs:
            tx, ty = xa, ya
        else:
            tx, ty = _transformer(crs, tile.grid.crs).transform(xa, ya)
            tx, ty = np.asarray(tx), np.asarray(ty)
        covered = _inside(tx, ty, tile.grid.bounds)
        if tile.zone is not None and zone is not None and band is not None:
            zone_miss = (zone != tile.zone).astype(np.int8)
            band_miss = (band != tile.band).astype(np.int8)
        else:
            zone_miss = np.zeros(xa.shape, dtype=np.int8)
            band_miss = np.zeros(xa.shape, dtype=np.int8)
        distance = _distance_to_box(tx, ty, tile.core)
        nearer = (distance < best_distance) | (distance == best_distance) & (band_miss < best_band)
        better = covered & ((zone_miss < best_zone) | (zone_miss == best_zone) & nearer)
        owner = np.where(better, i, owner)
        best_zone = np.where(better, zone_miss, best_zone)
        best_distance = np.where(better, distance, best_distance)
        best_band = np.where(better, band_miss, best_band)
    return owner


@lru_cache(maxsize=4096)
def _footprint_lonlat(grid: GridSpec) -> tuple[float, float, float, float]:
    left, bottom, right, top = grid.bounds
    return _transformer(grid.crs, "EPSG:4326").transform_bounds(
        left, bottom, right, top, densify_pts=21
    )


def _boxes_overlap(a: tuple[float, ...], b: tuple[float, ...]) -> bool:
    return a[0] <= b[2] and b[0] <= a[2] and a[1] <= b[3] and b[1] <= a[3]


def competitors(tile: Tile, tiles: Sequence[Tile], window: Window | None = None) -> list[Tile]:
    """Tiles other than ``tile`` whose footprint may overlap ``window`` of it (conservative)."""
    area = tile.grid if window is None else tile.grid.window_grid(window)
    box = _footprint_lonlat(area)
    margin = 1e-3  # degrees: transform_bounds is exact to far less than this
    box = (box[0] - margin, box[1] - margin, box[2] + margin, box[3] + margin)
    return [t for t in tiles if t.id != tile.id and _boxes_overlap(box, _footprint_lonlat(t.grid))]


def ownership_mask(tile: Tile, tiles: Sequence[Tile], window: Window) -> npt.NDArray[np.bool_]:
    """(h, w) True where the pixel of ``window`` in ``tile`` is owned by ``tile``."""
    rivals = competitors(tile, tiles, window)
    if not rivals:
        return np.ones((window.height, window.width), dtype=bool)
    grid = tile.grid.window_grid(window)
    xx, yy = np.meshgrid(grid.x_coords(), grid.y_coords())
    ordered = sorted([tile, *rivals], key=lambda t: t.id)
    owner = owner_index(ordered, xx, yy, tile.grid.crs)
    return owner == ordered.index(tile)


# --- planning ----------------------------------------------------------------------------------


def _region_lonlat(area: AreaConfig) -> tuple[float, float, float, float] | None:
    region = getattr(area, "region", None)
    if region is None:
        return None
    from shapely.geometry import shape

    if isinstance(region, dict):
        west, south, east, north = shape(region).bounds
        return (west, south, east, north)
    west, south, east, north = region
    return (west, south, east, north)


def _region_geometry(area: AreaConfig) -> object | None:
    region = getattr(area, "region", None)
    if region is None:
        return None
    from shapely.geometry import box, shape

    return shape(region) if isinstance(region, dict) else box(*region)


def mgrs_tiles_covering(
    region: object, resolution: float = 10.0, max_tiles: int = 400
) -> list[Tile]:
    """The MGRS tiles whose core, clipped to its UTM zone, meets ``region`` (shapely, lon/lat)."""
    import shapely
    from shapely.geometry import box

    west, south, east, north = region.bounds  # type: ignore[attr-defined]
    found: dict[str, Tile] = {}
    lon_edges = np.arange(-180.0, 181.0, 6.0)
    for zone_west in lon_edges[(lon_edges + 6 > west - 6) & (lon_edges < east + 6)]:
        for zone in {int(utm_zone(zone_west + 3, lat)) for lat in np.linspace(south, north, 9)}:
            strip = region.intersection(  # type: ignore[attr-defined]
                box(-180 + 6 * (zone - 1), -80, -180 + 6 * zone, 84)
            )
            if strip.is_empty:
                continue
            for south_half in sorted({lat < 0 for lat in (south, north)}):
                part = strip.intersection(
                    box(-180, -80 if south_half else 0, 180, 0 if south_half else 84)
                )
                if part.is_empty:
                    continue
                to_utm = _transformer("EPSG:4326", utm_crs(zone, south_half))
                projected = shapely.transform(
                    part.segmentize(0.05),
                    lambda xy, t=to_utm: np.column_stack(t.transform(xy[:, 0], xy[:, 1])),
                )
                px0, py0, px1, py1 = projected.bounds
                for e in np.arange(math.floor(px0 / _SQUARE), math.floor(px1 / _SQUARE) + 1):
                    for n in np.arange(math.floor(py0 / _SQUARE), math.floor(py1 / _SQUARE) + 1):
                        if not 1 <= e <= 8:
                            continue
                        core = box(e * _SQUARE, n * _SQUARE, (e + 1) * _SQUARE, (n + 1) * _SQUARE)
                        hit = projected.intersection(core)
                        if hit.is_empty:
                            continue
                        _, lat_c = _transformer(utm_crs(zone, south_half), "EPSG:4326").transform(
                            hit.centroid.x, hit.centroid.y
                        )
                        band = str(latitude_band(lat_c))
                        tile_id = mgrs_tile_id(zone, band, e * _SQUARE, n * _SQUARE)
                        found.setdefault(tile_id, mgrs_tile(tile_id, resolution))
                        if len(found) > max_tiles:
                            raise ManifestError(
                                f"spec.area.region covers more than {max_tiles} Sentinel-2 tiles",
                                fix="split the run into smaller regions or list spec.area.tiles",
                                field="area.region",
                            )
    return [found[k] for k in sorted(found)]


def _user_tiles(area: AreaConfig) -> list[Tile]:
    crs, resolution = area.crs, area.resolution
    tile_size = getattr(area, "tile_size", None)
    assert crs is not None and resolution is not None and tile_size is not None
    origin = getattr(area, "origin", None) or (0.0, 0.0)
    side = tile_size * resolution
    listed = getattr(area, "tiles", None) or []
    if listed:
        tiles = []
        for tile_id in listed:
            col_row = _parse_user_tile_id(tile_id)
            tiles.append(user_tile(crs, resolution, tile_size, origin, *col_row))
        return sorted(tiles, key=lambda t: t.id)
    if area.bbox is not None:
        left, bottom, right, top = area.bbox
    else:
        region = _region_lonlat(area)
        assert region is not None
        left, bottom, right, top = _transformer("EPSG:4326", crs).transform_bounds(
            *region, densify_pts=21
        )
    cols = range(math.floor((left - origin[0]) / side), math.ceil((right - origin[0]) / side))
    rows = range(math.floor((origin[1] - top) / side), math.ceil((origin[1] - bottom) / side))
    if len(cols) * len(rows) > 10_000:
        raise ManifestError(
            f"the area covers {len(cols) * len(rows)} tiles of {tile_size} px",
            fix="raise spec.area.tile_size or shrink the bbox/region",
            field="area",
        )
    tiles = [user_tile(crs, resolution, tile_size, origin, c, r) for c in cols for r in rows]
    return sorted(tiles, key=lambda t: t.id)


def _parse_user_tile_id(tile_id: str) -> tuple[int, int]:
    import re

    match = re.fullmatch(r"x(-?\d+)y(-?\d+)", tile_id.strip())
    if not match:
        raise ManifestError(
            f"tile {tile_id!r} is not a user-grid tile id",
            fix="write user-grid tiles as x<column>y<row>, e.g. x0y3 (columns east, rows south)",
            field="area.tiles",
        )
    return int(match.group(1)), int(match.group(2))


def grid_kind(area: AreaConfig) -> str:
    """The tiling the area asks for: the explicit ``grid``, else inferred from the given fields."""
    explicit = getattr(area, "grid", None)
    if explicit is not None:
        return str(explicit)
    if getattr(area, "tile_size", None) is not None:
        return "user"
    if getattr(area, "tiles", None) or (
        getattr(area, "region", None) is not None and area.crs is None
    ):
        return "mgrs"
    return "native"


def plan_tiles(area: AreaConfig, acquisitions: Sequence[Acquisition]) -> TileSet:
    """Every output tile of the run, sorted by id."""
    kind = grid_kind(area)
    if kind == "mgrs":
        resolution = area.resolution or 10.0
        listed = getattr(area, "tiles", None) or []
        if listed:
            tiles = sorted({t.id: t for t in (mgrs_tile(i, resolution) for i in listed)}.values(),
                           key=lambda t: t.id)  # fmt: skip
        else:
            geometry = _region_geometry(area)
            assert geometry is not None
            tiles = mgrs_tiles_covering(geometry, resolution)
        return TileSet("mgrs", tuple(tiles))
    if kind == "user":
        return TileSet("user", tuple(_user_tiles(area)))
    grid = _single_grid(area, acquisitions)
    return TileSet("native", (Tile("native", grid, grid.bounds),))


def plan_grid(area: AreaConfig, acquisitions: Sequence[Acquisition]) -> GridSpec:
    """The grid of a one-tile area: given by ``area``, or the native grid every acquisition shares.

    An area of several tiles has no single grid: plan it with ``plan_tiles`` (one cube per tile).
    """
    tiles = plan_tiles(area, acquisitions)
    if len(tiles) != 1:
        raise ManifestError(
            f"spec.area defines {len(tiles)} tiles ({', '.join(t.id for t in tiles.tiles[:4])}"
            f"{', ...' if len(tiles) > 4 else ''}); this stage builds one grid",
            fix="plan the run per tile with pipeline.grid.plan_tiles, or list a single tile",
            field="area",
        )
    return tiles.tiles[0].grid


def _single_grid(area: AreaConfig, acquisitions: Sequence[Acquisition]) -> GridSpec:
    if area.crs is not None and area.bbox is not None and area.resolution is not None:
        return GridSpec.from_bounds(area.crs, area.bbox, area.resolution)
    grids = {a.grid for a in acquisitions}
    if None in grids:
        missing = next(a for a in acquisitions if a.grid is None)
        raise CatalogError(
            f"item {missing.item_id!r} has no complete projection metadata (a CRS as proj:code, "
            "proj:epsg, proj:wkt2 or proj:projjson, with proj:transform and proj:shape, on the "
            "item or its band assets), so the output grid cannot be taken from the items",
            fix="set spec.area.crs, spec.area.resolution and spec.area.bbox",
            field="area",
        )
    if len(grids) > 1:
        sample = sorted(str(g) for g in grids)[:2]
        raise CatalogError(
            f"the items lie on {len(grids)} different grids (e.g. {sample[0]} and {sample[1]}), "
            "so no single native grid exists",
            fix="set spec.area.crs, spec.area.resolution and spec.area.bbox (the output grid), "
            "or tile the area (spec.area.grid: mgrs with spec.area.tiles)",
            field="area",
        )
    grid = grids.pop()
    assert grid is not None
    return grid


def acquisitions_over(tile: Tile, acquisitions: Sequence[Acquisition]) -> list[Acquisition]:
    """The acquisitions whose footprint meets the tile (those without a known grid are kept)."""
    box = _footprint_lonlat(tile.grid)
    return [
        a for a in acquisitions if a.grid is None or _boxes_overlap(box, _footprint_lonlat(a.grid))
    ]


# --- mosaic of tiles ----------------------------------------------------------------------


def mosaic_grid(grids: Sequence[GridSpec]) -> GridSpec:
    """The grid of the mosaic of ``grids`` (tiles, in tile order).

    Its CRS is the one most tiles share (ties: the first tile's), its pixels those of the first
    tile in that CRS (same size, same origin modulo a pixel), and it covers every tile: tiles in
    another CRS are covered by their bounds transformed into it. A single grid is its own mosaic.
    """
    if not grids:
        raise ValueError("a mosaic needs at least one grid")
    if len(grids) == 1:
        return grids[0]
    counts: dict[str, int] = {}
    for g in grids:
        counts[g.crs] = counts.get(g.crs, 0) + 1
    best = max(counts.values())
    crs = next(g.crs for g in grids if counts[g.crs] == best)
    anchor = next(g for g in grids if g.crs == crs)
    xres, yres = anchor.resolution
    a, _, c, _, e, f = anchor.transform
    lefts, bottoms, rights, tops = [], [], [], []
    for g in grids:
        left, bottom, right, top = g.bounds
        if g.crs != crs:
            from rasterio.warp import transform_bounds

            left, bottom, right, top = transform_bounds(g.crs, crs, left, bottom, right, top)
        lefts.append(left)
        bottoms.append(bottom)
        rights.append(right)
        tops.append(top)
    # Snap outwards onto the anchor's pixel lattice (a small tolerance absorbs float noise).
    col0 = math.floor((min(lefts) - c) / xres + 1e-6)
    col1 = math.ceil((max(rights) - c) / xres - 1e-6)
    row0 = math.floor((f - max(tops)) / yres + 1e-6)
    row1 = math.ceil((f - min(bottoms)) / yres - 1e-6)
    transform = (a, 0.0, c + col0 * xres, 0.0, e, f - row0 * yres)
    return GridSpec(crs, transform, col1 - col0, row1 - row0)


def aligned_offset(grid: GridSpec, inside: GridSpec) -> tuple[int, int] | None:
    """(row, col) of ``inside``'s top-left pixel in ``grid`` when both share CRS, pixel size and
    lattice (a tile inside its mosaic); None when ``inside`` must be resampled."""
    if grid.crs != inside.crs or grid.resolution != inside.resolution:
        return None
    col = (inside.transform[2] - grid.transform[2]) / grid.transform[0]
    row = (inside.transform[5] - grid.transform[5]) / grid.transform[4]
    if abs(col - round(col)) > 1e-6 or abs(row - round(row)) > 1e-6:
        return None
    return round(row), round(col)
