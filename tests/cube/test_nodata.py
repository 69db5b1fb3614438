"""A band's no-data value masks the acquisition at that pixel, like a cloud in the quality layer.

The synthetic series are rewritten so that one band (not the SCL) holds its no-data value on some
pixels of some dates: those acquisitions must be left out of every band's gap-filling (one mask
for all bands), counted out of ``valid_count``, and a pixel whose band is no-data on every date
must come out never valid (NaN, count 0). The no-data value comes either from the sensor profile
(``BandRead.nodata``) or, when the profile gives none, from the file.
"""

from __future__ import annotations

from dataclasses import replace
from datetime import date
from pathlib import Path

import numpy as np
import pytest

from pipeline.cube.build import compute_window
from pipeline.cube.plan import plan_cube
from pipeline.model import Window, day_number
from tests.cube.synthetic import Series, expected_valid, make_series, write_cog

START, END = date(2021, 1, 1), date(2021, 4, 30)
SIZE = 64


def _with_band_nodata(series: Series, nodata: int | None, file_nodata: int | None) -> np.ndarray:
    """Rewrite the red band with ``nodata`` (0 if None) on some pixels and dates; return the
    (T, H, W) mask of those pixels. ``file_nodata`` is the no-data value the files declare."""
    hole = np.zeros(series.raw["red"].shape, dtype=bool)
    hole[1, 10:20, 5:15] = True  # a block on one date
    hole[3, 40:42, :] = True  # two rows on another
    hole[:, 50, 50] = True  # one pixel on every date
    value = 0 if nodata is None else nodata
    for t, acquisition in enumerate(series.acquisitions):
        data = series.raw["red"][t].copy()
        data[hole[t]] = value
        write_cog(Path(acquisition.assets["red"].href), data, 10.0, nodata=file_nodata)
    return hole


@pytest.mark.parametrize(
    ("profile_nodata", "file_nodata"),
    [
        (65535, None),  # the profile's value; the file declares none
        (None, 0),  # no value in the profile: the file's own no-data value
    ],
    ids=["profile-nodata", "file-nodata"],
)
def test_band_nodata_is_masked_like_a_cloud(
    tmp_path: Path, profile_nodata: int | None, file_nodata: int | None
) -> None:
    series = make_series(tmp_path, size=SIZE, n_dates=6, seed=3)
    bands = tuple(replace(b, nodata=profile_nodata) for b in series.profile.bands)
    series = replace(series, profile=replace(series.profile, bands=bands))
    hole = _with_band_nodata(series, profile_nodata, file_nodata)
    plan = plan_cube(
        series.grid, [(series.profile, series.acquisitions)], START, END, ["ndvi"], 32,
        encoding="float32",  # compared with float64 references at rtol 1e-5
    )  # fmt: skip
    arrays = compute_window(plan, Window(0, 0, SIZE, SIZE)).arrays

    valid = expected_valid(series) & ~hole
    np.testing.assert_array_equal(arrays["s2_valid_count"], valid.sum(axis=0))
    # The pixel that is no-data on every date is never valid, in every band and index.
    assert arrays["s2_valid_count"][50, 50] == 0
    for name in ("s2_blue", "s2_red", "s2_nir", "s2_ndvi"):
        assert np.isnan(arrays[name][:, 50, 50]).all(), name

    days = np.array([day_number(a.datetime) for a in series.acquisitions])
    targets = np.array([day_number(d) for d in plan.sensors[0].dates])
    # Pixels in the holes (and a few outside): every band interpolates over the dates the
    # mask keeps, so the no-data date's value (and the green/nir values there) is not used.
    pixels = [(12, 7), (19, 14), (40, 3), (41, 60), (30, 30), (5, 50)]
    for r, c in pixels:
        ok = valid[:, r, c]
        assert ok.any()
        for band in ("green", "red", "nir"):
            raw = series.raw[band][:, r, c].astype(np.float64) * 1e-4
            expected = np.interp(targets, days[ok], raw[ok])
            np.testing.assert_allclose(arrays[f"s2_{band}"][:, r, c], expected, rtol=1e-5)
    # Inside a hole the count is one less than the clouds alone would give.
    cloud_only = expected_valid(series)
    in_hole_and_clear = hole[1] & ~hole[0] & cloud_only[1]  # the block of date 1 only
    assert in_hole_and_clear.any()
    np.testing.assert_array_equal(
        arrays["s2_valid_count"][in_hole_and_clear],
        cloud_only[:, in_hole_and_clear].sum(axis=0) - 1,
    )
