"""Split by polygon and selection: properties that must hold for any reference data."""

from __future__ import annotations

import warnings

import numpy as np
import pandas as pd
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from pipeline.samples.split import TRAIN, VALIDATION, select_training_pixels, split_polygons
from pipeline.warnings import SamplingWarning

polygon_labels = st.dictionaries(
    keys=st.integers(0, 10_000), values=st.integers(1, 6), min_size=1, max_size=200
)


@settings(max_examples=200, deadline=None)
@given(labels=polygon_labels, fraction=st.floats(0.05, 0.95), seed=st.integers(0, 2**31))
def test_every_polygon_on_exactly_one_side(
    labels: dict[int, int], fraction: float, seed: int
) -> None:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", SamplingWarning)
        split = split_polygons(labels, fraction, seed)
    assert set(split) == set(labels)
    assert set(split.values()) <= {TRAIN, VALIDATION}
    for label in set(labels.values()):
        members = [p for p, c in labels.items() if c == label]
        sides = [split[p] for p in members]
        n_val = sides.count(VALIDATION)
        if len(members) >= 2:
            # Both trained and validated, and close to the asked fraction.
            assert 1 <= n_val <= len(members) - 1
            assert n_val == min(max(round(len(members) * fraction), 1), len(members) - 1)
        else:
            assert sides == [TRAIN]


@settings(max_examples=50, deadline=None)
@given(labels=polygon_labels, seed=st.integers(0, 2**31))
def test_split_is_reproducible(labels: dict[int, int], seed: int) -> None:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", SamplingWarning)
        assert split_polygons(labels, 0.3, seed) == split_polygons(
            dict(reversed(labels.items())), 0.3, seed
        )


def test_single_polygon_class_warns() -> None:
    with pytest.warns(SamplingWarning, match=r"class\(es\) \[7\] have a single reference polygon"):
        split = split_polygons({1: 7, 2: 3, 3: 3}, 0.5, 0)
    assert split[1] == TRAIN


def test_cap_per_polygon() -> None:
    pixels = pd.DataFrame(
        {"polygon_id": np.repeat([1, 2, 3], [50, 5, 20]), "row": np.arange(75), "col": 0}
    )
    chosen = select_training_pixels(pixels, 10, seed=3)
    counts = chosen["polygon_id"].value_counts().to_dict()
    assert counts == {1: 10, 2: 5, 3: 10}
    again = select_training_pixels(pixels, 10, seed=3)
    assert chosen.index.tolist() == again.index.tolist()
    assert select_training_pixels(pixels, None, seed=3) is pixels
