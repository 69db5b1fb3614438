"""Zonal statistics of segments, blockwise: per chunk, sums per segment id (numpy bincount over
the chunk's ids); across chunks, the sums added by id. Mean and standard deviation are exact
whatever the chunking (sums of counts, values and squares add up); percentiles are not offered:
they do not add up across chunks without keeping every pixel.

Why not a zonal-statistics library: rasterstats and exactextract take vector zones and a raster
file and rasterise each zone again; here the zones are already a raster of ids on the cube's grid,
and a bincount per chunk is the whole computation (O(pixels), no Python loop per segment).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np


@dataclass(frozen=True)
class ZonalSums:
    """Per segment id (sorted): the valid pixel count and the sums of values and squares per
    feature, (n, F)."""

    ids: np.ndarray
    count: np.ndarray
    sums: np.ndarray
    squares: np.ndarray


def zonal_sums(ids: np.ndarray, stack: np.ndarray) -> ZonalSums:
    """The sums of a chunk: ``ids`` (h, w) segment ids (0: none), ``stack`` (F, h, w) features;
    a pixel with a NaN feature is left out of every feature's sums."""
    flat = ids.ravel()
    values = stack.reshape(stack.shape[0], -1).astype(np.float64)
    keep = (flat > 0) & ~np.isnan(values).any(axis=0)
    present, inverse = np.unique(flat[keep], return_inverse=True)
    n = present.size
    count = np.bincount(inverse, minlength=n).astype(np.int64)
    kept = values[:, keep]
    sums = np.zeros((n, stack.shape[0]))
    squares = np.zeros_like(sums)
    for f, v in enumerate(kept):
        sums[:, f] = np.bincount(inverse, weights=v, minlength=n)
        squares[:, f] = np.bincount(inverse, weights=v * v, minlength=n)
    return ZonalSums(present.astype(np.int64), count, sums, squares)


def combine(parts: Sequence[ZonalSums]) -> ZonalSums:
    """The sums of several chunks, added by segment id."""
    ids = np.concatenate([p.ids for p in parts]) if parts else np.zeros(0, np.int64)
    present, inverse = np.unique(ids, return_inverse=True)
    width = parts[0].sums.shape[1] if parts else 0
    count = np.zeros(present.size, dtype=np.int64)
    sums = np.zeros((present.size, width))
    squares = np.zeros_like(sums)
    if parts:
        np.add.at(count, inverse, np.concatenate([p.count for p in parts]))
        np.add.at(sums, inverse, np.concatenate([p.sums for p in parts]))
        np.add.at(squares, inverse, np.concatenate([p.squares for p in parts]))
    return ZonalSums(present, count, sums, squares)


def statistics(total: ZonalSums) -> tuple[np.ndarray, np.ndarray]:
    """Mean and (population) standard deviation per segment and feature, (n, F); NaN for a
    segment with no valid pixel."""
    with np.errstate(invalid="ignore", divide="ignore"):
        n = total.count[:, None].astype(np.float64)
        mean = total.sums / n
        variance = np.maximum(total.squares / n - mean * mean, 0.0)
    return mean, np.sqrt(variance)
