"""What the catalog package is told: each sensor's catalog, bands and quality masks.

Frozen dataclasses with the attribute names of the manifest sections they come from
(``pipeline.manifest.resolve`` builds them), so the catalog code never sees the manifest. Lists
are tuples; mappings (GeoJSON, STAC query/filter objects, headers) are plain dicts to read, never
to change. Validation happened once, in the manifest; these only carry the checked values.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Literal

from pipeline.model import section_canonical

__all__ = ["BandConfig", "CatalogConfig", "MaskConfig", "SensorConfig"]


@dataclass(frozen=True)
class CatalogConfig:
    """Where a sensor's acquisitions are listed and which to use (``sensors[i].catalog``)."""

    url: str
    kind: Literal["static", "stac_api", "item_collection"] = "static"
    collections: tuple[str, ...] = ()
    bbox: tuple[float, float, float, float] | None = None
    intersects: dict[str, Any] | None = field(default=None, hash=False)
    tiles: tuple[str, ...] = ()
    tile_property: str | None = None
    max_cloud_cover: float | None = None
    cloud_cover_property: str = "eo:cloud_cover"
    query: dict[str, Any] | None = field(default=None, hash=False)
    filter: dict[str, Any] | None = field(default=None, hash=False)
    max_items: int = 20000
    page_size: int = 100
    timeout_s: float = 30.0
    retries: int = 5
    backoff_s: float = 0.5
    headers_from_env: dict[str, str] = field(default_factory=dict, hash=False)
    # What planning does about bad files (pipeline.catalog.assets). Not part of digests
    # (compare=False): what they change shows in the acquisitions, which are.
    on_bad_item: Literal["stop", "skip"] = field(default="stop", compare=False)
    check_files: Literal["auto", "always", "never"] = field(default="auto", compare=False)

    def __canonical__(self) -> dict[str, object]:
        # The digest of the pydantic CatalogSpec it replaces: run stores keep their units.
        return section_canonical(self, "CatalogSpec")


@dataclass(frozen=True)
class BandConfig:
    """How to read one band: its asset, the physical value scaling and its no-data value."""

    asset: str
    scale: float = 1.0
    offset: float = 0.0
    nodata: float | None = None

    def __canonical__(self) -> dict[str, object]:
        # The digest of the pydantic BandSpec it replaces.
        return section_canonical(self, "BandSpec")


@dataclass(frozen=True)
class MaskConfig:
    """A quality layer and the rule that turns it into invalid pixels."""

    asset: str
    invalid_values: tuple[int, ...] = ()
    invalid_bits: tuple[int, ...] = ()

    def __canonical__(self) -> dict[str, object]:
        # The digest of the pydantic MaskSpec it replaces.
        return section_canonical(self, "MaskSpec")


@dataclass(frozen=True)
class SensorConfig:
    """One sensor: its catalog, bands (name -> description, None for a profile's own band),
    quality masks, profile options and date grid step (``sensors[i]``)."""

    name: str
    catalog: CatalogConfig
    profile: str | None = None
    bands: dict[str, BandConfig | None] = field(default_factory=dict, hash=False)
    masks: tuple[MaskConfig, ...] = ()
    options: dict[str, str] = field(default_factory=dict, hash=False)
    date_step_days: int | None = None
    masking: Literal["date", "band"] = "date"

    def __canonical__(self) -> dict[str, object]:
        # The digest of the pydantic SensorSpec it replaces (field order does not matter: the
        # digest sorts keys); ``masking`` only when set, as the section gives it.
        out = section_canonical(self, "SensorSpec")
        if self.masking == "date":
            out.pop("masking")
        return out
