"""scikit-learn models on real data: the sits accuracy figures, grid search grouped by polygon,
standardization, regression, and models that reload with identical predictions."""

from __future__ import annotations

import json
import math
import subprocess
import sys
from dataclasses import replace
from pathlib import Path

import joblib
import numpy as np
import pytest
from sklearn.metrics import r2_score
from sklearn.model_selection import GroupKFold

from pipeline.errors import ModelError
from pipeline.learn import load_model, save_model, train_model
from pipeline.learn.compiled import CompiledForest
from pipeline.learn.config import ModelConfig
from pipeline.learn.sklearn import dump_estimator, load_skops
from pipeline.samples.tables import read_sample_table
from tests.learn.data import CERRADO, MODIS_NDVI, SLOVENIA_CLASSES, block_holdout, slovenia


def grouped_cv_accuracy(path: Path, folds: int = 5) -> float:
    """Overall accuracy of a 100-tree random forest, 5 folds grouped by location (samples of one
    place in different years never sit on both sides)."""
    table = read_sample_table(path)
    spec = ModelConfig(params={"n_estimators": 100})
    correct = 0
    for train, test in GroupKFold(folds).split(table.features, groups=table.location_ids):
        model, _ = train_model(
            spec, table.features[train], table.codes[train], table.feature_names, seed=0
        )
        correct += int((model.predict(table.features[test]) == table.codes[test]).sum())
    return correct / len(table)


@pytest.mark.parametrize(("path", "bound"), [(CERRADO, 0.90), (MODIS_NDVI, 0.70)])
def test_random_forest_reaches_the_sits_test_suite_accuracy(path: Path, bound: float) -> None:
    # sits expects these lower bounds of cross-validated overall accuracy (tests of sits_rfor).
    assert grouped_cv_accuracy(path) > bound


def test_slovenia_classification_saves_and_reloads_identically(tmp_path: Path) -> None:
    patch = slovenia()
    keep = np.isin(patch.lulc, SLOVENIA_CLASSES)
    test = block_holdout(patch.blocks, 0.25, seed=1)
    train, held = keep & ~test, keep & test
    spec = ModelConfig(params={"n_estimators": 40, "min_samples_leaf": 2})
    model, contract = train_model(
        spec,
        patch.features[train],
        patch.lulc[train],
        patch.feature_names,
        seed=3,
        groups=patch.blocks[train],
    )
    accuracy = float((model.predict(patch.features[held]) == patch.lulc[held]).mean())
    majority = float((patch.lulc[held] == 2).mean())
    assert accuracy > majority + 0.03  # better than calling every pixel cultivated land
    assert contract.classes == SLOVENIA_CLASSES
    assert contract.feature_names == patch.feature_names
    assert contract.params == {"n_estimators": 40, "min_samples_leaf": 2}

    save_model(model, contract, tmp_path / "model")
    found = sorted(p.name for p in (tmp_path / "model").iterdir())
    assert found == ["model.json", "model.skops"]  # the compiled predictor is built at load
    again, reloaded = load_model(tmp_path / "model")
    assert reloaded == replace(contract, versions=reloaded.versions, model_file="model.skops")
    assert isinstance(again, CompiledForest)
    np.testing.assert_array_equal(  # the saved estimator, to the bit, and its compiled predictor
        model.predict_proba(patch.features), again.estimator.predict_proba(patch.features)
    )
    np.testing.assert_array_equal(
        model.predict_proba(patch.features), again.predict_proba(patch.features)
    )
    np.testing.assert_array_equal(model.predict(patch.features), again.predict(patch.features))


def test_seed_reaches_the_estimator() -> None:
    patch = slovenia()
    rows = np.isin(patch.lulc, SLOVENIA_CLASSES)
    X, y = patch.features[rows][:1500], patch.lulc[rows][:1500]
    spec = ModelConfig(params={"n_estimators": 5})
    a, _ = train_model(spec, X, y, patch.feature_names, seed=1)
    b, _ = train_model(spec, X, y, patch.feature_names, seed=1)
    c, _ = train_model(spec, X, y, patch.feature_names, seed=2)
    assert a.random_state == 1
    np.testing.assert_array_equal(a.predict_proba(patch.features), b.predict_proba(patch.features))
    assert not np.array_equal(a.predict_proba(patch.features), c.predict_proba(patch.features))


def test_standardized_knn_with_grid_search_grouped_by_location(tmp_path: Path) -> None:
    table = read_sample_table(MODIS_NDVI)
    spec = ModelConfig(
        estimator="sklearn.neighbors.KNeighborsClassifier",
        standardize=True,
        grid_search={"param_grid": {"n_neighbors": [1, 15]}, "folds": 3},
    )
    model, contract = train_model(
        spec, table.features, table.codes, table.feature_names, seed=0, groups=table.location_ids
    )
    record = contract.training["grid_search"]
    assert record["grouped_by"] == "polygon" and record["folds"] == 3
    assert [c["params"] for c in record["candidates"]] == [{"n_neighbors": 1}, {"n_neighbors": 15}]
    best = max(record["candidates"], key=lambda c: c["mean_score"])
    assert record["best_params"] == best["params"]
    assert model.named_steps["model"].n_neighbors == best["params"]["n_neighbors"]
    assert model.named_steps["standardize"].mean_.shape == (12,)
    assert record["best_score"] > 0.7
    save_model(model, contract, tmp_path / "svm")
    again, _ = load_model(tmp_path / "svm")
    np.testing.assert_array_equal(
        model.predict_proba(table.features), again.predict_proba(table.features)
    )


def test_regression_forest_on_max_ndvi(tmp_path: Path) -> None:
    """eo-learn's MAX_NDVI layer (the yearly NDVI maximum over cloud-free dates) from the
    gap-filled 2017 series, scored on held-out 10 x 10 px blocks."""
    patch = slovenia()
    test = block_holdout(patch.blocks, 0.25, seed=0)
    train = np.flatnonzero(~test)[::3]
    spec = ModelConfig(
        estimator="sklearn.ensemble.RandomForestRegressor",
        params={"n_estimators": 30, "min_samples_leaf": 3},
    )
    model, contract = train_model(
        spec,
        patch.features[train],
        patch.max_ndvi[train],
        patch.feature_names,
        seed=0,
        task="regression",
        groups=patch.blocks[train],
    )
    assert contract.task == "regression" and contract.classes == ()
    predicted = model.predict(patch.features[test])
    assert r2_score(patch.max_ndvi[test], predicted) > 0.6
    save_model(model, contract, tmp_path / "reg")
    again, loaded = load_model(tmp_path / "reg")
    assert loaded.task == "regression"
    assert isinstance(again, CompiledForest)  # scikit-learn's own values, to the bit
    np.testing.assert_array_equal(predicted, again.estimator.predict(patch.features[test]))
    np.testing.assert_array_equal(again.predict(patch.features[test]), predicted)


@pytest.mark.parametrize(
    ("spec", "task", "field", "words"),
    [
        (ModelConfig(estimator="sklearn.ensemble.RandomForestRegressor"), "classification",
         "model.estimator", "is a regressor, but the run's task is classification"),
        (ModelConfig(), "regression", "model.estimator",
         "e.g. sklearn.ensemble.RandomForestRegressor"),
        (ModelConfig(estimator="sklearn.svm.SVC"), "classification", "model.estimator",
         "CalibratedClassifierCV"),
        (ModelConfig(estimator="sklearn.ensemble.RandomForest"), "classification",
         "model.estimator", "cannot be imported"),
        (ModelConfig(estimator="numpy.ndarray"), "classification", "model.estimator",
         "not an estimator class"),
        (ModelConfig(params={"n_trees": 10}), "classification", "model.params",
         "does not accept the parameters ['n_trees']"),
        (ModelConfig(grid_search={"param_grid": {"n_estimator": [10]}}), "classification",
         "model.grid_search.param_grid", "did you mean 'n_estimators'"),
        (ModelConfig(grid_search={"param_grid": {"max_depth": [2]}, "scoring": "acuracy"}),
         "classification", "model.grid_search.scoring", "not a scikit-learn scorer"),
    ],
)  # fmt: skip
def test_bad_estimator_specs_name_the_field(
    spec: ModelConfig, task: str, field: str, words: str
) -> None:
    patch = slovenia()
    with pytest.raises(ModelError) as err:
        train_model(
            spec,
            patch.features[:50],
            patch.lulc[:50] if task == "classification" else patch.max_ndvi[:50],
            patch.feature_names,
            seed=0,
            task=task,  # type: ignore[arg-type]
        )
    assert err.value.field == field
    assert words in str(err.value)


def test_bad_training_tables() -> None:
    patch = slovenia()
    X, names = patch.features[:20], patch.feature_names
    with pytest.raises(ModelError, match="expected \\(samples, 36\\)"):
        train_model(ModelConfig(), X, patch.lulc[:20], names[:-1], seed=0)
    with pytest.raises(ModelError, match="integer codes"):
        train_model(ModelConfig(), X, np.array(["a", "b"] * 10), names, seed=0)
    with pytest.raises(ModelError, match="1 NaN or infinite"):
        y = patch.max_ndvi[:20].copy()
        y[4] = np.nan
        spec = ModelConfig(estimator="sklearn.ensemble.RandomForestRegressor")
        train_model(spec, X, y, names, seed=0, task="regression")
    with pytest.raises(ModelError, match="needs at least 5 polygons"):
        spec = ModelConfig(grid_search={"param_grid": {"max_depth": [2, 3]}})
        train_model(spec, X, patch.lulc[:20], names, seed=0, groups=np.arange(20) % 3)


def test_skops_refuses_foreign_types(tmp_path: Path) -> None:
    from sklearn.ensemble import RandomForestClassifier
    from sklearn.preprocessing import FunctionTransformer

    forest = RandomForestClassifier(n_estimators=2).fit(np.eye(4), [0, 1, 0, 1])
    # A function from outside scikit-learn/numpy/scipy inside the model: refused on load.
    model = FunctionTransformer(json.dumps)
    import skops.io as sio

    sio.dump(model, tmp_path / "foreign.skops")
    with pytest.raises(ModelError, match=r"json\.dumps") as err:
        load_skops(tmp_path / "foreign.skops", "sklearn.preprocessing.FunctionTransformer")
    assert "joblib" in str(err.value)
    # The estimator's own package is trusted (here: numpy types inside a forest).
    sio.dump(forest, tmp_path / "forest.skops")
    load_skops(tmp_path / "forest.skops", "sklearn.ensemble.RandomForestClassifier")


def test_joblib_is_the_fallback_when_skops_would_not_load_the_model(tmp_path: Path) -> None:
    from sklearn.preprocessing import FunctionTransformer

    # math.log1p is outside the packages a .skops file may construct from: joblib instead.
    model = FunctionTransformer(math.log1p)
    (tmp_path / "m").mkdir()
    assert dump_estimator(model, tmp_path / "m") == "model.joblib"
    assert not (tmp_path / "m" / "model.skops").exists()
    assert joblib.load(tmp_path / "m" / "model.joblib").func(0.0) == 0.0
    # A lambda can be stored by neither.
    with pytest.raises(ModelError, match="cannot be saved") as err:
        dump_estimator(FunctionTransformer(lambda x: x), tmp_path / "m")
    assert "lambdas" in str(err.value)


def test_contracts_written_before_skops_still_load(tmp_path: Path) -> None:
    patch = slovenia()
    rows = np.isin(patch.lulc, SLOVENIA_CLASSES)
    spec = ModelConfig(params={"n_estimators": 3})
    model, _ = train_model(spec, patch.features[rows], patch.lulc[rows], patch.feature_names, 0)
    folder = tmp_path / "old"
    folder.mkdir()
    joblib.dump(model, folder / "model.joblib")
    old = {
        "estimator": spec.estimator,
        "params": spec.params_dict(),
        "feature_names": list(patch.feature_names),
        "classes": list(SLOVENIA_CLASSES),
        "sklearn_version": "1.5.0",
    }
    (folder / "model.json").write_text(json.dumps(old))
    again, contract = load_model(folder)
    assert contract.kind == "sklearn" and contract.versions == {"sklearn": "1.5.0"}
    np.testing.assert_array_equal(model.predict(patch.features), again.predict(patch.features))


def test_skops_imports_without_torch_and_leaves_it_importable() -> None:
    """``import_skops`` (what workers preload): no torch in a scikit-learn run's processes, and
    the array-API namespace it kept out imports afterwards (a fresh interpreter)."""
    code = (
        "import sys\n"
        "from pipeline.learn.sklearn_store import import_skops\n"
        "sio = import_skops()\n"
        "assert 'torch' not in sys.modules, 'torch imported'\n"
        "assert sio is sys.modules['skops.io']\n"
        "import sklearn.externals.array_api_compat.torch\n"
        "assert 'torch' in sys.modules\n"
    )
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=False)
    assert done.returncode == 0, done.stderr
