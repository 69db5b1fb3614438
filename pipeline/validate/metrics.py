"""Accuracy of a classified map against reference labels: confusion matrix and the usual scores.

Conventions (those of the remote-sensing accuracy-assessment literature):

* the confusion matrix has one row per **reference** class and one column per **map**
  (predicted) class, in the order of ``classes``; cell ``[i, j]`` counts the samples of
  reference class ``classes[i]`` that the map labels ``classes[j]``;
* **precision** is the user's accuracy, ``diag / column sum``: of the pixels the map labels
  ``c``, the share that are ``c`` on the ground;
* **recall** is the producer's accuracy, ``diag / row sum``: of the reference samples of ``c``,
  the share the map labels ``c``;
* **F1** is their harmonic mean, computed as ``2 TP / (2 TP + FP + FN)``.

Undefined scores are ``NaN``, never 0, so that "never predicted" cannot be mistaken for "always
wrong" and does not drag averages down silently:

* precision of a class the map never predicts (empty column) is ``NaN``;
* recall of a class absent from the reference (empty row, possible when ``classes`` is given)
  is ``NaN``;
* F1 is ``NaN`` only for a class absent from both; a class in the reference that the map never
  predicts has F1 = 0 (``TP = 0``, ``FN > 0``);
* kappa is ``NaN`` when chance agreement is 1 (reference and map hold one and the same class);
* the macro F1 is the mean of the defined per-class F1 scores.

These are the values of ``sklearn.metrics`` with ``zero_division=np.nan`` (and
``replace_undefined_by=np.nan`` for kappa); the tests check it. In JSON, ``NaN`` is written as
``null``.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from pipeline.errors import InputDataError

__all__ = ["ClassificationMetrics", "classification_metrics"]

#: How many offending codes an error message lists before it abbreviates.
_MAX_CODES_SHOWN = 20


def _nan_to_none(value: float) -> float | None:
    return None if math.isnan(value) else float(value)


def _none_to_nan(value: float | None) -> float:
    return math.nan if value is None else float(value)


def _same_float(a: float, b: float) -> bool:
    return (math.isnan(a) and math.isnan(b)) or a == b


@dataclass(frozen=True)
class ClassificationMetrics:
    """Confusion matrix and accuracy scores of a map against reference labels.

    See the module docstring for the conventions (rows = reference, columns = map) and for
    which scores are ``NaN`` when undefined. Instances compare equal when every field is equal,
    ``NaN`` matching ``NaN``; they are not hashable (they hold an array).
    """

    classes: tuple[int, ...]
    confusion: np.ndarray
    overall_accuracy: float
    kappa: float
    precision: dict[int, float]
    recall: dict[int, float]
    f1: dict[int, float]
    support: dict[int, int]
    n_samples: int

    def __post_init__(self) -> None:
        # A private, read-only copy: the instance is frozen, its matrix should be too.
        confusion = np.array(self.confusion, dtype=np.int64, copy=True)
        k = len(self.classes)
        if confusion.shape != (k, k):
            raise ValueError(
                f"confusion matrix has shape {confusion.shape}, expected ({k}, {k}) for {k} classes"
            )
        confusion.setflags(write=False)
        object.__setattr__(self, "confusion", confusion)

    @property
    def macro_f1(self) -> float:
        """Mean F1 over the classes where it is defined (present in the reference or the map)."""
        defined = [v for v in self.f1.values() if not math.isnan(v)]
        return float(np.mean(defined)) if defined else math.nan

    def __eq__(self, other: object) -> bool:
        if not isinstance(other, ClassificationMetrics):
            return NotImplemented

        def same_scores(a: Mapping[int, float], b: Mapping[int, float]) -> bool:
            return a.keys() == b.keys() and all(_same_float(a[c], b[c]) for c in a)

        return (
            self.classes == other.classes
            and np.array_equal(self.confusion, other.confusion)
            and _same_float(self.overall_accuracy, other.overall_accuracy)
            and _same_float(self.kappa, other.kappa)
            and same_scores(self.precision, other.precision)
            and same_scores(self.recall, other.recall)
            and same_scores(self.f1, other.f1)
            and self.support == other.support
            and self.n_samples == other.n_samples
        )

    __hash__ = None  # type: ignore[assignment]

    def to_dict(self) -> dict[str, Any]:
        """A JSON-ready dict: plain Python numbers, class codes as strings, ``NaN`` as ``None``."""

        def per_class(values: Mapping[int, float]) -> dict[str, float | None]:
            return {str(c): _nan_to_none(values[c]) for c in self.classes}

        return {
            "classes": [int(c) for c in self.classes],
            "confusion": self.confusion.tolist(),
            "confusion_axes": {"rows": "reference", "columns": "map"},
            "overall_accuracy": _nan_to_none(self.overall_accuracy),
            "kappa": _nan_to_none(self.kappa),
            "macro_f1": _nan_to_none(self.macro_f1),
            "precision": per_class(self.precision),
            "recall": per_class(self.recall),
            "f1": per_class(self.f1),
            "support": {str(c): int(self.support[c]) for c in self.classes},
            "n_samples": int(self.n_samples),
        }

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> ClassificationMetrics:
        """Rebuild the metrics from :meth:`to_dict` output (for example a loaded metrics.json)."""
        classes = tuple(int(c) for c in data["classes"])

        def per_class(values: Mapping[str, float | None]) -> dict[int, float]:
            return {c: _none_to_nan(values[str(c)]) for c in classes}

        return cls(
            classes=classes,
            confusion=np.asarray(data["confusion"], dtype=np.int64).reshape(
                len(classes), len(classes)
            ),
            overall_accuracy=_none_to_nan(data["overall_accuracy"]),
            kappa=_none_to_nan(data["kappa"]),
            precision=per_class(data["precision"]),
            recall=per_class(data["recall"]),
            f1=per_class(data["f1"]),
            support={c: int(data["support"][str(c)]) for c in classes},
            n_samples=int(data["n_samples"]),
        )


def _codes_text(codes: np.ndarray | Sequence[int]) -> str:
    shown = [int(c) for c in list(codes)[:_MAX_CODES_SHOWN]]
    more = len(codes) - len(shown)
    text = ", ".join(str(c) for c in shown)
    return f"{text} and {more} more" if more > 0 else text


def _as_labels(values: np.ndarray | Sequence[int], name: str) -> np.ndarray:
    """The labels as a flat int64 array; integral floats are accepted, anything else is not."""
    array = np.asarray(values)
    if array.dtype == np.bool_ or array.dtype.kind in "iu":
        return array.astype(np.int64, copy=False).ravel()
    if array.dtype.kind == "f":
        if not np.all(np.isfinite(array)):
            raise InputDataError(
                f"{name} labels contain NaN or infinite values",
                fix="drop the samples without a label before computing the accuracy",
            )
        if not np.all(array == np.round(array)):
            raise InputDataError(
                f"{name} labels contain non-integer values; class codes must be integers",
                fix="pass the integer class codes, not scores or probabilities",
            )
        return array.astype(np.int64).ravel()
    raise InputDataError(
        f"{name} labels have dtype {array.dtype}; class codes must be integers",
        fix="convert the labels to their integer class codes",
    )


def classification_metrics(
    reference: np.ndarray | Sequence[int],
    predicted: np.ndarray | Sequence[int],
    classes: Sequence[int] | None = None,
) -> ClassificationMetrics:
    """Compare ``predicted`` (map) labels with ``reference`` labels, sample by sample.

    ``reference`` and ``predicted`` hold one integer class code per sample (any shape, the same
    for both). ``classes`` fixes the classes and the row/column order of the matrix; by default
    it is the sorted union of the codes in both. Every code of both inputs must be in
    ``classes``; classes may be absent from the data (their row/column is zero and their
    scores ``NaN`` where undefined, see the module docstring).

    Raises :class:`~pipeline.errors.InputDataError` for empty or differently sized inputs,
    non-integer labels, duplicate classes, and codes that are not among ``classes``.
    """
    ref = np.asarray(reference)
    pred = np.asarray(predicted)
    if ref.shape != pred.shape:
        raise InputDataError(
            f"reference and predicted labels differ in size: {ref.size} reference "
            f"(shape {ref.shape}) and {pred.size} predicted (shape {pred.shape})",
            fix="pass one predicted label per reference sample, in the same order",
        )
    if ref.size == 0:
        raise InputDataError(
            "no samples to assess: reference and predicted labels are empty",
            fix="check that the validation samples overlap the map and carry a label",
        )
    ref = _as_labels(ref, "reference")
    pred = _as_labels(pred, "predicted")

    if classes is None:
        codes = np.union1d(ref, pred)
    else:
        codes = np.asarray([int(c) for c in classes], dtype=np.int64)
        if codes.size == 0:
            raise InputDataError("the list of classes is empty", fix="give at least one class")
        unique, counts = np.unique(codes, return_counts=True)
        if np.any(counts > 1):
            raise InputDataError(
                f"classes are listed more than once: {_codes_text(unique[counts > 1])}",
                fix="list each class code once",
            )
        for name, labels in (("predicted", pred), ("reference", ref)):
            unknown = np.setdiff1d(labels, codes)
            if unknown.size:
                raise InputDataError(
                    f"{name} labels contain codes {_codes_text(unknown)} that are not among "
                    f"the classes ({_codes_text(codes)})",
                    fix=(
                        f"add the codes to the legend, or drop the samples whose {name} label "
                        "is not a class (a nodata value, for example)"
                    ),
                )

    k = codes.size
    # Index of each code in the (possibly unsorted) ``codes``: search the sorted copy.
    order = np.argsort(codes, kind="stable")
    ref_idx = order[np.searchsorted(codes[order], ref)]
    pred_idx = order[np.searchsorted(codes[order], pred)]
    confusion = np.bincount(ref_idx * k + pred_idx, minlength=k * k).reshape(k, k)
    confusion = confusion.astype(np.int64, copy=False)

    n = int(ref.size)
    diag = np.diag(confusion).astype(np.float64)
    rows = confusion.sum(axis=1).astype(np.float64)  # reference totals (support)
    cols = confusion.sum(axis=0).astype(np.float64)  # map totals

    overall = float(diag.sum() / n)
    chance = float((rows * cols).sum() / (float(n) * float(n)))
    kappa = math.nan if chance >= 1.0 else (overall - chance) / (1.0 - chance)

    with np.errstate(divide="ignore", invalid="ignore"):
        precision = np.where(cols > 0, diag / cols, np.nan)
        recall = np.where(rows > 0, diag / rows, np.nan)
        f1_denominator = rows + cols  # = 2 TP + FP + FN
        f1 = np.where(f1_denominator > 0, 2.0 * diag / f1_denominator, np.nan)

    class_codes = tuple(int(c) for c in codes)
    return ClassificationMetrics(
        classes=class_codes,
        confusion=confusion,
        overall_accuracy=overall,
        kappa=float(kappa),
        precision={c: float(v) for c, v in zip(class_codes, precision, strict=True)},
        recall={c: float(v) for c, v in zip(class_codes, recall, strict=True)},
        f1={c: float(v) for c, v in zip(class_codes, f1, strict=True)},
        support={c: int(v) for c, v in zip(class_codes, rows, strict=True)},
        n_samples=n,
    )
