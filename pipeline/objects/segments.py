"""Segments of a grid, computed chunk by chunk with a halo and stitched across chunk borders.

Each chunk is segmented on its window grown by a halo (``pipeline.postprocess.blocks``), with
scikit-image's SLIC or Felzenszwalb-Huttenlocher on the chosen cube variables
(docs/design/0009-segmentation.md says why). A segment that crosses a chunk border is then seen
by both chunks: in the band where one chunk's halo covers the other's core, each segment of a
chunk that reaches its core's edge is joined to the neighbour's segment it overlaps most there,
when that overlap covers at least half of it (``MATCH``). Joined segments form one segment
(union-find over every border of the grid, in a fixed order).

A segment's id is its first pixel in ground order plus one (``row * width + col + 1`` of its
top-left-most pixel, over every chunk it covers), so ids do not depend on the order chunks ran
in, and a rerun on the same cube gives the same ids. Id 0 is no segment (a pixel never valid).
"""

from __future__ import annotations

import itertools
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from typing import Literal

import numpy as np

from pipeline.model import Window
from pipeline.postprocess.blocks import Reader, read_with_halo

Method = Literal["slic", "felzenszwalb"]
MATCH = 0.5
"""A segment crossing a border is joined to its neighbour's segment that covers at least this
share of the segment's pixels in the band both chunks segmented."""


@dataclass(frozen=True)
class SegmentParams:
    """How a chunk is segmented (``objects.segmentation``)."""

    method: Method = "slic"
    size: int = 100
    """The mean segment size sought, in pixels (SLIC: the grid step is its square root;
    Felzenszwalb: the minimum size is a quarter of it)."""
    compactness: float = 0.1
    """SLIC: the weight of space against the features (the features are standardised)."""
    halo: int = 16
    """Pixels read around each chunk: at least the width of the segments expected to cross a
    border."""


@dataclass(frozen=True)
class ChunkSegments:
    """One chunk's segmentation of its window grown by the halo."""

    window: Window
    outer: Window
    labels: np.ndarray
    """(outer.height, outer.width) int32 local labels, 0 where no feature is valid."""
    anchors: np.ndarray
    """Per local label 1..n (index label - 1): its first core pixel in ground order (-1: the
    segment has no pixel in the core)."""


def _standardised(stack: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(h, w, F) features scaled by a fixed rule (each feature over the block's valid pixels:
    zero mean, unit spread, at least 1e-6), and the valid mask."""
    valid = ~np.isnan(stack).any(axis=0)
    image = np.moveaxis(stack, 0, -1).astype(np.float64)
    if valid.any():
        values = image[valid]
        spread = np.maximum(values.std(axis=0), 1e-6)
        image = (image - values.mean(axis=0)) / spread
    image[~valid] = 0.0
    return image, valid


def segment_block(stack: np.ndarray, params: SegmentParams) -> np.ndarray:
    """Local segment labels (1..n, 0 where a feature is NaN) of a (F, h, w) feature stack."""
    from skimage.segmentation import felzenszwalb, slic

    image, valid = _standardised(stack)
    if not valid.any():
        return np.zeros(valid.shape, dtype=np.int32)
    if params.method == "slic":
        n_segments = max(1, round(valid.sum() / max(params.size, 1)))
        labels = slic(
            image,
            n_segments=n_segments,
            compactness=params.compactness,
            channel_axis=-1,
            start_label=1,
            mask=valid,
            enforce_connectivity=True,
        )
    else:
        labels = (
            felzenszwalb(
                image,
                scale=float(params.size),
                sigma=0.5,
                min_size=max(1, params.size // 4),
                channel_axis=-1,
            )
            + 1
        )
        labels[~valid] = 0
    return np.asarray(labels, dtype=np.int32)


def segment_chunk(
    read: Reader, shape: tuple[int, int], window: Window, params: SegmentParams
) -> ChunkSegments:
    """Segment ``window`` grown by the halo; ``read`` gives the (F, h, w) features of a window."""
    block = read_with_halo(read, shape, window, params.halo)
    return chunk_segments(segment_block(block.data, params), block.outer, window, shape[1])


def chunk_segments(labels: np.ndarray, outer: Window, window: Window, width: int) -> ChunkSegments:
    """A chunk's segmentation: ``labels`` (1..n, 0: none) of ``outer`` (``window`` grown by the
    halo) on a grid ``width`` pixels wide, with each label's first core pixel."""
    r0, c0 = window.row_off - outer.row_off, window.col_off - outer.col_off
    n = int(labels.max()) if labels.size else 0
    anchors = np.full(n, -1, dtype=np.int64)
    core = labels[r0 : r0 + window.height, c0 : c0 + window.width]
    rows, cols = np.nonzero(core)
    if rows.size:
        ground = (rows + window.row_off) * width + (cols + window.col_off)
        order = np.argsort(ground, kind="stable")
        first_label, first = np.unique(core[rows, cols][order], return_index=True)
        anchors[first_label - 1] = ground[order][first]
    return ChunkSegments(window, outer, labels, anchors)


class _Union:
    def __init__(self) -> None:
        self.parent: dict[tuple[int, int], tuple[int, int]] = {}

    def find(self, x: tuple[int, int]) -> tuple[int, int]:
        root = x
        while self.parent.get(root, root) != root:
            root = self.parent[root]
        while self.parent.get(x, x) != root:  # path compression
            self.parent[x], x = root, self.parent[x]
        return root

    def join(self, a: tuple[int, int], b: tuple[int, int]) -> None:
        ra, rb = self.find(a), self.find(b)
        if ra != rb:
            self.parent[max(ra, rb)] = min(ra, rb)


def _in(chunk: ChunkSegments, area: Window) -> np.ndarray:
    """``chunk``'s local labels over ``area`` (which lies inside its outer window)."""
    r = area.row_off - chunk.outer.row_off
    c = area.col_off - chunk.outer.col_off
    return chunk.labels[r : r + area.height, c : c + area.width]


def _band(a: Window, b: Window) -> Window | None:
    r0, c0 = max(a.row_off, b.row_off), max(a.col_off, b.col_off)
    r1 = min(a.row_off + a.height, b.row_off + b.height)
    c1 = min(a.col_off + a.width, b.col_off + b.width)
    return Window(r0, c0, r1 - r0, c1 - c0) if r1 > r0 and c1 > c0 else None


def _match(union: _Union, i: int, a: ChunkSegments, j: int, b: ChunkSegments) -> None:
    """Join each segment of ``a`` that reaches its core's edge towards ``b`` to the segment of
    ``b``'s core it overlaps most in the band where ``a``'s halo covers ``b``'s core."""
    band = _band(a.outer, b.window)
    if band is None or not a.anchors.size or not b.anchors.size:
        return  # no segment on one side (a chunk never valid)
    mine, theirs = _in(a, band).ravel(), _in(b, band).ravel()
    both = (mine > 0) & (theirs > 0) & (a.anchors[np.maximum(mine, 1) - 1] >= 0)
    if not both.any():
        return
    pairs, counts = np.unique(np.stack([mine[both], theirs[both]]), axis=1, return_counts=True)
    sizes = dict(zip(*np.unique(mine[mine > 0], return_counts=True), strict=True))
    best: dict[int, tuple[int, int]] = {}
    for (x, y), count in zip(pairs.T.tolist(), counts.tolist(), strict=True):
        if count > best.get(x, (0, 0))[0]:
            best[x] = (count, y)
    for x, (count, y) in best.items():
        if count >= MATCH * sizes[x] and b.anchors[y - 1] >= 0:
            union.join((i, x), (j, y))


def neighbours(windows: Sequence[Window]) -> list[tuple[int, int]]:
    """Pairs of chunks of a chunk lattice that share an edge or a corner, in a fixed order."""
    at = {(w.row_off, w.col_off): i for i, w in enumerate(windows)}
    rows = sorted({w.row_off for w in windows})
    cols = sorted({w.col_off for w in windows})
    next_row = dict(itertools.pairwise(rows))
    next_col = dict(itertools.pairwise(cols))
    prev_col = dict(zip(cols[1:], cols, strict=False))
    out = []
    for i, w in enumerate(windows):
        r, c = w.row_off, w.col_off
        below = next_row.get(r)
        for key in (
            (r, next_col.get(c)),
            (below, prev_col.get(c)),
            (below, c),
            (below, next_col.get(c)),
        ):
            j = at.get(key) if None not in key else None  # type: ignore[arg-type]
            if j is not None:
                out.append((i, j))
    return out


def stitch(
    count: int, load: Callable[[int], ChunkSegments], pairs: Iterable[tuple[int, int]]
) -> list[np.ndarray]:
    """The final id of every local label of every chunk (per chunk: index label - 1).

    ``load(i)`` gives chunk ``i``'s segmentation; only two chunks are held at a time (and every
    chunk's anchors)."""
    union = _Union()
    anchors = []
    for i in range(count):
        anchors.append(load(i).anchors)
    for i, j in pairs:
        a, b = load(i), load(j)
        _match(union, i, a, j, b)
        _match(union, j, b, i, a)
    first: dict[tuple[int, int], int] = {}
    for i, own in enumerate(anchors):
        for local in np.nonzero(own >= 0)[0].tolist():
            root = union.find((i, local + 1))
            anchor = int(own[local])
            if anchor < first.get(root, anchor + 1):
                first[root] = anchor
    out = []
    for i, own in enumerate(anchors):
        ids = np.zeros(own.size, dtype=np.int64)
        for local in np.nonzero(own >= 0)[0].tolist():
            ids[local] = first[union.find((i, local + 1))] + 1
        out.append(ids)
    return out


def core_ids(chunk: ChunkSegments, ids: np.ndarray) -> np.ndarray:
    """The chunk's core as final segment ids (int64, 0: no segment)."""
    core = _in(chunk, chunk.window)
    lookup = np.concatenate([[0], ids]).astype(np.int64)
    return lookup[core]
