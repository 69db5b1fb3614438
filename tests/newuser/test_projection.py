"""Items whose CRS is only in proj:wkt2 or proj:projjson (MODIS sinusoidal has no EPSG code)."""

from __future__ import annotations

import warnings
from datetime import UTC, datetime
from pathlib import Path

import pystac
import pytest
from pyproj import CRS

from pipeline.catalog.items import native_grid
from pipeline.errors import CatalogError
from pipeline.manifest import load_manifest, resolve
from pipeline.run.runner import plan_run
from tests.newuser.fixtures import SINUSOIDAL, relabelled_reference, wkt2_catalog
from tests.run.helpers import demo_manifest

TRANSFORM = [463.3127165, 0.0, -1111950.5197, 0.0, -463.3127165, 5559752.5985]


def _item(**proj: object) -> pystac.Item:
    props = {"proj:shape": [2400, 2400], "proj:transform": TRANSFORM, **proj}
    return pystac.Item("MOD13Q1.h18v04", None, None, datetime(2017, 1, 1, tzinfo=UTC), props)


def test_wkt2_and_projjson_give_the_same_non_epsg_grid() -> None:
    from_wkt = native_grid(_item(**{"proj:wkt2": SINUSOIDAL.to_wkt()}))
    from_json = native_grid(_item(**{"proj:projjson": SINUSOIDAL.to_json_dict()}))
    assert from_wkt is not None and from_wkt == from_json
    assert CRS.from_user_input(from_wkt.crs) == SINUSOIDAL
    assert (from_wkt.width, from_wkt.height) == (2400, 2400)


def test_a_wkt2_that_is_an_epsg_crs_becomes_its_code() -> None:
    grid = native_grid(_item(**{"proj:wkt2": CRS.from_epsg(32633).to_wkt()}))
    assert grid is not None and grid.crs == "EPSG:32633"


def test_a_broken_wkt2_is_named() -> None:
    with pytest.raises(CatalogError, match=r"MOD13Q1\.h18v04.*proj:wkt2.*not a valid CRS"):
        native_grid(_item(**{"proj:wkt2": "PROJCRS[broken"}))


@pytest.mark.parametrize("projjson", [False, True], ids=["wkt2", "projjson"])
def test_a_run_plans_on_a_wkt2_only_catalog(tmp_path: Path, projjson: bool) -> None:
    catalog = wkt2_catalog(tmp_path, projjson=projjson)
    reference = relabelled_reference(tmp_path / "reference", SINUSOIDAL)

    def change(spec: dict) -> None:
        spec["sensors"][0]["catalog"]["url"] = str(catalog)
        spec["reference"]["path"] = str(reference)

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        plan = plan_run(resolve(load_manifest(demo_manifest(tmp_path / "run", change))))
    grid = plan.cube.grid
    assert CRS.from_user_input(grid.crs) == SINUSOIDAL
    assert (grid.width, grid.height) == (100, 101)
    assert plan.reference is not None and plan.reference.present_ids().size > 10
