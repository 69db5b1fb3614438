"""The learn stage's configs: frozen, hashable, picklable, and digested as the manifest's pydantic
sections they replace (run stores made before them keep their finished units)."""

from __future__ import annotations

import pickle
from typing import Any

import pytest

from pipeline.learn.config import FrozenMap, GridSearchConfig, ModelConfig, TrainingConfig
from pipeline.manifest import ModelSpec
from pipeline.run.units import canonical, content_hash

SECTIONS: list[dict[str, Any]] = [
    {},
    {
        "estimator": "sklearn.svm.SVC",
        "params": {"C": 2.0, "class_weight": {"1": 2}, "nested": [1, [2, 3]]},
        "standardize": True,
        "grid_search": {"param_grid": {"C": [1, 10], "kernel": ["rbf"]}, "folds": 3},
    },
    {
        "kind": "torch",
        "architecture": "tempcnn",
        "params": {"filters": 8},
        "training": {"epochs": 5, "device": "cpu", "class_weights": "balanced"},
    },
    {"kind": "external", "path": "/models/rf"},
    {"kind": "torch_patch", "architecture": "utae", "patch": {"size": 16, "stride": 8}},
    {"inference": "sklearn"},
    {"kind": "external", "path": "/models/rf", "inference": "compiled"},
]


def _as_before_patches(spec: ModelSpec) -> Any:
    """The section's canonical form as it was before ``patch`` and ``inference`` existed when
    they are not set: the run stores made then keep their digests."""
    found = canonical(spec)
    if spec.patch is None:
        del found["patch"]
    if spec.inference == "auto":
        del found["inference"]
    return found


def _pre_inference(spec: ModelSpec) -> dict[str, Any]:
    """The canonical form written out as it was before ``patch`` and ``inference``."""
    dump = spec.model_dump(mode="json", exclude={"patch", "inference"})
    return {"__type__": "ModelSpec", **dump}


@pytest.mark.parametrize("section", SECTIONS)
def test_a_config_digests_as_the_manifest_section_it_replaces(section: dict[str, Any]) -> None:
    spec = ModelSpec(**section)
    config = ModelConfig.from_mapping(spec.model_dump())
    assert canonical(config) == _as_before_patches(spec)
    assert content_hash(config, "x") == content_hash(_as_before_patches(spec), "x")
    if spec.patch is None and spec.inference == "auto":  # the digest of every run made before
        assert content_hash(config, "x") == content_hash(_pre_inference(spec), "x")
    assert config.params_dict() == spec.model_dump()["params"]


@pytest.mark.parametrize("section", SECTIONS)
def test_a_config_is_frozen_hashable_and_picklable(section: dict[str, Any]) -> None:
    config = ModelConfig.from_mapping(ModelSpec(**section).model_dump())
    assert pickle.loads(pickle.dumps(config)) == config
    assert hash(pickle.loads(pickle.dumps(config))) == hash(config)
    with pytest.raises(AttributeError):
        config.kind = "torch"  # type: ignore[misc]
    assert isinstance(config.training, TrainingConfig)
    if config.grid_search is not None:
        assert isinstance(config.grid_search, GridSearchConfig)
        assert isinstance(config.grid_search.param_grid, FrozenMap)


def test_params_print_as_the_dict_they_stand_for() -> None:
    config = ModelConfig(params={"n_estimators": 200, "grid": [1, {"a": 2}]})
    assert f"{config.params}" == "{'n_estimators': 200, 'grid': [1, {'a': 2}]}"
    assert config.params["grid"] == (1, FrozenMap({"a": 2}))


def test_unknown_fields_are_refused() -> None:
    with pytest.raises(TypeError, match="no field"):
        ModelConfig.from_mapping({"kind": "sklearn", "estimatr": "x"})
