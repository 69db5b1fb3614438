"""Mean and Student-t interval of scores across runs."""

from __future__ import annotations

import math

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from scipy import stats

from pipeline.validate.aggregate import (
    aggregate_classification,
    aggregate_regression,
    t_interval,
)
from pipeline.validate.metrics import classification_metrics
from pipeline.validate.regression import regression_metrics


def test_hand_computed_interval() -> None:
    # mean 0.8, sample std 0.1 (values 0.7, 0.8, 0.9), t(0.975, 2) = 4.302652729...
    interval = t_interval([0.7, 0.8, 0.9])
    assert interval.mean == pytest.approx(0.8)
    assert interval.std == pytest.approx(0.1)
    assert interval.half_width == pytest.approx(4.302652729911275 * 0.1 / math.sqrt(3))
    assert interval.n == 3


@settings(max_examples=100, deadline=None)
@given(values=st.lists(st.floats(0, 1), min_size=2, max_size=30), level=st.floats(0.5, 0.99))
def test_matches_scipy(values: list[float], level: float) -> None:
    interval = t_interval(values, level)
    if np.std(values) == 0:
        assert interval.half_width == pytest.approx(0.0, abs=1e-12)
        return
    low, high = stats.t.interval(
        level, df=len(values) - 1, loc=np.mean(values), scale=stats.sem(values)
    )
    assert interval.low == pytest.approx(low, abs=1e-9)
    assert interval.high == pytest.approx(high, abs=1e-9)


def test_nan_runs_are_left_out_and_counted() -> None:
    interval = t_interval([0.5, math.nan, 0.7])
    assert interval.n == 2
    assert interval.mean == pytest.approx(0.6)
    one = t_interval([0.5, math.nan])
    assert one.n == 1 and one.mean == 0.5 and math.isnan(one.half_width)
    none = t_interval([math.nan])
    assert none.n == 0 and math.isnan(none.mean)
    assert none.to_dict()["mean"] is None


def test_classification_runs() -> None:
    runs = [
        classification_metrics([1, 1, 2, 2], [1, 1, 2, 2]),
        classification_metrics([1, 1, 2, 2], [1, 2, 2, 2]),
        classification_metrics([1, 1, 2, 3], [1, 1, 2, 2]),  # class 3 only in this run
    ]
    summary = aggregate_classification(runs, seeds=[0, 1, 2])
    assert summary.n_runs == 3
    oa = summary.overall["overall_accuracy"]
    assert oa.mean == pytest.approx((1.0 + 0.75 + 0.75) / 3)
    assert oa.n == 3
    # class 3: recall defined (0) in the third run only; the others count it as undefined
    assert summary.per_class["recall"][3].n == 1
    assert summary.per_class["recall"][3].mean == 0.0
    document = summary.to_dict()
    assert document["seeds"] == [0, 1, 2]
    assert set(document["per_class"]) == {"precision", "recall", "f1"}


def test_regression_runs() -> None:
    runs = [regression_metrics([1.0, 2.0, 3.0], [1.0, 2.0, 3.0 + d]) for d in (0.0, 1.0, 2.0)]
    summary = aggregate_regression(runs)
    assert summary.overall["bias"].mean == pytest.approx(1.0 / 3)  # (0 + 1/3 + 2/3) / 3
    assert summary.seeds == (0, 1, 2)


def test_seed_count_must_match() -> None:
    run = classification_metrics([1, 2], [1, 2])
    with pytest.raises(ValueError, match="2 seeds for 1 runs"):
        aggregate_classification([run], seeds=[1, 2])
    with pytest.raises(ValueError, match="no runs"):
        aggregate_classification([])
