"""learn stage: one entry point for every model kind.

    model, contract = train_model(config.model, X, y, feature_names, seed, task=..., groups=...)
    save_model(model, contract, folder)            # a folder: weights + model.json
    model, contract = load_model(folder)           # .predict(X), .predict_proba(X), .classes_
    check_features(contract, cube_feature_names)   # refuses another cube's features

Each kind of model (``ModelConfig.kind``) is a :class:`~pipeline.learn.learner.Learner` in the
registry (:mod:`pipeline.learn.registry`): scikit-learn estimators (``sklearn``) come back as
they are (an estimator, or a Pipeline with ``standardize``), torch networks (``torch``) as a
``TorchModel`` with the same prediction interface, models trained elsewhere (``external``)
through ``load_external_model``. torch is imported only when a torch model is used.

The functions here take a :class:`~pipeline.learn.config.ModelConfig`; the manifest's pydantic
``ModelSpec`` (anything whose ``model_dump()`` gives its fields) is turned into one at the door.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from pipeline.learn.config import GridSearchConfig, ModelConfig, TrainingConfig
from pipeline.learn.contract import (
    CONTRACT_FILE,
    ModelContract,
    Task,
    check_features,
    read_contract,
    seasonal_features,
)
from pipeline.learn.external import ExternalLearner
from pipeline.learn.learner import BlockPrediction, Learner, PixelLearner, model_input
from pipeline.learn.registry import learner_for, learner_kinds, register_learner

__all__ = [
    "CONTRACT_FILE",
    "BlockPrediction",
    "GridSearchConfig",
    "Learner",
    "ModelConfig",
    "ModelContract",
    "PixelLearner",
    "TrainingConfig",
    "as_model_config",
    "check_features",
    "check_model_spec",
    "learner_for",
    "learner_kinds",
    "load_contract",
    "load_external_model",
    "load_model",
    "model_input",
    "register_learner",
    "save_model",
    "seasonal_features",
    "train_model",
]


def as_model_config(config: Any) -> ModelConfig:
    """``config`` as a ModelConfig: as it is, or from an object whose ``model_dump()`` gives the
    same fields (the manifest's ModelSpec, at the edges that still hold one)."""
    if isinstance(config, ModelConfig):
        return config
    dump = getattr(config, "model_dump", None)
    if callable(dump):
        return ModelConfig.from_mapping(dump())
    raise TypeError(f"expected a ModelConfig, got {type(config).__name__}")


def train_model(
    spec: ModelConfig,
    features: np.ndarray,
    targets: np.ndarray,
    feature_names: Sequence[str],
    seed: int,
    *,
    task: Task = "classification",
    groups: np.ndarray | None = None,
) -> tuple[Any, ModelContract]:
    """Fit the model of ``spec``; ``groups`` (polygon ids) keep polygons whole in any split."""
    config = as_model_config(spec)
    return learner_for(config.kind).fit(
        config, features, targets, feature_names, seed, task=task, groups=groups
    )


def load_external_model(spec: ModelConfig, task: Task) -> tuple[Any, ModelContract]:
    """The model of a ``kind: external`` config, checked against the run's task."""
    return ExternalLearner().model(as_model_config(spec), task)


def save_model(model: Any, contract: ModelContract, folder: Path) -> None:
    """Write ``folder`` atomically: the weights and ``model.json``."""
    learner_for(contract.kind).save(model, contract, folder)


def load_contract(folder: Path) -> ModelContract:
    return read_contract(folder)


def load_model(folder: Path, *, device: str = "auto") -> tuple[Any, ModelContract]:
    """The model saved in ``folder`` (torch models on ``device``: 'auto' uses a GPU if any)."""
    contract = read_contract(folder)
    return learner_for(contract.kind).load(folder, contract, device=device), contract


def check_model_spec(spec: ModelConfig, task: Task, feature_names: Sequence[str]) -> None:
    """Everything about the model that can be checked before any pixel is read: the estimator or
    network builds for these features, suits the task, and an external model expects exactly
    these features. Raises ModelError naming the key to change."""
    config = as_model_config(spec)
    learner_for(config.kind).check(config, task, feature_names)
