"""outputs.probabilities: one COG per class with the model's probability, consistent with the
label and confidence maps of the same run."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import geopandas as gpd
import numpy as np
import pystac
import pytest
import rasterio

from tests.run.helpers import cli, demo_manifest, last_summary

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def run(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    folder = tmp_path_factory.mktemp("probabilities")

    def probabilities(spec: dict[str, Any]) -> None:
        spec["outputs"]["probabilities"] = True

    done = cli("run", str(demo_manifest(folder, probabilities)))
    assert done.returncode == 0, done.stdout + done.stderr
    return {"store": folder / "store", "summary": last_summary(done.stdout + done.stderr)}


def _read(path: Path) -> tuple[np.ndarray, float]:
    with rasterio.open(path) as src:
        assert src.tags(ns="IMAGE_STRUCTURE").get("LAYOUT") == "COG"
        return src.read(1), float(src.nodata)


def test_one_probability_map_per_training_class(run: dict[str, Any]) -> None:
    store: Path = run["store"]
    files = sorted(p.name for p in (store / "maps").glob("probability_*.tif"))
    training = gpd.read_parquet(store / "samples" / "samples.parquet").query("split == 'train'")
    assert files == [f"probability_{c}.tif" for c in sorted(training["label"].unique())]
    assert len(run["summary"]["outputs"]["probabilities"]) == len(files)
    labels, label_nodata = _read(store / "maps" / "labels.tif")
    confidence, _ = _read(store / "maps" / "confidence.tif")
    mapped = labels != label_nodata
    stack = {}
    for name in files:
        data, nodata = _read(store / "maps" / name)
        assert (data[~mapped] == nodata).all()
        assert data[mapped].max() <= 100
        stack[int(name.removeprefix("probability_").removesuffix(".tif"))] = data
    codes = np.array(sorted(stack))
    cube = np.stack([stack[c] for c in codes]).astype(np.int32)
    # Percent rounding can tie two classes; elsewhere the most probable class is the label and
    # its probability the confidence.
    top = np.sort(cube, axis=0)
    clear = mapped & (top[-1] > top[-2])
    assert clear.sum() > 0.8 * mapped.sum()
    np.testing.assert_array_equal(codes[cube.argmax(axis=0)][clear], labels[clear])
    np.testing.assert_array_equal(cube.max(axis=0)[mapped], confidence[mapped])
    assert (np.abs(cube.sum(axis=0)[mapped] - 100) <= len(codes)).all()  # they sum to 100 %


def test_probability_maps_are_in_the_stac_collection(run: dict[str, Any]) -> None:
    collection = pystac.Collection.from_file(str(run["store"] / "stac" / "collection.json"))
    ids = {item.id for item in collection.get_items()}
    assert "slovenia-demo-probability_2" in ids
    assert len(ids) == 2 + len(list((run["store"] / "maps").glob("probability_*.tif")))
