"""MGRS tile ids (Sentinel-2, THEIA): normalize them, find them in items, and locate them.

A STAC API cannot search by tile id in a portable way (each catalog names the property
differently), so a tile search asks the server for items intersecting the tiles' footprints and
then keeps the items whose tile id matches. The footprint is computed from the id alone.
"""

from __future__ import annotations

import re
from typing import Any

import numpy as np
import pystac
import shapely
import shapely.affinity
import shapely.geometry
from pyproj import Transformer

_COLUMN_SETS = ("ABCDEFGH", "JKLMNPQR", "STUVWXYZ")
_ROW_LETTERS = "ABCDEFGHJKLMNPQRSTUV"
_BANDS = "CDEFGHJKLMNPQRSTUVWX"
# Lowest northing (m) of each latitude band, in the hemisphere's UTM northing (after MGRS
# conventions): resolves which 2,000 km cycle of row letters a square belongs to.
_BAND_MIN_NORTHING = dict(
    zip(
        _BANDS,
        (1100000, 2000000, 2800000, 3700000, 4600000, 5500000, 6400000, 7300000, 8200000,
         9100000, 0, 800000, 1700000, 2600000, 3500000, 4400000, 5300000, 6200000, 7000000,
         7900000),
        strict=True,
    )
)  # fmt: skip
_TILE = re.compile(r"^(\d{1,2})([C-HJ-NP-X])([A-HJ-NP-Z])([A-HJ-NP-V])$")
_TILE_IN_TEXT = re.compile(
    r"(?:^|[^A-Z0-9])T?(\d{2}[C-HJ-NP-X][A-HJ-NP-Z][A-HJ-NP-V])(?:[^A-Z0-9]|$)"
)
# A Sentinel-2 tile is its 100 km MGRS square extended by 9.8 km to the east and south.
_S2_TILE_SIZE = 109800.0
# Where catalogs put the tile id (Earth Search, Planetary Computer, CDSE, THEIA, MGRS extension).
TILE_PROPERTIES = ("grid:code", "s2:mgrs_tile", "mgrs:tile", "tile_id", "s2:tile_id", "tile")


def normalize_tile(text: str) -> str | None:
    """'T31TCJ', 'MGRS-31TCJ', '31tcj', '1CCV' -> '31TCJ' / '01CCV'; None when it is no tile id."""
    code = text.strip().upper().removeprefix("MGRS-")
    if code.startswith("T") and len(code) in (5, 6) and code[1].isdigit():
        code = code[1:]
    match = _TILE.match(code)
    if match is None or not 1 <= int(match.group(1)) <= 60:
        return None
    return code.zfill(5)


def item_tile(item: pystac.Item, tile_property: str | None = None) -> str | None:
    """The item's tile id, from the named property, the usual properties, or its id."""
    props: dict[str, Any] = item.properties
    names = (tile_property,) if tile_property else TILE_PROPERTIES
    for name in names:
        value = props.get(name)
        if isinstance(value, str) and (tile := normalize_tile(value)):
            return tile
    if tile_property:
        return None
    zone, band, square = (
        props.get(f"mgrs:{k}") for k in ("utm_zone", "latitude_band", "grid_square")
    )
    if zone is not None and band and square:
        return normalize_tile(f"{int(zone):02d}{band}{square}")
    match = _TILE_IN_TEXT.search(item.id.upper())
    return match.group(1) if match else None


def tile_utm_bounds(tile: str) -> tuple[str, tuple[float, float, float, float]]:
    """The UTM CRS and (left, bottom, right, top) of the Sentinel-2 tile ``tile``."""
    code = normalize_tile(tile)
    match = _TILE.match(code or "")
    if code is None or match is None:
        raise ValueError(f"{tile!r} is not an MGRS tile id")
    zone, band, column, row = int(match.group(1)), match.group(2), match.group(3), match.group(4)
    column_set = _COLUMN_SETS[(zone - 1) % 3]
    if column not in column_set:
        raise ValueError(f"{tile!r}: column letter {column!r} does not exist in UTM zone {zone}")
    easting = (column_set.index(column) + 1) * 100000.0
    # Row letters restart every 2,000 km; even zones start 5 letters later.
    row_index = (_ROW_LETTERS.index(row) - (5 if zone % 2 == 0 else 0)) % len(_ROW_LETTERS)
    northing = row_index * 100000.0
    while northing < _BAND_MIN_NORTHING[band]:
        northing += 2000000.0
    epsg = (32600 if band >= "N" else 32700) + zone
    top = northing + 100000.0
    return f"EPSG:{epsg}", (easting, top - _S2_TILE_SIZE, easting + _S2_TILE_SIZE, top)


def tile_footprint(tile: str) -> shapely.Geometry:
    """The tile's outline in WGS84 longitude/latitude (edges densified, clipped at 180°)."""
    crs, bounds = tile_utm_bounds(tile)
    to_lonlat = Transformer.from_crs(crs, "EPSG:4326", always_xy=True)
    outline = shapely.segmentize(shapely.box(*bounds), max_segment_length=10000.0)

    def project(xy: np.ndarray) -> np.ndarray:
        lon, lat = to_lonlat.transform(xy[:, 0], xy[:, 1])
        lon = np.asarray(lon)
        if lon.max() - lon.min() > 180:  # crosses the antimeridian: make it continuous
            lon = np.where(lon < 0, lon + 360, lon)
        return np.column_stack([lon, lat])

    polygon = shapely.transform(outline, project)
    east = shapely.clip_by_rect(polygon, -180, -90, 180, 90)
    beyond = shapely.clip_by_rect(polygon, 180, -90, 540, 90)
    if beyond.is_empty or beyond.area == 0:
        return east
    # The part past 180° belongs to the western hemisphere.
    return shapely.union(east, shapely.affinity.translate(beyond, xoff=-360))


def tiles_footprint(tiles: list[str]) -> dict[str, Any]:
    """GeoJSON (WGS84) of the union of the tiles' footprints: the area to search."""
    union = shapely.union_all([tile_footprint(t) for t in tiles])
    return dict(shapely.geometry.mapping(union))
