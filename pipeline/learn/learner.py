"""The Learner seam: what a kind of model provides to the chain.

A learner is one class per kind of model (``ModelConfig.kind``), registered once
(:mod:`pipeline.learn.registry`). The chain asks it to check a configuration before any pixel
is read, to fit on a training table, to save and load the fitted model, and to predict a block
of the cube. A learner that looks at neighbouring pixels (a patch model) says how many it needs
around a block (:meth:`Learner.halo`); prediction then reads the chunk grown by that halo and
the learner returns values for the chunk's core only, so chunk borders leave no trace in the map.

Pixel learners (scikit-learn estimators, torch networks on pixel time series, models trained
elsewhere) share :class:`PixelLearner`: halo 0, and the model's ``predict``/``predict_proba``
applied to each pixel's features.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol, runtime_checkable

import numpy as np
import pandas as pd

from pipeline.learn.config import ModelConfig
from pipeline.learn.contract import ModelContract, Task
from pipeline.learn.rows import pixel_rows, valid_pixels

__all__ = [
    "BlockModel",
    "BlockPrediction",
    "Learner",
    "PixelLearner",
    "core_of",
    "model_input",
    "predict_rows",
    "predict_valid_rows",
    "valid_rows",
]


@dataclass(frozen=True)
class BlockPrediction:
    """A learner's prediction for the core of a block (the chunk, without its halo).

    ``valid`` ((h, w), or (n,) for a table) marks the pixels that got a prediction (the others
    become no-data). Classification gives ``classes`` (codes) and ``probabilities``
    (n_valid, n_classes) in that order; regression gives ``values`` (n_valid,). Rows follow
    the valid pixels in C order. Both are None when no pixel is valid.
    """

    valid: np.ndarray
    classes: np.ndarray | None = None
    probabilities: np.ndarray | None = None
    values: np.ndarray | None = None


@runtime_checkable
class Learner(Protocol):
    """One kind of model (``kind`` is the ``model.kind`` it serves)."""

    kind: str

    def check(self, config: ModelConfig, task: Task, feature_names: Sequence[str]) -> None:
        """Everything that can be checked before any pixel is read: the model builds for these
        features and suits the task. Raises ModelError naming the key to change."""
        ...

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
        """The fitted model and its contract (``contract.kind`` is this learner's kind);
        ``groups`` (polygon ids) keep polygons whole in any internal split."""
        ...

    def save(self, model: Any, contract: ModelContract, folder: Path) -> None:
        """Write ``folder`` atomically: the weights and ``model.json``."""
        ...

    def load(self, folder: Path, contract: ModelContract, *, device: str = "auto") -> Any:
        """The model saved in ``folder`` (whose contract is ``contract``)."""
        ...

    def halo(self, contract: ModelContract) -> int:
        """Pixels needed on each side of a block to predict its core (0: per pixel)."""
        ...

    def predict_block(
        self, model: Any, block: np.ndarray, halo: int, task: Task
    ) -> BlockPrediction:
        """The prediction for the core of ``block`` ((n_features, h + 2 halo, w + 2 halo),
        float32; NaN where a feature is missing and off the grid's edges)."""
        ...


def model_input(model: Any, features: np.ndarray) -> Any:
    """What the model's predict methods take: a DataFrame for estimators fitted on named columns
    (their names were checked against the cube's), else the array itself."""
    names = getattr(model, "feature_names_in_", None)
    if names is None:
        return features
    return pd.DataFrame(features, columns=list(names), copy=False)


def valid_rows(table: np.ndarray, ok: np.ndarray) -> np.ndarray:
    """The valid rows, C-contiguous (tree models read a row's features together)."""
    return np.ascontiguousarray(table) if ok.all() else table[ok]


def predict_rows(model: Any, table: np.ndarray, task: Task, valid: np.ndarray) -> BlockPrediction:
    """A pixel model applied to the ``valid`` rows of a (n_pixels, n_features) table."""
    if not valid.any():
        return BlockPrediction(valid)
    return predict_valid_rows(model, valid_rows(table, valid), task, valid)


def predict_valid_rows(
    model: Any, table: np.ndarray, task: Task, valid: np.ndarray
) -> BlockPrediction:
    """A pixel model applied to a table of only the ``valid`` pixels' rows (at least one)."""
    rows = model_input(model, table)
    if task == "regression":
        return BlockPrediction(valid, values=np.asarray(model.predict(rows)))
    probabilities = np.asarray(model.predict_proba(rows))
    return BlockPrediction(valid, np.asarray(model.classes_), probabilities)


def core_of(block: np.ndarray, halo: int) -> np.ndarray:
    """The block without its halo (a view)."""
    if halo == 0:
        return block
    return block[..., halo:-halo, halo:-halo]


@runtime_checkable
class BlockModel(Protocol):
    """A pixel model that reads a block's features where they lie, without a table
    (:class:`pipeline.learn.compiled.CompiledForest`); a classifier has ``classes_``."""

    def predict_pixels(self, block: np.ndarray, pixels: np.ndarray) -> np.ndarray:
        """Probabilities (a classifier) or values of ``pixels`` (flat indices, C order) of a
        (n_features, h, w) block."""
        ...


class PixelLearner:
    """Prediction of a per-pixel model: no halo, each pixel from its own features."""

    def halo(self, contract: ModelContract) -> int:
        return 0

    def predict_block(
        self, model: Any, block: np.ndarray, halo: int, task: Task
    ) -> BlockPrediction:
        core = core_of(block, halo)
        _, height, width = core.shape
        if isinstance(model, BlockModel):  # no table: the model reads the block in place
            valid, pixels = valid_pixels(core)
            if not len(pixels):
                return BlockPrediction(valid.reshape(height, width))
            predicted = model.predict_pixels(core, pixels)
            if task == "regression":
                return BlockPrediction(valid.reshape(height, width), values=predicted)
            classes = np.asarray(getattr(model, "classes_"))  # noqa: B009  (a classifier's)
            return BlockPrediction(valid.reshape(height, width), classes, predicted)
        valid, rows = pixel_rows(core)
        if not len(rows):
            return BlockPrediction(valid.reshape(height, width))
        found = predict_valid_rows(model, rows, task, valid)
        return BlockPrediction(
            valid.reshape(height, width), found.classes, found.probabilities, found.values
        )
