"""learn stage: one entry point for every model kind.

    model, contract = train_model(spec.model, X, y, feature_names, seed, task=..., groups=...)
    save_model(model, contract, folder)            # a folder: weights + model.json
    model, contract = load_model(folder)           # .predict(X), .predict_proba(X), .classes_
    check_features(contract, cube_feature_names)   # refuses another cube's features

scikit-learn estimators (``kind: sklearn``) come back as they are (an estimator, or a Pipeline
with ``standardize``); torch networks (``kind: torch``) as a ``TorchModel`` with the same
prediction interface; models trained elsewhere (``kind: external``) through
``load_external_model``. torch is imported only when a torch model is used.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from pipeline.errors import ModelError
from pipeline.learn import sklearn as sklearn_models
from pipeline.learn.contract import (
    CONTRACT_FILE,
    ModelContract,
    Task,
    check_features,
    read_contract,
)
from pipeline.learn.external import load_external_model as _load_external
from pipeline.manifest import ModelSpec

__all__ = [
    "CONTRACT_FILE",
    "ModelContract",
    "check_features",
    "check_model_spec",
    "load_contract",
    "load_external_model",
    "load_model",
    "model_input",
    "save_model",
    "train_model",
]


def train_model(
    spec: ModelSpec,
    features: np.ndarray,
    targets: np.ndarray,
    feature_names: Sequence[str],
    seed: int,
    *,
    task: Task = "classification",
    groups: np.ndarray | None = None,
) -> tuple[Any, ModelContract]:
    """Fit the model of ``spec``; ``groups`` (polygon ids) keep polygons whole in any split."""
    if spec.kind == "torch":
        from pipeline.learn.torch import fit_network

        return fit_network(spec, features, targets, feature_names, seed, task=task, groups=groups)
    if spec.kind == "external":
        raise ModelError(
            "an external model is used as it is, not trained",
            fix="call load_external_model for kind external",
            field="spec.model.kind",
        )
    return sklearn_models.train(
        spec, features, targets, feature_names, seed, task=task, groups=groups
    )


def load_external_model(spec: ModelSpec, task: Task) -> tuple[Any, ModelContract]:
    """The model of a ``kind: external`` spec, checked against the run's task."""
    if spec.kind != "external" or not spec.path:
        raise ModelError(
            f"spec.model.kind is {spec.kind!r}, not 'external'",
            fix="set kind: external and path to the model",
            field="spec.model.kind",
        )
    return _load_external(spec.path, task)


def save_model(model: Any, contract: ModelContract, folder: Path) -> None:
    """Write ``folder`` atomically: the weights and ``model.json``."""
    if contract.kind == "torch":
        from pipeline.learn.torch import save_torch_model

        save_torch_model(model, contract, folder)
    else:
        sklearn_models.save_model(model, contract, folder)


def load_contract(folder: Path) -> ModelContract:
    return read_contract(folder)


def load_model(folder: Path, *, device: str = "auto") -> tuple[Any, ModelContract]:
    """The model saved in ``folder`` (torch models on ``device``: 'auto' uses a GPU if any)."""
    contract = read_contract(folder)
    if contract.kind == "torch":
        from pipeline.learn.torch import load_torch_model

        return load_torch_model(folder, contract, device=device)
    return sklearn_models.load_estimator(folder, contract), contract


def check_model_spec(spec: ModelSpec, task: Task, feature_names: Sequence[str]) -> None:
    """Everything about the model that can be checked before any pixel is read: the estimator or
    network builds for these features, suits the task, and an external model expects exactly
    these features. Raises ModelError naming the field to change."""
    if spec.kind == "sklearn":
        sklearn_models.check_estimator_spec(spec, task)
    elif spec.kind == "torch":
        from pipeline.learn.torch import check_network_spec

        check_network_spec(spec, task, feature_names)
    else:
        _model, contract = load_external_model(spec, task)
        check_features(contract, feature_names)


def model_input(model: Any, features: np.ndarray) -> Any:
    """What the model's predict methods take: a DataFrame for estimators fitted on named columns
    (their names were checked against the cube's), else the array itself."""
    names = getattr(model, "feature_names_in_", None)
    if names is None:
        return features
    return pd.DataFrame(features, columns=list(names), copy=False)
