"""Models trained elsewhere: used for prediction only, after their features are checked against
the cube's. A model that cannot prove which features it expects is refused."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import joblib
import numpy as np
import pandas as pd
import pytest
import skops.io as sio
import torch
from sklearn.ensemble import RandomForestClassifier, RandomForestRegressor

from pipeline.errors import ModelError
from pipeline.learn import (
    check_features,
    check_model_spec,
    load_external_model,
    load_model,
    model_input,
    save_model,
    train_model,
)
from pipeline.learn.config import ModelConfig
from tests.learn.data import SLOVENIA_CLASSES, slovenia


@pytest.fixture(autouse=True)
def _one_thread() -> Iterator[None]:
    previous = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(previous)


def external(path: Path) -> ModelConfig:
    return ModelConfig(kind="external", path=str(path))


@pytest.fixture(scope="module")
def training() -> tuple[pd.DataFrame, np.ndarray]:
    patch = slovenia()
    rows = np.flatnonzero(np.isin(patch.lulc, SLOVENIA_CLASSES))[::4]
    frame = pd.DataFrame(patch.features[rows], columns=list(patch.feature_names))
    return frame, patch.lulc[rows]


def test_a_forest_fitted_on_named_columns_is_checked_and_used(
    training: tuple[pd.DataFrame, np.ndarray], tmp_path: Path
) -> None:
    frame, labels = training
    forest = RandomForestClassifier(n_estimators=10, random_state=0).fit(frame, labels)
    sio.dump(forest, tmp_path / "forest.skops")
    names = slovenia().feature_names

    check_model_spec(external(tmp_path / "forest.skops"), "classification", names)
    model, contract = load_external_model(external(tmp_path / "forest.skops"), "classification")
    assert contract.feature_names == names and contract.classes == SLOVENIA_CLASSES
    assert contract.training["source"] == str(tmp_path / "forest.skops")
    # Predictions go through the named columns, as the model was fitted.
    table = slovenia().features
    np.testing.assert_array_equal(
        model.predict_proba(model_input(model, table)),
        forest.predict_proba(pd.DataFrame(table, columns=list(names))),
    )
    # Stored in the run's model folder like a trained model.
    save_model(model, contract, tmp_path / "run-model")
    again, saved = load_model(tmp_path / "run-model")
    assert saved.training["external"] is True
    np.testing.assert_array_equal(
        again.predict(model_input(again, table)), model.predict(model_input(model, table))
    )


def test_another_cube_is_refused_with_what_differs(
    training: tuple[pd.DataFrame, np.ndarray], tmp_path: Path
) -> None:
    frame, labels = training
    joblib.dump(RandomForestClassifier(n_estimators=3).fit(frame, labels), tmp_path / "f.joblib")
    names = list(slovenia().feature_names)
    shifted = [n.replace("2017", "2018") for n in names]  # same count, another year
    with pytest.raises(ModelError) as err:
        check_model_spec(external(tmp_path / "f.joblib"), "classification", shifted)
    message = str(err.value)
    assert "expects 37 features, the cube has 37" in message
    assert "missing s2_ndvi_20170101" in message and "unexpected s2_ndvi_20180101" in message
    assert "Fix:" in message
    with pytest.raises(ModelError, match="another order"):
        check_model_spec(external(tmp_path / "f.joblib"), "classification", names[::-1])


def test_a_model_without_feature_names_is_refused(
    training: tuple[pd.DataFrame, np.ndarray], tmp_path: Path
) -> None:
    frame, labels = training
    forest = RandomForestClassifier(n_estimators=3).fit(frame.to_numpy(), labels)
    joblib.dump(forest, tmp_path / "bare.joblib")
    with pytest.raises(ModelError) as err:
        load_external_model(external(tmp_path / "bare.joblib"), "classification")
    assert "records 37 features but not their names" in str(err.value)
    assert "pandas DataFrame" in str(err.value)


def test_task_and_labels_must_suit_the_run(
    training: tuple[pd.DataFrame, np.ndarray], tmp_path: Path
) -> None:
    frame, labels = training
    regressor = RandomForestRegressor(n_estimators=3).fit(frame, labels.astype(float))
    joblib.dump(regressor, tmp_path / "reg.joblib")
    with pytest.raises(ModelError, match="is a regressor, but the run's task is classification"):
        load_external_model(external(tmp_path / "reg.joblib"), "classification")
    _, contract = load_external_model(external(tmp_path / "reg.joblib"), "regression")
    assert contract.task == "regression" and contract.classes == ()

    named = RandomForestClassifier(n_estimators=3).fit(frame, np.where(labels == 2, "crop", "x"))
    joblib.dump(named, tmp_path / "named.joblib")
    with pytest.raises(ModelError, match="not integer class codes"):
        load_external_model(external(tmp_path / "named.joblib"), "classification")

    joblib.dump(RandomForestClassifier(), tmp_path / "unfitted.joblib")
    with pytest.raises(ModelError, match="is not fitted"):
        load_external_model(external(tmp_path / "unfitted.joblib"), "classification")


def test_a_sitsflow_torch_folder_from_another_run(tmp_path: Path) -> None:
    patch = slovenia()
    rows = np.flatnonzero(np.isin(patch.lulc, SLOVENIA_CLASSES))[::8]
    spec = ModelConfig(
        kind="torch", architecture="tempcnn", params={"filters": 8, "dense": 16},
        training={"epochs": 2},
    )  # fmt: skip
    model, contract = train_model(
        spec, patch.features[rows], patch.lulc[rows], patch.feature_names, seed=0
    )
    save_model(model, contract, tmp_path / "elsewhere")
    loaded, loaded_contract = load_external_model(
        external(tmp_path / "elsewhere"), "classification"
    )
    check_features(loaded_contract, patch.feature_names)
    np.testing.assert_array_equal(
        loaded.predict_proba(patch.features), model.predict_proba(patch.features)
    )
    with pytest.raises(
        ModelError, match="trained for classification, the run's task is regression"
    ):
        load_external_model(external(tmp_path / "elsewhere"), "regression")


@pytest.mark.parametrize(
    ("name", "words"),
    [("missing.skops", "does not exist"), ("model.onnx", "neither a sitsflow model folder")],
)
def test_unusable_paths(tmp_path: Path, name: str, words: str) -> None:
    (tmp_path / "model.onnx").write_bytes(b"\x08\x01")
    with pytest.raises(ModelError, match=words) as err:
        load_external_model(external(tmp_path / name), "classification")
    assert err.value.field == "model.path"
    (tmp_path / "empty").mkdir()
    with pytest.raises(ModelError, match=r"has no model\.json"):
        load_external_model(external(tmp_path / "empty"), "classification")
