"""Selection strategies: properties for any reference data, and hand-checked cases."""

from __future__ import annotations

import math
import warnings

import numpy as np
import pandas as pd
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from pipeline.samples.select import SelectionRule, drop_small_classes, select_pixels
from pipeline.warnings import SamplingWarning
from tests.manifest import sections


@st.composite
def pixel_tables(draw: st.DrawFn) -> pd.DataFrame:
    """Polygons of 1-40 pixels, each with a class (1-4) and a region (0-2)."""
    n_polygons = draw(st.integers(1, 25))
    sizes = draw(st.lists(st.integers(1, 40), min_size=n_polygons, max_size=n_polygons))
    labels = draw(st.lists(st.integers(1, 4), min_size=n_polygons, max_size=n_polygons))
    regions = draw(st.lists(st.integers(0, 2), min_size=n_polygons, max_size=n_polygons))
    polygon = np.repeat(np.arange(n_polygons) * 3 + 5, sizes)  # ids need not be 0..n-1
    frame = pd.DataFrame(
        {
            "row": np.arange(polygon.size) // 7,
            "col": np.arange(polygon.size) % 7,
            "polygon_id": polygon,
            "label": np.repeat(labels, sizes),
            "region": np.repeat(regions, sizes),
        }
    )
    # Shuffled rows and a non-trivial index: selection must not rely on either.
    order = draw(st.permutations(range(len(frame))))
    frame = frame.iloc[list(order)]
    frame.index = frame.index * 10 + 3
    return frame


rules = st.one_of(
    st.builds(
        SelectionRule,
        strategy=st.just("all"),
        within_polygon=st.sampled_from(["random", "periodic"]),
        max_pixels_per_polygon=st.one_of(st.none(), st.integers(1, 30)),
    ),
    st.builds(
        SelectionRule,
        strategy=st.just("percentage"),
        fraction=st.floats(0.01, 1.0),
        within_polygon=st.sampled_from(["random", "periodic"]),
        max_pixels_per_polygon=st.one_of(st.none(), st.integers(1, 30)),
    ),
    st.builds(
        SelectionRule,
        strategy=st.just("per_class_count"),
        count=st.integers(1, 200),
        within_polygon=st.sampled_from(["random", "periodic"]),
        max_pixels_per_polygon=st.one_of(st.none(), st.integers(1, 30)),
    ),
    st.builds(
        SelectionRule,
        strategy=st.just("smallest_class"),
        within_polygon=st.sampled_from(["random", "periodic"]),
        max_pixels_per_polygon=st.one_of(st.none(), st.integers(1, 30)),
    ),
)


def _expected_targets(pixels: pd.DataFrame, rule: SelectionRule, by: list[str]) -> pd.Series:
    cap = rule.max_pixels_per_polygon or 10**9
    offers = pixels.groupby("polygon_id").agg(
        n=("row", "size"), label=("label", "first"), region=("region", "first")
    )
    offers["offer"] = offers["n"].clip(upper=cap)
    offered = offers.groupby([*by, "label"])["offer"].sum()
    if rule.strategy == "all":
        return offered
    if rule.strategy == "percentage":
        assert rule.fraction is not None
        return offered.map(lambda n: min(n, max(1, round(n * rule.fraction))))
    if rule.strategy == "per_class_count":
        assert rule.count is not None
        return offered.clip(upper=rule.count)
    if by:
        return offered.groupby(level=by).transform("min")
    return pd.Series(offered.min(), index=offered.index)


@settings(max_examples=100, deadline=None)
@given(pixels=pixel_tables(), rule=rules, seed=st.integers(0, 2**32 - 1), per_region=st.booleans())
def test_selection_properties(
    pixels: pd.DataFrame, rule: SelectionRule, seed: int, per_region: bool
) -> None:
    by = ["region"] if per_region else []
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", SamplingWarning)
        chosen = select_pixels(pixels, rule, seed, by=by)
    # a subset, each pixel once, in the input's order
    assert chosen.index.is_unique
    assert set(chosen.index) <= set(pixels.index)
    assert list(chosen.index) == [i for i in pixels.index if i in set(chosen.index)]
    # the cap holds in every polygon
    per_polygon = chosen.groupby("polygon_id").size()
    if rule.max_pixels_per_polygon is not None:
        assert per_polygon.max() <= rule.max_pixels_per_polygon
    # every class (per model) gets exactly its target
    expected = _expected_targets(pixels, rule, by)
    got = chosen.groupby([*by, "label"]).size().reindex(expected.index, fill_value=0)
    pd.testing.assert_series_equal(got, expected, check_names=False, check_dtype=False)
    # a class's target is shared in proportion to what each polygon offers (within one pixel)
    cap = rule.max_pixels_per_polygon or 10**9
    offers = pixels.groupby("polygon_id").agg(
        n=("row", "size"), label=("label", "first"), region=("region", "first")
    )
    offers["offer"] = offers["n"].clip(upper=cap)
    offers["key"] = list(zip(*(offers[c] for c in [*by, "label"]), strict=True))
    total = offers.groupby("key")["offer"].transform("sum")
    target = offers["key"].map(
        {k if isinstance(k, tuple) else (k,): v for k, v in expected.items()}
    )
    quota = offers["offer"] * target / total
    taken = per_polygon.reindex(offers.index, fill_value=0)
    assert ((taken - quota).abs() < 1 + 1e-9).all()
    # the same seed gives the same pixels, whatever the row order of the input
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", SamplingWarning)
        again = select_pixels(pixels.sample(frac=1.0, random_state=1), rule, seed, by=by)
    assert set(zip(again["row"], again["col"], strict=True)) == set(
        zip(chosen["row"], chosen["col"], strict=True)
    )


def test_periodic_draw_is_evenly_spaced_and_seed_free() -> None:
    pixels = pd.DataFrame({"polygon_id": 1, "row": np.arange(100), "col": 0, "label": 1})
    rule = SelectionRule(within_polygon="periodic", max_pixels_per_polygon=10)
    chosen = select_pixels(pixels, rule, seed=1)
    # positions floor((k + 0.5) * 100 / 10) = 5, 15, ..., 95
    assert chosen["row"].tolist() == list(range(5, 100, 10))
    assert select_pixels(pixels, rule, seed=99).equals(chosen)


def test_random_draws_differ_between_seeds() -> None:
    pixels = pd.DataFrame({"polygon_id": 1, "row": np.arange(1000), "col": 0, "label": 1})
    rule = SelectionRule(max_pixels_per_polygon=20)
    a = select_pixels(pixels, rule, seed=1)
    b = select_pixels(pixels, rule, seed=2)
    assert len(a) == len(b) == 20
    assert set(a["row"]) != set(b["row"])


def test_hand_checked_allocation() -> None:
    # class 1: polygon 1 offers 50, polygon 2 offers 5; count 3 -> quotas 2.73 and 0.27 -> 3, 0
    pixels = pd.DataFrame(
        {
            "polygon_id": np.repeat([1, 2, 3], [50, 5, 20]),
            "row": np.arange(75),
            "col": 0,
            "label": np.repeat([1, 1, 2], [50, 5, 20]),
        }
    )
    chosen = select_pixels(pixels, SelectionRule("per_class_count", count=3), seed=0)
    assert chosen.groupby("polygon_id").size().to_dict() == {1: 3, 3: 3}
    smallest = select_pixels(pixels, SelectionRule("smallest_class"), seed=0)
    assert smallest.groupby("label").size().to_dict() == {1: 20, 2: 20}
    # 20 shared among 50 and 5 offered: 18.18 -> 18, 1.82 -> 2
    assert smallest.groupby("polygon_id").size().to_dict() == {1: 18, 2: 2, 3: 20}


def test_per_class_count_warns_for_small_classes() -> None:
    pixels = pd.DataFrame(
        {"polygon_id": np.repeat([1, 2], [30, 4]), "row": np.arange(34), "col": 0,
         "label": np.repeat([1, 2], [30, 4]), "region": 0}
    )  # fmt: skip
    with pytest.warns(SamplingWarning, match=r"class 2 in region 0 \(4\) offer\(s\) fewer"):
        chosen = select_pixels(
            pixels, SelectionRule("per_class_count", count=10), seed=0, by=["region"]
        )
    assert chosen.groupby("label").size().to_dict() == {1: 10, 2: 4}


def test_regression_has_one_stratum() -> None:
    pixels = pd.DataFrame(
        {"polygon_id": np.repeat([1, 2], [30, 10]), "row": np.arange(40), "col": 0,
         "value": np.linspace(0, 1, 40)}
    )  # fmt: skip
    chosen = select_pixels(pixels, SelectionRule("percentage", fraction=0.5), 0, label_column=None)
    assert len(chosen) == 20
    assert chosen.groupby("polygon_id").size().to_dict() == {1: 15, 2: 5}
    with pytest.raises(ValueError, match="needs classes"):
        select_pixels(pixels, SelectionRule("smallest_class"), 0, label_column=None)


def test_everything_is_returned_untouched() -> None:
    pixels = pd.DataFrame({"polygon_id": [1], "row": [0], "col": [0], "label": [1]})
    assert select_pixels(pixels, SelectionRule(), 0) is pixels


def test_rule_from_manifest() -> None:
    spec = sections.sampling(
        strategy="percentage", fraction=0.2, within_polygon="periodic", max_pixels_per_polygon=7
    )
    assert SelectionRule.from_spec(spec) == SelectionRule(
        "percentage", fraction=0.2, within_polygon="periodic", max_pixels_per_polygon=7
    )
    assert SelectionRule.from_spec(sections.sampling()).is_everything


@pytest.mark.parametrize(
    ("kwargs", "words"),
    [
        ({"strategy": "percentage"}, "needs a fraction"),
        ({"strategy": "percentage", "fraction": 1.5}, "needs a fraction"),
        ({"strategy": "per_class_count"}, "needs a count"),
        ({"max_pixels_per_polygon": 0}, "at least 1"),
        ({"strategy": "most"}, "unknown strategy"),
    ],
)
def test_bad_rules(kwargs: dict[str, object], words: str) -> None:
    with pytest.raises(ValueError, match=words):
        SelectionRule(**kwargs)  # type: ignore[arg-type]


def test_drop_small_classes_per_region() -> None:
    pixels = pd.DataFrame(
        {"label": [1] * 12 + [2] * 3 + [2] * 12, "region": [0] * 15 + [1] * 12,
         "polygon_id": 0, "row": 0, "col": 0}
    )  # fmt: skip
    with pytest.warns(SamplingWarning, match=r"class 2 in region 0 \(3\): fewer than 10"):
        kept = drop_small_classes(pixels, 10, by=["region"])
    assert len(kept) == 24
    assert math.isclose(kept["label"].eq(2).sum(), 12)
    assert drop_small_classes(pixels, 3) is pixels
