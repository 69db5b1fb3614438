"""The segment table and polygons streamed chunk by chunk give what the whole map gives: each
segment once, at the chunk where it completes, with the sums of all its chunks and its whole
polygon."""

from __future__ import annotations

from typing import Any

import numpy as np
from hypothesis import given, settings
from hypothesis import strategies as st
from hypothesis.extra.numpy import arrays

from pipeline.model import GridSpec, Window
from pipeline.objects.build import polygons_of
from pipeline.objects.table import (
    SegmentIndex,
    complete_pieces,
    complete_sums,
    complete_values,
    segment_index,
)
from pipeline.objects.zonal import (
    PERCENTILE_METHOD,
    ZonalSums,
    combine,
    percentile_of,
    percentiles,
    zonal_sums,
    zonal_values,
)

GRID = GridSpec("EPSG:32633", (10.0, 0.0, 500000.0, 0.0, -10.0, 5000000.0), 12, 12)


def _case(ids: np.ndarray, chunk: int) -> tuple[list[Window], list[np.ndarray], np.ndarray]:
    rng = np.random.default_rng(int(ids.sum()))
    stack = rng.normal(size=(2, *ids.shape)).astype(np.float32)
    stack[:, rng.uniform(size=ids.shape) < 0.1] = np.nan  # some pixels never valid
    return GRID.chunks(chunk), [ids[w.slices] for w in GRID.chunks(chunk)], stack


def _index(
    windows: list[Window], cores: list[np.ndarray], stack: np.ndarray
) -> tuple[SegmentIndex, list[ZonalSums]]:
    pairs = zip(windows, cores, strict=True)
    sums = [zonal_sums(c, stack[:, w.slices[0], w.slices[1]]) for w, c in pairs]
    parts = [
        (i, np.unique(c[c > 0]), s.ids, s.count)
        for i, (c, s) in enumerate(zip(cores, sums, strict=True))
    ]
    return segment_index(parts), sums


@settings(max_examples=60, deadline=None)
@given(
    ids=arrays(np.int64, (12, 12), elements=st.integers(0, 6)),
    chunk=st.sampled_from([3, 4, 5, 12]),
)
def test_streamed_sums_are_the_whole_maps_once_each(ids: np.ndarray, chunk: int) -> None:
    windows, cores, stack = _case(ids, chunk)
    index, sums = _index(windows, cores, stack)
    whole = zonal_sums(ids, stack)
    assert np.array_equal(index.ids, np.unique(ids[ids > 0]))
    sizes = dict(zip(index.ids.tolist(), index.size.tolist(), strict=True))
    assert all(sizes[i] == c for i, c in zip(whole.ids.tolist(), whole.count.tolist(), strict=True))
    streamed = list(complete_sums(iter(sums), index))
    assert len(streamed) == len(windows)
    every = np.concatenate([s.ids for s in streamed])
    assert np.array_equal(np.sort(every), whole.ids)  # each segment once
    for i, part in enumerate(streamed):  # at the last chunk holding it
        assert (index.last[index.at(part.ids)] == i).all()
    total = combine(streamed)
    assert np.array_equal(total.count, whole.count)
    np.testing.assert_allclose(total.sums, whole.sums, rtol=1e-9, atol=1e-9)
    np.testing.assert_allclose(total.squares, whole.squares, rtol=1e-9, atol=1e-9)


@settings(max_examples=60, deadline=None)
@given(
    ids=arrays(np.int64, (12, 12), elements=st.integers(0, 6)),
    chunk=st.sampled_from([3, 4, 5, 12]),
    qs=st.lists(st.integers(0, 100), min_size=1, max_size=4),
)
def test_streamed_percentiles_are_the_whole_maps_exactly(
    ids: np.ndarray, chunk: int, qs: list[int]
) -> None:
    windows, cores, stack = _case(ids, chunk)
    index, sums = _index(windows, cores, stack)
    pairs = zip(windows, cores, strict=True)
    parts = (zonal_values(c, stack[:, w.slices[0], w.slices[1]]) for w, c in pairs)
    streamed = list(complete_values(parts, index))
    assert [p.ids.tolist() for p in streamed] == [
        s.ids.tolist() for s in complete_sums(iter(sums), index)
    ]
    valid = ~np.isnan(stack).any(axis=0)
    for part in streamed:
        found = percentiles(part, qs)
        for n, segment in enumerate(part.ids):
            pixels = stack[:, (ids == segment) & valid].astype(np.float64)  # whole map, (F, m)
            expected = np.percentile(pixels, qs, axis=1, method=PERCENTILE_METHOD)
            assert np.array_equal(found[:, n], expected)  # exact, not close


def test_pixels_are_handed_on_at_each_segments_last_chunk() -> None:
    ids = np.zeros((12, 12), dtype=np.int64)
    ids[:, :] = 2
    ids[2:10, 1] = 1  # crosses chunks 0, 3, 6 (chunks of 4 px)
    ids[5:7, 5:7] = 3  # inside chunk 4
    windows, cores, stack = _case(ids, 4)
    index, _ = _index(windows, cores, stack)
    pairs = zip(windows, cores, strict=True)
    parts = (zonal_values(c, stack[:, w.slices[0], w.slices[1]]) for w, c in pairs)
    streamed = list(complete_values(parts, index))
    where = {int(i): n for n, part in enumerate(streamed) for i in part.ids}
    assert where == {1: 6, 2: 8, 3: 4}
    valid = ~np.isnan(stack).any(axis=0)
    assert streamed[6].count.tolist() == [int(((ids == 1) & valid).sum())]
    assert len(streamed[6].values) == streamed[6].count.sum()


def test_percentile_names() -> None:
    assert [percentile_of(s) for s in ("p0", "p10", "p50", "p100")] == [0, 10, 50, 100]
    assert [percentile_of(s) for s in ("mean", "std", "p05", "p101", "p", "p1.5")] == [None] * 6


@settings(max_examples=30, deadline=None)
@given(
    ids=arrays(np.int64, (12, 12), elements=st.integers(0, 4)),
    chunk=st.sampled_from([4, 5, 12]),
)
def test_streamed_polygons_are_each_segment_once_and_whole(ids: np.ndarray, chunk: int) -> None:
    from shapely import union_all

    windows, cores, stack = _case(ids, chunk)
    index, _ = _index(windows, cores, stack)
    pieces = (polygons_of(c, GRID, w) for w, c in zip(windows, cores, strict=True))
    done = [p for part in complete_pieces(pieces, index) for p in part]
    assert sorted(s for s, _ in done) == np.unique(ids[ids > 0]).tolist()
    whole: dict[int, list[Any]] = {}
    for segment, shape in polygons_of(ids, GRID, Window(0, 0, 12, 12)):
        whole.setdefault(segment, []).append(shape)
    for segment, shape in done:
        expected = union_all(whole[segment])
        assert shape.area == expected.area == 100.0 * (ids == segment).sum()
        assert shape.symmetric_difference(expected).area < 1e-6


def test_a_segment_open_across_chunks_is_held_until_its_last_chunk() -> None:
    ids = np.zeros((12, 12), dtype=np.int64)
    ids[:, :] = 2
    ids[2:10, 1] = 1  # segment 1: a thin strip down the first column of chunks
    windows, cores, stack = _case(ids, 4)
    stack[:] = 1.0
    index, sums = _index(windows, cores, stack)
    streamed = list(complete_sums(iter(sums), index))
    where = {int(i): n for n, part in enumerate(streamed) for i in part.ids}
    assert where == {1: 6, 2: 8}  # rows of chunks 0..2: 1 ends in chunk 6, 2 in the last
    assert streamed[6].count.tolist() == [8]
