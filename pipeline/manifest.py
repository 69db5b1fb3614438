"""The run manifest: one pydantic model, loaded from YAML, validated once at the edge.

A manifest is a Kubernetes-style resource::

    apiVersion: sitsflow.dev/v1alpha1
    kind: SitsRun
    metadata: {name: slovenia-demo}
    spec: {...}          # RunSpec below

so the same file can later be ``kubectl apply``-ed; the CRD's schema is generated from ``RunSpec``.
Relative local paths are resolved against the manifest's folder when it is loaded; inside the
package every path is absolute or a URL. No field holds a credential: storage credentials come from
the environment or fsspec/boto configuration.
"""

from __future__ import annotations

import difflib
import json
import re
from collections.abc import Sequence
from datetime import date
from pathlib import Path
from typing import Annotated, Any, Literal

import yaml
from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    ValidationError,
    ValidationInfo,
    field_validator,
    model_validator,
)

from pipeline.errors import ManifestError

API_VERSION: Literal["sitsflow.dev/v1alpha1"] = "sitsflow.dev/v1alpha1"
KIND: Literal["SitsRun"] = "SitsRun"

_NAME = r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?$"
_IDENT = r"^[a-z][a-z0-9_]*$"
_IMPORT_PATH = r"^[A-Za-z_][\w]*(\.[A-Za-z_][\w]*)*(:[A-Za-z_][\w]*)?$"
_MEMORY = r"^\d+(\.\d+)?\s*(B|KB|MB|GB|TB|KiB|MiB|GiB|TiB)$"


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True, str_strip_whitespace=True)


_MGRS_TILE = r"^(0?[1-9]|[1-5][0-9]|60)[C-HJ-NP-X][A-HJ-NP-Z][A-HJ-NP-V]$"
_ENV_VAR = r"^[A-Za-z_][A-Za-z0-9_]*$"
_HEADER = r"^[A-Za-z0-9-]+$"


def _lon_lat_ok(lon: float, lat: float) -> bool:
    return -180 <= lon <= 180 and -90 <= lat <= 90


class CatalogSpec(_Strict):
    """Where a sensor's acquisitions are listed, and which of them to use.

    The filters (collections, bbox or intersects or tiles, max_cloud_cover, spec.period) apply to
    every kind: a STAC API evaluates them on the server, static catalogs and item collections are
    filtered item by item.
    """

    kind: Literal["static", "stac_api", "item_collection"] = Field(
        "static",
        description="Catalog type. 'static': a static STAC catalog or collection (file or URL); "
        "'stac_api': a STAC API searched with /search; 'item_collection': a GeoJSON "
        "FeatureCollection of STAC items (file or URL), e.g. a saved search result.",
    )
    url: str = Field(
        description="static: path or URL of the catalog.json / collection.json; stac_api: the "
        "API's root URL (https://...); item_collection: path or URL of the JSON file. Relative "
        "paths are relative to the manifest.",
        min_length=1,
    )
    collections: list[str] = Field(
        default_factory=list,
        description="Only items of these collection ids (empty: every item; a stac_api search "
        "needs at least one).",
    )
    bbox: tuple[float, float, float, float] | None = Field(
        None,
        description="Only items intersecting [west, south, east, north], in degrees (WGS84).",
    )
    intersects: dict[str, Any] | None = Field(
        None,
        description="Only items intersecting this GeoJSON Polygon or MultiPolygon (WGS84 "
        "longitude/latitude); an alternative to bbox.",
    )
    tiles: list[str] = Field(
        default_factory=list,
        description="Only items of these MGRS / Sentinel-2 / THEIA tiles, e.g. ['31TCJ', "
        "'T31TCK'] (a leading 'T' is allowed). Matched against tile_property, else the "
        "properties grid:code, s2:mgrs_tile, mgrs:*, tile_id, else the item id.",
    )
    tile_property: str | None = Field(
        None,
        description="Item property holding the tile id, when it is not one of the usual ones.",
        min_length=1,
    )
    max_cloud_cover: float | None = Field(
        None,
        ge=0,
        le=100,
        description="Only items whose cloud cover (cloud_cover_property, in %) is at most this "
        "(static catalogs and item collections keep items without the property; a STAC API "
        "applies its own rule, usually dropping them).",
    )
    cloud_cover_property: str = Field(
        "eo:cloud_cover",
        description="Item property holding the cloud cover in percent.",
        min_length=1,
    )
    query: dict[str, Any] | None = Field(
        None,
        description="stac_api only: a STAC API 'query' extension object sent as is, e.g. "
        "{'s2:nodata_pixel_percentage': {'lt': 10}}.",
    )
    filter: dict[str, Any] | None = Field(
        None,
        description="stac_api only: a CQL2-JSON filter sent as is (the API must support the "
        "filter extension), e.g. {'op': '<', 'args': [{'property': 'view:sun_elevation'}, 20]}.",
    )
    max_items: int = Field(
        20000,
        ge=1,
        le=1_000_000,
        description="Most items a run may use; discovery stops with an error when more match "
        "(narrow the area, period or collections, or raise this).",
    )
    page_size: int = Field(
        100, ge=1, le=10000, description="Items asked per page of a STAC API search."
    )
    timeout_s: float = Field(
        30.0,
        gt=0,
        le=600,
        description="Seconds to wait for one HTTP answer (connection and read) before the "
        "request counts as failed.",
    )
    retries: int = Field(
        5,
        ge=0,
        le=20,
        description="Retries of an HTTP request that failed transiently (timeouts, connection "
        "errors, 408/429/5xx answers), with exponential back-off.",
    )
    backoff_s: float = Field(
        0.5,
        ge=0,
        le=60,
        description="First back-off wait in seconds; it doubles with each retry (capped at 30 s; "
        "a server's Retry-After is honoured up to 60 s).",
    )
    headers_from_env: dict[str, str] = Field(
        default_factory=dict,
        description="HTTP headers taken from environment variables, header name -> variable "
        "name, e.g. {'Authorization': 'STAC_API_AUTH'}; the manifest never holds the secret.",
    )

    @field_validator("tiles")
    @classmethod
    def _mgrs_tiles(cls, tiles: list[str]) -> list[str]:
        normalized = []
        for tile in tiles:
            code = tile.strip().upper().removeprefix("MGRS-")
            if len(code) in (6, 5) and code.startswith("T") and code[1].isdigit():
                code = code[1:]
            if not re.match(_MGRS_TILE, code):
                raise ValueError(
                    f"tile {tile!r} is not an MGRS tile id (zone 1-60, latitude band, two "
                    "letters of the 100 km square); write it like '31TCJ' or 'T31TCJ'"
                )
            normalized.append(code.zfill(5))
        return normalized

    @field_validator("headers_from_env")
    @classmethod
    def _header_names(cls, headers: dict[str, str]) -> dict[str, str]:
        for header, variable in headers.items():
            if not re.match(_HEADER, header):
                raise ValueError(
                    f"header name {header!r} is not a valid HTTP header name; use letters, "
                    "digits and '-', e.g. 'Authorization'"
                )
            if not re.match(_ENV_VAR, variable):
                raise ValueError(
                    f"{variable!r} (for header {header!r}) is not an environment variable name; "
                    "give the variable's name (e.g. STAC_API_AUTH), never the secret itself"
                )
        return headers

    @model_validator(mode="after")
    def _consistent(self) -> CatalogSpec:
        if self.kind == "stac_api":
            if not re.match(r"^https?://", self.url):
                raise ValueError(
                    f"a stac_api url must be an http(s) URL, got {self.url!r}; give the API's "
                    "root URL, e.g. https://earth-search.aws.element84.com/v1"
                )
            if not self.collections:
                raise ValueError(
                    "a stac_api search needs collections; list the collection ids to search, "
                    "e.g. collections: [sentinel-2-l2a]"
                )
            if self.bbox is None and self.intersects is None and not self.tiles:
                raise ValueError("a stac_api search needs an area; set bbox, intersects or tiles")
        else:
            for name in ("query", "filter"):
                if getattr(self, name) is not None:
                    raise ValueError(
                        f"{name} is sent to a STAC API server, but kind is {self.kind!r}; "
                        f"remove {name} or use kind: stac_api"
                    )
        if self.bbox is not None and self.intersects is not None:
            raise ValueError("bbox and intersects both give the area; keep only one of them")
        if self.bbox is not None:
            west, south, east, north = self.bbox
            if not (_lon_lat_ok(west, south) and _lon_lat_ok(east, north)):
                raise ValueError(
                    f"bbox {list(self.bbox)} is not in degrees (longitude -180..180, latitude "
                    "-90..90); give [west, south, east, north] in WGS84 degrees"
                )
            if east <= west or north <= south:
                raise ValueError(
                    f"bbox {list(self.bbox)} is empty (east must exceed west and north south); "
                    "give it as [west, south, east, north]"
                )
        if self.intersects is not None:
            _check_polygon(self.intersects)
        if self.filter is not None and "op" not in self.filter:
            raise ValueError(
                "filter is not CQL2-JSON (it has no 'op'); write it like {op: '<=', args: "
                "[{property: 'eo:cloud_cover'}, 20]}"
            )
        return self


def _check_polygon(geometry: dict[str, Any]) -> None:
    import shapely.geometry
    from shapely.errors import GeometryTypeError, ShapelyError

    kind = geometry.get("type")
    if kind not in ("Polygon", "MultiPolygon"):
        raise ValueError(
            f"intersects must be a GeoJSON Polygon or MultiPolygon, got type {kind!r}; give "
            "{type: Polygon, coordinates: [[[lon, lat], ...]]}"
        )
    try:
        shape = shapely.geometry.shape(geometry)
    except (GeometryTypeError, ShapelyError, ValueError, TypeError, IndexError, KeyError):
        raise ValueError(
            "intersects has malformed coordinates; give a ring of [lon, lat] pairs whose "
            "first and last points are equal"
        ) from None
    west, south, east, north = shape.bounds
    if shape.is_empty or not shape.is_valid:
        raise ValueError(
            "intersects is empty or not a valid polygon (self-intersecting?); draw a simple "
            "polygon in WGS84 longitude/latitude"
        )
    if not (_lon_lat_ok(west, south) and _lon_lat_ok(east, north)):
        raise ValueError(
            f"intersects spans {west}..{east} E, {south}..{north} N, outside WGS84 degrees; "
            "give its coordinates as [longitude, latitude] in degrees"
        )


class BandSpec(_Strict):
    """How to read one band: its asset, the physical value scaling and its no-data value."""

    asset: str = Field(description="STAC asset key that holds the band.", min_length=1)
    scale: float = Field(1.0, description="Physical value = raw * scale + offset.")
    offset: float = Field(0.0, description="Physical value = raw * scale + offset.")
    nodata: float | None = Field(
        None, description="Raw value meaning no data (default: the file's own no-data value)."
    )


class MaskSpec(_Strict):
    """A quality layer and the rule that turns it into invalid pixels."""

    asset: str = Field(description="STAC asset key of the quality layer.", min_length=1)
    invalid_values: list[int] = Field(
        default_factory=list, description="Raw values that mark a pixel invalid (e.g. [1] = cloud)."
    )
    invalid_bits: list[Annotated[int, Field(ge=0, le=31)]] = Field(
        default_factory=list, description="Bit positions that mark a pixel invalid when set."
    )

    @model_validator(mode="after")
    def _has_rule(self) -> MaskSpec:
        if not self.invalid_values and not self.invalid_bits:
            raise ValueError(
                "a mask needs a rule; set invalid_values (e.g. [1]) or invalid_bits (e.g. [0, 3])"
            )
        return self


class SensorSpec(_Strict):
    """One sensor: its catalog, the bands to read, its quality masks and its date grid step.

    With ``profile`` (a built-in sensor, docs/sensors.md) the profile knows the assets, scaling
    and masks, and ``bands`` only selects among its bands; without one, ``bands`` describes them.
    """

    name: str = Field(
        description="Short sensor id used in feature names (lowercase, e.g. s2).", pattern=_IDENT
    )
    profile: str | None = Field(
        None,
        description="Built-in sensor profile that knows the assets, scaling and quality masks "
        "(e.g. sentinel2-l2a-theia, sentinel2-l2a-sen2cor, landsat-c2-l2-oli, sentinel1; see "
        "docs/sensors.md). Leave it out (or 'generic') to describe the bands yourself.",
    )
    catalog: CatalogSpec
    bands: dict[str, BandSpec | None] = Field(
        default_factory=dict,
        validate_default=True,
        description="Bands by the name they get in the cube (lowercase ids). Without a profile, "
        "each with its description ({asset, scale, offset, nodata}). With a profile, a list of "
        "the profile's band names keeps only those (default: all of them); a name with a "
        "description overrides or adds a band.",
    )
    masks: list[MaskSpec] = Field(
        default_factory=list,
        description="Quality layers; a pixel is invalid if any says so (with a profile: added "
        "to the profile's own masks).",
    )
    options: dict[str, str] = Field(
        default_factory=dict,
        description="Profile options, e.g. {units: db} for sentinel1 or {snow: invalid}; each "
        "profile's options are listed in docs/sensors.md.",
    )
    date_step_days: int | None = Field(
        None,
        ge=1,
        le=366,
        description="Step of the regular date grid this sensor is gap-filled on (default: the "
        "profile's, 10 days without a profile).",
    )

    @field_validator("profile")
    @classmethod
    def _known_profile(cls, profile: str | None) -> str | None:
        from pipeline.catalog.profiles import known_profiles, unknown_profile_message

        if profile is not None and profile not in known_profiles():
            problem, fix = unknown_profile_message(profile)
            raise ValueError(f"{problem}; {fix}")
        return profile

    @field_validator("bands", mode="before")
    @classmethod
    def _band_list(cls, bands: Any) -> Any:
        """``bands: [red, nir]`` is short for ``{red: null, nir: null}`` (profile bands)."""
        if not isinstance(bands, list) or not all(isinstance(b, str) for b in bands):
            return bands
        repeated = sorted({b for b in bands if bands.count(b) > 1})
        if repeated:
            raise ValueError(f"bands {repeated} are listed more than once; list each band once")
        return dict.fromkeys(bands)

    @field_validator("bands")
    @classmethod
    def _band_names(
        cls, bands: dict[str, BandSpec | None], info: ValidationInfo
    ) -> dict[str, BandSpec | None]:
        if "profile" not in info.data:
            return bands  # the profile itself is wrong: reported on its own
        profile = info.data["profile"]
        if profile is None or profile == "generic":
            if not bands:
                raise ValueError(
                    "bands needs at least 1 band when the sensor has no profile; describe each "
                    "band (e.g. {ndvi: {asset: ndvi, scale: 0.0001}}) or set profile to a "
                    "built-in sensor profile"
                )
            bare = [name for name, spec in bands.items() if spec is None]
            if bare:
                raise ValueError(
                    f"band {bare[0]!r} has no description and the sensor has no profile; "
                    f"describe it ({bare[0]}: {{asset: ...}}) or set a profile that has it"
                )
        else:
            bands = _profile_bands(profile, bands)
        for name in bands:
            if not re.match(_IDENT, name):
                raise ValueError(
                    f"band name {name!r} is not a lowercase id (letters, digits, _); "
                    "rename it, e.g. 'ndvi'"
                )
        return bands

    @field_validator("options")
    @classmethod
    def _known_options(cls, options: dict[str, str], info: ValidationInfo) -> dict[str, str]:
        if "profile" not in info.data or not options:
            return options
        profile = info.data["profile"]
        if profile is None or profile == "generic":
            raise ValueError(
                f"options {sorted(options)} only apply to a built-in profile, and the sensor "
                "has none; set profile or remove options"
            )
        from pipeline.catalog.profiles import profile_by_name

        known = {o.name: o for o in profile_by_name(profile).options}
        for key, value in options.items():
            if key not in known:
                close = difflib.get_close_matches(key, list(known), n=1)
                hint = f"did you mean {close[0]!r}? " if close else ""
                raise ValueError(
                    f"profile {profile!r} has no option {key!r} (its options: "
                    f"{', '.join(known) or 'none'}); {hint}use one of them or remove it"
                )
            if value not in known[key].values:
                choices = list(known[key].values)
                close = [c for c in choices if c.lower() == value.lower()] or (
                    difflib.get_close_matches(value, choices, n=1)
                )
                hint = f"did you mean {close[0]!r}? " if close else ""
                raise ValueError(
                    f"option {key!r} of profile {profile!r} cannot be {value!r} (choices: "
                    f"{', '.join(known[key].values)}); {hint}use one of the choices"
                )
        return options


def _profile_bands(profile: str, bands: dict[str, BandSpec | None]) -> dict[str, BandSpec | None]:
    """Profile band selection: names or provider ids (B04) to names; empty means every band."""
    from pipeline.catalog.profiles import profile_by_name

    template = profile_by_name(profile)
    if not bands:
        return dict.fromkeys(template.band_names)
    by_id = {b.sensor_band.lower(): b.name for b in template.bands if b.sensor_band}
    out: dict[str, BandSpec | None] = {}
    for name, spec in bands.items():
        if spec is None:
            known = name if name in template.band_names else by_id.get(name.lower())
            if known is None:
                close = difflib.get_close_matches(name, template.band_names, n=1)
                hint = f"did you mean {close[0]!r}? " if close else ""
                raise ValueError(
                    f"band {name!r} is not a band of profile {profile!r} (its bands: "
                    f"{', '.join(template.band_names)}); {hint}select bands of the profile, "
                    f"or describe the band ({name}: {{asset: ...}}) to add it"
                )
            name = known
        out[name] = spec
    return out


class PeriodSpec(_Strict):
    """A period mapped: the date grids run from start to end, inclusive."""

    start: date = Field(description="First date of the date grid (YYYY-MM-DD).")
    end: date = Field(description="Last date of the date grid (YYYY-MM-DD), after start.")
    name: str | None = Field(
        None,
        pattern=r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,62}$",
        description="Name of the period in output paths (periods/<name>/...); default: the "
        "year for a calendar year (e.g. 2016), else <start>-<end> as YYYYMMDD.",
    )

    @model_validator(mode="after")
    def _ordered(self) -> PeriodSpec:
        if self.end <= self.start:
            raise ValueError(
                f"the period is empty: end {self.end} is not after start {self.start}; "
                "set end to a date after start"
            )
        return self

    @property
    def label(self) -> str:
        """The period's name, given or derived from its dates."""
        if self.name:
            return self.name
        start, end = self.start, self.end
        if (start.month, start.day, end.month, end.day) == (1, 1, 12, 31) and (
            start.year == end.year
        ):
            return str(start.year)
        return f"{start:%Y%m%d}-{end:%Y%m%d}"


class AreaSpec(_Strict):
    """The output grid and its tiles. Leave every field out to use the items' own native grid.

    Tilings (``grid``): ``native`` (one grid: the items' shared grid, or crs + resolution + bbox),
    ``mgrs`` (Sentinel-2 tiles, listed in ``tiles`` or those covering ``region``) and ``user``
    (square tiles of ``tile_size`` pixels from ``origin`` in ``crs``). Where tiles overlap, each
    ground pixel belongs to one tile (docs/cube.md, "Ownership").
    """

    grid: Literal["native", "mgrs", "user"] | None = Field(
        None,
        description="Tiling: native, mgrs or user (default: mgrs when tiles or a region without "
        "crs are given, user when tile_size is given, else native).",
    )
    tiles: list[str] = Field(
        default_factory=list,
        description="Tiles to map: MGRS ids such as 31TCJ (mgrs grid) or x<col>y<row> ids "
        "(user grid).",
    )
    region: tuple[float, float, float, float] | dict[str, Any] | None = Field(
        None,
        description="Area of interest in longitude/latitude (EPSG:4326): [west, south, east, "
        "north] or a GeoJSON Polygon/MultiPolygon; the tiles that cover it are mapped.",
    )
    crs: str | None = Field(None, description="Grid CRS, e.g. EPSG:32631 (native and user grids).")
    resolution: float | None = Field(
        None, gt=0, description="Pixel size in CRS units (mgrs default: 10 m)."
    )
    bbox: tuple[float, float, float, float] | None = Field(
        None, description="[left, bottom, right, top] in the grid CRS (native and user grids)."
    )
    tile_size: int | None = Field(
        None, ge=16, le=100_000, description="Side of a user-grid tile in pixels."
    )
    origin: tuple[float, float] | None = Field(
        None,
        description="Top-left corner [x, y] of user-grid tile x0y0 in the grid CRS "
        "(default [0, 0]).",
    )

    @field_validator("region")
    @classmethod
    def _region_shape(
        cls, region: tuple[float, float, float, float] | dict[str, Any] | None
    ) -> tuple[float, float, float, float] | dict[str, Any] | None:
        if region is None:
            return None
        if isinstance(region, dict):
            from shapely.geometry import shape

            if region.get("type") not in ("Polygon", "MultiPolygon"):
                raise ValueError(
                    f"region is a GeoJSON {region.get('type')!r}, not a Polygon or MultiPolygon; "
                    "give a Polygon (lon/lat) or a [west, south, east, north] box"
                )
            try:
                geometry = shape(region)
            except Exception as exc:  # shapely raises several types for bad coordinates
                raise ValueError(
                    f"region is not a readable GeoJSON polygon ({exc}); give coordinates as "
                    "[[[lon, lat], ...]] rings"
                ) from None
            if geometry.is_empty or not geometry.is_valid:
                raise ValueError(
                    "region polygon is empty or self-intersecting; give a valid polygon "
                    "(lon/lat, closed rings)"
                )
            west, south, east, north = geometry.bounds
        else:
            west, south, east, north = region
        if not (-180 <= west < east <= 180 and -90 <= south < north <= 90):
            raise ValueError(
                f"region bounds [{west}, {south}, {east}, {north}] are not an area in degrees; "
                "give [west, south, east, north] with -180 <= west < east <= 180 and "
                "-90 <= south < north <= 90"
            )
        return region

    @field_validator("tiles")
    @classmethod
    def _tile_ids(cls, tiles: list[str]) -> list[str]:
        out = []
        for tile in tiles:
            code = tile.strip()
            if re.match(r"^x-?\d+y-?\d+$", code):
                out.append(code)
                continue
            code = code.upper()
            if len(code) == 6 and code.startswith("T"):
                code = code[1:]
            if not re.match(_MGRS_TILE, code):
                raise ValueError(
                    f"tile {tile!r} is neither an MGRS tile id nor a user-grid tile id; write "
                    "MGRS tiles like '31TCJ' and user-grid tiles like 'x0y3'"
                )
            out.append(code.zfill(5))
        return out

    @model_validator(mode="after")
    def _all_or_none(self) -> AreaSpec:
        kind = self.grid
        if kind is None:
            if self.tile_size is not None:
                kind = "user"
            elif self.tiles or (self.region is not None and self.crs is None):
                kind = "mgrs"
            else:
                kind = "native"
        if kind == "native":
            extra = [k for k in ("tiles", "region", "tile_size", "origin") if getattr(self, k)]
            if extra:
                raise ValueError(
                    f"{', '.join(extra)} only apply to the mgrs and user grids; set grid: mgrs "
                    "or grid: user, or remove them"
                )
            given = [self.crs is not None, self.resolution is not None, self.bbox is not None]
            if any(given) and not all(given):
                raise ValueError(
                    "crs, resolution and bbox go together; set all three, or none of them to "
                    "use the items' native grid"
                )
        elif kind == "mgrs":
            extra = [k for k in ("crs", "bbox", "tile_size", "origin") if getattr(self, k)]
            if extra:
                raise ValueError(
                    f"{', '.join(extra)} do not apply to the mgrs grid (each tile has its own "
                    "UTM CRS and extent); remove them, or use grid: user"
                )
            if not self.tiles and self.region is None:
                raise ValueError(
                    "the mgrs grid needs tiles or a region; list tiles (e.g. [31TCJ]) or give "
                    "region: [west, south, east, north] in degrees"
                )
            bad_ids = [t for t in self.tiles if t.startswith("x")]
            if bad_ids:
                raise ValueError(
                    f"tiles {bad_ids} are user-grid ids, not MGRS ids; list MGRS tiles such as "
                    "31TCJ, or use grid: user"
                )
            if (
                self.resolution is not None
                and abs(109_800 / self.resolution - round(109_800 / self.resolution)) > 1e-9
            ):
                raise ValueError(
                    f"resolution {self.resolution} does not divide the 109800 m Sentinel-2 "
                    "tile; use 10, 20 or 60"
                )
        else:
            missing = [k for k in ("crs", "resolution", "tile_size") if getattr(self, k) is None]
            if missing:
                raise ValueError(
                    f"the user grid needs crs, resolution and tile_size (missing: "
                    f"{', '.join(missing)}); set them, e.g. crs: EPSG:2154, resolution: 10, "
                    "tile_size: 5000"
                )
            if not self.tiles and self.region is None and self.bbox is None:
                raise ValueError(
                    "the user grid needs tiles, a bbox or a region to know which tiles to map; "
                    "set one of them"
                )
            bad_ids = [t for t in self.tiles if not t.startswith("x")]
            if bad_ids:
                raise ValueError(
                    f"tiles {bad_ids} are MGRS ids, not user-grid ids; write user-grid tiles "
                    "as x<column>y<row>, e.g. x0y3"
                )
        if self.bbox is not None:
            left, bottom, right, top = self.bbox
            if right <= left or top <= bottom:
                raise ValueError(
                    f"bbox {list(self.bbox)} is empty (right must exceed left and top bottom); "
                    "give it as [left, bottom, right, top]"
                )
        if self.crs is not None:
            from pyproj import CRS
            from pyproj.exceptions import CRSError

            try:
                CRS.from_user_input(self.crs)
            except CRSError:
                raise ValueError(
                    f"crs {self.crs!r} is not a known coordinate reference system; "
                    "use an EPSG code such as 'EPSG:32633'"
                ) from None
        return self


class FeaturesSpec(_Strict):
    """Features computed from the gap-filled bands (the bands themselves are always features)."""

    indices: list[Literal["ndvi", "ndwi", "brightness"]] | None = Field(
        None,
        description="Spectral indices to add; ndvi needs bands red and nir, ndwi green and nir, "
        "brightness two bands or more. Default: each of ndvi, ndwi and brightness that a "
        "sensor's bands allow; [] for none.",
    )
    user_functions: list[str] = Field(
        default_factory=list,
        description="Feature functions by import path 'module:function': each gets a sensor's "
        "gap-filled bands by name ((dates, y, x) float32 arrays) and returns a dict of new "
        "features of the same shape, named with lowercase ids.",
    )

    @field_validator("user_functions")
    @classmethod
    def _function_paths(cls, paths: list[str]) -> list[str]:
        for path in paths:
            if not re.match(r"^[A-Za-z_][\w]*(\.[A-Za-z_][\w]*)*:[A-Za-z_][\w]*$", path.strip()):
                raise ValueError(
                    f"user function {path!r} is not an import path; write it as "
                    "'package.module:function'"
                )
        if len(set(paths)) != len(paths):
            raise ValueError(
                f"user_functions {paths} lists a function twice; list each function once"
            )
        return [p.strip() for p in paths]


class RegionsSpec(_Strict):
    """Regions (e.g. eco-climatic zones): one model per region, blended near the borders."""

    path: str = Field(
        description="GeoPackage, GeoParquet or Shapefile with the region polygons "
        "(relative paths are relative to the manifest).",
        min_length=1,
    )
    layer: str | None = Field(None, description="Layer name inside a multi-layer file.")
    field: str = Field(
        description="Field with each region's code or name (integers or text).", min_length=1
    )
    border_pixels: int = Field(
        0,
        ge=0,
        le=1000,
        description="Width, in pixels, of the band along region borders where the models of "
        "the regions within that distance are combined (0: each pixel uses its own region's "
        "model only).",
    )
    border_rule: Literal["blend", "vote"] = Field(
        "blend",
        description="How models are combined near a border: 'blend' averages their class "
        "probabilities, 'vote' picks the class with the largest total weight; each region's "
        "weight falls linearly from 1 inside it to 0 at border_pixels away.",
    )


class ReferenceSpec(_Strict):
    """Reference polygons (or points) with their labels (classification) or values (regression)."""

    path: str = Field(description="GeoPackage, GeoParquet or Shapefile with the reference data.")
    layer: str | None = Field(None, description="Layer name inside a multi-layer file.")
    label_field: str | None = Field(
        None, description="Integer field with the class code (classification)."
    )
    value_field: str | None = Field(
        None,
        description="Numeric field with the value to predict (regression); give it instead of "
        "label_field.",
    )
    name_field: str | None = Field(None, description="Optional field with the class name.")
    ignore_labels: list[int] = Field(
        default_factory=list, description="Class codes to leave out (e.g. 0 for 'no data')."
    )
    group_field: str | None = Field(
        None,
        description="Field whose equal values keep features together on one side of the "
        "train/validation split (e.g. a parcel id shared by several points); default: each "
        "feature on its own.",
    )
    regions: RegionsSpec | None = Field(
        None, description="Regions layer: one model is trained and applied per region."
    )
    start_field: str | None = Field(
        None,
        description="Date field with the start of each feature's own time window (the season "
        "it was observed): its features are read on the date grid that starts there, with as "
        "many dates as spec.period's, and aligned by position in the season (feature names "
        "<sensor>_<variable>_t<NN>, the NN-th date of the window's grid). Default: every "
        "feature is observed in spec.period.",
    )
    end_field: str | None = Field(
        None,
        description="Date field with the end of each feature's window (needs start_field); "
        "the window must give as many dates as spec.period on every sensor's grid. Default: "
        "start plus the length of spec.period.",
    )
    split_field: str | None = Field(
        None,
        description="Field fixing each feature's side of the split ('train' or 'validation'), "
        "e.g. an independent validation set or validation on another year; replaces the "
        "random split by polygon (sampling.validation_fraction is then unused).",
    )

    @model_validator(mode="after")
    def _one_target(self) -> ReferenceSpec:
        if (self.label_field is None) == (self.value_field is None):
            raise ValueError(
                "give exactly one of label_field (classification) and value_field (regression)"
                f", got {'both' if self.label_field else 'neither'}; set label_field to the "
                "class-code field, or value_field to the numeric field to predict"
            )
        if self.value_field is not None and (self.name_field or self.ignore_labels):
            raise ValueError(
                "name_field and ignore_labels describe classes, but this reference has a "
                "value_field (regression); remove name_field and ignore_labels"
            )
        if self.end_field is not None and self.start_field is None:
            raise ValueError(
                f"end_field {self.end_field!r} is given without start_field; a window needs "
                "its start: set start_field too, or remove end_field"
            )
        return self


class SamplingSpec(_Strict):
    """How reference polygons become training and validation pixels."""

    validation_fraction: float = Field(
        0.3,
        gt=0,
        lt=1,
        description="Share of each class's polygons kept for validation (split by polygon).",
    )
    seed: int = Field(0, ge=0, description="Seed of the split and the selection.")
    max_pixels_per_polygon: int | None = Field(
        None, ge=1, description="Cap of training pixels drawn from one polygon (None: all)."
    )
    min_pixels_per_class: int = Field(
        10, ge=1, description="Classes with fewer training pixels are left out with a warning."
    )
    strategy: Literal["all", "percentage", "per_class_count", "smallest_class"] = Field(
        "all",
        description="Training pixels kept per class (per region with regions): 'all'; "
        "'percentage' (fraction of each class); 'per_class_count' (count per class, all of a "
        "smaller class); 'smallest_class' (as many per class as the smallest class has).",
    )
    fraction: float | None = Field(
        None, gt=0, le=1, description="Share of each class's pixels kept (strategy percentage)."
    )
    count: int | None = Field(
        None, ge=1, description="Pixels kept per class (strategy per_class_count)."
    )
    within_polygon: Literal["random", "periodic"] = Field(
        "random",
        description="How pixels are drawn inside a polygon: 'random' (seeded) or 'periodic' "
        "(evenly spaced in row-major order).",
    )
    runs: int = Field(
        1,
        ge=1,
        le=100,
        description="Number of repeated split/train/validate runs with seeds seed, seed+1, ...; "
        "metrics are reported as mean and 95% interval across runs.",
    )

    @model_validator(mode="after")
    def _strategy_parameters(self) -> SamplingSpec:
        needs = {"percentage": "fraction", "per_class_count": "count"}
        wanted = needs.get(self.strategy)
        for name in ("fraction", "count"):
            given = getattr(self, name) is not None
            if name == wanted and not given:
                raise ValueError(
                    f"strategy {self.strategy!r} needs {name}; set {name} "
                    f"(e.g. {name}: {0.5 if name == 'fraction' else 1000})"
                )
            if name != wanted and given:
                users = [s for s, n in needs.items() if n == name]
                raise ValueError(
                    f"{name} is only used by strategy {users[0]!r}, but strategy is "
                    f"{self.strategy!r}; remove {name} or set strategy: {users[0]}"
                )
        return self


_ARCHITECTURES = ("mlp", "tempcnn", "ltae")


class TrainingSpec(_Strict):
    """How a torch model is trained (the loop is seeded with spec.sampling.seed)."""

    epochs: int = Field(
        100, ge=1, le=100_000, description="Maximum number of passes over the data."
    )
    batch_size: int = Field(256, ge=2, le=1_000_000, description="Samples per optimizer step.")
    learning_rate: float = Field(1e-3, gt=0, le=1, description="AdamW learning rate.")
    weight_decay: float = Field(1e-4, ge=0, le=1, description="AdamW weight decay.")
    patience: int = Field(
        10,
        ge=1,
        le=100_000,
        description="Stop after this many epochs without a lower validation loss; the weights of "
        "the best epoch are kept.",
    )
    validation_fraction: float = Field(
        0.2,
        gt=0,
        lt=1,
        description="Share of the training polygons held out to measure the validation loss "
        "(split by polygon, stratified by class).",
    )
    class_weights: Literal["none", "balanced"] = Field(
        "none",
        description="'balanced': weight the loss of each class by the inverse of its frequency "
        "(classification only).",
    )
    device: Literal["auto", "cpu", "cuda"] = Field(
        "auto", description="Where to train: 'auto' uses a CUDA GPU when one is present."
    )


class GridSearchSpec(_Strict):
    """Cross-validated search of a scikit-learn estimator's parameters."""

    param_grid: dict[str, list[Any]] = Field(
        min_length=1,
        description="Candidate values of estimator parameters, e.g. {n_estimators: [100, 300]}; "
        "every combination is tried.",
    )
    folds: int = Field(
        5, ge=2, le=50, description="Cross-validation folds, grouped by polygon and stratified."
    )
    scoring: str | None = Field(
        None,
        description="scikit-learn scorer name (default: accuracy for classification, r2 for "
        "regression).",
    )

    @field_validator("param_grid")
    @classmethod
    def _non_empty(cls, grid: dict[str, list[Any]]) -> dict[str, list[Any]]:
        empty = sorted(name for name, values in grid.items() if not values)
        if empty:
            raise ValueError(
                f"parameter(s) {empty} have no candidate value; give at least one value each"
            )
        return grid


class ModelSpec(_Strict):
    """The model: a scikit-learn estimator, a torch network, or a model trained elsewhere."""

    kind: Literal["sklearn", "torch", "external"] = Field(
        "sklearn",
        description="'sklearn': an estimator by import path; 'torch': a neural network on the "
        "pixel time series; 'external': a model trained elsewhere, used for prediction only.",
    )
    estimator: str = Field(
        "sklearn.ensemble.RandomForestClassifier",
        pattern=_IMPORT_PATH,
        description="Import path of a scikit-learn compatible estimator (kind sklearn), e.g. "
        "sklearn.svm.SVC or sklearn.ensemble.RandomForestRegressor.",
    )
    architecture: str | None = Field(
        None,
        description="Network (kind torch): mlp, tempcnn, ltae, or the import path "
        "(package.module:Class) of a torch.nn.Module.",
    )
    params: dict[str, Any] = Field(
        default_factory=dict,
        description="Keyword arguments of the estimator, or hyper-parameters of the network.",
    )
    standardize: bool | None = Field(
        None,
        description="Scale each feature (torch: each variable) to zero mean and unit variance "
        "before the model (default: on for torch, off for sklearn).",
    )
    grid_search: GridSearchSpec | None = Field(
        None, description="Cross-validated parameter search (kind sklearn)."
    )
    training: TrainingSpec = Field(
        default_factory=TrainingSpec, description="Training loop settings (kind torch)."
    )
    path: str | None = Field(
        None,
        description="Model trained elsewhere (kind external): a sitsflow model folder, or a "
        ".skops / .joblib file of a scikit-learn estimator fitted on a DataFrame whose columns "
        "are the cube's feature names (relative paths are relative to the manifest).",
    )

    @field_validator("architecture")
    @classmethod
    def _architecture(cls, value: str | None) -> str | None:
        if value is not None and value not in _ARCHITECTURES and not re.match(_IMPORT_PATH, value):
            raise ValueError(
                f"architecture {value!r} is neither a built-in network nor an import path; "
                f"use one of {', '.join(_ARCHITECTURES)} or package.module:Class"
            )
        return value

    @model_validator(mode="after")
    def _fields_of_kind(self) -> ModelSpec:
        used_by = {
            "estimator": "sklearn",
            "grid_search": "sklearn",
            "architecture": "torch",
            "training": "torch",
            "path": "external",
        }
        for name, kind in used_by.items():
            if (
                name in self.model_fields_set
                and kind != self.kind
                and (getattr(self, name) is not None)
            ):
                raise ValueError(
                    f"{name} is only used by kind {kind!r}, but kind is {self.kind!r}; "
                    f"remove {name} or set kind: {kind}"
                )
        if self.kind == "torch" and self.architecture is None:
            raise ValueError(
                "kind 'torch' needs an architecture; set architecture: tempcnn (or mlp, ltae)"
            )
        if self.kind == "external":
            if not self.path:
                raise ValueError(
                    "kind 'external' needs the path of the model; set path to a sitsflow model "
                    "folder or a .skops/.joblib file"
                )
            given = sorted({"params", "standardize"} & self.model_fields_set)
            if given:
                raise ValueError(f"{given} cannot change a model trained elsewhere; remove them")
        return self


_STORE_SCHEMES = ("s3", "gs", "gcs", "az", "abfs", "abfss", "file")
_BUCKET = r"^[a-z0-9][a-z0-9.-]{1,61}[a-z0-9]$"


def _at(field: str, problem: str, fix: str) -> ValueError:
    """A validator error that names the exact key: rendered as ``<section>.<field>: ...``."""
    return ValueError(f"[{field}] {problem}; {fix}")


def _check_store(store: str) -> str:
    if "\x00" in store:
        raise ValueError("the store contains a NUL character; give a plain folder or URL")
    if not _is_url(store):
        return store
    scheme, _, rest = store.partition("://")
    scheme = scheme.lower()
    bucket = rest.split("/", 1)[0]
    # Credentials and signed queries first, and never echoed: the message is printed and logged.
    if "@" in bucket:
        raise ValueError(
            "the store URL holds credentials (user:secret@); remove them, credentials come from "
            "the environment, fsspec/boto configuration or a Kubernetes secret, never the manifest"
        )
    if "?" in rest or "#" in rest:
        raise ValueError(
            f"the store URL {scheme}://{bucket}/... has a query or fragment; give a plain "
            "location such as s3://bucket/runs/name (options and credentials come from the "
            "environment)"
        )
    if scheme in ("http", "https"):
        raise ValueError(
            f"store {store!r} is an HTTP URL, which cannot be written; use a local folder or an "
            "object storage URL such as s3://bucket/runs/name"
        )
    if scheme not in _STORE_SCHEMES:
        raise ValueError(
            f"store {store!r} uses the unsupported scheme {scheme!r}; use a local folder or "
            f"one of {', '.join(s + '://' for s in _STORE_SCHEMES)}"
        )
    if scheme == "file":
        if not rest.startswith("/"):
            raise ValueError(
                f"store {store!r} is not an absolute file:// URL; write file:///absolute/path or "
                "a plain (relative) path"
            )
        return rest
    if scheme == "s3" and not re.match(_BUCKET, bucket):
        raise ValueError(
            f"store {store!r} has no valid bucket name ({bucket!r}: 3-63 lowercase letters, "
            "digits, '.' and '-'); write it as s3://bucket/prefix"
        )
    if not bucket:
        raise ValueError(f"store {store!r} has no bucket; write it as {scheme}://bucket/prefix")
    return f"{scheme}://{rest.rstrip('/')}"


def _check_member(name: str, value: str, suffixes: tuple[str, ...] = ()) -> str:
    """A path inside the run store: relative, posix, never climbing out of the store."""
    from pipeline.run.layout import RESERVED, RESERVED_PATHS, reserved_by

    text = value.strip()
    if _is_url(text) or text.startswith(("/", "~")) or re.match(r"^[A-Za-z]:", text):
        raise ValueError(
            f"{name} {value!r} is not a path inside the run store; give a relative path such as "
            f"{'maps/' + name + '.tif' if suffixes else name} (it is placed under outputs.store)"
        )
    if "\\" in text:
        raise ValueError(f"{name} {value!r} uses backslashes; write it with '/' separators")
    parts = text.split("/")
    if ".." in parts:
        raise ValueError(
            f"{name} {value!r} climbs out of the run store with '..'; keep it inside the store "
            f"(e.g. {'maps/' + name + '.tif' if suffixes else name})"
        )
    if any(p in ("", ".") for p in parts):
        raise ValueError(
            f"{name} {value!r} has an empty or '.' path segment; write it like maps/{name}.tif"
        )
    taken = reserved_by(text)
    if taken is not None:
        raise ValueError(
            f"{name} {value!r} lies in {taken!r}, which the run keeps for itself; choose "
            f"another path (reserved: {', '.join([*sorted(RESERVED), *RESERVED_PATHS])})"
        )
    if suffixes and not text.lower().endswith(suffixes):
        raise ValueError(
            f"{name} {value!r} must end with {' or '.join(suffixes)} (a Cloud-Optimized "
            f"GeoTIFF); rename it, e.g. {text.rsplit('.', 1)[0]}.tif"
        )
    return text


class OutputsSpec(_Strict):
    """Where the run writes: the run store, a local folder or an object-storage prefix.

    The store holds the cube, samples, model, maps, report and the run's state (its ledger).
    """

    store: str = Field(
        description="Run store: a local folder (relative paths are relative to the manifest) or "
        "an object storage URL such as s3://bucket/runs/name. Credentials come from the "
        "environment, never from here.",
        min_length=1,
    )
    labels: str = Field(
        "maps/labels.tif",
        description="Path of the label map (COG) inside the run store.",
        min_length=1,
    )
    confidence: str = Field(
        "maps/confidence.tif",
        description="Path of the confidence map (COG) inside the run store.",
        min_length=1,
    )
    probabilities: bool = Field(
        False,
        description="Also write, beside the label map, one COG per class of the training data "
        "with the model's probability of that class (percent; probability_<code>.tif).",
    )
    values: str = Field(
        "maps/values.tif",
        description="Path of the predicted value map (COG, task regression) inside the run store.",
        min_length=1,
    )
    report: str = Field(
        "report",
        description="Folder of the accuracy report inside the run store.",
        min_length=1,
    )
    cube_encoding: Literal["int16", "float32"] = Field(
        "int16",
        description="How the cube stores its time series. int16: scaled integers, reflectance "
        "bands, NDVI and NDWI in steps of 1e-4, bands in dB in steps of 0.01 (brightness in the "
        "step of its bands), -32768 for no value; other bands and user features stay float32. "
        "Half the bytes of float32 to write and store; 1e-4 reflectance is below the sensors' "
        "radiometric precision. Samples, maps and the streamed path all see the stored values. "
        "float32: every time series as float32.",
    )

    @field_validator("store")
    @classmethod
    def _store_location(cls, store: str) -> str:
        return _check_store(store)

    @field_validator("labels", "confidence")
    @classmethod
    def _map_paths(cls, value: str, info: ValidationInfo) -> str:
        return _check_member(str(info.field_name), value, (".tif", ".tiff"))

    @field_validator("report")
    @classmethod
    def _report_path(cls, value: str) -> str:
        return _check_member("report", value)

    @model_validator(mode="after")
    def _distinct(self) -> OutputsSpec:
        named = {"labels": self.labels, "confidence": self.confidence, "report": self.report}
        order = list(named)
        for a, path_a in named.items():
            for b, path_b in named.items():
                if order.index(a) < order.index(b) and path_a == path_b:
                    raise _at(b, f"{a} and {b} are both {path_a!r}", f"give {b} its own path")
                if a != b and path_b.startswith(path_a.rstrip("/") + "/"):
                    raise _at(
                        b,
                        f"{b} {path_b!r} lies inside {a} {path_a!r}",
                        f"put {b} beside {a}, not inside it",
                    )
        return self


_DASK_ADDRESS = (
    r"^(tcp|tls|ws|wss)://(\[[0-9A-Fa-f:.]+\]|[A-Za-z0-9]([A-Za-z0-9.-]*[A-Za-z0-9])?):\d{1,5}$"
)
_IMAGE = (
    r"^[a-z0-9]+([._-][a-z0-9]+)*(:\d+)?(/[a-z0-9]+([._-][a-z0-9]+)*)*"
    r"(:[\w][\w.-]{0,127})?(@sha256:[0-9a-f]{64})?$"
)
_SECRET_NAME = r"^[a-z0-9]([-a-z0-9.]*[a-z0-9])?$"


class AdaptiveSpec(_Strict):
    """Adaptive scaling: dask adds workers while units wait and retires idle ones."""

    minimum: int = Field(0, ge=0, le=1000, description="Fewest workers kept.")
    maximum: int = Field(ge=1, le=1000, description="Most workers started.")

    @model_validator(mode="after")
    def _bounds(self) -> AdaptiveSpec:
        if self.minimum > self.maximum:
            raise _at(
                "minimum",
                f"minimum {self.minimum} is above maximum {self.maximum}",
                "make minimum at most maximum",
            )
        return self


class KubernetesSpec(_Strict):
    """A dask cluster the run starts on Kubernetes (dask-kubernetes operator, DaskCluster)."""

    image: str = Field(
        description="Container image of the scheduler and workers; it must hold this sitsflow "
        "version (e.g. ghcr.io/org/sitsflow:0.1.0).",
        pattern=_IMAGE,
        max_length=255,
    )
    namespace: str | None = Field(
        None,
        description="Namespace of the DaskCluster (default: the current context's namespace).",
        pattern=_NAME,
        max_length=63,
    )
    credentials_secret: str | None = Field(
        None,
        description="Name of a Kubernetes Secret whose keys become environment variables of the "
        "scheduler and workers (e.g. AWS_ACCESS_KEY_ID); the manifest holds only its name.",
        pattern=_SECRET_NAME,
        max_length=253,
    )
    service_account: str | None = Field(
        None,
        description="Service account of the pods (e.g. one bound to a cloud role: no keys).",
        pattern=_SECRET_NAME,
        max_length=253,
    )
    scheduler_memory: str = Field(
        "2GiB", pattern=_MEMORY, description="Memory request and limit of the scheduler pod."
    )
    image_pull_policy: Literal["IfNotPresent", "Always", "Never"] = Field(
        "IfNotPresent", description="When the nodes pull the image."
    )


class ComputeSpec(_Strict):
    """The dask cluster, the chunking of the work and how units are submitted."""

    cluster: Literal["local", "address", "kubernetes"] = Field(
        "local",
        description="'local': a distributed.LocalCluster on this machine; 'address': an existing "
        "dask scheduler (compute.address); 'kubernetes': a DaskCluster the run starts with "
        "dask-kubernetes (compute.kubernetes).",
    )
    address: str | None = Field(
        None,
        description="Scheduler address for cluster 'address', e.g. tcp://dask-scheduler:8786.",
        pattern=_DASK_ADDRESS,
    )
    workers: int = Field(
        2,
        ge=1,
        le=512,
        description="Worker processes (local) or pods (kubernetes) at the start; with adaptive, "
        "the number started before scaling.",
    )
    threads_per_worker: int = Field(1, ge=1, le=64, description="Threads in each worker.")
    memory_limit: str = Field(
        "4GiB", pattern=_MEMORY, description="Memory limit per worker, e.g. 4GiB."
    )
    chunk_size: int = Field(
        256, ge=16, le=8192, description="Side of the square chunks, in pixels."
    )
    dashboard_port: int = Field(
        8787, ge=0, le=65535, description="Dashboard port of a local cluster (0: any free port)."
    )
    adaptive: AdaptiveSpec | None = Field(
        None,
        description="Scale the number of workers between minimum and maximum (local and "
        "kubernetes; an existing scheduler scales itself).",
    )
    kubernetes: KubernetesSpec | None = Field(
        None, description="Image, namespace and secrets of cluster 'kubernetes'."
    )
    retries: int = Field(
        2,
        ge=0,
        le=10,
        description="Times a unit is retried after a transient error (lost worker, flaky "
        "storage) before the run stops.",
    )
    max_units_in_flight: int | None = Field(
        None,
        ge=1,
        le=100_000,
        description="Most units submitted to the scheduler at once (default: twice the worker "
        "threads): the graph stays small whatever the size of the run.",
    )
    connect_timeout_s: float = Field(
        60.0,
        gt=0,
        le=3600,
        description="Seconds to wait for the scheduler (and the first worker) to answer.",
    )

    @field_validator("memory_limit")
    @classmethod
    def _memory_floor(cls, value: str) -> str:
        from dask.utils import parse_bytes

        if parse_bytes(value.replace(" ", "")) < 256 * 2**20:
            raise ValueError(
                f"memory_limit {value} is too small for a worker (at least 256MiB); give e.g. 4GiB"
            )
        return value

    @model_validator(mode="after")
    def _cluster_options(self) -> ComputeSpec:
        if self.cluster == "address" and self.address is None:
            raise _at(
                "address",
                "cluster 'address' needs the scheduler's address",
                "set address, e.g. tcp://dask-scheduler:8786, or use cluster: local",
            )
        if self.cluster != "address" and self.address is not None:
            raise _at(
                "address",
                f"address is only used by cluster 'address', but cluster is {self.cluster!r}",
                "remove address, or set cluster: address",
            )
        if self.cluster == "kubernetes" and self.kubernetes is None:
            raise _at(
                "kubernetes",
                "cluster 'kubernetes' needs a kubernetes section",
                "add kubernetes: {image: <image with sitsflow>}",
            )
        if self.cluster == "local" and self.kubernetes is not None:
            raise _at(
                "kubernetes",
                "the kubernetes section is only used by cluster 'kubernetes', but cluster is "
                "'local'",
                "remove it, or set cluster: kubernetes",
            )
        if self.adaptive is not None and self.cluster != "address":
            if self.workers > self.adaptive.maximum:
                raise _at(
                    "workers",
                    f"workers {self.workers} is above adaptive.maximum {self.adaptive.maximum}",
                    "lower workers or raise adaptive.maximum",
                )
            if self.workers < self.adaptive.minimum:
                raise _at(
                    "workers",
                    f"workers {self.workers} is below adaptive.minimum {self.adaptive.minimum}",
                    "raise workers or lower adaptive.minimum",
                )
        return self

    @field_validator("chunk_size")
    @classmethod
    def _chunk_multiple(cls, size: int) -> int:
        if size % 16:
            raise ValueError(
                f"chunk_size {size} must be a multiple of 16 (COG and Zarr blocks); "
                f"try {max(16, size // 16 * 16)}"
            )
        return size


class RunSpec(_Strict):
    """Everything a run needs. This is the ``spec`` of the SitsRun custom resource."""

    task: Literal["classification", "regression", "extraction"] = Field(
        "classification",
        description="What the run produces: 'classification' (a label map), 'regression' "
        "(a map of values) or 'extraction' (the samples' features as GeoParquet, read straight "
        "from the imagery: no cube, model or map).",
    )
    period: PeriodSpec
    also_map: list[PeriodSpec] = Field(
        default_factory=list,
        description="Further periods mapped with the run's one model (e.g. other years): one "
        "cube and one set of maps per period under periods/<name>/. Each must give as many "
        "dates as spec.period on every sensor's grid (features are aligned by position in "
        "the season).",
    )
    sensors: list[SensorSpec] = Field(min_length=1)
    area: AreaSpec = Field(default_factory=AreaSpec)
    features: FeaturesSpec = Field(default_factory=FeaturesSpec)
    reference: ReferenceSpec
    sampling: SamplingSpec = Field(default_factory=SamplingSpec)
    model: ModelSpec = Field(default_factory=ModelSpec)
    outputs: OutputsSpec
    compute: ComputeSpec = Field(default_factory=ComputeSpec)

    @model_validator(mode="after")
    def _consistent(self) -> RunSpec:
        names = [s.name for s in self.sensors]
        dupes = sorted({n for n in names if names.count(n) > 1})
        if dupes:
            raise ValueError(f"sensor names {dupes} appear more than once; give each a unique name")
        reference = self.reference
        if self.task == "classification" and reference.label_field is None:
            raise ValueError(
                "task 'classification' needs class labels but reference gives value_field "
                f"{reference.value_field!r}; set task: regression, or give reference.label_field"
            )
        if self.task == "regression" and reference.value_field is None:
            raise ValueError(
                "task 'regression' needs values but reference gives label_field "
                f"{reference.label_field!r}; set task: classification, or give "
                "reference.value_field (a numeric field)"
            )
        labels = [self.period.label, *(p.label for p in self.also_map)]
        twice = sorted({n for n in labels if labels.count(n) > 1})
        if twice:
            raise ValueError(
                f"period names {twice} appear more than once among period and also_map; give "
                "each period a unique name (also_map[i].name) or remove the repeated period"
            )
        if self.also_map and self.task == "extraction":
            raise ValueError(
                "also_map lists periods to map, but task 'extraction' makes no map; remove "
                "also_map, or give the samples their own windows (reference.start_field)"
            )
        if reference.split_field is not None and self.sampling.runs > 1:
            raise ValueError(
                f"reference.split_field {reference.split_field!r} fixes the split, so "
                f"sampling.runs {self.sampling.runs} would repeat the same split; set "
                "sampling.runs: 1, or remove split_field"
            )
        if self.task == "regression" and self.sampling.strategy in (
            "per_class_count",
            "smallest_class",
        ):
            raise ValueError(
                f"sampling.strategy {self.sampling.strategy!r} balances classes, which a "
                "regression run has none of; use strategy 'all' or 'percentage'"
            )
        needs = {"ndvi": ("red", "nir"), "ndwi": ("green", "nir"), "brightness": ()}
        for index in self.features.indices or []:
            for sensor in self.sensors:
                missing = [b for b in needs[index] if b not in sensor.bands]
                if missing:
                    raise ValueError(
                        f"index {index!r} needs bands {list(needs[index])} but sensor "
                        f"{sensor.name!r} has no {missing}; add them to its bands or drop the index"
                    )
        return self


_LABEL_NAME = r"^[A-Za-z0-9]([-A-Za-z0-9_.]{0,61}[A-Za-z0-9])?$"
_DNS_SUBDOMAIN = r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?(\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*$"


def _check_label_key(key: str) -> None:
    prefix, _, name = key.rpartition("/")
    if prefix and (len(prefix) > 253 or not re.match(_DNS_SUBDOMAIN, prefix)):
        raise ValueError(
            f"key {key!r} has an invalid prefix {prefix!r}; use a DNS name such as example.org/"
        )
    if not re.match(_LABEL_NAME, name):
        raise ValueError(
            f"key {key!r} is not a Kubernetes label key (1-63 letters, digits, '-', '_', '.', "
            "starting and ending alphanumeric, with an optional DNS prefix); rename it, e.g. "
            "team or example.org/team"
        )


class Metadata(_Strict):
    """The resource's metadata, as in every Kubernetes object."""

    name: str = Field(
        description="Run name (lowercase letters, digits and '-', as Kubernetes names).",
        pattern=_NAME,
        max_length=63,
    )
    namespace: str | None = Field(
        None,
        description="Kubernetes namespace of the SitsRun (used by kubectl and the operator).",
        pattern=_NAME,
        max_length=63,
    )
    labels: dict[str, str] = Field(
        default_factory=dict,
        description="Kubernetes labels (key: value, values of at most 63 characters).",
    )
    annotations: dict[str, str] = Field(
        default_factory=dict, description="Kubernetes annotations (free text values)."
    )

    @field_validator("labels")
    @classmethod
    def _labels(cls, labels: dict[str, str]) -> dict[str, str]:
        for key, value in labels.items():
            _check_label_key(key)
            if value and not re.match(_LABEL_NAME, value):
                raise ValueError(
                    f"label {key!r} has the value {value!r}, not a Kubernetes label value (at "
                    "most 63 letters, digits, '-', '_', '.', starting and ending alphanumeric); "
                    "shorten it or move it to annotations"
                )
        return labels

    @field_validator("annotations")
    @classmethod
    def _annotations(cls, annotations: dict[str, str]) -> dict[str, str]:
        for key in annotations:
            _check_label_key(key)
        if sum(len(k) + len(v) for k, v in annotations.items()) > 256 * 1024:
            raise ValueError("annotations exceed 256 KiB in total; keep large data out of them")
        return annotations


class RunManifest(_Strict):
    """A whole manifest file: the SitsRun resource."""

    apiVersion: Literal["sitsflow.dev/v1alpha1"] = API_VERSION  # noqa: N815 (Kubernetes key)
    kind: Literal["SitsRun"] = KIND
    metadata: Metadata
    spec: RunSpec

    @property
    def name(self) -> str:
        return self.metadata.name


# --- loading -------------------------------------------------------------------------------------


def load_manifest(path: str | Path) -> RunManifest:
    """Read, validate and normalize a manifest file; raise ManifestError naming every problem."""
    path = Path(path)
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise ManifestError(
            f"manifest file {str(path)!r} does not exist", fix="check the path"
        ) from None
    except (OSError, UnicodeDecodeError) as exc:
        raise ManifestError(
            f"manifest file {str(path)!r} cannot be read ({exc})",
            fix="check that it is a readable UTF-8 YAML file",
        ) from None
    return parse_manifest(text, base_dir=path.resolve().parent, source=str(path))


def parse_manifest(text: str, *, base_dir: Path, source: str = "<manifest>") -> RunManifest:
    try:
        data = yaml.safe_load(text)
    except yaml.YAMLError as exc:
        where = ""
        mark = getattr(exc, "problem_mark", None)
        if mark is not None:
            where = f" at line {mark.line + 1}, column {mark.column + 1}"
        problem = getattr(exc, "problem", None) or "invalid YAML"
        raise ManifestError(
            f"{source} is not valid YAML{where}: {problem}",
            fix="correct the YAML syntax (indentation, colons, quotes) at that place",
        ) from None
    if not isinstance(data, dict):
        raise ManifestError(
            f"{source} must be a YAML mapping with apiVersion, kind, metadata and spec, "
            f"got {type(data).__name__}",
            fix="start from examples/slovenia/run.yaml",
        )
    try:
        manifest = RunManifest.model_validate(data)
    except ValidationError as exc:
        raise ManifestError(_explain(exc, data, source)) from None
    manifest = _resolve_paths(manifest, base_dir)
    _check_locations(manifest)
    return manifest


def with_store(manifest: RunManifest, store: str, *, base_dir: Path | None = None) -> RunManifest:
    """The manifest writing to ``store`` instead (a CLI override), checked like the manifest's."""
    try:
        outputs = OutputsSpec.model_validate({**manifest.spec.outputs.model_dump(), "store": store})
    except ValidationError as exc:
        raise ManifestError(
            _explain(exc, {}, "--store").replace("  - store:", "  - --store (spec.outputs.store):")
        ) from None
    outputs = outputs.model_copy(update={"store": _resolve(outputs.store, base_dir or Path.cwd())})
    changed = manifest.model_copy(
        update={"spec": manifest.spec.model_copy(update={"outputs": outputs})}
    )
    _check_locations(changed)
    return changed


def _is_url(value: str) -> bool:
    return bool(re.match(r"^[a-zA-Z][a-zA-Z0-9+.-]*://", value))


def _resolve(value: str, base_dir: Path) -> str:
    """Normalize a location once: URLs as they are, local paths (and file:// URLs) absolute."""
    if value.startswith("file://"):
        value = value.removeprefix("file://")
    if _is_url(value):
        return value
    return str((base_dir / Path(value).expanduser()).resolve())


_USERINFO = re.compile(r"^[a-zA-Z][a-zA-Z0-9+.-]*://[^/?#]*@")


def _inputs(manifest: RunManifest) -> list[tuple[str, str]]:
    """(field path, location) of every input the run reads."""
    spec = manifest.spec
    found = [(f"spec.sensors[{i}].catalog.url", s.catalog.url) for i, s in enumerate(spec.sensors)]
    found.append(("spec.reference.path", spec.reference.path))
    if spec.reference.regions is not None:
        found.append(("spec.reference.regions.path", spec.reference.regions.path))
    if spec.model.path:
        found.append(("spec.model.path", spec.model.path))
    return found


def _check_locations(manifest: RunManifest) -> None:
    """Checks that need resolved paths: no credentials in URLs, no input inside what the run
    writes (a rerun would overwrite it)."""
    from pipeline.run.layout import RunLayout

    outputs = manifest.spec.outputs
    for field, location in _inputs(manifest):
        if _USERINFO.match(location):
            raise ManifestError(
                f"{location.split('@', 1)[0].split('://')[0]}://...@ URL holds credentials",
                fix="remove them from the URL; give credentials through the environment (or "
                "headers_from_env / a Kubernetes secret), never in the manifest",
                field=field,
            )
    if _is_url(outputs.store):
        return
    store = Path(outputs.store)
    written = RunLayout(
        store, outputs.labels, outputs.confidence, outputs.report, outputs.values
    ).written()
    for field, location in _inputs(manifest):
        if _is_url(location):
            continue
        path = Path(location)
        for target in written:
            if path == target or target in path.parents:
                raise ManifestError(
                    f"input {location!r} lies inside {str(target)!r}, which the run writes "
                    f"(outputs.store {str(store)!r})",
                    fix="keep inputs outside what the run writes: move the file, or choose "
                    "another outputs.store",
                    field=field,
                )


def _resolve_paths(manifest: RunManifest, base_dir: Path) -> RunManifest:
    spec = manifest.spec
    sensors = [
        s.model_copy(
            update={
                "catalog": s.catalog.model_copy(update={"url": _resolve(s.catalog.url, base_dir)})
            }
        )
        for s in spec.sensors
    ]
    spec = spec.model_copy(
        update={
            "sensors": sensors,
            "reference": spec.reference.model_copy(
                update={
                    "path": _resolve(spec.reference.path, base_dir),
                    "regions": spec.reference.regions
                    and spec.reference.regions.model_copy(
                        update={"path": _resolve(spec.reference.regions.path, base_dir)}
                    ),
                }
            ),
            "model": spec.model.model_copy(update={"path": _resolve(spec.model.path, base_dir)})
            if spec.model.path
            else spec.model,
            "outputs": spec.outputs.model_copy(
                update={"store": _resolve(spec.outputs.store, base_dir)}
            ),
        }
    )
    return manifest.model_copy(update={"spec": spec})


# --- error messages ------------------------------------------------------------------------------


def _field_path(loc: Sequence[int | str]) -> str:
    out = ""
    for part in loc:
        if isinstance(part, int):
            out += f"[{part}]"
        else:
            out += f".{part}" if out else str(part)
    return out or "(top level)"


def _model_at(loc: Sequence[int | str]) -> Any:
    """The pydantic model that holds the key at the end of ``loc`` (None when unknown)."""
    current: Any = RunManifest
    for part in loc[:-1]:
        if isinstance(part, int):
            continue
        if not (isinstance(current, type) and issubclass(current, BaseModel)):
            return None
        info = current.model_fields.get(part)
        if info is None:
            return None
        current = _model_of(info.annotation)
    if isinstance(current, type) and issubclass(current, BaseModel):
        return current
    return None


def _allowed_keys(loc: Sequence[int | str]) -> list[str]:
    model = _model_at(loc)
    return list(model.model_fields) if model is not None else []


def _description(loc: Sequence[int | str]) -> str | None:
    """The field's documentation, to show what a good value looks like."""
    keys = [p for p in loc if isinstance(p, str)]
    model = _model_at([p for p in loc if not isinstance(p, int)])
    if model is None or not keys:
        return None
    info = model.model_fields.get(keys[-1])
    return info.description if info is not None else None


def _model_of(annotation: Any) -> Any:
    if isinstance(annotation, type) and issubclass(annotation, BaseModel):
        return annotation
    for arg in getattr(annotation, "__args__", ()) or ():
        found = _model_of(arg)
        if found is not None:
            return found
    return None


def _fix_for(err: Any, loc: Sequence[int | str]) -> str:
    kind = err["type"]
    ctx = err.get("ctx") or {}
    if kind == "extra_forbidden":
        allowed = _allowed_keys(loc)
        key = str(loc[-1]) if loc else ""
        close = difflib.get_close_matches(key, allowed, n=1)
        hint = f"did you mean {close[0]!r}? " if close else ""
        return f"{hint}remove the key or use one of: {', '.join(allowed)}"
    if kind == "missing":
        return "add this field (see examples/slovenia/run.yaml)"
    if kind == "literal_error":
        return f"use one of {ctx.get('expected')}"
    if kind in ("greater_than", "greater_than_equal", "less_than", "less_than_equal"):
        described = _description(loc)
        return "use a value in the allowed range" + (
            f" ({described.rstrip('.')})" if described else ""
        )
    if kind == "string_pattern_mismatch":
        described = _description(loc)
        if described:
            return f"give a value as described: {described.rstrip('.')}"
        return f"use a value matching {ctx.get('pattern')}"
    if kind.startswith(("int_", "float_", "bool_", "date_", "string_type", "dict_", "list_")):
        return "give a value of the expected type"
    if kind == "too_short":
        return "give at least one entry"
    return "correct the value"


def _explain(exc: ValidationError, data: Any, source: str) -> str:
    lines = [f"{source} is not a valid SitsRun manifest ({exc.error_count()} problem(s)):"]
    for err in exc.errors(include_url=False):
        loc = tuple(err["loc"])
        path = _field_path(loc)
        msg = err["msg"]
        if err["type"] == "value_error":
            # Our validators phrase their messages as "<problem>; <fix>", optionally starting
            # with "[key] " to name the key of the section they checked (see _at).
            text = msg.removeprefix("Value error, ")
            named = re.match(r"^\[([A-Za-z_][\w.\[\]]*)\] ", text)
            if named:
                path = f"{path}.{named.group(1)}" if loc else named.group(1)
                text = text[named.end() :]
            problem, _, fix = text.rpartition("; ")
            if problem:
                lines.append(f"  - {path}: {problem}. Fix: {fix}.")
            else:
                lines.append(f"  - {path}: {fix}.")
            continue
        got = ""
        if err["type"] != "missing":
            shown = json.dumps(err.get("input"), default=str)
            shown = re.sub(r"(://[^/:@\s\"]*:)[^@/\s\"]+@", r"\1***@", shown)  # URL passwords
            got = f" (got {shown[:80]})"
        lines.append(f"  - {path}: {msg}{got}. Fix: {_fix_for(err, loc)}.")
    return "\n".join(lines)


def json_schema() -> dict[str, Any]:
    """JSON Schema of the RunSpec (the CRD's spec schema is derived from it)."""
    return RunSpec.model_json_schema()
