"""Runs over several tiles: one cube and map store per tile, one model, one mosaic.

The demo patch cut into four user-grid tiles on its own pixel lattice must give exactly the map
of the single-grid run: the same sample pixels in the same order (so the same forest), the same
predicted pixels, mosaicked back into place. Mosaicking itself is checked on tiles of two UTM
zones, where one tile must be resampled.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import geopandas as gpd
import numpy as np
import pystac
import pytest
import rasterio
import zarr

from pipeline.grid import aligned_offset, mosaic_grid
from pipeline.model import GridSpec
from pipeline.predict.outputs import tiles_to_cog
from tests.conftest import DEMO_DIR
from tests.run.helpers import cli, demo_manifest, last_summary, ledger_records

pytestmark = pytest.mark.slow


def _demo_grid() -> GridSpec:
    """A 10 m grid of 128 x 128 px over the demo patch (its own pixels are not square), the
    extent of four 64 px tiles, so that both runs see the same reference pixels."""
    catalog = pystac.Catalog.from_file(str(DEMO_DIR / "catalog" / "catalog.json"))
    props = next(iter(catalog.get_items(recursive=True))).properties
    _, _, left, _, _, top = props["proj:transform"][:6]
    left, top = round(left, -1), round(top, -1)
    return GridSpec(props["proj:code"], (10.0, 0.0, left, 0.0, -10.0, top), 128, 128)


def _one_grid(spec: dict[str, Any]) -> None:
    grid = _demo_grid()
    spec["area"] = {"crs": grid.crs, "resolution": 10.0, "bbox": list(grid.bounds)}


def _four_tiles(spec: dict[str, Any]) -> None:
    grid = _demo_grid()
    left, _, _, top = grid.bounds
    spec["area"] = {
        "grid": "user",
        "crs": grid.crs,
        "resolution": 10.0,
        "tile_size": 64,
        "origin": [left, top],
        "bbox": list(grid.bounds),
    }


@pytest.fixture(scope="module")
def runs(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    folder = tmp_path_factory.mktemp("tiles")
    single = cli("run", str(demo_manifest(folder / "single", _one_grid)))
    assert single.returncode == 0, single.stdout + single.stderr
    tiled = cli("run", str(demo_manifest(folder / "tiled", _four_tiles)))
    assert tiled.returncode == 0, tiled.stdout + tiled.stderr
    return {
        "single": folder / "single" / "store",
        "tiled": folder / "tiled" / "store",
        "tiled_manifest": folder / "tiled" / "run.yaml",
        "tiled_summary": last_summary(tiled.stdout + tiled.stderr),
    }


def test_each_tile_has_its_cube_and_map_store_and_its_own_units(runs: dict[str, Any]) -> None:
    store = runs["tiled"]
    assert sorted(p.name for p in (store / "cubes").iterdir()) == [
        "x0y0.zarr", "x0y1.zarr", "x1y0.zarr", "x1y1.zarr"
    ]  # fmt: skip
    assert sorted(p.name for p in (store / "maps" / "tiles").iterdir()) == [
        "x0y0.zarr", "x0y1.zarr", "x1y0.zarr", "x1y1.zarr"
    ]  # fmt: skip
    assert not (store / "cube.zarr").exists()
    records = ledger_records(store)
    # 64 px tiles in 32 px chunks: 4 chunks per tile.
    assert len(records["cube"]) == 16 and len(records["predict"]) == 16
    assert {key.split("-")[0] for key in records["cube"]} == {"x0y0", "x0y1", "x1y0", "x1y1"}
    estimate = runs["tiled_summary"]["estimate"]
    assert estimate["tiles"] == 4
    assert "mosaic of 4 tiles" in estimate["grid"]


def test_the_mosaic_of_four_tiles_is_the_single_grid_map(runs: dict[str, Any]) -> None:
    grid = _demo_grid()
    with rasterio.open(runs["single"] / "maps" / "labels.tif") as src:
        single = src.read(1)
        nodata = src.nodata
    with rasterio.open(runs["tiled"] / "maps" / "labels.tif") as src:
        assert src.tags(ns="IMAGE_STRUCTURE").get("LAYOUT") == "COG"
        assert (src.width, src.height) == (grid.width, grid.height)
        assert src.crs.to_string() == grid.crs
        assert tuple(src.transform)[:6] == pytest.approx(grid.transform)
        mosaic = src.read(1)
        assert src.nodata == nodata
    assert (single != nodata).sum() > 9000  # the comparison below is about real pixels
    np.testing.assert_array_equal(mosaic, single)
    with (
        rasterio.open(runs["single"] / "maps" / "confidence.tif") as a,
        rasterio.open(runs["tiled"] / "maps" / "confidence.tif") as b,
    ):
        np.testing.assert_array_equal(b.read(1), a.read(1))


def test_samples_and_accuracy_are_those_of_the_single_grid(runs: dict[str, Any]) -> None:
    single = gpd.read_parquet(runs["single"] / "samples" / "samples.parquet")
    tiled = gpd.read_parquet(runs["tiled"] / "samples" / "samples.parquet")
    assert set(tiled["tile"]) <= {"x0y0", "x0y1", "x1y0", "x1y1"}
    assert len(tiled) == len(single)
    features = [c for c in single.columns if c.startswith("s2_")]
    np.testing.assert_array_equal(tiled[features].to_numpy(), single[features].to_numpy())
    for column in ("polygon_id", "label", "split"):
        assert tiled[column].tolist() == single[column].tolist()
    np.testing.assert_allclose(
        np.c_[tiled.geometry.x, tiled.geometry.y], np.c_[single.geometry.x, single.geometry.y]
    )
    a = json.loads((runs["single"] / "report" / "metrics.json").read_text())
    b = json.loads((runs["tiled"] / "report" / "metrics.json").read_text())
    assert b["overall_accuracy"] == a["overall_accuracy"]
    assert b["confusion"] == a["confusion"]


def test_a_finished_tiled_run_resumes_without_recomputing(runs: dict[str, Any]) -> None:
    again = cli("run", str(runs["tiled_manifest"]), "--resume")
    assert again.returncode == 0, again.stdout + again.stderr
    summary = last_summary(again.stdout + again.stderr)
    assert summary["units_run"] == 0
    assert summary["units_skipped"] > 30


# --- mosaic on its own -----------------------------------------------------------------------


def _map_store(path: Path, grid: GridSpec, values: np.ndarray) -> str:
    group = zarr.open_group(str(path), mode="w")
    array = group.create_array("labels", shape=values.shape, dtype=values.dtype, chunks=(16, 16))
    array[:] = values
    return str(path)


def test_mosaic_grid_covers_tiles_of_two_zones_on_the_first_lattice() -> None:
    west = GridSpec("EPSG:32632", (10.0, 0.0, 699960.0, 0.0, -10.0, 5000040.0), 40, 30)
    east = GridSpec("EPSG:32633", (10.0, 0.0, 300000.0, 0.0, -10.0, 5000040.0), 40, 30)
    grid = mosaic_grid([west, east])
    assert grid.crs == "EPSG:32632"  # a tie: the first tile's CRS
    assert aligned_offset(grid, west) is not None
    assert aligned_offset(grid, east) is None  # another CRS: resampled
    left, _, right, top = grid.bounds
    wl, _, wr, wt = west.bounds
    assert left <= wl and top >= wt and right > wr  # reaches into the eastern zone
    assert ((grid.transform[2] - west.transform[2]) / 10.0) % 1 == 0
    assert mosaic_grid([west]) == west


def test_tiles_to_cog_copies_aligned_tiles_and_resamples_the_other(tmp_path: Path) -> None:
    a = GridSpec("EPSG:32632", (10.0, 0.0, 699960.0, 0.0, -10.0, 5000040.0), 32, 32)
    b = GridSpec("EPSG:32632", (10.0, 0.0, 700280.0, 0.0, -10.0, 5000040.0), 32, 32)
    c = GridSpec("EPSG:32633", (10.0, 0.0, 300000.0, 0.0, -10.0, 5000040.0), 32, 32)
    va = np.full((32, 32), 1, np.uint8)
    va[:, 16:] = 0  # pixels tile a does not own: no-data
    vb = np.full((32, 32), 2, np.uint8)
    vc = np.full((32, 32), 3, np.uint8)
    sources = [
        (_map_store(tmp_path / "a.zarr", a, va), a),
        (_map_store(tmp_path / "b.zarr", b, vb), b),
        (_map_store(tmp_path / "c.zarr", c, vc), c),
    ]
    grid = mosaic_grid([a, b, c])
    out = tiles_to_cog(
        sources, "labels", grid, tmp_path / "m.tif", nodata=0, overview_resampling="mode", block=24
    )
    with rasterio.open(out) as src:
        data = src.read(1)
        assert src.crs.to_string() == "EPSG:32632"
    row, col = aligned_offset(grid, a) or (-1, -1)
    np.testing.assert_array_equal(data[row : row + 32, col : col + 16], 1)
    assert (data[row : row + 32, col + 16 : col + 32] == 0).all()  # a's no-data is kept
    row, col = aligned_offset(grid, b) or (-1, -1)
    np.testing.assert_array_equal(data[row : row + 32, col : col + 32], 2)
    # Tile c, 32 x 320 m in zone 33, lands resampled as about 32 x 32 pixels of class 3.
    assert 800 < int((data == 3).sum()) < 1250
    assert set(np.unique(data).tolist()) == {0, 1, 2, 3}
