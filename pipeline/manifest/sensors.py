"""The sensors section: each sensor's catalog, bands, quality masks and options."""

from __future__ import annotations

import re
from typing import Annotated, Any, Literal

from pydantic import (
    Field,
    ValidationInfo,
    field_validator,
    model_validator,
)

from pipeline.errors import ManifestError
from pipeline.manifest.common import (
    _ENV_VAR,
    _HEADER,
    _IDENT,
    _MGRS_TILE,
    _lon_lat_ok,
    _Strict,
)


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
    on_bad_item: Literal["stop", "skip"] = Field(
        "stop",
        description="An item with a missing or unreadable file, found while planning: 'stop' "
        "the run there (the message lists them), or 'skip' the item with a warning (skipped "
        "items are listed in the run summary).",
    )
    check_files: Literal["auto", "always", "never"] = Field(
        "auto",
        description="Checks of the asset files while planning: 'auto' checks that local and "
        "object-storage files exist and reads the header of each (CRS, origin, all no-data) "
        "when there are at most 100 files; 'always' reads every header (HTTP files too); "
        "'never' checks nothing.",
    )

    def __canonical__(self) -> dict[str, object]:
        # What planning does about bad files is not part of digests (nor in CatalogConfig's).
        dumped = self.model_dump(mode="json", exclude={"on_bad_item", "check_files"})
        return {"__type__": "CatalogSpec", **dumped}

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
    scale: float = Field(
        1.0, allow_inf_nan=False, description="Physical value = raw * scale + offset."
    )
    offset: float = Field(
        0.0, allow_inf_nan=False, description="Physical value = raw * scale + offset."
    )
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
    masking: Literal["date", "band"] = Field(
        "date",
        description="What a band's no-data or its own quality flag (a saturation bit) "
        "invalidates: 'date' every band of that acquisition at that pixel (one observation of "
        "the ground per date); 'band' that band only, each band gap-filled on its own valid "
        "dates. Cloud and other shared quality rules invalidate every band either way.",
    )

    def __canonical__(self) -> dict[str, object]:
        # The catalog's bad-file options are not part of digests (see CatalogSpec); masking
        # only when set, so that runs made before it existed keep their digests.
        exclude: dict[str, Any] = {"catalog": {"on_bad_item", "check_files"}}
        if self.masking == "date":
            exclude["masking"] = True
        return {"__type__": "SensorSpec", **self.model_dump(mode="json", exclude=exclude)}

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

        try:
            profile_by_name(profile).check_options(options)
        except ManifestError as exc:
            raise ValueError(f"{exc.what}; {exc.fix}") from None
        return options


def _profile_bands(profile: str, bands: dict[str, BandSpec | None]) -> dict[str, BandSpec | None]:
    """Profile band selection: names or provider ids (B04) to names; empty means every band.
    The rule is the catalog's (``SensorProfile.band_selection``)."""
    from pipeline.catalog.profiles import profile_by_name

    described = [name for name, spec in bands.items() if spec is not None]
    try:
        names = profile_by_name(profile).band_selection(list(bands), described=described)
    except ManifestError as exc:
        raise ValueError(f"{exc.what}; {exc.fix}") from None
    if not bands:
        return dict.fromkeys(names)
    return dict(zip(names, bands.values(), strict=True))
