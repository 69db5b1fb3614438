"""Seeded writers of small synthetic scenes in the real file layouts, naming and asset keys.

(Over 600 lines on purpose: one writer per provider layout, all sharing the seeded scene and
its noise; a reader compares the layouts side by side here.)

Each writer puts COGs on disk exactly where and how the provider names them, with clouds, cloud
shadows, saturated pixels, swath edges (no data), several overlapping tiles in different UTM
zones and a different number of dates per tile, and returns one ``SyntheticScene`` per
acquisition: its STAC item, its files and the raw arrays written (so that a test can compute the
expected masks by hand). The same seed always writes the same bytes.

=====================  ===================================================================
writer                 layout
=====================  ===================================================================
``theia_l2a``          ``<tile>/SENTINEL2A_<date>-<time>_L2A_T<tile>_C_V2-2/..._FRE_B2.tif``,
                       ``MASKS/..._CLM_R1.tif``, ``_SAT_R1``, ``_EDG_R1`` (and ``_R2``)
``theia_l3a``          ``SENTINEL2X_<yyyymm>15-000000-000_L3A_T<tile>_C_V1-1/..._FRC_B2.tif``,
                       ``MASKS/..._FLG_R1.tif`` (and ``_R2``)
``sen2cor_l2a``        Earth Search COGs (``B04.tif``, keys ``red``, ``scl``) or Planetary
                       Computer SAFE granules (``T31TGK_..._B04_10m.tif``, keys ``B04``, ``SCL``)
``landsat_c2_l2``      ``LC08_L2SP_<pathrow>_<date>_<proc>_02_T1_SR_B4.TIF``, ``_QA_PIXEL``,
                       ``_QA_RADSAT`` (OLI 8/9, or TM 5)
``sentinel1_rtc``      S1Tiling naming ``s1a_<tile>_vv_<ASC|DES>_<orbit>_<stamp>.tif``
=====================  ===================================================================

THEIA items are made by the archive indexer (``pipeline.catalog.archive``), as for a real
archive; the other writers make the items the way the catalog that serves them does.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import UTC, date, datetime, timedelta
from pathlib import Path
from typing import Any, Literal

import numpy as np
import pystac
import rasterio
from affine import Affine
from pyproj import Transformer
from pystac.extensions.projection import SCHEMA_URI as PROJECTION_SCHEMA
from rasterio.warp import transform_geom

from pipeline.model import GridSpec

# --- geometry -----------------------------------------------------------------------------------


@dataclass(frozen=True)
class SyntheticTile:
    """A small square area of a real tile: id, CRS, top-left corner, size and number of dates."""

    tile: str
    crs: str
    left: float
    top: float
    size: int  # pixels at ``resolution``; even, so that coarser bands nest
    resolution: float
    n_dates: int

    def grid(self, resolution: float | None = None) -> GridSpec:
        res = resolution or self.resolution
        n = round(self.size * self.resolution / res)
        return GridSpec(self.crs, (res, 0.0, self.left, 0.0, -res, self.top), n, n)


def overlapping_tiles(
    size: int = 48,
    resolution: float = 10.0,
    dates: Sequence[int] = (4, 3),
    names: Sequence[str] = ("31TGK", "32TKQ"),
) -> tuple[SyntheticTile, ...]:
    """Tiles either side of the UTM 31/32 border (6 E, 45 N) whose footprints overlap.

    The first lies in zone 31 with the meeting point in its east, the second in zone 32 with it
    in its west; corners sit on multiples of 60 m so that 10, 20 and 60 m pixels nest.
    """
    tiles = []
    for i, (name, n_dates) in enumerate(zip(names, dates, strict=True)):
        zone = 31 + i
        x, y = Transformer.from_crs(4326, 32600 + zone, always_xy=True).transform(6.0, 45.0)
        span = size * resolution
        left = x - span * (0.7 if i == 0 else 0.3)
        top = y + span / 2
        align = 60.0 if resolution <= 60 else resolution
        tiles.append(
            SyntheticTile(
                tile=name,
                crs=f"EPSG:{32600 + zone}",
                left=float(np.floor(left / align) * align),
                top=float(np.floor(top / align) * align),
                size=size,
                resolution=resolution,
                n_dates=n_dates,
            )
        )
    return tuple(tiles)


# --- what a writer returns ----------------------------------------------------------------------


@dataclass
class SyntheticScene:
    """One acquisition written to disk: its item, files and raw arrays, by asset key."""

    item: pystac.Item
    tile: SyntheticTile
    datetime: datetime
    files: dict[str, Path]
    raw: dict[str, np.ndarray]
    properties: dict[str, Any] = field(default_factory=dict)


# --- pixels -------------------------------------------------------------------------------------


def _rng(seed: int, *parts: int) -> np.random.Generator:
    return np.random.default_rng([seed, *parts])


def _smooth(rng: np.random.Generator, size: int, cells: int = 6) -> np.ndarray:
    """A smooth random field in [0, 1]: coarse noise upsampled bilinearly."""
    coarse = rng.random((cells + 1, cells + 1))
    pos = np.linspace(0, cells, size)
    i0 = np.minimum(pos.astype(int), cells - 1)
    f = pos - i0
    rows = coarse[i0] * (1 - f)[:, None] + coarse[i0 + 1] * f[:, None]
    return rows[:, i0] * (1 - f)[None, :] + rows[:, i0 + 1] * f[None, :]


def _discs(rng: np.random.Generator, size: int, count: int, radius: tuple[int, int]) -> np.ndarray:
    yy, xx = np.mgrid[0:size, 0:size]
    out = np.zeros((size, size), dtype=bool)
    for _ in range(count):
        cy, cx = rng.integers(0, size, 2)
        r = rng.integers(radius[0], radius[1] + 1)
        out |= (yy - cy) ** 2 + (xx - cx) ** 2 <= r * r
    return out


@dataclass(frozen=True)
class _Sky:
    """Where one acquisition is cloudy, shadowed, outside the swath, saturated (finest grid)."""

    cloud: np.ndarray
    thin: np.ndarray
    shadow: np.ndarray
    edge: np.ndarray
    saturated: np.ndarray  # (n_bands, h, w)
    snow: np.ndarray
    water: np.ndarray


def _sky(rng: np.random.Generator, size: int, n_bands: int, *, block: int = 2) -> _Sky:
    cloud = _discs(rng, size, int(rng.integers(1, 4)), (2, max(3, size // 8)))
    thin = _discs(rng, size, 1, (2, max(3, size // 10))) & ~cloud
    shadow = np.roll(cloud, (size // 10, size // 10), axis=(0, 1)) & ~cloud & ~thin
    edge = np.zeros((size, size), dtype=bool)
    width = int(rng.integers(0, size // 4 // block + 1)) * block  # whole coarse pixels
    if width:
        edge[:, :width] = True  # the swath ends on the west of this tile
    saturated = rng.random((n_bands, size, size)) < 0.01
    saturated &= ~edge
    snow = _discs(rng, size, 1, (2, max(3, size // 12))) & ~cloud & ~edge
    water = _smooth(rng, size) > 0.85
    return _Sky(cloud, thin, shadow, edge, saturated, snow, water)


def _reflectance(rng: np.random.Generator, size: int, n_bands: int, season: float) -> np.ndarray:
    """(n_bands, h, w) surface reflectance with a vegetation-like red/NIR contrast."""
    vegetation = _smooth(rng, size)
    out = np.empty((n_bands, size, size))
    for b in range(n_bands):
        nir_like = b >= n_bands // 2
        level = 0.25 + 0.25 * vegetation * season if nir_like else 0.12 - 0.08 * vegetation
        out[b] = np.clip(level + 0.01 * rng.standard_normal((size, size)), 0.005, 0.9)
    return out


def _coarse(array: np.ndarray, factor: int, how: Literal["mean", "or", "first"]) -> np.ndarray:
    if factor == 1:
        return array
    h, w = array.shape[-2:]
    blocks = array.reshape(*array.shape[:-2], h // factor, factor, w // factor, factor)
    if how == "mean":
        return blocks.mean(axis=(-1, -3))
    if how == "or":
        return np.bitwise_or.reduce(np.bitwise_or.reduce(blocks, axis=-1), axis=-2)
    return blocks[..., 0, :, 0]


# --- files and items ----------------------------------------------------------------------------


def write_cog(
    path: Path, array: np.ndarray, grid: GridSpec, *, nodata: float | None = None
) -> Path:
    """A single-band (2-D) or multi-band (3-D) Cloud Optimized GeoTIFF, deflate-compressed, in
    128 px blocks (the smallest the GDAL COG driver accepts)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    data = array if array.ndim == 3 else array[None]
    with rasterio.open(
        path,
        "w",
        driver="COG",
        width=data.shape[2],
        height=data.shape[1],
        count=data.shape[0],
        dtype=data.dtype,
        crs=grid.crs,
        transform=Affine(*grid.transform),
        nodata=nodata,
        compress="deflate",
        blocksize=128,
        overviews="none",
    ) as dst:
        dst.write(data)
    return path


def _proj(grid: GridSpec) -> dict[str, Any]:
    return {
        "proj:code": grid.crs,
        "proj:shape": [grid.height, grid.width],
        "proj:transform": list(grid.transform),
        "proj:bbox": list(grid.bounds),
    }


def _footprint(grid: GridSpec) -> tuple[dict[str, Any], list[float]]:
    left, bottom, right, top = grid.bounds
    ring = [(left, top), (right, top), (right, bottom), (left, bottom), (left, top)]
    geometry = dict(
        transform_geom(grid.crs, "EPSG:4326", {"type": "Polygon", "coordinates": [ring]})
    )
    xs = [x for x, _ in geometry["coordinates"][0]]
    ys = [y for _, y in geometry["coordinates"][0]]
    return geometry, [min(xs), min(ys), max(xs), max(ys)]


def _item(
    item_id: str,
    when: datetime,
    grid: GridSpec,
    collection: str,
    properties: dict[str, Any],
    assets: dict[str, tuple[Path, GridSpec, tuple[str, ...]]],
    *,
    projection: bool,
) -> pystac.Item:
    geometry, bbox = _footprint(grid)
    props = dict(properties)
    if projection:
        props.update(_proj(grid))
    item = pystac.Item(
        id=item_id,
        geometry=geometry,
        bbox=bbox,
        datetime=when,
        properties=props,
        stac_extensions=[PROJECTION_SCHEMA] if projection else [],
        collection=collection,
    )
    for key, (path, asset_grid, roles) in assets.items():
        item.add_asset(
            key,
            pystac.Asset(
                href=str(path.resolve()),
                media_type=pystac.MediaType.COG,
                roles=list(roles),
                extra_fields=_proj(asset_grid) if projection else {},
            ),
        )
    return item


def write_catalog(scenes: Sequence[SyntheticScene], folder: Path, *, title: str = "") -> Path:
    """A static STAC catalog (one collection per collection id) of the scenes' items."""
    catalog = pystac.Catalog(id="synthetic", description=title or "sitsflow synthetic scenes")
    by_collection: dict[str, list[pystac.Item]] = {}
    for scene in scenes:
        item = scene.item.clone()
        by_collection.setdefault(item.collection_id or "items", []).append(item)
    for collection_id, items in by_collection.items():
        times = sorted(it.datetime for it in items if it.datetime is not None)
        boxes = np.array([it.bbox for it in items if it.bbox is not None])
        collection = pystac.Collection(
            id=collection_id,
            description=f"synthetic {collection_id}",
            extent=pystac.Extent(
                pystac.SpatialExtent(
                    [[float(v) for v in (*boxes[:, :2].min(axis=0), *boxes[:, 2:].max(axis=0))]]
                ),
                pystac.TemporalExtent([[times[0], times[-1]]]),
            ),
        )
        for item in items:
            collection.add_item(item)
        catalog.add_child(collection)
    catalog.normalize_hrefs(str(folder.resolve()))
    catalog.save(catalog_type=pystac.CatalogType.ABSOLUTE_PUBLISHED)
    return folder / "catalog.json"


def _dates(start: date, n: int, step: int, shift: int) -> list[date]:
    return [start + timedelta(days=shift + i * step) for i in range(n)]


# --- THEIA Sentinel-2 L2A and L3A ---------------------------------------------------------------

_S2_R1 = ("B02", "B03", "B04", "B08")
_S2_R2 = ("B05", "B06", "B07", "B8A", "B11", "B12")


def _theia_name(band: str) -> str:
    return "B" + band[1:].lstrip("0")


def theia_l2a(
    root: Path,
    *,
    seed: int = 0,
    tiles: Sequence[SyntheticTile] | None = None,
    start: date = date(2018, 1, 5),
    step_days: int = 5,
) -> list[SyntheticScene]:
    """THEIA/MUSCATE Sentinel-2 L2A products (MAJA): FRE bands, CLM/SAT/EDG masks at R1, R2."""
    from pipeline.catalog.archive import LAYOUTS, product_item

    layout = next(lay for lay in LAYOUTS if lay.name == "sentinel2-l2a-theia")
    scenes = []
    for t, tile in enumerate(tiles or overlapping_tiles()):
        for d, day in enumerate(_dates(start, tile.n_dates, step_days, shift=t)):
            rng = _rng(seed, 1, t, d)
            when = datetime(day.year, day.month, day.day, 10, 51, 7, 458000 + t * 1000, UTC)
            platform = "SENTINEL2A" if d % 2 == 0 else "SENTINEL2B"
            product_id = (
                f"{platform}_{when:%Y%m%d-%H%M%S}-{when.microsecond // 1000:03d}_L2A_"
                f"T{tile.tile}_C_V2-2"
            )
            folder = root / tile.tile / product_id
            n = tile.size
            sky = _sky(rng, n, len(_S2_R1) + len(_S2_R2))
            refl = _reflectance(rng, n, len(_S2_R1) + len(_S2_R2), season=0.5 + 0.1 * d)
            refl[:, sky.cloud] = 0.6 + 0.2 * rng.random(int(sky.cloud.sum()))
            refl[:, sky.shadow] *= 0.4
            raw: dict[str, np.ndarray] = {}
            files: dict[str, Path] = {}
            for b, band in enumerate((*_S2_R1, *_S2_R2)):
                factor = 1 if band in _S2_R1 else 2
                grid = tile.grid(tile.resolution * factor)
                dn = np.round(_coarse(refl[b], factor, "mean") * 10000).astype(np.int16)
                saturated = _coarse(sky.saturated[b], factor, "first")
                dn[saturated] = 32767
                dn[_coarse(sky.edge, factor, "first")] = -10000
                path = folder / f"{product_id}_FRE_{_theia_name(band)}.tif"
                raw[band], files[band] = dn, write_cog(path, dn, grid, nodata=-10000)
            clm = np.zeros((n, n), dtype=np.uint8)
            clm[sky.cloud] |= 0b00000011 | np.uint8(4 if d % 2 else 8)  # all clouds, mono/multi
            clm[sky.thin] |= 0b00010000  # thinnest clouds only
            clm[sky.shadow] |= 0b00100001  # shadows of detected clouds
            clm[sky.cloud & (_smooth(rng, n) > 0.6)] |= 0b10000000  # high clouds
            clm[sky.edge] = 0
            edg = sky.edge.astype(np.uint8)
            sat_r1 = np.zeros((n, n), dtype=np.uint8)
            for bit in range(len(_S2_R1)):
                sat_r1[sky.saturated[bit]] |= np.uint8(1 << bit)
            sat_r2 = np.zeros((n // 2, n // 2), dtype=np.uint8)
            for bit in range(len(_S2_R2)):
                sat_r2[_coarse(sky.saturated[len(_S2_R1) + bit], 2, "first")] |= np.uint8(1 << bit)
            masks = {
                "CLM_R1": clm,
                "CLM_R2": _coarse(clm, 2, "or"),
                "EDG_R1": edg,
                "EDG_R2": _coarse(edg, 2, "or"),
                "SAT_R1": sat_r1,
                "SAT_R2": sat_r2,
            }
            for key, array in masks.items():
                grid = tile.grid(tile.resolution * (1 if key.endswith("R1") else 2))
                path = folder / "MASKS" / f"{product_id}_{key}.tif"
                raw[key], files[key] = array, write_cog(path, array, grid)
            match = layout.folder.match(product_id)
            assert match is not None, product_id
            scenes.append(
                SyntheticScene(product_item(folder, layout, match), tile, when, files, raw)
            )
    return scenes


FLG_NODATA, FLG_CLOUD, FLG_SNOW, FLG_WATER, FLG_LAND = 0, 1, 2, 3, 4


def theia_l3a(
    root: Path,
    *,
    seed: int = 0,
    tiles: Sequence[SyntheticTile] | None = None,
    first_month: date = date(2018, 3, 1),
) -> list[SyntheticScene]:
    """THEIA Sentinel-2 L3A monthly syntheses (WASP): FRC bands and FLG flags, dated the 15th."""
    from pipeline.catalog.archive import LAYOUTS, product_item

    layout = next(lay for lay in LAYOUTS if lay.name == "sentinel2-l3a-theia")
    scenes = []
    for t, tile in enumerate(tiles or overlapping_tiles()):
        for d in range(tile.n_dates):
            month = first_month.month - 1 + d
            day = date(first_month.year + month // 12, month % 12 + 1, 15)
            when = datetime(day.year, day.month, day.day, tzinfo=UTC)
            product_id = f"SENTINEL2X_{day:%Y%m%d}-000000-000_L3A_T{tile.tile}_C_V1-1"
            folder = root / tile.tile / product_id
            rng = _rng(seed, 2, t, d)
            n = tile.size
            sky = _sky(rng, n, 10)
            flag = np.full((n, n), FLG_LAND, dtype=np.uint8)
            flag[sky.water] = FLG_WATER
            flag[sky.snow] = FLG_SNOW
            flag[sky.cloud & _discs(rng, n, 1, (2, 4))] = FLG_CLOUD  # left after the synthesis
            flag[sky.edge] = FLG_NODATA
            refl = _reflectance(rng, n, 10, season=0.4 + 0.15 * d)
            raw: dict[str, np.ndarray] = {}
            files: dict[str, Path] = {}
            for b, band in enumerate((*_S2_R1, *_S2_R2)):
                factor = 1 if band in _S2_R1 else 2
                dn = np.round(_coarse(refl[b], factor, "mean") * 10000).astype(np.int16)
                dn[_coarse(flag == FLG_NODATA, factor, "first")] = -10000
                path = folder / f"{product_id}_FRC_{_theia_name(band)}.tif"
                grid = tile.grid(tile.resolution * factor)
                raw[band], files[band] = dn, write_cog(path, dn, grid, nodata=-10000)
            for key, array, factor in (
                ("FLG_R1", flag, 1),
                ("FLG_R2", _coarse(flag, 2, "first"), 2),
            ):
                path = folder / "MASKS" / f"{product_id}_{key}.tif"
                grid = tile.grid(tile.resolution * factor)
                raw[key], files[key] = array, write_cog(path, array, grid)
            match = layout.folder.match(product_id)
            assert match is not None, product_id
            scenes.append(
                SyntheticScene(product_item(folder, layout, match), tile, when, files, raw)
            )
    return scenes


# --- Sen2Cor L2A (Earth Search, Planetary Computer) ---------------------------------------------

SCL_NODATA, SCL_DEFECTIVE, SCL_DARK, SCL_SHADOW = 0, 1, 2, 3
SCL_VEGETATION, SCL_BARE, SCL_WATER, SCL_UNCLASSIFIED = 4, 5, 6, 7
SCL_CLOUD_MEDIUM, SCL_CLOUD_HIGH, SCL_CIRRUS, SCL_SNOW = 8, 9, 10, 11

_S2_COMMON = {
    "B02": "blue",
    "B03": "green",
    "B04": "red",
    "B05": "rededge1",
    "B06": "rededge2",
    "B07": "rededge3",
    "B08": "nir",
    "B8A": "nir08",
    "B11": "swir16",
    "B12": "swir22",
}
BASELINE_04_START = date(2022, 1, 25)
"""First day of Sen2Cor processing baseline 04.00 (reflectances offset by +1000)."""


def sen2cor_l2a(
    root: Path,
    *,
    seed: int = 0,
    tiles: Sequence[SyntheticTile] | None = None,
    style: Literal["earth-search", "planetary-computer"] = "earth-search",
    start: date = date(2022, 1, 15),
    step_days: int = 5,
    offset_applied: bool = False,
    projection: bool = True,
) -> list[SyntheticScene]:
    """ESA Sen2Cor L2A scenes as Earth Search or Planetary Computer serve them.

    The dates straddle 2022-01-25, so both processing baselines (03.01, and 04.00 with its
    +1000 offset) appear. ``offset_applied`` writes Earth Search's harmonized variant.
    ``projection=False`` leaves the projection fields out of the items.
    """
    scenes = []
    bands = (*_S2_R1, *_S2_R2)
    for t, tile in enumerate(tiles or overlapping_tiles()):
        for d, day in enumerate(_dates(start, tile.n_dates, step_days, shift=2 * t)):
            rng = _rng(seed, 3, t, d)
            when = datetime(day.year, day.month, day.day, 10, 34, 21, 24000, UTC)
            unit = "A" if d % 2 == 0 else "B"
            baseline = "04.00" if day >= BASELINE_04_START else "03.01"
            offset = 1000 if baseline >= "04.00" and not offset_applied else 0
            n = tile.size
            sky = _sky(rng, n, len(bands))
            refl = _reflectance(rng, n, len(bands), season=0.6)
            refl[:, sky.cloud] = 0.7
            refl[:, sky.shadow] *= 0.4
            scl = np.where(sky.water, SCL_WATER, SCL_VEGETATION).astype(np.uint8)
            scl[_smooth(rng, n) > 0.75] = SCL_BARE
            scl[_smooth(rng, n) < 0.05] = SCL_DARK
            scl[sky.snow] = SCL_SNOW
            scl[sky.shadow] = SCL_SHADOW
            scl[sky.thin] = SCL_CIRRUS
            scl[sky.cloud] = np.where(_smooth(rng, n) > 0.5, SCL_CLOUD_HIGH, SCL_CLOUD_MEDIUM)[
                sky.cloud
            ]
            scl[sky.saturated.any(axis=0)] = SCL_DEFECTIVE
            scl[sky.edge] = SCL_NODATA
            if style == "earth-search":
                item_id = f"S2{unit}_{tile.tile}_{day:%Y%m%d}_0_L2A"
                folder = root / tile.tile[:2] / tile.tile[2] / tile.tile[3:] / item_id
            else:
                stamp = f"{when:%Y%m%dT%H%M%S}"
                item_id = f"S2{unit}_MSIL2A_{stamp}_R008_T{tile.tile}_{stamp}"
                folder = root / f"{item_id}.SAFE" / "GRANULE" / f"L2A_T{tile.tile}_{stamp}"
            raw: dict[str, np.ndarray] = {}
            files: dict[str, Path] = {}
            assets: dict[str, tuple[Path, GridSpec, tuple[str, ...]]] = {}
            for b, band in enumerate(bands):
                factor = 1 if band in _S2_R1 else 2
                grid = tile.grid(tile.resolution * factor)
                dn = np.round(_coarse(refl[b], factor, "mean") * 10000).astype(np.uint16)
                dn += np.uint16(offset)
                dn[_coarse(sky.saturated[b], factor, "first")] = 65535
                dn[_coarse(sky.edge, factor, "first")] = 0
                key, path = _sen2cor_place(style, folder, tile, when, band, factor)
                raw[key], files[key] = dn, write_cog(path, dn, grid, nodata=0)
                assets[key] = (path, grid, ("data", "reflectance"))
            scl20 = _coarse(scl, 2, "first")
            key, path = _sen2cor_place(style, folder, tile, when, "SCL", 2)
            raw[key], files[key] = (
                scl20,
                write_cog(path, scl20, tile.grid(tile.resolution * 2), nodata=0),
            )
            assets[key] = (path, tile.grid(tile.resolution * 2), ("data",))
            properties: dict[str, Any] = {
                "platform": f"sentinel-2{unit.lower()}",
                "constellation": "sentinel-2",
                "instruments": ["msi"],
                "eo:cloud_cover": round(100 * float(sky.cloud.mean()), 2),
                "s2:processing_baseline": baseline,
            }
            if style == "earth-search":
                properties |= {
                    "grid:code": f"MGRS-{tile.tile}",
                    "mgrs:utm_zone": int(tile.tile[:2]),
                    "mgrs:latitude_band": tile.tile[2],
                    "mgrs:grid_square": tile.tile[3:],
                    "earthsearch:boa_offset_applied": offset_applied,
                }
            else:
                properties["s2:mgrs_tile"] = tile.tile
            item = _item(
                item_id,
                when,
                tile.grid(),
                "sentinel-2-l2a",
                properties,
                assets,
                projection=projection,
            )
            scenes.append(SyntheticScene(item, tile, when, files, raw, properties))
    return scenes


def _sen2cor_place(
    style: str, folder: Path, tile: SyntheticTile, when: datetime, band: str, factor: int
) -> tuple[str, Path]:
    """Asset key and file of one band in the catalog's naming."""
    res = f"{round(tile.resolution * factor)}m"
    if style == "earth-search":
        return _S2_COMMON.get(band, band.lower()), folder / f"{band}.tif"
    name = f"T{tile.tile}_{when:%Y%m%dT%H%M%S}_{band}_{res}.tif"
    return band, folder / "IMG_DATA" / f"R{res}" / name


# --- Landsat Collection 2 Level-2 ---------------------------------------------------------------

QA_FILL, QA_DILATED, QA_CIRRUS, QA_CLOUD, QA_SHADOW, QA_SNOW, QA_CLEAR, QA_WATER = range(8)
_OLI_SR = {1: "coastal", 2: "blue", 3: "green", 4: "red", 5: "nir08", 6: "swir16", 7: "swir22"}
_TM_SR = {1: "blue", 2: "green", 3: "red", 4: "nir08", 5: "swir16", 7: "swir22"}


def landsat_c2_l2(
    root: Path,
    *,
    seed: int = 0,
    tiles: Sequence[SyntheticTile] | None = None,
    sensor: Literal["oli", "tm"] = "oli",
    keys: Literal["common", "file"] = "common",
    start: date = date(2022, 3, 2),
    step_days: int = 8,
) -> list[SyntheticScene]:
    """USGS Landsat Collection 2 Level-2 scenes: SR_B*, QA_PIXEL, QA_RADSAT, scale 2.75e-5.

    ``sensor="oli"`` alternates Landsat 8 and 9; ``"tm"`` writes Landsat 5. ``keys`` picks the
    asset keys: ``common`` (red, nir08, qa_pixel: Earth Search, Planetary Computer, USGS STAC)
    or ``file`` (SR_B4, QA_PIXEL: the file suffixes).
    """
    paths_rows = ("197029", "196029")
    default = overlapping_tiles(size=24, resolution=30.0, dates=(3, 4), names=paths_rows)
    sr = _OLI_SR if sensor == "oli" else _TM_SR
    scenes = []
    for t, tile in enumerate(tiles or default):
        for d, day in enumerate(_dates(start, tile.n_dates, step_days, shift=t)):
            rng = _rng(seed, 4, t, d)
            when = datetime(day.year, day.month, day.day, 10, 12, 5, tzinfo=UTC)
            if sensor == "oli":
                mission, platform = ("LC08", "landsat-8") if d % 2 == 0 else ("LC09", "landsat-9")
            else:
                mission, platform = "LT05", "landsat-5"
            processed = day + timedelta(days=9)
            product = f"{mission}_L2SP_{tile.tile}_{day:%Y%m%d}_{processed:%Y%m%d}_02_T1"
            item_id = f"{mission}_L2SP_{tile.tile}_{day:%Y%m%d}_02_T1"
            folder = root / tile.tile / product
            n = tile.size
            sky = _sky(rng, n, len(sr), block=1)
            refl = _reflectance(rng, n, len(sr), season=0.5)
            refl[:, sky.cloud] = 0.65
            refl[:, sky.shadow] *= 0.4
            qa = np.zeros((n, n), dtype=np.uint16)
            low_conf = (1 << 8) | (1 << 10) | (1 << 12) | (1 << 14)
            qa[:] = (1 << QA_CLEAR) | low_conf
            qa[sky.water] |= 1 << QA_WATER
            qa[sky.snow] = (1 << QA_SNOW) | low_conf | (3 << 12)
            ring = _grow(sky.cloud) & ~sky.cloud
            qa[ring] = (1 << QA_DILATED) | low_conf
            qa[sky.cloud] = (
                (1 << QA_CLOUD) | (1 << QA_DILATED) | (3 << 8) | (1 << 10) | (1 << 12) | (1 << 14)
            )
            qa[sky.shadow & ~ring] = (1 << QA_SHADOW) | low_conf | (3 << 10)
            if sensor == "oli":
                qa[sky.thin] = (1 << QA_CIRRUS) | low_conf | (3 << 14)
            qa[sky.edge] = 1 << QA_FILL
            radsat = np.zeros((n, n), dtype=np.uint16)
            for b, number in enumerate(sr):
                radsat[sky.saturated[b]] |= np.uint16(1 << (number - 1))
            flag = 11 if sensor == "oli" else 9  # terrain occlusion / dropped pixel
            radsat[(rng.random((n, n)) < 0.005) & ~sky.edge] |= np.uint16(1 << flag)
            grid = tile.grid()
            raw: dict[str, np.ndarray] = {}
            files: dict[str, Path] = {}
            assets: dict[str, tuple[Path, GridSpec, tuple[str, ...]]] = {}
            for b, (number, common) in enumerate(sr.items()):
                dn = np.round((refl[b] + 0.2) / 2.75e-5).astype(np.uint16)
                dn[sky.saturated[b]] = 65535
                dn[sky.edge] = 0
                key = common if keys == "common" else f"SR_B{number}"
                path = write_cog(folder / f"{product}_SR_B{number}.TIF", dn, grid, nodata=0)
                raw[key], files[key] = dn, path
                assets[key] = (path, grid, ("data", "reflectance"))
            for suffix, array, nodata in (("QA_PIXEL", qa, 1), ("QA_RADSAT", radsat, None)):
                key = suffix.lower() if keys == "common" else suffix
                path = write_cog(folder / f"{product}_{suffix}.TIF", array, grid, nodata=nodata)
                raw[key], files[key] = array, path
                assets[key] = (path, grid, ("cloud",) if suffix == "QA_PIXEL" else ("saturation",))
            properties: dict[str, Any] = {
                "platform": platform,
                "instruments": ["oli", "tirs"] if sensor == "oli" else ["tm"],
                "landsat:wrs_path": tile.tile[:3],
                "landsat:wrs_row": tile.tile[3:],
                "landsat:collection_number": "02",
                "landsat:correction": "L2SP",
                "eo:cloud_cover": round(100 * float(sky.cloud.mean()), 2),
            }
            item = _item(item_id, when, grid, "landsat-c2-l2", properties, assets, projection=True)
            scenes.append(SyntheticScene(item, tile, when, files, raw, properties))
    return scenes


def _grow(mask: np.ndarray) -> np.ndarray:
    """``mask`` dilated by one pixel (4-neighbourhood)."""
    out = mask.copy()
    out[1:] |= mask[:-1]
    out[:-1] |= mask[1:]
    out[:, 1:] |= mask[:, :-1]
    out[:, :-1] |= mask[:, 1:]
    return out


# --- Sentinel-1 (S1Tiling / RTC) ----------------------------------------------------------------

S1_NODATA = 0.0


def sentinel1_rtc(
    root: Path,
    *,
    seed: int = 0,
    tiles: Sequence[SyntheticTile] | None = None,
    start: date = date(2022, 1, 3),
) -> list[SyntheticScene]:
    """Sentinel-1 IW VV/VH backscatter (linear gamma0, float32) in S1Tiling's naming.

    Each tile gets ascending and descending passes, of different counts, every 12 days;
    ``sat:orbit_state`` tells them apart. Pixels outside the swath hold 0 (the no-data value).
    """
    scenes = []
    for t, tile in enumerate(tiles or overlapping_tiles()):
        for direction, orbit, count, shift in (
            ("ascending", 88, tile.n_dates, 0),
            ("descending", 8, tile.n_dates - 1, 3),
        ):
            for d, day in enumerate(_dates(start, count, 12, shift=shift + t)):
                rng = _rng(seed, 5, t, d, orbit)
                hour = 17 if direction == "ascending" else 5
                when = datetime(day.year, day.month, day.day, hour, 40, 17, tzinfo=UTC)
                stamp = f"{when:%Y%m%d}t{when:%H%M%S}"
                code = "ASC" if direction == "ascending" else "DES"
                item_id = f"s1a_{tile.tile}_{code}_{orbit:03d}_{stamp}"
                folder = root / tile.tile
                n = tile.size
                edge = np.zeros((n, n), dtype=bool)
                edge[: int(rng.integers(0, n // 4 + 1)), :] = True  # the swath ends north
                db_vv = -12 + 6 * _smooth(rng, n) + 0.8 * rng.standard_normal((n, n))
                raw: dict[str, np.ndarray] = {}
                files: dict[str, Path] = {}
                assets: dict[str, tuple[Path, GridSpec, tuple[str, ...]]] = {}
                for pol, shift_db in (("vv", 0.0), ("vh", -7.0)):
                    value = (10 ** ((db_vv + shift_db) / 10)).astype(np.float32)
                    value[edge] = S1_NODATA
                    path = folder / f"s1a_{tile.tile}_{pol}_{code}_{orbit:03d}_{stamp}.tif"
                    raw[pol], files[pol] = (
                        value,
                        write_cog(path, value, tile.grid(), nodata=S1_NODATA),
                    )
                    assets[pol] = (path, tile.grid(), ("data", "backscatter"))
                properties: dict[str, Any] = {
                    "platform": "sentinel-1a",
                    "constellation": "sentinel-1",
                    "sar:instrument_mode": "IW",
                    "sar:frequency_band": "C",
                    "sar:polarizations": ["VV", "VH"],
                    "sar:product_type": "RTC",
                    "sat:orbit_state": direction,
                    "sat:relative_orbit": orbit,
                    "grid:code": f"MGRS-{tile.tile}",
                }
                item = _item(
                    item_id,
                    when,
                    tile.grid(),
                    "sentinel-1-rtc",
                    properties,
                    assets,
                    projection=True,
                )
                scenes.append(SyntheticScene(item, tile, when, files, raw, properties))
    return scenes
