"""Segments per chunk with a halo, stitched: a field crossing chunk borders has one id, the same
partition as one pass over the whole grid, the same ids on a rerun; zonal statistics chunked
equal whole."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from hypothesis.extra.numpy import arrays

from pipeline.model import GridSpec, Window
from pipeline.objects.segments import (
    ChunkSegments,
    Method,
    SegmentParams,
    chunk_segments,
    core_ids,
    neighbours,
    segment_block,
    segment_chunk,
    stitch,
)
from pipeline.objects.zonal import combine, statistics, zonal_sums
from pipeline.postprocess.blocks import grow

SIZE, CHUNK = 64, 32


def _fields() -> tuple[np.ndarray, np.ndarray]:
    """Three features over rectangular fields; field 5 crosses the chunk borders at row and
    column 32 (it covers rows 20..44 and columns 22..50)."""
    truth = np.zeros((SIZE, SIZE), dtype=np.int64)
    truth[:, 32:] = 1
    truth[40:, :] = 2
    truth[40:, 40:] = 3
    truth[:12, :20] = 4
    truth[20:45, 22:51] = 5
    rng = np.random.default_rng(0)
    levels = rng.uniform(0, 1, size=(3, 6))
    stack = levels[:, truth] + rng.normal(0, 0.002, size=(3, SIZE, SIZE))
    stack[:, 60:, :3] = np.nan  # never valid: no segment
    return stack.astype(np.float32), truth


def _windows() -> list[Window]:
    return [
        Window(r, c, CHUNK, CHUNK) for r in range(0, SIZE, CHUNK) for c in range(0, SIZE, CHUNK)
    ]


def _chunked(stack: np.ndarray, params: SegmentParams) -> np.ndarray:
    def read(w: Window) -> np.ndarray:
        return stack[:, w.row_off : w.row_off + w.height, w.col_off : w.col_off + w.width]

    windows = _windows()
    chunks = [segment_chunk(read, (SIZE, SIZE), w, params) for w in windows]
    ids = stitch(len(chunks), chunks.__getitem__, neighbours(windows))
    out = np.zeros((SIZE, SIZE), dtype=np.int64)
    for chunk, own in zip(chunks, ids, strict=True):
        rows, cols = chunk.window.slices
        out[rows, cols] = core_ids(chunk, own)
    return out


def _same_partition(a: np.ndarray, b: np.ndarray) -> bool:
    pairs = np.unique(np.stack([a.ravel(), b.ravel()]), axis=1)
    return len(np.unique(pairs[0])) == pairs.shape[1] == len(np.unique(pairs[1]))


def test_a_field_across_chunk_borders_has_one_id_as_in_one_pass() -> None:
    stack, truth = _fields()
    params = SegmentParams(method="felzenszwalb", size=300, halo=32)
    ids = _chunked(stack, params)
    whole = segment_block(stack, params)
    assert _same_partition(ids, whole)  # the segments of one pass over the whole grid
    found, counts = np.unique(ids[truth == 5], return_counts=True)
    main = found[counts.argmax()]
    assert counts.max() > 0.8 * (truth == 5).sum()
    rows, cols = np.nonzero(ids == main)  # one id in each of the four chunks it covers
    assert rows.min() < CHUNK <= rows.max() and cols.min() < CHUNK <= cols.max()
    assert main == rows.min() * SIZE + cols[rows == rows.min()].min() + 1  # its first pixel
    assert (ids[np.isnan(stack[0])] == 0).all()
    assert np.array_equal(_chunked(stack, params), ids)  # a rerun: the same ids


def test_superpixels_crossing_a_border_are_stitched_and_stable() -> None:
    stack, _ = _fields()
    params = SegmentParams(method="slic", size=60, compactness=0.5, halo=16)
    ids = _chunked(stack, params)
    across = set(np.unique(ids[:, 31])) & set(np.unique(ids[:, 32])) - {0}
    assert across  # some superpixels go on across the border under one id
    assert np.array_equal(_chunked(stack, params), ids)
    for segment in np.unique(ids[ids > 0]):
        rows, cols = np.nonzero(ids == segment)
        assert segment == rows.min() * SIZE + cols[rows == rows.min()].min() + 1


@pytest.mark.parametrize("chunk", [16, 32, 64])
def test_zonal_statistics_chunked_equal_whole(chunk: int) -> None:
    stack, truth = _fields()
    ids = truth + 1
    ids[np.isnan(stack[0])] = 0
    whole = statistics(zonal_sums(ids, stack))
    parts = [
        zonal_sums(ids[r : r + chunk, c : c + chunk], stack[:, r : r + chunk, c : c + chunk])
        for r in range(0, SIZE, chunk)
        for c in range(0, SIZE, chunk)
    ]
    total = combine(parts)
    assert total.ids.tolist() == [1, 2, 3, 4, 5, 6]
    mean, std = statistics(total)
    np.testing.assert_allclose(mean, whole[0], rtol=1e-9)
    np.testing.assert_allclose(std, whole[1], atol=1e-9)
    field = (truth == 5) & ~np.isnan(stack[0])
    np.testing.assert_allclose(mean[5], stack[:, field].mean(axis=1), rtol=1e-6)


@pytest.mark.parametrize("chunk", [16, 32, 64])
def test_zonal_percentiles_chunked_equal_whole(chunk: int) -> None:
    from pipeline.model import GridSpec
    from pipeline.objects.table import complete_values, segment_index
    from pipeline.objects.zonal import PERCENTILE_METHOD, percentiles, zonal_values

    stack, truth = _fields()
    ids = truth + 1
    ids[np.isnan(stack[0])] = 0
    grid = GridSpec("EPSG:32633", (10.0, 0.0, 0.0, 0.0, -10.0, 0.0), SIZE, SIZE)
    windows = grid.chunks(chunk)
    parts = [zonal_values(ids[w.slices], stack[:, w.slices[0], w.slices[1]]) for w in windows]
    index = segment_index(
        (i, np.unique(ids[w.slices][ids[w.slices] > 0]), p.ids, p.count)
        for i, (w, p) in enumerate(zip(windows, parts, strict=True))
    )
    if chunk < SIZE:  # the fields cross chunk borders
        assert (
            index.last
            > np.array([min(i for i, p in enumerate(parts) if s in p.ids) for s in index.ids])
        ).any()
    qs = [10, 50, 90]
    done = {}
    for part in complete_values(iter(parts), index):
        found = percentiles(part, qs)
        done.update({int(s): found[:, n] for n, s in enumerate(part.ids)})
    assert sorted(done) == [1, 2, 3, 4, 5, 6]
    for segment, found in done.items():
        pixels = stack[:, ids == segment].astype(np.float64)
        whole = np.percentile(pixels, qs, axis=1, method=PERCENTILE_METHOD)
        assert np.array_equal(found, whole)


def test_a_vector_segmentation_is_burnt_by_window(tmp_path: Path) -> None:
    import geopandas as gpd
    from shapely.geometry import box

    from pipeline.objects.build import segmentation_kind, user_ids

    grid = GridSpec("EPSG:32633", (10.0, 0.0, 500000.0, 0.0, -10.0, 5000000.0), 64, 64)
    path = tmp_path / "segments.gpkg"
    # two fields: rows 0..9 x cols 0..39, and rows 10..49 x cols 20..59 (across column 32)
    shapes = [box(500000, 4999900, 500400, 5000000), box(500200, 4999500, 500600, 4999900)]
    gpd.GeoDataFrame({"name": ["a", "b"]}, geometry=shapes, crs=grid.crs).to_file(path)
    assert segmentation_kind(str(path), grid) == "vector"
    whole = user_ids(str(path), "vector", grid, Window(0, 0, 64, 64))
    assert (whole[:10, :40] == 1).all() and (whole[10:50, 20:60] == 2).all()
    assert whole.sum() == 400 * 1 + 1600 * 2
    right = user_ids(str(path), "vector", grid, Window(0, 32, 64, 32))
    assert np.array_equal(right, whole[:, 32:])  # the same ids, chunk by chunk


# --- what is exact, and what is not (docs/design/0009-segmentation.md, "Guarantees") ----------


def _agreeing_chunks(
    whole: np.ndarray, chunk: int, halo: int
) -> tuple[list[Window], list[ChunkSegments]]:
    """Chunks whose segmentation of their grown window is the one pass's, cut to that window
    (local labels 1..n in any order)."""
    height, width = whole.shape
    windows = GridSpec("EPSG:32633", (1.0, 0, 0, 0, -1.0, 0), width, height).chunks(chunk)
    chunks = []
    for w in windows:
        outer = grow(w, halo, whole.shape)
        seen = whole[outer.slices]
        present, local = np.unique(seen, return_inverse=True)
        local = local.reshape(seen.shape) + (0 if present[0] == 0 else 1)
        chunks.append(chunk_segments(local.astype(np.int32), outer, w, width))
    return windows, chunks


def _stitched(
    windows: list[Window], chunks: list[ChunkSegments], shape: tuple[int, int]
) -> np.ndarray:
    ids = stitch(len(chunks), chunks.__getitem__, neighbours(windows))
    out = np.zeros(shape, dtype=np.int64)
    for c, own in zip(chunks, ids, strict=True):
        out[c.window.slices] = core_ids(c, own)
    return out


@settings(max_examples=80, deadline=None)
@given(
    blocks=arrays(np.int64, (5, 5), elements=st.integers(0, 3)),
    scale=st.sampled_from([3, 4, 5]),
    chunk=st.sampled_from([4, 6, 7, 25]),
    halo=st.integers(1, 6),
)
def test_stitching_is_one_pass_exactly_when_the_chunks_agree_with_it(
    blocks: np.ndarray, scale: int, chunk: int, halo: int
) -> None:
    from skimage.measure import label

    # connected segments (4-neighbours) of a random blocky map; value 0: never valid
    coarse = np.kron(blocks, np.ones((scale, scale), dtype=np.int64))
    whole = label(coarse + 1, connectivity=1, background=0) * (coarse > 0)
    windows, chunks = _agreeing_chunks(whole, chunk, halo)
    ids = _stitched(windows, chunks, whole.shape)
    assert _same_partition(ids, whole)
    for segment in np.unique(ids[ids > 0]):
        rows, cols = np.nonzero(ids == segment)
        assert segment == rows.min() * whole.shape[1] + cols[rows == rows.min()].min() + 1
    assert ((ids == 0) == (whole == 0)).all()


@pytest.mark.parametrize(
    "params",
    [SegmentParams("felzenszwalb", 300, halo=8), SegmentParams("slic", 60, 0.5, halo=16)],
)
def test_what_holds_when_the_chunks_disagree(params: SegmentParams) -> None:
    stack, _ = _fields()
    ids = _chunked(stack, params)
    valid = ~np.isnan(stack).any(axis=0)
    assert ((ids > 0) == valid).all()  # every valid pixel in one segment, no other
    for segment in np.unique(ids[ids > 0]):  # ids: first pixel in ground order, plus one
        rows, cols = np.nonzero(ids == segment)
        assert segment == rows.min() * SIZE + cols[rows == rows.min()].min() + 1

    def read(w: Window) -> np.ndarray:
        return stack[:, w.row_off : w.row_off + w.height, w.col_off : w.col_off + w.width]

    windows = _windows()
    chunks = [segment_chunk(read, (SIZE, SIZE), w, params) for w in windows]
    ids_of = stitch(len(chunks), chunks.__getitem__, neighbours(windows))
    for chunk, own in zip(chunks, ids_of, strict=True):
        core = _core(chunk)  # a chunk's own segment is never cut: one id
        pairs = np.unique(np.stack([core.ravel(), core_ids(chunk, own).ravel()]), axis=1)
        assert len(np.unique(pairs[0])) == pairs.shape[1]
    last = len(chunks) - 1  # the order units ran or pairs were matched in changes nothing
    pairs_back = [(last - j, last - i) for i, j in neighbours(windows)][::-1]
    backwards = stitch(len(chunks), chunks[::-1].__getitem__, pairs_back)
    again = np.zeros_like(ids)
    for chunk, own in zip(chunks[::-1], backwards, strict=True):
        again[chunk.window.slices] = core_ids(chunk, own)
    assert np.array_equal(again, ids)
    # ... but not the partition of one pass over the whole grid
    assert not _same_partition(ids, segment_block(stack, params))


def test_where_felzenszwalb_chunks_disagree_a_field_one_pass_cuts_is_kept_whole() -> None:
    stack, truth = _fields()
    params = SegmentParams("felzenszwalb", 300, halo=8)
    ids, whole = _chunked(stack, params), segment_block(stack, params)
    field = truth == 5  # 725 px across the four chunks
    assert np.unique(ids[field]).size == 1
    assert np.unique(whole[field]).size == 2  # one pass cuts it in two (104 + 621 px)


@pytest.mark.parametrize("method", ["slic", "felzenszwalb"])
def test_a_halo_covering_the_grid_is_one_pass(method: Method) -> None:
    stack, _ = _fields()
    params = SegmentParams(method, 60 if method == "slic" else 300, 0.5, halo=SIZE)
    assert _same_partition(_chunked(stack, params), segment_block(stack, params))


def _core(chunk: ChunkSegments) -> np.ndarray:
    r = chunk.window.row_off - chunk.outer.row_off
    c = chunk.window.col_off - chunk.outer.col_off
    return chunk.labels[r : r + chunk.window.height, c : c + chunk.window.width]
