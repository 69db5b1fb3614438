"""Objects and fusion on a tiled run: the demo patch cut into four 64 px tiles of one lattice
(the tiled run of tests/run/test_tiles.py), with both sections in one small run.

Objects are segmented on the mosaic's lattice, so a segment crossing a tile border is one
segment: the run's segments are those of the library on the mosaic's features as one grid.
Fusion runs per tile and is mosaicked as the pixel maps are.
"""

from __future__ import annotations

import json
from typing import Any

import geopandas as gpd
import numpy as np
import pytest
import rasterio

from pipeline.model import Window
from pipeline.objects.mosaic import TileCube, read_mosaic
from pipeline.objects.segments import SegmentParams, core_ids, neighbours, segment_chunk, stitch
from tests.run.helpers import cli, demo_manifest, last_summary
from tests.run.test_tiles import _demo_grid, _four_tiles

pytestmark = pytest.mark.slow

TILES = ("x0y0", "x1y0", "x0y1", "x1y1")


def _both(spec: dict[str, Any]) -> None:
    _four_tiles(spec)
    spec["objects"] = {"segmentation": {"method": "slic", "size": 40, "halo": 12}}
    spec["sampling"]["runs"] = 2
    spec["fusion"] = {"method": "majority_vote", "sources": [{"run": 0}, {"run": 1}]}


@pytest.fixture(scope="module")
def run(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    folder = tmp_path_factory.mktemp("tiled-objects")
    manifest = demo_manifest(folder, _both)
    done = cli("run", str(manifest))
    assert done.returncode == 0, done.stdout + done.stderr
    return {"store": folder / "store", "summary": last_summary(done.stdout + done.stderr)}


def _read(path: Any) -> tuple[np.ndarray, Any]:
    with rasterio.open(path) as src:
        return src.read(1), src.nodata


def _tiles(store: Any) -> list[TileCube]:
    out = []
    for key in sorted(p.stem for p in (store / "cubes").iterdir()):
        x, y = int(key[1]), int(key[3])
        out.append(TileCube(str(store / "cubes" / f"{key}.zarr"), 64 * y, 64 * x, 64, 64))
    return out


def test_segments_cross_tile_borders_as_on_one_grid(run: dict[str, Any]) -> None:
    import zarr

    store = run["store"]
    segments, _ = _read(store / "objects" / "segments.tif")
    assert segments.shape == (128, 128)
    for line in (segments[:, 63:65].T, segments[63:65, :]):  # the tile borders
        assert set(np.unique(line[0])) & set(np.unique(line[1])) - {0}
    # The same features as one grid: the mosaic read from the tiles' cubes.
    tiles = _tiles(store)
    group = zarr.open_group(tiles[0].url, mode="r")
    variables = [(n, "time") for n in sorted(group.array_keys()) if n.endswith("_ndvi")]
    n = 0
    for name, _ in variables:
        n += int(group[name].shape[0])  # type: ignore[union-attr]
    whole = read_mosaic(tiles, variables, n, Window(0, 0, 128, 128))
    assert (~np.isnan(whole).any(axis=0)).sum() > 9000  # the demo patch covers most of it

    def read(w: Window) -> np.ndarray:
        return whole[:, w.row_off : w.row_off + w.height, w.col_off : w.col_off + w.width]

    params = SegmentParams("slic", 40, 0.1, 12)
    windows = _demo_grid().chunks(32)
    chunks = [segment_chunk(read, (128, 128), w, params) for w in windows]
    ids = stitch(len(chunks), chunks.__getitem__, neighbours(windows))
    expected = np.zeros((128, 128), dtype=np.int64)
    for chunk, own in zip(chunks, ids, strict=True):
        expected[chunk.window.slices] = core_ids(chunk, own)
    np.testing.assert_array_equal(segments, expected)


def test_one_label_per_segment_and_polygons_whole_across_tiles(run: dict[str, Any]) -> None:
    store = run["store"]
    labels, nodata = _read(store / "objects" / "labels.tif")
    segments, _ = _read(store / "objects" / "segments.tif")
    for segment in np.unique(segments[segments > 0]):
        assert np.unique(labels[segments == segment]).size == 1
        rows, cols = np.nonzero(segments == segment)
        assert segment == rows.min() * 128 + cols[rows == rows.min()].min() + 1
    polygons = gpd.read_file(store / "objects" / "segments.gpkg")
    assert polygons["segment"].is_unique
    assert set(polygons["segment"]) == set(np.unique(segments[segments > 0]).tolist())
    pixels = dict(zip(*np.unique(segments[segments > 0], return_counts=True), strict=True))
    areas = polygons.set_index("segment").geometry.area
    assert all(areas[s] == pytest.approx(100.0 * c) for s, c in pixels.items())
    report = json.loads((store / "objects" / "report.json").read_text())
    assert report["per_pixel"]["validation_pixels"] > 100
    assert 0.4 < report["per_pixel"]["objects"]["overall_accuracy"] <= 1
    assert (labels != nodata).sum() > 0.9 * (segments > 0).sum()


def test_fusion_per_tile_mosaicked_as_the_pixel_map(run: dict[str, Any]) -> None:
    store = run["store"]
    fused, nodata = _read(store / "fusion" / "labels.tif")
    pixel_map, pixel_nodata = _read(store / "maps" / "labels.tif")
    assert fused.shape == pixel_map.shape == (128, 128)
    assert ((fused == nodata) == (pixel_map == pixel_nodata)).all()  # mapped where run 0 maps
    assert sorted(p.name for p in (store / "fusion" / "tiles").iterdir()) == sorted(
        f"{t}.zarr" for t in TILES
    )
    report = json.loads((store / "fusion" / "report" / "fusion.json").read_text())
    assert set(report["scores"]) == {"fused", "run-0", "run-1"}
    assert report["pixels"] > 100
    assert 0.5 < report["scores"]["fused"]["overall_accuracy"] <= 1
    units = run["summary"]["units"]["fusion"]
    assert units["ran"] == units["total"] == 16 + 3  # 4 chunks per tile, two COGs, the report
