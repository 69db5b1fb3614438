"""scikit-learn estimators by import path, trained on sample tables, saved with their contract.

A saved model is two files: the fitted estimator (joblib) and ``model.json``, its contract: the
feature names in order and the class codes. Prediction refuses a cube whose features differ.
"""

from __future__ import annotations

import importlib
import json
from collections.abc import Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import joblib
import numpy as np
import sklearn

from pipeline.errors import ModelError
from pipeline.manifest import ModelSpec
from pipeline.storage import atomic_path, write_text_atomic

MODEL_FILE = "model.joblib"
CONTRACT_FILE = "model.json"


@dataclass(frozen=True)
class ModelContract:
    estimator: str
    params: dict[str, Any]
    feature_names: tuple[str, ...]
    classes: tuple[int, ...]
    sklearn_version: str


def import_estimator(path: str) -> type:
    """The class at ``module.Class`` or ``module:Class``."""
    module_name, _, attr = path.replace(":", ".").rpartition(".")
    try:
        module = importlib.import_module(module_name)
        cls = getattr(module, attr)
    except (ImportError, AttributeError, ValueError):
        raise ModelError(
            f"estimator {path!r} cannot be imported",
            fix="give a full import path such as sklearn.ensemble.RandomForestClassifier",
            field="spec.model.estimator",
        ) from None
    if not isinstance(cls, type) or not hasattr(cls, "fit"):
        raise ModelError(
            f"{path!r} is not an estimator class (no fit method)",
            fix="give the import path of a scikit-learn compatible classifier class",
            field="spec.model.estimator",
        )
    return cls


def build_estimator(spec: ModelSpec, seed: int) -> Any:
    cls = import_estimator(spec.estimator)
    params = dict(spec.params)
    try:
        estimator = cls(**params)
    except TypeError as exc:
        raise ModelError(
            f"{spec.estimator} does not accept the parameters {sorted(params)}: {exc}",
            fix="check spec.model.params against the estimator's documentation",
            field="spec.model.params",
        ) from None
    if not hasattr(estimator, "predict_proba"):
        raise ModelError(
            f"{spec.estimator} has no predict_proba, needed for the confidence map",
            fix="use a probabilistic classifier (e.g. SVC needs probability: true)",
            field="spec.model.estimator",
        )
    # Seed every estimator that takes one, unless the user fixed it.
    if "random_state" in estimator.get_params() and "random_state" not in params:
        estimator.set_params(random_state=seed)
    return estimator


def train(
    spec: ModelSpec,
    features: np.ndarray,
    labels: np.ndarray,
    feature_names: Sequence[str],
    seed: int,
) -> tuple[Any, ModelContract]:
    estimator = build_estimator(spec, seed)
    try:
        estimator.fit(features, labels)
    except ValueError as exc:
        raise ModelError(
            f"{spec.estimator} could not be trained: {exc}",
            fix="check spec.model.params and the training samples",
            field="spec.model",
        ) from None
    contract = ModelContract(
        estimator=spec.estimator,
        params=dict(spec.params),
        feature_names=tuple(feature_names),
        classes=tuple(int(c) for c in estimator.classes_),
        sklearn_version=sklearn.__version__,
    )
    return estimator, contract


def save_model(estimator: Any, contract: ModelContract, folder: Path) -> None:
    folder.mkdir(parents=True, exist_ok=True)
    with atomic_path(folder / MODEL_FILE) as tmp:
        joblib.dump(estimator, tmp)
    write_text_atomic(folder / CONTRACT_FILE, json.dumps(asdict(contract), indent=2, default=str))


def load_contract(folder: Path) -> ModelContract:
    data = json.loads((folder / CONTRACT_FILE).read_text())
    return ModelContract(
        estimator=data["estimator"],
        params=data["params"],
        feature_names=tuple(data["feature_names"]),
        classes=tuple(data["classes"]),
        sklearn_version=data["sklearn_version"],
    )


def load_model(folder: Path) -> tuple[Any, ModelContract]:
    return joblib.load(folder / MODEL_FILE), load_contract(folder)


def check_features(contract: ModelContract, feature_names: Sequence[str]) -> None:
    """Refuse to apply a model to a cube whose features are not exactly the model's."""
    if tuple(feature_names) == contract.feature_names:
        return
    missing = [f for f in contract.feature_names if f not in set(feature_names)]
    extra = [f for f in feature_names if f not in set(contract.feature_names)]
    detail = []
    if missing:
        detail.append(f"missing {missing[:5]}{'...' if len(missing) > 5 else ''}")
    if extra:
        detail.append(f"unexpected {extra[:5]}{'...' if len(extra) > 5 else ''}")
    if not detail:
        detail.append("same features in another order")
    raise ModelError(
        f"the model expects {len(contract.feature_names)} features, the cube has "
        f"{len(feature_names)} ({'; '.join(detail)})",
        fix="build the cube with the sensors, bands, indices and period the model was trained on",
        field="spec.model",
    )
