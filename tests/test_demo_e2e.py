"""The demo path end to end, as a user runs it: the CLI in its own process, a real LocalCluster of
worker processes, the bundled real Sentinel-2 catalog, and every output checked."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import geopandas as gpd
import numpy as np
import pystac
import pytest
import rasterio
import rioxarray  # noqa: F401  (the .rio accessor)
import xarray as xr

from tests.conftest import DEMO_DIR, DEMO_MANIFEST, REPO

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def demo_run(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, str]:
    store = tmp_path_factory.mktemp("demo") / "store"
    done = subprocess.run(
        [sys.executable, "-m", "pipeline.cli", "run", str(DEMO_MANIFEST), "--store", str(store)],
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=600,
        check=False,
    )
    assert done.returncode == 0, done.stdout + done.stderr
    return store, done.stdout + done.stderr


def _item_grid() -> tuple[str, tuple[float, ...], tuple[int, int]]:
    catalog = pystac.Catalog.from_file(str(DEMO_DIR / "catalog" / "catalog.json"))
    item = next(iter(catalog.get_items(recursive=True)))
    props = item.properties
    return props["proj:code"], tuple(props["proj:transform"][:6]), tuple(props["proj:shape"])


def test_console_says_where_outputs_are(demo_run: tuple[Path, str]) -> None:
    _store, output = demo_run
    flat = " ".join(output.split())
    assert "dask dashboard: http://127.0.0.1:" in flat
    for name in ("labels.tif", "confidence.tif", "cube.zarr", "report.html", "metrics.json"):
        assert name in flat
    assert "overall accuracy" in flat


def test_label_map_is_a_cog_on_the_catalog_grid(demo_run: tuple[Path, str]) -> None:
    store, _ = demo_run
    crs, transform, shape = _item_grid()
    with rasterio.open(store / "maps" / "labels.tif") as src:
        assert src.crs.to_string() == crs
        assert tuple(src.transform)[:6] == pytest.approx(transform)
        assert (src.height, src.width) == shape
        assert src.tags(ns="IMAGE_STRUCTURE").get("LAYOUT") == "COG"
        labels = src.read(1)
        nodata = src.nodata
    classes = set(np.unique(labels).tolist()) - {nodata}
    assert classes <= {1, 2, 3, 4, 8}
    assert {2, 3} <= classes  # forest and grassland dominate the patch
    with rasterio.open(store / "maps" / "confidence.tif") as src:
        confidence = src.read(1)
        assert src.tags(ns="IMAGE_STRUCTURE").get("LAYOUT") == "COG"
    mapped = labels != nodata
    assert confidence[mapped].max() <= 100
    assert confidence[mapped].min() > 0


def test_cube_opens_with_xarray_and_knows_its_crs_and_dates(demo_run: tuple[Path, str]) -> None:
    store, _ = demo_run
    cube = xr.open_zarr(store / "cube.zarr")
    assert cube.rio.crs.to_string() == "EPSG:32633"
    times = cube["s2_time"].values
    assert len(times) == 37  # 2017-01-01 .. 2017-12-31 every 10 days
    assert str(times[0])[:10] == "2017-01-01" and str(times[-1])[:10] == "2017-12-27"
    ndvi = cube["s2_ndvi"].values
    assert ndvi.shape == (37, 101, 100)
    assert np.isfinite(ndvi).all()  # every pixel has clear acquisitions in 2017
    assert ndvi.min() >= -1 and ndvi.max() <= 1
    assert int(cube["s2_valid_count"].min()) >= 1


def test_split_keeps_polygons_apart(demo_run: tuple[Path, str]) -> None:
    store, _ = demo_run
    samples = gpd.read_parquet(store / "samples" / "samples.parquet")
    train = set(samples.loc[samples["split"] == "train", "polygon_id"])
    validation = set(samples.loc[samples["split"] == "validation", "polygon_id"])
    assert train and validation
    assert not train & validation
    assert samples.crs.to_string() == "EPSG:32633"


def test_report_and_metrics(demo_run: tuple[Path, str]) -> None:
    store, _ = demo_run
    report = store / "report"
    metrics = json.loads((report / "metrics.json").read_text())
    for name in ("report.html", "confusion_matrix.png", "map_quicklook.png"):
        assert (report / name).stat().st_size > 1000
    # Measured on polygons never used in training; the README quotes this figure.
    assert 0.8 < metrics["overall_accuracy"] <= 1
    assert 0.3 < metrics["kappa"] <= 1
    confusion = np.array(metrics["confusion"])
    assert confusion.sum() == metrics["n_samples"]
    summary = json.loads((store / "run.json").read_text())
    assert set(summary["stage_seconds"]) == {
        "discover", "cube", "samples", "train", "predict", "mosaic", "postprocess", "validate",
    }  # fmt: skip
    assert Path(summary["outputs"]["labels"]).exists()


def test_no_temporary_files_left(demo_run: tuple[Path, str]) -> None:
    store, _ = demo_run
    leftovers = [p for p in store.rglob("*") if ".tmp-" in p.name or p.name.endswith(".gtiff")]
    assert leftovers == []


def test_stac_collection_describes_the_maps(demo_run: tuple[Path, str]) -> None:
    store, _ = demo_run
    collection = pystac.Collection.from_file(str(store / "stac" / "collection.json"))
    items = {item.id: item for item in collection.get_items()}
    # the demo's map products (postprocess) are described beside the raw maps
    assert set(items) == {
        "slovenia-demo-labels",
        "slovenia-demo-confidence",
        "slovenia-demo-labels_postprocessed",
    }
    labels = items["slovenia-demo-labels"]
    crs, transform, shape = _item_grid()
    assert labels.properties["proj:code"] == crs
    assert tuple(labels.properties["proj:shape"]) == shape
    assert tuple(labels.properties["proj:transform"][:6]) == pytest.approx(transform)
    asset = labels.assets["data"]
    classes = {c["value"]: c for c in asset.extra_fields["classification:classes"]}
    with rasterio.open(store / "maps" / "labels.tif") as src:
        values, counts = np.unique(src.read(1), return_counts=True)
        nodata = src.nodata
    assert classes[int(nodata)].get("nodata") is True
    for value, count in zip(values.tolist(), counts.tolist(), strict=True):
        if value != nodata:
            assert classes[value]["count"] == count  # the class areas of the map itself
    item_folder = store / "stac" / labels.id
    assert (item_folder / asset.href).resolve() == (store / "maps" / "labels.tif").resolve()


def test_report_has_area_weighted_estimates_with_the_sampling_caveat(
    demo_run: tuple[Path, str],
) -> None:
    store, _ = demo_run
    metrics = json.loads((store / "report" / "metrics.json").read_text())
    area = metrics["area_estimates"]
    assert area["sampling"] == "polygon_split" and area["intervals_are_indicative"] is True
    with rasterio.open(store / "maps" / "labels.tif") as src:
        labels = src.read(1)
        nodata = src.nodata
    mapped = {int(k): v for k, v in area["map"]["pixels"].items()}
    assert sum(mapped.values()) == int((labels != nodata).sum())
    assert "indicative" in (store / "report" / "report.html").read_text()


def test_the_first_line_comes_first_and_the_warm_up_has_its_own(demo_run: tuple[Path, str]) -> None:
    _, output = demo_run
    events = [json.loads(line) for line in output.splitlines() if line.startswith("{")]
    names = [e["event"] for e in events]
    assert names[0] == "run.planning" and events[0]["run"] == "slovenia-demo"
    # The workers' start and imports are reported on their own line, before any stage starts:
    # the stages' timers and rates count their units only.
    workers = names.index("run.workers")
    assert names.index("run.dashboard") < workers < names.index("stage.started")
    warm = events[workers]
    assert warm["workers"] == 2 and warm["finished"] is True
    assert warm["seconds"] >= warm["waited"] >= 0
    cube = next(e for e in events if e["event"] == "stage.started" and e["stage"] == "cube")
    assert cube["ts"] >= warm["ts"]
