"""Compiled inference of tree ensembles (pipeline.learn.compiled, pipeline.learn.trees):
scikit-learn's probabilities, values and labels to the bit on models of real data, a chunk's
pixels read in place, NaN left to scikit-learn, scikit-learn for what is not supported, and the
manifest switch."""

from __future__ import annotations

import pickle
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from pipeline.errors import ModelError
from pipeline.learn import (
    ModelConfig,
    as_model_config,
    check_model_spec,
    load_model,
    save_model,
    train_model,
)
from pipeline.learn import compiled as engine
from pipeline.learn.compiled import CompiledForest
from pipeline.learn.learner import PixelLearner
from pipeline.manifest import ModelSpec
from pipeline.run.units import content_hash
from tests.learn.data import SLOVENIA_CLASSES, slovenia


def _train(tmp_path: Path, estimator: str, **config: Any) -> tuple[Any, Path]:
    """A model of the real Slovenia patch (gap-filled NDVI, land-use labels), saved by sitsflow."""
    patch = slovenia()
    task = "regression" if estimator.endswith("Regressor") else "classification"
    rows = np.flatnonzero(np.isin(patch.lulc, SLOVENIA_CLASSES))[::3]
    targets = patch.max_ndvi[rows] if task == "regression" else patch.lulc[rows]
    params = config.pop("params", {"n_estimators": 30})
    config.setdefault("inference", "compiled")
    spec = ModelConfig(estimator=f"sklearn.ensemble.{estimator}", params=params, **config)
    model, contract = train_model(
        spec, patch.features[rows], targets, patch.feature_names, 0, task=task
    )
    folder = tmp_path / "model"
    save_model(model, contract, folder)
    return model, folder


BOOSTING = {"n_estimators": 20, "max_depth": 3}


@pytest.mark.parametrize(
    ("estimator", "params"),
    [
        ("RandomForestClassifier", {"n_estimators": 30}),
        ("ExtraTreesClassifier", {"n_estimators": 30}),
        ("GradientBoostingClassifier", BOOSTING),
    ],
)
def test_classifiers_give_sklearn_probabilities_and_labels_to_the_bit(
    tmp_path: Path, estimator: str, params: dict[str, Any]
) -> None:
    fitted, folder = _train(tmp_path, estimator, params=params)
    model, _ = load_model(folder)
    assert isinstance(model, CompiledForest)
    table = slovenia().features  # every pixel of the patch, 10,100
    assert np.array_equal(model.predict_proba(table), fitted.predict_proba(table))
    assert np.array_equal(model.predict(table), fitted.predict(table))
    assert np.array_equal(model.classes_, fitted.classes_)
    # Fully grown trees tie often (multiples of 1/30): equal sums give scikit-learn's first class.
    top = np.sort(fitted.predict_proba(table), axis=1)[:, -2:]
    assert estimator.startswith("Gradient") or (top[:, 0] == top[:, 1]).any()


def test_binary_boosting_gives_sklearn_probabilities_and_labels(tmp_path: Path) -> None:
    """Two classes: one tree per stage, scikit-learn's sigmoid of one raw column."""
    patch = slovenia()
    rows = np.flatnonzero(np.isin(patch.lulc, SLOVENIA_CLASSES[:2]))
    spec = ModelConfig(
        estimator="sklearn.ensemble.GradientBoostingClassifier",
        params=BOOSTING,
        inference="compiled",
    )
    fitted, contract = train_model(
        spec, patch.features[rows], patch.lulc[rows], patch.feature_names, 0, task="classification"
    )
    save_model(fitted, contract, tmp_path / "model")
    model, _ = load_model(tmp_path / "model")
    assert isinstance(model, CompiledForest) and len(model.classes_) == 2
    table = patch.features
    assert np.array_equal(model.predict_proba(table), fitted.predict_proba(table))
    assert np.array_equal(model.predict(table), fitted.predict(table))


@pytest.mark.parametrize(
    ("estimator", "params"),
    [
        ("RandomForestRegressor", {"n_estimators": 30}),
        ("ExtraTreesRegressor", {"n_estimators": 30}),
        ("GradientBoostingRegressor", BOOSTING),
    ],
)
def test_regressors_give_sklearn_values_to_the_bit(
    tmp_path: Path, estimator: str, params: dict[str, Any]
) -> None:
    fitted, folder = _train(tmp_path, estimator, params=params)
    model, _ = load_model(folder)
    assert isinstance(model, CompiledForest)
    table = slovenia().features
    assert np.array_equal(model.predict(table), fitted.predict(table))


@pytest.mark.parametrize("task", ["classification", "regression"])
def test_a_chunk_is_predicted_in_place_as_its_table_is(tmp_path: Path, task: str) -> None:
    """What a prediction unit runs (PixelLearner.predict_block on a cube block with no-data):
    the block read in place gives scikit-learn's own prediction of the valid pixels' table."""
    estimator = "RandomForestRegressor" if task == "regression" else "RandomForestClassifier"
    fitted, folder = _train(tmp_path, estimator)
    model, _ = load_model(folder)
    patch = slovenia()
    block = patch.features.T.reshape(-1, *patch.shape).copy()
    block[:, :5, :7] = np.nan  # pixels without features get no prediction
    block[3, 10, 10] = np.nan  # one missing feature is enough
    found = PixelLearner().predict_block(model, block, 0, task)
    expected = PixelLearner().predict_block(fitted, block, 0, task)
    assert found.valid.shape == patch.shape and not found.valid[10, 10]
    assert np.array_equal(found.valid, expected.valid)
    if task == "regression":
        assert np.array_equal(found.values, expected.values)
    else:
        assert np.array_equal(found.probabilities, expected.probabilities)
        assert np.array_equal(found.classes, expected.classes)
    strided = np.ascontiguousarray(block[:, :, ::-1])[:, :, ::-1]  # a view, not C-ordered
    again = PixelLearner().predict_block(model, strided, 0, task)
    assert np.array_equal(again.valid, found.valid)


def test_tables_with_missing_values_get_sklearn_routing(tmp_path: Path) -> None:
    """A forest fitted on features with NaN learned where NaN goes at each node; a table with
    NaN is predicted by scikit-learn itself, one without by the kernel: both its results."""
    patch = slovenia()
    rows = np.flatnonzero(np.isin(patch.lulc, SLOVENIA_CLASSES))[::3]
    features = patch.features[rows].copy()
    features[::4, 5] = np.nan
    spec = ModelConfig(params={"n_estimators": 20}, inference="compiled")
    fitted, contract = train_model(
        spec, features, patch.lulc[rows], patch.feature_names, 0, task="classification"
    )
    assert any(np.asarray(t.tree_.missing_go_to_left).any() for t in fitted.estimators_)
    save_model(fitted, contract, tmp_path / "model")
    model, _ = load_model(tmp_path / "model")
    table = patch.features.copy()
    table[::3, 5] = np.nan
    assert np.array_equal(model.predict_proba(table), fitted.predict_proba(table))
    clean = patch.features
    assert np.array_equal(model.predict_proba(clean), fitted.predict_proba(clean))


def test_threads_give_the_same_bits(tmp_path: Path) -> None:
    fitted, folder = _train(tmp_path, "RandomForestClassifier")
    model, _ = load_model(folder)
    table = np.tile(slovenia().features, (4, 1))  # 40,400 rows: two threads' worth
    one = model.predict_proba(table)
    two = CompiledForest(model.estimator, threads=2).predict_proba(table)
    assert np.array_equal(one, two) and np.array_equal(one, fitted.predict_proba(table))


def test_inference_sklearn_keeps_scikit_learn(tmp_path: Path) -> None:
    fitted, folder = _train(tmp_path, "RandomForestClassifier", inference="sklearn")
    model, contract = load_model(folder)
    assert type(model) is type(fitted)
    assert contract.config["inference"] == "sklearn"
    assert sorted(p.name for p in folder.iterdir()) == ["model.json", "model.skops"]


def test_unsupported_estimators_predict_with_sklearn(tmp_path: Path) -> None:
    fitted, folder = _train(tmp_path, "HistGradientBoostingClassifier", params={"max_iter": 10})
    model, _ = load_model(folder)
    assert type(model) is type(fitted)
    names = slovenia().feature_names
    with pytest.raises(ModelError, match=r"model\.inference"):
        check_model_spec(
            ModelConfig(
                estimator="sklearn.ensemble.HistGradientBoostingClassifier", inference="compiled"
            ),
            "classification",
            names,
        )
    with pytest.raises(ModelError, match="standardize"):
        check_model_spec(
            ModelConfig(standardize=True, inference="compiled"), "classification", names
        )
    check_model_spec(ModelConfig(inference="compiled"), "classification", names)
    # Boosting from an initial estimator of the user's: its prediction varies by pixel.
    boosted, folder = _train(
        tmp_path / "init",
        "GradientBoostingClassifier",
        params={"n_estimators": 5, "init": "zero"},
    )
    assert isinstance(load_model(folder)[0], CompiledForest)
    assert not engine.supports(
        type(boosted)(init=type(fitted)(max_iter=5))  # another estimator as init
    )


def test_a_compiled_model_travels_by_pickle(tmp_path: Path) -> None:
    fitted, folder = _train(tmp_path, "RandomForestClassifier")
    model, _ = load_model(folder)
    again = pickle.loads(pickle.dumps(model))
    table = slovenia().features[:2000]
    assert np.array_equal(again.predict_proba(table), model.predict_proba(table))
    assert again.n_estimators == fitted.n_estimators  # other attributes are the estimator's
    assert not hasattr(again, "feature_names_in_")  # the engine takes arrays in fit order


def test_the_manifest_switch_reaches_the_config_and_keeps_default_digests() -> None:
    assert as_model_config(ModelSpec()).inference == "auto"
    config = as_model_config(ModelSpec(inference="sklearn"))
    assert config.inference == "sklearn"
    assert content_hash(config) != content_hash(ModelConfig())
    assert "inference" not in ModelConfig().__canonical__()
    with pytest.raises(ValueError, match="inference is only used by kind"):
        ModelSpec(kind="torch", architecture="tempcnn", inference="compiled")


def test_auto_predicts_through_the_engine_at_any_size(tmp_path: Path) -> None:
    """inference: auto (the default): the engine wherever it is supported, since it changes no
    bit and costs nothing to set up (a small run's maps are scikit-learn's all the same)."""
    fitted, folder = _train(tmp_path, "RandomForestClassifier", inference="auto")
    model, _ = load_model(folder)
    assert isinstance(model, CompiledForest)
    table = slovenia().features[:10]
    assert np.array_equal(model.predict_proba(table), fitted.predict_proba(table))


def test_a_loaded_predictor_is_saved_as_its_estimator(tmp_path: Path) -> None:
    """A model loaded (a compiled predictor) and saved again, as an external model is, writes the
    scikit-learn estimator, with what was changed on it (recoded classes) kept."""
    fitted, folder = _train(tmp_path, "RandomForestClassifier", inference="auto")
    model, contract = load_model(folder)
    assert isinstance(model, CompiledForest)
    assert engine.unwrap(model) is model.estimator and engine.unwrap(fitted) is fitted
    engine.unwrap(model).classes_ = np.asarray(fitted.classes_) * 10
    save_model(model, contract, tmp_path / "again")
    again, _ = load_model(tmp_path / "again")
    assert isinstance(again, CompiledForest)
    assert list(again.classes_) == [c * 10 for c in fitted.classes_]
    assert (tmp_path / "again" / contract.model_file).suffix == ".skops"  # not a pickled wrapper
