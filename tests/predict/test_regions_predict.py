"""Blockwise prediction with one model per region: away from borders each pixel follows its own
region's model (and the other models never run there), in the border band the map equals a hand
computation of the blend and vote rules from the models' predict_proba and the border weights,
and pixels with a NaN feature get no-data.

The weights are computed here by brute force from the rule of pipeline.samples.regions
(w = max(0, 1 - d / B), d the Euclidean distance in pixels to the region), not with its code.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import pytest
import zarr

from pipeline.errors import ModelError
from pipeline.learn import save_model, train_model
from pipeline.learn.config import ModelConfig
from pipeline.model import GridSpec, Window
from pipeline.predict import blockwise
from pipeline.predict.blockwise import (
    CONFIDENCE_NODATA,
    CONFIDENCE_VARIABLE,
    LABEL_VARIABLE,
    VALUE_VARIABLE,
    BorderRule,
    MapEncoding,
    RegionPredictTask,
    create_map_store,
    predict_chunk_regions,
    predict_stack_regions,
    probability_variable,
    region_classes,
    region_names,
    region_weights,
    write_region_raster,
)
from pipeline.samples.regions import RegionMap, window_weights

HEIGHT, WIDTH, CHUNK, BORDER = 24, 40, 10, 4
GRID = GridSpec("EPSG:32633", (10.0, 0.0, 500000.0, 0.0, -10.0, 5000000.0), WIDTH, HEIGHT)
VARIABLES = (("s2_ndvi", "s2_time"),)
N_FEATURES = 3
FEATURE_NAMES = tuple(f"s2_ndvi_{i}" for i in range(N_FEATURES))
# Pixels with a NaN feature: far from the border, in the band on either side, one date only.
NAN_PIXELS = ((2, 3), (5, 18), (12, 21), (20, 35))
COLUMNS = np.broadcast_to(np.arange(WIDTH), (HEIGHT, WIDTH))
ROWS = np.broadcast_to(np.arange(HEIGHT)[:, None], (HEIGHT, WIDTH))

# Two regions with a vertical border between columns 19 and 20.
TWO = np.where(COLUMNS < 20, 0, 1).astype(np.int16)
# Three: the east half cut between rows 11 and 12 (a triple point where the vote differs).
THREE = np.where(COLUMNS < 20, 0, np.where(ROWS < 12, 1, 2)).astype(np.int16)

# Each region's classes and the rule of its training labels: the models disagree a lot.
MODEL_CLASSES = ((1, 2, 3), (2, 3, 5), (1, 5))


def _labels(region: int, X: np.ndarray) -> np.ndarray:
    codes = np.asarray(MODEL_CLASSES[region])
    if region == 0:
        return codes[np.digitize(X[:, 0], [-0.4, 0.4])]
    if region == 1:
        return codes[np.digitize(X[:, 1] + 0.5 * X[:, 2], [-0.3, 0.5])]
    return codes[(X[:, 2] - X[:, 0] > 0).astype(int)]


@pytest.fixture(scope="module")
def world(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    """The cube (3 features), one trained model per region, saved, and the feature stack."""
    root = tmp_path_factory.mktemp("regions")
    rng = np.random.default_rng(42)
    stack = rng.normal(size=(N_FEATURES, HEIGHT, WIDTH)).astype(np.float32)
    for i, (row, col) in enumerate(NAN_PIXELS):
        stack[: i + 1 if i < 3 else 1, row, col] = np.nan
    cube = str(root / "cube.zarr")
    group = zarr.open_group(cube, mode="w", zarr_format=3)
    array = group.create_array(
        "s2_ndvi",
        shape=stack.shape,
        chunks=(N_FEATURES, CHUNK, CHUNK),
        dtype="float32",
        fill_value=np.float32(np.nan),
    )
    array[:] = stack
    models, folders = [], []
    spec = ModelConfig(estimator="sklearn.linear_model.LogisticRegression")
    for region in range(len(MODEL_CLASSES)):
        X = rng.normal(size=(400, N_FEATURES)).astype(np.float32)
        model, contract = train_model(spec, X, _labels(region, X), FEATURE_NAMES, seed=0)
        assert contract.classes == MODEL_CLASSES[region]
        folder = root / f"model_{region}"
        save_model(model, contract, folder)
        models.append(model)
        folders.append(str(folder))
    return {"root": root, "cube": cube, "stack": stack, "models": models, "folders": folders}


def _hand_weights(index: np.ndarray, border: int) -> np.ndarray:
    """(n_regions, H, W) weights by brute force: the distance to every pixel of the region."""
    n = int(index.max()) + 1
    weights = np.zeros((n, *index.shape))
    pixels = np.stack([ROWS.ravel(), COLUMNS.ravel()], axis=1).astype(float)
    for region in range(n):
        inside = pixels[index.ravel() == region]
        distance = np.sqrt(((pixels[:, None, :] - inside[None, :, :]) ** 2).sum(-1)).min(1)
        if border == 0:
            weights[region] = (distance == 0).reshape(index.shape)
        else:
            weights[region] = np.clip(1 - distance / border, 0, 1).reshape(index.shape)
    return weights


def _valid(stack: np.ndarray) -> np.ndarray:
    return ~np.isnan(stack).any(axis=0)


def _hand_probabilities(world: dict[str, Any], n_regions: int) -> tuple[list[int], np.ndarray]:
    """The union of classes and each model's probabilities on every pixel, (R, C, H, W); 0 for
    the classes a model does not know and at pixels with a NaN feature."""
    classes = sorted({c for r in range(n_regions) for c in MODEL_CLASSES[r]})
    stack = world["stack"]
    valid = _valid(stack)
    table = stack.reshape(N_FEATURES, -1).T[valid.ravel()]
    out = np.zeros((n_regions, len(classes), HEIGHT, WIDTH))
    for region in range(n_regions):
        model = world["models"][region]
        proba = model.predict_proba(table).astype(np.float32)
        for column, code in enumerate(model.classes_):
            out[region, classes.index(int(code)), valid] = proba[:, column]
    return classes, out


def _region_store(world: dict[str, Any], index: np.ndarray) -> str:
    n = int(index.max()) + 1
    path = str(world["root"] / f"regions_{n}.zarr")
    write_region_raster(RegionMap(tuple(f"zone{r}" for r in range(n)), index), path, chunk_size=8)
    return path


def _predict_map(
    world: dict[str, Any],
    index: np.ndarray,
    encoding: MapEncoding,
    rule: BorderRule,
    name: str,
    border: int = BORDER,
) -> dict[str, np.ndarray]:
    n = int(index.max()) + 1
    regions = _region_store(world, index)
    store = str(world["root"] / name)
    create_map_store(store, GRID, CHUNK, encoding)
    folders = tuple(world["folders"][:n])
    classes = region_classes(folders) if encoding.task == "classification" else ()
    reports = []
    for window in GRID.chunks(CHUNK):
        task = RegionPredictTask(
            world["cube"], VARIABLES, folders, store, window, encoding, regions,
            border_pixels=border, rule=rule, classes=classes,
        )  # fmt: skip
        reports.append(predict_chunk_regions(task))
    assert sum(r.nodata_pixels for r in reports) == len(NAN_PIXELS)
    assert sum(r.predicted_pixels for r in reports) == HEIGHT * WIDTH - len(NAN_PIXELS)
    group = zarr.open_group(store, mode="r")
    return {v: np.asarray(group[v][:]) for v in encoding.variables}  # type: ignore[index]


def _percent(p: np.ndarray) -> np.ndarray:
    return np.round(np.clip(p, 0, 1) * 100).astype(np.uint8)


def _encoding(world: dict[str, Any], n: int, probabilities: bool = False) -> MapEncoding:
    classes = region_classes(world["folders"][:n])
    return MapEncoding.for_classes(classes, probabilities=probabilities)


def test_blend_follows_own_model_away_from_borders_and_the_rule_in_the_band(
    world: dict[str, Any],
) -> None:
    encoding = _encoding(world, 2, probabilities=True)
    out = _predict_map(world, TWO, encoding, "blend", "blend.zarr")
    valid = _valid(world["stack"])
    classes, proba = _hand_probabilities(world, 2)
    codes = np.asarray(classes)
    weights = _hand_weights(TWO, BORDER)
    # The band: 3 columns on each side (distances 1, 2, 3 < B) have two models.
    band = (weights > 0).sum(axis=0) > 1
    assert band.any(axis=0).nonzero()[0].tolist() == [17, 18, 19, 20, 21, 22]

    # Away from the border: the own region's model, as in memory.
    far = valid & ~band
    for region in (0, 1):
        own = far & (region == TWO)
        expected = codes[proba[region].argmax(axis=0)]
        np.testing.assert_array_equal(out[LABEL_VARIABLE][own], expected[own])
        np.testing.assert_array_equal(
            out[CONFIDENCE_VARIABLE][own], _percent(proba[region].max(axis=0))[own]
        )

    # In the band: the weighted mean of the probabilities, then the most probable class.
    blended = (weights[:, None] * proba).sum(axis=0) / weights.sum(axis=0)
    best = blended.argmax(axis=0)
    in_band = valid & band
    np.testing.assert_array_equal(out[LABEL_VARIABLE][in_band], codes[best][in_band])
    np.testing.assert_array_equal(
        out[CONFIDENCE_VARIABLE][in_band], _percent(blended.max(axis=0))[in_band]
    )
    for i, code in enumerate(classes):
        np.testing.assert_array_equal(
            out[probability_variable(code)][valid], _percent(blended[i])[valid]
        )
    # The blend is not the own model everywhere in the band (else the test would show nothing).
    own_label = np.where(TWO == 0, codes[proba[0].argmax(0)], codes[proba[1].argmax(0)])
    assert (out[LABEL_VARIABLE][in_band] != own_label[in_band]).sum() >= 3


def test_vote_equals_hand_computation_at_a_triple_point(world: dict[str, Any]) -> None:
    encoding = _encoding(world, 3)
    out = _predict_map(world, THREE, encoding, "vote", "vote.zarr")
    blend = _predict_map(world, THREE, encoding, "blend", "blend3.zarr")
    valid = _valid(world["stack"])
    classes, proba = _hand_probabilities(world, 3)
    codes = np.asarray(classes)
    weights = _hand_weights(THREE, BORDER)
    blended = (weights[:, None] * proba).sum(axis=0) / weights.sum(axis=0)
    votes = np.zeros_like(blended)
    for region in range(3):
        choice = proba[region].argmax(axis=0)
        for i in range(len(classes)):
            votes[i] += np.where(choice == i, weights[region], 0.0)
    expected = np.zeros((HEIGHT, WIDTH), dtype=int)
    for row, col in zip(*np.nonzero(valid), strict=True):
        top = votes[:, row, col].max()
        tied = np.flatnonzero(np.isclose(votes[:, row, col], top, rtol=0, atol=1e-9))
        expected[row, col] = tied[blended[tied, row, col].argmax()]
    np.testing.assert_array_equal(out[LABEL_VARIABLE][valid], codes[expected][valid])
    chosen = np.take_along_axis(blended, expected[None], axis=0)[0]
    np.testing.assert_array_equal(out[CONFIDENCE_VARIABLE][valid], _percent(chosen)[valid])

    # The vote differs from the blend, and two neighbours outvote the own model somewhere.
    assert (out[LABEL_VARIABLE] != blend[LABEL_VARIABLE])[valid].any()
    own = np.choose(THREE, [codes[proba[r].argmax(0)] for r in range(3)])
    assert (out[LABEL_VARIABLE] != own)[valid].any()


def test_nodata_where_a_feature_is_nan(world: dict[str, Any]) -> None:
    encoding = _encoding(world, 2, probabilities=True)
    out = _predict_map(world, TWO, encoding, "blend", "nodata.zarr")
    invalid = ~_valid(world["stack"])
    assert sorted(zip(*np.nonzero(invalid), strict=True)) == sorted(NAN_PIXELS)
    assert (out[LABEL_VARIABLE][invalid] == encoding.nodata).all()
    assert (out[LABEL_VARIABLE][~invalid] != encoding.nodata).all()
    for name in encoding.variables[1:]:
        assert (out[name][invalid] == CONFIDENCE_NODATA).all()


def test_border_pixels_zero_is_the_own_model_only(world: dict[str, Any]) -> None:
    encoding = _encoding(world, 2)
    out = _predict_map(world, TWO, encoding, "blend", "b0.zarr", border=0)
    valid = _valid(world["stack"])
    classes, proba = _hand_probabilities(world, 2)
    own = np.where(TWO == 0, proba[0].argmax(0), proba[1].argmax(0))
    np.testing.assert_array_equal(out[LABEL_VARIABLE][valid], np.asarray(classes)[own][valid])


class Counting:
    """A model that records the rows it is asked to predict."""

    def __init__(self, model: Any) -> None:
        self.model = model
        self.classes_ = model.classes_
        self.rows: list[np.ndarray] = []

    def predict_proba(self, X: np.ndarray) -> np.ndarray:
        assert not np.isnan(X).any()
        self.rows.append(np.array(X))
        return np.asarray(self.model.predict_proba(X))

    def predict(self, X: np.ndarray) -> np.ndarray:
        self.rows.append(np.array(X))
        return np.asarray(self.model.predict(X))


def _counting_loader(
    world: dict[str, Any], monkeypatch: pytest.MonkeyPatch
) -> tuple[dict[str, Counting], list[str]]:
    wrappers: dict[str, Counting] = {}
    loaded: list[str] = []
    real = blockwise._cached_model

    def load(folder: str) -> tuple[Any, Any]:
        loaded.append(folder)
        model, contract = real(folder)
        return wrappers.setdefault(folder, Counting(model)), contract

    monkeypatch.setattr(blockwise, "_cached_model", load)
    return wrappers, loaded


def _pixels_of(stack: np.ndarray, window: Window, rows: np.ndarray) -> set[tuple[int, int]]:
    """The grid pixels whose feature vectors are ``rows`` (features are random: unique)."""
    table = stack[:, window.row_off :, window.col_off :][:, : window.height, : window.width]
    found = set()
    for feature in rows:
        hit = np.argwhere((table == feature[:, None, None]).all(axis=0))
        assert len(hit) == 1
        found.add((window.row_off + int(hit[0][0]), window.col_off + int(hit[0][1])))
    return found


def test_a_pixel_far_from_the_border_never_runs_the_other_model(
    world: dict[str, Any], monkeypatch: pytest.MonkeyPatch
) -> None:
    wrappers, loaded = _counting_loader(world, monkeypatch)
    encoding = _encoding(world, 2)
    regions = _region_store(world, TWO)
    store = str(world["root"] / "count.zarr")
    create_map_store(store, GRID, CHUNK, encoding)
    folders = tuple(world["folders"][:2])
    west, east = folders
    valid = _valid(world["stack"])

    def run(window: Window) -> None:
        task = RegionPredictTask(
            world["cube"], VARIABLES, folders, store, window, encoding, regions,
            border_pixels=BORDER, classes=region_classes(folders),
        )  # fmt: skip
        predict_chunk_regions(task)

    run(Window(0, 0, 10, 10))  # columns 0-9: 7 or more pixels from the east
    assert loaded == [west]
    assert len(wrappers[west].rows) == 1 and len(wrappers[west].rows[0]) == valid[:10, :10].sum()

    window = Window(0, 10, 10, 10)  # columns 10-19: the east weighs on columns 17-19
    run(window)
    assert set(loaded) == {west, east}
    east_rows = np.concatenate(wrappers[east].rows)
    expected = {(r, c) for r in range(10) for c in (17, 18, 19) if valid[r, c]}
    assert _pixels_of(world["stack"], window, east_rows) == expected
    assert len(wrappers[west].rows[-1]) == valid[:10, 10:20].sum()

    west_calls = len(wrappers[west].rows)
    run(Window(0, 30, 10, 10))  # columns 30-39: only the east model
    assert len(wrappers[west].rows) == west_calls
    assert len(wrappers[east].rows[-1]) == valid[:10, 30:].sum()


def test_predict_stack_regions_asks_only_for_the_weighing_models(world: dict[str, Any]) -> None:
    asked: list[int] = []
    models = [Counting(m) for m in world["models"][:2]]

    def model_of(region: int) -> Any:
        asked.append(region)
        return models[region]

    stack = world["stack"][:, :, :10]
    weights = np.zeros((2, HEIGHT, 10), np.float32)
    weights[0] = 1
    encoding = _encoding(world, 2)
    out = predict_stack_regions(
        model_of, stack, weights, encoding, classes=region_classes(world["folders"][:2])
    )
    assert asked == [0] and not models[1].rows
    valid = _valid(stack)
    expected = world["models"][0].predict(stack.reshape(N_FEATURES, -1).T[valid.ravel()])
    np.testing.assert_array_equal(out[LABEL_VARIABLE][valid], expected)


def test_regression_is_the_weighted_mean_of_the_region_models(
    world: dict[str, Any], tmp_path: Path
) -> None:
    spec = ModelConfig(estimator="sklearn.linear_model.LinearRegression")
    rng = np.random.default_rng(7)
    models, folders = [], []
    for region, coefficients in enumerate(([1.0, 0.0, 0.0], [0.0, -2.0, 1.0])):
        X = rng.normal(size=(200, N_FEATURES)).astype(np.float32)
        y = X @ np.asarray(coefficients, np.float32) + 3 * region
        model, contract = train_model(spec, X, y, FEATURE_NAMES, 0, task="regression")
        save_model(model, contract, tmp_path / f"model_{region}")
        models.append(model)
        folders.append(str(tmp_path / f"model_{region}"))
    regions = _region_store(world, TWO)
    store = str(tmp_path / "values.zarr")
    encoding = MapEncoding.for_values()
    create_map_store(store, GRID, CHUNK, encoding)
    for window in GRID.chunks(CHUNK):
        task = RegionPredictTask(
            world["cube"], VARIABLES, tuple(folders), store, window, encoding, regions,
            border_pixels=BORDER,
        )  # fmt: skip
        predict_chunk_regions(task)
    values = np.asarray(zarr.open_group(store, mode="r")[VALUE_VARIABLE][:])  # type: ignore[index]
    stack = world["stack"]
    valid = _valid(stack)
    table = np.nan_to_num(stack.reshape(N_FEATURES, -1).T)
    each = np.stack([m.predict(table).reshape(HEIGHT, WIDTH) for m in models])
    weights = _hand_weights(TWO, BORDER)
    expected = (weights * each).sum(axis=0) / weights.sum(axis=0)
    np.testing.assert_allclose(values[valid], expected[valid], rtol=1e-5, atol=1e-5)
    assert np.isnan(values[~valid]).all()
    # The band is a mix: neither model's value alone.
    assert not np.allclose(values[0, 18], each[0, 0, 18], atol=1e-3)


def test_vote_for_regression_is_refused_naming_the_field(world: dict[str, Any]) -> None:
    with pytest.raises(ModelError, match=r"reference\.regions\.border_rule.*'blend'"):
        RegionPredictTask(
            "cube", VARIABLES, ("m0", "m1"), "map", Window(0, 0, 1, 1),
            MapEncoding.for_values(), "regions", border_pixels=2, rule="vote",
        )  # fmt: skip


def test_task_checks(world: dict[str, Any]) -> None:
    encoding = _encoding(world, 2)
    common = ("cube", VARIABLES)
    with pytest.raises(ValueError, match="sorted union"):
        RegionPredictTask(*common, ("m0",), "map", Window(0, 0, 1, 1), encoding, "regions")
    with pytest.raises(ValueError, match="one model folder per region"):
        RegionPredictTask(*common, (), "map", Window(0, 0, 1, 1), encoding, "r", classes=(1,))
    regions = _region_store(world, TWO)
    task = RegionPredictTask(
        world["cube"], VARIABLES, tuple(world["folders"][:1]), str(world["root"] / "x.zarr"),
        Window(0, 0, 10, 10), encoding, regions, classes=(1, 2, 3),
    )  # fmt: skip
    with pytest.raises(ValueError, match=r"lists 2 regions \['zone0', 'zone1'\].*1 model folders"):
        predict_chunk_regions(task)


def test_region_raster_round_trip_gives_the_weights_of_regions_py(
    world: dict[str, Any],
) -> None:
    regions = RegionMap(("zone0", "zone1", "zone2"), THREE)
    path = str(world["root"] / "round_trip.zarr")
    write_region_raster(regions, path, chunk_size=7)
    assert region_names(path) == ("zone0", "zone1", "zone2")
    for border in (0, 1, BORDER):
        for window in GRID.chunks(CHUNK):
            np.testing.assert_array_equal(
                region_weights(path, window, border), window_weights(regions, window, border)
            )
    with pytest.raises(ValueError, match="1 pixel"):
        bad = THREE.copy()
        bad[0, 0] = -1
        write_region_raster(RegionMap(("zone0", "zone1", "zone2"), bad), path)


def test_region_classes_is_the_sorted_union(world: dict[str, Any]) -> None:
    assert region_classes(world["folders"]) == (1, 2, 3, 5)
