"""A patch model end to end on the small demo through ``sitsflow run``: patch samples beside the
samples table, the model, a seamless map validated as pixel models' maps are, and a resume that
runs nothing again."""

from __future__ import annotations

import json
from typing import Any

import geopandas as gpd
import numpy as np
import pytest

from pipeline.samples.patches import read_patches
from pipeline.samples.split import VALIDATION
from tests.run.helpers import cli, demo_manifest, last_summary

pytestmark = pytest.mark.slow


def _patch_model(spec: dict[str, Any]) -> None:
    spec["model"] = {
        "kind": "torch_patch",
        "architecture": "utae",
        "params": {"d_model": 8, "n_head": 2, "d_k": 4, "width": 8},
        "patch": {"size": 16, "stride": 8},
        "training": {"epochs": 2, "batch_size": 16, "device": "auto"},
    }


@pytest.fixture(scope="module")
def run(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    folder = tmp_path_factory.mktemp("patch-run")
    manifest = demo_manifest(folder, _patch_model)
    done = cli("run", str(manifest), env={"OMP_NUM_THREADS": "1"})
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    return {
        "store": folder / "store",
        "manifest": manifest,
        "summary": last_summary(done.stdout + done.stderr),
    }


def test_a_patch_model_maps_and_is_validated_like_a_pixel_model(run: dict[str, Any]) -> None:
    store, summary = run["store"], run["summary"]
    assert summary["outputs"]["patches"].endswith("samples/patches.zarr")
    contract = json.loads((store / "model" / "model.json").read_text())
    assert contract["kind"] == "torch_patch" and contract["config"]["patch"] == {
        "size": 16,
        "stride": 8,
    }
    assert 1 <= contract["training"]["best_epoch"] <= 2
    # Scored as a pixel model's map is (2 tiny epochs here: the accuracy itself is not the point;
    # docs/models.md compares a trained one with RF and TempCNN on this split).
    metrics = json.loads((store / "report" / "metrics.json").read_text())
    assert metrics["n_samples"] == summary["n_samples"] > 1000
    assert 0 <= metrics["overall_accuracy"] <= 1 and len(metrics["confusion"]) >= 2
    assert (store / "report" / "report.html").exists()
    # No validation polygon lends a label to training, though patches overlap them.
    samples = gpd.read_parquet(store / "samples" / "samples.parquet")
    held = set(samples.loc[samples["split"] == VALIDATION, "polygon_id"].tolist())
    _x, labels, polygons = read_patches(str(store / "samples" / "patches.zarr")).training()
    used = set(np.unique(polygons[labels >= 0]).tolist())
    assert used and not used & held


def test_a_resume_runs_nothing_again(run: dict[str, Any]) -> None:
    done = cli("run", str(run["manifest"]), "--resume", env={"OMP_NUM_THREADS": "1"})
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    units = last_summary(done.stdout + done.stderr)["units"]
    for stage in ("samples", "train", "predict"):
        assert units[stage]["ran"] == 0 and units[stage]["skipped"] == units[stage]["total"]
