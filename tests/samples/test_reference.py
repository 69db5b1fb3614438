"""Reference data: the demo polygons, three file formats, points, regression values, bad input."""

from __future__ import annotations

import warnings
from pathlib import Path

import geopandas as gpd
import numpy as np
import pytest
from shapely.geometry import LineString, Point, box

from pipeline.errors import InputDataError
from pipeline.model import GridSpec
from pipeline.samples.config import ReferenceConfig
from pipeline.samples.reference import check_reference, load_reference
from pipeline.warnings import DataQualityWarning
from tests.conftest import DEMO_DIR
from tests.manifest import sections

DEMO_GPKG = DEMO_DIR / "reference" / "lulc.gpkg"
# The demo patch's grid, rounded: 100 x 101 pixels of 10 m in EPSG:32633.
GRID = GridSpec.from_bounds("EPSG:32633", (465181.0, 5079244.0, 466181.0, 5080254.0), 10.0)
# A small 10 x 10 grid of 10 m pixels for synthetic files.
SMALL = GridSpec("EPSG:32633", (10.0, 0.0, 500000.0, 0.0, -10.0, 5000000.0), 10, 10)


def _centre(row: int, col: int) -> Point:
    return Point(500000.0 + 10 * col + 5, 5000000.0 - 10 * row - 5)


def _cell_box(r0: int, c0: int, r1: int, c1: int) -> object:
    """Polygon covering pixel rows r0..r1-1 and columns c0..c1-1 of SMALL."""
    return box(500000.0 + 10 * c0, 5000000.0 - 10 * r1, 500000.0 + 10 * c1, 5000000.0 - 10 * r0)


def _write(tmp_path: Path, frame: gpd.GeoDataFrame, name: str = "ref.gpkg") -> str:
    path = tmp_path / name
    if name.endswith(".parquet"):
        frame.to_parquet(path)
    else:
        frame.to_file(path)
    return str(path)


def _spec(path: str, **kwargs: object) -> ReferenceConfig:
    kwargs.setdefault("label_field", "code")
    return sections.reference(path=path, **kwargs)


def test_demo_polygons() -> None:
    spec = sections.reference(
        path=str(DEMO_GPKG), label_field="LULC_ID", name_field="LULC_NAME", ignore_labels=[0]
    )
    with pytest.warns(DataQualityWarning, match=r"of 84 reference feature\(s\) cover no pixel"):
        reference = load_reference(spec, GRID)
    assert len(reference.table) == 84  # 88 features, 4 with label 0 left out
    assert [c.code for c in reference.legend] == [1, 2, 3, 4, 8]
    assert {c.name for c in reference.legend} >= {"forest", "grassland"}
    present = reference.present_ids()
    assert present.size > 70
    # every labelled pixel points at a feature of the table, with one label
    labels = reference.table.set_index("polygon_id").loc[present, "label"]
    assert set(labels) <= {1, 2, 3, 4, 8}
    assert reference.table["group"].tolist() == reference.table["polygon_id"].astype(str).tolist()


@pytest.mark.parametrize("name", ["ref.parquet", "ref.shp", "ref.gpkg"])
def test_three_formats_give_the_same_raster(tmp_path: Path, name: str) -> None:
    frame = gpd.read_file(DEMO_GPKG)
    frame = frame[frame["LULC_ID"] != 0][["LULC_ID", "geometry"]]
    path = _write(tmp_path, frame, name)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", DataQualityWarning)
        expected = load_reference(
            sections.reference(path=str(DEMO_GPKG), label_field="LULC_ID", ignore_labels=[0]), GRID
        )
        got = load_reference(sections.reference(path=path, label_field="LULC_ID"), GRID)
    np.testing.assert_array_equal(got.polygon_ids, expected.polygon_ids)


def test_points_cover_their_pixel(tmp_path: Path) -> None:
    cells = [(0, 0), (3, 4), (9, 9), (5, 5)]
    frame = gpd.GeoDataFrame(
        {"code": [1, 2, 2, 1], "plot": ["a", "a", "b", None]},
        geometry=[_centre(r, c) for r, c in cells],
        crs="EPSG:32633",
    )
    reference = load_reference(_spec(_write(tmp_path, frame), group_field="plot"), SMALL)
    assert (reference.polygon_ids >= 0).sum() == 4
    for i, (r, c) in enumerate(cells):
        assert reference.polygon_ids[r, c] == i
    assert reference.table["points"].all()
    # features without a group value are groups of their own
    assert reference.table["group"].tolist() == ["a", "a", "b", "~3"]


def test_two_points_in_one_pixel_are_ambiguous(tmp_path: Path) -> None:
    frame = gpd.GeoDataFrame(
        {"code": [1, 2, 1]},
        geometry=[Point(500001, 4999999), Point(500009, 4999991), _centre(5, 5)],
        crs="EPSG:32633",
    )
    with pytest.warns(DataQualityWarning) as record:
        reference = load_reference(_spec(_write(tmp_path, frame)), SMALL)
    messages = " ".join(str(w.message) for w in record)
    assert "1 pixel(s) are covered by more than one reference feature" in messages
    assert "class(es) [2] lose every feature" in messages
    assert reference.polygon_ids[0, 0] == -1
    assert reference.polygon_ids[5, 5] == 2


def test_overlapping_polygons_leave_the_shared_pixels_out(tmp_path: Path) -> None:
    frame = gpd.GeoDataFrame(
        {"code": [1, 2]},
        geometry=[_cell_box(0, 0, 4, 4), _cell_box(2, 2, 6, 6)],
        crs="EPSG:32633",
    )
    with pytest.warns(DataQualityWarning, match=r"4 pixel\(s\) are covered by more than one"):
        reference = load_reference(_spec(_write(tmp_path, frame)), SMALL)
    assert (reference.polygon_ids[2:4, 2:4] == -1).all()
    assert (reference.polygon_ids == 0).sum() == 12
    assert (reference.polygon_ids == 1).sum() == 12


def test_regression_values(tmp_path: Path) -> None:
    frame = gpd.GeoDataFrame(
        {"height": [12.5, 3.0]},
        geometry=[_cell_box(0, 0, 2, 2), _cell_box(5, 5, 7, 7)],
        crs="EPSG:32633",
    )
    reference = load_reference(
        sections.reference(path=_write(tmp_path, frame), value_field="height"), SMALL
    )
    assert reference.is_regression
    assert reference.legend == ()
    assert reference.table["value"].tolist() == [12.5, 3.0]
    assert "label" not in reference.table


def _frame(**columns: list[object]) -> gpd.GeoDataFrame:
    n = len(next(iter(columns.values())))
    return gpd.GeoDataFrame(
        columns, geometry=[_cell_box(i, 0, i + 1, 3) for i in range(n)], crs="EPSG:32633"
    )


@pytest.mark.parametrize(
    ("frame", "spec", "words"),
    [
        (_frame(code=[1, None]), {}, ["1 reference feature(s) have no value in 'code'"]),
        (_frame(code=[1.5, 2.0]), {}, ["non-integer numbers", "1.5"]),
        (_frame(code=[1, 2]), {"label_field": "CLASS"}, ["no field 'CLASS'", "code"]),
        (
            _frame(height=[1.0, None]),
            {"label_field": None, "value_field": "height"},
            ["no numeric value in 'height'"],
        ),
        (
            _frame(height=["tall", "low"]),
            {"label_field": None, "value_field": "height"},
            ["no numeric value", "'tall'"],
        ),
        (_frame(code=[1, 2]), {"group_field": "parcel"}, ["no field 'parcel'"]),
    ],
)
def test_bad_reference_fields(
    tmp_path: Path, frame: gpd.GeoDataFrame, spec: dict[str, object], words: list[str]
) -> None:
    path = _write(tmp_path, frame)
    with pytest.raises(InputDataError) as info:
        load_reference(_spec(path, **spec), SMALL)
    message = str(info.value)
    for word in words:
        assert word in message
    assert "Fix:" in message
    # sitsflow validate's cheap check (attributes only) refuses the same, in the same words
    with pytest.raises(InputDataError) as checked:
        check_reference(_spec(path, **spec))
    assert str(checked.value) == message


def test_lines_are_refused(tmp_path: Path) -> None:
    frame = gpd.GeoDataFrame(
        {"code": [1, 2]},
        geometry=[LineString([(500000, 4999950), (500050, 4999950)]), _cell_box(0, 0, 2, 2)],
        crs="EPSG:32633",
    )
    with pytest.raises(InputDataError, match=r"neither polygons nor points.*LineString"):
        load_reference(_spec(_write(tmp_path, frame)), SMALL)


def test_reference_outside_the_grid_is_an_error(tmp_path: Path) -> None:
    frame = gpd.GeoDataFrame(
        {"code": [1]}, geometry=[box(600000, 4000000, 600100, 4000100)], crs="EPSG:32633"
    )
    with pytest.raises(InputDataError) as info:
        load_reference(_spec(_write(tmp_path, frame)), SMALL)
    assert "no reference feature" in str(info.value)
    assert "grid bounds (500000.0, 4999900.0, 500100.0, 5000000.0)" in str(info.value)


def test_class_lost_outside_the_grid_is_named(tmp_path: Path) -> None:
    frame = gpd.GeoDataFrame(
        {"code": [1, 2, 7]},
        geometry=[_cell_box(0, 0, 3, 3), _cell_box(5, 5, 8, 8), box(0, 0, 10, 10)],
        crs="EPSG:32633",
    )
    with pytest.warns(DataQualityWarning, match=r"class\(es\) \[7\] lose every feature"):
        load_reference(_spec(_write(tmp_path, frame)), SMALL)


def test_unused_ignore_labels_warn(tmp_path: Path) -> None:
    path = _write(tmp_path, _frame(code=[1, 2]))
    with pytest.warns(DataQualityWarning, match=r"ignore_labels lists \[9\]"):
        load_reference(_spec(path, ignore_labels=[9]), SMALL)


def test_reference_in_another_crs_is_reprojected(tmp_path: Path) -> None:
    frame = gpd.GeoDataFrame(
        {"code": [1]}, geometry=[_cell_box(2, 2, 6, 6)], crs="EPSG:32633"
    ).to_crs("EPSG:4326")
    reference = load_reference(_spec(_write(tmp_path, frame)), SMALL)
    assert (reference.polygon_ids == 0).sum() == 16


def _plain(value: object) -> object:
    """Tuples and lists alike, for comparing GeoJSON mappings."""
    if isinstance(value, list | tuple):
        return [_plain(v) for v in value]
    if isinstance(value, dict):
        return {k: _plain(v) for k, v in value.items()}
    return value


def test_geojson_mappings_equal_shapely_s() -> None:
    """The array-built mappings rasterize uses are shapely's own, coordinate for coordinate."""
    from shapely.geometry import MultiPoint, MultiPolygon

    from pipeline.samples.reference import geojson_mappings

    frame = gpd.read_file(DEMO_GPKG)
    holed = box(0, 0, 10, 10).difference(box(2, 2, 4, 4))
    several = MultiPolygon([box(20, 0, 21, 1), box(30, 0, 32, 2).difference(box(30.5, 0.5, 31, 1))])
    mixed = [holed, Point(3, 3), several, MultiPoint([(1, 1), (2, 2)]), box(40, 40, 41, 41)]
    for geometries in (frame.geometry.to_numpy(), np.array(mixed, dtype=object)):
        expected = [g.__geo_interface__ for g in geometries]
        assert _plain(geojson_mappings(geometries)) == _plain(expected)
