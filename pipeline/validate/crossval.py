"""Accuracy without an independent validation set: k-fold cross-validation and repeated random
splits of a sample table, for any model that ``pipeline.learn`` trains.

Two methods, both seeded (the same seed gives the same folds, models and numbers):

* **k-fold** (``method="kfold"``): ``StratifiedKFold``, or ``StratifiedGroupKFold`` when groups
  are given (samples of one polygon, one place or one sample id are never on both sides: they
  are nearly the same signal, and a split that separates them rewards memorizing places). With
  ``repeats > 1`` the k-fold is run again with seeds ``seed, seed + 1, ...``.
* **repeated random splits** (``method="split"``): ``repeats`` splits with ``train_fraction`` of
  the data for training and the rest for testing, repeat ``r`` seeded ``seed + r``:
  ``StratifiedShuffleSplit`` (the fraction of each class), or ``GroupShuffleSplit`` when groups
  are given (the fraction of the groups; not stratified, scikit-learn has no stratified grouped
  shuffle split).

Every split trains a new model with ``pipeline.learn.train_model`` (the same builder, parameters,
standardization and grid search as a run; its seed is the split's seed) and predicts the held-out
samples. Per split: the scores of :mod:`pipeline.validate.metrics`; across splits: the mean and
95% Student-t interval of :mod:`pipeline.validate.aggregate`. The report
(:func:`write_crossval_report`) is the map-validation report (:func:`write_report`): its main
scores and confusion matrix pool the held-out predictions of all splits (with k-fold, every
sample once per repeat), "Across runs" gives the per-split mean and interval, and its "map" is
the held-out prediction of each sample drawn at the sample's location.
"""

from __future__ import annotations

import json
import math
import warnings
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

import numpy as np
import rasterio
from matplotlib import colormaps
from matplotlib import colors as mcolors
from rasterio.transform import Affine
from sklearn.model_selection import (
    GroupShuffleSplit,
    StratifiedGroupKFold,
    StratifiedKFold,
    StratifiedShuffleSplit,
)

from pipeline.errors import InputDataError
from pipeline.learn import as_model_config, model_input, train_model
from pipeline.learn.config import ModelConfig
from pipeline.model import ClassInfo
from pipeline.samples.tables import SampleTable
from pipeline.storage import atomic_path
from pipeline.validate.aggregate import RunsSummary, aggregate_classification
from pipeline.validate.metrics import ClassificationMetrics, classification_metrics
from pipeline.validate.report import ReportFiles, write_report
from pipeline.warnings import SamplingWarning

__all__ = [
    "FOLDS_JSON",
    "PREDICTIONS_TIF",
    "CrossValPlan",
    "CrossValResult",
    "FoldScore",
    "Split",
    "cross_validate",
    "cross_validate_table",
    "plan_splits",
    "table_groups",
    "write_crossval_report",
]

Method = Literal["kfold", "split"]
GroupBy = Literal["location", "sample", "column", "none"]

FOLDS_JSON = "folds.json"
PREDICTIONS_TIF = "heldout_predictions.tif"
_MAP_SIDE = 160  # pixels on the longer side of the held-out prediction raster
_NODATA = -1


@dataclass(frozen=True)
class CrossValPlan:
    """How to split: ``folds`` for k-fold, ``train_fraction`` for random splits."""

    method: Method = "kfold"
    folds: int = 5
    repeats: int = 1
    train_fraction: float | None = None
    seed: int = 0

    def __post_init__(self) -> None:
        if self.method not in ("kfold", "split"):
            raise InputDataError(
                f"cross-validation method {self.method!r} is unknown",
                fix="use 'kfold' (k-fold) or 'split' (repeated random splits)",
                field="method",
            )
        if self.repeats < 1:
            raise InputDataError(
                f"repeats is {self.repeats}; it must be at least 1",
                fix="give a positive number of repeats",
                field="repeats",
            )
        if self.method == "kfold":
            if self.folds < 2:
                raise InputDataError(
                    f"k-fold cross-validation needs at least 2 folds, not {self.folds}",
                    fix="give folds of 2 or more (5 or 10 are usual)",
                    field="folds",
                )
            if self.train_fraction is not None:
                raise InputDataError(
                    "a training fraction is for repeated random splits, not k-fold",
                    fix="use method 'split' with train_fraction, or drop train_fraction",
                    field="train_fraction",
                )
        else:
            fraction = self.train_fraction
            if fraction is None or not (0.0 < fraction < 1.0):
                raise InputDataError(
                    f"the training fraction of random splits is {fraction}; it must be "
                    "strictly between 0 and 1",
                    fix="give train_fraction such as 0.7 (70% for training, 30% for testing)",
                    field="train_fraction",
                )

    def describe(self, grouped_by: str) -> str:
        grouped = "" if grouped_by == "none" else f", grouped by {grouped_by}"
        if self.method == "kfold":
            repeated = f", repeated {self.repeats} times" if self.repeats > 1 else ""
            return f"{self.folds}-fold cross-validation (stratified{grouped}){repeated}"
        kind = "stratified" if grouped_by == "none" else f"grouped by {grouped_by}"
        return (
            f"{self.repeats} random split(s), {self.train_fraction:g} of the "
            f"{'samples' if grouped_by == 'none' else 'groups'} for training ({kind})"
        )


@dataclass(frozen=True)
class Split:
    """One train/test split: sample indices; ``fold`` is 0 for a random split."""

    repeat: int
    fold: int
    seed: int
    train: np.ndarray
    test: np.ndarray


def _check_groups(plan: CrossValPlan, codes: np.ndarray, groups: np.ndarray | None) -> None:
    units = groups if groups is not None else np.arange(len(codes))
    what = "groups" if groups is not None else "samples"
    n_units = len(np.unique(units))
    if plan.method == "kfold" and n_units < plan.folds:
        raise InputDataError(
            f"{plan.folds}-fold cross-validation needs at least {plan.folds} {what}, the table "
            f"has {n_units}",
            fix="lower the number of folds, or add samples",
            field="folds",
        )
    if plan.method == "split" and n_units < 2:
        raise InputDataError(
            f"a random split needs at least 2 {what}, the table has {n_units}",
            fix="add samples",
            field="train_fraction",
        )
    if plan.method == "kfold":
        for code in np.unique(codes):
            n = len(np.unique(units[codes == code]))
            if n < plan.folds:
                warnings.warn(
                    f"class {int(code)} has {n} {what}, fewer than the {plan.folds} folds: some "
                    "test folds hold none of it (its scores rest on the others)",
                    SamplingWarning,
                    stacklevel=3,
                )


def plan_splits(
    plan: CrossValPlan, codes: np.ndarray, groups: np.ndarray | None = None
) -> list[Split]:
    """The splits of ``plan`` for these class codes (and groups): pure, nothing is trained."""
    codes = np.asarray(codes)
    if groups is not None and np.shape(groups) != codes.shape:
        raise InputDataError(
            f"{np.shape(groups)} group ids for {codes.shape[0]} samples",
            fix="give one group id per sample",
            field="groups",
        )
    _check_groups(plan, codes, groups)
    placeholder = np.zeros((len(codes), 1))
    splits: list[Split] = []
    for repeat in range(plan.repeats):
        seed = plan.seed + repeat
        splitter: Any
        if plan.method == "kfold":
            if groups is None:
                splitter = StratifiedKFold(plan.folds, shuffle=True, random_state=seed)
            else:
                splitter = StratifiedGroupKFold(plan.folds, shuffle=True, random_state=seed)
        elif groups is None:
            splitter = StratifiedShuffleSplit(1, train_size=plan.train_fraction, random_state=seed)
        else:
            splitter = GroupShuffleSplit(1, train_size=plan.train_fraction, random_state=seed)
        try:
            with warnings.catch_warnings():
                # Replaced by the SamplingWarning of _check_groups, which counts groups.
                warnings.filterwarnings("ignore", message="The least populated class")
                pairs = list(splitter.split(placeholder, codes, groups))
        except ValueError as exc:
            raise InputDataError(
                f"{plan.describe('groups' if groups is not None else 'none')} cannot split "
                f"these samples: {exc}",
                fix="change the training fraction or the number of folds, or add samples to "
                "the small classes",
                field="train_fraction" if plan.method == "split" else "folds",
            ) from None
        for fold, (train, test) in enumerate(pairs):
            if len(test) == 0 or len(train) == 0:
                raise InputDataError(
                    f"split {repeat}/{fold} leaves no sample for "
                    f"{'testing' if len(test) == 0 else 'training'}",
                    fix="choose a training fraction further from 0 and 1",
                    field="train_fraction",
                )
            splits.append(Split(repeat, fold, seed, train, test))
    return splits


@dataclass(frozen=True)
class FoldScore:
    """The scores of one split and its predictions of the held-out samples (``split.test``)."""

    split: Split
    metrics: ClassificationMetrics
    predicted: np.ndarray


@dataclass(frozen=True)
class CrossValResult:
    """Per-split scores, the pooled held-out scores and the across-split intervals."""

    plan: CrossValPlan
    grouped_by: str
    n_groups: int
    classes: tuple[int, ...]
    folds: tuple[FoldScore, ...]
    pooled: ClassificationMetrics
    summary: RunsSummary
    estimator: str
    params: dict[str, Any]

    def details(self) -> dict[str, Any]:
        """What the report's "Run" table shows."""
        return {
            "validation": self.plan.describe(self.grouped_by),
            "seed": self.plan.seed,
            "splits": len(self.folds),
            "groups": self.n_groups if self.grouped_by != "none" else "none",
            "estimator": self.estimator,
            "params": self.params,
            "scores": "main scores and confusion matrix: the held-out predictions of all splits "
            "pooled; 'Across runs': mean and 95% interval over the splits",
            "map": "held-out predicted class of each sample, at its location",
        }

    def to_dict(self) -> dict[str, Any]:
        """Every split with its seed, its sizes and its scores (JSON-ready)."""
        return {
            "method": self.plan.method,
            "folds": self.plan.folds if self.plan.method == "kfold" else None,
            "repeats": self.plan.repeats,
            "train_fraction": self.plan.train_fraction,
            "seed": self.plan.seed,
            "grouped_by": self.grouped_by,
            "estimator": self.estimator,
            "params": self.params,
            "splits": [
                {
                    "repeat": f.split.repeat,
                    "fold": f.split.fold,
                    "seed": f.split.seed,
                    "n_train": len(f.split.train),
                    "n_test": len(f.split.test),
                    **f.metrics.to_dict(),
                }
                for f in self.folds
            ],
            "across_splits": self.summary.to_dict(),
        }


def cross_validate(
    features: np.ndarray,
    codes: np.ndarray,
    feature_names: Sequence[str],
    spec: ModelConfig,
    plan: CrossValPlan,
    *,
    groups: np.ndarray | None = None,
    classes: Sequence[int] | None = None,
    grouped_by: str | None = None,
) -> CrossValResult:
    """Train and score one model per split of ``plan`` (classification; codes are integers).

    ``classes`` fixes the classes of the scores (default: the codes present); ``grouped_by``
    names the groups in the report (default "groups", or "none" without groups).
    """
    spec = as_model_config(spec)
    codes = np.asarray(codes)
    classes = tuple(int(c) for c in (classes if classes is not None else np.unique(codes)))
    splits = plan_splits(plan, codes, groups)
    scores: list[FoldScore] = []
    for split in splits:
        model, _contract = train_model(
            spec,
            features[split.train],
            codes[split.train],
            feature_names,
            split.seed,
            task="classification",
            groups=None if groups is None else groups[split.train],
        )
        predicted = np.asarray(model.predict(model_input(model, features[split.test])))
        predicted = predicted.astype(np.int64)
        metrics = classification_metrics(codes[split.test], predicted, classes)
        scores.append(FoldScore(split, metrics, predicted))
    reference = np.concatenate([codes[f.split.test] for f in scores])
    pooled = classification_metrics(
        reference, np.concatenate([f.predicted for f in scores]), classes
    )
    summary = aggregate_classification([f.metrics for f in scores], [s.seed for s in splits])
    return CrossValResult(
        plan=plan,
        grouped_by=grouped_by or ("none" if groups is None else "groups"),
        n_groups=len(np.unique(groups)) if groups is not None else len(codes),
        classes=classes,
        folds=tuple(scores),
        pooled=pooled,
        summary=summary,
        estimator=spec.architecture
        if spec.kind == "torch" and spec.architecture
        else spec.estimator,
        params=spec.params_dict(),
    )


def table_groups(table: SampleTable, group_by: GroupBy) -> np.ndarray | None:
    """The group ids of ``group_by``: the place (longitude/latitude), the sample id, the table's
    group column (``read_sample_table(..., group_column=...)``), or none."""
    if group_by == "location":
        return table.location_ids
    if group_by == "sample":
        return np.asarray(table.sample_ids)
    if group_by == "column":
        if table.groups is None:
            raise InputDataError(
                "grouping by column needs a table read with a group column",
                fix="read the table with group_column='<polygon id column>', or group by location",
                field="group_by",
            )
        return np.asarray(table.groups)
    if group_by == "none":
        return None
    raise InputDataError(
        f"group_by {group_by!r} is unknown",
        fix="use location, sample, column or none",
        field="group_by",
    )


def cross_validate_table(
    table: SampleTable, spec: ModelConfig, plan: CrossValPlan, *, group_by: GroupBy = "location"
) -> CrossValResult:
    """:func:`cross_validate` on a sample table, with its legend's codes and the chosen groups."""
    name = table.group_column if group_by == "column" and table.group_column else group_by
    return cross_validate(
        table.features,
        table.codes,
        table.feature_names,
        spec,
        plan,
        groups=table_groups(table, group_by),
        classes=[c.code for c in table.legend],
        grouped_by=name,
    )


# --- report --------------------------------------------------------------------------------------


def _coloured(legend: Sequence[ClassInfo]) -> list[ClassInfo]:
    """The legend, with distinct colours for classes left at the default grey."""
    palette = colormaps["tab20" if len(legend) > 10 else "tab10"]
    return [
        c
        if c.color.lower() != "#808080"
        else ClassInfo(c.code, c.name, mcolors.to_hex(palette(i % palette.N)))
        for i, c in enumerate(legend)
    ]


def _write_heldout_map(path: Path, table: SampleTable, result: CrossValResult) -> None:
    """The held-out prediction of each sample (its first split that tested it) at its location:
    EPSG:4326 when the table has coordinates, else samples in a square in table order."""
    predicted = np.full(len(table), _NODATA, dtype=np.int32)
    for fold in reversed(result.folds):  # the first split wins
        predicted[fold.split.test] = fold.predicted
    if np.isfinite(table.longitude).all() and np.isfinite(table.latitude).all():
        west, east = float(table.longitude.min()), float(table.longitude.max())
        south, north = float(table.latitude.min()), float(table.latitude.max())
        size = max(east - west, north - south) / (_MAP_SIDE - 1) or 1e-4
        width = round((east - west) / size) + 1
        height = round((north - south) / size) + 1
        # Pixel centres on the samples' extremes: the pixel of a sample is the nearest centre.
        transform = Affine(size, 0.0, west - size / 2, 0.0, -size, north + size / 2)
        crs: str | None = "EPSG:4326"
        cols = np.clip(np.round((table.longitude - west) / size).astype(np.int64), 0, width - 1)
        rows = np.clip(np.round((north - table.latitude) / size).astype(np.int64), 0, height - 1)
    else:
        width = math.ceil(math.sqrt(len(table)))
        height = math.ceil(len(table) / width)
        rows, cols = np.divmod(np.arange(len(table)), width)
        transform = Affine(1.0, 0.0, 0.0, 0.0, -1.0, float(height))
        crs = None
    raster = np.full((height, width), _NODATA, dtype=np.int32)
    raster[rows, cols] = predicted
    with rasterio.open(
        path,
        "w",
        driver="GTiff",
        height=height,
        width=width,
        count=1,
        dtype="int32",
        crs=crs,
        transform=transform,
        nodata=_NODATA,
    ) as dst:
        dst.write(raster, 1)


def write_crossval_report(
    out_dir: Path, table: SampleTable, result: CrossValResult, *, title: str, source: str = ""
) -> ReportFiles:
    """Write the report of :func:`write_report` (metrics.json, report.html, the confusion matrix
    and the sample "map"), ``folds.json`` (every split's scores) and the held-out predictions at
    the sample locations (``heldout_predictions.tif``) into ``out_dir``."""
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    with atomic_path(out_dir / PREDICTIONS_TIF) as tif:
        _write_heldout_map(tif, table, result)
    details: dict[str, Any] = {"samples": len(table), **result.details()}
    if source:
        details["table"] = source
    files = write_report(
        out_dir,
        result.pooled,
        _coloured(table.legend),
        out_dir / PREDICTIONS_TIF,
        None,
        title=title,
        details=details,
        runs=result.summary,
    )
    document = result.to_dict()
    text = json.dumps(document, indent=2, sort_keys=True, allow_nan=False, default=_plain)
    with atomic_path(out_dir / FOLDS_JSON) as tmp:
        tmp.write_text(text + "\n", encoding="utf-8")
    return files


def _plain(value: Any) -> Any:
    if hasattr(value, "tolist"):
        return value.tolist()
    return str(value)
