"""The model's estimator checked at validate: importable, its parameter names and values.

A scikit-learn estimator validates its own parameters (``_validate_params``) only when it is
fitted, after the cube and the samples are built. Here it is imported, built with
``spec.model.params`` and asked to validate them as soon as the manifest is read, so a bad value
(``n_estimators: 0``, ``n_estimators: many``) or a misspelt name (``max_dept``: only that one is
listed, with the close name) fails before anything starts.
"""

from __future__ import annotations

import difflib
import importlib
import inspect
from typing import Any

from pipeline.errors import ManifestError
from pipeline.manifest.model import ModelSpec


def check_estimator(model: ModelSpec) -> None:
    """Raise a ManifestError naming ``spec.model.estimator`` or ``spec.model.params``."""
    if model.kind != "sklearn":
        return
    try:
        _check_estimator(model.estimator, dict(model.params))
    except ValueError as exc:
        key, _, text = str(exc).partition("] ")
        problem, _, fix = text.rpartition("; ")
        raise ManifestError(problem, fix=fix, field=f"spec.model.{key.lstrip('[')}") from None


def _import_class(path: str) -> type:
    """The class at ``path``, or a ValueError naming the estimator with a close name."""
    module_name, _, name = path.replace(":", ".").rpartition(".")
    try:
        module = importlib.import_module(module_name)
    except (ImportError, ValueError):
        raise ValueError(
            f"[estimator] estimator {path!r} cannot be imported (no module {module_name!r}); "
            "give a full import path such as sklearn.ensemble.RandomForestClassifier"
        ) from None
    found = getattr(module, name, None)
    if not isinstance(found, type):
        names = [n for n in dir(module) if isinstance(getattr(module, n, None), type)]
        close = difflib.get_close_matches(name, names, n=2)
        hint = f"did you mean {' or '.join(f'{module_name}.{c}' for c in close)}? " if close else ""
        raise ValueError(
            f"[estimator] estimator {path!r} cannot be imported (module {module_name!r} has no "
            f"class {name!r}); {hint}give a full import path such as "
            "sklearn.ensemble.RandomForestClassifier"
        )
    return found


def _check_estimator(path: str, params: dict[str, Any]) -> None:
    """Import the estimator, build it with ``params`` and let it check them (scikit-learn's own
    parameter validation), so that a bad value fails at validate, before any work."""
    cls = _import_class(path)
    if not hasattr(cls, "fit"):
        raise ValueError(
            f"[estimator] {path!r} is not an estimator class (no fit method); give the import "
            "path of a scikit-learn compatible estimator class"
        )
    try:
        signature = inspect.signature(cls)
    except (TypeError, ValueError):
        signature = None
    if signature is not None and not any(
        p.kind is p.VAR_KEYWORD for p in signature.parameters.values()
    ):
        known = list(signature.parameters)
        unknown = [n for n in params if n not in known]
        if unknown:
            hints = []
            for name in unknown:
                close = difflib.get_close_matches(name, known, n=1)
                hints.append(f"{name!r}" + (f" (did you mean {close[0]!r}?)" if close else ""))
            raise ValueError(
                f"[params] {path} does not accept the parameter(s) {', '.join(hints)}; rename or "
                f"remove them (its parameters: {', '.join(known)})"
            )
    try:
        estimator = cls(**params)
        validate = getattr(estimator, "_validate_params", None)
        if callable(validate):
            validate()
    except (TypeError, ValueError) as exc:
        shown = " ".join(str(exc).split()).replace("; ", ", ")[:300]
        raise ValueError(
            f"[params] {path} refuses params {params}: {shown}; give values the estimator "
            "accepts (see its documentation)"
        ) from None
