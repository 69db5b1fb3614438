"""Regression scores against scikit-learn and hand-computed values; the scatter plot."""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from hypothesis.extra.numpy import arrays
from PIL import Image
from sklearn.metrics import mean_absolute_error, mean_squared_error, r2_score

from pipeline.errors import InputDataError
from pipeline.validate.regression import (
    HEXBIN_ABOVE,
    RegressionMetrics,
    regression_metrics,
    write_scatter,
)


def test_hand_computed_values() -> None:
    reference = [1.0, 2.0, 3.0, 4.0]
    predicted = [2.0, 2.0, 2.0, 6.0]  # errors +1, 0, -1, +2
    m = regression_metrics(reference, predicted)
    assert m.n_samples == 4
    assert m.bias == pytest.approx(0.5)  # (1 + 0 - 1 + 2) / 4
    assert m.mae == pytest.approx(1.0)  # (1 + 0 + 1 + 2) / 4
    assert m.rmse == pytest.approx(math.sqrt(1.5))  # (1 + 0 + 1 + 4) / 4
    # SS_res = 6, SS_tot = 2.25 + 0.25 + 0.25 + 2.25 = 5
    assert m.r2 == pytest.approx(1 - 6 / 5)
    assert m.reference_mean == 2.5
    assert m.predicted_mean == 3.0


# Subnormal floats make every variance underflow to 0, where R^2 is undefined for both sides.
finite = st.floats(-1e4, 1e4, allow_nan=False, allow_infinity=False, allow_subnormal=False)


@settings(max_examples=100, deadline=None)
@given(pairs=st.integers(2, 60).flatmap(lambda n: st.tuples(
    arrays(np.float64, n, elements=finite), arrays(np.float64, n, elements=finite))))  # fmt: skip
def test_matches_scikit_learn(pairs: tuple[np.ndarray, np.ndarray]) -> None:
    reference, predicted = pairs
    m = regression_metrics(reference, predicted)
    assert m.rmse == pytest.approx(math.sqrt(mean_squared_error(reference, predicted)), abs=1e-6)
    assert m.mae == pytest.approx(mean_absolute_error(reference, predicted), abs=1e-6)
    assert m.bias == pytest.approx(float(np.mean(predicted - reference)), abs=1e-6)
    if np.ptp(reference) > 1e-3:
        assert m.r2 == pytest.approx(r2_score(reference, predicted), rel=1e-6, abs=1e-6)
    elif np.all(reference == reference[0]):
        assert math.isnan(m.r2)  # scikit-learn says 0 or 1 here; undefined is not a number


def test_constant_reference_gives_undefined_r2_and_r() -> None:
    m = regression_metrics([3.0, 3.0, 3.0], [1.0, 2.0, 3.0])
    assert math.isnan(m.r2)
    assert math.isnan(m.pearson_r)
    assert m.to_dict()["r2"] is None
    assert RegressionMetrics.from_dict(m.to_dict()).rmse == m.rmse


@pytest.mark.parametrize(
    ("reference", "predicted", "words"),
    [
        ([1.0, 2.0], [1.0], "differ in size"),
        ([], [], "no samples"),
        ([1.0, float("nan")], [1.0, 2.0], "NaN or infinite"),
        (["a", "b"], [1.0, 2.0], "needs numbers"),
    ],
)
def test_bad_input(reference: list[object], predicted: list[float], words: str) -> None:
    with pytest.raises(InputDataError) as info:
        regression_metrics(reference, predicted)  # type: ignore[arg-type]
    assert words in str(info.value)
    assert "Fix:" in str(info.value)


@pytest.mark.parametrize("n", [50, HEXBIN_ABOVE + 1])
def test_scatter_png(tmp_path: Path, n: int) -> None:
    rng = np.random.default_rng(0)
    reference = rng.uniform(0, 300, n)
    predicted = reference * 0.9 + rng.normal(0, 20, n)
    path = tmp_path / "scatter.png"
    metrics = write_scatter(path, reference, predicted, title="biomass", units="t/ha")
    assert metrics.n_samples == n
    with Image.open(path) as image:
        assert image.format == "PNG"
        assert image.size[0] > 400 and image.size[1] > 400
        pixels = np.asarray(image.convert("RGB"))
    assert len(np.unique(pixels.reshape(-1, 3), axis=0)) > 20  # something was drawn
    assert [p.name for p in tmp_path.iterdir()] == ["scatter.png"]  # no temporary left
