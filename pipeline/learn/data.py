"""Checks of a training table shared by every model kind: shapes, class codes, target values."""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from pipeline.errors import ModelError
from pipeline.learn.contract import Task


def check_training_data(
    features: np.ndarray,
    targets: np.ndarray,
    feature_names: Sequence[str],
    groups: np.ndarray | None,
    task: Task,
) -> None:
    """Shapes agree, class codes are integers, regression targets are finite numbers."""
    if features.ndim != 2 or features.shape[1] != len(feature_names):
        raise ModelError(
            f"the training table has shape {features.shape}, expected (samples, "
            f"{len(feature_names)}) for {len(feature_names)} feature names",
            fix="pass one column per feature name",
        )
    if targets.shape != (features.shape[0],):
        raise ModelError(
            f"{targets.shape} targets for {features.shape[0]} training samples",
            fix="pass one target per sample",
        )
    if groups is not None and np.shape(groups) != (features.shape[0],):
        raise ModelError(
            f"{np.shape(groups)} groups for {features.shape[0]} training samples",
            fix="pass one polygon id per sample",
        )
    if task == "classification":
        if targets.dtype.kind not in "iu" and not (
            targets.dtype.kind == "f" and np.all(np.isfinite(targets) & (targets % 1 == 0))
        ):
            raise ModelError(
                f"class labels must be integer codes, got dtype {targets.dtype} "
                f"(e.g. {targets[:3].tolist()})",
                fix="map class names to integer codes (a legend) before training",
            )
    else:
        if targets.dtype.kind not in "iuf" or not np.all(np.isfinite(targets)):
            raise ModelError(
                "regression targets must be finite numbers, got "
                + (
                    f"dtype {targets.dtype}"
                    if targets.dtype.kind not in "iuf"
                    else f"{int((~np.isfinite(targets)).sum())} NaN or infinite value(s)"
                ),
                fix="drop samples without a value, or fill them, before training",
                field="reference.value_field",
            )
    if features.shape[0] == 0:
        raise ModelError("no training samples", fix="add reference data over the mapped area")
