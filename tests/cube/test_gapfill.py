"""Tests of the temporal gap-filling kernel, pipeline.cube.gapfill.

1. Small cases whose expected values are computed by hand (arithmetic in the comments).
2. Real cloudy pixels of the bundled Slovenia demo catalog, read from its COGs one pixel window
   at a time, with the expected values computed by hand from the neighbouring clear dates.
3. A Hypothesis property: the vectorized kernel equals a per-pixel np.interp reference.
4. A full-size chunk (70, 4, 256, 256) runs.
"""

from __future__ import annotations

import datetime as dt
from pathlib import Path

import numpy as np
import numpy.typing as npt
import pystac
import pytest
import rasterio
from hypothesis import given, settings
from hypothesis import strategies as st
from hypothesis.extra import numpy as hnp
from rasterio.windows import Window

from pipeline.cube.encoding import VariableEncoding, quantize
from pipeline.cube.gapfill import GapFilled, gapfill

NAN = np.nan


def _series(
    values: list[float], valid: list[bool], days: list[float], targets: list[float]
) -> GapFilled:
    """Gap-fill a single pixel given as plain lists (pixel_shape == ())."""
    return gapfill(
        np.array(values, dtype=np.float32), np.array(valid), np.array(days), np.array(targets)
    )


# --------------------------------------------------------------------------------------------
# 1. Hand-computed small cases
# --------------------------------------------------------------------------------------------


def test_interpolates_linearly_between_two_valid_dates() -> None:
    out = _series([2.0, 7.0], [True, True], [0.0, 10.0], [0.0, 2.5, 4.0, 10.0])
    # 2.5: weight of day 10 = (2.5 - 0) / (10 - 0) = 0.25 -> 2 + 0.25 * (7 - 2) = 3.25
    # 4.0: weight 0.4 -> 2 + 0.4 * 5 = 4.0
    np.testing.assert_allclose(out.values, [2.0, 3.25, 4.0, 7.0], rtol=1e-6)
    assert out.values.dtype == np.float32
    assert out.valid_count.dtype == np.uint16
    assert out.valid_count.shape == ()
    assert int(out.valid_count) == 2


def test_cloudy_acquisition_is_skipped() -> None:
    # Day 10 is cloudy (its 100 must not leak in): days 5, 10 and 15 interpolate 1 -> 3.
    # 5: 1 + 0.25 * (3 - 1) = 1.5;  10: 1 + 0.5 * 2 = 2;  15: 1 + 0.75 * 2 = 2.5
    out = _series([1.0, 100.0, 3.0], [True, False, True], [0.0, 10.0, 20.0], [5.0, 10.0, 15.0])
    np.testing.assert_allclose(out.values, [1.5, 2.0, 2.5], rtol=1e-6)
    assert int(out.valid_count) == 2


def test_target_on_an_acquisition_gives_its_value_exactly() -> None:
    # Awkward float32 values and fractional days (10:03:51 etc.): the targets equal the clear
    # acquisition days, so the output is bit-for-bit the input. The cloudy middle date
    # (day 17177.419340) is interpolated instead: its weight is
    # (17177.419340 - 17167.419525) / (17187.42 - 17167.419525) = 9.999815 / 20.000475.
    values = [0.1234567, 0.9, 0.7654321]
    days = [17167.419525, 17177.419340, 17187.42]
    out = _series(values, [True, False, True], days, days)
    assert out.values[0] == np.float32(0.1234567)
    assert out.values[2] == np.float32(0.7654321)
    w = 9.999815 / 20.000475
    expected_mid = float(np.float32(0.1234567)) + w * (
        float(np.float32(0.7654321)) - float(np.float32(0.1234567))
    )
    assert out.values[1] == pytest.approx(expected_mid, rel=1e-6)
    # Exactly, not "interpolated with weight 1": 0.3 + 1 * (1e-9 - 0.3) would give 0 in float32.
    tiny = _series([0.3, 1e-9, 0.7], [True, True, True], [0.0, 1.0, 2.0], [0.0, 1.0, 2.0])
    np.testing.assert_array_equal(tiny.values, np.array([0.3, 1e-9, 0.7], dtype=np.float32))


def test_leading_and_trailing_gaps_hold_the_nearest_valid_value() -> None:
    # Valid only on days 10 (value 4) and 20 (value 6); days 0, 30 and 40 are cloudy with 9.
    out = _series(
        [9.0, 4.0, 6.0, 9.0, 9.0],
        [False, True, True, False, False],
        [0.0, 10.0, 20.0, 30.0, 40.0],
        [-5.0, 0.0, 5.0, 10.0, 15.0, 20.0, 25.0, 45.0],
    )
    # before day 10: held at 4 (no slope extrapolation); 15: 4 + 0.5 * (6 - 4) = 5;
    # after day 20: held at 6, also past the last acquisition (45).
    np.testing.assert_allclose(out.values, [4, 4, 4, 4, 5, 6, 6, 6], rtol=1e-6)


def test_a_single_valid_acquisition_is_held_everywhere() -> None:
    out = _series([3.0, 8.0, 5.0], [False, True, False], [0.0, 1.0, 2.0], [-1.0, 0.5, 1.0, 9.0])
    np.testing.assert_array_equal(out.values, [8.0, 8.0, 8.0, 8.0])
    assert int(out.valid_count) == 1


def test_never_valid_pixel_is_nan_with_count_zero() -> None:
    # Three pixels: never valid by mask; valid by mask but NaN everywhere; a normal one.
    values = np.array([[1.0, NAN, 2.0], [3.0, NAN, 4.0]], dtype=np.float32)
    valid = np.array([[False, True, True], [False, True, True]])
    out = gapfill(values, valid, [0.0, 10.0], [-1.0, 5.0, 11.0])
    assert np.isnan(out.values[:, 0]).all()
    assert np.isnan(out.values[:, 1]).all()
    # normal pixel: held 2 before day 0; 5: 2 + 0.5 * (4 - 2) = 3; held 4 after day 10
    np.testing.assert_allclose(out.values[:, 2], [2.0, 3.0, 4.0], rtol=1e-6)
    np.testing.assert_array_equal(out.valid_count, [0, 0, 2])


@pytest.mark.parametrize("bad", [NAN, np.inf, -np.inf])
def test_non_finite_values_count_as_invalid(bad: float) -> None:
    out = _series([1.0, bad, 5.0], [True, True, True], [0.0, 1.0, 2.0], [1.0, 1.5])
    # day 1 is not finite: 1: 1 + 0.5 * (5 - 1) = 3;  1.5: 1 + 0.75 * 4 = 4
    np.testing.assert_allclose(out.values, [3.0, 4.0], rtol=1e-6)
    assert int(out.valid_count) == 2


def test_simultaneous_acquisitions_are_averaged() -> None:
    # Two acquisitions at day 10 (values 4 and 8) merge into their mean 6; day 20 is cloudy.
    # 5: 0 + 0.5 * (6 - 0) = 3;  10: 6;  15: held 6 (nothing valid after day 10)
    out = _series(
        [0.0, 4.0, 8.0, 100.0], [True, True, True, False], [0.0, 10.0, 10.0, 20.0], [5, 10, 15]
    )
    np.testing.assert_allclose(out.values, [3.0, 6.0, 6.0], rtol=1e-6)
    assert int(out.valid_count) == 3  # acquisitions, not instants


def test_simultaneous_acquisitions_use_only_the_valid_one() -> None:
    # The first of the two day-10 acquisitions is cloudy: day 10 is 8 alone.
    # 5: 0 + 0.5 * (8 - 0) = 4;  10: 8;  15: 8 + 0.5 * (2 - 8) = 5
    out = _series(
        [0.0, 4.0, 8.0, 2.0], [True, False, True, True], [0.0, 10.0, 10.0, 20.0], [5, 10, 15]
    )
    np.testing.assert_allclose(out.values, [4.0, 8.0, 5.0], rtol=1e-6)
    # both cloudy: day 10 is skipped, 10: 0 + 0.5 * (2 - 0) = 1
    out = _series([0.0, 4.0, 8.0, 2.0], [True, False, False, True], [0.0, 10.0, 10.0, 20.0], [10])
    np.testing.assert_allclose(out.values, [1.0], rtol=1e-6)


def test_time_hw_mask_applies_to_every_band() -> None:
    days = [0.0, 10.0, 20.0]
    # values (T=3, B=2, H=1, W=2); the mask (T, H, W) hides day 10 at pixel (0, 0) only.
    values = np.empty((3, 2, 1, 2), dtype=np.float32)
    values[:, 0, 0, 0] = [0, 50, 20]  # band 0, pixel (0, 0)
    values[:, 1, 0, 0] = [10, 50, 30]  # band 1, pixel (0, 0)
    values[:, 0, 0, 1] = [1, 2, 3]  # band 0, pixel (0, 1)
    values[:, 1, 0, 1] = [5, NAN, 7]  # band 1, pixel (0, 1): NaN hides day 10 in this band only
    mask = np.array([[[True, True]], [[False, True]], [[True, True]]])  # (3, 1, 2)
    out = gapfill(values, mask, days, [10.0])
    # band 0 (0,0): 0 + 0.5 * (20 - 0) = 10;   band 1 (0,0): 10 + 0.5 * (30 - 10) = 20
    # band 0 (0,1): its own value 2;            band 1 (0,1): 5 + 0.5 * (7 - 5) = 6
    np.testing.assert_allclose(out.values[0], [[[10.0, 2.0]], [[20.0, 6.0]]], rtol=1e-6)
    np.testing.assert_array_equal(out.valid_count, [[[2, 3]], [[2, 2]]])
    assert out.values.shape == (1, 2, 1, 2)
    # The same mask as (T, 1, H, W) or fully broadcast (T, B, H, W) gives the same answer.
    for same in (mask[:, np.newaxis], np.broadcast_to(mask[:, np.newaxis], values.shape)):
        again = gapfill(values, same, days, [10.0])
        np.testing.assert_array_equal(again.values, out.values)
        np.testing.assert_array_equal(again.valid_count, out.valid_count)


def test_time_only_mask_applies_to_every_pixel() -> None:
    values = np.array([[1.0, 10.0], [99.0, 99.0], [3.0, 30.0]], dtype=np.float32)
    out = gapfill(values, np.array([True, False, True]), [0.0, 1.0, 2.0], [1.0])
    # 1 + 0.5 * (3 - 1) = 2;  10 + 0.5 * (30 - 10) = 20
    np.testing.assert_allclose(out.values, [[2.0, 20.0]], rtol=1e-6)


def test_integer_values_do_not_overflow() -> None:
    out = gapfill(np.array([-30000, 30000], dtype=np.int16), np.array([True, True]), [0, 2], [1])
    # -30000 + 0.5 * (30000 - -30000) = 0 (an int16 difference would wrap around)
    assert out.values.tolist() == [0.0]


def test_inputs_are_not_modified_and_any_layout_works() -> None:
    rng = np.random.default_rng(7)
    base = rng.normal(size=(4, 6, 5)).astype(np.float32)
    values = base.transpose(0, 2, 1)  # (T, 5, 6), not C-contiguous
    values_before = values.copy()
    valid = rng.random((4, 5, 6)) > 0.3
    valid_before = valid.copy()
    out = gapfill(values, valid, [0.0, 1.0, 2.0, 3.0], [0.5, 2.5])
    np.testing.assert_array_equal(values, values_before)
    np.testing.assert_array_equal(valid, valid_before)
    contiguous = gapfill(np.ascontiguousarray(values), valid, [0.0, 1.0, 2.0, 3.0], [0.5, 2.5])
    np.testing.assert_array_equal(out.values, contiguous.values)


def test_empty_time_axis_and_no_targets() -> None:
    out = gapfill(np.empty((0, 2, 3), dtype=np.float32), np.empty((0, 2, 3), bool), [], [4.0])
    assert out.values.shape == (1, 2, 3)
    assert np.isnan(out.values).all()
    np.testing.assert_array_equal(out.valid_count, np.zeros((2, 3)))
    out = gapfill(np.ones((2, 3), dtype=np.float32), np.ones((2, 3), bool), [0, 1], [])
    assert out.values.shape == (0, 3)
    np.testing.assert_array_equal(out.valid_count, [2, 2, 2])


@pytest.mark.parametrize(
    ("values", "valid", "days", "targets", "message"),
    [
        (np.zeros(3), np.ones(3, bool), [0, 2, 1], [0], "acquisition_days must be sorted"),
        (np.zeros(3), np.ones(3, bool), [0, 1, 2], [1, 0], "target_days must be sorted"),
        (np.zeros(3), np.ones(3, bool), [0, 1], [0], "has 2 dates but values has 3"),
        (np.zeros(3), np.ones(3, bool), [0, NAN, 2], [0], "NaN or infinite"),
        (np.zeros(3), np.ones(3, bool), [[0, 1, 2]], [0], "must be 1-D"),
        (np.zeros(3), np.ones(3, np.uint8), [0, 1, 2], [0], "must be a boolean array"),
        (np.zeros((3, 2, 4)), np.ones((3, 2), bool), [0, 1, 2], [0], "does not broadcast"),
        (np.zeros((3, 4)), np.ones((2, 4), bool), [0, 1, 2], [0], "does not fit"),
        (np.zeros(3, complex), np.ones(3, bool), [0, 1, 2], [0], "real numbers"),
    ],
)
def test_invalid_inputs_raise_clear_value_errors(
    values: np.ndarray, valid: np.ndarray, days: list[float], targets: list[float], message: str
) -> None:
    with pytest.raises(ValueError, match=message):
        gapfill(values, valid, days, targets)


# --------------------------------------------------------------------------------------------
# 2. Real cloudy pixels of the bundled Slovenia demo catalog
# --------------------------------------------------------------------------------------------

CATALOG = Path(__file__).resolve().parents[2] / "examples" / "slovenia" / "catalog" / "catalog.json"
EPOCH = dt.datetime(1970, 1, 1, tzinfo=dt.UTC)
DAY_S = 86400

# (row, col) in the 101 x 100 COGs.
PIXEL_A = (12, 43)  # clouds on 2017-07-15 and 2017-07-25, and at 2017-08-09
PIXEL_B = (81, 40)  # 2017-09-08 .. 2017-09-28 all cloudy; 2017-12-17 and 2017-12-22 cloudy
PIXEL_C = (52, 71)  # clouds on 2017-02-20, 03-02, 04-11 and 07-30
PIXELS = [PIXEL_A, PIXEL_B, PIXEL_C]

# The raw series the hand arithmetic below uses, as the catalog holds them:
# acquisition -> (NDVI x 10000, cloud) for pixels A, B, C. Seconds are after midnight UTC; the
# day number is days since 1970-01-01.
RAW = {
    "2015-07-11T10:00:08": [(6520, 0), (7523, 0), (6542, 0)],  # day 16627 + 36008 s, first
    "2017-01-01T10:04:07": [(145, 0), (4317, 0), (3201, 0)],  # day 17167 + 36247 s
    "2017-01-11T10:03:51": [(-444, 0), (2174, 0), (722, 0)],  # day 17177 + 36231 s
    "2017-02-20T10:06:35": [(1426, 0), (1736, 0), (1411, 1)],  # day 17217 + 36395 s
    "2017-03-02T10:00:20": [(453, 1), (282, 1), (196, 1)],  # day 17227 + 36020 s
    "2017-03-12T10:07:06": [(2519, 0), (1425, 0), (1279, 0)],  # day 17237 + 36426 s
    "2017-04-01T10:00:22": [(3044, 0), (4516, 0), (4024, 0)],  # day 17257 + 36022 s
    "2017-04-11T10:00:25": [(3531, 0), (3376, 1), (2873, 1)],  # day 17267 + 36025 s
    "2017-04-21T10:05:41": [(4346, 0), (5786, 0), (7082, 0)],  # day 17277 + 36341 s
    "2017-07-05T10:00:26": [(7169, 0), (7717, 0), (6706, 0)],  # day 17352 + 36026 s
    "2017-07-10T10:05:40": [(6512, 0), (6922, 0), (7034, 0)],  # day 17357 + 36340 s
    "2017-07-15T10:00:26": [(3586, 1), (2773, 1), (4153, 0)],  # day 17362 + 36026 s
    "2017-07-20T10:00:27": [(5663, 0), (6792, 0), (6510, 0)],  # day 17367 + 36027 s
    "2017-07-25T10:05:36": [(4116, 1), (7501, 0), (7030, 0)],  # day 17372 + 36336 s
    "2017-07-30T10:05:35": [(4532, 0), (6331, 0), (6514, 1)],  # day 17377 + 36335 s
    "2017-08-04T10:06:08": [(5047, 0), (7362, 0), (6068, 0)],  # day 17382 + 36368 s
    "2017-08-09T10:00:28": [(303, 1), (102, 1), (375, 1)],  # day 17387 + 36028 s
    "2017-08-24T10:00:22": [(5797, 0), (7762, 0), (6625, 0)],  # day 17402 + 36022 s
    "2017-08-29T10:00:26": [(5956, 0), (6607, 0), (6643, 0)],  # day 17407 + 36026 s
    "2017-09-08T10:06:55": [(-185, 1), (-175, 1), (-303, 1)],  # day 17417 + 36415 s
    "2017-09-18T10:00:23": [(279, 1), (361, 1), (262, 1)],  # day 17427 + 36023 s
    "2017-09-23T10:05:02": [(3739, 1), (5733, 1), (4838, 1)],  # day 17432 + 36302 s
    "2017-09-28T10:06:17": [(5546, 0), (5697, 1), (6957, 0)],  # day 17437 + 36377 s
    "2017-10-08T10:03:22": [(4903, 0), (6720, 0), (6999, 0)],  # day 17447 + 36202 s
    "2017-11-27T10:03:39": [(74, 0), (1602, 0), (72, 0)],  # day 17497 + 36219 s
    "2017-12-07T10:07:25": [(-205, 0), (2644, 0), (-83, 0)],  # day 17507 + 36445 s
    "2017-12-17T10:05:40": [(225, 1), (42, 1), (193, 1)],  # day 17517 + 36340 s
    "2017-12-22T10:04:15": [(-23, 0), (1048, 1), (669, 1)],  # day 17522 + 36255 s, last
}

# Targets: every 10 days of 2017 from 2017-01-01 (day 17167) to 2017-12-27 (day 17527), at
# 00:00 UTC, plus 2015-07-01 (day 16617), before the first acquisition.
TARGETS = np.concatenate([[16617.0], np.arange(17167.0, 17528.0, 10.0)])

# Hand-computed expectations: (pixel, target day, NDVI x 10000). An interpolation is written
# lo + (target - t_lo) / (t_hi - t_lo) * (hi - lo) with times in seconds after t_lo.
EXPECTED: list[tuple[tuple[int, int], float, float]] = [
    # ---- Pixel A (12, 43)
    # 2017-07-10 (day 17357): both neighbours clear. lo 2017-07-05T10:00:26 (7169),
    # hi 2017-07-10T10:05:40 (6512). target - t_lo = 5*86400 - 36026 = 395974 s;
    # t_hi - t_lo = 5*86400 + 36340 - 36026 = 432314 s; w = 0.915941;
    # 7169 + 0.915941 * (6512 - 7169) = 6567.2269
    (PIXEL_A, 17357.0, 7169 + 395974 / 432314 * (6512 - 7169)),
    # 2017-07-20 (day 17367): 2017-07-15 is cloudy (3586), so lo is 2017-07-10T10:05:40 (6512);
    # hi 2017-07-20T10:00:27 (5663). target - t_lo = 10*86400 - 36340 = 827660 s;
    # t_hi - t_lo = 864000 + 36027 - 36340 = 863687 s; w = 0.958287;
    # 6512 + 0.958287 * (5663 - 6512) = 5698.4144
    (PIXEL_A, 17367.0, 6512 + 827660 / 863687 * (5663 - 6512)),
    # 2017-07-30 (day 17377): 2017-07-25 is cloudy (4116): lo 2017-07-20T10:00:27 (5663),
    # hi 2017-07-30T10:05:35 (4532). target - t_lo = 864000 - 36027 = 827973 s;
    # t_hi - t_lo = 864000 + 36335 - 36027 = 864308 s; w = 0.957961;
    # 5663 + 0.957961 * (4532 - 5663) = 4579.5466
    (PIXEL_A, 17377.0, 5663 + 827973 / 864308 * (4532 - 5663)),
    # 2017-08-09 (day 17387): 2017-08-09T10:00:28 is cloudy (303): lo 2017-08-04T10:06:08
    # (5047), hi 2017-08-24T10:00:22 (5797). target - t_lo = 5*86400 - 36368 = 395632 s;
    # t_hi - t_lo = 20*86400 + 36022 - 36368 = 1727654 s; w = 0.229000;
    # 5047 + 0.229000 * (5797 - 5047) = 5218.7497
    (PIXEL_A, 17387.0, 5047 + 395632 / 1727654 * (5797 - 5047)),
    # ---- Pixel B (81, 40)
    # 2017-09-08 .. 2017-10-08 (days 17417, 17427, 17437, 17447): 09-08, 09-18, 09-23 and
    # 09-28 are all cloudy: lo 2017-08-29T10:00:26 (6607), hi 2017-10-08T10:03:22 (6720).
    # t_hi - t_lo = 40*86400 + 36202 - 36026 = 3456176 s; target - t_lo = k*864000 - 36026
    # = 827974, 1691974, 2555974, 3419974 s for k = 1..4; w = 0.239564, 0.489551, 0.739538,
    # 0.989525; 6607 + w * 113 = 6634.0707, 6662.3192, 6690.5678, 6718.8164
    (PIXEL_B, 17417.0, 6607 + 827974 / 3456176 * (6720 - 6607)),
    (PIXEL_B, 17427.0, 6607 + 1691974 / 3456176 * (6720 - 6607)),
    (PIXEL_B, 17437.0, 6607 + 2555974 / 3456176 * (6720 - 6607)),
    (PIXEL_B, 17447.0, 6607 + 3419974 / 3456176 * (6720 - 6607)),
    # 2017-12-07 (day 17507): lo 2017-11-27T10:03:39 (1602), hi 2017-12-07T10:07:25 (2644).
    # target - t_lo = 864000 - 36219 = 827781 s; t_hi - t_lo = 864000 + 36445 - 36219
    # = 864226 s; w = 0.957829; 1602 + 0.957829 * (2644 - 1602) = 2600.0581
    (PIXEL_B, 17507.0, 1602 + 827781 / 864226 * (2644 - 1602)),
    # 2017-12-17 and 2017-12-27 (days 17517, 17527): 12-17 and 12-22 are cloudy, nothing
    # valid after 2017-12-07: held at 2644 (no extrapolation of the rising slope).
    (PIXEL_B, 17517.0, 2644),
    (PIXEL_B, 17527.0, 2644),
    # ---- Pixel C (52, 71)
    # 2015-07-01 (day 16617): before the first acquisition (2015-07-11, clear, 6542): held.
    (PIXEL_C, 16617.0, 6542),
    # 2017-01-11 (day 17177): lo 2017-01-01T10:04:07 (3201), hi 2017-01-11T10:03:51 (722).
    # target - t_lo = 864000 - 36247 = 827753 s; t_hi - t_lo = 864000 + 36231 - 36247
    # = 863984 s; w = 0.958065; 3201 + 0.958065 * (722 - 3201) = 825.9564
    (PIXEL_C, 17177.0, 3201 + 827753 / 863984 * (722 - 3201)),
    # 2017-02-20 and 2017-03-02 (days 17217, 17227): 02-20 and 03-02 are cloudy: lo
    # 2017-01-11T10:03:51 (722), hi 2017-03-12T10:07:06 (1279). t_hi - t_lo = 60*86400
    # + 36426 - 36231 = 5184195 s; target - t_lo = 40*86400 - 36231 = 3419769 s and
    # 50*86400 - 36231 = 4283769 s; w = 0.659653, 0.826313;
    # 722 + w * 557 = 1089.4266, 1182.2565
    (PIXEL_C, 17217.0, 722 + 3419769 / 5184195 * (1279 - 722)),
    (PIXEL_C, 17227.0, 722 + 4283769 / 5184195 * (1279 - 722)),
    # 2017-04-11 (day 17267): 2017-04-11T10:00:25 is cloudy (2873): lo 2017-04-01T10:00:22
    # (4024), hi 2017-04-21T10:05:41 (7082). target - t_lo = 864000 - 36022 = 827978 s;
    # t_hi - t_lo = 20*86400 + 36341 - 36022 = 1728319 s; w = 0.479065;
    # 4024 + 0.479065 * (7082 - 4024) = 5488.9823
    (PIXEL_C, 17267.0, 4024 + 827978 / 1728319 * (7082 - 4024)),
    # 2017-07-30 (day 17377): 2017-07-30T10:05:35 is cloudy (6514): lo 2017-07-25T10:05:36
    # (7030), hi 2017-08-04T10:06:08 (6068). target - t_lo = 5*86400 - 36336 = 395664 s;
    # t_hi - t_lo = 10*86400 + 36368 - 36336 = 864032 s; w = 0.457927;
    # 7030 + 0.457927 * (6068 - 7030) = 6589.4738
    (PIXEL_C, 17377.0, 7030 + 395664 / 864032 * (6068 - 7030)),
]


def _read_demo_pixels(
    pixels: list[tuple[int, int]],
) -> tuple[list[dt.datetime], npt.NDArray[np.int16], npt.NDArray[np.uint8]]:
    """Each acquisition's time, NDVI x 10000 and cloud flag at ``pixels``, read by 1x1 windows."""
    catalog = pystac.Catalog.from_file(str(CATALOG))
    collection = catalog.get_child("slovenia-s2-ndvi")
    assert collection is not None, f"no collection slovenia-s2-ndvi in {CATALOG}"
    items = sorted(collection.get_items(), key=lambda item: (item.datetime, item.id))
    times: list[dt.datetime] = []
    ndvi = np.empty((len(items), len(pixels)), dtype=np.int16)
    cloud = np.empty((len(items), len(pixels)), dtype=np.uint8)
    for t, item in enumerate(items):
        assert item.datetime is not None
        times.append(item.datetime)
        for name, out in (("ndvi", ndvi), ("cloud", cloud)):
            with rasterio.open(item.assets[name].get_absolute_href()) as src:
                for p, (row, col) in enumerate(pixels):
                    out[t, p] = src.read(1, window=Window(col, row, 1, 1))[0, 0]
    return times, ndvi, cloud


@pytest.fixture(scope="module")
def demo_pixels() -> tuple[list[dt.datetime], npt.NDArray[np.int16], npt.NDArray[np.uint8]]:
    times, ndvi, cloud = _read_demo_pixels(PIXELS)
    print("raw series (NDVI x 10000, cloud) for pixels", PIXELS)
    for t, when in enumerate(times):
        row = "  ".join(f"{ndvi[t, p]:6d} {cloud[t, p]}" for p in range(len(PIXELS)))
        print(f"{t:2d} {when:%Y-%m-%dT%H:%M:%S}  {row}")
    return times, ndvi, cloud


def test_demo_pixels_are_the_hand_computation_inputs(
    demo_pixels: tuple[list[dt.datetime], npt.NDArray[np.int16], npt.NDArray[np.uint8]],
) -> None:
    times, ndvi, cloud = demo_pixels
    by_time = {f"{when:%Y-%m-%dT%H:%M:%S}": t for t, when in enumerate(times)}
    for when, expected in RAW.items():
        t = by_time[when]
        got = [(int(ndvi[t, p]), int(cloud[t, p])) for p in range(len(PIXELS))]
        assert got == expected, f"catalog changed at {when}: {got} != {expected}"


def test_real_cloudy_pixels_match_hand_computation(
    demo_pixels: tuple[list[dt.datetime], npt.NDArray[np.int16], npt.NDArray[np.uint8]],
) -> None:
    times, ndvi, cloud = demo_pixels
    days = np.array([(when - EPOCH) / dt.timedelta(days=1) for when in times])
    valid = (cloud == 0) & (ndvi != -32768)
    out = gapfill(ndvi * np.float32(1e-4), valid, days, TARGETS)
    assert out.values.shape == (TARGETS.size, len(PIXELS))
    np.testing.assert_array_equal(out.valid_count, valid.sum(axis=0))
    # As the int16 cube stores them (steps of 1e-4): within half a step of the hand value.
    stored = out.values.copy()
    quantize(stored, VariableEncoding(1e-4))
    for pixel, target, expected in EXPECTED:
        p = PIXELS.index(pixel)
        (k,) = np.flatnonzero(target == TARGETS)
        assert out.values[k, p] == pytest.approx(expected * 1e-4, rel=1e-6), (pixel, target)
        assert abs(stored[k, p] - expected * 1e-4) <= 5e-5 + 1e-7, (pixel, target)
    # Cloud-free output: NDVI inside the range the clear acquisitions span, nowhere NaN.
    assert not np.isnan(out.values).any()
    for p in range(len(PIXELS)):
        clear = ndvi[valid[:, p], p] * 1e-4
        assert clear.min() - 1e-6 <= out.values[:, p].min()
        assert out.values[:, p].max() <= clear.max() + 1e-6


# --------------------------------------------------------------------------------------------
# 3. Property: the vectorized kernel equals np.interp per pixel
# --------------------------------------------------------------------------------------------


def _reference(
    values: np.ndarray, valid: np.ndarray, days: np.ndarray, targets: np.ndarray
) -> tuple[np.ndarray, np.ndarray]:
    """The policy, one pixel at a time: merge equal days (mean of valid), then np.interp."""
    n_time = values.shape[0]
    flat = values.reshape(n_time, -1).astype(np.float64)
    if valid.ndim < values.ndim:  # a (T, H, W) mask for (T, B, H, W) values
        valid = valid[:, np.newaxis]
    ok = np.broadcast_to(valid, values.shape)
    ok = ok.reshape(n_time, -1) & np.isfinite(flat)
    out = np.full((targets.size, flat.shape[1]), np.nan)
    for p in range(flat.shape[1]):
        t = days[ok[:, p]]
        if t.size == 0:
            continue
        unique, inverse = np.unique(t, return_inverse=True)
        mean = np.bincount(inverse, weights=flat[ok[:, p], p]) / np.bincount(inverse)
        out[:, p] = np.interp(targets, unique, mean)
    return out.reshape(targets.size, *values.shape[1:]), ok.sum(axis=0).reshape(values.shape[1:])


@st.composite
def _cases(draw: st.DrawFn) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    n_time = draw(st.integers(1, 12))
    n_pix = draw(st.integers(1, 6))
    # Half-day grid: equal days (simultaneous acquisitions) are frequent.
    days = np.sort(
        draw(hnp.arrays(np.float64, n_time, elements=st.integers(0, 30).map(lambda i: i / 2)))
    )
    finite = st.floats(-1000, 1000, width=32, allow_nan=False)
    values = draw(
        hnp.arrays(np.float32, (n_time, n_pix), elements=st.one_of(finite, st.just(np.nan)))
    )
    valid = draw(hnp.arrays(np.bool_, (n_time, n_pix)))
    # Targets anywhere, outside the acquisitions too, and exactly on acquisition days.
    target = st.one_of(
        st.floats(-5, 20, allow_nan=False), st.sampled_from([float(d) for d in days])
    )
    targets = np.sort(draw(hnp.arrays(np.float64, draw(st.integers(0, 8)), elements=target)))
    return values, valid, days, targets


def _assert_matches_reference(
    values: np.ndarray, valid: np.ndarray, days: np.ndarray, targets: np.ndarray
) -> None:
    out = gapfill(values, valid, days, targets)
    expected, count = _reference(values, valid, days, targets)
    finite = values[np.isfinite(values)]
    scale = float(np.abs(finite).max()) if finite.size else 1.0
    # float32 arithmetic against float64: a few float32 ulps of the largest value.
    np.testing.assert_allclose(
        out.values, expected, rtol=1e-6, atol=4 * float(np.finfo(np.float32).eps) * scale
    )
    np.testing.assert_array_equal(out.valid_count, count)


@settings(max_examples=300, deadline=None)
@given(_cases())
def test_matches_per_pixel_np_interp(
    case: tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray],
) -> None:
    _assert_matches_reference(*case)


def test_matches_reference_across_pixel_blocks() -> None:
    # More pixels than one internal block (8192), a (T, H, W) mask over 2 bands, NaNs.
    rng = np.random.default_rng(1)
    days = np.sort(rng.uniform(0, 100, 9))
    values = rng.normal(size=(9, 2, 70, 70)).astype(np.float32)
    values[rng.random(values.shape) < 0.05] = np.nan
    valid = rng.random((9, 70, 70)) < 0.4  # many pixels with long gaps or never valid
    targets = np.linspace(-10, 110, 25)
    _assert_matches_reference(values, valid, days, targets)


def test_matches_reference_with_many_acquisitions() -> None:
    # More than 32766 acquisitions: the indices no longer fit int16.
    rng = np.random.default_rng(2)
    days = np.cumsum(rng.integers(0, 3, 40_000)).astype(np.float64)  # with equal days
    values = rng.normal(size=(40_000, 2)).astype(np.float32)
    valid = rng.random((40_000, 2)) < 0.1
    targets = np.sort(rng.uniform(-5, days[-1] + 5, 50))
    _assert_matches_reference(values, valid, days, targets)


# --------------------------------------------------------------------------------------------
# 4. Size check: a (T=70, B=4, 256, 256) chunk
# --------------------------------------------------------------------------------------------


def test_full_size_chunk_runs() -> None:
    rng = np.random.default_rng(3)
    values = rng.random((70, 4, 256, 256), dtype=np.float32)
    valid = rng.random((70, 256, 256)) < 0.5
    days = np.sort(rng.uniform(0, 365, 70))
    targets = np.arange(0.0, 365.0, 10.0)
    out = gapfill(values, valid, days, targets)
    assert out.values.shape == (37, 4, 256, 256)
    assert out.values.dtype == np.float32
    assert out.valid_count.shape == (4, 256, 256)
    # Spot-check a corner of the chunk against the reference.
    expected, count = _reference(values[:, :, :3, :3], valid[:, :3, :3], days, targets)
    np.testing.assert_allclose(out.values[:, :, :3, :3], expected, rtol=1e-6, atol=1e-6)
    np.testing.assert_array_equal(out.valid_count[:, :3, :3], count)
