"""Olofsson estimates from a label COG: class areas streamed from the file, checked by hand.

The tiny map (4 x 5 pixels of 30 m, EPSG:32631, no-data 0) holds 12 pixels of class 1,
6 of class 2 and 2 of no-data; a 30 m pixel is 0.09 ha, so the mapped areas are 1.08 ha and
0.54 ha (A = 1.62 ha) and the strata weights W_1 = 2/3, W_2 = 1/3. The validation sample:
10 pixels mapped 1 (8 reference 1, 2 reference 2) and 5 mapped 2 (1 reference 1, 4 reference 2).

By hand (Olofsson et al. 2014, eqs. 1-12):

* p_11 = 2/3 x 8/10 = 8/15, p_21 = 2/3 x 2/10 = 2/15, p_12 = 1/3 x 1/5 = 1/15,
  p_22 = 1/3 x 4/5 = 4/15 (p_ij: map i, reference j);
* OA = 8/15 + 4/15 = 0.8, V(OA) = (2/3)^2 x 0.8 x 0.2 / 9 + (1/3)^2 x 0.8 x 0.2 / 4 = 1/81,
  so SE(OA) = 1/9;
* UA_1 = UA_2 = 0.8 with SE sqrt(0.16 / 9) = 2/15 and sqrt(0.16 / 4) = 0.2;
* area shares p_.1 = 3/5 and p_.2 = 2/5, SE(p_.1) = SE(p_.2) = sqrt(1/81) = 1/9, so the
  areas are 0.972 ha and 0.648 ha, each with SE 1.62 / 9 = 0.18 ha;
* PA_1 = (8/15) / (3/5) = 8/9, PA_2 = (4/15) / (2/5) = 2/3, with the eq. 7 variance below.
"""

from __future__ import annotations

import json
import math
import warnings
from pathlib import Path

import numpy as np
import pyproj
import pytest
import rasterio
import rasterio.io
import rasterio.shutil
from affine import Affine

from pipeline.errors import InputDataError
from pipeline.model import ClassInfo, GridSpec, Window
from pipeline.validate.mapped_area import (
    POLYGON_SAMPLE_CAVEAT,
    AreaAssessment,
    assess_area,
    assess_map_area,
    count_classes,
    count_map_classes,
    row_cell_areas,
)
from pipeline.validate.metrics import classification_metrics
from pipeline.validate.report import write_report
from pipeline.warnings import SamplingWarning

Z = 1.959963984540054  # the 97.5% normal quantile
MAP = np.array(
    [
        [0, 1, 1, 1, 2],
        [1, 1, 1, 2, 2],
        [1, 1, 1, 2, 2],
        [0, 1, 1, 1, 2],
    ],
    dtype=np.uint8,
)
GRID = GridSpec("EPSG:32631", (30.0, 0.0, 500000.0, 0.0, -30.0, 4800000.0), 5, 4)
# Validation pixels: (reference, map) pairs.
REFERENCE = [1] * 8 + [2] * 2 + [1] * 1 + [2] * 4
PREDICTED = [1] * 10 + [2] * 5


def _write(path: Path, data: np.ndarray, grid: GridSpec, nodata: float | None) -> Path:
    staging = path.with_suffix(".staging.tif")
    with rasterio.open(
        staging, "w", driver="GTiff", width=grid.width, height=grid.height, count=1,
        dtype=data.dtype.name, crs=grid.crs, transform=Affine(*grid.transform), nodata=nodata,
    ) as dst:  # fmt: skip
        dst.write(data, 1)
    rasterio.shutil.copy(staging, path, driver="COG", blocksize=16)
    staging.unlink()
    return path


@pytest.fixture
def label_cog(tmp_path: Path) -> Path:
    return _write(tmp_path / "labels.tif", MAP, GRID, 0)


# --------------------------------------------------------------------------------------------
# class areas


def test_counts_and_areas_by_hand(label_cog: Path) -> None:
    counts = count_map_classes(label_cog)
    assert counts.pixels == {1: 12, 2: 6}
    assert counts.nodata_pixels == 2
    assert counts.unit == "ha"
    assert counts.pixel_area == pytest.approx(0.09)
    assert counts.area == pytest.approx({1: 1.08, 2: 0.54})
    assert count_map_classes(label_cog, unit="m2").area == pytest.approx({1: 10800, 2: 5400})
    assert count_map_classes(label_cog, unit="km2").area == pytest.approx({1: 0.0108, 2: 0.0054})
    assert json.loads(json.dumps(counts.to_dict())) == {
        "unit": "ha",
        "pixel_area": pytest.approx(0.09),
        "pixels": {"1": 12, "2": 6},
        "area": {"1": pytest.approx(1.08), "2": pytest.approx(0.54)},
        "nodata_pixels": 2,
    }


@pytest.mark.parametrize("block", [1, 2, 3, 1024])
def test_streamed_in_bounded_blocks(
    label_cog: Path, block: int, monkeypatch: pytest.MonkeyPatch
) -> None:
    shapes: list[tuple[int, ...]] = []
    real_read = rasterio.io.DatasetReader.read

    def recording(self: rasterio.io.DatasetReader, *args: object, **kwargs: object) -> object:
        out = real_read(self, *args, **kwargs)  # type: ignore[arg-type]
        shapes.append(np.shape(out))
        return out

    monkeypatch.setattr(rasterio.io.DatasetReader, "read", recording)
    counts = count_map_classes(label_cog, block=block)
    assert counts.pixels == {1: 12, 2: 6}
    assert counts.nodata_pixels == 2
    assert shapes, "the map was not read"
    assert all(h <= block and w <= block for h, w in shapes)  # never the whole map at once
    assert sum(h * w for h, w in shapes) == MAP.size  # every pixel read once


def test_float_map_nan_and_non_integer_codes() -> None:
    data = MAP.astype(np.float32)
    data[0, 0] = np.nan
    counts = count_classes([(Window(0, 0, 4, 5), data)], GRID, 0.0)
    assert counts.pixels == {1: 12, 2: 6}
    assert counts.nodata_pixels == 2
    data[1, 1] = 1.5
    with pytest.raises(InputDataError, match="non-integer"):
        count_classes([(Window(0, 0, 4, 5), data)], GRID, None)


def test_geographic_grid_weights_rows_by_latitude() -> None:
    grid = GridSpec("EPSG:4326", (1.0, 0.0, 10.0, 0.0, -1.0, 60.0), 2, 60)  # 60N to the equator
    rows = row_cell_areas(grid, "km2")
    assert rows[0] < rows[-1]  # cells shrink towards the pole
    assert rows[-1] == pytest.approx(12_308.8, rel=1e-3)  # a 1 x 1 degree cell at the equator
    labels = np.ones(grid.shape, np.uint8)
    labels[:, 1] = 2
    counts = count_classes([(w, labels[w.slices]) for w in grid.chunks(7)], grid, None, unit="km2")
    assert counts.pixel_area is None
    geod = pyproj.Geod(ellps="WGS84")
    footprint, _ = geod.polygon_area_perimeter([10, 11, 11, 10], [0, 0, 60, 60])
    assert counts.area[1] == pytest.approx(abs(footprint) / 1e6, rel=1e-9)
    assert counts.area[1] == pytest.approx(counts.area[2], rel=1e-12)


@pytest.mark.parametrize("extra", [0, -3, 70_000])
def test_codes_outside_a_label_maps_range_count_the_same(extra: int) -> None:
    """Codes 0..65535 are counted by bincount, others (negative, large) by unique: one answer,
    weighted areas included."""
    grid = GridSpec("EPSG:4326", (1.0, 0.0, 10.0, 0.0, -1.0, 60.0), 3, 60)
    labels = np.ones(grid.shape, np.int64)
    labels[:, 1] = 2
    labels[::2, 2] = extra
    counts = count_classes([(w, labels[w.slices]) for w in grid.chunks(7)], grid, None, unit="km2")
    assert counts.pixels == {1: 90, 2: 60, extra: 30}
    assert counts.area[2] == pytest.approx(sum(row_cell_areas(grid, "km2")), rel=1e-12)
    assert counts.area[extra] == pytest.approx(sum(row_cell_areas(grid, "km2")[::2]), rel=1e-12)


def test_feet_crs_converts_to_metres() -> None:
    grid = GridSpec("EPSG:2227", (10.0, 0.0, 6e6, 0.0, -10.0, 2e6), 2, 2)  # US survey feet
    counts = count_classes([(Window(0, 0, 2, 2), np.ones((2, 2), np.uint8))], grid, None,
                           unit="m2")  # fmt: skip
    assert counts.pixel_area == pytest.approx((10 * 1200 / 3937) ** 2)


def test_bad_inputs(tmp_path: Path) -> None:
    with pytest.raises(InputDataError, match="cannot open the label map"):
        count_map_classes(tmp_path / "missing.tif")
    with pytest.raises(InputDataError, match="area unit"):
        count_classes([], GRID, None, unit="acres")  # type: ignore[arg-type]
    rotated = GridSpec("EPSG:32631", (30.0, 1.0, 0.0, 1.0, -30.0, 0.0), 5, 4)
    with pytest.raises(InputDataError, match="rotated"):
        count_classes([], rotated, None)


# --------------------------------------------------------------------------------------------
# estimates


def _pa_se(j: int) -> float:
    """Eq. 7 by hand for the tiny example (areas in pixels: the ratio does not depend on it)."""
    big_n = {1: 12.0, 2: 6.0}  # N_i. mapped pixels
    n = {1: {1: 8, 2: 2}, 2: {1: 1, 2: 4}}  # n[map][reference]
    n_i = {1: 10, 2: 5}
    n_ref = sum(big_n[i] * n[i][j] / n_i[i] for i in (1, 2))  # estimated N_.j
    users = n[j][j] / n_i[j]
    producers = big_n[j] * users / n_ref
    own = big_n[j] ** 2 * (1 - producers) ** 2 * users * (1 - users) / (n_i[j] - 1)
    others = sum(
        big_n[i] ** 2 * (n[i][j] / n_i[i]) * (1 - n[i][j] / n_i[i]) / (n_i[i] - 1)
        for i in (1, 2)
        if i != j
    )
    return math.sqrt((own + producers**2 * others) / n_ref**2)


def test_estimates_by_hand(label_cog: Path) -> None:
    assessment = assess_map_area(label_cog, REFERENCE, PREDICTED)
    e = assessment.estimates
    assert e.classes == (1, 2)
    assert e.samples == {1: 10, 2: 5}
    assert e.proportions == pytest.approx(np.array([[8 / 15, 1 / 15], [2 / 15, 4 / 15]]))
    assert e.overall_accuracy.value == pytest.approx(0.8)
    assert e.overall_accuracy.se == pytest.approx(1 / 9)
    assert e.overall_accuracy.half_width == pytest.approx(Z / 9)
    assert e.users_accuracy[1].value == pytest.approx(0.8)
    assert e.users_accuracy[1].se == pytest.approx(2 / 15)
    assert e.users_accuracy[2].se == pytest.approx(0.2)
    assert e.producers_accuracy[1].value == pytest.approx(8 / 9)
    assert e.producers_accuracy[2].value == pytest.approx(2 / 3)
    assert e.producers_accuracy[1].se == pytest.approx(_pa_se(1))
    assert e.producers_accuracy[2].se == pytest.approx(_pa_se(2))
    assert _pa_se(1) == pytest.approx(0.100128, abs=1e-6)  # the hand value, for the record
    assert e.area[1].value == pytest.approx(0.972)
    assert e.area[2].value == pytest.approx(0.648)
    assert e.area[1].se == pytest.approx(0.18)
    assert e.area[1].half_width == pytest.approx(0.18 * Z)
    assert (e.area[1].low, e.area[1].high) == pytest.approx((0.972 - 0.18 * Z, 0.972 + 0.18 * Z))
    assert e.area_proportion[2].value == pytest.approx(0.4)
    assert e.area_proportion[2].se == pytest.approx(1 / 9)


def test_json_ready_with_the_caveat(label_cog: Path) -> None:
    assessment = assess_map_area(label_cog, np.array(REFERENCE), np.array(PREDICTED))
    document = json.loads(json.dumps(assessment.to_dict(), allow_nan=False))
    assert document["intervals_are_indicative"] is True
    assert document["caveat"] == POLYGON_SAMPLE_CAVEAT
    assert "not a stratified random sample" in document["caveat"]
    assert document["sampling"] == "polygon_split"
    assert document["area_unit"] == "ha"
    assert document["n_samples"] == 15
    assert document["map"]["pixels"] == {"1": 12, "2": 6}
    assert document["overall_accuracy"]["value"] == pytest.approx(0.8)
    assert document["overall_accuracy"]["ci_low"] == pytest.approx(0.8 - Z / 9)
    assert document["area"]["1"]["value"] == pytest.approx(0.972)
    assert document["mapped_area"] == {"1": pytest.approx(1.08), "2": pytest.approx(0.54)}

    design = assess_area(assessment.mapped, REFERENCE, PREDICTED, sampling="stratified_random")
    assert design.to_dict()["intervals_are_indicative"] is False
    assert design.caveat is None
    with pytest.raises(InputDataError, match="sampling"):
        assess_area(assessment.mapped, REFERENCE, PREDICTED, sampling="cluster")  # type: ignore[arg-type]


def test_map_class_without_samples_and_samples_off_the_map(label_cog: Path) -> None:
    mapped = count_map_classes(label_cog)
    with pytest.warns(SamplingWarning, match="no validation sample"):
        lonely = assess_area(mapped, [1, 1, 2], [1, 1, 1])
    assert lonely.estimates.unassessed_classes == (2,)
    assert lonely.to_dict()["unassessed_area"] == pytest.approx(0.54)
    # A reference class the map never shows is estimated (its mapped area is 0).
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        extra = assess_area(mapped, [*REFERENCE, 3], [*PREDICTED, 1], classes=[1, 2, 3])
    assert extra.estimates.classes == (1, 2, 3)
    assert extra.estimates.area[3].value > 0
    # Samples mapped as a class the map does not hold: the labels come from another map.
    with pytest.raises(InputDataError, match="no mapped area"):
        assess_area(mapped, [1, 2], [1, 5])


# --------------------------------------------------------------------------------------------
# report


def test_report_renders_the_assessment(tmp_path: Path, label_cog: Path) -> None:
    assessment = assess_map_area(label_cog, REFERENCE, PREDICTED)
    assert isinstance(assessment, AreaAssessment)
    metrics = classification_metrics(REFERENCE, PREDICTED, [1, 2])
    legend = [ClassInfo(1, "Forest", "#33a02c"), ClassInfo(2, "Crops <&>", "#ffff99")]
    files = write_report(tmp_path / "report", metrics, legend, label_cog, None,
                         title="tiny", details={}, area=assessment)  # fmt: skip
    loaded = json.loads(files.metrics_json.read_text(encoding="utf-8"))
    assert loaded["area_estimates"] == json.loads(json.dumps(assessment.to_dict()))
    assert loaded["area_estimates"]["intervals_are_indicative"] is True
    page = files.html.read_text(encoding="utf-8")
    assert "Olofsson et al. 2014" in page
    assert "The intervals are indicative." in page
    assert "not a stratified random sample" in page
    assert "estimated area (ha)" in page
    assert f"{0.8:.4f} ± {Z / 9:.4f}" in page
    assert f"{0.972:.1f} ± {0.18 * Z:.1f}" in page
    assert "Crops &lt;&amp;&gt;" in page

    design = assess_area(assessment.mapped, REFERENCE, PREDICTED, sampling="stratified_random")
    page = write_report(tmp_path / "report2", metrics, legend, label_cog, None, title="tiny",
                        details={}, area=design).html.read_text(encoding="utf-8")  # fmt: skip
    assert "design-based" in page
    assert "The intervals are indicative." not in page
