"""The vector product streamed band by band: the files equal those of the whole map at once
(same polygons, same order, same statistics), and simplification keeps a coverage."""

from __future__ import annotations

from pathlib import Path

import geopandas as gpd
import numpy as np
import pytest
import shapely
from hypothesis import given, settings
from hypothesis import strategies as st

from pipeline.model import GridSpec
from pipeline.postprocess import stream
from pipeline.postprocess.vectorize import polygonize, polygonize_chunk, to_frame
from tests.postprocess.test_vectorize import CODES, _grid, _map

NAMES = {1: "forest", 2: "water", 3: "crops"}


def _streamed(  # type: ignore[no-untyped-def]
    layers, grid: GridSpec, chunk: int, connectivity: int, folder: Path, simplify=None
) -> gpd.GeoDataFrame:
    labels, raw, confidence, probabilities = layers
    windows = grid.chunks(chunk)
    rows = sorted({w.row_off for w in windows})

    def band(row: int):  # type: ignore[no-untyped-def]
        def load() -> list:  # type: ignore[type-arg]
            return [
                polygonize_chunk(
                    labels[w.slices],
                    w,
                    grid,
                    CODES,
                    0,
                    connectivity=connectivity,  # type: ignore[arg-type]
                    confidence=confidence[w.slices],
                    raw=raw[w.slices],
                    raw_codes=CODES,
                    probabilities=probabilities[(slice(None), *w.slices)],
                )
                for w in windows
                if w.row_off == row
            ]

        return load

    columns = stream.Columns(NAMES, (1, 2, 3), (1, 2, 3))
    parquet, gpkg = folder / "p.parquet", folder / "p.gpkg"
    n = stream.write_streamed(
        [band(r) for r in rows], grid, connectivity, columns,
        parquet=parquet, gpkg=gpkg, simplify=simplify,
    )  # fmt: skip
    frame = gpd.read_parquet(parquet)
    assert len(frame) == n == len(gpd.read_file(gpkg, layer="regions"))
    assert frame.crs == grid.crs
    return frame


@settings(max_examples=25, deadline=None)
@given(
    seed=st.integers(0, 2**16),
    rows=st.integers(1, 30),
    cols=st.integers(1, 30),
    chunk=st.integers(1, 11),
    connectivity=st.sampled_from([4, 8]),
    holes=st.sampled_from([0.0, 0.05]),
)
def test_streamed_files_equal_the_whole_map(
    tmp_path_factory: pytest.TempPathFactory,
    seed: int, rows: int, cols: int, chunk: int, connectivity: int, holes: float,
) -> None:  # fmt: skip
    layers = _map(seed, rows, cols, holes)
    labels, raw, confidence, probabilities = layers
    grid = _grid(rows, cols)
    whole = to_frame(
        polygonize(labels, grid, CODES, 0, connectivity=connectivity, confidence=confidence,
                   raw=raw, raw_codes=CODES, probabilities=probabilities),
        grid, NAMES, raw_codes=(1, 2, 3), probability_codes=(1, 2, 3),
    )  # fmt: skip
    streamed = _streamed(layers, grid, chunk, connectivity, tmp_path_factory.mktemp("s"))
    assert len(streamed) == len(whole)
    columns = [c for c in whole.columns if c != "geometry"]
    assert list(streamed.columns) == list(whole.columns)
    np.testing.assert_array_equal(streamed["region"], np.arange(1, len(whole) + 1))
    for column in columns:
        np.testing.assert_array_equal(streamed[column].to_numpy(), whole[column].to_numpy())
    assert shapely.equals(streamed.geometry.values, whole.geometry.values).all()


def test_simplified_polygons_stay_a_coverage(tmp_path: Path) -> None:
    layers = _map(7, 60, 70, 0.02)
    grid = _grid(60, 70)
    traced = _streamed(layers, grid, 16, 4, tmp_path / "a")
    simple = _streamed(layers, grid, 16, 4, tmp_path / "b", simplify=15.0)
    assert simple.geometry.is_valid.all()
    # fewer vertices, the same area covered, no overlap: every pixel in exactly one polygon
    count = shapely.get_num_coordinates
    assert count(simple.geometry.values).sum() < count(traced.geometry.values).sum()
    union = shapely.union_all(simple.geometry.values)
    assert union.area == pytest.approx(simple.geometry.area.sum(), rel=1e-9)
    assert union.area == pytest.approx(float((layers[0] != 0).sum()) * 100.0, rel=1e-9)
    # each row's polygon is its region's: it overlaps the traced outline; none collapsed
    shared = shapely.intersection(simple.geometry.values, traced.geometry.values)
    assert (shapely.area(shared) > 0).all()
    columns = [c for c in traced.columns if c != "geometry"]
    assert simple[columns].equals(traced[columns])
