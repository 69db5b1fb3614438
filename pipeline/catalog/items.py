"""STAC items, whatever catalog they came from: filter them, parse them, save and reload them.

Every catalog kind (static catalog, item collection, STAC API) ends in the same steps: keep the
items that match the catalog spec and the period, parse them into Acquisitions, and save the
exact list with the run so that a repeated run uses the same inputs without asking again.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from datetime import UTC, date, datetime, time
from pathlib import Path
from typing import Any

import pystac
import shapely
import shapely.geometry
from pyproj import CRS
from pyproj.exceptions import CRSError

from pipeline.catalog.config import CatalogConfig
from pipeline.catalog.sensors import SensorProfile
from pipeline.catalog.tiles import item_tile, tiles_footprint
from pipeline.errors import CatalogError
from pipeline.model import Acquisition, GridSpec, section_json

# The key under which a saved item list records what produced it (a GeoJSON foreign member).
SAVED_KEY = "sitsflow:discovery"
_SAVED_FORMAT = 1


def item_datetime(item: pystac.Item) -> datetime:
    """The item's time (the middle of its range when it has only start/end), timezone-aware."""
    when = item.datetime
    if when is None:
        start = item.common_metadata.start_datetime
        end = item.common_metadata.end_datetime
        if start is None or end is None:
            raise CatalogError(
                f"item {item.id!r} has no datetime", fix="give the item a datetime property"
            )
        when = start + (end - start) / 2
    if when.tzinfo is None:
        when = when.replace(tzinfo=UTC)
    return when


def _crs_from(fields: dict[str, Any], item_id: str) -> str | None:
    """The CRS of the projection extension as a string GDAL and pyproj read, or None.

    ``proj:code`` / ``proj:epsg`` are kept as written (they enter unit digests). A CRS given only
    as ``proj:wkt2`` or ``proj:projjson`` (MODIS sinusoidal has no EPSG code) becomes its
    authority code when it is exactly one (so it matches items that give the code), else WKT2.
    """
    code = fields.get("proj:code")
    if code is None and fields.get("proj:epsg") is not None:
        code = f"EPSG:{fields['proj:epsg']}"
    if code is not None:
        return str(code)
    for key in ("proj:wkt2", "proj:projjson"):
        given = fields.get(key)
        if given is None:
            continue
        try:
            crs = (
                CRS.from_json_dict(given) if isinstance(given, dict) else CRS.from_user_input(given)
            )
        except (CRSError, TypeError, ValueError) as exc:
            raise CatalogError(
                f"item {item_id!r} has a {key} that is not a valid CRS ({exc})",
                fix=f"correct the item's {key}, or give proj:code (e.g. 'EPSG:32631')",
            ) from None
        authority = crs.to_authority(min_confidence=100)
        return f"{authority[0]}:{authority[1]}" if authority else str(crs.to_wkt())
    return None


def _grid_from(fields: dict[str, Any], item_id: str) -> GridSpec | None:
    crs = _crs_from(fields, item_id)
    transform = fields.get("proj:transform")
    shape = fields.get("proj:shape")
    if crs is None or transform is None or shape is None:
        return None
    return GridSpec(
        crs=crs,
        transform=tuple(float(v) for v in transform[:6]),  # type: ignore[arg-type]
        width=int(shape[1]),
        height=int(shape[0]),
    )


def native_grid(item: pystac.Item, asset_keys: Sequence[str] = ()) -> GridSpec | None:
    """The item's grid from the projection extension, or None when it has none.

    The CRS comes from ``proj:code`` (or ``proj:epsg``), else ``proj:wkt2``, else
    ``proj:projjson``; the grid needs ``proj:transform`` and ``proj:shape`` too.

    Asset-level proj fields override the item's (Earth Search puts proj:shape and proj:transform
    on each asset); with several band resolutions the finest grid wins, the others are resampled.
    """
    props: dict[str, Any] = item.properties
    grids = []
    for key in asset_keys:
        asset = item.assets.get(key)
        if asset is not None:
            grid = _grid_from({**props, **asset.extra_fields}, item.id)
            if grid is not None:
                grids.append(grid)
    if grids:
        return min(grids, key=lambda g: (g.resolution[0] * g.resolution[1], g.crs))
    return _grid_from(props, item.id)


def parse_item(item: pystac.Item, profile: SensorProfile, *, field: str) -> Acquisition:
    """Turn a STAC item into an Acquisition holding only the assets the profile reads.

    A missing asset or an empty href is a CatalogError naming the item and the asset.
    """
    hrefs = {key: asset.get_absolute_href() or asset.href for key, asset in item.assets.items()}
    return Acquisition(
        item_id=item.id,
        sensor=profile.name,
        datetime=item_datetime(item),
        assets=profile.asset_refs(item.id, hrefs, field=field),
        grid=native_grid(item, profile.band_item_keys(item.assets)),
        band_offsets=profile.item_offsets(item.id, item.properties, field=field),
    )


def in_period(when: datetime, start: date, end: date) -> bool:
    first = datetime.combine(start, time.min, tzinfo=UTC)
    last = datetime.combine(end, time.max, tzinfo=UTC)
    return first <= when <= last


def period_interval(start: date, end: date) -> str:
    """The STAC datetime interval covering whole days ``start`` .. ``end``."""
    return f"{start.isoformat()}T00:00:00Z/{end.isoformat()}T23:59:59.999999Z"


def search_area(spec: CatalogConfig) -> dict[str, Any] | None:
    """The area asked for as GeoJSON (WGS84): intersects, else bbox, else the tiles' footprints."""
    if spec.intersects is not None:
        return spec.intersects
    if spec.bbox is not None:
        return dict(shapely.geometry.mapping(shapely.box(*spec.bbox)))
    if spec.tiles:
        return tiles_footprint(list(spec.tiles))
    return None


@dataclass(frozen=True)
class ItemFilter:
    """The per-item rules of a catalog spec, for items no server has filtered (or to re-check)."""

    spec: CatalogConfig
    start: date
    end: date
    area: shapely.Geometry | None = None

    @classmethod
    def of(cls, spec: CatalogConfig, start: date, end: date, *, spatial: bool = True) -> ItemFilter:
        """``spatial=False`` when a server already selected by area. Tiles are matched by id."""
        area = search_area(spec) if spatial and not spec.tiles else None
        return cls(spec, start, end, shapely.geometry.shape(area) if area else None)

    def keeps(self, item: pystac.Item) -> bool:
        spec = self.spec
        if spec.collections and item.collection_id not in spec.collections:
            return False
        if not in_period(item_datetime(item), self.start, self.end):
            return False
        if spec.tiles and item_tile(item, spec.tile_property) not in spec.tiles:
            return False
        if spec.max_cloud_cover is not None:
            cover = item.properties.get(spec.cloud_cover_property)
            if isinstance(cover, int | float) and cover > spec.max_cloud_cover:
                return False
        if self.area is not None:
            if item.geometry is None:
                return False
            return bool(self.area.intersects(shapely.geometry.shape(item.geometry)))
        return True


def sort_and_dedupe(items: Iterable[pystac.Item]) -> list[pystac.Item]:
    """Items by time then id, each (collection, id) once (APIs may repeat one across pages)."""
    unique: dict[tuple[str | None, str], pystac.Item] = {}
    for item in items:
        unique.setdefault((item.collection_id, item.id), item)
    return sorted(unique.values(), key=lambda it: (item_datetime(it), it.id))


# --- the saved item list ---------------------------------------------------------------------


def discovery_fingerprint(spec: CatalogConfig, start: date, end: date) -> str:
    """A hash of everything that decides which items discovery finds: the catalog spec and period.

    Request settings (timeouts, retries, page size) do not change the result and are left out,
    so tuning them does not force a new search.
    """
    unused = {"timeout_s", "retries", "backoff_s", "page_size", "headers_from_env"}
    decisive = {k: v for k, v in section_json(spec).items() if k not in unused}
    text = json.dumps(
        {"catalog": decisive, "period": [start.isoformat(), end.isoformat()]}, sort_keys=True
    )
    return hashlib.sha256(text.encode()).hexdigest()


def save_items(items: Sequence[pystac.Item], path: Path, *, fingerprint: str | None = None) -> None:
    """Save the resolved items as an ItemCollection with absolute asset hrefs.

    ``fingerprint`` (from ``discovery_fingerprint``) is stored with them: a later discovery with
    the same catalog spec and period reuses this list instead of asking the catalog again.
    """
    from pipeline.storage import write_text_atomic

    features = []
    for item in items:
        d = item.to_dict(include_self_link=False, transform_hrefs=False)
        for key, asset in item.assets.items():
            d["assets"][key]["href"] = asset.get_absolute_href() or asset.href
        d["links"] = []
        features.append(d)
    doc: dict[str, Any] = {"type": "FeatureCollection", "features": features}
    if fingerprint is not None:
        doc[SAVED_KEY] = {"format": _SAVED_FORMAT, "fingerprint": fingerprint}
    write_text_atomic(path, json.dumps(doc, indent=1, sort_keys=True, default=str))


@dataclass(frozen=True)
class SavedItems:
    items: list[pystac.Item]
    fingerprint: str | None


def load_saved_items(path: Path) -> SavedItems:
    """Read an item list written by ``save_items``; errors name the file and say how to recover."""
    fix = f"delete {str(path)!r} to discover the items again"
    try:
        doc = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise CatalogError(
            f"the saved item list {str(path)!r} cannot be read ({exc})", fix=fix
        ) from None
    if not isinstance(doc, dict) or not isinstance(doc.get("features"), list):
        raise CatalogError(
            f"the saved item list {str(path)!r} is not a FeatureCollection of STAC items", fix=fix
        )
    items = items_from_features(doc["features"], source=str(path), fix=fix)
    meta = doc.get(SAVED_KEY)
    fingerprint = meta.get("fingerprint") if isinstance(meta, dict) else None
    return SavedItems(items, fingerprint if isinstance(fingerprint, str) else None)


def items_from_features(
    features: Sequence[Any], *, source: str, fix: str, field: str | None = None
) -> list[pystac.Item]:
    """Parse GeoJSON features into items; a bad one is named by its id or position."""
    items = []
    for i, feature in enumerate(features):
        name = feature.get("id") if isinstance(feature, dict) else None
        label = f"item {name!r}" if name else f"feature #{i}"
        try:
            if not isinstance(feature, dict) or feature.get("type") != "Feature":
                raise ValueError("it is not a GeoJSON Feature")
            items.append(pystac.Item.from_dict(feature, preserve_dict=False))
        except (ValueError, TypeError, KeyError, AttributeError, pystac.STACError) as exc:
            raise CatalogError(
                f"{label} of {source} is not a valid STAC item ({type(exc).__name__}: {exc})",
                fix=fix,
                field=field,
            ) from None
    return items


def collection_licenses(url: str) -> set[tuple[str, str | None]]:
    """The (licence, licence link) of every collection of a static catalog (or of a
    collection.json itself); empty when the file is not a catalog or cannot be read. The run's
    STAC collection takes its licence from these when they all agree."""
    try:
        root = pystac.read_file(url)
    except Exception:  # any reader failure means "no licence known": the caller falls back
        return set()
    if isinstance(root, pystac.Collection):
        collections = [root]
    elif isinstance(root, pystac.Catalog):
        collections = list(root.get_all_collections())
    else:
        return set()
    found = set()
    for collection in collections:
        link = collection.get_single_link("license")
        found.add((str(collection.license), link.get_absolute_href() if link else None))
    return found
