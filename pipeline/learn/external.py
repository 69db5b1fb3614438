"""Models trained elsewhere, used for prediction only.

Accepted: a sitsflow model folder (``model.json`` beside the weights: its contract names the
features), or a scikit-learn estimator file (``.skops``, or ``.joblib``/``.pkl`` from a source you
trust: unpickling runs code) fitted on a pandas DataFrame, whose ``feature_names_in_`` are then the
features it expects. An estimator fitted on a bare array records only a feature count; two cubes
with the same count but other bands or dates would give a wrong map without any error, so such a
file is refused rather than guessed at.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import replace
from pathlib import Path
from typing import Any

import joblib
import numpy as np
import sklearn
from sklearn.exceptions import NotFittedError
from sklearn.utils.validation import check_is_fitted

from pipeline.errors import ModelError
from pipeline.learn.compiled import unwrap
from pipeline.learn.config import ModelConfig
from pipeline.learn.contract import (
    CONTRACT_FILE,
    ModelContract,
    Task,
    check_features,
    read_contract,
)
from pipeline.learn.learner import PixelLearner
from pipeline.learn.sklearn import check_task, load_skops

FIELD = "model.path"
PICKLE_SUFFIXES = (".joblib", ".pkl", ".pickle")


def _load_file(path: Path) -> Any:
    if path.suffix == ".skops":
        return load_skops(path, "sklearn", field=FIELD)
    if path.suffix in PICKLE_SUFFIXES:
        try:
            return joblib.load(path)
        except Exception as exc:  # unpickling can fail in many ways, all meaning "not usable"
            raise ModelError(
                f"{str(path)!r} cannot be loaded ({type(exc).__name__}: {exc})",
                fix="check that the file is a joblib/pickle dump made with compatible library "
                "versions",
                field=FIELD,
            ) from None
    raise ModelError(
        f"{str(path)!r} is neither a sitsflow model folder nor a .skops/.joblib/.pkl file",
        fix="give a model folder with model.json, or a scikit-learn estimator file",
        field=FIELD,
    )


def _estimator_contract(estimator: Any, path: Path, task: Task) -> ModelContract:
    name = f"{type(estimator).__module__}.{type(estimator).__qualname__}"
    check_task(estimator, name, task, FIELD)
    try:
        check_is_fitted(estimator)
    except (NotFittedError, TypeError):
        raise ModelError(
            f"the {name} in {str(path)!r} is not fitted",
            fix="save the estimator after calling fit",
            field=FIELD,
        ) from None
    names = getattr(estimator, "feature_names_in_", None)
    if names is None:
        count = getattr(estimator, "n_features_in_", "an unknown number of")
        raise ModelError(
            f"the {name} in {str(path)!r} was fitted on a plain array: it records {count} "
            "features but not their names, so sitsflow cannot check that they are the cube's",
            fix="fit it on a pandas DataFrame whose columns are the cube's feature names "
            "(<sensor>_<variable>_<YYYYMMDD>, e.g. s2_ndvi_20170101), or save it with "
            f"pipeline.learn.save_model, which writes the names to {CONTRACT_FILE}",
            field=FIELD,
        )
    feature_names = tuple(str(n) for n in names)
    classes: tuple[int, ...] = ()
    if task == "classification":
        raw = np.asarray(estimator.classes_)
        if raw.dtype.kind not in "iu" and not (raw.dtype.kind == "f" and np.all(raw % 1 == 0)):
            raise ModelError(
                f"the {name} in {str(path)!r} predicts class names {raw[:4].tolist()}, "
                "not integer class codes",
                fix="refit it with the integer class codes of the reference data as labels",
                field=FIELD,
            )
        classes = tuple(int(c) for c in raw)
    return ModelContract(
        estimator=name,
        params={},
        feature_names=feature_names,
        classes=classes,
        kind="sklearn",
        task=task,
        versions={"sklearn": sklearn.__version__},
        training={"source": str(path), "external": True},
    )


def load_external_model(path: str | Path, task: Task) -> tuple[Any, ModelContract]:
    """The model at ``path`` and its contract, after checking that it suits the run's task."""
    from pipeline.learn import load_model  # the facade dispatches on the folder's kind

    where = Path(path)
    if where.is_dir():
        if not (where / CONTRACT_FILE).is_file():
            raise ModelError(
                f"folder {str(where)!r} has no {CONTRACT_FILE}",
                fix="give a model folder written by sitsflow, or the estimator file itself",
                field=FIELD,
            )
        contract = read_contract(where)
        if contract.task != task:
            raise ModelError(
                f"the model in {str(where)!r} was trained for {contract.task}, the run's task is "
                f"{task}",
                fix=f"give a {task} model, or set task: {contract.task}",
                field=FIELD,
            )
        model, contract = load_model(where)
        return model, replace(
            contract, training={**contract.training, "source": str(where), "external": True}
        )
    if not where.is_file():
        raise ModelError(
            f"model path {str(where)!r} does not exist",
            fix="check model.path (relative paths are relative to the manifest)",
            field=FIELD,
        )
    estimator = _load_file(where)
    return estimator, _estimator_contract(estimator, where, task)


def _not_external(contract: ModelContract) -> None:
    if contract.kind == ExternalLearner.kind:  # its own kind would send it back here
        raise ModelError(
            "a model contract says kind 'external'; it names the kind that fitted the model",
            fix="point to a model folder written by sitsflow",
            field=FIELD,
        )


class ExternalLearner(PixelLearner):
    """``kind: external``: a model trained elsewhere (``model.path``), used as it is.

    Its contract names the kind that fitted it (sklearn, torch...): saving and loading go to
    that kind's learner, so a saved external model is read like any other."""

    kind = "external"

    def model(self, config: ModelConfig, task: Task) -> tuple[Any, ModelContract]:
        """The model at ``config.path`` and its contract, checked against the task."""
        if config.kind != self.kind or not config.path:
            raise ModelError(
                f"model.kind is {config.kind!r}, not 'external'",
                fix="set kind: external and path to the model",
                field="model.kind",
            )
        model, contract = load_external_model(config.path, task)
        if config.inference != "auto" and contract.kind == "sklearn":  # how it predicts here
            contract = replace(contract, config={**contract.config, "inference": config.inference})
        return model, contract

    def check(self, config: ModelConfig, task: Task, feature_names: Sequence[str]) -> None:
        _model, contract = self.model(config, task)
        check_features(contract, feature_names)

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
        raise ModelError(
            "an external model is used as it is, not trained",
            fix="call load_external_model for kind external",
            field="model.kind",
        )

    def save(self, model: Any, contract: ModelContract, folder: Path) -> None:
        from pipeline.learn.registry import learner_for

        _not_external(contract)
        learner_for(contract.kind).save(model, contract, folder)

    def load(self, folder: Path, contract: ModelContract, *, device: str = "auto") -> Any:
        from pipeline.learn.registry import learner_for

        _not_external(contract)
        return learner_for(contract.kind).load(folder, contract, device=device)


# --- classes matched by name ----------------------------------------------------------------------


def model_class_names(contract: ModelContract) -> dict[int, str]:
    """The class names an external model records (``sitsflow train`` writes them to
    ``model.json``'s ``training.class_names``, code -> name); empty when it records none."""
    raw = contract.training.get("class_names") or {}
    return {int(code): str(name) for code, name in dict(raw).items()}


def _key(name: str) -> str:
    return " ".join(name.split()).casefold()


def _shown(names: Mapping[int, str]) -> str:
    return ", ".join(f"{code}={name}" for code, name in sorted(names.items()))


def class_code_map(contract: ModelContract, reference: Mapping[int, str]) -> dict[int, int]:
    """model code -> run code, matching the model's class names with the reference's.

    ``reference`` is the reference's code -> name (empty when it has no names: codes are then
    compared as they are, and so are the codes of a model that records no names, or only its
    codes as names). Names match
    whatever their case and spacing. Every class of the reference must be known to the model by
    name (else the run's codes would be compared with classes the model calls something else:
    a ModelError shows both lists); a class only the model knows keeps its code when the
    reference does not use it, else a free code above every code of both.
    """
    names = model_class_names(contract)
    # A table labelled with integer codes gives "names" that are the codes themselves: such a
    # model names no class, and its codes are compared as they are.
    coded = all(name.strip() == str(code) for code, name in names.items())
    if not names or coded or not reference:
        return {code: code for code in contract.classes}
    by_name = {_key(name): code for code, name in reference.items()}
    unknown = sorted(
        code
        for code, name in reference.items()
        if _key(name) not in {_key(n) for n in names.values()}
    )
    if unknown:
        raise ModelError(
            f"the model's classes ({_shown(names)}) do not name the reference's classes "
            f"{[reference[c] for c in unknown]} (the reference: {_shown(reference)}); classes are "
            "matched by name, so codes alone would compare different classes",
            fix="give the model a reference whose reference.name_field (or text labels) uses the "
            "model's class names, or correct training.class_names in the model's model.json",
            field=FIELD,
        )
    mapping: dict[int, int] = {}
    taken = set(reference)
    for code in contract.classes:
        name = names.get(code)
        if name is not None and _key(name) in by_name:
            mapping[code] = by_name[_key(name)]
        elif code not in taken:
            mapping[code] = code
        else:
            mapping[code] = max(taken | set(contract.classes)) + 1
        taken.add(mapping[code])
    return mapping


def recode_classes(
    model: Any, contract: ModelContract, mapping: Mapping[int, int]
) -> tuple[Any, ModelContract]:
    """The model and contract with the run's codes in place of the model's (``class_code_map``):
    its predictions and probability columns then carry the run's codes; names are kept."""
    if all(mapping.get(c, c) == c for c in contract.classes):
        return model, contract
    codes = np.asarray([mapping[int(c)] for c in np.asarray(model.classes_)], dtype=np.int64)
    model = unwrap(model)  # the estimator behind a compiled predictor: what is saved
    final = model[-1] if hasattr(model, "steps") else model  # a Pipeline's classifier
    if hasattr(final, "_classes"):  # a torch model's codes (classes_ is a read-only property)
        final._classes = codes
    else:
        final.classes_ = codes
    names = model_class_names(contract)
    record = {
        **contract.training,
        "class_names": {str(mapping[c]): n for c, n in names.items() if c in mapping},
        "codes_in_source_model": {str(mapping[c]): c for c in contract.classes},
    }
    classes = tuple(mapping[c] for c in contract.classes)
    return model, replace(contract, classes=classes, training=record)


def reference_class_names(legend: Sequence[Any]) -> dict[int, str]:
    """The reference's code -> name from its legend, empty when it has no names (a legend
    without a name field names each class by its code)."""
    names = {int(c.code): str(c.name) for c in legend}
    return {} if all(name == str(code) for code, name in names.items()) else names


def source_class_map(config: ModelConfig, legend: Sequence[Any]) -> dict[int, int]:
    """For a run with an external model folder: model code -> run code (``class_code_map``),
    from its model.json alone (cheap: planning calls it); identity when either side has no
    names or the model is a bare estimator file."""
    where = Path(config.path or "")
    if config.kind != ExternalLearner.kind or not (where / CONTRACT_FILE).is_file():
        return {}
    mapping = class_code_map(read_contract(where), reference_class_names(legend))
    return {} if all(a == b for a, b in mapping.items()) else mapping
