"""Metrics across repeated runs (one split/train/validate per seed): mean and 95% t-interval.

For ``n`` runs with values ``x_1..x_n`` of a score: mean ``m``, sample standard deviation ``s``
(``n - 1`` in the denominator) and the interval ``m +/- t(0.975, n - 1) * s / sqrt(n)``: the
Student-t interval of the mean score over random splits. Runs where a score is undefined
(``NaN``, e.g. the precision of a class a run never predicts) are left out of that score's
interval, and ``n`` says how many runs it rests on. With fewer than two defined values the
half-width is ``NaN``: one run says nothing about the spread.

The runs share the reference data, so they are not independent samples of the population: the
interval measures how much the scores move with the split and the model's randomness, which is
what iota2, sits and most papers report as "mean +/- CI over N runs", not a design-based
confidence interval of map accuracy (for that, see :mod:`pipeline.validate.area`).
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
from scipy import stats

from pipeline.validate.metrics import ClassificationMetrics
from pipeline.validate.regression import RegressionMetrics

__all__ = [
    "Interval",
    "RunsSummary",
    "aggregate_classification",
    "aggregate_regression",
    "t_interval",
]


def _clean(value: float) -> float | None:
    return None if math.isnan(value) else float(value)


@dataclass(frozen=True)
class Interval:
    """Mean of a score across runs and the half-width of its t-interval."""

    mean: float
    half_width: float
    std: float
    n: int
    confidence: float = 0.95

    @property
    def low(self) -> float:
        return self.mean - self.half_width

    @property
    def high(self) -> float:
        return self.mean + self.half_width

    def to_dict(self) -> dict[str, float | int | None]:
        return {
            "mean": _clean(self.mean),
            "ci_half_width": _clean(self.half_width),
            "ci_low": _clean(self.low),
            "ci_high": _clean(self.high),
            "std": _clean(self.std),
            "n": self.n,
        }


def t_interval(values: Sequence[float] | np.ndarray, confidence: float = 0.95) -> Interval:
    """Mean and Student-t interval of ``values``, NaNs left out (see the module docstring)."""
    if not 0 < confidence < 1:
        raise ValueError(f"confidence must be in (0, 1), got {confidence}")
    array = np.asarray(values, dtype=np.float64).ravel()
    defined = array[~np.isnan(array)]
    n = int(defined.size)
    if n == 0:
        return Interval(math.nan, math.nan, math.nan, 0, confidence)
    mean = float(defined.mean())
    if n < 2:
        return Interval(mean, math.nan, math.nan, n, confidence)
    std = float(defined.std(ddof=1))
    t = float(stats.t.ppf(0.5 + confidence / 2, df=n - 1))
    return Interval(mean, t * std / math.sqrt(n), std, n, confidence)


@dataclass(frozen=True)
class RunsSummary:
    """Scores across runs: ``overall`` by name, ``per_class`` by score name then class code."""

    seeds: tuple[int, ...]
    overall: dict[str, Interval]
    per_class: dict[str, dict[int, Interval]] = field(default_factory=dict)
    confidence: float = 0.95

    @property
    def n_runs(self) -> int:
        return len(self.seeds)

    def to_dict(self) -> dict[str, Any]:
        return {
            "runs": self.n_runs,
            "seeds": list(self.seeds),
            "confidence": self.confidence,
            "interval": "Student-t interval of the mean across runs",
            "overall": {k: v.to_dict() for k, v in self.overall.items()},
            "per_class": {
                name: {str(c): v.to_dict() for c, v in values.items()}
                for name, values in self.per_class.items()
            },
        }


def _check_seeds(n: int, seeds: Sequence[int] | None) -> tuple[int, ...]:
    if n == 0:
        raise ValueError("no runs to aggregate")
    if seeds is None:
        return tuple(range(n))
    if len(seeds) != n:
        raise ValueError(f"{len(seeds)} seeds for {n} runs")
    return tuple(int(s) for s in seeds)


def aggregate_classification(
    runs: Sequence[ClassificationMetrics],
    seeds: Sequence[int] | None = None,
    confidence: float = 0.95,
) -> RunsSummary:
    """Overall accuracy, kappa, macro F1 and per-class precision/recall/F1 across runs.

    A class missing from a run's classes counts as undefined (``NaN``) in that run.
    """
    used = _check_seeds(len(runs), seeds)
    overall = {
        name: t_interval([getattr(m, name) for m in runs], confidence)
        for name in ("overall_accuracy", "kappa", "macro_f1")
    }
    classes = sorted({c for m in runs for c in m.classes})
    per_class: dict[str, dict[int, Interval]] = {}
    for name in ("precision", "recall", "f1"):
        scores: list[Mapping[int, float]] = [getattr(m, name) for m in runs]
        per_class[name] = {
            c: t_interval([s.get(c, math.nan) for s in scores], confidence) for c in classes
        }
    return RunsSummary(used, overall, per_class, confidence)


def aggregate_regression(
    runs: Sequence[RegressionMetrics],
    seeds: Sequence[int] | None = None,
    confidence: float = 0.95,
) -> RunsSummary:
    """RMSE, MAE, bias, R^2 and Pearson's r across runs."""
    used = _check_seeds(len(runs), seeds)
    overall = {
        name: t_interval([getattr(m, name) for m in runs], confidence)
        for name in ("rmse", "mae", "bias", "r2", "pearson_r")
    }
    return RunsSummary(used, overall, {}, confidence)
