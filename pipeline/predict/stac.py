"""STAC metadata of a run's final maps: one Item per output COG, one self-contained Collection.

Parse, plan, then write: :func:`describe_cog` reads a COG's header (never its pixels) into a
frozen :class:`MapOutput`; :func:`output_item` is a pure function of that description and the
run's facts (name, period, legend), so it is tested without files; :func:`write_run_catalog`
lays every item out under one folder of the run store, atomically.

Each item carries

* ``id`` ``<run>-<role>`` and, since a map covers a period, ``start_datetime``/``end_datetime``
  (``datetime`` null): the first instant of the period's first day to the last of its last day,
  UTC;
* geometry and bbox in EPSG:4326: the grid's outline with every edge densified
  (:data:`EDGE_POINTS` points), so that a projected grid's curved edges stay inside the bbox.
  Grids that cross the antimeridian are not split (their bbox spans the long way round);
* the projection extension v2.0.0 (``proj:code`` or ``proj:wkt2`` when the CRS has no EPSG
  code, ``proj:shape`` [height, width], ``proj:transform`` the 6 affine coefficients,
  ``proj:bbox`` in the grid CRS);
* on the ``data`` asset, the raster extension v1.1.0 (``raster:bands``: nodata, data_type,
  spatial_resolution, unit/scale/offset where given) and, for a label map, the classification
  extension v2.0.0 (``classification:classes``: value, name, title, description, color_hint,
  pixel count and percentage when known, and the no-data value flagged ``nodata: true``);
* the processing extension (``processing:software`` = ``{"sitsflow": <version>}``);
* ``related`` links to the run's other output COGs, and an optional ``zarr`` asset (the map
  store the COG was made from).

Asset and link hrefs are whatever :class:`MapOutput` holds. For the catalog, give them as names
relative to the run store (``maps/labels.tif``): :func:`write_run_catalog` turns those into
hrefs relative to each item's JSON, so the folder stays valid wherever the store is copied.
"""

from __future__ import annotations

import json
import math
import posixpath
import re
import unicodedata
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, date, datetime, time
from pathlib import Path, PurePosixPath
from typing import Any

import numpy as np
import pyproj
import pystac
from matplotlib import colors as mcolors
from pystac.extensions.classification import Classification, ClassificationExtension
from pystac.extensions.projection import ProjectionExtension
from pystac.extensions.raster import DataType, RasterBand, RasterExtension

import pipeline
from pipeline.errors import InputDataError, OutputError
from pipeline.model import ClassInfo, GridSpec
from pipeline.storage import RunStore, is_url

__all__ = [
    "COLLECTION_FILE",
    "EDGE_POINTS",
    "PROCESSING_SCHEMA",
    "MapOutput",
    "describe_cog",
    "item_id",
    "output_item",
    "write_run_catalog",
]

PROCESSING_SCHEMA = "https://stac-extensions.github.io/processing/v1.2.0/schema.json"
#: Points per grid edge (corners included) in the EPSG:4326 outline.
EDGE_POINTS = 21
#: The collection's file name inside the catalog folder; item ``x`` lives at ``x/x.json``.
COLLECTION_FILE = "collection.json"

_ROLE_TITLES = {
    "labels": "class labels",
    "confidence": "confidence (probability of the winning class, percent)",
    "values": "predicted values",
}
_ROLE_UNITS = {"confidence": "%"}
_ID = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]*$")
_CLASS_NAME_BAD = re.compile(r"[^0-9A-Za-z_-]+")


@dataclass(frozen=True)
class MapOutput:
    """One output COG of a run, as its STAC item describes it.

    ``role`` is ``labels``, ``confidence``, ``values`` or ``probability_<code>``; ``href`` is
    where the COG is (a run-store-relative posix name for :func:`write_run_catalog`, or an
    absolute path / URL); ``nodata`` is the COG's no-data value (``NaN`` allowed, ``None`` for
    none). ``unit``/``scale``/``offset`` describe the stored values (physical = scale x stored +
    offset). ``zarr_href`` optionally names the Zarr map store the COG was made from.
    """

    role: str
    href: str
    grid: GridSpec
    dtype: str
    nodata: float | None
    unit: str | None = None
    scale: float | None = None
    offset: float | None = None
    title: str | None = None
    zarr_href: str | None = None


def describe_cog(
    path: str | Path,
    *,
    role: str,
    href: str,
    unit: str | None = None,
    zarr_href: str | None = None,
) -> MapOutput:
    """The :class:`MapOutput` of the COG at ``path`` (its header only: grid, type, no-data).

    ``href`` is what the item will point to (for the catalog: the store-relative name);
    ``unit`` defaults to ``%`` for confidence and probability maps, none otherwise.
    """
    from pipeline.predict.outputs import open_map

    with open_map(path) as src:
        if src.crs is None:
            raise InputDataError(
                f"the map {str(path)!r} has no CRS, so it has no place on Earth for STAC",
                fix="write the map with the CRS of its grid",
            )
        epsg = src.crs.to_epsg()
        crs = f"EPSG:{epsg}" if epsg is not None else src.crs.to_wkt()
        a, b, c, d, e, f = tuple(src.transform)[:6]
        grid = GridSpec(crs, (a, b, c, d, e, f), src.width, src.height)
        dtype = str(src.dtypes[0])
        nodata = None if src.nodata is None else float(src.nodata)
        scale = float(src.scales[0]) if src.scales and src.scales[0] not in (None, 1.0) else None
        offset = (
            float(src.offsets[0]) if src.offsets and src.offsets[0] not in (None, 0.0) else None
        )
    if unit is None and (role == "confidence" or role.startswith("probability_")):
        unit = "%"
    return MapOutput(
        role=role,
        href=href,
        grid=grid,
        dtype=dtype,
        nodata=nodata,
        unit=unit,
        scale=scale,
        offset=offset,
        zarr_href=zarr_href,
    )


def item_id(run_name: str, role: str) -> str:
    """``<run_name>-<role>``: the id of a run output's item (also its folder in the catalog)."""
    value = f"{run_name}-{role}"
    if not _ID.match(value) or ".." in value:
        raise OutputError(
            f"STAC item id {value!r} (run name {run_name!r}, output {role!r}) may hold only "
            "letters, digits, '.', '_' and '-', starting with a letter or digit",
            fix="rename the run (metadata.name) to letters, digits and '-'",
            field="name",
        )
    return value


# --------------------------------------------------------------------------------------------
# pure parts


def _crs(grid: GridSpec) -> pyproj.CRS:
    try:
        return pyproj.CRS.from_user_input(grid.crs)
    except pyproj.exceptions.CRSError:
        raise InputDataError(
            f"the map grid's CRS {grid.crs!r} is not a CRS pyproj understands",
            fix="give the grid an EPSG code ('EPSG:32631') or a WKT string",
        ) from None


def _outline(grid: GridSpec) -> list[tuple[float, float]]:
    """The grid's outline in lon/lat: a closed, counter-clockwise ring, edges densified."""
    left, bottom, right, top = grid.bounds
    steps = np.linspace(0.0, 1.0, EDGE_POINTS)[:-1]
    xs = np.concatenate(
        [
            np.full(steps.size, left),  # west edge, north to south
            left + (right - left) * steps,  # south edge, west to east
            np.full(steps.size, right),  # east edge, south to north
            right - (right - left) * steps,  # north edge, east to west
        ]
    )
    ys = np.concatenate(
        [
            top - (top - bottom) * steps,
            np.full(steps.size, bottom),
            bottom + (top - bottom) * steps,
            np.full(steps.size, top),
        ]
    )
    source = _crs(grid)
    wgs84 = pyproj.CRS.from_epsg(4326)
    if source != wgs84:
        transformer = pyproj.Transformer.from_crs(source, wgs84, always_xy=True)
        xs, ys = transformer.transform(xs, ys)
    if not (np.all(np.isfinite(xs)) and np.all(np.isfinite(ys))):
        raise InputDataError(
            f"the map grid (CRS {grid.crs!r}, bounds {grid.bounds}) does not map to longitude/"
            "latitude everywhere",
            fix="check the grid's CRS and transform",
        )
    ring = [(float(x), float(y)) for x, y in zip(xs, ys, strict=True)]
    return [*ring, ring[0]]


def _projection(grid: GridSpec) -> dict[str, Any]:
    crs = _crs(grid)
    epsg = crs.to_epsg()
    fields: dict[str, Any] = {
        "shape": [grid.height, grid.width],
        "transform": [float(v) for v in grid.transform],
        "bbox": [float(v) for v in grid.bounds],
    }
    if epsg is not None:
        fields["code"] = f"EPSG:{epsg}"
    else:
        fields["wkt2"] = crs.to_wkt()
    return fields


def _color_hint(info: ClassInfo) -> str:
    try:
        return mcolors.to_hex(info.color, keep_alpha=False)[1:].upper()
    except ValueError:
        raise InputDataError(
            f"class {info.code} ({info.name!r}) has colour {info.color!r}, which is not a colour",
            fix="use a hex colour such as '#1f78b4' or a matplotlib colour name",
            field="legend",
        ) from None


def _class_name(info: ClassInfo) -> str:
    """A machine-readable name (letters, digits, ``-``, ``_``) from the legend name."""
    ascii_name = unicodedata.normalize("NFKD", info.name).encode("ascii", "ignore").decode()
    name = _CLASS_NAME_BAD.sub("_", ascii_name).strip("_")
    return name or f"class_{info.code}"


def _nodata_value(nodata: float | None) -> float | str | None:
    if nodata is None:
        return None
    if math.isnan(nodata):
        return "nan"
    if math.isinf(nodata):
        return "inf" if nodata > 0 else "-inf"
    return int(nodata) if float(nodata).is_integer() else float(nodata)


def _classes(
    legend: Sequence[ClassInfo], nodata: float | None, counts: Mapping[int, int] | None
) -> list[Classification]:
    seen: dict[int, ClassInfo] = {}
    for info in legend:
        if info.code in seen:
            raise InputDataError(
                f"the legend lists class code {info.code} twice ({seen[info.code].name!r} and "
                f"{info.name!r})",
                fix="give each class code one legend entry",
                field="legend",
            )
        seen[info.code] = info
    if nodata is not None and not math.isnan(nodata) and int(nodata) in seen:
        raise InputDataError(
            f"the label map's no-data value {nodata:g} is also the code of class "
            f"{seen[int(nodata)].name!r}",
            fix="write the label map with a no-data value that is not a class code",
        )
    total = sum(int(v) for v in counts.values()) if counts else 0
    classes = []
    for info in legend:
        count = None if counts is None else int(counts.get(info.code, 0))
        classes.append(
            Classification.create(
                value=int(info.code),
                name=_class_name(info),
                title=info.name,
                description=info.name,
                color_hint=_color_hint(info),
                count=count,
                percentage=(100.0 * count / total) if count is not None and total else None,
            )
        )
    if nodata is not None and not math.isnan(nodata) and float(nodata).is_integer():
        classes.append(
            Classification.create(value=int(nodata), name="nodata", title="no data", nodata=True)
        )
    return classes


def output_item(
    output: MapOutput,
    *,
    run_name: str,
    period: tuple[date, date],
    legend: Sequence[ClassInfo] = (),
    others: Sequence[MapOutput] = (),
    class_counts: Mapping[int, int] | None = None,
    lineage: str | None = None,
    created: datetime | None = None,
    software_version: str = pipeline.__version__,
) -> pystac.Item:
    """The STAC item of one output COG (pure: reads no file; see the module docstring).

    ``period`` is the run's (start, end) dates, both inclusive. ``legend`` is required for a
    ``labels`` output (its classes become ``classification:classes``) and ignored for others;
    ``class_counts`` (pixels per class code, e.g. from
    :func:`pipeline.validate.mapped_area.count_map_classes`) adds each class's count and
    percentage. ``others`` are the run's other outputs, linked as ``related``. ``created`` is
    written only when given, so the same inputs give the same item.
    """
    start, end = period
    if end < start:
        raise InputDataError(
            f"the period ends ({end}) before it starts ({start})",
            fix="give the run's period as (start, end)",
            field="period",
        )
    if output.role == "labels" and not legend:
        raise InputDataError(
            "a label map's STAC item needs the legend (its classification classes)",
            fix="pass the run's legend",
            field="legend",
        )
    ring = _outline(output.grid)
    lons = [x for x, _ in ring]
    lats = [y for _, y in ring]
    properties: dict[str, Any] = {
        "title": f"{run_name}: {output.title or _ROLE_TITLES.get(output.role, output.role)}",
        "processing:software": {"sitsflow": software_version},
    }
    if lineage:
        properties["processing:lineage"] = lineage
    if created is not None:
        properties["created"] = pystac.utils.datetime_to_str(created.astimezone(UTC))
    item = pystac.Item(
        id=item_id(run_name, output.role),
        geometry={"type": "Polygon", "coordinates": [[list(p) for p in ring]]},
        bbox=[min(lons), min(lats), max(lons), max(lats)],
        datetime=None,
        start_datetime=datetime.combine(start, time.min, tzinfo=UTC),
        end_datetime=datetime.combine(end, time(23, 59, 59), tzinfo=UTC),
        properties=properties,
        stac_extensions=[PROCESSING_SCHEMA],
    )
    ProjectionExtension.ext(item, add_if_missing=True).apply(**_projection(output.grid))

    asset = pystac.Asset(
        href=output.href,
        media_type=pystac.MediaType.COG,
        roles=["data"],
        title=output.title or _ROLE_TITLES.get(output.role, output.role),
    )
    item.add_asset("data", asset)
    try:
        data_type = DataType(np.dtype(output.dtype).name)
    except (TypeError, ValueError):
        data_type = DataType.OTHER
    band = RasterBand.create(
        nodata=_nodata_value(output.nodata),  # type: ignore[arg-type]
        data_type=data_type,
        spatial_resolution=float(output.grid.resolution[0]),
        unit=output.unit or _ROLE_UNITS.get(output.role),
        scale=output.scale,
        offset=output.offset,
    )
    RasterExtension.ext(asset, add_if_missing=True).apply([band])
    if output.role.startswith("labels"):  # raw and post-processed label maps
        ClassificationExtension.ext(asset, add_if_missing=True).apply(
            classes=_classes(legend, output.nodata, class_counts)
        )
    if output.zarr_href:
        item.add_asset(
            "zarr",
            pystac.Asset(
                href=output.zarr_href,
                media_type=pystac.MediaType.VND_ZARR,
                roles=["data", "source"],
                title="Zarr map store the COG was written from",
            ),
        )
    for other in others:
        if other.role == output.role:
            continue
        item.add_link(
            pystac.Link(
                rel="related",
                target=other.href,
                media_type=pystac.MediaType.COG,
                title=f"{other.role} map",
            )
        )
    return item


# --------------------------------------------------------------------------------------------
# the catalog


def _relative_href(href: str, folder: str) -> str:
    """``href`` (a store-relative name) relative to ``folder`` (also store-relative); absolute
    paths and URLs are kept."""
    if is_url(href) or PurePosixPath(href).is_absolute() or Path(href).is_absolute():
        return href
    return posixpath.relpath(href, folder)


def _previous_license(store: RunStore, name: str) -> tuple[str, str | None]:
    """The licence and licence link of the collection ``name`` in ``store``, else 'other'."""
    if not store.exists(name):
        return "other", None
    try:
        with store.fetch(name) as local:
            doc = json.loads(Path(local).read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return "other", None
    links = [k.get("href") for k in doc.get("links", []) if k.get("rel") == "license"]
    return str(doc.get("license") or "other"), (links[0] if links else None)


def write_run_catalog(
    store: RunStore,
    relative: str,
    items: Sequence[pystac.Item],
    *,
    run_name: str,
    description: str | None = None,
    license: str | None = None,
    license_url: str | None = None,
) -> str:
    """Write ``items`` and a Collection holding them under ``relative`` in ``store``, as a
    self-contained catalog (relative hrefs only); return the collection's store-relative name.

    ``license`` (SPDX id, 'other'...) and ``license_url`` (a ``license`` link): when not given,
    those of the collection already there are kept (the products rewrite the mosaic's
    collection), else 'other'.

    Layout: ``<relative>/collection.json`` and ``<relative>/<item id>/<item id>.json``. Asset
    and link hrefs given as store-relative names become relative to each item's JSON. The
    folder is staged and published in one step (:meth:`RunStore.publish`): a reader sees the
    previous catalog or the whole new one, never a mix.
    """
    if not items:
        raise OutputError("no STAC items to write", fix="pass the items of the run's outputs")
    ids = [item.id for item in items]
    if len(set(ids)) != len(ids):
        raise OutputError(
            f"STAC item ids repeat: {sorted(i for i in set(ids) if ids.count(i) > 1)}",
            fix="give each output its own role",
        )
    catalog_dir = PurePosixPath(relative).as_posix().strip("/")
    if catalog_dir in ("", "."):
        raise OutputError(
            "the STAC catalog needs its own folder in the run store, not the store's root",
            fix="pass a folder name such as 'stac'",
        )
    lons = [v for item in items if item.bbox for v in (item.bbox[0], item.bbox[2])]
    lats = [v for item in items if item.bbox for v in (item.bbox[1], item.bbox[3])]
    times = [
        t
        for item in items
        for t in (
            item.common_metadata.start_datetime or item.datetime,
            item.common_metadata.end_datetime or item.datetime,
        )
        if t is not None
    ]
    interval: list[datetime | None] = [min(times), max(times)] if times else [None, None]
    if license is None:
        license, license_url = _previous_license(store, f"{catalog_dir}/{COLLECTION_FILE}")
    collection = pystac.Collection(
        id=run_name,
        title=f"sitsflow run {run_name}",
        description=description or f"Maps of the sitsflow run {run_name!r}.",
        extent=pystac.Extent(
            pystac.SpatialExtent([[min(lons), min(lats), max(lons), max(lats)]]),
            pystac.TemporalExtent([interval]),
        ),
        license=license,
        catalog_type=pystac.CatalogType.SELF_CONTAINED,
    )
    if license_url:
        collection.add_link(pystac.Link("license", license_url, title=f"licence: {license}"))
    for original in items:
        item = original.clone()
        folder = f"{catalog_dir}/{item.id}"
        for asset in item.assets.values():
            asset.href = _relative_href(asset.href, folder)
        for link in item.links:
            if link.rel == "related" and isinstance(link.target, str):
                link.target = _relative_href(link.target, folder)
        collection.add_item(item)
    with store.publish(catalog_dir) as staging:
        staging.mkdir(parents=True)
        # The trailing slash: pystac takes a name with a dot (".stac.tmp-1a2b") for a file.
        collection.normalize_hrefs(staging.as_posix() + "/")
        collection.save(pystac.CatalogType.SELF_CONTAINED)
    return f"{catalog_dir}/{COLLECTION_FILE}"
