"""Static STAC catalogs and collections: read them with pystac and parse items into Acquisitions."""

from __future__ import annotations

import json
from collections.abc import Iterable, Sequence
from datetime import UTC, date, datetime, time
from pathlib import Path
from typing import Any

import pystac

from pipeline.catalog.sensors import SensorProfile
from pipeline.errors import CatalogError
from pipeline.manifest import CatalogSpec
from pipeline.model import Acquisition, AssetRef, GridSpec


def open_catalog(spec: CatalogSpec, *, field: str) -> pystac.Catalog:
    """Open a static catalog or collection, with errors that name the URL and the field."""
    url = spec.url
    is_local = "://" not in url
    if is_local and not Path(url).exists():
        raise CatalogError(
            f"catalog {url!r} does not exist",
            fix="point the url to a catalog.json or collection.json (relative paths are "
            "relative to the manifest)",
            field=field,
        )
    if is_local and Path(url).is_dir():
        raise CatalogError(
            f"catalog {url!r} is a folder",
            fix=f"point the url to the catalog file inside it, e.g. {url.rstrip('/')}/catalog.json",
            field=field,
        )
    try:
        obj = pystac.read_file(url)
    except (json.JSONDecodeError, UnicodeDecodeError):
        raise CatalogError(
            f"catalog {url!r} is not JSON", fix="point the url to a STAC catalog.json", field=field
        ) from None
    except pystac.STACError as exc:
        raise CatalogError(
            f"catalog {url!r} is not a valid STAC document ({exc})",
            fix="point the url to a STAC catalog or collection",
            field=field,
        ) from None
    except OSError as exc:
        raise CatalogError(
            f"catalog {url!r} cannot be read ({exc})",
            fix="check the URL and that the storage is reachable",
            field=field,
        ) from None
    if not isinstance(obj, pystac.Catalog):
        raise CatalogError(
            f"{url!r} is a STAC {type(obj).__name__}, not a catalog or collection",
            fix="point the url to the catalog.json or collection.json that contains the items",
            field=field,
        )
    return obj


def _item_datetime(item: pystac.Item) -> datetime:
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


def _native_grid(item: pystac.Item) -> GridSpec | None:
    """The item's grid from the projection extension, or None when it has none."""
    props: dict[str, Any] = item.properties
    code = props.get("proj:code")
    if code is None and props.get("proj:epsg") is not None:
        code = f"EPSG:{props['proj:epsg']}"
    transform = props.get("proj:transform")
    shape = props.get("proj:shape")
    if code is None or transform is None or shape is None:
        return None
    return GridSpec(
        crs=str(code),
        transform=tuple(float(v) for v in transform[:6]),  # type: ignore[arg-type]
        width=int(shape[1]),
        height=int(shape[0]),
    )


def parse_item(item: pystac.Item, profile: SensorProfile, *, field: str) -> Acquisition:
    """Turn a STAC item into an Acquisition holding only the assets the profile reads."""
    assets: dict[str, AssetRef] = {}
    for key in profile.assets:
        asset = item.assets.get(key)
        if asset is None:
            available = ", ".join(sorted(item.assets)) or "none"
            raise CatalogError(
                f"item {item.id!r} has no asset {key!r} (its assets: {available})",
                fix="use one of the item's asset keys in the sensor's bands/masks, or remove "
                "items without it from the catalog",
                field=field,
            )
        href = asset.get_absolute_href() or asset.href
        assets[key] = AssetRef(href=href)
    return Acquisition(
        item_id=item.id,
        sensor=profile.name,
        datetime=_item_datetime(item),
        assets=assets,
        grid=_native_grid(item),
    )


def _in_period(when: datetime, start: date, end: date) -> bool:
    first = datetime.combine(start, time.min, tzinfo=UTC)
    last = datetime.combine(end, time.max, tzinfo=UTC)
    return first <= when <= last


def items_of(catalog: pystac.Catalog, collections: Sequence[str]) -> Iterable[pystac.Item]:
    for item in catalog.get_items(recursive=True):
        if collections and item.collection_id not in collections:
            continue
        yield item


def find_acquisitions(
    spec: CatalogSpec,
    profile: SensorProfile,
    start: date,
    end: date,
    *,
    field: str,
) -> tuple[list[Acquisition], list[pystac.Item]]:
    """Items of the catalog within [start, end], parsed and sorted by time.

    Returns the acquisitions and the matching raw items (saved with the run so that a repeated run
    uses exactly the same inputs).
    """
    catalog = open_catalog(spec, field=f"{field}.catalog.url")
    all_items = list(items_of(catalog, spec.collections))
    if not all_items:
        scope = f" in collections {spec.collections}" if spec.collections else ""
        raise CatalogError(
            f"catalog {spec.url!r} has no items{scope}",
            fix="check the catalog and the collections filter",
            field=f"{field}.catalog",
        )
    chosen = [it for it in all_items if _in_period(_item_datetime(it), start, end)]
    if not chosen:
        times = sorted(_item_datetime(it) for it in all_items)
        raise CatalogError(
            f"no acquisition of sensor {profile.name!r} falls in the period {start} .. {end} "
            f"(the catalog covers {times[0]:%Y-%m-%d} .. {times[-1]:%Y-%m-%d})",
            fix="set spec.period to dates the catalog covers",
            field="spec.period",
        )
    chosen.sort(key=lambda it: (_item_datetime(it), it.id))
    acquisitions = [parse_item(it, profile, field=f"{field}.bands") for it in chosen]
    return acquisitions, chosen


def save_items(items: Sequence[pystac.Item], path: Path) -> None:
    """Save the resolved items as an ItemCollection with absolute asset hrefs."""
    from pipeline.storage import write_text_atomic

    features = []
    for item in items:
        d = item.to_dict(include_self_link=False, transform_hrefs=False)
        for key, asset in item.assets.items():
            d["assets"][key]["href"] = asset.get_absolute_href() or asset.href
        d["links"] = []
        features.append(d)
    doc = {"type": "FeatureCollection", "features": features}
    write_text_atomic(path, json.dumps(doc, indent=1, sort_keys=True, default=str))
