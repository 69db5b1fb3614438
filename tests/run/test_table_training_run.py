"""Training a run's model from a sample table another tool extracted (issue 9): `sitsflow train`
checks the table against the run's bands and date grid, and the run maps with the model as it is
(model kind external)."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import geopandas as gpd
import numpy as np
import pytest
import rasterio

from tests.run.helpers import cli, demo_manifest

pytestmark = pytest.mark.slow


def external_table(samples: gpd.GeoDataFrame, path: Path) -> list[str]:
    """The training pixels as a wide table the way another tool names them: band in capitals
    without the sensor prefix (NDVI_20170305), label codes, coordinates, a sample id."""
    training = samples[samples["split"] == "train"]
    counts = training["label"].value_counts()
    training = training[training["label"].isin(counts[counts >= 10].index)]  # as the run does
    features = [c for c in training.columns if c.startswith("s2_ndvi_")]
    table = training[features].rename(columns=lambda c: c.replace("s2_ndvi_", "NDVI_"))
    points = training.geometry.to_crs("EPSG:4326")
    table.insert(0, "sample_id", np.arange(len(training)))
    table["label"] = training["label"].to_numpy()
    table["longitude"] = points.x.to_numpy()
    table["latitude"] = points.y.to_numpy()
    table.to_parquet(path, index=False)
    return list(table.columns)


@pytest.fixture(scope="module")
def runs(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    folder = tmp_path_factory.mktemp("table-training")
    own = demo_manifest(folder / "own")
    done = cli("run", str(own))
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    samples = gpd.read_parquet(folder / "own" / "store" / "samples" / "samples.parquet")
    table = folder / "table.parquet"
    external_table(samples, table)
    model = folder / "model-from-table"
    trained = cli("train", str(table), "--manifest", str(own), "--out", str(model))
    assert trained.returncode == 0, trained.stdout[-3000:] + trained.stderr[-3000:]

    def use_it(spec: dict[str, Any]) -> None:
        spec["model"] = {"kind": "external", "path": str(model)}

    applied = demo_manifest(folder / "applied", use_it)
    done = cli("run", str(applied))
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    return {
        "folder": folder,
        "own": folder / "own" / "store",
        "applied": folder / "applied" / "store",
        "model": model,
        "table": table,
        "manifest": own,
        "trained": trained.stdout,
        "samples": samples,
    }


def test_the_model_carries_the_run_features(runs: dict[str, Any]) -> None:
    contract = json.loads((runs["model"] / "model.json").read_text())
    own = json.loads((runs["own"] / "model" / "model.json").read_text())
    assert contract["feature_names"] == own["feature_names"]
    assert contract["feature_names"][0].startswith("s2_ndvi_2017")
    assert contract["classes"] == own["classes"]
    assert contract["training"]["table"] == str(runs["table"])
    assert "trained sklearn.ensemble.RandomForestClassifier" in runs["trained"]


def test_a_table_of_the_run_pixels_gives_the_run_map(runs: dict[str, Any]) -> None:
    """The same pixels, labels, order, estimator and seed as the run's own training: the same
    forest, so the same map, byte for byte."""
    applied_map = runs["applied"] / "maps" / "labels.tif"
    with rasterio.open(runs["own"] / "maps" / "labels.tif") as a, rasterio.open(applied_map) as b:
        np.testing.assert_array_equal(a.read(1), b.read(1))
    own = json.loads((runs["own"] / "report" / "metrics.json").read_text())
    applied = json.loads((runs["applied"] / "report" / "metrics.json").read_text())
    assert applied["overall_accuracy"] == own["overall_accuracy"]


@pytest.mark.parametrize(
    ("damage", "message"),
    [
        (lambda t: t.drop(columns=[c for c in t.columns if c.startswith("NDVI_")][-1]),
         "the model needs 22 dates of band 's2_ndvi'"),
        (lambda t: t.rename(columns=lambda c: c.replace("NDVI_", "EVI_")),
         "the model needs band(s) ['s2_ndvi']"),
    ],
)  # fmt: skip
def test_a_table_that_does_not_fit_the_run_is_refused(
    runs: dict[str, Any], damage: Any, message: str, tmp_path: Path
) -> None:
    import pandas as pd

    table = damage(pd.read_parquet(runs["table"]))
    path = tmp_path / "bad.parquet"
    table.to_parquet(path, index=False)
    out = tmp_path / "model"
    done = cli("train", str(path), "--manifest", str(runs["manifest"]), "--out", str(out))
    assert done.returncode == 2
    text = " ".join((done.stdout + done.stderr).split())
    assert message in text, text[-2000:]
    assert not out.exists()
