"""classification_metrics against sklearn.metrics and against hand-computed values."""

from __future__ import annotations

import json
import math
import warnings
from typing import Any

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from hypothesis.extra.numpy import arrays
from sklearn.exceptions import UndefinedMetricWarning
from sklearn.metrics import (
    accuracy_score,
    cohen_kappa_score,
    confusion_matrix,
    f1_score,
    precision_recall_fscore_support,
)

from pipeline.errors import InputDataError
from pipeline.validate.metrics import ClassificationMetrics, classification_metrics

# --------------------------------------------------------------------------------------------
# property tests: equal to sklearn on random labels


@st.composite
def labelled_samples(draw: st.DrawFn) -> tuple[list[int], np.ndarray, np.ndarray]:
    """Class codes (unsorted, possibly negative or > 255) and reference/predicted labels."""
    codes = draw(st.lists(st.integers(-5, 300), min_size=1, max_size=8, unique=True))
    n = draw(st.integers(1, 300))
    reference = draw(arrays(np.int64, n, elements=st.sampled_from(codes)))
    predicted = draw(arrays(np.int64, n, elements=st.sampled_from(codes)))
    return codes, reference, predicted


def _sklearn_reference(
    reference: np.ndarray, predicted: np.ndarray, labels: list[int]
) -> dict[str, Any]:
    with warnings.catch_warnings():
        # sklearn warns when kappa is undefined and when the data hold a single label; the
        # values are what we compare.
        warnings.simplefilter("ignore", UndefinedMetricWarning)
        warnings.filterwarnings("ignore", "A single label was found", UserWarning)
        kappa = cohen_kappa_score(reference, predicted, labels=labels, replace_undefined_by=np.nan)
        precision, recall, f1, support = precision_recall_fscore_support(
            reference, predicted, labels=labels, zero_division=np.nan
        )
        return {
            "confusion": confusion_matrix(reference, predicted, labels=labels),
            "oa": accuracy_score(reference, predicted),
            "kappa": kappa,
            "precision": precision,
            "recall": recall,
            "f1": f1,
            "support": support,
        }


def _assert_matches_sklearn(
    metrics: ClassificationMetrics, reference: np.ndarray, predicted: np.ndarray
) -> None:
    labels = list(metrics.classes)
    expected = _sklearn_reference(reference, predicted, labels)
    np.testing.assert_array_equal(metrics.confusion, expected["confusion"])
    assert metrics.confusion.dtype == np.int64
    assert metrics.overall_accuracy == pytest.approx(expected["oa"], abs=1e-12)
    np.testing.assert_allclose(metrics.kappa, expected["kappa"], atol=1e-12, equal_nan=True)
    for name in ("precision", "recall", "f1"):
        ours = np.array([getattr(metrics, name)[c] for c in labels])
        np.testing.assert_allclose(ours, expected[name], atol=1e-12, equal_nan=True, err_msg=name)
    assert [metrics.support[c] for c in labels] == list(expected["support"])
    assert metrics.n_samples == reference.size


@settings(max_examples=200, deadline=None)
@given(labelled_samples())
def test_matches_sklearn_with_default_classes(
    sample: tuple[list[int], np.ndarray, np.ndarray],
) -> None:
    _, reference, predicted = sample
    metrics = classification_metrics(reference, predicted)
    assert metrics.classes == tuple(int(c) for c in np.union1d(reference, predicted))
    _assert_matches_sklearn(metrics, reference, predicted)
    # Every class is in the reference or the map, so every F1 is defined and the macro mean is
    # sklearn's.
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", "A single label was found", UserWarning)
        expected_macro = f1_score(reference, predicted, average="macro", zero_division=np.nan)
    assert metrics.macro_f1 == pytest.approx(expected_macro, abs=1e-12)


@settings(max_examples=200, deadline=None)
@given(labelled_samples())
def test_matches_sklearn_with_given_unsorted_classes(
    sample: tuple[list[int], np.ndarray, np.ndarray],
) -> None:
    # ``codes`` is in drawn (unsorted) order and may hold classes absent from both inputs.
    codes, reference, predicted = sample
    metrics = classification_metrics(reference, predicted, classes=codes)
    assert metrics.classes == tuple(codes)
    _assert_matches_sklearn(metrics, reference, predicted)


@settings(max_examples=100, deadline=None)
@given(labelled_samples())
def test_to_dict_is_strict_json_and_round_trips(
    sample: tuple[list[int], np.ndarray, np.ndarray],
) -> None:
    codes, reference, predicted = sample
    metrics = classification_metrics(reference, predicted, classes=codes)
    text = json.dumps(metrics.to_dict(), allow_nan=False)  # NaN must have become null
    loaded = json.loads(text)
    assert set(loaded["precision"]) == {str(c) for c in codes}
    assert ClassificationMetrics.from_dict(loaded) == metrics


# --------------------------------------------------------------------------------------------
# hand-computed examples


def test_hand_computed_3x3() -> None:
    # Samples (reference, map), 10 in all:
    #   (1,1) x3  (1,2) x1
    #   (2,1) x1  (2,2) x2  (2,3) x1
    #   (3,3) x2
    pairs = [(1, 1)] * 3 + [(1, 2)] + [(2, 1)] + [(2, 2)] * 2 + [(2, 3)] + [(3, 3)] * 2
    reference = np.array([r for r, _ in pairs])
    predicted = np.array([p for _, p in pairs])
    metrics = classification_metrics(reference[::-1], predicted[::-1])  # order is irrelevant

    # rows = reference, columns = map
    #          map 1  map 2  map 3 | row total
    # ref 1      3      1      0   |   4
    # ref 2      1      2      1   |   4
    # ref 3      0      0      2   |   2
    # col tot    4      3      3   |  10
    assert metrics.classes == (1, 2, 3)
    np.testing.assert_array_equal(metrics.confusion, [[3, 1, 0], [1, 2, 1], [0, 0, 2]])
    assert metrics.n_samples == 10
    assert metrics.support == {1: 4, 2: 4, 3: 2}

    # OA = (3 + 2 + 2) / 10 = 0.7
    assert metrics.overall_accuracy == pytest.approx(0.7)
    # chance agreement pe = (4*4 + 4*3 + 2*3) / 10^2 = 34/100 = 0.34
    # kappa = (0.7 - 0.34) / (1 - 0.34) = 0.36 / 0.66 = 6/11
    assert metrics.kappa == pytest.approx(6 / 11)
    # precision (user's) = diag / column total = 3/4, 2/3, 2/3
    assert metrics.precision == pytest.approx({1: 3 / 4, 2: 2 / 3, 3: 2 / 3})
    # recall (producer's) = diag / row total = 3/4, 2/4, 2/2
    assert metrics.recall == pytest.approx({1: 3 / 4, 2: 1 / 2, 3: 1.0})
    # F1 = 2 TP / (row + column) = 6/8, 4/7, 4/5
    assert metrics.f1 == pytest.approx({1: 3 / 4, 2: 4 / 7, 3: 4 / 5})
    # macro F1 = (3/4 + 4/7 + 4/5) / 3 = (105 + 80 + 112) / 140 / 3 = 99/140
    assert metrics.macro_f1 == pytest.approx(99 / 140)


def test_class_never_predicted_has_nan_precision_not_zero() -> None:
    # reference 1 1 2 3, map 1 1 2 2: class 3 is never predicted.
    #          map 1  map 2  map 3
    # ref 1      2      0      0
    # ref 2      0      1      0
    # ref 3      0      1      0
    metrics = classification_metrics([1, 1, 2, 3], [1, 1, 2, 2], classes=[1, 2, 3])
    np.testing.assert_array_equal(metrics.confusion, [[2, 0, 0], [0, 1, 0], [0, 1, 0]])
    assert math.isnan(metrics.precision[3])  # column 3 is empty: undefined, not 0
    assert metrics.recall[3] == 0.0  # one reference sample, missed
    assert metrics.f1[3] == 0.0  # 2*0 / (1 + 0)
    assert metrics.precision[2] == pytest.approx(1 / 2)
    assert metrics.to_dict()["precision"]["3"] is None


def test_class_absent_from_both_is_nan_and_left_out_of_macro_f1() -> None:
    metrics = classification_metrics([1, 2, 2], [1, 2, 1], classes=[1, 2, 9])
    assert metrics.support[9] == 0
    assert math.isnan(metrics.precision[9])
    assert math.isnan(metrics.recall[9])
    assert math.isnan(metrics.f1[9])
    # F1: class 1 = 2*1/(1+2) = 2/3, class 2 = 2*1/(2+1) = 2/3; class 9 not averaged.
    assert metrics.macro_f1 == pytest.approx(2 / 3)


def test_perfect_and_single_class_kappa() -> None:
    assert classification_metrics([1, 2, 3], [1, 2, 3]).kappa == pytest.approx(1.0)
    single = classification_metrics([4, 4, 4], [4, 4, 4])
    assert single.overall_accuracy == 1.0
    assert math.isnan(single.kappa)  # chance agreement is 1: undefined
    assert single.to_dict()["kappa"] is None


def test_accepts_any_shape_and_integral_floats() -> None:
    reference = np.array([[1, 2], [3, 3]], dtype=np.uint8)
    predicted = np.array([[1.0, 2.0], [3.0, 1.0]])
    metrics = classification_metrics(reference, predicted)
    assert metrics.n_samples == 4
    assert metrics.overall_accuracy == pytest.approx(0.75)


def test_metrics_are_frozen_and_read_only() -> None:
    metrics = classification_metrics([1, 2], [1, 2])
    with pytest.raises(ValueError, match="read-only"):
        metrics.confusion[0, 0] = 5
    with pytest.raises(AttributeError):
        metrics.kappa = 0.0  # type: ignore[misc]


# --------------------------------------------------------------------------------------------
# errors


def test_empty_inputs() -> None:
    with pytest.raises(InputDataError, match="empty"):
        classification_metrics(np.array([], dtype=int), np.array([], dtype=int))


def test_mismatched_lengths() -> None:
    with pytest.raises(InputDataError, match=r"3 reference .* 2 predicted"):
        classification_metrics([1, 2, 3], [1, 2])


def test_predicted_codes_not_in_classes_are_named() -> None:
    with pytest.raises(InputDataError, match=r"predicted labels contain codes 0, 7 ") as info:
        classification_metrics([1, 2, 3, 3], [1, 7, 0, 3], classes=[1, 2, 3])
    assert info.value.fix is not None


def test_reference_codes_not_in_classes_are_named() -> None:
    with pytest.raises(InputDataError, match=r"reference labels contain codes 5 "):
        classification_metrics([1, 5], [1, 2], classes=[1, 2])


def test_many_unknown_codes_are_abbreviated() -> None:
    predicted = np.arange(100, 150)
    with pytest.raises(InputDataError, match="and 30 more"):
        classification_metrics(np.ones(50, dtype=int), predicted, classes=[1])


def test_duplicate_and_empty_classes() -> None:
    with pytest.raises(InputDataError, match="more than once: 2"):
        classification_metrics([1, 2], [1, 2], classes=[1, 2, 2])
    with pytest.raises(InputDataError, match="classes is empty"):
        classification_metrics([1, 2], [1, 2], classes=[])


@pytest.mark.parametrize(
    ("values", "message"),
    [
        (np.array([1.0, 2.5]), "non-integer"),
        (np.array([1.0, np.nan]), "NaN"),
        (np.array(["a", "b"]), "dtype"),
    ],
)
def test_non_integer_labels(values: np.ndarray, message: str) -> None:
    with pytest.raises(InputDataError, match=message):
        classification_metrics([1, 2], values)
