"""The THEIA archive indexer: the real historical Landsat-8 sample (iota2 test data, copied with its
licence into tests/data) and synthetic archives in the current Sentinel-2 L2A / L3A layouts become
STAC items with projection metadata, whose pixels the cube reader decodes as hand-computed."""

from __future__ import annotations

import shutil
from datetime import UTC, datetime
from pathlib import Path

import numpy as np
import pystac
import pytest
import rasterio
import shapely.geometry

from pipeline.catalog.archive import index_archive, write_archive_catalog
from pipeline.catalog.items import parse_item
from pipeline.catalog.profiles import profile_by_name
from pipeline.catalog.sensors import SensorProfile
from pipeline.cube.build import read_sensor
from pipeline.cube.plan import SensorCube
from pipeline.cube.read import RasterioReader
from pipeline.errors import CatalogError
from pipeline.testing.generators import (
    FLG_CLOUD,
    FLG_NODATA,
    FLG_SNOW,
    SyntheticScene,
    overlapping_tiles,
    theia_l2a,
    theia_l3a,
)

SAMPLE = Path(__file__).resolve().parents[1] / "data" / "iota2-theia-landsat8"


def decode(profile: SensorProfile, item: pystac.Item) -> tuple[np.ndarray, np.ndarray]:
    """(bands, h, w) values and (h, w) validity of one item on its native grid, as the cube does."""
    acquisition = parse_item(item, profile, field="test")
    assert acquisition.grid is not None
    sensor = SensorCube(profile, (acquisition,), (), ())
    values, valid = read_sensor(sensor, acquisition.grid, RasterioReader())
    return values[0], valid[0]


def up(array: np.ndarray) -> np.ndarray:
    """A 20 m layer on the 10 m grid (nearest): each pixel becomes 2 x 2."""
    return np.repeat(np.repeat(array, 2, axis=0), 2, axis=1)


def bilinear_touch(coarse_nodata: np.ndarray) -> np.ndarray:
    """10 m pixels whose bilinear kernel (the 2 x 2 nearest 20 m centres) holds a no-data pixel."""
    n = coarse_nodata.shape[0] * 2
    first = np.clip(np.floor((np.arange(n) + 0.5) / 2 - 0.5).astype(int), 0, n // 2 - 1)
    second = np.clip(first + 1, 0, n // 2 - 1)
    out = np.zeros((n, n), dtype=bool)
    for rows in (first, second):
        for cols in (first, second):
            out |= coarse_nodata[np.ix_(rows, cols)]
    return out


# --- the real historical sample -----------------------------------------------------------


@pytest.fixture(scope="module")
def sample_items() -> list[pystac.Item]:
    return index_archive(SAMPLE)


def test_sample_is_small_and_licensed() -> None:
    size = sum(p.stat().st_size for p in SAMPLE.rglob("*") if p.is_file())
    assert size < 400_000
    assert "AFFERO GENERAL PUBLIC LICENSE" in (SAMPLE / "LICENSE").read_text()
    assert "iota2" in (SAMPLE / "SOURCE.md").read_text()


def test_historical_landsat_layout_is_indexed(sample_items: list[pystac.Item]) -> None:
    assert [it.id for it in sample_items] == [
        "LANDSAT8_OLITIRS_XS_20160330_N2A_France-MetropoleD0005H0002",
        "LANDSAT8_OLITIRS_XS_20160330_N2A_France-MetropoleD0005H0003",
        "LANDSAT8_OLITIRS_XS_20160415_N2A_France-MetropoleD0005H0002",
        "LANDSAT8_OLITIRS_XS_20160415_N2A_France-MetropoleD0005H0003",
    ]
    for item in sample_items:
        assert item.collection_id == "landsat8-n2a-theia"
        assert item.properties["platform"] == "landsat-8"
        assert item.properties["grid:code"] == "THEIA-" + item.id[-10:]
        day = item.id.split("_")[3]
        assert item.datetime == datetime.strptime(day, "%Y%m%d").replace(tzinfo=UTC)
        assert set(item.assets) == {"ORTHO_SURF_CORR_PENTE", "NUA", "SAT", "DIV", "NODATA"}
        stack = item.assets["ORTHO_SURF_CORR_PENTE"]
        with rasterio.open(stack.href) as src:
            assert src.count == 7
            assert item.properties["proj:code"] == "EPSG:2154" == f"EPSG:{src.crs.to_epsg()}"
            assert item.properties["proj:shape"] == [src.height, src.width]
            assert item.properties["proj:transform"] == list(src.transform)[:6]
        for asset in item.assets.values():
            assert Path(asset.href).is_file() and asset.extra_fields["proj:code"] == "EPSG:2154"
        # Near Toulouse, in WGS84.
        lon, lat = shapely.geometry.shape(item.geometry).centroid.coords[0]
        assert 1.3 < lon < 1.5 and 43.4 < lat < 43.5
    shapes = {it.id[-10:]: it.properties["proj:shape"] for it in sample_items}
    assert shapes == {"D0005H0002": [50, 50], "D0005H0003": [49, 56]}


def test_historical_landsat_pixels_decode_by_hand(sample_items: list[pystac.Item]) -> None:
    (profile,) = profile_by_name("landsat8-n2a-theia").configure("l8")
    for item in sample_items:
        values, valid = decode(profile, item)
        hrefs = {k: a.href for k, a in item.assets.items()}
        with rasterio.open(hrefs["ORTHO_SURF_CORR_PENTE"]) as src:
            stack = src.read().astype(np.float64)
        masks = {}
        for key in ("DIV", "NUA", "SAT"):
            with rasterio.open(hrefs[key]) as src:
                masks[key] = src.read(1).astype(np.int64)  # float32 in one tile, uint in other
        # The original chain's rule: DIV odd (no data), any cloud, any saturation.
        hand_valid = (masks["DIV"] % 2 == 0) & (masks["NUA"] == 0) & (masks["SAT"] == 0)
        np.testing.assert_array_equal(valid, hand_valid)
        # Reflectance x 1000, bands 1..7 = coastal, blue, green, red, nir, swir16, swir22.
        np.testing.assert_allclose(values, stack / 1000.0, rtol=1e-6)
        assert profile.band_names[3] == "red"


def test_archive_catalog_feeds_the_static_catalog_reader(
    sample_items: list[pystac.Item], tmp_path: Path
) -> None:
    path = write_archive_catalog(SAMPLE, tmp_path / "stac")
    catalog = pystac.Catalog.from_file(str(path))
    (collection,) = list(catalog.get_children())
    assert collection.id == "landsat8-n2a-theia"
    items = sorted(catalog.get_items(recursive=True), key=lambda it: it.id)
    assert [it.id for it in items] == [it.id for it in sample_items]
    for item, original in zip(items, sample_items, strict=True):
        assert item.properties["proj:transform"] == original.properties["proj:transform"]
        for key, asset in item.assets.items():
            assert asset.get_absolute_href() == original.assets[key].href


# --- synthetic archives in the current layouts --------------------------------------------


@pytest.fixture(scope="module")
def l2a(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, list[SyntheticScene]]:
    root = tmp_path_factory.mktemp("theia") / "archive"
    return root, theia_l2a(root / "S2", seed=7)


@pytest.fixture(scope="module")
def l3a(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, list[SyntheticScene]]:
    root = tmp_path_factory.mktemp("theia_l3a")
    return root, theia_l3a(root, seed=8)


def test_l2a_archive_items(l2a: tuple[Path, list[SyntheticScene]]) -> None:
    root, scenes = l2a
    items = index_archive(root)
    assert sorted(it.id for it in items) == sorted(s.item.id for s in scenes)
    by_tile: dict[str, list[pystac.Item]] = {}
    for item in items:
        by_tile.setdefault(item.properties["grid:code"], []).append(item)
    # Two overlapping tiles in two UTM zones, with different numbers of dates.
    assert {k: len(v) for k, v in by_tile.items()} == {"MGRS-31TGK": 4, "MGRS-32TKQ": 3}
    codes = {k: {it.properties["proj:code"] for it in v} for k, v in by_tile.items()}
    assert codes == {"MGRS-31TGK": {"EPSG:32631"}, "MGRS-32TKQ": {"EPSG:32632"}}
    first, second = (shapely.geometry.shape(v[0].geometry) for v in by_tile.values())
    assert first.intersection(second).area > 0.2 * first.area
    for item in items:
        assert item.collection_id == "sentinel2-l2a-theia"
        assert item.properties["platform"] in ("sentinel-2a", "sentinel-2b")
        assert item.properties["theia:product_version"] == "2.2"
        stamp = item.id.split("_")[1]
        assert item.datetime == datetime.strptime(stamp, "%Y%m%d-%H%M%S-%f").replace(tzinfo=UTC)
        assert item.properties["proj:shape"] == [48, 48]  # the item grid is the 10 m grid
        assert item.assets["B04"].extra_fields["proj:shape"] == [48, 48]
        assert item.assets["B11"].extra_fields["proj:shape"] == [24, 24]
        assert item.assets["SAT_R2"].extra_fields["proj:transform"][0] == 20.0
        assert Path(item.assets["CLM_R1"].href).parent.name == "MASKS"


@pytest.mark.parametrize("bands", [["red", "nir"], ["blue", "green", "red", "nir"], None])
def test_l2a_masks_decode_as_computed_by_hand(
    l2a: tuple[Path, list[SyntheticScene]], bands: list[str] | None
) -> None:
    _, scenes = l2a
    (profile,) = profile_by_name("sentinel2-l2a-theia").configure("s2", bands=bands)
    names = profile.band_names
    r1 = {"blue": 0, "green": 1, "red": 2, "nir": 3}
    r2 = {"rededge1": 0, "rededge2": 1, "rededge3": 2, "nir08": 3, "swir16": 4, "swir22": 5}
    bits1 = sum(1 << bit for band, bit in r1.items() if band in names)
    bits2 = sum(1 << bit for band, bit in r2.items() if band in names)
    seen = {"cloud": False, "saturated": False, "edge": False}
    for scene in scenes:
        raw = scene.raw
        hand = (raw["CLM_R1"] == 0) & (raw["EDG_R1"] == 0) & ((raw["SAT_R1"] & bits1) == 0)
        hand &= up(raw["SAT_R2"] & bits2) == 0
        if bits2:  # 20 m bands are resampled bilinearly: no value beside a 20 m gap
            hand &= ~bilinear_touch(raw["B11"] == -10000)
        values, valid = decode(profile, scene.item)
        np.testing.assert_array_equal(valid, hand)
        red = names.index("red")
        np.testing.assert_allclose(values[red][hand], raw["B04"][hand] * 1e-4, rtol=1e-6)
        seen["cloud"] |= bool((raw["CLM_R1"] != 0).any())
        seen["saturated"] |= bool((raw["SAT_R1"] & bits1).any())
        seen["edge"] |= bool(raw["EDG_R1"].any())
    assert all(seen.values()), seen  # the data exercised every rule


@pytest.mark.parametrize("snow", ["valid", "invalid"])
def test_l3a_flags_decode_as_computed_by_hand(
    l3a: tuple[Path, list[SyntheticScene]], snow: str
) -> None:
    root, scenes = l3a
    items = {it.id: it for it in index_archive(root)}
    assert {it.collection_id for it in items.values()} == {"sentinel2-l3a-theia"}
    assert all(it.datetime and it.datetime.day == 15 for it in items.values())
    (profile,) = profile_by_name("sentinel2-l3a-theia").configure(
        "l3a", bands=["red", "nir"], options={"snow": snow}
    )
    for scene in scenes:
        flg = scene.raw["FLG_R1"]
        hand = (flg != FLG_NODATA) & (flg != FLG_CLOUD)
        if snow == "invalid":
            hand &= flg != FLG_SNOW
        _, valid = decode(profile, items[scene.item.id])
        np.testing.assert_array_equal(valid, hand)
    all_flags = np.concatenate([s.raw["FLG_R1"].ravel() for s in scenes])
    assert set(np.unique(all_flags)) == {0, 1, 2, 3, 4}


def test_mixed_archive_catalog_has_one_collection_per_layout(
    l2a: tuple[Path, list[SyntheticScene]],
    l3a: tuple[Path, list[SyntheticScene]],
    tmp_path: Path,
) -> None:
    root = tmp_path / "archive"
    shutil.copytree(SAMPLE / "L8_50x50", root / "L8")
    shutil.copytree(l2a[0], root / "S2")
    shutil.copytree(l3a[0], root / "L3A")
    catalog = pystac.Catalog.from_file(str(write_archive_catalog(root, root / "stac")))
    counts = {c.id: len(list(c.get_items())) for c in catalog.get_children()}
    assert counts == {"landsat8-n2a-theia": 4, "sentinel2-l2a-theia": 7, "sentinel2-l3a-theia": 7}
    # The catalog written inside the archive (item folders named like products) is not indexed.
    assert len(index_archive(root)) == 18


# --- what goes wrong ------------------------------------------------------------------------


def test_empty_or_missing_archive(tmp_path: Path) -> None:
    with pytest.raises(CatalogError, match="does not exist"):
        index_archive(tmp_path / "nowhere")
    (tmp_path / "T31TCJ" / "not_a_product").mkdir(parents=True)
    with pytest.raises(CatalogError) as info:
        index_archive(tmp_path)
    assert "no THEIA product folder found" in str(info.value) and "SENTINEL2" in str(info.value)


def test_product_without_reflectance_names_the_product(tmp_path: Path) -> None:
    product = "SENTINEL2A_20180105-105107-458_L2A_T31TCJ_C_V2-2"
    (tmp_path / product / "MASKS").mkdir(parents=True)
    with pytest.raises(CatalogError) as info:
        index_archive(tmp_path)
    assert product in str(info.value) and "FRE_B2" in str(info.value)


@pytest.mark.filterwarnings("ignore::rasterio.errors.NotGeoreferencedWarning")
def test_file_without_crs_names_the_item_and_the_asset(tmp_path: Path) -> None:
    (tile,) = overlapping_tiles(size=16, dates=(1,), names=("31TGK",))
    scenes = theia_l2a(tmp_path, tiles=[tile])
    path = scenes[0].files["B03"]
    path.unlink()
    with rasterio.open(
        path, "w", driver="GTiff", width=16, height=16, count=1, dtype="int16"
    ) as dst:  # no CRS, no transform: e.g. a file rewritten by a careless tool
        dst.write(np.zeros((1, 16, 16), dtype=np.int16))
    with pytest.raises(CatalogError) as info:
        index_archive(tmp_path)
    message = str(info.value)
    assert scenes[0].item.id in message and "'B03'" in message and "no coordinate" in message
    path.write_bytes(b"not a tiff")
    with pytest.raises(CatalogError, match="cannot be read"):
        index_archive(tmp_path)


def test_missing_mask_file_is_named_when_the_profile_needs_it(tmp_path: Path) -> None:
    (tile,) = overlapping_tiles(size=16, dates=(1,), names=("31TGK",))
    scene = theia_l2a(tmp_path, tiles=[tile])[0]
    scene.files["EDG_R1"].unlink()
    (item,) = index_archive(tmp_path)  # an incomplete product is still indexed ...
    assert "EDG_R1" not in item.assets
    (profile,) = profile_by_name("sentinel2-l2a-theia").configure("s2", bands=["red"])
    with pytest.raises(CatalogError) as info:  # ... and the run says what is missing where
        parse_item(item, profile, field="spec.sensors[0]")
    message = str(info.value)
    assert item.id in message and "'EDG_R1'" in message and "spec.sensors[0]" in message
