"""scikit-learn estimators by import path: build, optionally standardize and grid-search, fit, save.

Any estimator class with ``fit`` works (RandomForest, SVC, KNeighbors, ExtraTrees,
HistGradientBoosting, a third-party scikit-learn compatible class...). With ``standardize`` it is
put behind a ``StandardScaler`` in a ``Pipeline``; with ``grid_search`` the parameter grid is
cross-validated with folds grouped by polygon (pixels of one polygon are nearly identical: a
pixel-level split would reward memorizing fields) and the best candidate is refitted on all samples.

A saved model is a folder (``pipeline.learn.sklearn_store``): the fitted estimator, its contract
and, for a forest, the compiled predictor that ``load`` uses (``pipeline.learn.compiled``;
``model.inference``).
"""

from __future__ import annotations

import contextlib
import difflib
import importlib
import inspect
import warnings
from collections.abc import Iterator, Mapping, Sequence
from pathlib import Path
from typing import Any

import joblib
import numpy as np
import sklearn
from sklearn.metrics import get_scorer
from sklearn.model_selection import (
    GridSearchCV,
    GroupKFold,
    KFold,
    StratifiedGroupKFold,
    StratifiedKFold,
)
from sklearn.pipeline import Pipeline
from sklearn.preprocessing import StandardScaler

from pipeline.errors import ModelError
from pipeline.learn import compiled
from pipeline.learn.config import GridSearchConfig, ModelConfig, thaw
from pipeline.learn.contract import CONTRACT_FILE, ModelContract, Task, check_features
from pipeline.learn.data import check_training_data
from pipeline.learn.learner import PixelLearner
from pipeline.learn.preflight import check_learner
from pipeline.learn.sklearn_store import (  # the saved form; names kept importable from here
    JOBLIB_FILE,
    MODEL_FILE,
    SKOPS_FILE,
    TRUSTED_PACKAGES,
    dump_estimator,
    inference_of,
    load_contract,
    load_estimator,
    load_model,
    load_skops,
    save_model,
)

__all__ = [
    "CONTRACT_FILE",
    "JOBLIB_FILE",
    "MODEL_FILE",
    "SKOPS_FILE",
    "TRUSTED_PACKAGES",
    "ModelContract",
    "SklearnLearner",
    "build_estimator",
    "check_estimator_spec",
    "check_features",
    "dump_estimator",
    "import_estimator",
    "inference_of",
    "load_contract",
    "load_estimator",
    "load_model",
    "load_skops",
    "save_model",
    "train",
]

MODEL_STEP = "model"  # name of the estimator's step when it is standardized


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
            field="model.estimator",
        ) from None
    if not isinstance(cls, type) or not hasattr(cls, "fit"):
        raise ModelError(
            f"{path!r} is not an estimator class (no fit method)",
            fix="give the import path of a scikit-learn compatible estimator class",
            field="model.estimator",
        )
    return cls


def estimator_type(estimator: Any) -> str | None:
    """'classifier', 'regressor', or None when the estimator does not say."""
    try:
        kind = sklearn.utils.get_tags(estimator).estimator_type
    except (AttributeError, TypeError):
        kind = getattr(estimator, "_estimator_type", None)
    return kind if kind in ("classifier", "regressor") else None


def check_task(estimator: Any, name: str, task: Task, field: str) -> None:
    kind = estimator_type(estimator)
    wanted = "classifier" if task == "classification" else "regressor"
    if kind is not None and kind != wanted:
        example = (
            "sklearn.ensemble.RandomForestClassifier"
            if task == "classification"
            else "sklearn.ensemble.RandomForestRegressor"
        )
        raise ModelError(
            f"{name} is a {kind}, but the run's task is {task}",
            fix=f"give a {wanted} (e.g. {example}), or set task to match the estimator",
            field=field,
        )
    if task == "classification" and not hasattr(estimator, "predict_proba"):
        raise ModelError(
            f"{name} has no predict_proba, needed for the confidence map",
            fix="use a probabilistic classifier, or wrap this one in "
            "sklearn.calibration.CalibratedClassifierCV (SVC: probability: true)",
            field=field,
        )
    if not hasattr(estimator, "predict"):
        raise ModelError(
            f"{name} has no predict method", fix="give a fitted estimator", field=field
        )


def _unknown_parameters(names: Sequence[str], known: Sequence[str]) -> list[str]:
    hints = []
    for name in names:
        if name not in known:
            close = difflib.get_close_matches(name, known, n=1)
            hints.append(f"{name!r}" + (f" (did you mean {close[0]!r}?)" if close else ""))
    return hints


def build_estimator(config: ModelConfig, seed: int, task: Task = "classification") -> Any:
    """The unfitted estimator (in a Pipeline behind a StandardScaler with ``standardize``)."""
    cls = import_estimator(config.estimator)
    params = config.params_dict()
    try:
        estimator = cls(**params)
    except TypeError as exc:
        known = list(inspect.signature(cls).parameters)
        unknown = [n for n in params if n not in known] or sorted(params)
        hints = _unknown_parameters(unknown, known)
        raise ModelError(
            f"{config.estimator} does not accept the parameters {unknown}: {exc}",
            fix=f"check model.params against the estimator's documentation ({', '.join(hints)})",
            field="model.params",
        ) from None
    validate = getattr(estimator, "_validate_params", None)
    if callable(validate):  # scikit-learn checks its own parameters' types and ranges
        try:
            validate()
        except (TypeError, ValueError) as exc:
            raise ModelError(
                f"{config.estimator} refuses params {params}: {exc}",
                fix="give values the estimator accepts in model.params",
                field="model.params",
            ) from None
    check_task(estimator, config.estimator, task, "model.estimator")
    # Seed every estimator that takes one, unless the user fixed it.
    takes_seed = hasattr(estimator, "get_params") and "random_state" in estimator.get_params()
    if takes_seed and "random_state" not in params:
        estimator.set_params(random_state=seed)
    if config.standardize:
        return Pipeline([("standardize", StandardScaler()), (MODEL_STEP, estimator)])
    return estimator


def _final_step(estimator: Any) -> Any:
    return estimator.steps[-1][1] if isinstance(estimator, Pipeline) else estimator


def _in_dask_worker() -> bool:
    try:
        from distributed import get_worker

        get_worker()
    except (ImportError, ValueError):
        return False
    return True


@contextlib.contextmanager
def _parallel_on_the_cluster(
    estimator: Any, fixed: Mapping[str, Any] | None = None
) -> Iterator[None]:
    """Inside a dask worker (a run's train unit), the joblib-parallel part of ``fit`` (a forest's
    trees, a grid search's folds) runs as tasks on every worker of the cluster, not in the one
    thread the unit holds: a run trains in the time of its cluster, not of one core.

    The result is the same model: scikit-learn draws each tree's seed (and each fold) before it
    dispatches the work, so where it runs does not change a number. ``n_jobs`` is put back
    after the fit, so the saved model predicts as configured. An ``n_jobs`` the user set (in
    ``fixed``) is kept, and so is a fit outside a worker.
    """
    takes_jobs = hasattr(estimator, "get_params") and "n_jobs" in estimator.get_params(deep=False)
    if not takes_jobs or "n_jobs" in (fixed or {}) or not _in_dask_worker():
        yield
        return
    configured = estimator.get_params(deep=False)["n_jobs"]
    estimator.set_params(n_jobs=-1)
    try:
        with joblib.parallel_config(backend="dask"):
            yield
    finally:
        estimator.set_params(n_jobs=configured)


def _param_grid(
    config: ModelConfig, estimator: Any, grid: GridSearchConfig
) -> dict[str, list[Any]]:
    """The grid with the estimator's step prefix; unknown parameter names are refused."""
    prefix = f"{MODEL_STEP}__" if isinstance(estimator, Pipeline) else ""
    final = _final_step(estimator)
    known = sorted(final.get_params(deep=False)) if hasattr(final, "get_params") else []
    unknown = _unknown_parameters(list(grid.param_grid), known)
    if unknown:
        raise ModelError(
            f"{config.estimator} has no parameter(s) {', '.join(unknown)}",
            fix=f"use parameters of the estimator in model.grid_search.param_grid: "
            f"{', '.join(known)}",
            field="model.grid_search.param_grid",
        )
    return {f"{prefix}{name}": thaw(values) for name, values in grid.param_grid.items()}


def _scoring(grid: GridSearchConfig, task: Task) -> str:
    scoring = grid.scoring or ("accuracy" if task == "classification" else "r2")
    try:
        get_scorer(scoring)
    except ValueError:
        raise ModelError(
            f"{scoring!r} is not a scikit-learn scorer name",
            fix="use a name such as accuracy, balanced_accuracy, f1_macro (classification) or "
            "r2, neg_mean_absolute_error (regression)",
            field="model.grid_search.scoring",
        ) from None
    return scoring


def _folds(grid: GridSearchConfig, task: Task, groups: np.ndarray | None, seed: int) -> Any:
    if groups is None:
        if task == "classification":
            return StratifiedKFold(grid.folds, shuffle=True, random_state=seed)
        return KFold(grid.folds, shuffle=True, random_state=seed)
    n_groups = len(np.unique(groups))
    if n_groups < grid.folds:
        raise ModelError(
            f"grid search with {grid.folds} folds grouped by polygon needs at least {grid.folds} "
            f"polygons, the training samples come from {n_groups}",
            fix="lower model.grid_search.folds or add reference polygons",
            field="model.grid_search.folds",
        )
    if task == "classification":
        return StratifiedGroupKFold(grid.folds, shuffle=True, random_state=seed)
    return GroupKFold(grid.folds, shuffle=True, random_state=seed)


def _grid_search(
    config: ModelConfig,
    grid: GridSearchConfig,
    estimator: Any,
    features: np.ndarray,
    targets: np.ndarray,
    groups: np.ndarray | None,
    seed: int,
    task: Task,
) -> tuple[Any, dict[str, Any]]:
    param_grid = _param_grid(config, estimator, grid)
    scoring = _scoring(grid, task)
    search = GridSearchCV(
        estimator, param_grid, scoring=scoring, cv=_folds(grid, task, groups, seed), refit=True
    )
    with _parallel_on_the_cluster(search), warnings.catch_warnings():
        # StratifiedGroupKFold warns when a class has fewer polygons than folds; the record below
        # keeps the per-candidate scores, which show the consequence.
        warnings.filterwarnings("ignore", message="The least populated class", category=UserWarning)
        search.fit(features, targets, groups=groups)
    prefix = f"{MODEL_STEP}__"
    results = search.cv_results_
    record = {
        "scoring": scoring,
        "folds": grid.folds,
        "grouped_by": "polygon" if groups is not None else "sample",
        "best_params": {k.removeprefix(prefix): v for k, v in search.best_params_.items()},
        "best_score": float(search.best_score_),
        "candidates": [
            {
                "params": {k.removeprefix(prefix): v for k, v in params.items()},
                "mean_score": float(mean),
                "std_score": float(std),
            }
            for params, mean, std in zip(
                results["params"],
                results["mean_test_score"],
                results["std_test_score"],
                strict=True,
            )
        ],
    }
    return search.best_estimator_, record


def train(
    config: ModelConfig,
    features: np.ndarray,
    labels: np.ndarray,
    feature_names: Sequence[str],
    seed: int,
    *,
    task: Task = "classification",
    groups: np.ndarray | None = None,
) -> tuple[Any, ModelContract]:
    """Fit the estimator of ``config`` (after a grid search when one is configured)."""
    labels = np.asarray(labels)
    check_training_data(features, labels, feature_names, groups, task)
    if task == "classification":
        labels = labels.astype(np.int64)
    estimator = build_estimator(config, seed, task)
    record: dict[str, Any] = {"samples": int(features.shape[0])}
    try:
        if config.grid_search is not None:
            estimator, record["grid_search"] = _grid_search(
                config, config.grid_search, estimator, features, labels, groups, seed, task
            )
        else:
            with _parallel_on_the_cluster(_final_step(estimator), config.params):
                estimator.fit(features, labels)
    except ValueError as exc:
        raise ModelError(
            f"{config.estimator} could not be trained: {exc}",
            fix="check model.params and the training samples",
            field="model",
        ) from None
    classes = tuple(int(c) for c in estimator.classes_) if task == "classification" else ()
    contract = ModelContract(
        estimator=config.estimator,
        params=config.params_dict(),
        feature_names=tuple(feature_names),
        classes=classes,
        kind="sklearn",
        task=task,
        versions={"sklearn": sklearn.__version__},
        config={"standardize": bool(config.standardize), **inference_record(config)},
        training=record,
    )
    return estimator, contract


def inference_record(config: ModelConfig) -> dict[str, str]:
    """What the contract records of ``model.inference`` (nothing at the default, 'auto': the
    contracts of existing runs stay as they were)."""
    return {} if config.inference == "auto" else {"inference": config.inference}


def check_estimator_spec(config: ModelConfig, task: Task) -> None:
    """Build (without fitting) what ``config`` describes, so bad configs fail before any work."""
    estimator = build_estimator(config, 0, task)
    if config.inference == "compiled" and not compiled.supports(estimator):
        raise ModelError(
            f"inference: compiled does not support {config.estimator}"
            + (" behind standardize" if isinstance(estimator, Pipeline) else ""),
            fix="use a random forest or extra trees estimator without standardize, or set "
            "model.inference to auto (compiled where supported) or sklearn",
            field="model.inference",
        )
    if config.grid_search is not None:
        _param_grid(config, estimator, config.grid_search)
        _scoring(config.grid_search, task)


class SklearnLearner(PixelLearner):
    """``kind: sklearn``: a scikit-learn compatible estimator by import path, per pixel."""

    kind = "sklearn"

    def check(self, config: ModelConfig, task: Task, feature_names: Sequence[str]) -> None:
        check_learner(config, task, feature_names, lambda c, t, _names: check_estimator_spec(c, t))

    def fit(
        self,
        config: ModelConfig,
        features: np.ndarray,
        targets: np.ndarray,
        feature_names: Sequence[str],
        seed: int,
        *,
        task: Task,
        groups: np.ndarray | None,
    ) -> tuple[Any, ModelContract]:
        return train(config, features, targets, feature_names, seed, task=task, groups=groups)

    def save(self, model: Any, contract: ModelContract, folder: Path) -> None:
        save_model(model, contract, folder)

    def load(self, folder: Path, contract: ModelContract, *, device: str = "auto") -> Any:
        """The estimator, predicting through the compiled engine where ``model.inference``
        allows and the estimator is supported (:mod:`pipeline.learn.compiled`)."""
        estimator = load_estimator(folder, contract)
        if inference_of(contract) == "sklearn":
            return estimator
        found = compiled.compiled_or_none(estimator)
        return estimator if found is None else found
