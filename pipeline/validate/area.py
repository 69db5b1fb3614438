"""Area-weighted accuracy and class areas with 95% intervals (Olofsson et al. 2014).

Olofsson, Foody, Herold, Stehman, Woodcock, Wulder (2014), "Good practices for estimating area
and assessing accuracy of land change", Remote Sensing of Environment 148, 42-57: the stratified
estimators of section 4 (strata = map classes), the ones its section 5 example applies.

Inputs are the confusion matrix of validation **sample counts**, in this project's convention
(rows = reference, columns = map, as in :mod:`pipeline.validate.metrics`), and the **mapped area**
of every map class (pixels, hectares: the estimates come back in the same unit). With ``W_i`` the
share of the map that class ``i`` covers, ``n_ij`` the samples mapped ``i`` that are ``j`` on the
ground and ``n_i.`` the samples mapped ``i``:

* estimated area proportions ``p_ij = W_i n_ij / n_i.`` (eq. 4);
* overall accuracy ``sum_j p_jj``, user's accuracy ``p_ii / p_i.``, producer's accuracy
  ``p_jj / p_.j`` (eqs. 1-3) and their variances (eqs. 5-7);
* class area ``A p_.k`` with the standard error of eq. 10 (times ``A``, eqs. 11-12);
* 95% intervals ``estimate +/- z SE``, with ``z`` = 1.96 (the normal quantile).

These estimators assume the validation pixels are a random sample inside each map class
(stratified random sampling by map class, or simple random / systematic sampling used
post-stratified). Validation pixels drawn from reference polygons are a cluster sample at best,
so read the intervals as indicative, not as design-based guarantees; the report says so.

Undefined values are ``NaN``: user's accuracy of a class no sample was mapped as, producer's
accuracy of a class with estimated area 0, a standard error of a stratum with a single sample
(``n_i. - 1 = 0``). A map class that covers area but holds no validation sample cannot be
estimated: it is left out, the estimates describe the rest of the map, and a SamplingWarning
gives the unassessed area.
"""

from __future__ import annotations

import math
import warnings
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
from scipy import stats

from pipeline.errors import InputDataError
from pipeline.validate.metrics import ClassificationMetrics
from pipeline.warnings import SamplingWarning

__all__ = [
    "AreaEstimates",
    "Estimate",
    "area_estimates",
    "area_estimates_from_metrics",
    "mapped_area_of",
]


@dataclass(frozen=True)
class Estimate:
    """A point estimate, its standard error and the half-width of its confidence interval."""

    value: float
    se: float
    half_width: float

    @property
    def low(self) -> float:
        return self.value - self.half_width

    @property
    def high(self) -> float:
        return self.value + self.half_width

    def to_dict(self) -> dict[str, float | None]:
        def clean(v: float) -> float | None:
            return None if math.isnan(v) else float(v)

        return {
            "value": clean(self.value),
            "se": clean(self.se),
            "ci_low": clean(self.low),
            "ci_high": clean(self.high),
            "ci_half_width": clean(self.half_width),
        }


@dataclass(frozen=True)
class AreaEstimates:
    """Stratified estimates of accuracy and area; per-class dicts are keyed by class code.

    ``proportions`` is the estimated error matrix in area proportions, rows = reference,
    columns = map (the transpose of the paper's table 9 layout), over ``classes``.
    """

    classes: tuple[int, ...]
    confidence: float
    mapped_area: dict[int, float]
    samples: dict[int, int]  # validation samples per map class (stratum size n_i.)
    proportions: np.ndarray
    overall_accuracy: Estimate
    users_accuracy: dict[int, Estimate]
    producers_accuracy: dict[int, Estimate]
    area: dict[int, Estimate]
    area_proportion: dict[int, Estimate]
    unassessed_area: float
    unassessed_classes: tuple[int, ...]

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready: class codes as strings, NaN as None."""

        def per_class(values: Mapping[int, Estimate]) -> dict[str, Any]:
            return {str(c): values[c].to_dict() for c in self.classes}

        return {
            "method": "stratified estimators of Olofsson et al. (2014), strata = map classes",
            "confidence": self.confidence,
            "classes": list(self.classes),
            "mapped_area": {str(c): float(self.mapped_area.get(c, 0.0)) for c in self.classes},
            "samples_per_map_class": {str(c): int(self.samples.get(c, 0)) for c in self.classes},
            "proportions": [
                [None if math.isnan(v) else float(v) for v in row] for row in self.proportions
            ],
            "proportions_axes": {"rows": "reference", "columns": "map"},
            "overall_accuracy": self.overall_accuracy.to_dict(),
            "users_accuracy": per_class(self.users_accuracy),
            "producers_accuracy": per_class(self.producers_accuracy),
            "area": per_class(self.area),
            "area_proportion": per_class(self.area_proportion),
            "unassessed_area": float(self.unassessed_area),
            "unassessed_classes": list(self.unassessed_classes),
        }


_UNDEFINED = Estimate(math.nan, math.nan, math.nan)


def _z(confidence: float) -> float:
    if not 0 < confidence < 1:
        raise ValueError(f"confidence must be in (0, 1), got {confidence}")
    return float(stats.norm.ppf(0.5 + confidence / 2))


def _check_inputs(
    confusion: np.ndarray, classes: Sequence[int], mapped_area: Mapping[int, float]
) -> tuple[np.ndarray, tuple[int, ...], np.ndarray]:
    codes = tuple(int(c) for c in classes)
    k = len(codes)
    if k == 0:
        raise InputDataError("no classes to assess", fix="give at least one class")
    if len(set(codes)) != k:
        raise InputDataError(f"classes {list(codes)} repeat a code", fix="list each class once")
    counts = np.asarray(confusion)
    if counts.shape != (k, k):
        raise InputDataError(
            f"the confusion matrix has shape {counts.shape}, expected ({k}, {k}) for {k} classes",
            fix="pass one row and one column per class, in the order of the classes",
        )
    if np.any(counts < 0) or not np.all(np.mod(counts, 1) == 0):
        raise InputDataError(
            "the confusion matrix must hold non-negative sample counts",
            fix="pass counts of validation samples, not proportions or areas",
        )
    unknown = sorted(set(int(c) for c in mapped_area) - set(codes))
    if unknown:
        raise InputDataError(
            f"mapped areas are given for classes {unknown} that are not among the classes "
            f"{list(codes)}",
            fix="add these classes to the class list (with their sample counts, even 0)",
        )
    areas = np.array([float(mapped_area.get(c, 0.0)) for c in codes])
    if np.any(~np.isfinite(areas)) or np.any(areas < 0):
        raise InputDataError(
            f"mapped areas must be finite and non-negative, got {areas.tolist()}",
            fix="pass each map class's area (pixel count or hectares)",
        )
    mapped_samples = counts.sum(axis=0)
    mapped_without = [c for c, a, s in zip(codes, areas, mapped_samples, strict=True) if a == 0 < s]
    if mapped_without:
        raise InputDataError(
            f"classes {mapped_without} have validation samples mapped as them but no mapped "
            "area; the samples and the map disagree",
            fix="take the map labels of the samples from the same map as the areas",
        )
    if areas.sum() <= 0:
        raise InputDataError("the mapped area is 0", fix="pass the map's class areas")
    return counts.astype(np.float64), codes, areas


def area_estimates(
    confusion: np.ndarray,
    classes: Sequence[int],
    mapped_area: Mapping[int, float],
    *,
    confidence: float = 0.95,
) -> AreaEstimates:
    """Olofsson et al. (2014) estimates from sample counts (rows reference, columns map)."""
    counts, codes, areas = _check_inputs(confusion, classes, mapped_area)
    z = _z(confidence)
    n = counts.T  # the paper's layout: rows = map stratum i, columns = reference class j
    n_i = n.sum(axis=1)
    empty = (n_i == 0) & (areas > 0)
    unassessed = tuple(c for c, e in zip(codes, empty, strict=True) if e)
    unassessed_area = float(areas[empty].sum())
    if unassessed:
        share = unassessed_area / areas.sum()
        warnings.warn(
            f"map class(es) {list(unassessed)} cover {100 * share:.2f}% of the map but hold no "
            "validation sample; the area and accuracy estimates leave that part of the map out",
            SamplingWarning,
            stacklevel=2,
        )
    assessed = (n_i > 0) & (areas > 0)
    total_area = float(areas[assessed].sum())
    if total_area <= 0:
        raise InputDataError(
            "no map class holds a validation sample",
            fix="check that the validation samples fall on mapped pixels",
        )
    weights = np.where(assessed, areas / total_area, 0.0)  # W_i
    with np.errstate(divide="ignore", invalid="ignore"):
        share = np.where(assessed[:, None], n / n_i[:, None], 0.0)  # n_ij / n_i.
        p = weights[:, None] * share  # eq. 4
        diag = np.diag(p)
        p_map = p.sum(axis=1)  # p_i.
        p_ref = p.sum(axis=0)  # p_.j
        overall = float(diag.sum())
        users = np.where(p_map > 0, diag / p_map, np.nan)
        producers = np.where(p_ref > 0, diag / p_ref, np.nan)
        dof = np.where(assessed, n_i - 1.0, np.nan)  # NaN variance where n_i. = 1
        dof = np.where(dof > 0, dof, np.nan)
        u_var = users * (1 - users) / dof  # eq. 6
        oa_var = float(np.nansum(np.where(assessed, weights**2 * u_var, 0.0)))  # eq. 5
        if np.any(assessed & np.isnan(dof)):
            oa_var = math.nan
        cell_var = np.where(assessed[:, None], share * (1 - share) / dof[:, None], 0.0)
        area_var = (weights[:, None] ** 2 * cell_var).sum(axis=0)  # eq. 10, squared
        # eq. 7: N_j. is the mapped area of class j, N_.j the estimated area of class j
        big_n = np.where(assessed, areas, 0.0)
        n_ref = (big_n[:, None] * share).sum(axis=0)  # estimated N_.j
        pa_var = np.full(len(codes), np.nan)
        for j in range(len(codes)):
            if not n_ref[j] > 0:
                continue
            own = big_n[j] ** 2 * (1 - producers[j]) ** 2 * u_var[j] if assessed[j] else 0.0
            others = sum(big_n[i] ** 2 * cell_var[i, j] for i in range(len(codes)) if i != j)
            pa_var[j] = (own + producers[j] ** 2 * others) / n_ref[j] ** 2

    def estimate(value: float, var: float, scale: float = 1.0) -> Estimate:
        se = math.sqrt(var) * scale if var >= 0 else math.nan
        return Estimate(float(value) * scale, se, z * se)

    area_se = np.sqrt(area_var)
    return AreaEstimates(
        classes=codes,
        confidence=confidence,
        mapped_area={c: float(a) for c, a in zip(codes, areas, strict=True)},
        samples={c: int(v) for c, v in zip(codes, n_i, strict=True)},
        proportions=p.T.copy(),
        overall_accuracy=estimate(overall, oa_var),
        users_accuracy={
            c: estimate(users[i], u_var[i]) if assessed[i] else _UNDEFINED
            for i, c in enumerate(codes)
        },
        producers_accuracy={c: estimate(producers[i], pa_var[i]) for i, c in enumerate(codes)},
        area={
            c: Estimate(total_area * p_ref[i], total_area * area_se[i], z * total_area * area_se[i])
            for i, c in enumerate(codes)
        },
        area_proportion={
            c: Estimate(p_ref[i], area_se[i], z * area_se[i]) for i, c in enumerate(codes)
        },
        unassessed_area=unassessed_area,
        unassessed_classes=unassessed,
    )


def area_estimates_from_metrics(
    metrics: ClassificationMetrics, mapped_area: Mapping[int, float], *, confidence: float = 0.95
) -> AreaEstimates:
    """:func:`area_estimates` from a :class:`ClassificationMetrics` confusion matrix."""
    return area_estimates(metrics.confusion, metrics.classes, mapped_area, confidence=confidence)


def mapped_area_of(
    labels: np.ndarray, nodata: float | None, pixel_area: float = 1.0
) -> dict[int, float]:
    """Area of each class in a label map (pixel count times ``pixel_area``), nodata left out."""
    values = np.asarray(labels).ravel()
    if nodata is not None:
        values = values[values != nodata]
    codes, counts = np.unique(values, return_counts=True)
    return {int(c): float(n) * pixel_area for c, n in zip(codes, counts, strict=True)}
