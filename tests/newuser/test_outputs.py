"""What a user opens: the cube's x/y CF attributes, warnings that name classes, the maps'
licence, the planning summary."""

from __future__ import annotations

import warnings
from pathlib import Path
from types import SimpleNamespace

import pandas as pd
import pytest
import xarray as xr

from pipeline.cube.store import create_cube_store
from pipeline.manifest import load_manifest, resolve
from pipeline.run.estimate import WorkEstimate
from pipeline.run.runner import plan_run
from pipeline.samples.select import drop_small_classes
from pipeline.stages.mosaic import run_license
from pipeline.warnings import SamplingWarning
from tests.conftest import DEMO_DIR
from tests.newuser.fixtures import wkt2_catalog
from tests.run.helpers import demo_manifest


def test_x_and_y_carry_cf_attributes(tmp_path: Path) -> None:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        plan = plan_run(resolve(load_manifest(demo_manifest(tmp_path))))
    create_cube_store(plan.cube, str(tmp_path / "cube.zarr"))
    cube = xr.open_zarr(tmp_path / "cube.zarr")
    assert cube.x.attrs == {"standard_name": "projection_x_coordinate", "units": "m",
                            "long_name": "x coordinate of projection", "axis": "X"}  # fmt: skip
    assert cube.y.attrs["standard_name"] == "projection_y_coordinate"
    assert str(cube.rio.crs) == "EPSG:32633"


def test_the_small_class_warning_names_the_class() -> None:
    pixels = pd.DataFrame({"label": [1] * 9 + [2] * 20})
    with pytest.warns(SamplingWarning, match=r"class 1 'forest' \(9\): fewer than 10 training"):
        kept = drop_small_classes(pixels, 10, names={1: "forest", 2: "water"})
    assert set(kept["label"]) == {2}


def _config(catalog_url: str, **outputs: str | None) -> SimpleNamespace:
    catalog = SimpleNamespace(kind="static", url=catalog_url)
    return SimpleNamespace(
        outputs=SimpleNamespace(license=outputs.get("license"), license_url=outputs.get("url")),
        sensors=[SimpleNamespace(catalog=catalog)],
    )


def test_the_licence_comes_from_the_manifest_else_the_inputs(tmp_path: Path) -> None:
    demo = str(DEMO_DIR / "catalog" / "catalog.json")
    license, url = run_license(_config(demo))
    assert license == "MIT" and url is not None and url.endswith("examples/slovenia/LICENSE")
    given = run_license(_config(demo, license="CC-BY-4.0", url="https://example.org/cc-by"))
    assert given == ("CC-BY-4.0", "https://example.org/cc-by")
    assert run_license(_config(str(tmp_path / "missing.json"))) == ("other", None)


def test_work_counts_tiles_not_tiles_times_periods() -> None:
    work = WorkEstimate(1, 48, 60600, 150, 22, 32, 1, 1, {"cube": 48}, periods=3)
    assert work.describe(1).startswith("1 tile(s) x 3 period(s), 48 chunk(s)")


def test_a_wkt2_catalog_keeps_the_demo_licence(tmp_path: Path) -> None:
    assert run_license(_config(str(wkt2_catalog(tmp_path))))[0] == "MIT"


def test_a_point_reference_is_called_points_in_the_split_warning() -> None:
    from pipeline.samples.split import split_polygons

    with pytest.warns(SamplingWarning, match=r"class\(es\) \[2\] have a single reference point"):
        split_polygons({0: 1, 1: 1, 2: 2}, 0.3, 0, feature="point")
