"""Split + selection of every run, on the demo's real polygons, with and without regions."""

from __future__ import annotations

import warnings
from pathlib import Path

import geopandas as gpd
import numpy as np
import pandas as pd
import pytest
from shapely.geometry import box

from pipeline.errors import InputDataError
from pipeline.model import GridSpec
from pipeline.samples.config import SamplingConfig
from pipeline.samples.reference import ReferencePolygons, load_reference
from pipeline.samples.regions import RegionMap, load_regions
from pipeline.samples.select import RunSamples, pixels_to_extract, sample_runs
from pipeline.samples.split import TRAIN, VALIDATION
from pipeline.warnings import DataQualityWarning, SamplingWarning
from tests.conftest import DEMO_DIR
from tests.manifest import sections

GRID = GridSpec.from_bounds("EPSG:32633", (465181.0, 5079244.0, 466181.0, 5080254.0), 10.0)


@pytest.fixture(scope="module")
def reference() -> ReferencePolygons:
    spec = sections.reference(
        path=str(DEMO_DIR / "reference" / "lulc.gpkg"), label_field="LULC_ID", ignore_labels=[0]
    )
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", DataQualityWarning)
        return load_reference(spec, GRID)


@pytest.fixture(scope="module")
def regions(tmp_path_factory: pytest.TempPathFactory) -> RegionMap:
    """West and east halves of the demo patch."""
    path = tmp_path_factory.mktemp("regions") / "regions.gpkg"
    gpd.GeoDataFrame(
        {"zone": ["west", "east"]},
        geometry=[box(465181, 5079244, 465681, 5080254), box(465681, 5079244, 466181, 5080254)],
        crs="EPSG:32633",
    ).to_file(path)
    return load_regions(sections.regions(path=str(path), field="zone"), GRID)


def _quiet_runs(
    reference: ReferencePolygons, sampling: SamplingConfig, regions: RegionMap | None = None
) -> list[RunSamples]:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", SamplingWarning)
        return sample_runs(reference, sampling, regions)


def test_runs_differ_by_seed_and_keep_polygons_whole(reference: ReferencePolygons) -> None:
    sampling = sections.sampling(seed=3, runs=3, max_pixels_per_polygon=20, min_pixels_per_class=1)
    runs = _quiet_runs(reference, sampling)
    assert [r.seed for r in runs] == [3, 4, 5]
    sides = []
    for run in runs:
        per_polygon = run.pixels.groupby("polygon_id")["split"].nunique()
        assert (per_polygon == 1).all()  # never both sides
        assert run.training.groupby("polygon_id").size().max() <= 20
        # validation keeps every pixel of its polygons
        validation_ids = run.validation["polygon_id"].unique()
        assert len(run.validation) == int(np.isin(reference.polygon_ids, validation_ids).sum())
        sides.append(frozenset(validation_ids))
    assert len(set(sides)) > 1  # different seeds, different splits
    needed = pixels_to_extract(runs)
    assert needed.duplicated().sum() == 0
    assert len(needed) == len(pd.concat([r.pixels for r in runs])[["row", "col"]].drop_duplicates())


def test_per_region_split_and_smallest_class(
    reference: ReferencePolygons, regions: RegionMap
) -> None:
    sampling = sections.sampling(strategy="smallest_class", min_pixels_per_class=1)
    (run,) = _quiet_runs(reference, sampling, regions)
    assert set(run.pixels["region"]) == {0, 1}
    counts = run.training.groupby(["region", "label"]).size()
    for region in (0, 1):
        per_class = counts.loc[region]
        assert per_class.nunique() == 1  # balanced inside each region model
    # stratified by class and region: each (class, region) with 2+ polygons is on both sides
    by_stratum = run.pixels.groupby(["label", "region", "polygon_id"])["split"].first()
    for (_label, _region), sides in by_stratum.groupby(level=[0, 1]):
        if len(sides) >= 2:
            assert set(sides) == {TRAIN, VALIDATION}


def test_small_classes_are_dropped_with_a_warning(reference: ReferencePolygons) -> None:
    sampling = sections.sampling(max_pixels_per_polygon=2, min_pixels_per_class=20)
    with pytest.warns(SamplingWarning, match="fewer than 20 training pixels"):
        (run,) = sample_runs(reference, sampling)
    assert (run.training.groupby("label").size() >= 20).all()


def test_regression_runs(tmp_path: Path) -> None:
    frame = gpd.read_file(DEMO_DIR / "reference" / "lulc.gpkg")
    frame["height"] = np.linspace(0.0, 30.0, len(frame))
    path = tmp_path / "heights.gpkg"
    frame.to_file(path)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", DataQualityWarning)
        reference = load_reference(sections.reference(path=str(path), value_field="height"), GRID)
    sampling = sections.sampling(strategy="percentage", fraction=0.5, runs=2)
    runs = _quiet_runs(reference, sampling)
    for run in runs:
        assert "value" in run.pixels and "label" not in run.pixels
        # both sides span the range of values (split stratified by value quantiles)
        for side in (run.training, run.validation):
            assert side["value"].min() < 8 and side["value"].max() > 22


def test_region_without_samples_is_an_error(tmp_path: Path) -> None:
    small = GridSpec("EPSG:32633", (10.0, 0.0, 500000.0, 0.0, -10.0, 5000000.0), 20, 20)
    ref_path, regions_path = tmp_path / "ref.gpkg", tmp_path / "regions.gpkg"
    polygons = [box(500000 + 30 * i, 4999900, 500020 + 30 * i, 4999920) for i in range(4)]
    gpd.GeoDataFrame({"code": [1, 2, 1, 2]}, geometry=polygons, crs="EPSG:32633").to_file(ref_path)
    gpd.GeoDataFrame(
        {"zone": [1, 2]},
        geometry=[box(500000, 4999850, 500200, 5000000), box(500000, 4999800, 500200, 4999850)],
        crs="EPSG:32633",
    ).to_file(regions_path)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", DataQualityWarning)
        reference = load_reference(
            sections.reference(path=str(ref_path), label_field="code"), small
        )
        regions = load_regions(sections.regions(path=str(regions_path), field="zone"), small)
    with pytest.raises(InputDataError) as info:
        _quiet_runs(reference, sections.sampling(min_pixels_per_class=1), regions)
    assert "region(s) ['2'] have no training pixel" in str(info.value)
    assert "Fix:" in str(info.value)


def test_final_model_enters_the_digest_only_when_set() -> None:
    # Runs made before sampling.final_model existed keep every digest (their stores resume).
    from pipeline.manifest import SamplingSpec
    from pipeline.run.units import canonical

    default = canonical(sections.sampling(runs=3))
    assert "final_model" not in default
    assert default == canonical(SamplingSpec(runs=3))
    final = sections.sampling(runs=3, final_model="all")
    assert final.final_model == "all" and canonical(final)["final_model"] == "all"
    assert canonical(final) == canonical(SamplingSpec(runs=3, final_model="all"))
    with pytest.raises(ValueError, match="final_model"):
        SamplingSpec(final_model="everything")
