"""The vector product: polygons of a label map equal to a whole-map pass whatever the chunking
(no polygon split at a chunk or tile side), valid, with areas and statistics that add up."""

from __future__ import annotations

from pathlib import Path

import geopandas as gpd
import numpy as np
import shapely
from hypothesis import given, settings
from hypothesis import strategies as st

from pipeline.model import GridSpec
from pipeline.postprocess.vectorize import (
    polygonize,
    polygonize_chunk,
    stitch,
    to_frame,
    write_polygons,
)

CODES = np.array([1, 2, 3])
GRID_T = (10.0, 0.0, 500_000.0, 0.0, -10.0, 6_000_000.0)


def _grid(rows: int, cols: int) -> GridSpec:
    return GridSpec("EPSG:32633", GRID_T, cols, rows)


def _map(seed: int, rows: int, cols: int, holes: float) -> tuple[np.ndarray, ...]:
    rng = np.random.default_rng(seed)
    small = rng.integers(1, 4, (rows // 4 + 1, cols // 4 + 1))
    labels = np.kron(small, np.ones((4, 4), dtype=int))[:rows, :cols]
    noise = rng.random((rows, cols)) < 0.15
    labels[noise] = rng.integers(1, 4, int(noise.sum()))
    labels = labels.astype(np.uint8)
    labels[rng.random((rows, cols)) < holes] = 0
    raw = np.where(rng.random((rows, cols)) < 0.3, rng.integers(1, 4, (rows, cols)), labels)
    raw = np.where(labels == 0, 0, raw).astype(np.uint8)
    confidence = rng.integers(30, 101, (rows, cols)).astype(np.uint8)
    confidence[labels == 0] = 255
    probabilities = rng.integers(0, 101, (3, rows, cols)).astype(np.uint8)
    probabilities[:, labels == 0] = 255
    return labels, raw, confidence, probabilities


def _frame(regions, rows: int, cols: int) -> gpd.GeoDataFrame:  # type: ignore[no-untyped-def]
    grid = GridSpec("EPSG:32633", GRID_T, cols, rows)
    return to_frame(
        regions,
        grid,
        {1: "forest", 2: "water", 3: "crops"},
        raw_codes=(1, 2, 3),
        probability_codes=(1, 2, 3),
    )


def _chunked(labels, raw, confidence, probabilities, chunk: int, connectivity: int):  # type: ignore[no-untyped-def]
    rows, cols = labels.shape
    grid = GridSpec("EPSG:32633", GRID_T, cols, rows)
    parts = []
    for w in grid.chunks(chunk):
        r, c = w.slices
        parts.append(
            polygonize_chunk(
                labels[r, c],
                w,
                grid,
                CODES,
                0,
                connectivity=connectivity,
                confidence=confidence[r, c],
                raw=raw[r, c],
                raw_codes=CODES,
                probabilities=probabilities[:, r, c],
            )
        )
    return stitch(parts, grid, connectivity)


@settings(max_examples=40, deadline=None)
@given(
    seed=st.integers(0, 2**16),
    rows=st.integers(1, 30),
    cols=st.integers(1, 30),
    chunk=st.integers(1, 11),
    connectivity=st.sampled_from([4, 8]),
    holes=st.sampled_from([0.0, 0.05]),
)
def test_chunked_equals_whole(
    seed: int, rows: int, cols: int, chunk: int, connectivity: int, holes: float
) -> None:
    labels, raw, confidence, probabilities = _map(seed, rows, cols, holes)
    layers = {
        "confidence": confidence,
        "raw": raw,
        "raw_codes": CODES,
        "probabilities": probabilities,
        "connectivity": connectivity,
    }
    whole = _frame(polygonize(labels, _grid(rows, cols), CODES, 0, **layers), rows, cols)
    chunked = _frame(
        _chunked(labels, raw, confidence, probabilities, chunk, connectivity), rows, cols
    )
    assert len(chunked) == len(whole)
    columns = [c for c in whole.columns if c != "geometry"]
    assert chunked[columns].equals(whole[columns])
    assert shapely.equals(chunked.geometry.values, whole.geometry.values).all()
    assert chunked.geometry.is_valid.all() and whole.geometry.is_valid.all()
    # areas add up to the mapped area, each polygon's area is its pixels'
    assert whole["area"].sum() == (labels != 0).sum() * 100.0
    np.testing.assert_allclose(chunked.geometry.area, chunked["area"])


def test_statistics_of_a_region() -> None:
    labels = np.array([[1, 1, 2], [1, 1, 2], [3, 3, 2]], dtype=np.uint8)
    raw = np.array([[1, 2, 2], [1, 1, 2], [3, 3, 2]], dtype=np.uint8)
    confidence = np.array([[50, 70, 90], [60, 80, 90], [255, 40, 90]], dtype=np.uint8)
    frame = _frame(
        polygonize(labels, _grid(3, 3), CODES, 0, confidence=confidence, raw=raw, raw_codes=CODES),
        3,
        3,
    )
    forest = frame[frame.class_code == 1].iloc[0]
    assert forest.class_name == "forest" and forest.pixels == 4 and forest.area == 400.0
    assert forest.confidence_mean == 65.0
    assert (forest.share_1, forest.share_2, forest.share_3) == (0.75, 0.25, 0.0)
    assert frame[frame.class_code == 3].iloc[0].confidence_mean == 40.0
    assert list(frame.region) == [1, 2, 3]
    assert forest.geometry.equals(shapely.box(500_000, 5_999_980, 500_020, 6_000_000))


def test_diagonal_pixels_are_one_region_with_8_connectivity() -> None:
    labels = np.array([[1, 2], [2, 1]], dtype=np.uint8)
    eight = polygonize(labels, _grid(2, 2), CODES, 0, connectivity=8)
    four = polygonize(labels, _grid(2, 2), CODES, 0, connectivity=4)
    assert len(eight.code) == 2 and len(four.code) == 4
    assert all(g.is_valid for g in eight.geometry)


def test_written_files_open_with_geopandas(tmp_path: Path) -> None:
    labels, raw, confidence, probabilities = _map(3, 20, 24, 0.02)
    frame = _frame(
        polygonize(
            labels,
            _grid(20, 24),
            CODES,
            0,
            confidence=confidence,
            raw=raw,
            raw_codes=CODES,
            probabilities=probabilities,
        ),
        20,
        24,
    )
    write_polygons(frame, tmp_path / "regions.parquet", tmp_path / "regions.gpkg")
    back = gpd.read_parquet(tmp_path / "regions.parquet")
    assert back.crs == frame.crs and len(back) == len(frame)
    gpkg = gpd.read_file(tmp_path / "regions.gpkg", layer="regions")
    assert len(gpkg) == len(frame) and gpkg.geometry.is_valid.all()
    assert abs(gpkg.geometry.area.sum() - (labels != 0).sum() * 100.0) < 1e-3
