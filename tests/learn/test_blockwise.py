"""Blockwise prediction from a Zarr feature cube of the real Slovenia patch: the map written chunk
by chunk equals in-memory prediction on the whole array, for classification (labels, confidence,
per-class probabilities), regression values and a torch model on a multi-process dask cluster."""

from __future__ import annotations

import math
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest
import torch
import zarr
from distributed import Client

from pipeline.learn import load_model, save_model, train_model
from pipeline.learn.config import ModelConfig
from pipeline.model import GridSpec
from pipeline.parallel import run_units
from pipeline.predict.blockwise import (
    CONFIDENCE_NODATA,
    CONFIDENCE_VARIABLE,
    LABEL_VARIABLE,
    VALUE_VARIABLE,
    MapEncoding,
    PredictTask,
    create_map_store,
    predict_chunk,
    probability_variable,
)
from tests.learn.data import SLOVENIA_CLASSES, slovenia
from tests.servers.dask_cluster import dask_cluster

CHUNK = 32
VARIABLES = (("s2_ndvi", "s2_time"),)
# The patch's grid (eo-learn bbox.geojson, 10 m pixels).
GRID = GridSpec("EPSG:32633", (10.0, 0.0, 465181.05, 0.0, -10.0, 5080254.63), 100, 101)
NEVER_VALID = (slice(0, 5), slice(90, 100))  # pixels without any valid date: no-data in maps


@pytest.fixture(autouse=True)
def _one_thread() -> Iterator[None]:
    previous = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(previous)


@pytest.fixture(scope="module")
def cube(tmp_path_factory: pytest.TempPathFactory) -> tuple[str, np.ndarray]:
    """The gap-filled patch as a cube store (Zarr v3, one variable on the date grid)."""
    patch = slovenia()
    stack = patch.features.T.reshape(len(patch.feature_names), *patch.shape).copy()
    stack[(slice(None), *NEVER_VALID)] = np.nan
    path = str(tmp_path_factory.mktemp("cube") / "cube.zarr")
    group = zarr.open_group(path, mode="w", zarr_format=3)
    array = group.create_array(
        "s2_ndvi",
        shape=stack.shape,
        chunks=(stack.shape[0], CHUNK, CHUNK),
        dtype="float32",
        fill_value=np.float32(np.nan),
    )
    array[:] = stack
    return path, stack


def table_of(stack: np.ndarray) -> np.ndarray:
    return stack.reshape(stack.shape[0], -1).T


def predict_map(cube_path: str, model_folder: Path, store: Path, encoding: MapEncoding) -> None:
    create_map_store(str(store), GRID, CHUNK, encoding)
    for window in GRID.chunks(CHUNK):
        predict_chunk(
            PredictTask(cube_path, VARIABLES, str(model_folder), str(store), window, encoding)
        )


def read(store: Path, name: str) -> np.ndarray:
    return np.asarray(zarr.open_group(str(store), mode="r")[name][:])  # type: ignore[index]


def _training() -> tuple[np.ndarray, np.ndarray]:
    patch = slovenia()
    rows = np.flatnonzero(np.isin(patch.lulc, SLOVENIA_CLASSES))[::3]
    return patch.features[rows], patch.lulc[rows]


def test_classification_map_equals_in_memory_prediction(
    cube: tuple[str, np.ndarray], tmp_path: Path
) -> None:
    cube_path, stack = cube
    X, y = _training()
    spec = ModelConfig(params={"n_estimators": 20})
    model, contract = train_model(spec, X, y, slovenia().feature_names, seed=0)
    save_model(model, contract, tmp_path / "model")
    encoding = MapEncoding.for_classes(contract.classes, probabilities=True)
    assert encoding.variables == (
        "label", "confidence", "probability_2", "probability_3", "probability_4",
        "probability_8",
    )  # fmt: skip
    predict_map(cube_path, tmp_path / "model", tmp_path / "map.zarr", encoding)

    table = table_of(stack)
    valid = ~np.isnan(table).any(axis=1)
    proba = model.predict_proba(table[valid])
    labels = read(tmp_path / "map.zarr", LABEL_VARIABLE).ravel()
    confidence = read(tmp_path / "map.zarr", CONFIDENCE_VARIABLE).ravel()
    np.testing.assert_array_equal(labels[valid], model.classes_[proba.argmax(axis=1)])
    np.testing.assert_array_equal(confidence[valid], np.round(proba.max(axis=1) * 100))
    for column, code in enumerate(contract.classes):
        share = read(tmp_path / "map.zarr", probability_variable(code)).ravel()
        np.testing.assert_array_equal(share[valid], np.round(proba[:, column] * 100))
        assert (share[~valid] == CONFIDENCE_NODATA).all()
    assert (~valid).sum() == 50
    assert (labels[~valid] == encoding.nodata).all() and encoding.nodata == 0
    assert (confidence[~valid] == CONFIDENCE_NODATA).all()


def test_regression_map_equals_in_memory_prediction(
    cube: tuple[str, np.ndarray], tmp_path: Path
) -> None:
    cube_path, stack = cube
    patch = slovenia()
    rows = np.arange(0, patch.features.shape[0], 4)
    spec = ModelConfig(
        estimator="sklearn.ensemble.RandomForestRegressor", params={"n_estimators": 10}
    )
    model, contract = train_model(
        spec, patch.features[rows], patch.max_ndvi[rows], patch.feature_names, 0,
        task="regression",
    )  # fmt: skip
    save_model(model, contract, tmp_path / "model")
    encoding = MapEncoding.for_values()
    predict_map(cube_path, tmp_path / "model", tmp_path / "map.zarr", encoding)
    values = read(tmp_path / "map.zarr", VALUE_VARIABLE).ravel()
    table = table_of(stack)
    valid = ~np.isnan(table).any(axis=1)
    assert values.dtype == np.float32 and math.isnan(encoding.nodata)
    loaded, _ = load_model(tmp_path / "model")  # a forest: the compiled engine (float32 sums)
    np.testing.assert_array_equal(values[valid], loaded.predict(table[valid]).astype(np.float32))
    np.testing.assert_allclose(values[valid], model.predict(table[valid]), rtol=1e-6, atol=1e-6)
    assert np.isnan(values[~valid]).all()


@pytest.mark.slow  # starts a dask scheduler and two worker processes that import torch
def test_torch_model_on_a_dask_cluster_of_worker_processes(
    cube: tuple[str, np.ndarray], tmp_path: Path
) -> None:
    cube_path, stack = cube
    X, y = _training()
    spec = ModelConfig(
        kind="torch", architecture="tempcnn", params={"filters": 8, "dense": 32},
        training={"epochs": 3},
    )  # fmt: skip
    model, contract = train_model(spec, X, y, slovenia().feature_names, seed=0)
    save_model(model, contract, tmp_path / "model")
    encoding = MapEncoding.for_classes(contract.classes)
    store = tmp_path / "map.zarr"
    create_map_store(str(store), GRID, CHUNK, encoding)
    tasks = [
        PredictTask(cube_path, VARIABLES, str(tmp_path / "model"), str(store), w, encoding)
        for w in GRID.chunks(CHUNK)
    ]
    with dask_cluster(n_workers=2) as cluster, Client(cluster.address, timeout=30) as client:
        reports = run_units(client, predict_chunk, tasks, key_prefix="predict")
    assert sum(r.nodata_pixels for r in reports) == 50
    assert sum(r.predicted_pixels for r in reports) == GRID.width * GRID.height - 50

    table = table_of(stack)
    valid = ~np.isnan(table).any(axis=1)
    proba = model.predict_proba(table[valid])
    labels = read(store, LABEL_VARIABLE).ravel()
    confidence = read(store, CONFIDENCE_VARIABLE).ravel().astype(int)
    # Batches of another size may change the last float bit of a probability; a class decision
    # can only differ where the two best classes are that close.
    top2 = np.sort(proba, axis=1)[:, -2:]
    clear = (top2[:, 1] - top2[:, 0]) > 1e-4
    np.testing.assert_array_equal(labels[valid][clear], model.classes_[proba.argmax(axis=1)][clear])
    assert np.abs(confidence[valid] - np.round(proba.max(axis=1) * 100)).max() <= 1
    assert (labels[~valid] == encoding.nodata).all()
