"""Checks of the bundled Slovenia demo catalog (examples/slovenia), built by make_catalog.py.

The structural checks run on the committed files; the comparisons with the source arrays and the
reproducibility check on the eo-learn patch copied into tests/data/eolearn-slovenia-s2.
"""

from __future__ import annotations

import hashlib
import json
import subprocess
import sys
from datetime import UTC, datetime
from pathlib import Path

import numpy as np
import pystac
import pytest
import rasterio
from rasterio.transform import from_bounds

REPO = Path(__file__).resolve().parents[1]
DEMO = REPO / "examples" / "slovenia"
CATALOG = DEMO / "catalog" / "catalog.json"
SCRIPT = DEMO / "make_catalog.py"
SOURCE = REPO / "tests" / "data" / "eolearn-slovenia-s2"
PATCH = SOURCE / "TestEOPatch"

N_ITEMS = 68
SHAPE = (101, 100)
BBOX = (465181.0522318204, 5079244.8912012065, 466180.53145382757, 5080254.63349641)
TRANSFORM = from_bounds(*BBOX, width=SHAPE[1], height=SHAPE[0])
# A few acquisitions, including both of 2015-12-08, to compare pixel by pixel.
SAMPLE = [0, 7, 8, 33, 67]


@pytest.fixture(scope="module")
def items() -> list[pystac.Item]:
    catalog = pystac.Catalog.from_file(str(CATALOG))
    return list(catalog.get_items(recursive=True))


@pytest.fixture(scope="module")
def source() -> dict[str, np.ndarray]:
    return {
        "ndvi": np.load(PATCH / "data" / "NDVI.npy")[..., 0],
        "clm": np.load(PATCH / "mask" / "CLM.npy")[..., 0],
        "is_data": np.load(PATCH / "mask" / "IS_DATA.npy")[..., 0],
        "times": json.loads((PATCH / "timestamps.json").read_text(encoding="utf-8")),
    }


def asset_path(item: pystac.Item, key: str) -> Path:
    return Path(item.assets[key].get_absolute_href() or "")


def test_catalog_structure(items: list[pystac.Item]) -> None:
    catalog = pystac.Catalog.from_file(str(CATALOG))
    assert catalog.id == "slovenia-demo"
    collection = catalog.get_child("slovenia-s2-ndvi")
    assert isinstance(collection, pystac.Collection)
    assert collection.license == "MIT"
    assert {"producer", "licensor"} <= {
        role for p in collection.providers or [] for role in p.roles or []
    }
    assert len(items) == N_ITEMS
    ids = [item.id for item in items]
    assert len(set(ids)) == N_ITEMS
    times = [item.datetime for item in items if item.datetime is not None]
    assert len(times) == N_ITEMS
    assert all(t.tzinfo is not None for t in times)
    assert times == sorted(times)
    interval = collection.extent.temporal.intervals[0]
    assert interval == [times[0], times[-1]]


def test_hrefs_are_relative() -> None:
    # SELF_CONTAINED: no absolute paths of the machine that built it may leak into the JSON.
    for path in (DEMO / "catalog").rglob("*.json"):
        text = path.read_text(encoding="utf-8")
        assert str(REPO) not in text, path
        assert '"rel": "self"' not in text, path


def test_items(items: list[pystac.Item]) -> None:
    for item in items:
        assert item.datetime is not None
        assert item.id == "slovenia-s2-" + item.datetime.strftime("%Y%m%dT%H%M%S")
        assert item.properties["constellation"] == "sentinel-2"
        assert 0 <= item.properties["eo:cloud_cover"] <= 100
        assert item.properties["proj:code"] == "EPSG:32633"
        assert item.properties["proj:shape"] == list(SHAPE)
        assert item.properties["proj:transform"][:6] == pytest.approx(list(TRANSFORM)[:6])
        assert item.properties["proj:bbox"] == pytest.approx(list(BBOX))
        lon0, lat0, lon1, lat1 = item.bbox or []
        assert 14.5 < lon0 < lon1 < 14.6 and 45.8 < lat0 < lat1 < 45.9
        for key in ("ndvi", "cloud"):
            asset = item.assets[key]
            assert asset.media_type == pystac.MediaType.COG
            assert asset.href.startswith("./")
            assert asset_path(item, key).is_file()
        ndvi_band = item.assets["ndvi"].extra_fields["raster:bands"][0]
        assert ndvi_band == {"data_type": "int16", "nodata": -32768, "offset": 0.0, "scale": 1e-4}
        assert item.assets["ndvi"].roles == ["data"]
        assert "cloud" in (item.assets["cloud"].roles or [])


def test_item_json_keeps_proj_epsg() -> None:
    # pystac migrates proj:epsg away when reading, so check the raw JSON for older readers.
    paths = sorted((DEMO / "catalog" / "slovenia-s2-ndvi").glob("*/*.json"))
    assert len(paths) == N_ITEMS
    for path in paths:
        props = json.loads(path.read_text(encoding="utf-8"))["properties"]
        assert props["proj:epsg"] == 32633
        assert props["proj:code"] == "EPSG:32633"


def test_cogs(items: list[pystac.Item]) -> None:
    for item in items:
        for key, dtype, nodata in (("ndvi", "int16", -32768), ("cloud", "uint8", 255)):
            with rasterio.open(asset_path(item, key)) as src:
                assert src.crs.to_epsg() == 32633
                assert src.transform.almost_equals(TRANSFORM)
                assert src.shape == SHAPE
                assert src.count == 1
                assert src.dtypes[0] == dtype
                assert src.nodata == nodata
                assert src.profile["tiled"]
                assert src.tags(ns="IMAGE_STRUCTURE").get("LAYOUT") == "COG"


def test_reference_and_license() -> None:
    assert (DEMO / "reference" / "lulc.gpkg").stat().st_size > 0
    assert "MIT License" in (DEMO / "LICENSE").read_text(encoding="utf-8")
    assert (DEMO / "SOURCE.md").is_file()


def test_demo_size() -> None:
    size = sum(p.stat().st_size for p in DEMO.rglob("*") if p.is_file())
    assert size < 4 * 1024 * 1024


def test_pixels_match_source(items: list[pystac.Item], source: dict[str, np.ndarray]) -> None:
    for t in SAMPLE:
        item = items[t]
        expected_time = datetime.fromisoformat(source["times"][t]).replace(tzinfo=UTC)
        assert item.datetime == expected_time
        is_data = source["is_data"][t].astype(bool)
        with rasterio.open(asset_path(item, "ndvi")) as src:
            raw = src.read(1)
        assert np.array_equal(raw == -32768, ~is_data)
        np.testing.assert_allclose(raw[is_data] * 1e-4, source["ndvi"][t][is_data], atol=1e-4)
        with rasterio.open(asset_path(item, "cloud")) as src:
            cloud = src.read(1)
        expected = np.where(is_data, source["clm"][t], 255).astype(np.uint8)
        np.testing.assert_array_equal(cloud, expected)
        cover = 100 * source["clm"][t][is_data].mean() if is_data.any() else 100.0
        assert item.properties["eo:cloud_cover"] == pytest.approx(cover, abs=0.01)


# Files in the demo folder that the script does not make (the demo's run manifest).
NOT_GENERATED = {"run.yaml"}


def _digests(root: Path) -> dict[str, str]:
    return {
        str(p.relative_to(root)): hashlib.sha256(p.read_bytes()).hexdigest()
        for p in sorted(root.rglob("*"))
        if p.is_file()
        and p.suffix != ".py"
        and "__pycache__" not in p.parts
        and str(p.relative_to(root)) not in NOT_GENERATED
    }


def test_script_reproduces_committed_files(tmp_path: Path) -> None:
    for out in (tmp_path / "a", tmp_path / "b"):
        subprocess.run(
            [sys.executable, str(SCRIPT), "--source", str(SOURCE), "--out", str(out)],
            check=True,
            capture_output=True,
        )
    fresh = _digests(tmp_path / "a")
    # Two runs in the same environment are byte-identical.
    assert fresh == _digests(tmp_path / "b")
    committed = _digests(DEMO)
    assert fresh.keys() == committed.keys()
    for name, digest in fresh.items():
        if name.endswith(".tif"):
            # Compressed bytes may change with the zlib/GDAL build: compare what is stored.
            with rasterio.open(tmp_path / "a" / name) as new, rasterio.open(DEMO / name) as old:
                assert new.profile == old.profile, name
                assert np.array_equal(new.read(), old.read()), name
        else:
            assert digest == committed[name], f"{name} is out of date: re-run {SCRIPT.name}"
