"""Tile grids and overlap ownership: every ground pixel belongs to exactly one tile.

* MGRS decoding/encoding against an independent implementation (GeoTrans, via the ``mgrs``
  package; the cases are in mgrs_reference.json).
* Hypothesis properties: tiles of a user grid, overlapping Sentinel-2 tiles of one UTM zone
  (exact partition of the 10 m pixel lattice) and tiles of two UTM zones (exactly one owner per
  ground point, away from the sub-pixel seam).
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from pyproj import Transformer
from shapely.geometry import box

from pipeline.errors import ManifestError
from pipeline.grid import (
    Tile,
    latitude_band,
    mgrs_tile,
    mgrs_tile_id,
    mgrs_tiles_covering,
    owner_index,
    ownership_mask,
    parse_mgrs_tile,
    plan_grid,
    plan_tiles,
    user_tile,
    utm_crs,
    utm_zone,
)
from pipeline.model import Window
from tests.manifest import sections

REFERENCE = json.loads((Path(__file__).parent / "mgrs_reference.json").read_text())["cases"]


def _to(crs: str, lon: float, lat: float) -> tuple[float, float]:
    x, y = Transformer.from_crs("EPSG:4326", crs, always_xy=True).transform(lon, lat)
    return float(x), float(y)


@pytest.mark.parametrize("case", REFERENCE, ids=[c["tile"] for c in REFERENCE])
def test_mgrs_squares_match_an_independent_implementation(case: dict[str, object]) -> None:
    tile = str(case["tile"])
    square = parse_mgrs_tile(tile)
    easting, northing = _to(square.crs, float(case["sw_lon"]), float(case["sw_lat"]))  # type: ignore[arg-type]
    assert easting == pytest.approx(square.easting, abs=1.0)
    assert northing == pytest.approx(square.northing, abs=1.0)
    lon, lat = float(case["lon"]), float(case["lat"])  # type: ignore[arg-type]
    zone, band = int(utm_zone(lon, lat)), str(latitude_band(lat))
    x, y = _to(utm_crs(zone, band < "N"), lon, lat)
    assert mgrs_tile_id(zone, band, x, y) == tile


def test_sentinel2_tile_grid_31tcj() -> None:
    """The tile iota2's tutorials use: corner (300000, 4900020) in EPSG:32631, 10980 px."""
    tile = mgrs_tile("T31TCJ")
    assert tile.id == "31TCJ"
    assert tile.grid.crs == "EPSG:32631"
    assert tile.grid.transform == (10.0, 0.0, 300000.0, 0.0, -10.0, 4900020.0)
    assert tile.grid.shape == (10980, 10980)
    assert tile.core == (300000.0, 4800000.0, 400000.0, 4900000.0)
    assert mgrs_tile("31TCJ", 20.0).grid.shape == (5490, 5490)


@pytest.mark.parametrize("bad", ["31TCI", "61TCJ", "31ICJ", "31TJJ", "3TCJ", "31TCJX"])
def test_bad_mgrs_ids_are_clear_errors(bad: str) -> None:
    with pytest.raises(ManifestError, match=r"MGRS|row letter"):
        parse_mgrs_tile(bad)


# --- user grid -----------------------------------------------------------------------------


@settings(max_examples=40)
@given(
    size=st.integers(16, 300),
    origin=st.tuples(st.integers(-10_000, 10_000), st.integers(-10_000, 10_000)),
    cols=st.integers(-3, 3),
    rows=st.integers(-3, 3),
    points=st.lists(st.tuples(st.floats(0, 1), st.floats(0, 1)), min_size=1, max_size=30),
)
def test_user_grid_tiles_partition_the_plane(
    size: int,
    origin: tuple[int, int],
    cols: int,
    rows: int,
    points: list[tuple[float, float]],
) -> None:
    tiles = sorted(
        (user_tile("EPSG:2154", 10.0, size, origin, c, r)
         for c in range(cols, cols + 3) for r in range(rows, rows + 3)),
        key=lambda t: t.id,
    )  # fmt: skip
    left, top = origin[0] + cols * size * 10.0, origin[1] - rows * size * 10.0
    xs = np.array([left + fx * 3 * size * 10.0 for fx, _ in points])
    ys = np.array([top - fy * 3 * size * 10.0 for _, fy in points])
    inside = (xs < left + 3 * size * 10.0) & (ys > top - 3 * size * 10.0)
    owner = owner_index(tiles, xs, ys, "EPSG:2154")
    assert ((owner >= 0) == inside).all()
    for i, x, y in zip(owner, xs, ys, strict=True):
        if i >= 0:
            left_i, bottom_i, right_i, top_i = tiles[i].grid.bounds
            assert left_i <= x < right_i and bottom_i < y <= top_i


# --- Sentinel-2 tiles of one zone: an exact partition of the pixel lattice ------------------


def _covering(tile: Tile, x: float, y: float) -> Window | None:
    a, _, c, _, e, f = tile.grid.transform
    col, row = int(np.floor((x - c) / a)), int(np.floor((y - f) / e))
    if 0 <= row < tile.grid.height and 0 <= col < tile.grid.width:
        return Window(row, col, 1, 1)
    return None


@settings(max_examples=60)
@given(
    east=st.integers(3, 6),
    north=st.integers(46, 52),
    fx=st.integers(0, 21_000),
    fy=st.integers(0, 21_000),
)
def test_overlapping_tiles_of_one_zone_own_each_pixel_exactly_once(
    east: int, north: int, fx: int, fy: int
) -> None:
    """A 2 x 2 block of Sentinel-2 tiles (9.8 km overlaps): at any 10 m pixel of the block,
    the per-tile ownership masks, computed independently, add up to exactly one."""
    zone, band = 31, "T"
    squares = [(east + i, north + j) for i in range(2) for j in range(2)]
    tiles = sorted(
        (mgrs_tile(mgrs_tile_id(zone, band, e * 1e5, n * 1e5)) for e, n in squares),
        key=lambda t: t.id,
    )
    # A pixel centre on the shared 10 m lattice, anywhere in the block (overlaps included).
    x = east * 1e5 - 40 + fx * 10 + 5.0
    y = (north + 2) * 1e5 + 20 - fy * 10 - 5.0
    owners = []
    for tile in tiles:
        window = _covering(tile, x, y)
        if window is not None and ownership_mask(tile, tiles, window)[0, 0]:
            owners.append(tile.id)
    covered = any(_covering(t, x, y) is not None for t in tiles)
    assert len(owners) == (1 if covered else 0), (x, y, owners)


def test_a_tile_skips_chunks_it_owns_no_pixel_of() -> None:
    from pipeline.cube.plan import CubePlan

    tiles = tuple(sorted((mgrs_tile("31TCJ", 60.0), mgrs_tile("31TDJ", 60.0)), key=lambda t: t.id))
    west = CubePlan(tiles[0].grid, (), 64, tile=tiles[0], tiles=tiles)
    east = CubePlan(tiles[1].grid, (), 64, tile=tiles[1], tiles=tiles)
    # 31TDJ's 9.8 km east overlap lies in 31TEJ's core, but 31TEJ is not in the run: kept.
    assert len(east.windows) == len(east.all_windows)
    # 31TCJ's east strip (x >= 400000) is 31TDJ's core: the last chunk column is dropped.
    dropped = set(west.all_windows) - set(west.windows)
    assert dropped and all(w.col_off >= 1600 for w in dropped)
    owned_w = sum(int(west.owned(w).sum()) for w in west.all_windows)
    owned_e = sum(int(east.owned(w).sum()) for w in east.all_windows)
    # Both 60 m grids share their pixel edges: the union is (509760 - 300000) / 60 = 3496
    # columns by 1830 rows, each pixel owned once.
    assert owned_w + owned_e == 1830 * 3496


# --- two UTM zones: exactly one owner per ground point ------------------------------------


# Tiles around the 6 degrees E meridian, the boundary of UTM zones 31 and 32.
ZONE_SEAM_TILES = mgrs_tiles_covering(box(5.8, 44.65, 6.2, 44.95))


def test_region_across_a_zone_boundary_has_tiles_of_both_zones() -> None:
    assert {t.zone for t in ZONE_SEAM_TILES} == {31, 32}
    assert all(t.id[:2] == f"{t.zone:02d}" for t in ZONE_SEAM_TILES)


@settings(max_examples=80)
@given(lon=st.floats(5.8, 6.2), lat=st.floats(44.65, 44.95))
def test_tiles_of_two_zones_own_each_ground_point_once(lon: float, lat: float) -> None:
    tiles = ZONE_SEAM_TILES
    owners = []
    for tile in tiles:
        x, y = _to(tile.grid.crs, lon, lat)
        window = _covering(tile, x, y)
        if window is not None and ownership_mask(tile, tiles, window)[0, 0]:
            owners.append(tile.id)
    # The owner of the point itself, and of points 15 m around it (one pixel diagonal).
    near = []
    for dx, dy in ((0, 0), (15, 15), (-15, 15), (15, -15), (-15, -15)):
        x0, y0 = _to("EPSG:32631", lon, lat)
        near.append(
            int(owner_index(tiles, np.array([x0 + dx]), np.array([y0 + dy]), "EPSG:32631")[0])
        )
    if len(set(near)) == 1:  # not on a seam: the pixels of that one tile hold the point
        assert owners == [tiles[near[0]].id]
    else:
        # Within a pixel of the seam between two zones' grids (which cannot align), a point may
        # fall in two owned pixels or in none; it is never farther than one pixel from an owned
        # pixel: some tile owns a pixel of the 3 x 3 block around it.
        assert len(owners) <= 2
        assert any(_owns_near(tile, tiles, lon, lat) for tile in tiles)


def _owns_near(tile: Tile, tiles: list[Tile], lon: float, lat: float) -> bool:
    x, y = _to(tile.grid.crs, lon, lat)
    window = _covering(tile, x, y)
    if window is None:
        return False
    row0, col0 = max(window.row_off - 1, 0), max(window.col_off - 1, 0)
    block = Window(row0, col0, window.row_off + 2 - row0, window.col_off + 2 - col0)
    return bool(ownership_mask(tile, tiles, block).any())


# --- planning ----------------------------------------------------------------------------


def test_plan_tiles_mgrs_from_ids_and_region() -> None:
    area = sections.area(tiles=["T31TDJ", "31TCJ"])
    planned = plan_tiles(area, [])
    assert [t.id for t in planned.tiles] == ["31TCJ", "31TDJ"]
    toulouse = sections.area(region=(1.40, 43.58, 1.48, 43.64))
    assert [t.id for t in plan_tiles(toulouse, []).tiles] == ["31TCJ"]
    with pytest.raises(ManifestError, match="2 tiles"):
        plan_grid(area, [])
    assert plan_grid(sections.area(tiles=["31TCJ"]), []).shape == (10980, 10980)


def test_plan_tiles_user_grid_from_bbox() -> None:
    area = sections.area(
        crs="EPSG:2154", resolution=10, tile_size=1000, bbox=(5000, 0, 25000, 9000)
    )
    planned = plan_tiles(area, [])
    assert [t.id for t in planned.tiles] == ["x0y-1", "x1y-1", "x2y-1"]
    assert planned.tiles[0].grid.transform == (10.0, 0.0, 0.0, 0.0, -10.0, 10000.0)
