"""Fused chunks (``outputs.keep_cube: false``): prediction and sample extraction compute a
chunk's features from the imagery (``stream_features``) instead of reading a cube, and must hand
the model exactly what a stored cube would: the same block with its halo (grid edges padded),
hence the same maps, and the same sample values in the same order. Real COGs (two sensors, one
of 20 m bands with a 40 m mask) with clouds and pixels never valid, both cube encodings."""

from __future__ import annotations

from datetime import date
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import zarr

from pipeline.cube.build import CubeChunkTask, build_chunk
from pipeline.cube.plan import CubePlan, plan_cube
from pipeline.cube.store import create_cube_store
from pipeline.learn import ModelConfig, save_model, train_model
from pipeline.model import Window
from pipeline.predict.blockwise import (
    MapEncoding,
    PredictTask,
    create_map_store,
    predict_chunk,
    read_block,
)
from pipeline.samples.extract import (
    cog_task_of,
    extract_chunk,
    extract_from_cogs,
    plan_extraction,
)
from tests.cube.synthetic import Series, make_series
from tests.predict.test_halo import KIND, MeanFilterLearner

START, END = date(2021, 1, 1), date(2021, 3, 31)
CHUNK = 32
SIZE = 80  # not a multiple of the chunk: the last chunks are partial


@pytest.fixture(scope="module")
def series(tmp_path_factory: pytest.TempPathFactory) -> tuple[Series, Series]:
    root = tmp_path_factory.mktemp("fused-series")
    # Three dates of 25 % clouds: some pixels are never valid in the period.
    s2 = make_series(root, size=SIZE, n_dates=3, name="s2", seed=3)
    l8 = make_series(
        root, size=SIZE, n_dates=3, name="l8", first_day=8, step=23, seed=4, date_step_days=16,
        resolution=20.0,
    )  # fmt: skip
    return s2, l8


@pytest.fixture(scope="module", params=["int16", "float32"])
def built(
    request: pytest.FixtureRequest,
    series: tuple[Series, Series],
    tmp_path_factory: pytest.TempPathFactory,
) -> tuple[CubePlan, str, int]:
    """A cube plan, its cube built chunk by chunk, and the never-valid pixels its build counted."""
    plan = plan_cube(
        series[0].grid, [(s.profile, s.acquisitions) for s in series], START, END, ["ndvi"],
        CHUNK, encoding=request.param,
    )  # fmt: skip
    store = str(tmp_path_factory.mktemp(f"cube-{request.param}") / "cube.zarr")
    create_cube_store(plan, store)
    never_valid = sum(
        build_chunk(CubeChunkTask(plan, w, store)).never_valid_pixels for w in plan.windows
    )
    return plan, store, never_valid


@pytest.mark.parametrize("halo", [0, 1, 5])
def test_the_streamed_block_is_the_cubes_block(built: tuple[CubePlan, str, int], halo: int) -> None:
    plan, store, _ = built
    variables = plan.time_series_variables
    for window in plan.windows:  # corners, edges (padded off the grid), partial chunks
        streamed = read_block(plan, variables, window, halo)
        np.testing.assert_array_equal(streamed, read_block(store, variables, window, halo))
        assert streamed.shape == (len(plan.feature_names), window.height + 2 * halo,
                                  window.width + 2 * halo)  # fmt: skip
    with pytest.raises(ValueError, match="not the cube plan's"):
        read_block(plan, variables[:1], plan.windows[0], 0)


def _model(plan: CubePlan, store: str, folder: Path, kind: str) -> MapEncoding:
    table = read_block(store, plan.time_series_variables, Window(0, 0, SIZE, SIZE), 0)
    table = table.reshape(table.shape[0], -1).T
    table = table[~np.isnan(table).any(axis=1)][::7]
    targets = np.where(table[:, 0] > np.median(table[:, 0]), 2, 1)
    config = ModelConfig(kind=kind, params={"n_estimators": 5} if kind == "sklearn" else {})
    model, contract = train_model(config, table, targets, plan.feature_names, seed=0)
    save_model(model, contract, folder)
    return MapEncoding.for_classes(contract.classes, probabilities=True)


@pytest.mark.parametrize("kind", ["sklearn", KIND])  # per pixel, and with a halo of 1
def test_fused_maps_equal_the_cube_maps(
    built: tuple[CubePlan, str, int], tmp_path: Path, kind: str
) -> None:
    assert MeanFilterLearner.kind == KIND  # its module registered the halo learner
    plan, store, counted = built
    folder = tmp_path / "model"
    encoding = _model(plan, store, folder, kind)
    maps = {}
    never_valid = 0
    variables = tuple(plan.time_series_variables)
    for name, source in (("cube", store), ("fused", plan)):
        path = str(tmp_path / f"{name}.zarr")
        create_map_store(path, plan.grid, CHUNK, encoding)
        for window in plan.windows:
            report = predict_chunk(
                PredictTask(source, variables, str(folder), path, window, encoding)
            )
            if name == "cube":
                assert report.never_valid_pixels is None  # the cube stage counted them
            else:
                assert report.never_valid_pixels is not None
                never_valid += report.never_valid_pixels
        group = zarr.open_group(path, mode="r")
        maps[name] = {v: np.asarray(group[v][:]) for v in encoding.variables}  # type: ignore[index]
    for variable in encoding.variables:
        np.testing.assert_array_equal(maps["fused"][variable], maps["cube"][variable])
    labels = maps["cube"]["label"]
    assert (labels != encoding.nodata).any() and (labels == encoding.nodata).any()
    assert never_valid == counted > 0  # the cube stage's warning, counted by the fused units


def test_samples_from_the_imagery_equal_the_cubes_in_the_same_order(
    built: tuple[CubePlan, str, int],
) -> None:
    plan, store, _ = built
    rng = np.random.default_rng(5)
    picked = rng.choice(SIZE * SIZE, size=300, replace=False)
    pixels = pd.DataFrame({"row": picked // SIZE, "col": picked % SIZE})  # unsorted
    tasks = plan_extraction(pixels, plan.windows, store, plan.time_series_variables)
    assert len(tasks) == len(plan.windows)
    cells = 0
    for task in tasks:
        fused = cog_task_of(task, plan, cell=16)  # up to four cells per chunk
        assert (fused.rows, fused.cols) == (task.rows, task.cols)
        cells += len(fused.windows)
        from_cube = extract_chunk(task)
        from_imagery = extract_from_cogs(fused)
        assert from_imagery.tobytes() == from_cube.tobytes()  # the part files' bytes
    assert cells > len(tasks)
