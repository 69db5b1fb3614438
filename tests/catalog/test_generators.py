"""Synthetic scenes: seeded, in the providers' real naming and asset keys, with clouds, saturation,
edges and overlapping tiles; and, for every sensor, the cube reader's validity and values on them
equal masks and scalings computed here by hand from the raw arrays written."""

from __future__ import annotations

import hashlib
import re
from collections.abc import Callable
from datetime import date
from pathlib import Path
from typing import Any

import numpy as np
import pystac
import pytest
import rasterio
import shapely.geometry

from pipeline.catalog.items import parse_item
from pipeline.catalog.profiles import profile_by_name
from pipeline.catalog.sensors import SensorProfile
from pipeline.catalog.static import find_acquisitions
from pipeline.cube.build import read_sensor
from pipeline.cube.plan import SensorCube
from pipeline.cube.read import RasterioReader
from pipeline.errors import CatalogError
from pipeline.grid import plan_grid
from pipeline.testing import generators as gen
from pipeline.testing.generators import SyntheticScene
from tests.manifest import sections

Writer = Callable[..., list[SyntheticScene]]
WRITERS: dict[str, Writer] = {
    "theia_l2a": gen.theia_l2a,
    "theia_l3a": gen.theia_l3a,
    "sen2cor_l2a": gen.sen2cor_l2a,
    "landsat_c2_l2": gen.landsat_c2_l2,
    "sentinel1_rtc": gen.sentinel1_rtc,
}


@pytest.fixture(scope="module")
def written(tmp_path_factory: pytest.TempPathFactory) -> dict[str, list[SyntheticScene]]:
    root = tmp_path_factory.mktemp("generated")
    return {name: writer(root / name, seed=11) for name, writer in WRITERS.items()}


def digest(files: list[Path]) -> str:
    sha = hashlib.sha256()
    for path in sorted(files):
        sha.update(path.name.encode())
        sha.update(path.read_bytes())
    return sha.hexdigest()


def decode(profile: SensorProfile, item: pystac.Item) -> tuple[np.ndarray, np.ndarray]:
    acquisition = parse_item(item, profile, field="test")
    assert acquisition.grid is not None
    values, valid = read_sensor(
        SensorCube(profile, (acquisition,), (), ()), acquisition.grid, RasterioReader()
    )
    return values[0], valid[0]


def up(array: np.ndarray) -> np.ndarray:
    return np.repeat(np.repeat(array, 2, axis=0), 2, axis=1)


# --- the writers ----------------------------------------------------------------------------


@pytest.mark.parametrize("name", sorted(WRITERS))
def test_same_seed_same_bytes_other_seed_other_pixels(name: str, tmp_path: Path) -> None:
    (tile,) = gen.overlapping_tiles(size=16, dates=(2,), names=("31TGK",))
    tiles = [tile] if name != "landsat_c2_l2" else gen.overlapping_tiles(16, 30.0, (2,), ["197029"])
    runs = [WRITERS[name](tmp_path / str(i), seed=s, tiles=tiles) for i, s in enumerate((3, 3, 4))]
    files = [[f for sc in scenes for f in sc.files.values()] for scenes in runs]
    assert digest(files[0]) == digest(files[1])
    assert digest(files[0]) != digest(files[2])
    assert [sc.item.id for sc in runs[0]] == [sc.item.id for sc in runs[2]]


def test_write_cog_is_a_tiled_cloud_optimized_geotiff(tmp_path: Path) -> None:
    (tile,) = gen.overlapping_tiles(size=256, dates=(1,), names=("31TGK",))
    data = np.arange(256 * 256, dtype=np.int32).reshape(256, 256).astype(np.int16)
    path = gen.write_cog(tmp_path / "x.tif", data, tile.grid(), nodata=-10000)
    with rasterio.open(path) as src:
        assert src.tags(ns="IMAGE_STRUCTURE")["LAYOUT"] == "COG"
        assert src.profile["tiled"] and src.block_shapes == [(128, 128)]
        assert src.nodata == -10000 and f"EPSG:{src.crs.to_epsg()}" == tile.crs
        np.testing.assert_array_equal(src.read(1), data)


# The providers' naming, written out here independently of the writers.
NAMES = {
    "theia_l2a": r".*/(31TGK|32TKQ)/(SENTINEL2[AB]_\d{8}-\d{6}-\d{3}_L2A_T\1_C_V2-2)/"
    r"(MASKS/)?\2_(FRE_B(2|3|4|5|6|7|8|8A|11|12)|(CLM|SAT|EDG)_R[12])\.tif$",
    "theia_l3a": r".*/(31TGK|32TKQ)/(SENTINEL2X_\d{6}15-000000-000_L3A_T\1_C_V1-1)/"
    r"(MASKS/)?\2_(FRC_B(2|3|4|5|6|7|8|8A|11|12)|FLG_R[12])\.tif$",
    "sen2cor_l2a": r".*/(31|32)/T/(GK|KQ)/S2[AB]_\1T\2_\d{8}_0_L2A/"
    r"(B0[2-8]|B8A|B1[12]|SCL)\.tif$",
    "landsat_c2_l2": r".*/(197029|196029)/(L[CT]0[589]_L2SP_\1_\d{8}_\d{8}_02_T1)/"
    r"\2_(SR_B[1-7]|QA_PIXEL|QA_RADSAT)\.TIF$",
    "sentinel1_rtc": r".*/(31TGK|32TKQ)/s1a_\1_(vv|vh)_(ASC|DES)_\d{3}_\d{8}t\d{6}\.tif$",
}


@pytest.mark.parametrize("name", sorted(WRITERS))
def test_files_follow_the_provider_naming(
    written: dict[str, list[SyntheticScene]], name: str
) -> None:
    for scene in written[name]:
        for path in scene.files.values():
            assert re.match(NAMES[name], path.as_posix()), path


def test_planetary_computer_layout(tmp_path: Path) -> None:
    scenes = gen.sen2cor_l2a(tmp_path, style="planetary-computer")
    for scene in scenes:
        assert set(scene.item.assets) >= {"B02", "B04", "B08", "B8A", "B11", "SCL"}
        assert scene.item.properties["s2:mgrs_tile"] in ("31TGK", "32TKQ")
        pattern = (
            r".*/(S2[AB]_MSIL2A_(\d{8}T\d{6})_R008_T(31TGK|32TKQ)_\2)\.SAFE/GRANULE/L2A_T\3_\2/"
            r"IMG_DATA/R(10|20)m/T\3_\2_(B0[2-8]|B8A|B1[12]|SCL)_\4m\.tif$"
        )
        for path in scene.files.values():
            assert re.match(pattern, path.as_posix()), path


@pytest.mark.parametrize("name", sorted(WRITERS))
def test_files_are_cogs_matching_their_items(
    written: dict[str, list[SyntheticScene]], name: str
) -> None:
    for scene in written[name][:2]:
        item = scene.item
        assert item.properties["proj:code"] == scene.tile.crs
        for key, path in scene.files.items():
            asset = item.assets[key]
            assert Path(asset.href) == path.resolve()
            with rasterio.open(path) as src:
                assert src.tags(ns="IMAGE_STRUCTURE")["LAYOUT"] == "COG"
                assert f"EPSG:{src.crs.to_epsg()}" == asset.extra_fields["proj:code"]
                assert list(src.transform)[:6] == asset.extra_fields["proj:transform"]
                assert [src.height, src.width] == asset.extra_fields["proj:shape"]
                np.testing.assert_array_equal(src.read(1), scene.raw[key])


@pytest.mark.parametrize("name", sorted(WRITERS))
def test_overlapping_tiles_in_two_zones_with_different_date_counts(
    written: dict[str, list[SyntheticScene]], name: str
) -> None:
    scenes = written[name]
    by_tile: dict[str, list[SyntheticScene]] = {}
    for scene in scenes:
        by_tile.setdefault(scene.tile.tile, []).append(scene)
    assert len(by_tile) == 2
    assert len({len(v) for v in by_tile.values()}) == 2  # not the same number of dates
    assert {v[0].tile.crs for v in by_tile.values()} == {"EPSG:32631", "EPSG:32632"}
    first, second = (shapely.geometry.shape(v[0].item.geometry) for v in by_tile.values())
    assert first.intersects(second) and not first.equals(second)
    dates = [{s.datetime.date() for s in v} for v in by_tile.values()]
    assert dates[0] != dates[1]


# --- each sensor, decoded through the cube reader, against masks computed by hand ----------


@pytest.mark.parametrize("style", ["earth-search", "planetary-computer"])
@pytest.mark.parametrize("snow", ["valid", "invalid"])
def test_sen2cor_decodes_by_hand(tmp_path: Path, style: Any, snow: str) -> None:
    scenes = gen.sen2cor_l2a(tmp_path, seed=5, style=style)
    (profile,) = profile_by_name("sentinel2-l2a-sen2cor").configure(
        "s2", bands=["red", "nir"], options={"snow": snow}
    )
    baselines = set()
    for scene in scenes:
        key = {"earth-search": ("red", "nir", "scl"), "planetary-computer": ("B04", "B08", "SCL")}
        red, nir, scl_key = key[style]
        scl = up(scene.raw[scl_key])
        bad_classes = [0, 1, 3, 8, 9, 10] + ([11] if snow == "invalid" else [])
        hand = ~np.isin(scl, bad_classes) & (scene.raw[red] != 0) & (scene.raw[nir] != 0)
        baseline = scene.item.properties["s2:processing_baseline"]
        baselines.add(baseline)
        offset = 1000 if baseline >= "04.00" else 0  # stored: reflectance * 10000 + offset
        values, valid = decode(profile, scene.item)
        np.testing.assert_array_equal(valid, hand)
        expected = (scene.raw[red].astype(np.float64) - offset) / 10000
        np.testing.assert_allclose(values[0][hand], expected[hand], atol=1e-6)
    assert baselines == {"03.01", "04.00"}  # both sides of 2022-01-25


def test_harmonized_earth_search_items_carry_no_offset(tmp_path: Path) -> None:
    scenes = gen.sen2cor_l2a(tmp_path, seed=5, offset_applied=True, start=date(2022, 6, 1))
    (profile,) = profile_by_name("sentinel2-l2a-sen2cor").configure("s2", bands=["red"])
    for scene in scenes:
        values, valid = decode(profile, scene.item)
        expected = scene.raw["red"][valid] / 10000
        np.testing.assert_allclose(values[0][valid], expected, atol=1e-6)


@pytest.mark.parametrize(("sensor", "keys"), [("oli", "common"), ("oli", "file"), ("tm", "file")])
def test_landsat_decodes_by_hand(tmp_path: Path, sensor: Any, keys: Any) -> None:
    scenes = gen.landsat_c2_l2(tmp_path, seed=6, sensor=sensor, keys=keys)
    name = "landsat-c2-l2-oli" if sensor == "oli" else "landsat-c2-l2-tm"
    (profile,) = profile_by_name(name).configure("ls", bands=["red", "nir"])
    # By hand: QA_PIXEL fill 0, dilated 1, cirrus 2 (OLI), cloud 3, shadow 4; QA_RADSAT band n
    # is bit n-1 (red = 4 on OLI, 3 on TM; nir = 5 / 4), flag 11 (OLI) or 9 (TM).
    red_band, nir_band, flag = (4, 5, 11) if sensor == "oli" else (3, 4, 9)
    qa_bits = 0b11111 if sensor == "oli" else 0b11011
    sat_bits = (1 << (red_band - 1)) | (1 << (nir_band - 1)) | (1 << flag)
    platforms = set()
    for scene in scenes:
        raw = {k.lower(): v for k, v in scene.raw.items()}
        red = raw["red"] if keys == "common" else raw[f"sr_b{red_band}"]
        hand = ((raw["qa_pixel"] & qa_bits) == 0) & ((raw["qa_radsat"] & sat_bits) == 0)
        hand &= raw["qa_pixel"] != 1  # the QA file's own no-data value (fill)
        values, valid = decode(profile, scene.item)
        np.testing.assert_array_equal(valid, hand)
        expected = red.astype(np.float64) * 0.0000275 - 0.2
        np.testing.assert_allclose(values[0][hand], expected[hand], atol=1e-5)
        assert (raw["qa_pixel"] & 0b11111).any() and (raw["qa_radsat"] & sat_bits).any()
        platforms.add(scene.item.properties["platform"])
    assert platforms == ({"landsat-8", "landsat-9"} if sensor == "oli" else {"landsat-5"})


@pytest.mark.parametrize("units", ["linear", "db"])
def test_sentinel1_decodes_by_hand_per_orbit(tmp_path: Path, units: str) -> None:
    scenes = gen.sentinel1_rtc(tmp_path, seed=9)
    profiles = profile_by_name("sentinel1").configure("s1", options={"units": units})
    counts = {}
    for profile in profiles:
        mine = [s for s in scenes if profile.accepts(s.item.properties)]
        counts[profile.name] = len(mine)
        for scene in mine:
            vv = scene.raw["vv"].astype(np.float64)
            hand = (vv != gen.S1_NODATA) & (scene.raw["vh"] != gen.S1_NODATA)
            values, valid = decode(profile, scene.item)
            np.testing.assert_array_equal(valid, hand)
            expected = 10 * np.log10(vv[hand]) if units == "db" else vv[hand]
            np.testing.assert_allclose(values[0][hand], expected, rtol=1e-5)
    assert counts == {"s1_asc": 7, "s1_des": 5}


def test_static_catalog_of_generated_items_feeds_discovery(tmp_path: Path) -> None:
    scenes = gen.sentinel1_rtc(tmp_path / "files", seed=2)
    url = str(gen.write_catalog(scenes, tmp_path / "stac"))
    spec = sections.catalog(kind="static", url=url)
    start, end = date(2022, 1, 1), date(2022, 3, 1)
    found = {}
    for profile in profile_by_name("sentinel1").configure("s1"):
        acquisitions, items = find_acquisitions(spec, profile, start, end, field="s[0]")
        found[profile.name] = {it.properties["sat:orbit_state"] for it in items}
        assert len(acquisitions) == len(items) > 0
        assert all(a.sensor == profile.name for a in acquisitions)
    assert found == {"s1_asc": {"ascending"}, "s1_des": {"descending"}}
    (only_asc,) = profile_by_name("sentinel1").configure("s1", options={"orbits": "ascending"})
    asc_scenes = [s for s in scenes if s.item.properties["sat:orbit_state"] == "ascending"]
    asc_url = str(gen.write_catalog(asc_scenes, tmp_path / "asc"))
    (des,) = profile_by_name("sentinel1").configure("s1", options={"orbits": "descending"})
    with pytest.raises(CatalogError, match="orbits"):
        find_acquisitions(sections.catalog(url=asc_url), des, start, end, field="s[0]")
    acquisitions, _ = find_acquisitions(
        sections.catalog(url=asc_url), only_asc, start, end, field="s"
    )
    assert acquisitions


def test_items_without_projection_are_named_when_a_grid_is_needed(tmp_path: Path) -> None:
    scenes = gen.sen2cor_l2a(tmp_path, projection=False)
    (profile,) = profile_by_name("sentinel2-l2a-sen2cor").configure("s2", bands=["red"])
    acquisitions = [parse_item(scene.item, profile, field="f") for scene in scenes]
    assert all(a.grid is None for a in acquisitions)
    assert all("proj:code" not in s.item.properties for s in scenes)
    with pytest.raises(CatalogError) as info:
        plan_grid(sections.area(), acquisitions)
    message = str(info.value)
    assert scenes[0].item.id in message and "projection" in message and "spec.area" in message
