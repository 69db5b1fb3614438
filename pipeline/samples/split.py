"""Train/validation split by polygon, and the selection of training pixels (pure functions).

Splitting by polygon keeps every pixel of a polygon on one side: neighbouring pixels of one field
are nearly identical, so a pixel split would measure memory, not accuracy.
"""

from __future__ import annotations

import warnings
from collections.abc import Mapping

import numpy as np
import pandas as pd

from pipeline.warnings import SamplingWarning

TRAIN = "train"
VALIDATION = "validation"


def split_polygons(
    labels: Mapping[int, int], validation_fraction: float, seed: int
) -> dict[int, str]:
    """Assign each polygon (id -> class) to TRAIN or VALIDATION, stratified by class.

    Per class, ``round(n * fraction)`` polygons go to validation, at least one and at most n - 1,
    so every class with two or more polygons is both trained and validated. A class with a single
    polygon can only be trained on; a SamplingWarning says so.
    """
    rng = np.random.default_rng(seed)
    by_class: dict[int, list[int]] = {}
    for polygon, label in sorted(labels.items()):
        by_class.setdefault(int(label), []).append(int(polygon))
    out: dict[int, str] = {}
    single = []
    for label in sorted(by_class):
        polygons = np.array(by_class[label])
        rng.shuffle(polygons)
        n = len(polygons)
        if n == 1:
            single.append(label)
            n_val = 0
        else:
            n_val = min(max(round(n * validation_fraction), 1), n - 1)
        for i, polygon in enumerate(polygons):
            out[int(polygon)] = VALIDATION if i < n_val else TRAIN
    if single:
        warnings.warn(
            f"class(es) {single} have a single reference polygon: used for training only, so "
            "their accuracy cannot be measured; add polygons to validate them",
            SamplingWarning,
            stacklevel=2,
        )
    return out


def select_training_pixels(
    pixels: pd.DataFrame, max_per_polygon: int | None, seed: int
) -> pd.DataFrame:
    """Keep at most ``max_per_polygon`` randomly drawn pixels of each polygon (seeded)."""
    if max_per_polygon is None:
        return pixels
    rng = np.random.default_rng(seed)
    keep = []
    for _, group in pixels.groupby("polygon_id", sort=True):
        if len(group) <= max_per_polygon:
            keep.append(group.index.to_numpy())
        else:
            keep.append(np.sort(rng.choice(group.index.to_numpy(), max_per_polygon, replace=False)))
    return pixels.loc[np.concatenate(keep)] if keep else pixels.iloc[:0]
