"""Sensor profiles: the built-in descriptions are consistent, their mask rules decode quality
layers exactly as the providers define them (hand-written bit tables below, not the profile's),
offsets and options resolve per item, and the manifest accepts and refuses profile sensors with
messages that say how to fix them."""

from __future__ import annotations

import copy
import re
from datetime import UTC, datetime
from typing import Any

import numpy as np
import pytest
import yaml
from hypothesis import given
from hypothesis import strategies as st
from hypothesis.extra import numpy as hnp

from pipeline.catalog.profiles import BUILT_IN, GENERIC, known_profiles, profile_by_name
from pipeline.catalog.sensors import (
    BandRead,
    MaskRule,
    SensorProfile,
    sensor_profiles,
)
from pipeline.errors import CatalogError, ManifestError
from pipeline.manifest import RunManifest, parse_manifest, resolve
from pipeline.model import Acquisition, AssetRef
from tests.conftest import DEMO_DIR, DEMO_MANIFEST

IDENT = re.compile(r"^[a-z][a-z0-9_]*$")


def invalid(profile: SensorProfile, layers: dict[str, np.ndarray]) -> np.ndarray:
    """What the cube does with a profile's masks: a pixel is invalid if any rule says so."""
    shape = next(iter(layers.values())).shape
    bad = np.zeros(shape, dtype=bool)
    for rule in profile.masks:
        bad |= rule.invalid(layers[rule.asset])
    return bad


def uint_layer(dtype: Any, shape: tuple[int, int] = (6, 7)) -> st.SearchStrategy[np.ndarray]:
    return hnp.arrays(dtype, shape, elements=st.integers(0, np.iinfo(dtype).max))


def band_subsets(profile: SensorProfile) -> st.SearchStrategy[list[str]]:
    """Non-empty selections of the profile's bands, in any order."""
    return st.lists(st.sampled_from(profile.band_names), min_size=1, unique=True)


# --- the built-in descriptions --------------------------------------------------------------


@pytest.mark.parametrize("name", sorted(BUILT_IN))
def test_every_profile_is_a_consistent_description(name: str) -> None:
    profile = profile_by_name(name)
    assert profile.name == name and name in known_profiles()
    assert profile.title and profile.date_step_days >= 1
    names = profile.band_names
    assert len(set(names)) == len(names)
    assert all(IDENT.match(n) for n in names)
    assert len({b.asset for b in profile.bands}) == len(profile.bands)  # one file key per band
    for band in profile.bands:
        assert band.resolution and band.resolution > 0
        assert band.scale > 0 and band.band_index >= 1
        assert band.sensor_band
    for rule in profile.masks:
        assert rule.has_rule
        assert {b for b, _ in rule.band_bits} <= set(names)
    for option in profile.options:
        assert option.default in option.values
        assert len(set(option.values)) == len(option.values)
    # With default options every profile resolves into run profiles named after the sensor.
    for run_profile in profile.configure("x"):
        assert run_profile.name.startswith("x")
        assert run_profile.band_names == names


def test_generic_is_known_but_not_a_table_entry() -> None:
    assert GENERIC in known_profiles() and GENERIC not in BUILT_IN


def test_unknown_profile_suggests_the_closest_name() -> None:
    with pytest.raises(ManifestError) as info:
        profile_by_name("sentinel2-l2a-thiea", field="spec.sensors[0].profile")
    message = str(info.value)
    assert "did you mean 'sentinel2-l2a-theia'" in message
    assert "landsat-c2-l2-oli" in message  # the known names are listed
    assert "spec.sensors[0].profile" in message and "Fix:" in message


@given(st.data())
def test_selecting_bands_keeps_only_their_saturation_bits(data: st.DataObject) -> None:
    name = data.draw(st.sampled_from(sorted(BUILT_IN)))
    template = profile_by_name(name)
    subset = data.draw(band_subsets(template))
    (profile, *_) = template.configure("s", bands=subset)
    assert list(profile.band_names) == subset
    for rule in profile.masks:
        assert rule.has_rule
        assert {band for band, _ in rule.band_bits} <= set(subset)
    # A mask made only of band bits is dropped when none of its bands is read.
    for rule in template.masks:
        only_bands = rule.band_bits and not (
            rule.invalid_values or rule.invalid_bits or rule.valid_values
        )
        kept = any(m.asset == rule.asset for m in profile.masks)
        if only_bands:
            assert kept == any(band in subset for band, _ in rule.band_bits)
        else:
            assert kept


# --- mask rules against the providers' definitions, by hand ---------------------------------

THEIA_SAT_R1 = {"blue": 0, "green": 1, "red": 2, "nir": 3}  # B2 B3 B4 B8
THEIA_SAT_R2 = {"rededge1": 0, "rededge2": 1, "rededge3": 2, "nir08": 3, "swir16": 4, "swir22": 5}


@given(
    uint_layer(np.uint8),
    uint_layer(np.uint8),
    uint_layer(np.uint8),
    uint_layer(np.uint8),
    band_subsets(BUILT_IN["sentinel2-l2a-theia"]),
)
def test_theia_l2a_mask(
    clm: np.ndarray, edg: np.ndarray, sat1: np.ndarray, sat2: np.ndarray, bands: list[str]
) -> None:
    (profile,) = profile_by_name("sentinel2-l2a-theia").configure("s2", bands=bands)
    bits1 = sum(1 << bit for band, bit in THEIA_SAT_R1.items() if band in bands)
    bits2 = sum(1 << bit for band, bit in THEIA_SAT_R2.items() if band in bands)
    expected = (clm != 0) | (edg != 0) | ((sat1 & bits1) != 0) | ((sat2 & bits2) != 0)
    layers = {"CLM_R1": clm, "EDG_R1": edg, "SAT_R1": sat1, "SAT_R2": sat2}
    np.testing.assert_array_equal(invalid(profile, layers), expected)


@given(hnp.arrays(np.uint8, (5, 5), elements=st.integers(0, 4)), st.booleans())
def test_theia_l3a_flag_mask(flg: np.ndarray, snow_invalid: bool) -> None:
    options = {"snow": "invalid"} if snow_invalid else {}
    (profile,) = profile_by_name("sentinel2-l3a-theia").configure("l3a", options=options)
    expected = (flg == 0) | (flg == 1) | ((flg == 2) & snow_invalid)  # no data, cloud, snow
    np.testing.assert_array_equal(invalid(profile, {"FLG_R1": flg}), expected)


@given(hnp.arrays(np.uint8, (5, 5), elements=st.integers(0, 11)), st.booleans())
def test_sen2cor_scl_mask(scl: np.ndarray, snow_invalid: bool) -> None:
    options = {"snow": "invalid"} if snow_invalid else {}
    (profile,) = profile_by_name("sentinel2-l2a-sen2cor").configure("s2", options=options)
    bad = [0, 1, 3, 8, 9, 10] + ([11] if snow_invalid else [])
    expected = np.zeros(scl.shape, dtype=bool)
    for value in bad:
        expected |= scl == value
    np.testing.assert_array_equal(invalid(profile, {"scl": scl}), expected)


@pytest.mark.parametrize(
    ("name", "cloud_bits", "radsat_band", "radsat_flag"),
    [
        # QA_PIXEL: fill 0, dilated 1, cirrus 2 (OLI only), cloud 3, shadow 4.
        # QA_RADSAT: band n saturated = bit n-1; OLI bit 11 terrain occlusion, TM bit 9 dropped.
        ("landsat-c2-l2-oli", 0b11111, {"red": 3, "nir": 4, "coastal": 0, "swir22": 6}, 11),
        ("landsat-c2-l2-tm", 0b11011, {"red": 2, "nir": 3, "blue": 0, "swir22": 6}, 9),
    ],
)
@given(data=st.data())
def test_landsat_qa_masks(
    name: str,
    cloud_bits: int,
    radsat_band: dict[str, int],
    radsat_flag: int,
    data: st.DataObject,
) -> None:
    qa = data.draw(uint_layer(np.uint16))
    radsat = data.draw(uint_layer(np.uint16))
    bands = data.draw(st.lists(st.sampled_from(sorted(radsat_band)), min_size=1, unique=True))
    snow = data.draw(st.booleans())
    options = {"snow": "invalid"} if snow else {}
    (profile,) = profile_by_name(name).configure("ls", bands=bands, options=options)
    qa_bits = cloud_bits | (1 << 5 if snow else 0)
    sat_bits = (1 << radsat_flag) | sum(1 << radsat_band[b] for b in bands)
    expected = ((qa & qa_bits) != 0) | ((radsat & sat_bits) != 0)
    np.testing.assert_array_equal(invalid(profile, {"qa_pixel": qa, "qa_radsat": radsat}), expected)
    (unsaturated,) = profile_by_name(name).configure("ls", options={"saturation": "ignore"})
    assert [m.asset for m in unsaturated.masks] == ["qa_pixel"]


@given(uint_layer(np.uint8), uint_layer(np.uint8), uint_layer(np.uint8))
def test_theia_historical_landsat_masks(div: np.ndarray, nua: np.ndarray, sat: np.ndarray) -> None:
    (profile,) = profile_by_name("landsat8-n2a-theia").configure("l8")
    expected = (div % 2 == 1) | (nua != 0) | (sat != 0)  # the original chain's rule
    np.testing.assert_array_equal(invalid(profile, {"DIV": div, "NUA": nua, "SAT": sat}), expected)


def test_float_quality_layers_decode_like_integers() -> None:
    """The reader hands quality layers over as float32 (the real THEIA sample has float masks)."""
    rule = MaskRule("DIV", invalid_bits=(0,))
    values = np.array([0.0, 1.0, 2.0, 3.0, 254.0, 255.0], dtype=np.float32)
    np.testing.assert_array_equal(rule.invalid(values), [False, True, False, True, False, True])


# --- scaling, per-item offsets, units -------------------------------------------------------


def acquisition(offsets: dict[str, float] | None = None) -> Acquisition:
    return Acquisition(
        "item", "s2", datetime(2022, 3, 1, tzinfo=UTC), {}, band_offsets=offsets or {}
    )


@pytest.mark.parametrize(
    ("properties", "offset_applies"),
    [
        ({"s2:processing_baseline": "03.01"}, False),
        ({"s2:processing_baseline": "04.00"}, True),
        ({"s2:processing_baseline": "05.10"}, True),
        ({"s2:processing_baseline": "4.0"}, True),
        ({"s2:processing_baseline": "05.09", "earthsearch:boa_offset_applied": True}, False),
        ({"s2:processing_baseline": "05.09", "earthsearch:boa_offset_applied": False}, True),
    ],
)
def test_processing_baseline_offset(properties: dict[str, Any], offset_applies: bool) -> None:
    (profile,) = profile_by_name("sentinel2-l2a-sen2cor").configure("s2", bands=["red", "nir"])
    offsets = profile.item_offsets("S2B_x", properties, field="f")
    raw = np.array([1000, 1500, 0], dtype=np.uint16)
    red = profile.band("red")
    got = profile.physical(red, raw.astype(np.float32), acquisition(offsets))
    # By hand: baseline >= 04.00 stores reflectance * 10000 + 1000.
    expected = (raw - (1000.0 if offset_applies else 0.0)) / 10000.0
    np.testing.assert_allclose(got, expected, atol=1e-6)
    assert set(offsets) == ({"red", "nir"} if offset_applies else set())


def test_missing_processing_baseline_is_an_error_unless_the_option_decides() -> None:
    template = profile_by_name("sentinel2-l2a-sen2cor")
    (auto,) = template.configure("s2")
    with pytest.raises(CatalogError) as info:
        auto.item_offsets("S2A_31TGK_20220301_0_L2A", {}, field="spec.sensors[0]")
    message = str(info.value)
    assert "S2A_31TGK_20220301_0_L2A" in message and "s2:processing_baseline" in message
    assert "boa_offset" in message
    (always,) = template.configure("s2", options={"boa_offset": "always"})
    assert always.item_offsets("x", {}, field="f")["red"] == pytest.approx(-0.1)
    (never,) = template.configure("s2", options={"boa_offset": "never"})
    assert never.item_offsets("x", {"s2:processing_baseline": "05.00"}, field="f") == {}
    with pytest.raises(CatalogError, match="not a version"):
        auto.item_offsets("x", {"s2:processing_baseline": "new"}, field="f")


def test_landsat_scale_and_offset() -> None:
    (profile,) = profile_by_name("landsat-c2-l2-oli").configure("l8")
    raw = np.array([7273.0, 10000.0, 43636.0], dtype=np.float32)
    got = profile.physical(profile.band("red"), raw, acquisition())
    np.testing.assert_allclose(got, raw * 0.0000275 - 0.2, atol=1e-6)


@given(hnp.arrays(np.float32, 8, elements=st.floats(-1, 10, width=32)))
def test_sentinel1_decibels(linear: np.ndarray) -> None:
    (linear_profile,) = profile_by_name("sentinel1").configure("s1", options={"orbits": "together"})
    (db_profile,) = profile_by_name("sentinel1").configure(
        "s1", options={"orbits": "together", "units": "db"}
    )
    vv_linear = linear_profile.physical(linear_profile.band("vv"), linear, acquisition())
    np.testing.assert_array_equal(vv_linear, linear)
    got = db_profile.physical(db_profile.band("vv"), linear, acquisition())
    positive = linear > 0
    np.testing.assert_allclose(got[positive], 10 * np.log10(linear[positive]), rtol=1e-5)
    assert np.isnan(got[~positive]).all()  # no log of zero or negative power: a gap


def test_sentinel1_orbits_become_separate_series() -> None:
    template = profile_by_name("sentinel1")
    ascending, descending = template.configure("s1")
    assert (ascending.name, descending.name) == ("s1_asc", "s1_des")
    assert ascending.accepts({"sat:orbit_state": "ascending"})
    assert not ascending.accepts({"sat:orbit_state": "descending"})
    assert not descending.accepts({})
    (only,) = template.configure("s1", options={"orbits": "descending"})
    assert only.name == "s1_des"
    (both,) = template.configure("s1", options={"orbits": "together"})
    assert both.name == "s1" and both.accepts({"sat:orbit_state": "descending"})


class _Item:
    def __init__(self, orbit: str) -> None:
        self.properties = {"sat:orbit_state": orbit}


def test_series_without_items_says_which_passes_exist() -> None:
    ascending, descending = profile_by_name("sentinel1").configure("s1")
    items = [_Item("descending"), _Item("descending")]
    assert descending.filter_items(items, field="f") == items
    with pytest.raises(CatalogError) as info:
        ascending.filter_items(items, field="spec.sensors[1]")
    message = str(info.value)
    assert "s1_asc" in message and "'ascending'" in message and "descending" in message
    assert "orbits: descending" in message


# --- finding the assets of an item --------------------------------------------------------


@pytest.mark.parametrize(
    "keys",
    [
        {"red": "r.tif", "nir": "n.tif", "scl": "c.tif"},  # Earth Search
        {"B04": "r.tif", "B08": "n.tif", "SCL": "c.tif"},  # Planetary Computer
        {"B04_10m": "r.tif", "B08_10m": "n.tif", "SCL_20m": "c.tif"},  # CDSE
    ],
)
def test_asset_keys_of_each_catalog_are_found(keys: dict[str, str]) -> None:
    (profile,) = profile_by_name("sentinel2-l2a-sen2cor").configure("s2", bands=["red", "nir"])
    refs = profile.asset_refs("item", {**keys, "visual": "v.tif"}, field="f")
    assert refs == {"red": AssetRef("r.tif"), "nir": AssetRef("n.tif"), "scl": AssetRef("c.tif")}
    assert profile.band_item_keys(keys) == list(keys)[:2]


def test_bands_of_a_multiband_file_keep_their_index() -> None:
    (profile,) = profile_by_name("landsat8-n2a-theia").configure("l8", bands=["red", "nir"])
    hrefs = {"ORTHO_SURF_CORR_PENTE": "stack.tif", "NUA": "n.tif", "SAT": "s.tif", "DIV": "d.tif"}
    refs = profile.asset_refs("L8", hrefs, field="f")
    assert refs[profile.band("red").asset] == AssetRef("stack.tif", band_index=4)
    assert refs[profile.band("nir").asset] == AssetRef("stack.tif", band_index=5)


def test_missing_asset_names_the_item_the_asset_and_a_close_key() -> None:
    (profile,) = profile_by_name("sentinel2-l2a-theia").configure("s2", bands=["red"])
    hrefs = {"B04": "r.tif", "CLM_R1": "c.tif", "SAT_R1": "s.tif", "EDG_R": "e.tif"}
    with pytest.raises(CatalogError) as info:
        profile.asset_refs("SENTINEL2A_20180105-105107-458_L2A_T31TCJ_C_V2-2", hrefs, field="f")
    message = str(info.value)
    assert "SENTINEL2A_20180105-105107-458_L2A_T31TCJ_C_V2-2" in message
    assert "'EDG_R1'" in message and "quality mask" in message and "s2" in message
    assert "did you mean 'EDG_R'" in message and "its assets: B04, CLM_R1, EDG_R, SAT_R1" in message
    with pytest.raises(CatalogError, match="empty href"):
        profile.asset_refs("x", {**hrefs, "EDG_R1": ""}, field="f")


# --- the manifest -------------------------------------------------------------------------


def parse(change: Any) -> RunManifest:
    data = yaml.safe_load(DEMO_MANIFEST.read_text())
    data = copy.deepcopy(data)
    change(data["spec"]["sensors"][0])
    return parse_manifest(
        yaml.safe_dump(data, sort_keys=False), base_dir=DEMO_DIR, source="test.yaml"
    )


def theia(**more: Any) -> Any:
    def change(sensor: dict[str, Any]) -> None:
        for key in ("bands", "masks", "date_step_days"):
            sensor.pop(key, None)
        sensor.update({"profile": "sentinel2-l2a-theia", **more})

    return change


def test_the_demo_manifest_stays_valid_and_generic() -> None:
    sensor = resolve(parse(lambda s: None)).sensors[0]
    assert sensor.profile is None and sensor.date_step_days == 10
    (profile,) = sensor_profiles(sensor)
    assert profile.band_names == ("ndvi",)
    assert profile.masks == (MaskRule("cloud", invalid_values=(1,)),)
    generic = resolve(parse(lambda s: s.update(profile="generic"))).sensors[0]
    assert sensor_profiles(generic) == sensor_profiles(sensor)


def test_profile_sensor_with_a_band_list() -> None:
    sensor = resolve(parse(theia(bands=["red", "B08"]))).sensors[0]
    assert list(sensor.bands) == ["red", "nir"]  # provider ids become band names
    (profile,) = sensor_profiles(sensor)
    assert profile.name == "s2" and profile.band_names == ("red", "nir")
    assert profile.date_step_days == 10
    sat = next(m for m in profile.masks if m.asset == "SAT_R1")
    assert sat.band_bits == (("red", 2), ("nir", 3))
    assert not any(m.asset == "SAT_R2" for m in profile.masks)  # no 20 m band read


def test_profile_sensor_defaults_to_every_band_and_the_profile_step() -> None:
    sensor = resolve(parse(theia(profile="sentinel2-l3a-theia"))).sensors[0]
    assert list(sensor.bands) == list(BUILT_IN["sentinel2-l3a-theia"].band_names)
    (profile,) = sensor_profiles(sensor)
    assert profile.date_step_days == 30


def test_described_band_overrides_or_adds_and_masks_add_up() -> None:
    sensor = resolve(
        parse(
            theia(
                bands={
                    "red": None,
                    "nir": {"asset": "B08", "scale": 0.001},
                    "ndvi": {"asset": "nd"},
                },
                masks=[{"asset": "mymask", "invalid_values": [1]}],
                options={},
            )
        )
    ).sensors[0]
    (profile,) = sensor_profiles(sensor)
    assert profile.band_names == ("red", "nir", "ndvi")
    assert profile.band("nir") == BandRead("nir", "B08", 0.001)
    assert profile.band("red").asset_keys == ("B04", "FRE_B4")
    assert profile.masks[-1] == MaskRule("mymask", invalid_values=(1,))
    sat = next(m for m in profile.masks if m.asset == "SAT_R1")
    assert sat.band_bits == (("red", 2), ("nir", 3))  # an overridden band keeps its bit


def test_sentinel1_sensor_expands_into_orbit_series() -> None:
    def change(sensor: dict[str, Any]) -> None:
        sensor.clear()
        sensor.update(
            name="s1",
            profile="sentinel1",
            catalog={"url": "catalog/catalog.json"},
            options={"units": "db"},
        )

    sensor = resolve(parse(change)).sensors[0]
    profiles = sensor_profiles(sensor)
    assert [p.name for p in profiles] == ["s1_asc", "s1_des"]
    assert all(b.to_db for p in profiles for b in p.bands)
    with pytest.raises(ManifestError, match="sensor_profiles"):
        SensorProfile.from_spec(sensor)


MALFORMED = [
    (theia(profile="sentinel2-l2a-thiea"), "spec.sensors[0].profile", "did you mean"),
    (theia(profile="sentinel2-l2a-thiea"), "spec.sensors[0].profile", "sentinel1"),
    (theia(bands=["red", "nri"]), "spec.sensors[0].bands", "did you mean 'nir'"),
    (theia(bands=["red", "nri"]), "spec.sensors[0].bands", "its bands: blue, green, red"),
    (theia(bands=["red", "red"]), "spec.sensors[0].bands", "more than once"),
    (theia(options={"snow": "invalid"}), "spec.sensors[0].options", "has no option 'snow'"),
    (
        theia(profile="sentinel1", options={"unit": "db"}),
        "spec.sensors[0].options",
        "did you mean 'units'",
    ),
    (
        theia(profile="sentinel1", options={"units": "dB"}),
        "spec.sensors[0].options",
        "did you mean 'db'",
    ),
    (lambda s: s.update(options={"units": "db"}), "spec.sensors[0].options", "set profile"),
    (lambda s: s.update(bands=["red"]), "spec.sensors[0].bands", "has no description"),
    (lambda s: s.update(bands={}), "spec.sensors[0].bands", "at least 1"),
    (lambda s: s.pop("bands"), "spec.sensors[0].bands", "at least 1"),
    (theia(date_step_days=0), "spec.sensors[0].date_step_days", "greater than"),
]


@pytest.mark.parametrize(("change", "field", "words"), MALFORMED)
def test_malformed_profile_sensors(change: Any, field: str, words: str) -> None:
    with pytest.raises(ManifestError) as info:
        parse(change)
    message = str(info.value)
    assert field in message and words in message and "Fix:" in message


def test_indices_check_sees_the_profile_bands() -> None:
    data = yaml.safe_load(DEMO_MANIFEST.read_text())
    theia(bands=["red", "nir"])(data["spec"]["sensors"][0])
    data["spec"]["features"] = {"indices": ["ndvi"]}
    spec = parse_manifest(yaml.safe_dump(data), base_dir=DEMO_DIR, source="t").spec
    assert spec.features.indices == ["ndvi"]
    theia(bands=["red", "green"])(data["spec"]["sensors"][0])
    with pytest.raises(ManifestError, match="needs bands"):
        parse_manifest(yaml.safe_dump(data), base_dir=DEMO_DIR, source="t")
