"""Sensor profiles: which assets hold which bands, how to scale them, what makes a pixel invalid.

A profile is data, not code: adding a sensor is adding a description (see ``profiles.py`` for the
built-in ones). The manifest's ``sensors`` entries are turned into these frozen profiles once, at
the edge (``sensor_profiles``); workers only see resolved profiles.

Three things are resolved before a profile reaches a worker:

* the band selection (``bands: [red, nir]``): masks keep only the per-band bits of kept bands;
* the profile options (``options: {units: db}``): each choice is a small data patch;
* the item binding (``asset_refs``, ``item_offsets``): which item asset holds each band (asset
  keys differ between catalogs, e.g. ``red`` on Earth Search and ``B04`` on Planetary Computer)
  and the per-item reflectance offset (Sen2Cor processing baseline 04.00 and later).
"""

from __future__ import annotations

import difflib
import re
from collections.abc import Collection, Mapping, Sequence
from dataclasses import dataclass, field, fields, replace
from typing import TYPE_CHECKING, Any, Literal, Protocol, TypeVar

import numpy as np

from pipeline.errors import CatalogError, ManifestError
from pipeline.model import Acquisition, AssetRef

if TYPE_CHECKING:
    from pipeline.catalog.config import SensorConfig

DEFAULT_DATE_STEP_DAYS = 10


class _HasProperties(Protocol):
    @property
    def properties(self) -> dict[str, Any]: ...


_ItemT = TypeVar("_ItemT", bound=_HasProperties)


@dataclass(frozen=True)
class BandRead:
    """One band of a sensor: the name it gets in the cube and how to read it from its asset.

    ``asset`` is the key the acquisition stores the band's file under; ``asset_keys`` are the item
    asset keys that may hold it, tried in order (default: ``asset`` itself). ``band_index`` picks
    the band inside a multi-band file. The physical value is ``raw * scale + offset``, then
    ``10 * log10(value)`` when ``to_db`` (backscatter in decibels; values <= 0 become NaN).
    """

    name: str
    asset: str
    scale: float = 1.0
    offset: float = 0.0
    nodata: float | None = None  # None: the file's own no-data value
    band_index: int = 1
    asset_keys: tuple[str, ...] = ()
    resolution: float | None = None  # native pixel size (m), for docs and planning
    sensor_band: str | None = None  # the provider's band id, e.g. "B04"
    common_name: str | None = None  # STAC eo common name, e.g. "red"
    to_db: bool = False
    resampling: str = "bilinear"  # onto another grid; "nearest" for categorical bands
    reflectance: bool = True
    """Physical values of a reflectance's range (|value| < 3.2767): the int16 cube encoding
    stores them in steps of 1e-4. False for other quantities (linear backscatter), stored as
    float32; a band in dB (``to_db``) is stored in steps of 0.01 either way."""

    @property
    def keys(self) -> tuple[str, ...]:
        return self.asset_keys or (self.asset,)

    def decode(
        self, raw: np.ndarray, offset: float | None = None, *, out: np.ndarray | None = None
    ) -> np.ndarray:
        """Physical float32 values of ``raw`` (NaN stays NaN), into ``out`` when given (no
        temporary the size of the window); ``offset`` overrides the band's."""
        target = np.empty(raw.shape, dtype=np.float32) if out is None else out
        np.multiply(raw, np.float32(self.scale), out=target, casting="unsafe")
        shift = self.offset if offset is None else offset
        if shift:
            target += np.float32(shift)
        if self.to_db:
            positive = target > 0
            target[~positive] = np.nan  # no power, or no data: a gap, not -inf
            np.log10(target, out=target, where=positive)
            target *= np.float32(10.0)
        return target


@dataclass(frozen=True)
class MaskRule:
    """A quality layer: which of its values make a pixel invalid.

    A pixel is invalid when its value is in ``invalid_values``, has one of ``invalid_bits`` set,
    is not in ``valid_values`` (when given), or has the bit of a band in ``band_bits`` set (e.g.
    the THEIA saturation mask: one bit per band). ``for_bands`` keeps the band bits of the bands a
    run reads, so that a saturated band that is not read does not discard the pixel.
    """

    asset: str
    invalid_values: tuple[int, ...] = ()
    invalid_bits: tuple[int, ...] = ()
    valid_values: tuple[int, ...] = ()
    band_bits: tuple[tuple[str, int], ...] = ()
    asset_keys: tuple[str, ...] = ()
    band_index: int = 1
    description: str = ""

    @property
    def keys(self) -> tuple[str, ...]:
        return self.asset_keys or (self.asset,)

    @property
    def has_rule(self) -> bool:
        return bool(self.invalid_values or self.invalid_bits or self.valid_values or self.band_bits)

    def invalid(self, raw: np.ndarray) -> np.ndarray:
        """Boolean array, True where ``raw`` (integer quality values) marks the pixel invalid."""
        raw = raw.astype(np.int64, copy=False)
        bad = np.zeros(raw.shape, dtype=bool)
        if self.invalid_values:
            bad |= np.isin(raw, np.asarray(self.invalid_values, dtype=np.int64))
        if self.valid_values:
            bad |= ~np.isin(raw, np.asarray(self.valid_values, dtype=np.int64))
        bits = (*self.invalid_bits, *(bit for _, bit in self.band_bits))
        if bits:
            bitmask = 0
            for bit in bits:
                bitmask |= 1 << bit
            bad |= (raw & bitmask) != 0
        return bad

    def for_bands(self, names: Sequence[str]) -> MaskRule | None:
        """The rule restricted to the band bits of ``names``; None when nothing is left to test."""
        kept = tuple((band, bit) for band, bit in self.band_bits if band in names)
        rule = replace(self, band_bits=kept)
        return rule if rule.has_rule else None


@dataclass(frozen=True)
class PropertyOffset:
    """A raw offset that applies to items whose ``property`` (a version) is at least ``at_least``.

    Sen2Cor processing baseline 04.00 and later store ``reflectance * 10000 + 1000``: the rule
    ``PropertyOffset("s2:processing_baseline", "04.00", -1000)`` restores the reflectance. Items
    whose ``applied_flag`` property is true already had it removed (Earth Search's
    ``earthsearch:boa_offset_applied``). ``mode`` is set by the profile option: ``auto`` reads the
    property (an item without it is an error), ``always`` / ``never`` ignore it.
    """

    property: str
    at_least: str
    raw_offset: float
    applied_flag: str | None = None
    mode: Literal["auto", "always", "never"] = "auto"

    def applies(self, item_id: str, properties: Mapping[str, Any], *, field: str) -> bool:
        if self.mode != "auto":
            return self.mode == "always"
        if self.applied_flag and properties.get(self.applied_flag) is True:
            return False
        value = properties.get(self.property)
        if value is None:
            raise CatalogError(
                f"item {item_id!r} has no property {self.property!r}, needed to know whether its "
                f"reflectances carry an offset of {self.raw_offset:g} (from {self.at_least} on)",
                fix=f"add {self.property!r} to the item, or set the sensor's option boa_offset "
                "to 'always' or 'never'",
                field=field,
            )
        return _version(str(value), item_id, self.property, field) >= _version(
            self.at_least, "profile", self.property, field
        )


def _version(text: str, item_id: str, prop: str, field: str) -> tuple[int, ...]:
    parts = re.findall(r"\d+", text)
    if not parts:
        raise CatalogError(
            f"item {item_id!r} has {prop}={text!r}, which is not a version like '04.00'",
            fix=f"correct the item's {prop!r} property",
            field=field,
        )
    return tuple(int(p) for p in parts)


@dataclass(frozen=True)
class Series:
    """One of the series a sensor is split into: items whose ``property`` equals ``value``.

    Sentinel-1 ascending and descending passes see the ground under different angles, so they are
    kept apart as two sensors, ``<name>_asc`` and ``<name>_des``.
    """

    suffix: str
    property: str
    value: str


@dataclass(frozen=True)
class Choice:
    """One value of a profile option and the data patch it applies to the profile."""

    value: str
    description: str
    add_invalid_values: tuple[tuple[str, tuple[int, ...]], ...] = ()  # (mask asset, values)
    add_invalid_bits: tuple[tuple[str, tuple[int, ...]], ...] = ()  # (mask asset, bits)
    to_db: bool | None = None
    drop_masks: tuple[str, ...] = ()  # mask assets no longer read
    series: tuple[Series, ...] | None = None
    offset_mode: Literal["auto", "always", "never"] | None = None


@dataclass(frozen=True)
class ProfileOption:
    """A named option of a profile (``options: {name: value}`` in the manifest)."""

    name: str
    description: str
    default: str
    choices: tuple[Choice, ...]

    def choice(self, value: str) -> Choice:
        for choice in self.choices:
            if choice.value == value:
                return choice
        raise KeyError(value)

    @property
    def values(self) -> tuple[str, ...]:
        return tuple(c.value for c in self.choices)


@dataclass(frozen=True)
class SensorProfile:
    """Everything needed to turn one sensor's acquisitions into valid, scaled bands.

    Built-in profiles (``profiles.py``) are templates: ``configure`` selects bands, applies
    options and splits series, and returns the profiles a run uses.
    """

    name: str
    bands: tuple[BandRead, ...]
    masks: tuple[MaskRule, ...]
    date_step_days: int = DEFAULT_DATE_STEP_DAYS
    title: str = ""
    collections: tuple[str, ...] = ()  # STAC collection ids this layout is known under
    offsets: tuple[PropertyOffset, ...] = ()
    options: tuple[ProfileOption, ...] = ()
    series: tuple[Series, ...] = ()
    item_filter: tuple[tuple[str, str], ...] = ()  # (property, value) every item must have
    masking: Literal["date", "band"] = "date"
    """Which bands a pixel's no-data or per-band flag (a saturation bit) invalidates: 'date'
    every band of the acquisition, 'band' that band only (docs/sensors.md#masks-band-by-band)."""
    read_timeout_s: float | None = field(default=None, compare=False)
    """The catalog's ``timeout_s``, which bounds each remote read of the sensor's files too
    (``pipeline.cube.read.HttpLimits``; None: the defaults). Not part of digests."""
    read_retries: int | None = field(default=None, compare=False)

    def __canonical__(self) -> dict[str, object]:
        # The digest form of a dataclass, without ``masking`` at its default: cubes built before
        # the option existed keep their digests.
        out: dict[str, object] = {"__type__": "SensorProfile"}
        for f in fields(self):
            if f.compare and not (f.name == "masking" and self.masking == "date"):
                out[f.name] = getattr(self, f.name)
        return out

    @property
    def band_names(self) -> tuple[str, ...]:
        return tuple(b.name for b in self.bands)

    @property
    def assets(self) -> tuple[str, ...]:
        """Every asset key the profile reads, bands first, without repeats."""
        keys = [b.asset for b in self.bands] + [m.asset for m in self.masks]
        return tuple(dict.fromkeys(keys))

    def band(self, name: str) -> BandRead:
        for band in self.bands:
            if band.name == name:
                return band
        raise KeyError(name)

    # --- resolution at the edge ----------------------------------------------------------------

    def select(self, names: Sequence[str]) -> SensorProfile:
        """The profile reading only ``names`` (in that order); masks keep only their bits."""
        by_name = {b.name: b for b in self.bands}
        unknown = [n for n in names if n not in by_name]
        if unknown:
            raise KeyError(unknown[0])
        masks = tuple(m for m in (rule.for_bands(names) for rule in self.masks) if m is not None)
        return replace(self, bands=tuple(by_name[n] for n in names), masks=masks)

    def band_selection(
        self, names: Sequence[str], *, described: Collection[str] = ()
    ) -> tuple[str, ...]:
        """The profile's band names for ``names`` (band names or provider ids such as B04; empty:
        every band); names in ``described`` are bands the user describes, kept as they are.
        The one home of this rule: the manifest checks bands with it too."""
        if not names:
            return self.band_names
        by_id = {b.sensor_band.lower(): b.name for b in self.bands if b.sensor_band}
        out = []
        for name in names:
            if name in described or name in self.band_names:
                out.append(name)
                continue
            known = by_id.get(name.lower())
            if known is None:
                close = difflib.get_close_matches(name, self.band_names, n=1)
                hint = f"did you mean {close[0]!r}? " if close else ""
                raise ManifestError(
                    f"band {name!r} is not a band of profile {self.name!r} (its bands: "
                    f"{', '.join(self.band_names)})",
                    fix=f"{hint}select bands of the profile, or describe the band ({name}: "
                    "{asset: ...}) to add it",
                    field="sensors.bands",
                )
            out.append(known)
        return tuple(out)

    def check_options(self, values: Mapping[str, str]) -> None:
        """Refuse an option this profile does not have, or a value it does not offer."""
        known = {o.name: o for o in self.options}
        for key, value in values.items():
            if key not in known:
                close = difflib.get_close_matches(key, list(known), n=1)
                hint = f"did you mean {close[0]!r}? " if close else ""
                raise ManifestError(
                    f"profile {self.name!r} has no option {key!r} (its options: "
                    f"{', '.join(known) or 'none'})",
                    fix=f"{hint}use one of them or remove it",
                    field="sensors.options",
                )
            choices = known[key].values
            if value not in choices:
                close = [c for c in choices if c.lower() == value.lower()] or (
                    difflib.get_close_matches(value, list(choices), n=1)
                )
                hint = f"did you mean {close[0]!r}? " if close else ""
                raise ManifestError(
                    f"option {key!r} of profile {self.name!r} cannot be {value!r} (choices: "
                    f"{', '.join(choices)})",
                    fix=f"{hint}use one of the choices",
                    field="sensors.options",
                )

    def with_options(self, values: Mapping[str, str]) -> SensorProfile:
        """The profile with every option set (given values, else defaults) and applied."""
        profile = self
        for option in self.options:
            choice = option.choice(values.get(option.name, option.default))
            profile = profile._apply(choice)
        return profile

    def _apply(self, choice: Choice) -> SensorProfile:
        masks = [m for m in self.masks if m.asset not in choice.drop_masks]
        for i, rule in enumerate(masks):
            extra_values = [v for a, vs in choice.add_invalid_values if a == rule.asset for v in vs]
            extra_bits = [b for a, bs in choice.add_invalid_bits if a == rule.asset for b in bs]
            if extra_values or extra_bits:
                masks[i] = replace(
                    rule,
                    invalid_values=tuple(dict.fromkeys((*rule.invalid_values, *extra_values))),
                    invalid_bits=tuple(dict.fromkeys((*rule.invalid_bits, *extra_bits))),
                )
        bands = self.bands
        if choice.to_db is not None:
            bands = tuple(replace(b, to_db=choice.to_db) for b in bands)
        offsets = self.offsets
        if choice.offset_mode is not None:
            offsets = tuple(replace(o, mode=choice.offset_mode) for o in offsets)
        series = self.series if choice.series is None else choice.series
        return replace(self, bands=bands, masks=tuple(masks), offsets=offsets, series=series)

    def configure(
        self,
        name: str,
        *,
        bands: Sequence[str] | None = None,
        options: Mapping[str, str] | None = None,
        extra_bands: Sequence[BandRead] = (),
        extra_masks: Sequence[MaskRule] = (),
        date_step_days: int | None = None,
    ) -> tuple[SensorProfile, ...]:
        """The run profiles of this template: one per series (``name_<suffix>``), else one.

        ``bands`` selects the template's bands by name (default: all); ``extra_bands`` override
        the template's band of the same name or add one; ``extra_masks`` are added.
        """
        self.check_options(options or {})
        profile = self.with_options(options or {})
        extra = {b.name: b for b in extra_bands}
        if bands is None:
            wanted = list(profile.band_names)
        else:
            wanted = list(profile.band_selection(bands, described=extra)) if bands else []
        order = wanted + [n for n in extra if n not in wanted]
        profile = profile.select([n for n in order if n in profile.band_names])
        profile = replace(
            profile,
            name=name,
            bands=tuple(extra[n] if n in extra else profile.band(n) for n in order),
            masks=(*profile.masks, *extra_masks),
            date_step_days=date_step_days or self.date_step_days,
            options=(),
        )
        if not profile.series:
            return (profile,)
        return tuple(
            replace(
                profile,
                name=f"{name}_{s.suffix}",
                series=(),
                item_filter=(*profile.item_filter, (s.property, s.value)),
            )
            for s in profile.series
        )

    @classmethod
    def from_spec(cls, spec: SensorConfig) -> SensorProfile:
        """The one profile of a manifest sensor (see ``sensor_profiles`` for split series)."""
        profiles = sensor_profiles(spec)
        if len(profiles) != 1:
            names = ", ".join(p.name for p in profiles)
            raise ManifestError(
                f"sensor {spec.name!r} is split into several series ({names})",
                fix="build its profiles with pipeline.catalog.sensors.sensor_profiles",
            )
        return profiles[0]

    # --- binding to items ----------------------------------------------------------------------

    def accepts(self, properties: Mapping[str, Any]) -> bool:
        """Whether an item with these properties belongs to this (series of the) sensor."""
        return all(str(properties.get(key)) == value for key, value in self.item_filter)

    @property
    def readers(self) -> tuple[BandRead | MaskRule, ...]:
        """Bands then masks: everything that reads an asset."""
        return (*self.bands, *self.masks)

    def filter_items(self, items: Sequence[_ItemT], *, field: str) -> list[_ItemT]:
        """The items of this sensor's series (all of them when the sensor is not split)."""
        if not self.item_filter:
            return list(items)
        kept = [it for it in items if self.accepts(it.properties)]
        if items and not kept:
            wanted = " and ".join(f"{k} = {v!r}" for k, v in self.item_filter)
            seen = sorted({str(it.properties.get(k)) for it in items for k, _ in self.item_filter})
            raise CatalogError(
                f"none of the {len(items)} item(s) found for sensor {self.name!r} has {wanted} "
                f"(they have: {', '.join(seen)})",
                fix="set the sensor's option orbits to the passes the catalog holds (e.g. "
                "orbits: descending), or widen the catalog search",
                field=field,
            )
        return kept

    def matching_keys(self, item_keys: Collection[str]) -> dict[str, str]:
        """Asset key the profile reads -> the item's key that holds it (missing ones left out)."""
        out: dict[str, str] = {}
        for reader in self.readers:
            found = next((k for k in reader.keys if k in item_keys), None)
            if found is not None:
                out.setdefault(reader.asset, found)
        return out

    def band_item_keys(self, item_keys: Collection[str]) -> list[str]:
        """The item's keys of the assets holding bands (their grids are the native grids)."""
        found = self.matching_keys(item_keys)
        return list(dict.fromkeys(found[b.asset] for b in self.bands if b.asset in found))

    def asset_refs(
        self, item_id: str, hrefs: Mapping[str, str], *, field: str
    ) -> dict[str, AssetRef]:
        """The files this profile reads in an item whose assets are ``hrefs`` (key -> href).

        Raises a CatalogError naming the item, the asset and the keys looked for when one is
        missing or has no href.
        """
        found = self.matching_keys(hrefs)
        refs: dict[str, AssetRef] = {}
        for reader in self.readers:
            if reader.asset in refs:
                continue
            what = f"band {reader.name!r}" if isinstance(reader, BandRead) else "quality mask"
            key = found.get(reader.asset)
            if key is None:
                available = ", ".join(sorted(hrefs)) or "none"
                looked = " or ".join(repr(k) for k in reader.keys)
                close = difflib.get_close_matches(reader.keys[0], list(hrefs), n=1)
                hint = f"did you mean {close[0]!r}? " if close else ""
                raise CatalogError(
                    f"item {item_id!r} has no asset {looked} for the {what} of sensor "
                    f"{self.name!r} (its assets: {available})",
                    fix=f"{hint}use one of the item's asset keys in the sensor's bands/masks, "
                    "pick the profile that matches this catalog, or remove items without it "
                    "from the catalog",
                    field=field,
                )
            if not hrefs[key]:
                raise CatalogError(
                    f"asset {key!r} ({what}) of item {item_id!r} has an empty href",
                    fix="give the asset the path or URL of its file, or remove the item",
                    field=field,
                )
            refs[reader.asset] = AssetRef(href=hrefs[key], band_index=reader.band_index)
        return refs

    def item_offsets(
        self, item_id: str, properties: Mapping[str, Any], *, field: str
    ) -> dict[str, float]:
        """Per-band physical offsets of one item where its properties change them."""
        out: dict[str, float] = {}
        for rule in self.offsets:
            if rule.applies(item_id, properties, field=field):
                for band in self.bands:
                    base = out.get(band.name, band.offset)
                    out[band.name] = base + rule.raw_offset * band.scale
        return out

    def physical(
        self,
        band: BandRead,
        raw: np.ndarray,
        acquisition: Acquisition,
        *,
        out: np.ndarray | None = None,
    ) -> np.ndarray:
        """Physical values of ``band`` read from ``acquisition`` (per-item offsets applied)."""
        return band.decode(raw, acquisition.band_offsets.get(band.name), out=out)


# --- manifest sensors -> run profiles ---------------------------------------------------------


def _band_from_spec(name: str, spec: Any) -> BandRead:
    return BandRead(name, spec.asset, spec.scale, spec.offset, spec.nodata)


def _masks_from_spec(specs: Sequence[Any]) -> tuple[MaskRule, ...]:
    return tuple(MaskRule(m.asset, tuple(m.invalid_values), tuple(m.invalid_bits)) for m in specs)


def sensor_profiles(spec: SensorConfig) -> tuple[SensorProfile, ...]:
    """The run profiles of a manifest sensor: one, or one per series (Sentinel-1 orbits), with
    the sensor's masking rule and the catalog's HTTP limits for its file reads."""
    catalog = spec.catalog
    return tuple(
        replace(
            profile,
            masking=spec.masking,
            read_timeout_s=catalog.timeout_s,
            read_retries=catalog.retries,
        )
        for profile in _configured_profiles(spec)
    )


def _configured_profiles(spec: SensorConfig) -> tuple[SensorProfile, ...]:
    from pipeline.catalog.profiles import GENERIC, profile_by_name

    if spec.profile is None or spec.profile == GENERIC:
        profile = SensorProfile(
            name=spec.name,
            bands=tuple(_band_from_spec(n, b) for n, b in spec.bands.items() if b is not None),
            masks=_masks_from_spec(spec.masks),
            date_step_days=spec.date_step_days or DEFAULT_DATE_STEP_DAYS,
        )
        return (profile,)
    template = profile_by_name(spec.profile, field="sensors.profile")
    return template.configure(
        spec.name,
        bands=list(spec.bands) or None,
        options=spec.options,
        extra_bands=[_band_from_spec(n, b) for n, b in spec.bands.items() if b is not None],
        extra_masks=_masks_from_spec(spec.masks),
        date_step_days=spec.date_step_days,
    )
