"""Split by polygon and selection: properties that must hold for any reference data."""

from __future__ import annotations

import warnings
from collections import Counter

import numpy as np
import pandas as pd
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from pipeline.samples.split import (
    TRAIN,
    VALIDATION,
    run_seeds,
    select_training_pixels,
    split_polygons,
    value_strata,
)
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


# --- strata (regions), groups, regression strata, seeds ---------------------------------------

stratified = st.dictionaries(
    keys=st.integers(0, 5_000),
    values=st.tuples(st.integers(1, 4), st.sampled_from(["alpine", "pannonian", "karst"])),
    min_size=1,
    max_size=150,
)


@settings(max_examples=150, deadline=None)
@given(data=stratified, fraction=st.floats(0.05, 0.95), seed=st.integers(0, 2**31))
def test_split_per_class_and_region(
    data: dict[int, tuple[int, str]], fraction: float, seed: int
) -> None:
    labels = {p: c for p, (c, _) in data.items()}
    regions = {p: r for p, (_, r) in data.items()}
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", SamplingWarning)
        split = split_polygons(labels, fraction, seed, strata=regions)
    assert set(split) == set(labels)
    for stratum in set(data.values()):
        members = [p for p, s in data.items() if s == stratum]
        n_val = [split[p] for p in members].count(VALIDATION)
        if len(members) >= 2:
            assert n_val == min(max(round(len(members) * fraction), 1), len(members) - 1)
        else:
            assert n_val == 0


grouped = st.dictionaries(
    keys=st.integers(0, 5_000),
    values=st.tuples(st.integers(1, 3), st.integers(0, 30)),
    min_size=1,
    max_size=150,
)


@settings(max_examples=150, deadline=None)
@given(data=grouped, seed=st.integers(0, 2**31))
def test_groups_stay_on_one_side(data: dict[int, tuple[int, int]], seed: int) -> None:
    labels = {p: c for p, (c, _) in data.items()}
    groups = {p: g for p, (_, g) in data.items()}
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", SamplingWarning)
        split = split_polygons(labels, 0.3, seed, groups=groups)
        again = split_polygons(dict(reversed(list(labels.items()))), 0.3, seed, groups=groups)
    assert split == again
    for group in set(groups.values()):
        sides = {split[p] for p, g in groups.items() if g == group}
        assert len(sides) == 1


def test_group_takes_its_majority_class() -> None:
    # group "a" holds classes 1, 1, 2: it is a class-1 unit; class 1 has units a, b
    labels = {1: 1, 2: 1, 3: 2, 4: 1, 5: 2}
    groups = {1: "a", 2: "a", 3: "a", 4: "b", 5: "c"}
    with pytest.warns(SamplingWarning, match=r"class\(es\) \[2\] have a single reference group"):
        split = split_polygons(labels, 0.5, 0, groups=groups)
    assert split[5] == TRAIN
    assert {split[1], split[4]} == {TRAIN, VALIDATION}
    assert split[1] == split[2] == split[3]


def test_single_polygon_stratum_names_the_region() -> None:
    with pytest.warns(SamplingWarning, match="class 3 in region 'karst' has a single"):
        split_polygons({1: 3, 2: 3, 3: 3}, 0.5, 0, strata={1: "alpine", 2: "alpine", 3: "karst"})


def test_value_strata_are_balanced_quantiles() -> None:
    values = {i: float(v) for i, v in enumerate(np.random.default_rng(0).gamma(2.0, 10.0, 100))}
    bins = value_strata(values, 5)
    assert sorted(Counter(bins.values()).values()) == [20] * 5
    lowest = [values[i] for i, b in bins.items() if b == 0]
    highest = [values[i] for i, b in bins.items() if b == 4]
    assert max(lowest) < min(highest)
    assert value_strata({1: 2.0, 2: 2.0}, 5) in ({1: 0, 2: 1}, {1: 1, 2: 0})
    assert value_strata({}) == {}


def test_run_seeds() -> None:
    assert run_seeds(7, 3) == [7, 8, 9]
    with pytest.raises(ValueError, match="at least 1"):
        run_seeds(0, 0)


def test_fraction_must_be_a_share() -> None:
    with pytest.raises(ValueError, match=r"in \(0, 1\)"):
        split_polygons({1: 1}, 1.0, 0)
