"""A run with regions: one model per region, each trained on its own region's features, and a
map that follows each region's own model away from the border (blended within it).

The demo patch is cut into a western and an eastern region at its middle column.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import geopandas as gpd
import numpy as np
import pytest
import rasterio
import xarray as xr
from shapely.geometry import box

from pipeline.learn import load_model, model_input
from tests.conftest import DEMO_DIR
from tests.run.helpers import cli, demo_manifest, ledger_records

pytestmark = pytest.mark.slow

BORDER = 4


def _run_with_regions(folder: Path, runs: int = 1) -> dict[str, Any]:
    first = sorted((DEMO_DIR / "catalog").rglob("*.tif"))[0]
    with rasterio.open(first) as src:
        left, bottom, right, top = src.bounds
        crs = src.crs.to_string()
        middle_x = left + (right - left) / 2
    regions = gpd.GeoDataFrame(
        {"zone": ["west", "east"]},
        geometry=[
            box(left - 100, bottom - 100, middle_x, top + 100),
            box(middle_x, bottom - 100, right + 100, top + 100),
        ],
        crs=crs,
    )
    path = folder / "regions.gpkg"
    regions.to_file(path)

    def with_regions(spec: dict[str, Any]) -> None:
        spec["reference"]["regions"] = {
            "path": str(path),
            "field": "zone",
            "border_pixels": BORDER,
            "border_rule": "blend",
        }
        spec["sampling"]["min_pixels_per_class"] = 5
        spec["sampling"]["runs"] = runs

    done = cli("run", str(demo_manifest(folder, with_regions)))
    assert done.returncode == 0, done.stdout[-4000:] + done.stderr[-4000:]
    return {"store": folder / "store", "middle_x": middle_x}


@pytest.fixture(scope="module")
def run(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    return _run_with_regions(tmp_path_factory.mktemp("regions"))


def test_one_model_per_region_trained_on_its_own_features(run: dict[str, Any]) -> None:
    store: Path = run["store"]
    assert set(ledger_records(store)["train"]) == {"model-east", "model-west"}
    samples = gpd.read_parquet(store / "samples" / "samples.parquet")
    names = ("east", "west")  # region order: codes sorted
    # Each feature's region is the one holding most of its pixels (this table holds all the
    # pixels of validation features and the selected ones of training features: strategy all).
    side = samples.assign(west=samples.geometry.x < run["middle_x"])
    majority = side.groupby("polygon_id")["west"].mean()
    region = samples.groupby("polygon_id")["region"].first()
    clear = (majority - 0.5).abs() > 0.01
    expected = np.where(majority[clear] > 0.5, names.index("west"), names.index("east"))
    np.testing.assert_array_equal(region[clear].to_numpy(), expected)
    assert set(region) == {0, 1}
    for name in names:
        folder = store / "model" / "regions" / name
        assert (folder / "model.json").is_file()
    # A feature straddling the border belongs to one region, on one side of the split.
    assert samples.groupby("polygon_id")["region"].nunique().max() == 1


def test_away_from_the_border_each_pixel_follows_its_own_region_model(
    run: dict[str, Any],
) -> None:
    store: Path = run["store"]
    cube = xr.open_zarr(store / "cube.zarr")
    series = cube["s2_ndvi"].transpose("y", "x", "s2_time").values  # (h, w, dates)
    height, width, _ = series.shape
    with rasterio.open(store / "maps" / "labels.tif") as src:
        labels = src.read(1)
        nodata = src.nodata
        x_centres = src.transform.c + src.transform.a * (np.arange(width) + 0.5)
        pixel_width = abs(src.transform.a)
    features = series.reshape(-1, series.shape[-1])
    valid = ~np.isnan(features).any(axis=1)
    distance_px = np.abs(x_centres - run["middle_x"]) / pixel_width
    far = np.broadcast_to(distance_px > BORDER + 1, (height, width)).reshape(-1) & valid
    west = np.broadcast_to(x_centres < run["middle_x"], (height, width)).reshape(-1)
    flat = labels.reshape(-1)
    checked = 0
    for name, side in (("west", west), ("east", ~west)):
        model, _ = load_model(store / "model" / "regions" / name)
        rows = far & side
        predicted = model.predict(model_input(model, features[rows].astype(np.float32)))
        np.testing.assert_array_equal(flat[rows], predicted)
        checked += int(rows.sum())
    assert checked > 0.7 * valid.sum()
    assert (flat[~valid] == nodata).all()
    # Within the band both models weigh in: the map is not simply the own model everywhere.
    band = ~far & valid
    assert band.sum() > 0


def test_region_index_is_kept_beside_the_maps(run: dict[str, Any]) -> None:
    import zarr

    group = zarr.open_group(str(run["store"] / "maps" / "regions" / "grid.zarr"), mode="r")
    assert list(group.attrs["region_names"]) == ["east", "west"]


def test_regions_with_several_runs(tmp_path_factory: pytest.TempPathFactory) -> None:
    import json

    done = _run_with_regions(tmp_path_factory.mktemp("regions-runs"), runs=2)
    store: Path = done["store"]
    assert set(ledger_records(store)["train"]) == {
        "model-east", "model-west", "model-east-run1", "model-west-run1"
    }  # fmt: skip
    for name in ("east", "west"):
        assert (store / "model-runs" / "run-1" / "regions" / name / "model.json").is_file()
    across = json.loads((store / "report" / "metrics.json").read_text())["across_runs"]
    assert across["runs"] == 2 and across["seeds"] == [0, 1]
    assert 0.5 < across["overall"]["overall_accuracy"]["mean"] <= 1
