"""``sampling.final_model: all`` on the demo: the map is made by a model trained on every sample
pixel, run 0's model is kept apart, and the report's scores are run 0's model's on its own
held-out pixels (never the final model's on pixels it trained on)."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import geopandas as gpd
import numpy as np
import pytest
import rasterio

from pipeline.learn import load_model, model_input
from pipeline.validate.metrics import classification_metrics
from tests.run.helpers import cli, demo_manifest

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def final_run(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, str]:
    folder = tmp_path_factory.mktemp("final")

    def change(spec: dict[str, Any]) -> None:
        spec["sampling"].update(runs=2, final_model="all", max_pixels_per_polygon=30)

    done = cli("run", str(demo_manifest(folder, change)), timeout=600)
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    return folder / "store", " ".join((done.stdout + done.stderr).split())


def _predict(folder: Path, rows: Any, names: list[str]) -> np.ndarray:
    model, _ = load_model(folder)
    return np.asarray(model.predict(model_input(model, rows[names].to_numpy(np.float32))))


def test_the_final_model_maps_and_run_0_is_scored(final_run: tuple[Path, str]) -> None:
    store, output = final_run
    samples = gpd.read_parquet(store / "samples" / "samples.parquet")
    contract = json.loads((store / "model" / "model.json").read_text())
    names = list(contract["feature_names"])
    samples = samples[~samples[names].isna().any(axis=1)]
    # The final model learnt from both sides of run 0's split, with the same selection rule.
    final = samples[samples["split_final"] == "train"]
    assert (final["split"] == "validation").any() and (final["split"] == "train").any()
    assert final.groupby("polygon_id").size().max() <= 30
    assert (store / "model-runs" / "run-0" / "model.json").is_file()
    assert (store / "model-runs" / "run-1" / "model.json").is_file()
    # The map is the final model's prediction.
    with rasterio.open(store / "maps" / "labels.tif") as src:
        labels = src.read(1)
    mapped = labels[samples["row"].to_numpy(), samples["col"].to_numpy()]
    np.testing.assert_array_equal(mapped, _predict(store / "model", samples, names))
    # The scores are run 0's model's on run 0's validation pixels.
    validation = samples[samples["split"] == "validation"]
    run0 = _predict(store / "model-runs" / "run-0", validation, names)
    classes = sorted(set(validation["label"]) | set(run0.tolist()))
    expected = classification_metrics(validation["label"].to_numpy(), run0, classes)
    metrics = json.loads((store / "report" / "metrics.json").read_text())
    assert metrics["overall_accuracy"] == pytest.approx(expected.overall_accuracy)
    assert metrics["n_samples"] == len(validation)
    assert metrics["across_runs"]["runs"] == 2
    report = (store / "report" / "report.html").read_text()
    assert "the final model (sampling.final_model: all)" in report
    assert "these are run 0's model's scores (sampling.final_model: all)" in output
