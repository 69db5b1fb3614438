"""``masking: band`` on the real historical Landsat-8 sample (iota2 test data in tests/data): a
band's own no-data removes that band only, and the other bands of the date keep their
observations; under the default date rule it removes every band of the date (docs/sensors.md).
A band's saturation bit (THEIA SAT_R1, files in the real layout) likewise."""

from __future__ import annotations

import dataclasses
from datetime import date
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import rasterio

from pipeline.catalog.archive import index_archive
from pipeline.catalog.items import parse_item
from pipeline.catalog.profiles import profile_by_name
from pipeline.catalog.sensors import SensorProfile
from pipeline.cube.build import compute_window, read_sensor
from pipeline.cube.plan import SensorCube, plan_cube
from pipeline.cube.read import RasterioReader
from pipeline.model import Acquisition, Window
from pipeline.testing.generators import overlapping_tiles, theia_l2a

SAMPLE = Path(__file__).resolve().parents[1] / "data" / "iota2-theia-landsat8"
TILE = "D0005H0002"  # 50 x 50 px, two dates 16 days apart (2016-03-30, 2016-04-15)


@pytest.fixture(scope="module")
def sample() -> tuple[SensorProfile, list[Acquisition]]:
    (profile,) = profile_by_name("landsat8-n2a-theia").configure("l8", date_step_days=16)
    items = [it for it in index_archive(SAMPLE) if it.id.endswith(TILE)]
    return profile, [parse_item(it, profile, field="test") for it in items]


def _cube(
    profile: SensorProfile, acquisitions: list[Acquisition], *, masking: str = "date",
    blue_nodata: float | None = None,
) -> dict[str, Any]:  # fmt: skip
    grid = acquisitions[0].grid
    assert grid is not None
    bands = tuple(
        dataclasses.replace(b, nodata=blue_nodata) if b.name == "blue" else b for b in profile.bands
    )
    sensor = dataclasses.replace(profile, bands=bands, masking=masking)
    plan = plan_cube(
        grid, [(sensor, acquisitions)], date(2016, 3, 30), date(2016, 4, 15), (), grid.width
    )
    return compute_window(plan, Window(0, 0, grid.height, grid.width)).arrays


def test_a_bands_no_data_removes_that_band_only(sample: Any) -> None:
    profile, acquisitions = sample
    raw = _cube(profile, acquisitions)  # every pixel observed on both dates
    assert (raw["l8_valid_count"] == 2).all()
    # The blue band declares as no-data the most common of its first-date codes that the second
    # date never has: real pixels where that band alone has no data, on the first date only.
    codes = np.rint(raw["l8_blue"] * 1000).astype(int)
    values, counts = np.unique(codes[0], return_counts=True)
    lonely = [(n, v) for v, n in zip(values, counts, strict=True) if not (codes[1] == v).any()]
    nodata = float(max(lonely)[1])
    hole = codes[0] == nodata
    assert hole.sum() >= 10 and not hole.all()
    by_date = _cube(profile, acquisitions, masking="date", blue_nodata=nodata)
    by_band = _cube(profile, acquisitions, masking="band", blue_nodata=nodata)
    for cube in (by_date, by_band):  # blue: the second date's value held where it had none
        np.testing.assert_array_equal(cube["l8_blue"][0][hole], raw["l8_blue"][1][hole])
        np.testing.assert_array_equal(cube["l8_blue"][:, ~hole], raw["l8_blue"][:, ~hole])
    for name in profile.band_names:
        if name == "blue":
            continue
        variable = f"l8_{name}"
        # The date rule drops every band of that date there: the second date's values, held.
        np.testing.assert_array_equal(by_date[variable][0][hole], raw[variable][1][hole])
        assert not np.array_equal(by_date[variable][0][hole], raw[variable][0][hole])
        # The band rule keeps the other bands' own first-date observations, everywhere.
        np.testing.assert_array_equal(by_band[variable], raw[variable])
    assert (by_date["l8_valid_count"][hole] == 1).all()
    assert (by_band["l8_valid_count"][hole] == 1).all()  # the band with the fewest dates
    assert (by_band["l8_valid_count"][~hole] == 2).all()


def test_the_date_rule_and_the_read_limits_leave_digests_as_they_were(sample: Any) -> None:
    # Cubes built before the option existed keep their digests (so stores resume); the HTTP
    # limits of the reads change no pixel and are in no digest.
    from pipeline.manifest import load_manifest
    from pipeline.run.units import canonical
    from tests.conftest import DEMO_MANIFEST

    profile, _ = sample
    form = canonical(profile)
    assert "masking" not in form and "read_timeout_s" not in form
    assert canonical(dataclasses.replace(profile, read_timeout_s=5.0, read_retries=1)) == form
    assert canonical(dataclasses.replace(profile, masking="band"))["masking"] == "band"
    sensor = load_manifest(DEMO_MANIFEST).spec.sensors[0]
    assert "masking" not in canonical(sensor)
    assert canonical(sensor.model_copy(update={"masking": "band"}))["masking"] == "band"


def test_a_saturated_band_removes_that_band_only(tmp_path: Path) -> None:
    # THEIA L2A products in the real layout (pipeline.testing): SAT_R1 flags each 10 m band by
    # its own bit. Under the band rule a pixel saturated in red keeps its nir observation.
    (tile,) = overlapping_tiles(size=64, dates=(1,), names=("31TGK",))
    (scene,) = theia_l2a(tmp_path, tiles=[tile], seed=3)
    (profile,) = profile_by_name("sentinel2-l2a-theia").configure("s2", bands=["red", "nir"])
    (item,) = index_archive(tmp_path)
    acquisition = parse_item(item, profile, field="test")
    grid = acquisition.grid
    assert grid is not None
    with rasterio.open(scene.files["SAT_R1"]) as src:
        sat = src.read(1)
    red_only = ((sat >> 2) & 1 == 1) & ((sat >> 3) & 1 == 0)  # bit 2 red, bit 3 nir

    def read(masking: str) -> tuple[np.ndarray, np.ndarray]:
        sensor = SensorCube(dataclasses.replace(profile, masking=masking), (acquisition,), (), ())
        values, valid = read_sensor(sensor, grid, RasterioReader())
        return values[0], valid[0]

    by_date, valid_date = read("date")
    by_band, valid_band = read("band")
    shared = valid_band & red_only  # flagged in red only, valid by every other rule
    assert shared.sum() >= 5
    assert not valid_date[shared].any()  # the date rule: the whole date is gone there
    assert np.isnan(by_band[0][shared]).all()  # the band rule: red is gone ...
    np.testing.assert_array_equal(by_band[1][shared], by_date[1][shared])  # ... nir stays
    assert np.isfinite(by_band[1][shared]).all()
    # Elsewhere the two rules agree on every value the date rule keeps.
    np.testing.assert_array_equal(by_band[:, valid_date], by_date[:, valid_date])
