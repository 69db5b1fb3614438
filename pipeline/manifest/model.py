"""The model section: the estimator or network, its training loop and parameter search."""

from __future__ import annotations

import re
from typing import Any, Literal

from pydantic import (
    Field,
    field_validator,
    model_validator,
)

from pipeline.manifest.common import (
    _IMPORT_PATH,
    _Strict,
)

_ARCHITECTURES = ("mlp", "tempcnn", "ltae")
_PATCH_ARCHITECTURES = ("utae", "unet")


class TrainingSpec(_Strict):
    """How a torch model is trained (the loop is seeded with spec.sampling.seed)."""

    epochs: int = Field(
        100, ge=1, le=100_000, description="Maximum number of passes over the data."
    )
    batch_size: int = Field(256, ge=2, le=1_000_000, description="Samples per optimizer step.")
    learning_rate: float = Field(1e-3, gt=0, le=1, description="AdamW learning rate.")
    weight_decay: float = Field(1e-4, ge=0, le=1, description="AdamW weight decay.")
    patience: int = Field(
        10,
        ge=1,
        le=100_000,
        description="Stop after this many epochs without a lower validation loss; the weights of "
        "the best epoch are kept.",
    )
    validation_fraction: float = Field(
        0.2,
        gt=0,
        lt=1,
        description="Share of the training polygons held out to measure the validation loss "
        "(split by polygon, stratified by class).",
    )
    class_weights: Literal["none", "balanced"] = Field(
        "none",
        description="'balanced': weight the loss of each class by the inverse of its frequency "
        "(classification only).",
    )
    device: Literal["auto", "cpu", "cuda"] = Field(
        "auto", description="Where to train: 'auto' uses a CUDA GPU when one is present."
    )


class PatchSpec(_Strict):
    """Patches of a patch model (kind torch_patch): their size, and the stride of the
    overlapping patches blended into the map."""

    size: int = Field(
        32,
        ge=8,
        le=512,
        multiple_of=4,
        description="Side of a patch in pixels (a multiple of 4): training patches are cut "
        "around the reference, and the map is predicted patch by patch.",
    )
    stride: int | None = Field(
        None,
        ge=1,
        le=512,
        description="Step between the overlapping patches predicted for the map (default: half "
        "the size); compute.chunk_size must be a multiple of it. Smaller: smoother, slower.",
    )
    augment: bool = Field(
        True, description="Random flips and quarter rotations of the training patches."
    )

    @model_validator(mode="after")
    def _stride_fits(self) -> PatchSpec:
        if self.stride is not None and self.stride > self.size:
            raise ValueError(
                f"stride {self.stride} is larger than the patch size {self.size}; pixels between "
                "patches would get no prediction. Use a stride of at most size"
            )
        return self


class GridSearchSpec(_Strict):
    """Cross-validated search of a scikit-learn estimator's parameters."""

    param_grid: dict[str, list[Any]] = Field(
        min_length=1,
        description="Candidate values of estimator parameters, e.g. {n_estimators: [100, 300]}; "
        "every combination is tried.",
    )
    folds: int = Field(
        5, ge=2, le=50, description="Cross-validation folds, grouped by polygon and stratified."
    )
    scoring: str | None = Field(
        None,
        description="scikit-learn scorer name (default: accuracy for classification, r2 for "
        "regression).",
    )

    @field_validator("param_grid")
    @classmethod
    def _non_empty(cls, grid: dict[str, list[Any]]) -> dict[str, list[Any]]:
        empty = sorted(name for name, values in grid.items() if not values)
        if empty:
            raise ValueError(
                f"parameter(s) {empty} have no candidate value; give at least one value each"
            )
        return grid


class ModelSpec(_Strict):
    """The model: a scikit-learn estimator, a torch network, or a model trained elsewhere."""

    kind: Literal["sklearn", "torch", "external", "torch_patch"] = Field(
        "sklearn",
        description="'sklearn': an estimator by import path; 'torch': a neural network on the "
        "pixel time series; 'external': a model trained elsewhere, used for prediction only; "
        "'torch_patch': a spatio-temporal network on patches of the cube.",
    )
    estimator: str = Field(
        "sklearn.ensemble.RandomForestClassifier",
        pattern=_IMPORT_PATH,
        description="Import path of a scikit-learn compatible estimator (kind sklearn), e.g. "
        "sklearn.svm.SVC or sklearn.ensemble.RandomForestRegressor.",
    )
    architecture: str | None = Field(
        None,
        description="Network (kind torch): mlp, tempcnn, ltae, or the import path "
        "(package.module:Class) of a torch.nn.Module; kind torch_patch: utae, unet, or an "
        "import path.",
    )
    params: dict[str, Any] = Field(
        default_factory=dict,
        description="Keyword arguments of the estimator, or hyper-parameters of the network.",
    )
    standardize: bool | None = Field(
        None,
        description="Scale each feature (torch: each variable) to zero mean and unit variance "
        "before the model (default: on for torch, off for sklearn).",
    )
    grid_search: GridSearchSpec | None = Field(
        None, description="Cross-validated parameter search (kind sklearn)."
    )
    training: TrainingSpec = Field(
        default_factory=TrainingSpec,
        description="Training loop settings (kinds torch and torch_patch).",
    )
    patch: PatchSpec | None = Field(
        None, description="Patch size and inference stride (kind torch_patch; default: 32, 16)."
    )
    inference: Literal["auto", "sklearn", "compiled"] = Field(
        "auto",
        description="How tree ensembles (random forests, extra trees, gradient boosting) "
        "predict: 'compiled' through sitsflow's compiled tree kernel, scikit-learn's "
        "probabilities, values and labels to the bit, and an unsupported estimator refused; "
        "'sklearn' with scikit-learn itself; 'auto' compiled where the estimator is supported, "
        "scikit-learn otherwise (kinds sklearn and external).",
    )
    path: str | None = Field(
        None,
        description="Model trained elsewhere (kind external): a sitsflow model folder, or a "
        ".skops / .joblib file of a scikit-learn estimator fitted on a DataFrame whose columns "
        "are the cube's feature names (relative paths are relative to the manifest).",
    )

    @field_validator("architecture")
    @classmethod
    def _architecture(cls, value: str | None) -> str | None:
        known = (*_ARCHITECTURES, *_PATCH_ARCHITECTURES)
        if value is not None and value not in known and not re.match(_IMPORT_PATH, value):
            raise ValueError(
                f"architecture {value!r} is neither a built-in network nor an import path; "
                f"use one of {', '.join(known)} or package.module:Class"
            )
        return value

    @model_validator(mode="after")
    def _fields_of_kind(self) -> ModelSpec:
        used_by = {
            "estimator": ("sklearn",),
            "grid_search": ("sklearn",),
            "architecture": ("torch", "torch_patch"),
            "training": ("torch", "torch_patch"),
            "path": ("external",),
            "patch": ("torch_patch",),
            "inference": ("sklearn", "external"),
        }
        for name, kinds in used_by.items():
            if (
                name in self.model_fields_set
                and self.kind not in kinds
                and (getattr(self, name) is not None)
            ):
                raise ValueError(
                    f"{name} is only used by kind {' or '.join(map(repr, kinds))}, but kind is "
                    f"{self.kind!r}; remove {name} or set kind: {kinds[0]}"
                )
        if self.kind == "torch" and self.architecture is None:
            raise ValueError(
                "kind 'torch' needs an architecture; set architecture: tempcnn (or mlp, ltae)"
            )
        if self.kind == "torch_patch" and self.architecture is None:
            raise ValueError(
                "kind 'torch_patch' needs an architecture; set architecture: utae (or unet, or "
                "the import path of your module)"
            )
        pixel_net = self.kind == "torch_patch" and self.architecture in _ARCHITECTURES
        patch_net = self.kind == "torch" and self.architecture in _PATCH_ARCHITECTURES
        if pixel_net or patch_net:
            wanted = "torch_patch" if self.architecture in _PATCH_ARCHITECTURES else "torch"
            raise ValueError(
                f"architecture {self.architecture!r} is a network of kind {wanted!r}, but kind "
                f"is {self.kind!r}; set kind: {wanted}"
            )
        if self.kind == "external":
            if not self.path:
                raise ValueError(
                    "kind 'external' needs the path of the model; set path to a sitsflow model "
                    "folder or a .skops/.joblib file"
                )
            given = sorted({"params", "standardize"} & self.model_fields_set)
            if given:
                raise ValueError(f"{given} cannot change a model trained elsewhere; remove them")
        return self
