"""Accuracy of a regression map (a continuous variable) against reference values.

With ``e = predicted - reference`` over the ``n`` validation samples:

* RMSE ``sqrt(mean(e**2))``, MAE ``mean(|e|)``, bias ``mean(e)`` (positive: the map
  over-estimates);
* R^2 ``1 - sum(e**2) / sum((reference - mean(reference))**2)``, the coefficient of
  determination of the map as a predictor (not the squared correlation: it can be negative when
  the map is worse than the reference mean). It is ``NaN`` when every reference value is equal
  (scikit-learn returns 1 or 0 there; an undefined score is not reported as a number);
* Pearson's r between map and reference, ``NaN`` when either is constant.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import numpy as np
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure

from pipeline.errors import InputDataError
from pipeline.storage import atomic_path

__all__ = ["RegressionMetrics", "regression_metrics", "write_scatter"]

#: Above this many samples the scatter plot bins points into hexagons (a cloud of dots hides
#: where most samples are).
HEXBIN_ABOVE = 5000

_DPI = 120


@dataclass(frozen=True)
class RegressionMetrics:
    """Scores of a regression map; ``NaN`` where undefined (see the module docstring)."""

    n_samples: int
    rmse: float
    mae: float
    bias: float
    r2: float
    pearson_r: float
    reference_mean: float
    predicted_mean: float

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready, ``NaN`` as ``None``."""
        return {
            k: (None if isinstance(v, float) and math.isnan(v) else v)
            for k, v in asdict(self).items()
        }

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> RegressionMetrics:
        def num(key: str) -> float:
            value = data[key]
            return math.nan if value is None else float(value)

        return cls(
            n_samples=int(data["n_samples"]),
            rmse=num("rmse"),
            mae=num("mae"),
            bias=num("bias"),
            r2=num("r2"),
            pearson_r=num("pearson_r"),
            reference_mean=num("reference_mean"),
            predicted_mean=num("predicted_mean"),
        )


def _values(values: np.ndarray | Sequence[float], name: str) -> np.ndarray:
    array = np.asarray(values)
    if array.dtype.kind not in "biuf":
        raise InputDataError(
            f"{name} values have dtype {array.dtype}; a regression needs numbers",
            fix="pass the numeric reference and predicted values",
        )
    array = array.astype(np.float64).ravel()
    if not np.all(np.isfinite(array)):
        raise InputDataError(
            f"{int((~np.isfinite(array)).sum())} {name} value(s) are NaN or infinite",
            fix="drop the samples without a value (e.g. unmapped pixels) before scoring",
        )
    return array


def regression_metrics(
    reference: np.ndarray | Sequence[float], predicted: np.ndarray | Sequence[float]
) -> RegressionMetrics:
    """Score ``predicted`` against ``reference``, sample by sample (same shape)."""
    ref_in, pred_in = np.asarray(reference), np.asarray(predicted)
    if ref_in.shape != pred_in.shape:
        raise InputDataError(
            f"reference and predicted values differ in size: {ref_in.size} reference "
            f"(shape {ref_in.shape}) and {pred_in.size} predicted (shape {pred_in.shape})",
            fix="pass one predicted value per reference sample, in the same order",
        )
    if ref_in.size == 0:
        raise InputDataError(
            "no samples to assess: reference and predicted values are empty",
            fix="check that the validation samples overlap the map",
        )
    ref = _values(ref_in, "reference")
    pred = _values(pred_in, "predicted")
    error = pred - ref
    ss_res = float(np.sum(error**2))
    ss_tot = float(np.sum((ref - ref.mean()) ** 2))
    # Exact tests: the mean of equal floats can differ from them by rounding, so ss_tot > 0
    # would not catch a constant reference.
    constant_ref = bool(ref.min() == ref.max())
    r2 = math.nan if constant_ref or ss_tot == 0.0 else 1.0 - ss_res / ss_tot
    varying = not constant_ref and bool(pred.min() != pred.max())
    pearson = float(np.corrcoef(ref, pred)[0, 1]) if varying else math.nan
    return RegressionMetrics(
        n_samples=int(ref.size),
        rmse=float(np.sqrt(np.mean(error**2))),
        mae=float(np.mean(np.abs(error))),
        bias=float(np.mean(error)),
        r2=float(r2),
        pearson_r=pearson,
        reference_mean=float(ref.mean()),
        predicted_mean=float(pred.mean()),
    )


def _fmt(value: float) -> str:
    return "n/a" if math.isnan(value) else f"{value:.4g}"


def render_scatter(
    path: Path,
    reference: np.ndarray,
    predicted: np.ndarray,
    metrics: RegressionMetrics,
    *,
    title: str,
    units: str = "",
) -> None:
    """Draw the predicted-vs-reference plot to ``path`` (PNG), with the 1:1 line and a fit."""
    ref = np.asarray(reference, dtype=np.float64).ravel()
    pred = np.asarray(predicted, dtype=np.float64).ravel()
    fig = Figure(figsize=(6.5, 6.0), dpi=_DPI, layout="constrained", facecolor="white")
    FigureCanvasAgg(fig)
    ax = fig.add_subplot()
    low = float(min(ref.min(), pred.min()))
    high = float(max(ref.max(), pred.max()))
    pad = 0.03 * (high - low) if high > low else 1.0
    low, high = low - pad, high + pad
    if ref.size > HEXBIN_ABOVE:
        image = ax.hexbin(
            ref,
            pred,
            gridsize=60,
            mincnt=1,
            bins="log",
            cmap="viridis",
            extent=(low, high, low, high),
        )
        fig.colorbar(image, ax=ax, shrink=0.8).set_label("samples per cell")
    else:
        ax.scatter(ref, pred, s=10, alpha=0.5, color="#1f78b4", edgecolors="none")
    ax.plot([low, high], [low, high], color="0.3", linestyle="--", linewidth=1, label="1:1")
    if ref.std() > 0:
        slope, intercept = np.polyfit(ref, pred, 1)
        ax.plot(
            [low, high],
            [intercept + slope * low, intercept + slope * high],
            color="#d95f02",
            linewidth=1.2,
            label=f"fit: y = {slope:.3g} x {'+' if intercept >= 0 else '−'} {abs(intercept):.3g}",
        )
    ax.set_xlim(low, high)
    ax.set_ylim(low, high)
    ax.set_aspect("equal")
    suffix = f" ({units})" if units else ""
    ax.set_xlabel(f"reference{suffix}")
    ax.set_ylabel(f"map (predicted){suffix}")
    ax.legend(loc="upper left", fontsize=8, frameon=False)
    ax.text(
        0.98,
        0.02,
        f"n = {metrics.n_samples}\nRMSE = {_fmt(metrics.rmse)}\nMAE = {_fmt(metrics.mae)}\n"
        f"bias = {_fmt(metrics.bias)}\nR² = {_fmt(metrics.r2)}",
        transform=ax.transAxes,
        ha="right",
        va="bottom",
        fontsize=9,
        bbox={"facecolor": "white", "edgecolor": "0.7", "boxstyle": "round"},
    )
    ax.set_title(title, fontsize=11)
    fig.savefig(path, format="png", dpi=_DPI, facecolor="white")


def write_scatter(
    path: Path,
    reference: np.ndarray | Sequence[float],
    predicted: np.ndarray | Sequence[float],
    *,
    title: str,
    units: str = "",
) -> RegressionMetrics:
    """Score the samples and write the scatter PNG atomically; returns the metrics."""
    metrics = regression_metrics(reference, predicted)
    with atomic_path(Path(path)) as tmp:
        render_scatter(
            tmp, np.asarray(reference), np.asarray(predicted), metrics, title=title, units=units
        )
    return metrics
