"""The fusion section end to end on the small demo: two seed models of one run and a model per
sensor fused by Dempster-Shafer, the report beside each source's, resume, and an earlier run's
maps as a source.

The demo has one sensor's imagery (Sentinel-2 NDVI with its cloud mask); the run reads it twice,
as ``s2`` on the demo's 10-day grid and as ``s2m`` on a 30-day grid (a different feature set of
the same pixels, standing in for a second sensor), so that each sensor source's model learns
from its own columns only."""

from __future__ import annotations

import copy
import dataclasses
import json
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import rasterio
import zarr

from pipeline.errors import InputDataError
from tests.run.helpers import cli, demo_manifest, last_summary

pytestmark = pytest.mark.slow


SOURCES = {"fused", "run-0", "run-1", "sensor-s2", "sensor-s2m"}


def _fusion(spec: dict[str, Any]) -> None:
    spec["sampling"]["runs"] = 2
    monthly = copy.deepcopy(spec["sensors"][0])
    monthly.update(name="s2m", date_step_days=30)
    spec["sensors"].append(monthly)
    spec["fusion"] = {
        "method": "dempster_shafer",
        "sources": [{"run": 0}, {"run": 1}, {"sensor": "s2"}, {"sensor": "s2m"}],
    }


@pytest.fixture(scope="module")
def run(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    folder = tmp_path_factory.mktemp("fusion")
    manifest = demo_manifest(folder, _fusion)
    done = cli("run", str(manifest))
    assert done.returncode == 0, done.stdout + done.stderr
    return {
        "store": folder / "store",
        "manifest": manifest,
        "summary": last_summary(done.stdout + done.stderr),
    }


def test_the_fused_map_and_its_report_beside_each_source(run: dict[str, Any]) -> None:
    store = run["store"]
    outputs = run["summary"]["outputs"]
    assert outputs["fused labels"].endswith("fusion/labels.tif")
    with rasterio.open(store / "fusion" / "labels.tif") as fused_src:
        fused = fused_src.read(1)
        nodata = fused_src.nodata
    with rasterio.open(store / "maps" / "labels.tif") as src:
        pixel_map = src.read(1)
    assert fused.shape == pixel_map.shape
    assert ((fused == nodata) == (pixel_map == src.nodata)).all()  # mapped where run 0 maps
    report = json.loads((store / "fusion" / "report" / "fusion.json").read_text())
    assert set(report["scores"]) == SOURCES
    assert report["pixels"] > 100
    for scores in report["scores"].values():
        assert 0.5 < scores["overall_accuracy"] <= 1
        assert 0 < scores["mean_confidence_percent"] <= 100
    for masses in report["masses"].values():  # each source's precision per class
        assert all(0 <= m <= 1 for m in masses.values())
    assert (store / "fusion" / "report" / "report.html").exists()
    # run 1's model trained on part of run 0's validation pixels: said, and scored apart
    assert 0 <= report["trained_on_scored_pixels"]["run-1"] <= 1
    assert set(report["held_out"]["overall_accuracy"]) in (set(), SOURCES)
    units = run["summary"]["units"]["fusion"]
    assert units["ran"] == units["total"] > 5  # two sensor models, chunks, two COGs, the report


def test_a_sensor_source_is_a_model_of_that_sensors_columns(run: dict[str, Any]) -> None:
    from pipeline.learn import load_model

    store = run["store"]
    _, whole = load_model(store / "model")
    assert {n.split("_", 1)[0] for n in whole.feature_names} == {"s2", "s2m"}
    for sensor in ("s2", "s2m"):
        _, contract = load_model(store / "model-sensors" / sensor)
        assert contract.feature_names
        assert all(n.startswith(f"{sensor}_") for n in contract.feature_names)
        # its columns, in the run model's order
        assert list(contract.feature_names) == [
            n for n in whole.feature_names if n.startswith(f"{sensor}_")
        ]
    # the monthly grid has fewer dates: fewer columns than the 10-day one
    counts = {
        s: len(load_model(store / "model-sensors" / s)[1].feature_names) for s in ("s2", "s2m")
    }
    assert 0 < counts["s2m"] < counts["s2"]


def test_a_rerun_runs_no_fusion_unit_again(run: dict[str, Any]) -> None:
    done = cli("run", str(run["manifest"]), "--resume")
    assert done.returncode == 0, done.stdout + done.stderr
    units = last_summary(done.stdout + done.stderr)["units"]["fusion"]
    assert units["ran"] == 0 and units["skipped"] == units["total"]


def test_an_earlier_runs_maps_are_a_source(run: dict[str, Any], tmp_path: Path) -> None:
    from pipeline.fusion.sources import FuseTask, MapSource, fuse_chunk, store_confusion, store_maps
    from pipeline.model import GridSpec, Window
    from pipeline.predict.blockwise import MapEncoding, create_map_store

    store = run["store"]
    with rasterio.open(store / "maps" / "labels.tif") as src:
        grid = GridSpec(src.crs.to_string(), tuple(src.transform)[:6], src.width, src.height)
        labels = src.read(1)
    maps = store_maps(str(store), grid)
    classes, confusion = store_confusion(maps)
    assert confusion.shape == (len(classes), len(classes))
    encoding = MapEncoding.for_classes(classes)
    out = str(tmp_path / "fused.zarr")
    create_map_store(out, grid, 32, encoding)
    window = Window(0, 0, 32, 32)
    source = MapSource(maps.labels, maps.confidence)
    fuse_chunk(
        FuseTask("", (), (source, source), out, window, encoding, "majority_vote", (), classes)
    )
    group = zarr.open_group(out, mode="r")
    fused = np.asarray(group["label"][:32, :32])  # type: ignore[index]
    assert np.array_equal(fused, labels[:32, :32])  # a map fused with itself is itself
    # A tile's chunk: the map read at the tile's place in the mosaic, its unowned pixels left
    # unmapped (the mosaic takes them from their owner).
    tile = GridSpec(grid.crs, grid.transform, 32, 32)
    out = str(tmp_path / "tile.zarr")
    create_map_store(out, tile, 32, encoding)
    owned = np.zeros((32, 32), dtype=bool)
    owned[:, :20] = True
    task = FuseTask("", (), (source,), out, window, encoding, "majority_vote", (), classes)
    fuse_chunk(dataclasses.replace(task, offset=(16, 40), owned=owned))
    fused = np.asarray(zarr.open_group(out, mode="r")["label"][:32, :32])  # type: ignore[index]
    assert np.array_equal(fused[:, :20], labels[16:48, 40:60])
    assert (fused[:, 20:] == encoding.nodata).all()
    other = GridSpec(grid.crs, grid.transform, grid.width + 1, grid.height)
    with pytest.raises(InputDataError, match="not this run's grid"):
        store_maps(str(store), other)
