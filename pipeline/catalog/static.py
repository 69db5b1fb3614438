"""Discovery: find a sensor's items in its catalog, whatever the kind, and parse them.

``find_acquisitions`` is the entry point the runner calls. It dispatches on the catalog kind:
static catalogs and collections (pystac, local / HTTP / S3), item-collection files, and STAC APIs
(``pipeline.catalog.search``). Given the run's saved item list, it reuses that list when the
catalog spec and period are unchanged, so a repeated or resumed run reads exactly the same items
without asking the catalog again.
"""

from __future__ import annotations

import difflib
import json
import logging
import warnings
from datetime import date
from pathlib import Path

import pystac
import pystac.utils
from pystac.stac_io import DefaultStacIO

from pipeline.catalog.assets import SkippedItem, check_acquisitions
from pipeline.catalog.config import CatalogConfig
from pipeline.catalog.items import (
    ItemFilter,
    discovery_fingerprint,
    in_period,
    item_datetime,
    items_from_features,
    load_saved_items,
    parse_item,
    save_items,
    sort_and_dedupe,
)
from pipeline.catalog.search import (
    ApiRequestError,
    GarbageAnswerError,
    HttpSettings,
    RetryingStacApiIO,
    redact,
    search_items,
)
from pipeline.catalog.sensors import SensorProfile
from pipeline.errors import CatalogError
from pipeline.model import Acquisition
from pipeline.warnings import CatalogWarning

__all__ = [
    "discover_items",
    "discovery_fingerprint",
    "find_acquisitions",
    "load_saved_items",
    "open_catalog",
    "parse_item",
    "read_item_collection",
    "save_items",
]

log = logging.getLogger(__name__)


def _scheme(url: str) -> str:
    return url.split("://", 1)[0].lower() if "://" in url else ""


class CatalogIO(DefaultStacIO):
    """Reads catalog files from local paths, HTTP(S) (with the retrying client) and fsspec URLs
    (s3://, gs://, az://...; credentials come from the environment, as for GDAL)."""

    def __init__(self, settings: HttpSettings) -> None:
        super().__init__()
        self.http = RetryingStacApiIO(settings)

    def read_text_from_href(self, href: str) -> str:
        scheme = _scheme(href)
        if scheme in ("http", "https"):
            return self.http.request(href)
        if scheme and scheme != "file":
            import fsspec

            with fsspec.open(href, "rt", encoding="utf-8") as f:
                return str(f.read())
        return super().read_text_from_href(href)


def _read_errors(url: str, exc: BaseException, what: str) -> CatalogError | None:
    """The CatalogError for a failure to read ``url`` (None: not a reading problem)."""
    if isinstance(exc, FileNotFoundError):
        return CatalogError(
            f"{what} {redact(url)!r} does not exist",
            fix="point the url to an existing file (relative paths are relative to the manifest)",
        )
    if isinstance(exc, json.JSONDecodeError | UnicodeDecodeError | GarbageAnswerError):
        return CatalogError(
            f"{what} {redact(url)!r} is not JSON", fix=f"point the url to a STAC {what} (JSON)"
        )
    if isinstance(exc, ApiRequestError):
        return CatalogError(
            f"{what} {redact(url)!r} cannot be read: {exc.problem} ({exc.attempts} attempt(s))",
            fix="check the URL and that the server is reachable; raise timeout_s / retries for a "
            "slow or unsteady server",
        )
    if isinstance(exc, OSError):
        return CatalogError(
            f"{what} {redact(url)!r} cannot be read ({exc})",
            fix="check the URL and that the storage is reachable (credentials come from the "
            "environment, e.g. AWS_ACCESS_KEY_ID / AWS_ENDPOINT_URL for S3)",
        )
    return None


def open_catalog(spec: CatalogConfig, *, field: str) -> pystac.Catalog:
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
    headers_field = f"{field.rsplit('.', 1)[0]}.headers_from_env"
    io = CatalogIO(HttpSettings.from_spec(spec, field=headers_field))
    try:
        obj = pystac.read_file(url, stac_io=io)
    except pystac.STACError as exc:
        raise CatalogError(
            f"catalog {redact(url)!r} is not a valid STAC document ({exc})",
            fix="point the url to a STAC catalog or collection",
            field=field,
        ) from None
    except Exception as exc:
        error = _read_errors(url, exc, "catalog")
        if error is None:
            raise
        raise CatalogError(error.what, fix=error.fix, field=field) from None
    if not isinstance(obj, pystac.Catalog):
        raise CatalogError(
            f"{redact(url)!r} is a STAC {type(obj).__name__}, not a catalog or collection",
            fix="point the url to the catalog.json or collection.json that contains the items "
            "(for a file of items use kind: item_collection)",
            field=field,
        )
    # Children and items are read through the same IO (pystac takes it from the root).
    obj._stac_io = io
    return obj


def _catalog_items(spec: CatalogConfig, *, field: str) -> list[pystac.Item]:
    catalog = open_catalog(spec, field=f"{field}.url")
    try:
        return list(catalog.get_items(recursive=True))
    except pystac.STACError as exc:
        raise CatalogError(
            f"catalog {redact(spec.url)!r} links to a document that is not valid STAC ({exc})",
            fix="repair or remove the broken child/item link in the catalog",
            field=f"{field}.url",
        ) from None
    except Exception as exc:
        error = _read_errors(spec.url, exc, "a child or item of catalog")
        if error is None:
            raise
        raise CatalogError(error.what, fix=error.fix, field=f"{field}.url") from None


def read_item_collection(spec: CatalogConfig, *, field: str) -> list[pystac.Item]:
    """Items of a FeatureCollection file (local, HTTP or fsspec URL), asset hrefs made absolute."""
    url = spec.url
    io = CatalogIO(HttpSettings.from_spec(spec, field=f"{field}.headers_from_env"))
    try:
        doc = io.read_json(url)
    except Exception as exc:
        error = _read_errors(url, exc, "item collection")
        if error is None:
            raise
        raise CatalogError(error.what, fix=error.fix, field=f"{field}.url") from None
    if not isinstance(doc, dict) or not isinstance(doc.get("features"), list):
        kind = doc.get("type") if isinstance(doc, dict) else type(doc).__name__
        raise CatalogError(
            f"item collection {redact(url)!r} is not a GeoJSON FeatureCollection (type {kind!r})",
            fix="point the url to a JSON file {type: FeatureCollection, features: [items]} "
            "(for a catalog.json use kind: static)",
            field=f"{field}.url",
        )
    items = items_from_features(
        doc["features"],
        source=f"item collection {redact(url)!r}",
        fix="repair or remove that feature",
        field=f"{field}.url",
    )
    for item in items:
        for asset in item.assets.values():
            asset.href = pystac.utils.make_absolute_href(asset.href, url, start_is_dir=False)
    if not items:
        raise CatalogError(
            f"item collection {redact(url)!r} holds no items",
            fix="point the url to a file with items",
            field=f"{field}.url",
        )
    return items


def _choose_local(
    spec: CatalogConfig, items: list[pystac.Item], start: date, end: date, *, field: str, name: str
) -> list[pystac.Item]:
    """The items of a static source that match the spec, with errors saying which rule left none."""
    if not items:
        raise CatalogError(
            f"{name} {redact(spec.url)!r} has no items", fix="point the url to one with items",
            field=field,
        )  # fmt: skip
    present = sorted({str(it.collection_id) for it in items})
    if spec.collections:
        items = [it for it in items if it.collection_id in spec.collections]
    if not items:
        close = difflib.get_close_matches(spec.collections[0], present, n=1)
        hint = f"did you mean {close[0]!r}? " if close else ""
        raise CatalogError(
            f"{name} {redact(spec.url)!r} has no items in collections "
            f"{list(spec.collections)} (its items are of collections: {', '.join(present)})",
            fix=f"{hint}list collection ids of the catalog in {field}.collections",
            field=f"{field}.collections",
        )
    in_time = [it for it in items if in_period(item_datetime(it), start, end)]
    if not in_time:
        times = sorted(item_datetime(it) for it in items)
        raise CatalogError(
            f"no item of {name} {redact(spec.url)!r} falls in the period {start} .. {end} "
            f"(it covers {times[0]:%Y-%m-%d} .. {times[-1]:%Y-%m-%d})",
            fix="set spec.period to dates the catalog covers",
            field="period",
        )
    keep = ItemFilter.of(spec, start, end)
    chosen = [it for it in in_time if keep.keeps(it)]
    if not chosen:
        rules = [
            f"tiles {list(spec.tiles)}" if spec.tiles else "",
            f"bbox {list(spec.bbox)}" if spec.bbox else "",
            "the intersects polygon" if spec.intersects else "",
            f"max_cloud_cover {spec.max_cloud_cover:g}" if spec.max_cloud_cover is not None else "",
        ]
        raise CatalogError(
            f"none of the {len(in_time)} item(s) of {name} {redact(spec.url)!r} in the period "
            f"matches {', '.join(r for r in rules if r)}",
            fix="check the area, tiles and cloud-cover settings against the catalog",
            field=field,
        )
    return sort_and_dedupe(chosen)


def discover_items(spec: CatalogConfig, start: date, end: date, *, field: str) -> list[pystac.Item]:
    """Ask the catalog for the items of the spec and period, sorted by time (``field`` names the
    sensor in the manifest, e.g. ``spec.sensors[0]``)."""
    where = f"{field}.catalog"
    if spec.kind == "stac_api":
        result = search_items(spec, start, end, field=field)
        log.info(
            "%s: %d item(s) from %s (%d HTTP request(s))",
            field, len(result.items), redact(spec.url), result.requests,
        )  # fmt: skip
        return result.items
    if spec.kind == "item_collection":
        items = read_item_collection(spec, field=where)
        return _choose_local(spec, items, start, end, field=where, name="item collection")
    items = _catalog_items(spec, field=where)
    return _choose_local(spec, items, start, end, field=where, name="catalog")


def _reuse_saved(saved: Path | None, fingerprint: str, *, field: str) -> list[pystac.Item] | None:
    if saved is None or not saved.exists():
        return None
    previous = load_saved_items(saved)
    if previous.fingerprint == fingerprint:
        log.info("%s: reusing the %d item(s) saved in %s", field, len(previous.items), saved)
        return previous.items
    warnings.warn(
        f"{field}.catalog or spec.period changed since the item list {str(saved)!r} was saved; "
        "the catalog is searched again and the saved list will be replaced",
        CatalogWarning,
        stacklevel=3,
    )
    return None


def find_acquisitions(
    spec: CatalogConfig,
    profile: SensorProfile,
    start: date,
    end: date,
    *,
    field: str,
    saved: Path | None = None,
    skipped: list[SkippedItem] | None = None,
) -> tuple[list[Acquisition], list[pystac.Item]]:
    """Items of the catalog within [start, end] that match the spec, parsed and sorted by time.

    Returns the acquisitions and the matching raw items (saved with the run, with
    ``discovery_fingerprint(spec, start, end)``, so that a repeated run uses exactly the same
    inputs). With ``saved`` pointing at such a file, written for the same spec and period, the
    catalog is not asked again.
    """
    items = _reuse_saved(saved, discovery_fingerprint(spec, start, end), field=field)
    if items is None:
        items = discover_items(spec, start, end, field=field)
    items = profile.filter_items(items, field=field)  # one series, e.g. Sentinel-1 ascending
    acquisitions = [parse_item(it, profile, field=f"{field}.bands") for it in items]
    # Missing or unreadable files stop the run here (or are left out), before any work. The
    # items are kept whole: a file restored later is found again by the next planning.
    acquisitions, _, left_out = check_acquisitions(
        acquisitions, items, on_bad_item=spec.on_bad_item, check_files=spec.check_files,
        field=field,
    )  # fmt: skip
    if skipped is not None:
        skipped.extend(left_out)
    return acquisitions, items
