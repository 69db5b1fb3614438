"""The compiled kernels and reused buffers of the cube build give the numbers of the plain numpy
formulation: indices, the quality-mask lookup and its fallback, ``out=`` buffers, the
``valid_is_finite`` shortcut, and chunks built one after another in the same buffers."""

from __future__ import annotations

from datetime import date
from pathlib import Path

import numpy as np
import pytest

from pipeline.catalog.sensors import MaskRule
from pipeline.cube.build import ChunkBuffers, _apply_rule, compute_window
from pipeline.cube.features import compute_indices
from pipeline.cube.gapfill import gapfill_bands
from pipeline.cube.plan import plan_cube
from pipeline.model import Window
from tests.cube.synthetic import make_series


def test_indices_equal_the_numpy_formulas_bit_for_bit() -> None:
    rng = np.random.default_rng(0)
    bands = {n: rng.normal(0.2, 0.2, (3, 7, 9)).astype(np.float32) for n in ("green", "red")}
    bands["nir"] = rng.normal(0.3, 0.2, (3, 7, 9)).astype(np.float32)
    bands["red"][0, 0, :3] = [0.0, 0.25, np.nan]  # 0 / 0, x / 0, NaN
    bands["nir"][0, 0, :3] = [0.0, -0.25, 0.5]
    got = compute_indices(bands, ["ndvi", "ndwi", "brightness"])
    nir, red, green = bands["nir"], bands["red"], bands["green"]
    with np.errstate(divide="ignore", invalid="ignore"):
        ndvi = (nir - red) / (nir + red)
        ndwi = (green - nir) / (green + nir)
    for expected in (ndvi, ndwi):
        expected[np.isinf(expected)] = np.nan
    brightness = np.zeros_like(nir)
    for value in bands.values():
        brightness += value * value
    np.testing.assert_array_equal(got["ndvi"], ndvi)
    np.testing.assert_array_equal(got["ndwi"], ndwi)
    np.testing.assert_array_equal(got["brightness"], np.sqrt(brightness))
    assert np.isnan(got["ndvi"][0, 0, :3]).all()
    # Into given arrays, which come back.
    out = {"ndvi": np.empty_like(nir)}
    again = compute_indices(bands, ["ndvi", "brightness"], out=out)
    assert again["ndvi"] is out["ndvi"]
    np.testing.assert_array_equal(again["ndvi"], ndvi)
    with pytest.raises(ValueError, match="C-contiguous float32"):
        compute_indices(bands, ["ndvi"], out={"ndvi": np.empty((3, 7), np.float32)})


def test_quality_rule_lookup_and_its_fallback_for_non_integer_codes() -> None:
    rule = MaskRule("scl", (0, 3, 8, 9, 10))
    quality = np.array([[4, 9, np.nan], [3, 5, 10]], dtype=np.float32)
    valid = np.ones(quality.shape, dtype=bool)
    _apply_rule(rule, quality, valid)
    np.testing.assert_array_equal(valid, [[True, False, False], [False, True, False]])
    # A code that is not a 16-bit integer: the rule itself decides, with the same result for
    # the integer codes.
    odd = np.array([[4, 9, np.nan], [3, 5.5, -1]], dtype=np.float32)
    valid = np.ones(odd.shape, dtype=bool)
    _apply_rule(rule, odd, valid)
    expected = ~np.isnan(odd) & ~np.isin(np.nan_to_num(odd), [0, 3, 8, 9, 10])
    np.testing.assert_array_equal(valid, expected)


def test_gapfill_bands_into_a_given_array_and_with_a_finite_mask() -> None:
    rng = np.random.default_rng(1)
    values = rng.normal(size=(9, 3, 20, 30)).astype(np.float32)
    values[rng.random(values.shape) < 0.1] = np.nan
    valid = rng.random((9, 20, 30)) < 0.7
    days = np.sort(rng.uniform(0, 100, 9))
    targets = np.linspace(-5, 105, 12)
    plain = gapfill_bands(values, valid, days, targets)
    out = np.empty((3, 12, 20, 30), dtype=np.float32)
    into = gapfill_bands(values, valid, days, targets, out=out)
    assert into.values is out
    np.testing.assert_array_equal(into.values, plain.values)
    # A mask that already excludes every non-finite value gives the same with the shortcut.
    finite = valid & np.isfinite(values).all(axis=1)
    checked = gapfill_bands(values, finite, days, targets)
    shortcut = gapfill_bands(values, finite, days, targets, valid_is_finite=True)
    np.testing.assert_array_equal(shortcut.values, checked.values)
    np.testing.assert_array_equal(shortcut.valid_count, checked.valid_count)
    np.testing.assert_array_equal(checked.values, plain.values)
    # Simultaneous acquisitions (the merging path) fill the given array too.
    days[4] = days[3]
    merged = gapfill_bands(values, valid, days, targets, out=out)
    assert merged.values is out
    np.testing.assert_array_equal(merged.values, gapfill_bands(values, valid, days, targets).values)
    with pytest.raises(ValueError, match="C-contiguous float32 array of shape"):
        gapfill_bands(values, valid, days, targets, out=np.empty((3, 12, 20, 30)))


def test_chunks_built_one_after_another_in_the_same_buffers(tmp_path: Path) -> None:
    series = make_series(tmp_path, size=64, n_dates=5, seed=4)
    plan = plan_cube(
        series.grid,
        [(series.profile, series.acquisitions)],
        date(2021, 1, 1),
        date(2021, 4, 30),
        ["ndvi", "brightness"],
        32,
    )
    buffers = ChunkBuffers()
    first, second = plan.windows[0], plan.windows[3]
    fresh = {w: compute_window(plan, w) for w in (first, second)}
    reused = compute_window(plan, first, buffers=buffers)
    for name, expected in fresh[first].stored.items():  # int16 codes and the other arrays
        np.testing.assert_array_equal(reused.stored[name], expected, err_msg=name)
    for name, expected in fresh[first].arrays.items():
        np.testing.assert_array_equal(reused.arrays[name], expected, err_msg=name)
    kept, kept_codes = reused.arrays["s2_red"], reused.codes["s2_red"]
    again = compute_window(plan, second, buffers=buffers)
    assert np.shares_memory(again.arrays["s2_red"], kept)  # the same memory, refilled
    assert np.shares_memory(again.codes["s2_red"], kept_codes)
    for name, expected in fresh[second].stored.items():
        np.testing.assert_array_equal(again.stored[name], expected, err_msg=name)
    for name, expected in fresh[second].arrays.items():
        np.testing.assert_array_equal(again.arrays[name], expected, err_msg=name)
    # A smaller window (a tile's edge) takes part of the same buffer.
    edge = compute_window(plan, Window(0, 0, 16, 8), buffers=buffers).arrays
    np.testing.assert_array_equal(edge["s2_ndvi"], fresh[first].arrays["s2_ndvi"][:, :16, :8])
