"""Small Sentinel-2-like scenes for the discovery tests: COGs and the STAC items that list them.

The tiles are real Sentinel-2 tiles (their UTM corners are from ESA's tiling grid, typed in here,
not computed by the code under test), so that the footprints overlap as they do in real catalogs.
Each scene has its own pixel values, so a test can tell which file was read.
"""

from __future__ import annotations

import io
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from datetime import UTC, date, datetime
from pathlib import Path
from typing import Any

import numpy as np
import rasterio
from pyproj import Transformer

PROJECTION_V2 = "https://stac-extensions.github.io/projection/v2.0.0/schema.json"
EO_V1 = "https://stac-extensions.github.io/eo/v1.1.0/schema.json"
S2_COLLECTION = "sentinel-2-l2a"
LANDSAT_COLLECTION = "landsat-c2-l2"
SIZE = 16  # pixels of each test COG
RESOLUTION = 10.0

# ESA tiling grid (S2A_OPER_GIP_TILPAR): upper-left corner of each tile, its UTM zone.
TILE_CORNERS: dict[str, tuple[int, float, float]] = {
    "31TCJ": (32631, 300000.0, 4900020.0),
    "31TCK": (32631, 300000.0, 5000040.0),
    "31TDJ": (32631, 399960.0, 4900020.0),
}
TILE_SIZE_M = 109800.0


@dataclass(frozen=True)
class Scene:
    tile: str
    day: date
    cloud: float
    collection: str = S2_COLLECTION

    @property
    def item_id(self) -> str:
        prefix = "S2B" if self.collection == S2_COLLECTION else "LC08"
        return f"{prefix}_{self.tile}_{self.day:%Y%m%d}_0_L2A"

    @property
    def when(self) -> datetime:
        return datetime(self.day.year, self.day.month, self.day.day, 10, 30, tzinfo=UTC)

    @property
    def epsg(self) -> int:
        return TILE_CORNERS[self.tile][0]

    def pixel_transform(self) -> tuple[float, float, float, float, float, float]:
        """The small raster sits at the tile's upper-left corner."""
        _, left, top = TILE_CORNERS[self.tile]
        return (RESOLUTION, 0.0, left, 0.0, -RESOLUTION, top)

    def values(self, asset: str) -> np.ndarray:
        """Distinct values per scene and asset: red/nir encode the day, scl marks clouds."""
        ordinal = self.day.toordinal() % 1000
        if asset == "red":
            return np.full((SIZE, SIZE), 1000 + ordinal, dtype=np.uint16)
        if asset == "nir":
            base = np.arange(SIZE * SIZE, dtype=np.uint16).reshape(SIZE, SIZE)
            return base + np.uint16(3000 + ordinal)
        scl = np.full((SIZE, SIZE), 4, dtype=np.uint8)
        scl[: round(SIZE * self.cloud / 100)] = 9
        return scl


# 3 tiles x 6 dates of Sentinel-2, plus 3 Landsat scenes on 31TCJ (another collection).
SCENES: tuple[Scene, ...] = tuple(
    Scene(tile, date(2020, month, day), cloud)
    for tile, day, clouds in (
        ("31TCJ", 5, (0.0, 12.5, 80.0, 25.0, 100.0, 6.25)),
        ("31TCK", 5, (50.0, 0.0, 12.5, 90.0, 25.0, 0.0)),
        ("31TDJ", 15, (6.25, 6.25, 37.5, 0.0, 62.5, 18.75)),
    )
    for month, cloud in zip((1, 2, 3, 4, 5, 6), clouds, strict=True)
) + tuple(Scene("31TCJ", date(2020, m, 20), 10.0, LANDSAT_COLLECTION) for m in (2, 3, 4))

ASSETS = ("red", "nir", "scl")


def tile_geometry(tile: str) -> tuple[dict[str, Any], list[float]]:
    """The Sentinel-2 tile's outline in WGS84 (GeoJSON) and its bbox."""
    epsg, left, top = TILE_CORNERS[tile]
    right, bottom = left + TILE_SIZE_M, top - TILE_SIZE_M
    to_lonlat = Transformer.from_crs(epsg, 4326, always_xy=True)
    xs = [left + (right - left) * i / 8 for i in range(8)]
    ys = [top - (top - bottom) * i / 8 for i in range(8)]
    ring = (
        [(x, top) for x in xs]
        + [(right, y) for y in ys]
        + [(x, bottom) for x in reversed([*xs[1:], right])]
        + [(left, y) for y in reversed([*ys[1:], bottom])]
    )
    lons, lats = to_lonlat.transform([p[0] for p in ring], [p[1] for p in ring])
    coords = [[round(lon, 7), round(lat, 7)] for lon, lat in zip(lons, lats, strict=True)]
    coords.append(coords[0])
    bbox = [min(lons), min(lats), max(lons), max(lats)]
    return {"type": "Polygon", "coordinates": [coords]}, bbox


def cog_bytes(array: np.ndarray, epsg: int, transform: Sequence[float]) -> bytes:
    """A small Cloud Optimized GeoTIFF, in memory."""
    buffer = io.BytesIO()
    nodata = 0
    with rasterio.MemoryFile() as memory:
        with memory.open(
            driver="GTiff", width=array.shape[1], height=array.shape[0], count=1,
            dtype=array.dtype, crs=f"EPSG:{epsg}", transform=rasterio.Affine(*transform),
            nodata=nodata, tiled=True, blockxsize=16, blockysize=16,
        ) as dst:  # fmt: skip
            dst.write(array, 1)
        with rasterio.open(memory.name) as src, rasterio.MemoryFile() as cog:
            profile = {**src.profile, "driver": "COG"}
            profile.pop("tiled", None)
            profile.pop("blockxsize", None)
            profile.pop("blockysize", None)
            with cog.open(**profile) as dst:
                dst.write(src.read())
            buffer.write(cog.read())
    return buffer.getvalue()


def write_scene_files(
    scenes: Sequence[Scene], put: Callable[[str, bytes], str]
) -> dict[str, dict[str, str]]:
    """Write every scene's COGs with ``put(key, data) -> href``; item id -> asset -> href."""
    hrefs: dict[str, dict[str, str]] = {}
    for scene in scenes:
        hrefs[scene.item_id] = {
            asset: put(
                f"{scene.collection}/{scene.tile}/{scene.day:%Y%m%d}/{asset}.tif",
                cog_bytes(scene.values(asset), scene.epsg, scene.pixel_transform()),
            )
            for asset in ASSETS
        }
    return hrefs


def local_writer(folder: Path) -> Callable[[str, bytes], str]:
    def put(key: str, data: bytes) -> str:
        path = folder / key
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(data)
        return str(path)

    return put


def scene_item(scene: Scene, hrefs: dict[str, str], *, projection: bool = True) -> dict[str, Any]:
    """The STAC item of a scene, as Earth Search writes them (grid:code, per-asset proj)."""
    geometry, bbox = tile_geometry(scene.tile)
    properties: dict[str, Any] = {
        "datetime": scene.when.isoformat().replace("+00:00", "Z"),
        "eo:cloud_cover": scene.cloud,
        "grid:code": f"MGRS-{scene.tile}",
        "platform": "sentinel-2b" if scene.collection == S2_COLLECTION else "landsat-8",
    }
    assets: dict[str, Any] = {}
    for key, href in hrefs.items():
        asset: dict[str, Any] = {
            "href": href,
            "type": "image/tiff; application=geotiff; profile=cloud-optimized",
            "roles": ["data"],
        }
        if projection:
            asset["proj:shape"] = [SIZE, SIZE]
            asset["proj:transform"] = list(scene.pixel_transform())
        assets[key] = asset
    if projection:
        properties["proj:code"] = f"EPSG:{scene.epsg}"
    return {
        "type": "Feature",
        "stac_version": "1.1.0",
        "stac_extensions": [PROJECTION_V2, EO_V1] if projection else [EO_V1],
        "id": scene.item_id,
        "collection": scene.collection,
        "geometry": geometry,
        "bbox": bbox,
        "properties": properties,
        "assets": assets,
        "links": [],
    }


def collection_dict(collection_id: str, scenes: Sequence[Scene]) -> dict[str, Any]:
    members = [s for s in scenes if s.collection == collection_id]
    boxes = [tile_geometry(s.tile)[1] for s in members] or [[-180.0, -90.0, 180.0, 90.0]]
    times = sorted(s.when for s in members)
    interval = [times[0].isoformat(), times[-1].isoformat()] if times else [None, None]
    return {
        "type": "Collection",
        "stac_version": "1.1.0",
        "id": collection_id,
        "description": f"test scenes of {collection_id}",
        "license": "CC-BY-4.0",
        "extent": {
            "spatial": {
                "bbox": [[min(b[0] for b in boxes), min(b[1] for b in boxes),
                          max(b[2] for b in boxes), max(b[3] for b in boxes)]]
            },
            "temporal": {"interval": [interval]},
        },
        "links": [],
    }  # fmt: skip


def expected_ids(
    *,
    tiles: Sequence[str] | None = None,
    start: date = date(2020, 1, 1),
    end: date = date(2020, 12, 31),
    max_cloud: float | None = None,
    collection: str = S2_COLLECTION,
) -> list[str]:
    """The ids a correct discovery returns, from the scene table (sorted by time then id)."""
    chosen = [
        s
        for s in SCENES
        if s.collection == collection
        and (tiles is None or s.tile in tiles)
        and start <= s.day <= end
        and (max_cloud is None or s.cloud <= max_cloud)
    ]
    return [s.item_id for s in sorted(chosen, key=lambda s: (s.when, s.item_id))]


def inside(tile: str, margin_m: float = 20000.0) -> list[float]:
    """A WGS84 bbox well inside ``tile`` and outside every other test tile."""
    epsg, left, top = TILE_CORNERS[tile]
    to_lonlat = Transformer.from_crs(epsg, 4326, always_xy=True)
    west, north = to_lonlat.transform(left + margin_m, top - margin_m)
    east, south = to_lonlat.transform(left + 60000.0, top - 60000.0)
    return [west, south, east, north]
