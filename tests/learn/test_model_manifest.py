"""The model section of the manifest: torch, grid search and external models load; malformed
sections are refused with the field, the value and a fix."""

from __future__ import annotations

import copy
from typing import Any

import pytest
import yaml

from pipeline.errors import ManifestError
from pipeline.manifest import RunManifest, parse_manifest
from tests.conftest import DEMO_DIR, DEMO_MANIFEST


def manifest_with(model: dict[str, Any], task: str = "classification") -> dict[str, Any]:
    data = yaml.safe_load(DEMO_MANIFEST.read_text())
    data["spec"]["model"] = copy.deepcopy(model)
    data["spec"]["task"] = task
    return data


def parse(data: dict[str, Any]) -> RunManifest:
    return parse_manifest(yaml.safe_dump(data), base_dir=DEMO_DIR, source="test.yaml")


def test_the_demo_model_section_is_unchanged() -> None:
    model = parse(yaml.safe_load(DEMO_MANIFEST.read_text())).spec.model
    assert model.kind == "sklearn"
    assert model.estimator == "sklearn.ensemble.RandomForestClassifier"
    assert model.params == {"n_estimators": 200, "min_samples_leaf": 1}
    assert model.standardize is None and model.grid_search is None and model.path is None


def test_a_torch_model() -> None:
    spec = parse(
        manifest_with(
            {
                "kind": "torch",
                "architecture": "ltae",
                "params": {"d_model": 64},
                "training": {"epochs": 50, "class_weights": "balanced", "device": "cpu"},
            }
        )
    ).spec
    assert spec.model.architecture == "ltae"
    assert spec.model.training.epochs == 50 and spec.model.training.patience == 10


def test_a_user_module_and_a_regression_forest() -> None:
    spec = parse(manifest_with({"kind": "torch", "architecture": "mypkg.nets:MyNet"})).spec
    assert spec.model.architecture == "mypkg.nets:MyNet"
    data = manifest_with(
        {
            "estimator": "sklearn.ensemble.RandomForestRegressor",
            "standardize": True,
            "grid_search": {"param_grid": {"max_depth": [5, None]}, "folds": 3},
        },
        task="regression",
    )
    data["spec"]["reference"] = {"path": "reference/lulc.gpkg", "value_field": "height"}
    data["spec"].pop("postprocess", None)  # the demo's map products need a label map
    spec = parse(data).spec
    assert spec.task == "regression"
    assert spec.model.grid_search is not None
    assert spec.model.grid_search.param_grid == {"max_depth": [5, None]}


def test_an_external_model_path_is_relative_to_the_manifest() -> None:
    spec = parse(manifest_with({"kind": "external", "path": "models/forest.skops"})).spec
    assert spec.model.path == str(DEMO_DIR / "models" / "forest.skops")


MALFORMED = [
    ({"kind": "torch"}, "spec.model", "needs an architecture"),
    ({"kind": "keras"}, "spec.model.kind", "'sklearn', 'torch', 'external' or 'torch_patch'"),
    ({"kind": "torch", "architecture": "temp cnn"}, "spec.model.architecture",
     "neither a built-in network nor an import path"),
    ({"architecture": "tempcnn"}, "spec.model", "architecture is only used by kind 'torch'"),
    ({"kind": "torch", "architecture": "mlp", "estimator": "sklearn.svm.SVC"}, "spec.model",
     "estimator is only used by kind 'sklearn'"),
    ({"training": {"epochs": 5}}, "spec.model", "training is only used by kind 'torch'"),
    ({"path": "m.skops"}, "spec.model", "path is only used by kind 'external'"),
    ({"kind": "external"}, "spec.model", "needs the path of the model"),
    ({"kind": "external", "path": "m.skops", "params": {"n_estimators": 3}}, "spec.model",
     "cannot change a model trained elsewhere"),
    ({"grid_search": {"param_grid": {}}}, "spec.model.grid_search.param_grid", "at least 1"),
    ({"grid_search": {"param_grid": {"max_depth": []}}}, "spec.model.grid_search.param_grid",
     "have no candidate value"),
    ({"grid_search": {"param_grid": {"max_depth": [3]}, "folds": 1}},
     "spec.model.grid_search.folds", "greater than or equal to 2"),
    ({"grid_search": {"param_grid": {"max_depth": 3}}},
     "spec.model.grid_search.param_grid.max_depth", "list"),
    ({"kind": "torch", "architecture": "mlp", "training": {"epochs": 0}},
     "spec.model.training.epochs", "greater than or equal to 1"),
    ({"kind": "torch", "architecture": "mlp", "training": {"batch_size": 1}},
     "spec.model.training.batch_size", "greater than or equal to 2"),
    ({"kind": "torch", "architecture": "mlp", "training": {"learning_rate": 0}},
     "spec.model.training.learning_rate", "greater than 0"),
    ({"kind": "torch", "architecture": "mlp", "training": {"class_weights": "inverse"}},
     "spec.model.training.class_weights", "'none' or 'balanced'"),
    ({"kind": "torch", "architecture": "mlp", "training": {"device": "gpu"}},
     "spec.model.training.device", "'auto', 'cpu' or 'cuda'"),
    ({"kind": "torch", "architecture": "mlp", "training": {"patiense": 3}},
     "spec.model.training.patiense", "did you mean 'patience'"),
    ({"standardise": True}, "spec.model.standardise", "did you mean 'standardize'"),
    ({"kind": "torch_patch"}, "spec.model", "torch_patch' needs an architecture"),
    ({"kind": "torch_patch", "architecture": "tempcnn"}, "spec.model",
     "architecture 'tempcnn' is a network of kind 'torch'"),
    ({"kind": "torch", "architecture": "utae"}, "spec.model",
     "architecture 'utae' is a network of kind 'torch_patch'"),
    ({"kind": "torch", "architecture": "mlp", "patch": {"size": 16}}, "spec.model",
     "patch is only used by kind 'torch_patch'"),
    ({"kind": "torch_patch", "architecture": "utae", "patch": {"size": 18}},
     "spec.model.patch.size", "multiple of 4"),
    ({"kind": "torch_patch", "architecture": "utae", "patch": {"size": 16, "stride": 20}},
     "spec.model.patch", "stride 20 is larger than the patch size 16"),
]  # fmt: skip


@pytest.mark.parametrize(("model", "field", "words"), MALFORMED)
def test_malformed_model_sections(model: dict[str, Any], field: str, words: str) -> None:
    with pytest.raises(ManifestError) as err:
        parse(manifest_with(model))
    message = str(err.value)
    assert field in message and words in message
    assert "Fix:" in message


def test_a_misspelt_task() -> None:
    with pytest.raises(ManifestError, match="'classification', 'regression' or 'extraction'"):
        parse(manifest_with({}, task="regresion"))
