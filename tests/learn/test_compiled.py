"""Compiled inference of tree ensembles (pipeline.learn.compiled): scikit-learn's labels and its
probabilities to float precision on a real model, the artefact built once beside the model and
found again by content, scikit-learn as the fallback, and the manifest switch."""

from __future__ import annotations

import logging
import pickle
import shutil
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
from pipeline.learn.compiled import AutoForest, CompiledForest, near_ties
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
    config.setdefault("inference", "compiled")  # the engine, whatever the table's size
    spec = ModelConfig(estimator=f"sklearn.ensemble.{estimator}", params=params, **config)
    model, contract = train_model(
        spec, patch.features[rows], targets, patch.feature_names, 0, task=task
    )
    folder = tmp_path / "model"
    save_model(model, contract, folder)
    return model, folder


@pytest.mark.parametrize(
    "estimator",
    ["RandomForestClassifier", "ExtraTreesClassifier", "GradientBoostingClassifier"],
)
def test_classifiers_give_sklearn_labels_and_probabilities(tmp_path: Path, estimator: str) -> None:
    fitted, folder = _train(tmp_path, estimator)
    model, _ = load_model(folder)
    assert isinstance(model, CompiledForest)
    table = slovenia().features  # every pixel of the patch, 10,100
    expected = fitted.predict_proba(table)
    found = model.predict_proba(table)
    assert np.abs(found - expected).max() <= 2e-6
    assert np.array_equal(found.argmax(axis=1), expected.argmax(axis=1))
    assert np.array_equal(model.predict(table), fitted.predict(table))
    assert np.array_equal(model.classes_, fitted.classes_)


def test_near_ties_are_decided_by_sklearn(tmp_path: Path) -> None:
    """Fully grown trees tie often (50 trees: multiples of 0.02): those rows come from scikit-learn,
    to the bit, and their labels are its first class of highest probability."""
    fitted, folder = _train(tmp_path, "RandomForestClassifier", params={"n_estimators": 50})
    model, _ = load_model(folder)
    table = slovenia().features
    raw = model._run(table, 1)  # the engine alone
    near = near_ties(raw, model.tolerance)
    assert near.sum() > 0  # the data has ties: the rule below is exercised
    found, expected = model.predict_proba(table), fitted.predict_proba(table)
    assert np.array_equal(found[near], expected[near])
    assert np.array_equal(found.argmax(axis=1), expected.argmax(axis=1))
    # Far from a tie, the engine's own values are kept (within its float32 bound).
    assert np.array_equal(found[~near], raw[~near])


@pytest.mark.parametrize("estimator", ["RandomForestRegressor", "ExtraTreesRegressor"])
def test_regressors_give_sklearn_values(tmp_path: Path, estimator: str) -> None:
    fitted, folder = _train(tmp_path, estimator)
    model, _ = load_model(folder)
    assert isinstance(model, CompiledForest)
    table = slovenia().features
    expected = fitted.predict(table)
    assert np.allclose(model.predict(table), expected, rtol=1e-6, atol=1e-6)


def test_the_block_path_maps_the_same_labels(tmp_path: Path) -> None:
    """What a prediction unit runs (PixelLearner.predict_block on a cube block with no-data)."""
    fitted, folder = _train(tmp_path, "RandomForestClassifier")
    model, _ = load_model(folder)
    patch = slovenia()
    block = patch.features.T.reshape(-1, *patch.shape).copy()
    block[:, :5, :7] = np.nan  # pixels without features get no prediction
    found = PixelLearner().predict_block(model, block, 0, "classification")
    expected = PixelLearner().predict_block(fitted, block, 0, "classification")
    assert found.probabilities is not None and expected.probabilities is not None
    assert np.array_equal(found.valid, expected.valid)
    assert np.array_equal(found.probabilities.argmax(axis=1), expected.probabilities.argmax(axis=1))


def test_the_artefact_is_built_once_beside_the_model_and_found_by_content(tmp_path: Path) -> None:
    _, folder = _train(tmp_path, "RandomForestClassifier")
    built = sorted((folder / engine.ARTEFACT_FOLDER).glob("*.onnx"))
    assert len(built) == 1  # built when the model was saved
    before = built[0].stat().st_mtime_ns
    load_model(folder)
    assert built[0].stat().st_mtime_ns == before  # read, not built again
    # A model saved without it (an older run): built on first load, under the same name.
    shutil.rmtree(folder / engine.ARTEFACT_FOLDER)
    model, _ = load_model(folder)
    assert isinstance(model, CompiledForest)
    assert sorted((folder / engine.ARTEFACT_FOLDER).glob("*.onnx"))[0].name == built[0].name
    # Another model (other seed, same config): another name, never this one's file.
    _, other = _train(tmp_path / "other", "RandomForestClassifier", params={"n_estimators": 31})
    assert [p.name for p in (other / engine.ARTEFACT_FOLDER).glob("*.onnx")] != [built[0].name]


def test_inference_sklearn_keeps_scikit_learn(tmp_path: Path) -> None:
    fitted, folder = _train(tmp_path, "RandomForestClassifier", inference="sklearn")
    model, contract = load_model(folder)
    assert type(model) is type(fitted)
    assert contract.config["inference"] == "sklearn"
    assert not (folder / engine.ARTEFACT_FOLDER).exists()


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


def test_a_broken_artefact_falls_back_to_sklearn_logged_once(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    fitted, folder = _train(tmp_path, "ExtraTreesClassifier")
    artefact = next((folder / engine.ARTEFACT_FOLDER).glob("*.onnx"))
    artefact.write_bytes(b"not an onnx model")
    engine._warned.clear()
    with caplog.at_level(logging.WARNING, logger="pipeline.learn.compiled"):
        first, _ = load_model(folder)
        second, _ = load_model(folder)
    assert type(first) is type(fitted) and type(second) is type(fitted)
    warnings = [r for r in caplog.records if "predicting with scikit-learn" in r.getMessage()]
    assert len(warnings) == 1
    table = slovenia().features[:500]
    assert np.array_equal(first.predict_proba(table), fitted.predict_proba(table))


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


def test_an_artefact_built_another_way_is_not_used(tmp_path: Path) -> None:
    """A file at the artefact's name that takes float64 (as an earlier build of this module
    wrote) is refused when loaded, and the model predicts with scikit-learn."""
    from skl2onnx import to_onnx

    fitted, folder = _train(tmp_path, "RandomForestClassifier")
    artefact = next((folder / engine.ARTEFACT_FOLDER).glob("*.onnx"))
    other = to_onnx(
        fitted,
        np.zeros((1, fitted.n_features_in_)),
        options={id(fitted): {"zipmap": False}},
        target_opset={"": 17, "ai.onnx.ml": 3},
    )
    artefact.write_bytes(other.SerializeToString())
    model, _ = load_model(folder)
    assert type(model) is type(fitted)
    table = slovenia().features[:1000]
    assert np.array_equal(model.predict_proba(table), fitted.predict_proba(table))


def test_auto_compiles_only_tables_large_enough_to_pay(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """inference: auto leaves small tables to scikit-learn (its maps to the bit, no conversion);
    from AUTO_MIN_ROWS rows the engine predicts, its artefact built on that first use."""
    fitted, folder = _train(tmp_path, "RandomForestClassifier", inference="auto")
    assert not (folder / engine.ARTEFACT_FOLDER).exists()  # nothing converted at save
    model, _ = load_model(folder)
    assert isinstance(model, AutoForest)
    table = slovenia().features  # 10,100 rows
    assert np.array_equal(model.predict_proba(table), fitted.predict_proba(table))
    assert not (folder / engine.ARTEFACT_FOLDER).exists()  # still nothing converted
    monkeypatch.setattr(engine, "AUTO_MIN_ROWS", len(table))
    found = model.predict_proba(table)
    assert len(list((folder / engine.ARTEFACT_FOLDER).glob("*.onnx"))) == 1  # built on first use
    assert np.array_equal(found.argmax(axis=1), fitted.predict_proba(table).argmax(axis=1))
    assert np.abs(found - fitted.predict_proba(table)).max() <= 2e-6
    again = pickle.loads(pickle.dumps(model))  # as a worker receives it
    assert isinstance(again, AutoForest)
    assert np.array_equal(again.predict(table), fitted.predict(table))


def test_a_loaded_predictor_is_saved_as_its_estimator(tmp_path: Path) -> None:
    """A model loaded (a compiled predictor) and saved again, as an external model is, writes the
    scikit-learn estimator, with what was changed on it (recoded classes) kept."""
    fitted, folder = _train(tmp_path, "RandomForestClassifier", inference="auto")
    model, contract = load_model(folder)
    assert isinstance(model, AutoForest)
    assert engine.unwrap(model) is model.estimator and engine.unwrap(fitted) is fitted
    engine.unwrap(model).classes_ = np.asarray(fitted.classes_) * 10
    save_model(model, contract, tmp_path / "again")
    again, _ = load_model(tmp_path / "again")
    assert isinstance(again, AutoForest)
    assert list(again.classes_) == [c * 10 for c in fitted.classes_]
    assert (tmp_path / "again" / contract.model_file).suffix == ".skops"  # not a pickled wrapper
