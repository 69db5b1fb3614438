"""A fitted scikit-learn tree ensemble as flat arrays, and the compiled kernel that walks them.

Every tree of the ensemble is laid out breadth-first in one set of arrays, so that the two
children of a node are next to each other (``child`` and ``child + 1``): a step down a tree is
a comparison added to an index. A leaf has ``feature`` -1 and ``child`` the row of its values.

The kernel (:func:`add_trees`) walks eight pixels at a time through each tree (their paths are
independent, so the processor overlaps them: 1.5x faster than one at a time, 1.25x than four
on a chunk of the whole-chain benchmark) and adds each
tree's leaf values to the pixel's sums in the trees' order, in float64: the same additions, in
the same order, as scikit-learn's own predict with one thread, so that the sums are
scikit-learn's to the bit. Routing is scikit-learn's too: the float32 feature compared with the
float64 threshold. Missing values (NaN) are the caller's to keep out: scikit-learn sends them
where each node learned (``missing_go_to_left``), and a test for them in the walk made it six
times slower; :mod:`pipeline.learn.compiled` leaves tables with NaN to scikit-learn, and a
chunk's pixels with a NaN feature are not predicted at all.

The features are read where they lie, as (n_features, n_pixels): the planes of a chunk of the
cube, without copying its valid pixels into a table first, or a table's transpose.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numba
import numpy as np

__all__ = ["FlatTrees", "add_trees", "flatten", "load_kernels"]

LANES = 8  # pixels walked through a tree together (a chunk of bench.chain: 0.33 s, 0.41 with 4)
# Pixels each tree walks before the next tree: a forest whose nodes fit in a core's cache
# (CACHED_NODES) walks shorter blocks (less to keep of each pixel), a larger one long blocks
# (each tree fetched once per block). Measured with 8 lanes: a 2,652-node forest on a chunk
# 0.35 CPU s with 64, 0.33 with 256; a 101,200-node forest on 500,000 pixels 2.57 with 64, 2.22
# with 256, 2.00 with 1,024.
SHORT_BLOCK, LONG_BLOCK = 256, 1024
CACHED_NODES = 16_384  # 16 bytes of arrays per node: 256 KiB


@dataclass(frozen=True)
class FlatTrees:
    """The trees of an ensemble, breadth-first in shared arrays (see the module's doc).

    ``columns[t]``: the first output column tree t adds to, and its leaves hold ``values.shape
    [1]`` values (a forest classifier's tree: every class; a boosting stage's tree: one). Each
    leaf value is multiplied by ``scale`` before it is added (boosting's learning rate; 1.0, an
    exact no-op, for a forest).
    """

    roots: np.ndarray  # (trees,) int32
    columns: np.ndarray  # (trees,) int32
    feature: np.ndarray  # (nodes,) int32, -1 at a leaf
    threshold: np.ndarray  # (nodes,) float64
    child: np.ndarray  # (nodes,) int32: the left child (the right one follows), a leaf's values
    values: np.ndarray  # (leaves, values per leaf) float64
    scale: float


def flatten(
    trees: list[Any], values: list[np.ndarray], columns: list[int], scale: float
) -> FlatTrees:
    """Lay out scikit-learn ``Tree`` objects (``tree_``); ``values[t]``: tree t's (nodes, k)
    leaf values, added from column ``columns[t]``."""
    sizes = np.array([tree.node_count for tree in trees], dtype=np.int64)
    starts = np.concatenate([[0], np.cumsum(sizes)[:-1]]).astype(np.int32)
    n_nodes, width = int(sizes.sum()), values[0].shape[1]
    feature = np.empty(n_nodes, dtype=np.int32)
    threshold = np.empty(n_nodes, dtype=np.float64)
    child = np.empty(n_nodes, dtype=np.int32)
    leaf_values = np.empty((n_nodes, width), dtype=np.float64)
    n_leaves = 0
    for tree, tree_values, start in zip(trees, values, starts, strict=True):
        n_leaves = _breadth_first(
            np.asarray(tree.children_left, dtype=np.int64),
            np.asarray(tree.children_right, dtype=np.int64),
            np.asarray(tree.feature, dtype=np.int64),
            np.asarray(tree.threshold, dtype=np.float64),
            np.ascontiguousarray(tree_values, dtype=np.float64),
            int(start),
            n_leaves,
            feature,
            threshold,
            child,
            leaf_values,
        )
    return FlatTrees(
        roots=starts,
        columns=np.asarray(columns, dtype=np.int32),
        feature=feature,
        threshold=threshold,
        child=child,
        values=leaf_values[:n_leaves].copy(),
        scale=float(scale),
    )


@numba.njit(cache=True, nogil=True)
def _breadth_first(
    left: np.ndarray,
    right: np.ndarray,
    feature_in: np.ndarray,
    threshold_in: np.ndarray,
    values_in: np.ndarray,
    start: int,
    n_leaves: int,
    feature: np.ndarray,
    threshold: np.ndarray,
    child: np.ndarray,
    values: np.ndarray,
) -> int:  # pragma: no cover  (compiled)
    """One tree from ``start`` on in the shared arrays; the leaves' values from row
    ``n_leaves`` on. Returns the number of leaves written so far."""
    order = np.empty(left.shape[0], dtype=np.int64)  # old node ids, breadth-first
    order[0] = 0
    placed = 1
    for position in range(left.shape[0]):
        old = order[position]
        here = start + position
        if left[old] < 0:  # a leaf (scikit-learn: -1 on both sides)
            feature[here] = -1
            threshold[here] = 0.0
            child[here] = n_leaves
            values[n_leaves, :] = values_in[old, :]
            n_leaves += 1
        else:
            feature[here] = feature_in[old]
            threshold[here] = threshold_in[old]
            child[here] = start + placed
            order[placed] = left[old]
            order[placed + 1] = right[old]
            placed += 2
    return n_leaves


def add_trees(trees: FlatTrees, features: np.ndarray, pixels: np.ndarray, out: np.ndarray) -> None:
    """Add every tree's leaf values for ``pixels`` (column indices of the float32
    (n_features, n_pixels) ``features``, whose values at those pixels are all finite) to
    ``out`` (len(pixels), columns), in the trees' order."""
    _add_trees(
        features,
        pixels,
        trees.roots,
        trees.columns,
        trees.feature,
        trees.threshold,
        trees.child,
        trees.values,
        trees.scale,
        SHORT_BLOCK if trees.feature.shape[0] <= CACHED_NODES else LONG_BLOCK,
        out,
    )


@numba.njit(inline="always")
def _down(
    features: np.ndarray,
    pixel: int,
    node: int,
    f: int,
    feature: np.ndarray,
    threshold: np.ndarray,
    child: np.ndarray,
) -> tuple[int, int]:  # pragma: no cover  (compiled)
    """One step down a tree for one pixel: the child it goes to, and that child's feature."""
    node = child[node] + (0 if features[f, pixel] <= threshold[node] else 1)
    return node, feature[node]


@numba.njit(cache=True, nogil=True)
def _add_trees(
    features: np.ndarray,
    pixels: np.ndarray,
    roots: np.ndarray,
    columns: np.ndarray,
    feature: np.ndarray,
    threshold: np.ndarray,
    child: np.ndarray,
    values: np.ndarray,
    scale: float,
    block: int,
    out: np.ndarray,
) -> None:  # pragma: no cover  (compiled)
    n, k = pixels.shape[0], values.shape[1]
    # Pixels by blocks of ``block``: each tree walks the whole block (it stays in the cache: a
    # forest of fully grown trees is megabytes) eight pixels at a time, written out by hand so
    # that the eight walks are independent chains the processor overlaps (a short last group
    # walks its last pixel again, into scratch rows). The block's sums stay in ``sums`` until
    # every tree is added, each in the trees' order. A step is ``child + (x > threshold)``: no
    # NaN here (the caller's rule), so that is scikit-learn's ``x <= threshold`` to the left.
    sums = np.empty((block + LANES, out.shape[1]), dtype=np.float64)
    for start in range(0, n, block):
        size = min(block, n - start)
        sums[:size, :] = out[start : start + size, :]
        for tree in range(roots.shape[0]):
            root, column = roots[tree], columns[tree]
            for first in range(0, size, LANES):
                last = min(LANES, size - first) - 1
                at = start + first
                p0, p1 = pixels[at], pixels[at + min(1, last)]
                p2, p3 = pixels[at + min(2, last)], pixels[at + min(3, last)]
                p4, p5 = pixels[at + min(4, last)], pixels[at + min(5, last)]
                p6, p7 = pixels[at + min(6, last)], pixels[at + min(7, last)]
                n0 = n1 = n2 = n3 = n4 = n5 = n6 = n7 = root
                f0 = f1 = f2 = f3 = f4 = f5 = f6 = f7 = feature[root]
                # Until all eight reach a leaf (-1: the only negative feature, so the AND of
                # the eight is negative only when every one is).
                while (f0 & f1 & f2 & f3 & f4 & f5 & f6 & f7) >= 0:
                    if f0 >= 0:
                        n0, f0 = _down(features, p0, n0, f0, feature, threshold, child)
                    if f1 >= 0:
                        n1, f1 = _down(features, p1, n1, f1, feature, threshold, child)
                    if f2 >= 0:
                        n2, f2 = _down(features, p2, n2, f2, feature, threshold, child)
                    if f3 >= 0:
                        n3, f3 = _down(features, p3, n3, f3, feature, threshold, child)
                    if f4 >= 0:
                        n4, f4 = _down(features, p4, n4, f4, feature, threshold, child)
                    if f5 >= 0:
                        n5, f5 = _down(features, p5, n5, f5, feature, threshold, child)
                    if f6 >= 0:
                        n6, f6 = _down(features, p6, n6, f6, feature, threshold, child)
                    if f7 >= 0:
                        n7, f7 = _down(features, p7, n7, f7, feature, threshold, child)
                l0, l1, l2, l3 = child[n0], child[n1], child[n2], child[n3]
                l4, l5, l6, l7 = child[n4], child[n5], child[n6], child[n7]
                for j in range(k):
                    c = column + j
                    sums[first, c] += scale * values[l0, j]
                    sums[first + 1, c] += scale * values[l1, j]
                    sums[first + 2, c] += scale * values[l2, j]
                    sums[first + 3, c] += scale * values[l3, j]
                    sums[first + 4, c] += scale * values[l4, j]
                    sums[first + 5, c] += scale * values[l5, j]
                    sums[first + 6, c] += scale * values[l6, j]
                    sums[first + 7, c] += scale * values[l7, j]
        out[start : start + size, :] = sums[:size, :]


def load_kernels() -> None:
    """Load (or compile) the kernels for the layouts prediction uses: a C-contiguous block, a
    strided one (a table's transpose), float32 features."""
    from sklearn.tree import DecisionTreeRegressor

    tree = DecisionTreeRegressor(max_depth=1).fit([[0.0], [1.0]], [0.0, 1.0]).tree_
    flat = flatten([tree], [tree.value[:, 0, :]], [0], 1.0)
    out = np.zeros((2, 1))
    pixels = np.arange(2, dtype=np.int64)
    add_trees(flat, np.zeros((2, 2), dtype=np.float32), pixels, out)  # a block's planes
    add_trees(flat, np.zeros((2, 2), dtype=np.float32).T, pixels, out)  # a table's transpose
