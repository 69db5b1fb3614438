"""Index an on-disk archive of THEIA products (the tree iota2 users have) into STAC items.

Three product layouts are recognised by their folder names (``LAYOUTS``)::

    SENTINEL2A_20180105-105107-458_L2A_T31TCJ_C_V2-2/          THEIA / MUSCATE Sentinel-2 L2A
        ..._FRE_B2.tif ... _FRE_B12.tif, MASKS/..._CLM_R1.tif, _SAT_R1, _EDG_R1 (R1 and R2)
    SENTINEL2X_20180415-000000-000_L3A_T31TCJ_C_V1-1/          THEIA Sentinel-2 L3A (WASP)
        ..._FRC_B2.tif ... _FRC_B12.tif, MASKS/..._FLG_R1.tif (R1 and R2)
    LANDSAT8_OLITIRS_XS_20160330_N2A_France-MetropoleD0005H0003/    historical THEIA Landsat 8
        ..._ORTHO_SURF_CORR_PENTE_<site><tile>.TIF (7 bands), MASK/..._NUA, _SAT, _DIV, _NODATA.TIF

The product folders may sit anywhere below the root (iota2 puts them under one folder per tile).
Asset keys follow simplestac's THEIA format (``B02``..``B12``, ``B8A``, ``CLM_R1``...), so items
made by either tool work with the same profiles. Only file headers are read: each asset gets its
own projection fields (10 m and 20 m files differ), the item gets those of its finest band.
"""

from __future__ import annotations

import re
import warnings
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pystac
import rasterio
from pystac.extensions.projection import SCHEMA_URI as PROJECTION_SCHEMA
from rasterio.errors import NotGeoreferencedWarning, RasterioIOError
from rasterio.warp import transform_geom

from pipeline.errors import CatalogError

_GRID_SCHEMA = "https://stac-extensions.github.io/grid/v1.1.0/schema.json"
_S2_BAND_IDS = ("B02", "B03", "B04", "B05", "B06", "B07", "B08", "B8A", "B11", "B12")


@dataclass(frozen=True)
class AssetPattern:
    """One file of a product: its asset key and how its name ends (after the product id)."""

    key: str
    name: str  # regex of the whole file name; {id} and the folder's named groups are filled in
    folder: str = ""  # sub-folder of the product ("MASKS")
    roles: tuple[str, ...] = ("data",)
    data: bool = False  # a reflectance file (at least one must exist)


@dataclass(frozen=True)
class ProductLayout:
    """How a product family is named on disk, and the collection its items go to."""

    name: str
    collection: str
    folder: re.Pattern[str]  # named groups: platform, date, time (optional), tile
    datetime_format: str
    assets: tuple[AssetPattern, ...]
    constellation: str
    level: str
    title: str

    def datetime_of(self, match: re.Match[str]) -> datetime:
        text = match.group("date") + (match.groupdict().get("time") or "")
        return datetime.strptime(text, self.datetime_format).replace(tzinfo=UTC)


def _theia_s2_assets(product: str, masks: Sequence[str]) -> tuple[AssetPattern, ...]:
    bands = tuple(
        AssetPattern(
            band,
            rf"{{id}}_{product}_B{band[1:].lstrip('0')}\.tif",
            roles=("reflectance",),
            data=True,
        )
        for band in _S2_BAND_IDS
    )
    quality = tuple(
        AssetPattern(f"{mask}_{res}", rf"{{id}}_{mask}_{res}\.tif", folder="MASKS")
        for mask in masks
        for res in ("R1", "R2")
    )
    return bands + quality


LAYOUTS: tuple[ProductLayout, ...] = (
    ProductLayout(
        name="sentinel2-l2a-theia",
        collection="sentinel2-l2a-theia",
        folder=re.compile(
            r"^(?P<platform>SENTINEL2[A-D])_(?P<date>\d{8})-(?P<time>\d{6}-\d{3})_L2A_"
            r"T(?P<tile>\d{2}[A-Z]{3})_[A-Z]_V(?P<version>\d+-\d+)$"
        ),
        datetime_format="%Y%m%d%H%M%S-%f",
        assets=_theia_s2_assets("FRE", ("CLM", "SAT", "EDG", "MG2", "IAB")),
        constellation="sentinel-2",
        level="L2A",
        title="THEIA Sentinel-2 L2A (MAJA)",
    ),
    ProductLayout(
        name="sentinel2-l3a-theia",
        collection="sentinel2-l3a-theia",
        folder=re.compile(
            r"^(?P<platform>SENTINEL2[A-DX])_(?P<date>\d{8})-(?P<time>\d{6}-\d{3})_L3A_"
            r"T(?P<tile>\d{2}[A-Z]{3})_[A-Z]_V(?P<version>\d+-\d+)$"
        ),
        datetime_format="%Y%m%d%H%M%S-%f",
        assets=_theia_s2_assets("FRC", ("FLG", "WGT", "DTS")),
        constellation="sentinel-2",
        level="L3A",
        title="THEIA Sentinel-2 L3A monthly syntheses (WASP)",
    ),
    ProductLayout(
        name="landsat8-n2a-theia",
        collection="landsat8-n2a-theia",
        folder=re.compile(
            r"^(?P<platform>LANDSAT8)_OLITIRS_XS_(?P<date>\d{8})_N2A_"
            r"(?P<site>.+?)(?P<tile>D\d{4}H\d{4})$"
        ),
        datetime_format="%Y%m%d",
        assets=(
            *(
                AssetPattern(
                    f"ORTHO_SURF_CORR_{kind}",
                    rf"{{platform}}_OLITIRS_XS_{{date}}_N2A_ORTHO_SURF_CORR_{kind}_{{site}}{{tile}}"
                    r"\.TIF",
                    roles=("reflectance",),
                    data=True,
                )
                for kind in ("PENTE", "ENV")
            ),
            *(
                AssetPattern(m, rf"{{id}}_{m}\.TIF", folder="MASK")
                for m in ("NUA", "SAT", "DIV", "NODATA")
            ),
        ),
        constellation="landsat",
        level="L2A",
        title="THEIA historical Landsat 8 L2A (N2A)",
    ),
)


def _layout_of(folder_name: str) -> tuple[ProductLayout, re.Match[str]] | None:
    for layout in LAYOUTS:
        match = layout.folder.match(folder_name)
        if match:
            return layout, match
    return None


_STAC_FILES = ("catalog.json", "collection.json")


def find_products(root: Path) -> Iterator[tuple[Path, ProductLayout, re.Match[str]]]:
    """Product folders below ``root`` (sorted), without descending into a product.

    Folders holding a STAC catalog (e.g. one written by ``write_archive_catalog`` inside the
    archive, whose item folders bear the products' names) are skipped.
    """
    for path in sorted(p for p in root.iterdir() if p.is_dir()):
        if any((path / name).is_file() for name in _STAC_FILES):
            continue
        found = _layout_of(path.name)
        if found is not None:
            yield path, *found
        else:
            yield from find_products(path)


def _files_of(product: Path, layout: ProductLayout, match: re.Match[str]) -> dict[str, Path]:
    """Asset key -> file for the files of the layout found in the product folder."""
    values = {k: re.escape(v) for k, v in match.groupdict().items() if v is not None}
    values["id"] = re.escape(product.name)
    out: dict[str, Path] = {}
    for pattern in layout.assets:
        folder = product / pattern.folder if pattern.folder else product
        if not folder.is_dir():
            continue
        regex = re.compile(pattern.name.format(**values) + "$")
        matches = sorted(f for f in folder.iterdir() if f.is_file() and regex.match(f.name))
        if matches:
            out[pattern.key] = matches[0]
    return out


def _asset_projection(path: Path, item_id: str, key: str) -> dict[str, Any]:
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", NotGeoreferencedWarning)  # reported below, clearer
            src = rasterio.open(path)
        with src:
            crs, transform, shape, count = src.crs, src.transform, src.shape, src.count
            bounds = src.bounds
    except RasterioIOError as exc:
        raise CatalogError(
            f"file {str(path)!r} (asset {key!r} of item {item_id!r}) cannot be read ({exc})",
            fix="replace the corrupt file (download the product again) or remove the product "
            "folder from the archive",
        ) from None
    if crs is None:
        raise CatalogError(
            f"file {str(path)!r} (asset {key!r} of item {item_id!r}) has no coordinate reference "
            "system, so the item would have no projection metadata",
            fix="replace the file with the provider's original, or assign its CRS with "
            "gdal_edit.py -a_srs EPSG:<code>",
        )
    epsg = crs.to_epsg()
    return {
        "proj:code": f"EPSG:{epsg}" if epsg else None,
        "proj:wkt2": None if epsg else crs.to_wkt(),
        "proj:shape": [int(shape[0]), int(shape[1])],
        "proj:transform": [float(v) for v in tuple(transform)[:6]],
        "proj:bbox": [float(v) for v in bounds],
        "_count": count,
        "_crs": crs,
    }


def _footprint(projection: dict[str, Any]) -> dict[str, Any]:
    """The grid's outline in WGS84 (edges densified so that the reprojected polygon is faithful)."""
    left, bottom, right, top = projection["proj:bbox"]
    steps = 8
    ring = (
        [(left + (right - left) * i / steps, top) for i in range(steps)]
        + [(right, top - (top - bottom) * i / steps) for i in range(steps)]
        + [(right - (right - left) * i / steps, bottom) for i in range(steps)]
        + [(left, bottom + (top - bottom) * i / steps) for i in range(steps)]
    )
    ring.append(ring[0])
    geometry = transform_geom(
        projection["_crs"], "EPSG:4326", {"type": "Polygon", "coordinates": [ring]}
    )
    return dict(geometry)


def _platform(code: str) -> str | None:
    """SENTINEL2A -> sentinel-2a, LANDSAT8 -> landsat-8; None for syntheses of several."""
    match = re.match(r"^([A-Z]+?)(\d)([A-D])?$", code)
    if match is None:
        return None
    name, number, unit = match.groups()
    return f"{name.lower()}-{number}{(unit or '').lower()}"


def product_item(product: Path, layout: ProductLayout, match: re.Match[str]) -> pystac.Item:
    """The STAC item of one product folder (file headers are read, pixels are not)."""
    item_id = product.name
    files = _files_of(product, layout, match)
    data_keys = [p.key for p in layout.assets if p.data and p.key in files]
    if not data_keys:
        expected = ", ".join(p.name for p in layout.assets if p.data)
        raise CatalogError(
            f"product {item_id!r} ({str(product)!r}) has no reflectance file (looked for "
            f"{expected})",
            fix="download the product again or remove its folder from the archive",
        )
    projections = {key: _asset_projection(path, item_id, key) for key, path in files.items()}
    reference = min(
        (projections[k] for k in data_keys),
        key=lambda p: abs(p["proj:transform"][0] * p["proj:transform"][4]),
    )
    geometry = _footprint(reference)
    xs = [x for x, _ in geometry["coordinates"][0]]
    ys = [y for _, y in geometry["coordinates"][0]]
    tile = match.group("tile")
    properties: dict[str, Any] = {
        "constellation": layout.constellation,
        "processing:level": layout.level,
        "grid:code": f"MGRS-{tile}" if layout.constellation == "sentinel-2" else f"THEIA-{tile}",
        "theia:product_type": layout.name,
        **{k: v for k, v in reference.items() if not k.startswith("_") and v is not None},
    }
    platform = _platform(match.group("platform"))
    if platform and not platform.endswith("x"):
        properties["platform"] = platform
    version = match.groupdict().get("version")
    if version:
        properties["theia:product_version"] = version.replace("-", ".")
    item = pystac.Item(
        id=item_id,
        geometry=geometry,
        bbox=[min(xs), min(ys), max(xs), max(ys)],
        datetime=layout.datetime_of(match),
        properties=properties,
        stac_extensions=[PROJECTION_SCHEMA, _GRID_SCHEMA],
        collection=layout.collection,
    )
    roles = {p.key: p.roles for p in layout.assets}
    for key, path in files.items():
        proj = {
            k: v for k, v in projections[key].items() if not k.startswith("_") and v is not None
        }
        item.add_asset(
            key,
            pystac.Asset(
                href=str(path.resolve()),
                media_type=pystac.MediaType.GEOTIFF,
                roles=list(roles[key]),
                extra_fields=proj,
            ),
        )
    return item


def index_archive(root: str | Path) -> list[pystac.Item]:
    """Items of every THEIA product below ``root``, sorted by collection, time and id."""
    root = Path(root)
    if not root.is_dir():
        raise CatalogError(
            f"archive folder {str(root)!r} does not exist or is not a folder",
            fix="point to the folder that holds the product folders (or their tile folders)",
        )
    items = [product_item(path, layout, match) for path, layout, match in find_products(root)]
    if not items:
        examples = "; ".join(layout.folder.pattern for layout in LAYOUTS)
        raise CatalogError(
            f"no THEIA product folder found below {str(root)!r} (folder names must match one "
            f"of: {examples})",
            fix="point to the archive root; unzip the downloaded products first",
        )
    items.sort(key=lambda it: (it.collection_id or "", it.datetime or datetime.min, it.id))
    return items


def write_archive_catalog(root: str | Path, destination: str | Path) -> Path:
    """Index ``root`` and write a static STAC catalog (one collection per layout) to
    ``destination``; returns the path of its catalog.json. Asset hrefs stay absolute."""
    items = index_archive(root)
    destination = Path(destination)
    catalog = pystac.Catalog(
        id="theia-archive",
        description=f"THEIA products indexed from {Path(root).resolve()}",
    )
    by_collection: dict[str, list[pystac.Item]] = {}
    for item in items:
        by_collection.setdefault(item.collection_id or "", []).append(item)
    titles = {layout.collection: layout.title for layout in LAYOUTS}
    for collection_id, members in by_collection.items():
        times = [it.datetime for it in members if it.datetime is not None]
        boxes = [it.bbox for it in members if it.bbox is not None]
        extent = pystac.Extent(
            pystac.SpatialExtent(
                [
                    [
                        min(b[0] for b in boxes),
                        min(b[1] for b in boxes),
                        max(b[2] for b in boxes),
                        max(b[3] for b in boxes),
                    ]
                ]
            ),
            pystac.TemporalExtent([[min(times), max(times)]]),
        )
        collection = pystac.Collection(
            id=collection_id,
            description=titles.get(collection_id, collection_id),
            extent=extent,
            title=titles.get(collection_id),
        )
        for item in members:
            collection.add_item(item)
        catalog.add_child(collection)
    catalog.normalize_hrefs(str(destination.resolve()))
    catalog.save(catalog_type=pystac.CatalogType.ABSOLUTE_PUBLISHED)
    return destination / "catalog.json"
