"""Object mode end to end on the small demo: computed segments (then the same run resumed with a
segmentation file), one label per segment as a raster and polygons, accuracy per segment and per
pixel beside the pixel map's."""

from __future__ import annotations

import json
import shutil
from pathlib import Path
from typing import Any

import geopandas as gpd
import numpy as np
import pytest
import rasterio
import yaml

from tests.run.helpers import cli, demo_manifest, last_summary

pytestmark = pytest.mark.slow


def _objects(spec: dict[str, Any]) -> None:
    spec["objects"] = {"segmentation": {"method": "slic", "size": 40, "halo": 12}}


@pytest.fixture(scope="module")
def run(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    folder = tmp_path_factory.mktemp("objects")
    manifest = demo_manifest(folder, _objects)
    done = cli("run", str(manifest))
    assert done.returncode == 0, done.stdout + done.stderr
    return {
        "folder": folder,
        "store": folder / "store",
        "manifest": manifest,
        "summary": last_summary(done.stdout + done.stderr),
    }


def _read(path: Path) -> tuple[np.ndarray, Any]:
    with rasterio.open(path) as src:
        return src.read(1), src.nodata


def test_one_label_per_segment_as_raster_and_polygons(run: dict[str, Any]) -> None:
    store = run["store"]
    labels, nodata = _read(store / "objects" / "labels.tif")
    segments, _ = _read(store / "objects" / "segments.tif")
    pixel_labels, _ = _read(store / "maps" / "labels.tif")
    assert labels.shape == segments.shape == pixel_labels.shape
    for segment in np.unique(segments[segments > 0])[:200]:
        assert np.unique(labels[segments == segment]).size == 1
    crossing = set(np.unique(segments[:, 31])) & set(np.unique(segments[:, 32])) - {0}
    assert crossing  # segments across the chunk border at column 32 kept whole
    polygons = gpd.read_file(store / "objects" / "segments.gpkg")
    assert polygons["segment"].is_unique
    assert {"predicted", "confidence", "pixels"} <= set(polygons.columns)
    assert set(polygons["segment"]) == set(np.unique(segments[segments > 0]).tolist())
    assert (labels != nodata).sum() > 0.9 * (pixel_labels != nodata).sum()


def test_accuracy_per_segment_and_per_pixel_beside_the_pixel_map(run: dict[str, Any]) -> None:
    report = json.loads((run["store"] / "objects" / "report.json").read_text())
    assert report["per_pixel"]["validation_pixels"] > 100
    for name in ("objects", "pixels"):
        assert 0.4 < report["per_pixel"][name]["overall_accuracy"] <= 1
    assert report["per_segment"]["segments"] > 0
    units = run["summary"]["units"]["objects"]
    assert units["ran"] == units["total"]


def test_a_segmentation_file_resumed_in_the_same_store(run: dict[str, Any]) -> None:
    store = run["store"]
    before, _ = _read(store / "objects" / "segments.tif")
    given = run["folder"] / "segments.tif"
    shutil.copy(store / "objects" / "segments.tif", given)
    data = yaml.safe_load(run["manifest"].read_text())
    data["spec"]["objects"]["segmentation"] = {"path": str(given)}
    manifest = run["folder"] / "file.yaml"
    manifest.write_text(yaml.safe_dump(data))
    done = cli("run", str(manifest), "--resume")
    assert done.returncode == 0, done.stdout + done.stderr
    units = last_summary(done.stdout + done.stderr)["units"]
    assert units["predict"]["ran"] == 0  # the pixel chain is kept
    assert units["objects"]["ran"] > 0
    after, _ = _read(store / "objects" / "segments.tif")
    assert np.array_equal(before, after)  # the file's ids are the segments
    report = json.loads((store / "objects" / "report.json").read_text())
    assert report["segmentation"] == "raster"


def test_percentiles_resumed_in_the_same_store(run: dict[str, Any]) -> None:
    import pandas as pd

    store = run["store"]
    table = store / "objects" / "segments.parquet"
    before = pd.read_parquet(table).set_index("segment").sort_index()
    data = yaml.safe_load(run["manifest"].read_text())
    data["spec"]["objects"]["statistics"] = ["mean", "p0", "p50", "p100"]
    manifest = run["folder"] / "percentiles.yaml"
    manifest.write_text(yaml.safe_dump(data))
    done = cli("run", str(manifest), "--resume")
    assert done.returncode == 0, done.stdout + done.stderr
    units = last_summary(done.stdout + done.stderr)["units"]
    assert units["predict"]["ran"] == 0
    assert units["objects"]["ran"] > 0  # the zonal parts now keep their pixels' values
    after = pd.read_parquet(table).set_index("segment").sort_index()
    means = [c for c in before.columns if c.endswith("_mean")]
    assert means and after.index.equals(before.index)
    assert np.array_equal(after[means].to_numpy(), before[means].to_numpy(), equal_nan=True)
    for mean in means:  # <feature>_p<q> beside <feature>_mean
        feature = mean.removesuffix("_mean")
        low, mid, high = (after[f"{feature}_p{q}"] for q in (0, 50, 100))
        valid = after[mean].notna()
        assert (low[valid] <= after[mean][valid]).all() and (
            after[mean][valid] <= high[valid]
        ).all()
        assert (low[valid] <= mid[valid]).all() and (mid[valid] <= high[valid]).all()
    one = after[after["pixels"] == 1]  # a one-pixel segment: every percentile is its pixel
    if len(one):
        feature = means[0].removesuffix("_mean")
        assert np.array_equal(one[f"{feature}_p0"], one[f"{feature}_p100"], equal_nan=True)
    # Exact: each segment's percentiles are numpy's on its pixels of the whole map, chunks or not.
    from pipeline.manifest import load_manifest, resolve
    from pipeline.model import Window
    from pipeline.objects.mosaic import read_mosaic
    from pipeline.objects.zonal import PERCENTILE_METHOD
    from pipeline.run.runner import plan_run

    plan = plan_run(resolve(load_manifest(manifest)), resume=True)
    cube, objects = plan.outputs("cube").cube, plan.outputs("objects")
    names = list(cube.feature_names)
    whole = Window(0, 0, objects.grid.height, objects.grid.width)
    stack = read_mosaic(objects.tiles, cube.time_series_variables, len(names), whole)
    ids, _ = _read(store / "objects" / "segments.tif")
    valid = ~np.isnan(stack).any(axis=0)
    crossing = 0
    for segment in after.index[after["pixels"] > 0]:
        inside = (ids == segment) & valid
        rows, cols = np.nonzero(ids == segment)
        crossing += int(len(np.unique(rows // 32)) > 1 or len(np.unique(cols // 32)) > 1)
        pixels = stack[:, inside].astype(np.float64)
        expected = np.percentile(pixels, [0, 50, 100], axis=1, method=PERCENTILE_METHOD)
        for q, values in zip((0, 50, 100), expected, strict=True):
            found = after.loc[segment, [f"{n}_p{q}" for n in names]].to_numpy(np.float32)
            assert np.array_equal(found, values.astype(np.float32)), (segment, q)
    assert crossing > 10  # segments across the demo's 32 px chunks
    gpkg = gpd.read_file(store / "objects" / "segments.gpkg", rows=1)
    assert f"{means[0].removesuffix('_mean')}_p50" in gpkg.columns
