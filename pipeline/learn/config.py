"""What the learn stage is told: the model, its training loop and its parameter search.

Frozen, hashable and picklable (these travel to workers in place of the manifest's pydantic
``ModelSpec``), with the attribute names of the manifest sections they come from, so
``config.model.params`` reads as ``spec.model.params`` did. Nested values that YAML gives as
lists and mappings are kept as tuples and :class:`FrozenMap`; :func:`thaw` gives them back as
lists and dicts where a library (scikit-learn, torch) wants those.

Validation (kinds, ranges, which field belongs to which kind) happens once, in the manifest;
these classes only carry the checked values.
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field, fields
from datetime import date, datetime, time
from pathlib import PurePath
from typing import Any, Literal

__all__ = [
    "FrozenMap",
    "GridSearchConfig",
    "Inference",
    "ModelConfig",
    "ModelKind",
    "PatchConfig",
    "TrainingConfig",
    "freeze",
    "thaw",
]

ModelKind = Literal["sklearn", "torch", "external", "torch_patch"]
Inference = Literal["auto", "sklearn", "compiled"]


class FrozenMap(Mapping[str, Any]):
    """An immutable, hashable mapping (keys in the order given; equality ignores order)."""

    __slots__ = ("_items",)

    def __init__(self, items: Mapping[Any, Any] | None = None) -> None:
        self._items: dict[Any, Any] = {k: freeze(v) for k, v in (items or {}).items()}

    def __getitem__(self, key: Any) -> Any:
        return self._items[key]

    def __iter__(self) -> Iterator[Any]:
        return iter(self._items)

    def __len__(self) -> int:
        return len(self._items)

    def __hash__(self) -> int:
        return hash(frozenset(self._items.items()))

    def __eq__(self, other: object) -> bool:
        if isinstance(other, FrozenMap):
            return self._items == other._items
        return isinstance(other, Mapping) and self._items == dict(other.items())

    def __repr__(self) -> str:
        # As the dict it stands for: reports that print a model's params keep their text.
        return repr(thaw(self))

    def __reduce__(self) -> tuple[Any, ...]:
        return (FrozenMap, (self._items,))


def freeze(value: Any) -> Any:
    """``value`` with every list a tuple and every mapping a :class:`FrozenMap`."""
    if isinstance(value, FrozenMap):
        return value
    if isinstance(value, Mapping):
        return FrozenMap(value)
    if isinstance(value, list | tuple):
        return tuple(freeze(v) for v in value)
    return value


def thaw(value: Any) -> Any:
    """``value`` with every tuple a list and every mapping a dict (what YAML gave)."""
    if isinstance(value, Mapping):
        return {k: thaw(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [thaw(v) for v in value]
    return value


def _json(value: Any) -> Any:
    """``value`` as pydantic's ``model_dump(mode="json")`` writes it (for digests)."""
    if isinstance(value, Mapping):
        return {str(k) if not isinstance(k, str) else k: _json(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_json(v) for v in value]
    if isinstance(value, datetime | date | time):
        return value.isoformat()
    if isinstance(value, PurePath):
        return str(value)
    return value


def _canonical(config: Any, type_name: str) -> dict[str, Any]:
    return {
        "__type__": type_name,
        **{f.name: _json(getattr(config, f.name)) for f in fields(config)},
    }


def _known(cls: type, data: Mapping[str, Any]) -> dict[str, Any]:
    names = {f.name for f in fields(cls)}
    unknown = sorted(set(data) - names)
    if unknown:
        raise TypeError(f"{cls.__name__} has no field(s) {unknown}; known: {sorted(names)}")
    return dict(data)


@dataclass(frozen=True, slots=True)
class TrainingConfig:
    """How a torch model is trained (the manifest's ``model.training``; defaults are its)."""

    epochs: int = 100
    batch_size: int = 256
    learning_rate: float = 1e-3
    weight_decay: float = 1e-4
    patience: int = 10
    validation_fraction: float = 0.2
    class_weights: Literal["none", "balanced"] = "none"
    device: Literal["auto", "cpu", "cuda"] = "auto"

    @classmethod
    def from_mapping(cls, data: Mapping[str, Any]) -> TrainingConfig:
        return cls(**_known(cls, data))

    def __canonical__(self) -> dict[str, Any]:
        # The digest of the pydantic TrainingSpec it replaces: run stores keep their units.
        return _canonical(self, "TrainingSpec")


@dataclass(frozen=True, slots=True)
class GridSearchConfig:
    """Cross-validated search of a scikit-learn estimator's parameters (``model.grid_search``)."""

    param_grid: Mapping[str, Any]  # a FrozenMap once built
    folds: int = 5
    scoring: str | None = None

    def __post_init__(self) -> None:
        object.__setattr__(self, "param_grid", freeze(self.param_grid))

    @classmethod
    def from_mapping(cls, data: Mapping[str, Any]) -> GridSearchConfig:
        return cls(**_known(cls, data))

    def __canonical__(self) -> dict[str, Any]:
        # The digest of the pydantic GridSearchSpec it replaces: run stores keep their units.
        return _canonical(self, "GridSearchSpec")


@dataclass(frozen=True, slots=True)
class PatchConfig:
    """Patches of a patch model (``model.patch``; defaults are the manifest's)."""

    size: int = 32
    stride: int | None = None
    augment: bool = True

    @property
    def step(self) -> int:
        """The stride of the overlapping patches blended into the map."""
        return self.stride if self.stride is not None else max(self.size // 2, 1)

    @classmethod
    def from_mapping(cls, data: Mapping[str, Any]) -> PatchConfig:
        return cls(**_known(cls, data))


@dataclass(frozen=True, slots=True)
class ModelConfig:
    """The model: a scikit-learn estimator, a torch network, or a model trained elsewhere
    (the manifest's ``model``; defaults are its). ``kind`` picks the learner
    (:mod:`pipeline.learn.learners`)."""

    kind: str = "sklearn"
    estimator: str = "sklearn.ensemble.RandomForestClassifier"
    architecture: str | None = None
    params: Mapping[str, Any] = field(default_factory=FrozenMap)  # a FrozenMap once built
    standardize: bool | None = None
    grid_search: GridSearchConfig | None = None
    training: TrainingConfig = field(default_factory=TrainingConfig)
    path: str | None = None
    patch: PatchConfig | None = None
    inference: Inference = "auto"
    """How tree ensembles predict: 'auto' (compiled where supported, else scikit-learn),
    'sklearn', or 'compiled' (:mod:`pipeline.learn.compiled`)."""

    def __post_init__(self) -> None:
        object.__setattr__(self, "params", freeze(self.params))
        if isinstance(self.patch, Mapping):
            object.__setattr__(self, "patch", PatchConfig.from_mapping(self.patch))
        if isinstance(self.grid_search, Mapping):
            object.__setattr__(self, "grid_search", GridSearchConfig.from_mapping(self.grid_search))
        if isinstance(self.training, Mapping):
            object.__setattr__(self, "training", TrainingConfig.from_mapping(self.training))

    @classmethod
    def from_mapping(cls, data: Mapping[str, Any]) -> ModelConfig:
        """From the manifest section's values (``ModelSpec.model_dump()`` or the same keys as
        a mapping); nested ``grid_search`` and ``training`` may be mappings or configs."""
        return cls(**_known(cls, data))

    def __canonical__(self) -> dict[str, Any]:
        # The digest of the pydantic ModelSpec it replaces (nested sections as plain mappings,
        # as model_dump gave them): run stores keep their units.
        return {
            "__type__": "ModelSpec",
            "kind": self.kind,
            "estimator": self.estimator,
            "architecture": self.architecture,
            "params": _json(self.params),
            "standardize": self.standardize,
            "grid_search": None if self.grid_search is None else _json_fields(self.grid_search),
            "training": _json_fields(self.training),
            "path": self.path,
            # Only set for patch models: the digests of every other model stay as they were.
            **({"patch": _json_fields(self.patch)} if self.patch is not None else {}),
            # Only set when not the default: the digests of existing runs stay as they were.
            **({"inference": self.inference} if self.inference != "auto" else {}),
        }

    def params_dict(self) -> dict[str, Any]:
        """The parameters as plain dicts and lists (what estimators and networks take)."""
        return thaw(self.params)


def _json_fields(config: Any) -> dict[str, Any]:
    return {f.name: _json(getattr(config, f.name)) for f in fields(config)}
