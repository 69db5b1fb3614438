"""Bad data found at planning: missing files, unreadable headers, wrong grids, empty images.

``check_acquisitions`` looks at the files the run will read before anything is written:

* every local and object-storage file must exist (one stat / HEAD per distinct file; HTTP
  assets are left to the read, which is bounded and retried);
* with ``check_files: always``, or ``auto`` and at most ``HEADER_CHECK_LIMIT`` distinct
  files, each file's header is read once (``never``: no check at all): a file GDAL cannot
  open is bad; a CRS or an origin that differs from what its item says (``proj:epsg`` /
  ``proj:transform``) is warned about (the reader would reproject it silently); an acquisition
  whose every file holds only no-data (checked on a small overview) is warned about.

A bad item stops the run (``on_bad_item: stop``: a CatalogError listing the items, their files
and the problem) or is left out with a warning (``skip``); the skipped items are returned so that
the run records them in its summary.
"""

from __future__ import annotations

import math
import os
import warnings
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import Any, Literal

import numpy as np
import pystac

from pipeline.errors import CatalogError
from pipeline.model import Acquisition
from pipeline.warnings import CatalogWarning, DataQualityWarning

HEADER_CHECK_LIMIT = 100  # distinct files read in ``auto`` mode (about 0.1 s locally)
_THREADS = 8
_OVERVIEW_SIDE = 64  # pixels per side read to tell an empty image


@dataclass(frozen=True)
class SkippedItem:
    """An item left out by ``on_bad_item: skip`` and why."""

    item: str
    sensor: str
    problem: str

    def as_dict(self) -> dict[str, str]:
        return {"item": self.item, "sensor": self.sensor, "problem": self.problem}


@dataclass(frozen=True)
class _Header:
    problem: str | None = None  # set: the file cannot be used
    crs: str | None = None
    origin: tuple[float, float] | None = None
    pixel: float | None = None
    empty: bool = False


def _scheme(href: str) -> str:
    return href.split("://", 1)[0].lower() if "://" in href else ""


def _exists(href: str) -> bool | None:
    """Whether the file is there (None: not checked here, e.g. HTTP)."""
    scheme = _scheme(href)
    if not scheme or scheme == "file":
        return os.path.exists(href.removeprefix("file://"))  # noqa: PTH110 (a str path)
    if scheme in ("http", "https") or href.startswith("/vsi"):
        return None
    try:
        import fsspec

        fs, path = fsspec.core.url_to_fs(href)
        return bool(fs.exists(path))
    except FileNotFoundError:
        return False
    except Exception:  # credentials, network: the read will say; not a missing file
        return None


def _header(href: str) -> _Header:
    import rasterio
    from rasterio.errors import RasterioIOError

    from pipeline.cube.read import DEFAULT_HTTP_LIMITS

    options = DEFAULT_HTTP_LIMITS.remote_options() if _scheme(href) else {}
    try:
        with rasterio.Env(**options), rasterio.open(href) as src:
            crs = src.crs.to_string() if src.crs else None
            a, _, c, _, _, f = tuple(src.transform)[:6]
            scale = max(1, math.ceil(max(src.width, src.height) / _OVERVIEW_SIDE))
            shape = (max(1, src.height // scale), max(1, src.width // scale))
            data = src.read(1, out_shape=shape, masked=True)
            values = np.ma.filled(data.astype("float64"), np.nan)
            empty = bool(np.all(np.isnan(values)))
            return _Header(None, crs, (c, f), abs(a), empty)
    except (RasterioIOError, OSError, ValueError) as exc:
        return _Header(problem=f"cannot be read ({' '.join(str(exc).split())[:160]})")


def _crs_of(acquisition: Acquisition) -> str | None:
    return acquisition.grid.crs if acquisition.grid is not None else None


def _same_crs(a: str, b: str) -> bool:
    if a == b:
        return True
    try:
        from rasterio.crs import CRS

        return bool(CRS.from_user_input(a) == CRS.from_user_input(b))
    except Exception:
        return False


def check_acquisitions(
    acquisitions: Sequence[Acquisition],
    items: Sequence[pystac.Item],
    *,
    on_bad_item: Literal["stop", "skip"] = "stop",
    check_files: Literal["auto", "always", "never"] = "auto",
    field: str,
    exists: Callable[[str], bool | None] = _exists,
    header: Callable[[str], Any] = _header,
) -> tuple[list[Acquisition], list[pystac.Item], list[SkippedItem]]:
    """The acquisitions and items to use, the skipped ones, after the checks above.

    ``field`` names the sensor (``sensors[0]``); errors point to its catalog."""
    hrefs = sorted({ref.href for acq in acquisitions for ref in acq.assets.values()})
    if not hrefs or check_files == "never":
        return list(acquisitions), list(items), []
    with ThreadPoolExecutor(_THREADS) as pool:
        present = dict(zip(hrefs, pool.map(exists, hrefs), strict=True))
    problems: dict[str, list[str]] = {}
    for acq in acquisitions:
        for ref in acq.assets.values():
            if present[ref.href] is False:
                problems.setdefault(acq.item_id, []).append(f"{ref.href!r} does not exist")
    read = check_files == "always" or (check_files == "auto" and len(hrefs) <= HEADER_CHECK_LIMIT)
    if read:
        # In auto mode only files known to be there (local, object storage): HTTP assets are
        # read when asked (``always``), not on every planning.
        wanted = (True, None) if check_files == "always" else (True,)
        readable = [h for h in hrefs if present[h] in wanted]
        with ThreadPoolExecutor(_THREADS) as pool:
            headers = dict(zip(readable, pool.map(header, readable), strict=True))
        _check_headers(acquisitions, headers, problems, field)
    if not problems:
        return list(acquisitions), list(items), []
    listing = "; ".join(
        f"item {item!r}: {', '.join(found)}" for item, found in list(problems.items())[:5]
    )
    more = f" (and {len(problems) - 5} more item(s))" if len(problems) > 5 else ""
    if on_bad_item == "stop":
        raise CatalogError(
            f"{len(problems)} item(s) of {field} have files that are missing or unreadable: "
            f"{listing}{more}",
            fix=f"restore the files (then run again, with --resume if the run had started), "
            f"remove the items from the catalog, or set {field}.catalog.on_bad_item: skip to "
            "leave such items out",
            field=f"{field}.catalog",
        )
    warnings.warn(
        f"{field}: {len(problems)} item(s) left out (on_bad_item: skip): {listing}{more}",
        CatalogWarning,
        stacklevel=2,
    )
    sensor = acquisitions[0].sensor
    skipped = [SkippedItem(item, sensor, ", ".join(found)) for item, found in problems.items()]
    kept = [a for a in acquisitions if a.item_id not in problems]
    kept_items = [it for it in items if it.id not in problems]
    if not kept:
        raise CatalogError(
            f"every item of {field} was left out as bad ({listing}{more})",
            fix="restore the files or point the catalog to readable data",
            field=f"{field}.catalog",
        )
    return kept, kept_items, skipped


def _check_headers(
    acquisitions: Sequence[Acquisition],
    headers: dict[str, Any],
    problems: dict[str, list[str]],
    field: str,
) -> None:
    mismatched: list[str] = []
    empty: list[str] = []
    for acq in acquisitions:
        found = [headers[ref.href] for ref in acq.assets.values() if ref.href in headers]
        for ref in acq.assets.values():
            head = headers.get(ref.href)
            if head is not None and head.problem:
                problems.setdefault(acq.item_id, []).append(f"{ref.href!r} {head.problem}")
        item_crs = _crs_of(acq)
        for ref in acq.assets.values():
            head = headers.get(ref.href)
            if head is None or head.problem or acq.grid is None:
                continue
            if item_crs and head.crs and not _same_crs(item_crs, head.crs):
                mismatched.append(f"{ref.href!r} is in {head.crs}, its item says {item_crs}")
                continue
            pixel = abs(acq.grid.transform[0])
            origin = (acq.grid.transform[2], acq.grid.transform[5])
            if (
                head.origin is not None
                and head.pixel is not None
                and math.isclose(head.pixel, pixel, rel_tol=1e-6)
                and max(abs(head.origin[0] - origin[0]), abs(head.origin[1] - origin[1])) > pixel
            ):
                mismatched.append(f"{ref.href!r} starts at {head.origin}, its item says {origin}")
        if (
            found
            and all(h.empty for h in found if not h.problem)
            and not any(h.problem for h in found)
        ):
            empty.append(acq.item_id)
    if mismatched:
        warnings.warn(
            f"{field}: {len(mismatched)} file(s) do not sit where their item says, so they are "
            f"reprojected to the item's grid: {'; '.join(mismatched[:3])}"
            + (" ..." if len(mismatched) > 3 else "")
            + "; check the items' proj:epsg / proj:transform against the files",
            CatalogWarning,
            stacklevel=3,
        )
    if empty:
        warnings.warn(
            f"{field}: {len(empty)} acquisition(s) hold no data at all (every pixel is no-data): "
            f"{', '.join(empty[:5])}"
            + (" ..." if len(empty) > 5 else "")
            + "; they add nothing to the series (remove them from the catalog to save reading)",
            DataQualityWarning,
            stacklevel=3,
        )
