"""The postprocess section end to end on the small demo: the smooth stage between predict and
mosaic (its smoothed maps mosaicked), the regularized map, polygons, uncertainty layers, legends
GDAL reads, the run summary, STAC and resume."""

from __future__ import annotations

import json
import shutil
import subprocess
from pathlib import Path
from typing import Any

import geopandas as gpd
import numpy as np
import pystac
import pytest
import rasterio

from pipeline.postprocess.regularize import RegularizationConfig, regularize
from tests.run.helpers import cli, demo_manifest, last_summary

pytestmark = pytest.mark.slow

MMU = 4


def _postprocess(spec: dict[str, Any]) -> None:
    spec["outputs"]["probabilities"] = True
    spec["postprocess"] = {
        "smoothing": {"window_size": 5},
        "regularization": {"mmu_pixels": MMU, "connectivity": 4},
        "vectorization": {"formats": ["parquet", "gpkg"]},
        "uncertainty": {},
        "colors": {1: "#ffff00"},
    }


@pytest.fixture(scope="module")
def run(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    folder = tmp_path_factory.mktemp("postprocess")
    manifest = demo_manifest(folder, _postprocess)
    done = cli("run", str(manifest))
    assert done.returncode == 0, done.stdout + done.stderr
    return {
        "store": folder / "store",
        "manifest": manifest,
        "summary": last_summary(done.stdout + done.stderr),
    }


def _read(path: Path) -> tuple[np.ndarray, Any]:
    with rasterio.open(path) as src:
        assert src.tags(ns="IMAGE_STRUCTURE").get("LAYOUT") == "COG"
        return src.read(1), src.profile


def test_the_products_are_listed_and_written(run: dict[str, Any]) -> None:
    outputs = run["summary"]["outputs"]
    for role in ("labels_smoothed", "confidence_smoothed", "labels_postprocessed"):
        assert (run["store"] / outputs[role]).exists(), role
    for role in ("entropy", "margin"):
        assert (run["store"] / outputs[role]).exists(), role
    assert len(outputs["probabilities_smoothed"]) == len(outputs["probabilities"])
    assert list(run["summary"]["stage_seconds"]).index("smooth") == (
        list(run["summary"]["stage_seconds"]).index("predict") + 1
    )
    assert sorted(Path(p).name for p in outputs["polygons"]) == [
        "polygons.gpkg",
        "polygons.parquet",
    ]
    collection = pystac.Collection.from_file(str(run["store"] / "stac" / "collection.json"))
    roles = {next(iter(i.assets.values())).title for i in collection.get_items()}
    assert len(roles) >= 4 + 2 + 2
    regularized = next(i for i in collection.get_items() if i.id.endswith("labels_postprocessed"))
    classes = regularized.assets["data"].extra_fields.get("classification:classes") or [
        c
        for a in regularized.assets.values()
        for c in a.extra_fields.get("classification:classes", [])
    ]
    assert any(c.get("color_hint") == "FFFF00" for c in classes)


def test_the_regularized_map_has_no_region_below_the_unit_that_had_a_large_neighbour(
    run: dict[str, Any],
) -> None:
    store = run["store"]
    final, profile = _read(store / "maps" / "labels_regularized.tif")
    smoothed, _ = _read(store / "maps" / "labels_smoothed.tif")  # the mosaic's, from smooth
    raw, _ = _read(store / "maps" / "labels.tif")
    assert (smoothed != raw).any() and (final != smoothed).any()
    codes = np.unique(final[final != profile["nodata"]])
    again = regularize(final, RegularizationConfig(MMU, 4), profile["nodata"], codes)
    # a second regularization changes almost nothing: the map is already at its unit
    assert (again != final).mean() < 0.01


def test_gdal_reads_the_legends(run: dict[str, Any]) -> None:
    gdalinfo = shutil.which("gdalinfo")
    if gdalinfo is None:
        pytest.skip("gdalinfo is not installed (scripts/apt-packages.txt: gdal-bin)")
    store = run["store"]
    for name in ("labels_regularized.tif", "labels_smoothed.tif", "labels.tif"):
        info = subprocess.run(
            [gdalinfo, str(store / "maps" / name)], capture_output=True, text=True, check=True
        ).stdout
        assert "Color Table" in info, name
        assert "Categories:" in info, name
        assert "Description = land cover class" in info, name
    info = subprocess.run(
        [gdalinfo, str(store / "maps" / "entropy.tif")], capture_output=True, text=True, check=True
    ).stdout
    assert "Description = normalized entropy" in info and "Unit Type: %" in info


def test_the_polygons_are_valid_and_cover_the_mapped_area(run: dict[str, Any]) -> None:
    store = run["store"]
    final, profile = _read(store / "maps" / "labels_regularized.tif")
    pixel = abs(profile["transform"].a * profile["transform"].e)
    mapped = float((final != profile["nodata"]).sum()) * pixel
    for name in ("polygons.parquet", "polygons.gpkg"):
        frame = (
            gpd.read_parquet(store / "maps" / name)
            if name.endswith("parquet")
            else (gpd.read_file(store / "maps" / name, layer="regions"))
        )
        assert frame.geometry.is_valid.all(), name
        assert abs(frame.geometry.area.sum() - mapped) <= pixel * len(frame), name
        assert abs(frame["area"].sum() - mapped) <= 1e-6 * mapped
        assert set(frame["class_code"]) == set(np.unique(final[final != profile["nodata"]]))
        shares = frame[[c for c in frame.columns if c.startswith("share_")]].sum(axis=1)
        assert np.allclose(shares, 1.0)
        assert frame.geometry.area.min() >= pixel * 1 - 1e-6


def test_the_raw_and_the_final_map_are_scored_on_the_same_pixels(run: dict[str, Any]) -> None:
    store = run["store"]
    scores = json.loads((store / "maps" / "postprocess" / "comparison.json").read_text())
    assert scores["raw"]["n_samples"] == scores["postprocessed"]["n_samples"] == scores["pixels"]
    assert scores["pixels"] > 0 and 0 <= scores["changed"] <= scores["pixels"]
    page = (store / "maps" / "postprocess" / "comparison.html").read_text()
    assert "raw map" in page and "post-processed map" in page and "#ffff00" in page
    # the report draws the classes in the products' colours (the manifest's, or the palette's)
    metrics = json.loads((store / "report" / "metrics.json").read_text())
    assert metrics["legend"]["1"]["color"] == "#ffff00"


def test_resume_keeps_the_finished_units(run: dict[str, Any]) -> None:
    done = cli("run", str(run["manifest"]), "--resume")
    assert done.returncode == 0, done.stdout + done.stderr
    summary = last_summary(done.stdout + done.stderr)
    assert summary["units_run"] == 0, json.dumps(summary["units"])
    assert summary["units"]["postprocess"]["skipped"] >= 1
