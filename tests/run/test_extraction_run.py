"""task: extraction, the spectral sample extraction use case: the samples' features straight
from the imagery (no cube, model or map), equal to those a classification run reads from its
cube."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import geopandas as gpd
import numpy as np
import pytest

from tests.run.helpers import cli, demo_manifest, last_summary, ledger_records

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def runs(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    folder = tmp_path_factory.mktemp("extraction")

    def extraction(spec: dict[str, Any]) -> None:
        spec["task"] = "extraction"

    classified = cli("run", str(demo_manifest(folder / "classification")))
    assert classified.returncode == 0, classified.stdout + classified.stderr
    extracted = cli("run", str(demo_manifest(folder / "extraction", extraction)))
    assert extracted.returncode == 0, extracted.stdout + extracted.stderr
    return {
        "cube": folder / "classification" / "store",
        "imagery": folder / "extraction" / "store",
        "output": extracted.stdout + extracted.stderr,
    }


def test_extraction_writes_the_samples_and_nothing_of_the_map(runs: dict[str, Any]) -> None:
    store: Path = runs["imagery"]
    assert (store / "samples" / "samples.parquet").is_file()
    for absent in ("cube.zarr", "maps", "model", "report", "stac"):
        assert not (store / absent).exists(), absent
    records = ledger_records(store)
    assert set(records) == {"discover", "samples"}
    summary = last_summary(runs["output"])
    assert set(summary["outputs"]) == {"items", "samples"}
    assert "read straight from the imagery" in " ".join(runs["output"].split())


def test_features_from_the_imagery_equal_those_from_the_cube(runs: dict[str, Any]) -> None:
    from_cube = gpd.read_parquet(runs["cube"] / "samples" / "samples.parquet")
    from_imagery = gpd.read_parquet(runs["imagery"] / "samples" / "samples.parquet")
    assert len(from_imagery) == len(from_cube) > 1000
    for column in ("row", "col", "polygon_id", "label", "split"):
        assert from_imagery[column].tolist() == from_cube[column].tolist()
    features = [c for c in from_cube.columns if c.startswith("s2_")]
    assert features == [c for c in from_imagery.columns if c.startswith("s2_")]
    np.testing.assert_array_equal(from_imagery[features].to_numpy(), from_cube[features].to_numpy())


def test_a_finished_extraction_resumes_without_work(runs: dict[str, Any]) -> None:
    manifest = runs["imagery"].parent / "run.yaml"
    again = cli("run", str(manifest), "--resume")
    assert again.returncode == 0, again.stdout + again.stderr
    assert last_summary(again.stdout + again.stderr)["units_run"] == 0
