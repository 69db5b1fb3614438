"""The contract a saved model keeps beside its weights: what it was fitted on and how to rebuild it.

``model.json`` holds the feature names in order, the class codes (classification), the task, the
library that fitted it and the file with its weights. Prediction refuses a cube whose features are
not exactly the contract's: the same number of features in another order would give a wrong map
without any error, so names are compared, never counts alone.
"""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Literal, cast

from pipeline.errors import ModelError

CONTRACT_FILE = "model.json"
FORMAT_VERSION = 2

Task = Literal["classification", "regression"]
Kind = str  # a learner's kind (pipeline.learn.registry): sklearn, torch, or a registered one
TASKS: tuple[Task, ...] = ("classification", "regression")


@dataclass(frozen=True)
class ModelContract:
    """What a fitted model expects and what it produces.

    ``estimator`` is the scikit-learn import path or the torch architecture; ``config`` holds what
    is needed to rebuild the model (torch: network dimensions and temporal layout); ``training``
    is a record of how it was fitted (history, grid-search scores, where an external model came
    from), for reports only.
    """

    estimator: str
    params: dict[str, Any]
    feature_names: tuple[str, ...]
    classes: tuple[int, ...]
    kind: Kind = "sklearn"
    task: Task = "classification"
    model_file: str = "model.joblib"
    versions: dict[str, str] = field(default_factory=dict)
    config: dict[str, Any] = field(default_factory=dict)
    training: dict[str, Any] = field(default_factory=dict)

    def to_json(self) -> str:
        data = asdict(self)
        data["format_version"] = FORMAT_VERSION
        return json.dumps(data, indent=2, default=_jsonable)

    @classmethod
    def from_dict(cls, data: Mapping[str, Any], source: str = CONTRACT_FILE) -> ModelContract:
        from pipeline.learn.registry import learner_kinds

        try:
            kind = data.get("kind", "sklearn")
            task = data.get("task", "classification")
            if kind not in learner_kinds() or task not in TASKS:
                raise ValueError(f"unknown kind {kind!r} or task {task!r}")
            versions = dict(data.get("versions", {}))
            if "sklearn_version" in data:  # contracts written before format 2
                versions.setdefault("sklearn", str(data["sklearn_version"]))
            return cls(
                estimator=str(data["estimator"]),
                params=dict(data.get("params", {})),
                feature_names=tuple(str(n) for n in data["feature_names"]),
                classes=tuple(int(c) for c in data.get("classes", ())),
                kind=str(kind),
                task=cast(Task, task),
                model_file=str(data.get("model_file", "model.joblib")),
                versions=versions,
                config=dict(data.get("config", {})),
                training=dict(data.get("training", {})),
            )
        except (KeyError, TypeError, ValueError) as exc:
            raise ModelError(
                f"{source} is not a sitsflow model contract ({type(exc).__name__}: {exc})",
                fix="point to a folder written by sitsflow (model.json beside the model file)",
                field="model.path",
            ) from None


def read_contract(folder: Path) -> ModelContract:
    path = folder / CONTRACT_FILE
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise ModelError(
            f"no model contract {str(path)!r}",
            fix="point to a model folder written by sitsflow (it holds model.json)",
            field="model.path",
        ) from None
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise ModelError(
            f"model contract {str(path)!r} cannot be read ({exc})",
            fix="point to an intact model folder written by sitsflow",
            field="model.path",
        ) from None
    if not isinstance(data, dict):
        raise ModelError(
            f"model contract {str(path)!r} is not a JSON object",
            fix="point to an intact model folder written by sitsflow",
            field="model.path",
        )
    return ModelContract.from_dict(data, source=str(path))


def _jsonable(value: Any) -> Any:
    """numpy scalars and arrays, tuples and paths in params and records, as JSON values."""
    if hasattr(value, "tolist"):
        return value.tolist()
    if isinstance(value, Path):
        return str(value)
    return repr(value)


def _listed(names: Sequence[str], limit: int = 5) -> str:
    shown = ", ".join(names[:limit])
    return f"{shown}, ... ({len(names)} in all)" if len(names) > limit else shown


def check_features(contract: ModelContract, feature_names: Sequence[str]) -> None:
    """Refuse to apply a model to a cube whose features are not exactly the model's, in order."""
    names = tuple(feature_names)
    if names == contract.feature_names:
        return
    expected = set(contract.feature_names)
    given = set(names)
    detail = []
    missing = [f for f in contract.feature_names if f not in given]
    extra = [f for f in names if f not in expected]
    if missing:
        detail.append(f"missing {_listed(missing)}")
    if extra:
        detail.append(f"unexpected {_listed(extra)}")
    if not detail and len(names) != len(contract.feature_names):
        repeated = sorted({n for n in names if names.count(n) > 1})
        detail.append(f"repeated {_listed(repeated)}")
    if not detail:
        pairs = zip(names, contract.feature_names, strict=True)
        first = next(i for i, (a, b) in enumerate(pairs) if a != b)
        detail.append(
            f"same features in another order (position {first}: the cube has {names[first]!r}, "
            f"the model expects {contract.feature_names[first]!r})"
        )
    raise ModelError(
        f"the model expects {len(contract.feature_names)} features, the cube has "
        f"{len(names)} ({'; '.join(detail)})",
        fix="build the cube with the sensors, bands, indices, date step and period the model was "
        "trained on, or train a model on this cube",
        field="model",
    )


def seasonal_features(has_windows: bool, also_map: Sequence[Any]) -> bool:
    """Whether a run's features are named by position in the season (``t00``...) rather than by
    date: its samples come from several seasons (the reference gives each feature its own
    window: ``reference.start_field``), or it maps further periods (``also_map``). One model
    then reads the same features in every season. The one home of this rule (planning and
    ``train_from_table`` both ask it)."""
    return bool(has_windows or also_map)
