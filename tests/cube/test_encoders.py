"""Encoders as features (``features.encoders``): a tiny torch encoder built here and saved with
``torch.save`` into tmp_path (nothing downloaded), run per chunk inside the cube stage.

Its import path is ``tests.cube.test_encoders:TinyEncoder`` (this module): dask workers import it
from the repository (PYTHONPATH).
"""

from __future__ import annotations

import json
from dataclasses import fields, replace
from datetime import date
from pathlib import Path
from typing import Any

import geopandas as gpd
import numpy as np
import pytest
import torch
import zarr
from torch import nn

from pipeline.cube.build import CubeChunkTask, build_chunk, stream_features
from pipeline.cube.encoders import EncoderConfig as Config
from pipeline.cube.encoders import EncoderPlan, check_encoders, plan_encoders, weights_sha256
from pipeline.cube.plan import CubePlan, plan_cube
from pipeline.cube.store import create_cube_store, open_cube, read_features
from pipeline.errors import ManifestError
from pipeline.grid import Tile
from pipeline.model import DateGrid, GridSpec, Window
from pipeline.run.units import canonical, content_hash
from tests.cube.synthetic import Series, make_series

REPO = Path(__file__).resolve().parents[2]
START, END = date(2021, 1, 1), date(2021, 4, 30)
FACTORY = "tests.cube.test_encoders:TinyEncoder"


class TinyEncoder(nn.Module):
    """(pixels, dates, inputs) -> (pixels, width): a linear map of the flattened series, tanh."""

    def __init__(self, dates: int = 12, inputs: int = 2, width: int = 4) -> None:
        super().__init__()
        self.linear = nn.Linear(dates * inputs, width)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.tanh(self.linear(x.flatten(1)))


DEMO_DATES = len(DateGrid(date(2017, 3, 1), date(2017, 9, 30), 10).dates)  # the quick demo


def demo_encoder() -> TinyEncoder:
    """The factory of the demo run's encoder: the demo's NDVI on its dates."""
    return TinyEncoder(dates=DEMO_DATES, inputs=1)


def _weights(path: Path, seed: int = 0, **sizes: int) -> str:
    torch.manual_seed(seed)
    torch.save(TinyEncoder(**sizes).state_dict(), path)
    return str(path)


@pytest.fixture(scope="module")
def s2(tmp_path_factory: pytest.TempPathFactory) -> Series:
    return make_series(tmp_path_factory.mktemp("series"), size=64, n_dates=6, name="s2", seed=1)


def _plan(series: Series, encoders: tuple[EncoderPlan, ...] = (), **kwargs: Any) -> CubePlan:
    return plan_cube(
        series.grid,
        [(series.profile, series.acquisitions)],
        START,
        END,
        ["ndvi"],
        32,
        encoders=encoders,
        **kwargs,
    )


def _encoder(weights: str, dates: int, **changes: Any) -> EncoderPlan:
    config = Config("tiny", FACTORY, weights, ("s2_ndvi", "s2_red"), dates, 4)
    return plan_encoders([replace(config, **changes)])[0]


def test_encoder_outputs_are_static_cube_features_of_the_stored_series(
    s2: Series, tmp_path: Path
) -> None:
    dates = len(DateGrid(START, END, s2.profile.date_step_days).dates)
    encoder = _encoder(_weights(tmp_path / "tiny.pt", dates=dates), dates)
    plan = _plan(s2, (encoder,))
    assert plan.feature_names[-4:] == ["tiny_e00", "tiny_e01", "tiny_e02", "tiny_e03"]
    assert plan.time_series_variables[-1] == ("tiny_e03", "")
    store = tmp_path / "cube.zarr"
    create_cube_store(plan, str(store))
    for window in plan.windows:
        build_chunk(CubeChunkTask(plan, window, str(store)))
    stored = zarr.open_array(str(store / "tiny_e00"), mode="r")
    assert stored.shape == (64, 64) and stored.dtype == np.float32
    whole = Window(0, 0, 64, 64)
    stack = read_features(str(store), plan.time_series_variables, whole)
    assert stack.shape == (len(plan.feature_names), 64, 64)
    np.testing.assert_array_equal(stream_features(plan, whole), stack)  # fused == cube
    # The stored outputs are the module applied to the cube's stored (decoded) inputs.
    cube = open_cube(str(store))
    series = np.stack([cube["s2_ndvi"].values, cube["s2_red"].values], axis=-1)  # (D, y, x, 2)
    network = TinyEncoder(dates=dates)
    network.load_state_dict(torch.load(encoder.weights, weights_only=True))
    table = torch.from_numpy(series.transpose(1, 2, 0, 3).reshape(64 * 64, dates, 2).copy())
    with torch.inference_mode():
        expected = network(table).numpy().T.reshape(4, 64, 64)
    embedded = stack[-4:]
    usable = np.isfinite(series).all(axis=(0, 3))
    assert usable.mean() > 0.9
    np.testing.assert_allclose(embedded[:, usable], expected[:, usable], rtol=1e-5, atol=1e-6)
    assert np.isnan(embedded[:, ~usable]).all()
    assert float(np.nanstd(embedded)) > 0.01  # not one constant


def test_pixels_owned_by_another_tile_get_no_embedding(s2: Series, tmp_path: Path) -> None:
    """Two tiles overlap; the west tile's core ends at column 48: the encoder runs on its own
    pixels only (the others are NaN in every series, hence in every output)."""
    grid = s2.grid
    left, top = grid.transform[2], grid.transform[5]
    west = Tile("a", grid, (left, top - 640, left + 480, top))
    east_grid = GridSpec(grid.crs, (10.0, 0.0, left + 320, 0.0, -10.0, top), 64, 64)
    east = Tile("b", east_grid, (left + 480, top - 640, left + 960, top))
    dates = len(DateGrid(START, END, s2.profile.date_step_days).dates)
    encoder = _encoder(_weights(tmp_path / "tiny.pt", dates=dates), dates)
    plan = _plan(s2, (encoder,), tile=west, tiles=(west, east))
    embedded = stream_features(plan, Window(0, 0, 64, 64))[-4:]
    assert np.isnan(embedded[:, :, 48:]).all()
    assert np.isfinite(embedded[:, :, :48]).mean() > 0.9


def test_the_encoder_enters_the_cube_identity_only_when_given(s2: Series, tmp_path: Path) -> None:
    plain = _plan(s2)
    # Without encoders, the digest form is the dataclass's as it was: existing cubes resume.
    before = {"__type__": "CubePlan"}
    before.update({f.name: canonical(getattr(plain, f.name)) for f in fields(plain) if f.compare})
    del before["encoders"]
    assert canonical(plain) == before
    dates = len(plain.sensors[0].dates)
    path = tmp_path / "tiny.pt"
    first = _plan(s2, (_encoder(_weights(path, dates=dates), dates),))
    again = _plan(s2, (_encoder(str(path), dates),))
    assert content_hash(first) == content_hash(again) != content_hash(plain)
    changed = _plan(s2, (_encoder(_weights(path, seed=1, dates=dates), dates),))
    assert content_hash(changed) != content_hash(first)  # new weights: the cube is rebuilt
    # A worker that finds other bytes than the plan's refuses to mix two encoders in one cube.
    with pytest.raises(ManifestError, match="changed since the run was planned"):
        check_encoders(first.encoders)


@pytest.mark.parametrize(
    ("changes", "words"),
    [
        ({"dates": 3}, "expects 3 dates but the cube gives"),
        ({"inputs": ("s2_ndvi", "s2_swir")}, "reads ['s2_swir'], which the cube does not have"),
        ({"name": "s2"}, "a name already in the cube"),
    ],
)
def test_encoders_that_do_not_fit_the_cube_fail_the_plan(
    s2: Series, tmp_path: Path, changes: dict[str, Any], words: str
) -> None:
    dates = len(DateGrid(START, END, s2.profile.date_step_days).dates)
    encoder = _encoder(_weights(tmp_path / "tiny.pt", dates=dates), dates)
    encoder = replace(encoder, **changes)
    with pytest.raises(ManifestError) as caught:
        _plan(s2, (encoder,))
    assert words in str(caught.value) and caught.value.field == "features.encoders"
    assert caught.value.fix


def test_a_wrong_width_or_weights_file_is_refused_naming_the_encoder(tmp_path: Path) -> None:
    weights = _weights(tmp_path / "tiny.pt", dates=12)
    with pytest.raises(
        ManifestError, match=r"returned Tensor of shape \(4, 4\).*expected \(4, 8\)"
    ):
        check_encoders([_encoder(weights, 12, width=8)])
    with pytest.raises(ManifestError, match="do not load into"):
        check_encoders([_encoder(_weights(tmp_path / "other.pt", dates=5), 12)])
    with pytest.raises(ManifestError, match="cannot be read"):
        weights_sha256(str(tmp_path / "missing.pt"))


@pytest.mark.slow
def test_demo_run_caches_encoder_features_trains_a_forest_on_them_and_resumes(
    tmp_path: Path,
) -> None:
    from tests.run.helpers import cli, demo_manifest, events, last_summary

    dates = DEMO_DATES
    weights = tmp_path / "tiny.pt"
    _weights(weights, dates=dates, inputs=1)

    def with_encoder(spec: dict[str, Any]) -> None:
        encoder = {
            "name": "tiny",
            "module": "tests.cube.test_encoders:demo_encoder",
            "weights": str(weights),
            "inputs": ["s2_ndvi"],
            "dates": dates,
            "width": 4,
        }
        spec["features"] = {"encoders": [encoder]}

    manifest = str(demo_manifest(tmp_path / "run", with_encoder))
    env = {"PYTHONPATH": str(REPO)}  # workers import this module's TinyEncoder
    first = cli("run", manifest, env=env)
    assert first.returncode == 0, first.stderr[-5000:]
    store = tmp_path / "run" / "store"
    cube = open_cube(str(store / "cube.zarr"))
    assert cube["tiny_e00"].dims == ("y", "x")
    # Cached in the cube and in the samples table, under the same names, with the same values.
    samples = gpd.read_parquet(store / "samples" / "samples.parquet")
    columns = ["tiny_e00", "tiny_e01", "tiny_e02", "tiny_e03"]
    assert set(columns) <= set(samples.columns)
    at = cube[columns].to_array().values[:, samples["row"].to_numpy(), samples["col"].to_numpy()]
    np.testing.assert_array_equal(samples[columns].to_numpy().T, at)
    contract = json.loads((store / "model" / "model.json").read_text())
    assert contract["feature_names"][-4:] == columns  # the forest reads bands + embeddings
    summary = last_summary(first.stderr)
    assert summary["units"]["cube"]["ran"] == summary["units"]["cube"]["total"] > 0
    # The same encoder again: every chunk (and every unit after it) is reused.
    again = cli("run", manifest, "--resume", env=env)
    assert again.returncode == 0, again.stderr[-5000:]
    resumed = last_summary(again.stderr)
    cube_units = resumed["units"]["cube"]
    assert cube_units["skipped"] == cube_units["total"] and cube_units["ran"] == 0
    # Changed weights at the same path: the cube is no longer done (it would be rebuilt).
    _weights(weights, seed=7, dates=dates, inputs=1)
    status = cli("status", manifest, env=env)
    assert status.returncode == 0, status.stderr[-3000:]
    output = status.stdout + status.stderr
    found = {e["stage"]: e for e in events(output) if e.get("event") == "status.stage"}
    assert found["cube"]["done"] == 0 and found["cube"]["left"] == found["cube"]["total"] > 0
