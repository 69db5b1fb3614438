"""Regions: burning the layer, the feature-to-region rule, checks, and the border rule."""

from __future__ import annotations

import warnings
from pathlib import Path

import geopandas as gpd
import numpy as np
import pandas as pd
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from hypothesis.extra.numpy import arrays
from shapely.geometry import LineString, box

from pipeline.errors import InputDataError
from pipeline.manifest.fields import locate
from pipeline.model import GridSpec, Window
from pipeline.samples.reference import load_reference
from pipeline.samples.regions import (
    NO_REGION,
    RegionMap,
    align_probabilities,
    border_weights,
    check_region_training,
    combine_predictions,
    load_regions,
    polygon_regions,
    window_weights,
)
from pipeline.warnings import DataQualityWarning
from tests.manifest import sections

# 20 x 20 pixels of 10 m.
GRID = GridSpec("EPSG:32633", (10.0, 0.0, 500000.0, 0.0, -10.0, 5000000.0), 20, 20)


def _cells(r0: int, c0: int, r1: int, c1: int) -> object:
    return box(500000.0 + 10 * c0, 5000000.0 - 10 * r1, 500000.0 + 10 * c1, 5000000.0 - 10 * r0)


def _write(tmp_path: Path, frame: gpd.GeoDataFrame, name: str = "regions.gpkg") -> str:
    path = tmp_path / name
    frame.to_file(path)
    return str(path)


def _two_regions(tmp_path: Path, gap: bool = True) -> str:
    """West: columns 0-8 (code 10), east: columns 10-19 (code 2); column 9 in none if gap."""
    frame = gpd.GeoDataFrame(
        {"zone": [10, 2]},
        geometry=[_cells(0, 0, 20, 9 if gap else 10), _cells(0, 10, 20, 20)],
        crs="EPSG:32633",
    )
    return _write(tmp_path, frame)


def test_burn_with_nearest_fill(tmp_path: Path) -> None:
    spec = sections.regions(path=_two_regions(tmp_path), field="zone")
    with pytest.warns(DataQualityWarning, match=r"20 pixel\(s\) lie in no region polygon"):
        regions = load_regions(spec, GRID)
    assert regions.names == ("2", "10")  # numeric order, as text
    west, east = regions.names.index("10"), regions.names.index("2")
    assert (regions.index[:, :9] == west).all()
    assert (regions.index[:, 10:] == east).all()
    # column 9 is one pixel from both: the nearest-region fill picks one, never "no region"
    assert set(np.unique(regions.index[:, 9])) <= {west, east}
    assert regions.filled_pixels == 20
    assert not regions.index.flags.writeable


def test_text_codes_and_overlaps(tmp_path: Path) -> None:
    frame = gpd.GeoDataFrame(
        {"zone": ["alpine", "karst"]},
        geometry=[_cells(0, 0, 20, 12), _cells(0, 10, 20, 20)],
        crs="EPSG:32633",
    )
    with pytest.warns(DataQualityWarning, match=r"40 pixel\(s\) lie in more than one region"):
        regions = load_regions(sections.regions(path=_write(tmp_path, frame), field="zone"), GRID)
    assert regions.names == ("alpine", "karst")
    assert regions.filled_pixels == 0


@pytest.mark.parametrize(
    ("frame", "field", "words"),
    [
        (
            gpd.GeoDataFrame({"zone": [1]}, geometry=[box(0, 0, 1, 1)], crs="EPSG:32633"),
            "zone",
            "no region polygon",
        ),
        (
            gpd.GeoDataFrame({"zone": [1]}, geometry=[_cells(0, 0, 5, 5)], crs="EPSG:32633"),
            "region",
            "no field 'region'",
        ),
        (
            gpd.GeoDataFrame(
                {"zone": [1]},
                geometry=[LineString([(500000, 4999900), (500100, 4999900)])],
                crs="EPSG:32633",
            ),
            "zone",
            "regions must be polygons",
        ),
        (
            gpd.GeoDataFrame(
                {"zone": [1.0, None]},
                geometry=[_cells(0, 0, 5, 5), _cells(5, 5, 9, 9)],
                crs="EPSG:32633",
            ),
            "zone",
            "have no value in 'zone'",
        ),
    ],
)
def test_bad_regions(tmp_path: Path, frame: gpd.GeoDataFrame, field: str, words: str) -> None:
    with pytest.raises(InputDataError) as info:
        load_regions(sections.regions(path=_write(tmp_path, frame), field=field), GRID)
    assert words in str(info.value)
    assert (info.value.field or "").startswith("reference.regions")  # a domain key
    assert "spec.reference.regions" in str(locate(info.value))  # as `sitsflow run` prints it
    assert "Fix:" in str(info.value)


def test_feature_goes_to_the_region_of_most_of_its_pixels(tmp_path: Path) -> None:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", DataQualityWarning)
        spec = sections.regions(path=_two_regions(tmp_path, gap=False), field="zone")
        regions = load_regions(spec, GRID)
    reference_file = tmp_path / "reference.gpkg"
    gpd.GeoDataFrame(
        {"code": [1, 2]},
        # 3 columns west of the border and 1 east; then 1 west and 3 east
        geometry=[_cells(0, 7, 2, 11), _cells(5, 9, 7, 13)],
        crs="EPSG:32633",
    ).to_file(reference_file)
    reference = load_reference(
        sections.reference(path=str(reference_file), label_field="code"), GRID
    )
    assigned = polygon_regions(reference, regions)
    assert assigned == {0: regions.names.index("10"), 1: regions.names.index("2")}


def _region_map(index: np.ndarray, names: tuple[str, ...] = ("a", "b")) -> RegionMap:
    return RegionMap(names=names, index=index)


def test_region_without_training_pixels_is_an_error() -> None:
    regions = _region_map(np.array([[0, 0, 1, 1]]))
    training = pd.DataFrame({"region": [0, 0], "label": [1, 2]})
    with pytest.raises(InputDataError, match=r"region\(s\) \['b'\] have no training pixel"):
        check_region_training(training, regions)


def test_region_with_one_class_is_an_error() -> None:
    regions = _region_map(np.array([[0, 0, 1, 1]]))
    training = pd.DataFrame({"region": [0, 0, 1, 1], "label": [1, 2, 3, 3]})
    with pytest.raises(InputDataError) as info:
        check_region_training(training, regions)
    assert "region(s) ['b'] have training pixels of a single class ({'b': [3]})" in str(info.value)
    check_region_training(training, regions, classification=False)  # fine for a regression


# --- the border rule ----------------------------------------------------------------------------


def test_border_weights_by_hand() -> None:
    patch = np.array([[0, 0, 0, 1, 1, 1]], dtype=np.int16)
    weights = border_weights(patch, 2, border_pixels=2)
    # region 1 is 3, 2, 1 pixels away from columns 0, 1, 2: weights 0, 0, 1 - 1/2
    np.testing.assert_allclose(weights[1, 0], [0, 0, 0.5, 1, 1, 1])
    np.testing.assert_allclose(weights[0, 0], [1, 1, 1, 0.5, 0, 0])
    one_hot = border_weights(patch, 2, border_pixels=0)
    np.testing.assert_array_equal(one_hot[0], patch == 0)


region_patches = arrays(
    np.int16, st.tuples(st.integers(1, 12), st.integers(1, 12)), elements=st.integers(-1, 2)
)


@settings(max_examples=150, deadline=None)
@given(patch=region_patches, border=st.integers(0, 4))
def test_border_weights_properties(patch: np.ndarray, border: int) -> None:
    weights = border_weights(patch, 3, border)
    assert weights.min() >= 0 and weights.max() <= 1
    for region in range(3):
        inside = patch == region
        assert (weights[region][inside] == 1).all()  # the own region always weighs 1
        if border == 0:
            assert (weights[region][~inside] == 0).all()
    off_grid = patch == NO_REGION
    if (~off_grid).any():
        assert (weights.sum(axis=0)[~off_grid] >= 1).all()


@settings(max_examples=100, deadline=None)
@given(
    index=arrays(np.int16, (15, 17), elements=st.integers(0, 2)),
    border=st.integers(0, 4),
    window=st.tuples(st.integers(0, 14), st.integers(0, 16), st.integers(1, 8), st.integers(1, 8)),
)
def test_window_weights_equal_the_whole_grid(
    index: np.ndarray, border: int, window: tuple[int, int, int, int]
) -> None:
    row, col, height, width = window
    height, width = min(height, 15 - row), min(width, 17 - col)
    regions = _region_map(index, ("a", "b", "c"))
    whole = border_weights(index, 3, border)
    part = window_weights(regions, Window(row, col, height, width), border)
    np.testing.assert_allclose(part, whole[:, row : row + height, col : col + width], atol=1e-6)


def test_combine_blend_and_vote() -> None:
    # One pixel, three classes, weights: own region 0 -> 1, neighbour 1 -> 0.5, region 2 -> 0.5
    weights = np.array([1.0, 0.5, 0.5], dtype=np.float32).reshape(3, 1, 1)
    probabilities = {
        0: np.array([0.5, 0.4, 0.1]).reshape(3, 1, 1),
        1: np.array([0.0, 0.9, 0.1]).reshape(3, 1, 1),
        2: np.array([0.1, 0.8, 0.1]).reshape(3, 1, 1),
    }
    label, confidence = combine_predictions(probabilities, weights, "blend")
    # blended: (0.5 + 0 + 0.05) / 2, (0.4 + 0.45 + 0.4) / 2, (0.1 + 0.05 + 0.05) / 2
    assert label[0, 0] == 1
    assert confidence[0, 0] == pytest.approx(1.25 / 2)
    label, confidence = combine_predictions(probabilities, weights, "vote")
    # votes: class 0 <- 1.0 (region 0), class 1 <- 0.5 + 0.5: a tie, decided by the blend
    assert label[0, 0] == 1
    weights[0] = 1.5  # not a real weight, but it makes region 0's vote win outright
    label, _ = combine_predictions(probabilities, weights, "vote")
    assert label[0, 0] == 0


@settings(max_examples=100, deadline=None)
@given(patch=arrays(np.int16, (6, 7), elements=st.integers(0, 2)), seed=st.integers(0, 1000))
def test_without_border_each_pixel_follows_its_own_model(patch: np.ndarray, seed: int) -> None:
    rng = np.random.default_rng(seed)
    probabilities = {r: rng.dirichlet(np.ones(4), size=(6, 7)).transpose(2, 0, 1) for r in range(3)}
    weights = border_weights(patch, 3, 0)
    present = {r: p for r, p in probabilities.items() if (patch == r).any()}
    stack = np.stack([probabilities[r] for r in range(3)])  # (region, class, row, col)
    rows, cols = np.indices(patch.shape)
    own = stack[patch, :, rows, cols]  # (row, col, class): each pixel's own model
    for rule in ("blend", "vote"):
        label, confidence = combine_predictions(present, weights, rule)
        np.testing.assert_array_equal(label, np.argmax(own, axis=-1))
        np.testing.assert_allclose(confidence, own.max(axis=-1), rtol=1e-6)


def test_combine_needs_every_weighing_region() -> None:
    weights = np.ones((2, 1, 1), dtype=np.float32)
    with pytest.raises(ValueError, match=r"regions \[1\] weigh on this window"):
        combine_predictions({0: np.ones((2, 1, 1))}, weights)


def test_align_probabilities() -> None:
    proba = np.array([[[0.7]], [[0.3]]])
    aligned = align_probabilities(proba, [4, 1], [1, 2, 4])
    np.testing.assert_allclose(aligned[:, 0, 0], [0.3, 0.0, 0.7])
    with pytest.raises(ValueError, match=r"model classes \[9\]"):
        align_probabilities(proba, [9, 1], [1, 2, 4])
