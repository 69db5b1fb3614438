"""Several runs (``sampling.runs``): one split, selection and model per seed, the map from the
first run, and the report's across-runs section from every run's own validation polygons."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import geopandas as gpd
import numpy as np
import pytest

from pipeline.learn import load_model, model_input
from tests.run.helpers import cli, demo_manifest, ledger_records

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def runs(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    folder = tmp_path_factory.mktemp("runs")

    def three(spec: dict[str, Any]) -> None:
        spec["sampling"]["runs"] = 3

    one = cli("run", str(demo_manifest(folder / "one")))
    assert one.returncode == 0, one.stdout + one.stderr
    many = cli("run", str(demo_manifest(folder / "three", three)))
    assert many.returncode == 0, many.stdout + many.stderr
    return {"one": folder / "one" / "store", "three": folder / "three" / "store"}


def test_each_run_has_its_split_and_model(runs: dict[str, Path]) -> None:
    store = runs["three"]
    assert set(ledger_records(store)["train"]) == {"model", "model-run1", "model-run2"}
    samples = gpd.read_parquet(store / "samples" / "samples.parquet")
    sides = {}
    for column, seed in (("split", 0), ("split_r1", 1), ("split_r2", 2)):
        validation = set(samples.loc[samples[column] == "validation", "polygon_id"])
        training = set(samples.loc[samples[column] == "train", "polygon_id"])
        assert validation and training and not validation & training, seed
        sides[seed] = frozenset(validation)
    assert len(set(sides.values())) == 3  # three different splits
    for run in (1, 2):
        assert (store / f"model-runs/run-{run}").is_dir()


def test_the_map_and_its_accuracy_are_the_first_runs(runs: dict[str, Path]) -> None:
    one = json.loads((runs["one"] / "report" / "metrics.json").read_text())
    three = json.loads((runs["three"] / "report" / "metrics.json").read_text())
    assert three["overall_accuracy"] == one["overall_accuracy"]
    assert three["confusion"] == one["confusion"]
    assert "across_runs" not in one


def test_across_runs_is_the_mean_of_each_runs_own_validation(runs: dict[str, Path]) -> None:
    store = runs["three"]
    metrics = json.loads((store / "report" / "metrics.json").read_text())
    across = metrics["across_runs"]
    assert across["runs"] == 3 and across["seeds"] == [0, 1, 2]
    samples = gpd.read_parquet(store / "samples" / "samples.parquet")
    names = [c for c in samples.columns if c.startswith("s2_ndvi_")]
    accuracies = []
    for run, (column, folder) in enumerate(
        (("split", "model"), ("split_r1", "model-runs/run-1"), ("split_r2", "model-runs/run-2"))
    ):
        rows = samples[(samples[column] == "validation") & samples[names].notna().all(axis=1)]
        model, _ = load_model(store / folder)
        predicted = model.predict(model_input(model, rows[names].to_numpy(np.float32)))
        accuracies.append(float((predicted == rows["label"].to_numpy()).mean()))
        if run == 0:  # run 0 scored from its table equals run 0 scored from the map
            assert accuracies[0] == pytest.approx(metrics["overall_accuracy"])
    overall = across["overall"]["overall_accuracy"]
    assert overall["mean"] == pytest.approx(float(np.mean(accuracies)))
    assert overall["ci_low"] < overall["mean"] < overall["ci_high"]
    assert (
        "Across 3 runs" in (store / "report" / "report.html").read_text()
        or "runs" in (store / "report" / "report.html").read_text()
    )
