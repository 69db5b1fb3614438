"""Train/validation split by polygon (or group of features), stratified, seeded (pure functions).

Splitting by polygon keeps every pixel of a polygon on one side: neighbouring pixels of one field
are nearly identical, so a pixel split would measure memory, not accuracy. With a group field,
whole groups (a parcel's points, a farm's fields) go to one side together.

The split is stratified by class, and by region when regions are given: in each stratum,
``round(n * fraction)`` units go to validation, at least one and at most ``n - 1``, so every
stratum with two or more units is both trained and validated. A stratum with a single unit can
only be trained on; a SamplingWarning says so. Regression splits stratify by value quantiles
(:func:`value_strata`) so that both sides span the range of values.
"""

from __future__ import annotations

import warnings
from collections import Counter
from collections.abc import Hashable, Mapping, Sequence
from typing import TypeVar

import numpy as np
import pandas as pd

from pipeline.warnings import SamplingWarning

TRAIN = "train"
VALIDATION = "validation"

H = TypeVar("H", bound=Hashable)


def run_seeds(seed: int, runs: int) -> list[int]:
    """The seeds of ``runs`` repeated runs: ``seed, seed + 1, ...``."""
    if runs < 1:
        raise ValueError(f"runs must be at least 1, got {runs}")
    return [seed + i for i in range(runs)]


def _majority(values: Sequence[H]) -> H:
    """The most common value; ties go to the smallest (by repr, so mixed types sort)."""
    counts = Counter(values)
    best = max(counts.values())
    return sorted((v for v, n in counts.items() if n == best), key=repr)[0]


def split_polygons(
    labels: Mapping[int, int],
    validation_fraction: float,
    seed: int,
    *,
    strata: Mapping[int, Hashable] | None = None,
    groups: Mapping[int, Hashable] | None = None,
    feature: str = "polygon",
) -> dict[int, str]:
    """Assign each polygon (id -> class) to TRAIN or VALIDATION, stratified by class.

    ``feature`` names the reference's features in warnings ("point" for a reference of points).

    ``strata`` (polygon -> region, optional) stratifies further; ``groups`` (polygon -> group,
    optional) makes whole groups the split unit, each group in the stratum of the majority class
    (and region) of its polygons. The result does not depend on the order of the mappings.
    """
    if not 0 < validation_fraction < 1:
        raise ValueError(f"validation_fraction must be in (0, 1), got {validation_fraction}")
    rng = np.random.default_rng(seed)
    members: dict[Hashable, list[int]] = {}
    for polygon in sorted(labels):
        unit = groups[polygon] if groups is not None else polygon
        members.setdefault(unit, []).append(int(polygon))

    by_stratum: dict[tuple[int, Hashable], list[Hashable]] = {}
    for unit in sorted(members, key=repr):
        polygons = members[unit]
        label = _majority([int(labels[p]) for p in polygons])
        region = _majority([strata[p] for p in polygons]) if strata is not None else None
        by_stratum.setdefault((label, region), []).append(unit)

    out: dict[int, str] = {}
    single = []
    for stratum in sorted(by_stratum, key=repr):
        units = by_stratum[stratum]
        order = rng.permutation(len(units))
        n = len(units)
        if n == 1:
            single.append(stratum)
            n_val = 0
        else:
            n_val = min(max(round(n * validation_fraction), 1), n - 1)
        for rank, position in enumerate(order):
            side = VALIDATION if rank < n_val else TRAIN
            for polygon in members[units[position]]:
                out[polygon] = side
    if single:
        _warn_single(single, strata is not None, groups is not None, feature)
    return out


def _warn_single(
    single: list[tuple[int, Hashable]], by_region: bool, by_group: bool, feature: str = "polygon"
) -> None:
    unit = "reference group" if by_group else f"reference {feature}"
    if by_region:
        which = ", ".join(f"class {c} in region {r!r}" for c, r in single)
        what = f"{which} {'has' if len(single) == 1 else 'have'} a single {unit}"
    else:
        what = f"class(es) {[c for c, _ in single]} have a single {unit}"
    warnings.warn(
        f"{what}: used for training only, so accuracy there cannot be measured; add "
        f"{unit}s to validate them",
        SamplingWarning,
        stacklevel=3,
    )


def value_strata(values: Mapping[int, float], bins: int = 5) -> dict[int, int]:
    """Quantile bin (0 .. bins-1) of each polygon's value: pseudo-classes for a regression split.

    Equal values are ranked by polygon id, so every bin gets its share of polygons.
    """
    if bins < 1:
        raise ValueError(f"bins must be at least 1, got {bins}")
    if not values:
        return {}
    ids = sorted(values)
    series = pd.Series([float(values[i]) for i in ids], index=ids)
    codes = pd.qcut(series.rank(method="first"), q=min(bins, len(ids)), labels=False)
    return {int(i): int(c) for i, c in codes.items()}


def select_training_pixels(
    pixels: pd.DataFrame, max_per_polygon: int | None, seed: int
) -> pd.DataFrame:
    """Keep at most ``max_per_polygon`` randomly drawn pixels of each polygon (seeded).

    Kept for the runner; :func:`pipeline.samples.select.select_pixels` does every strategy.
    """
    if max_per_polygon is None:
        return pixels
    from pipeline.samples.select import SelectionRule, select_pixels

    rule = SelectionRule(max_pixels_per_polygon=max_per_polygon)
    return select_pixels(pixels, rule, seed, label_column=None)
