"""Zonal statistics of segments, blockwise: per chunk, sums per segment id (numpy bincount over
the chunk's ids); across chunks, the sums added by id. Mean and standard deviation are exact
whatever the chunking (sums of counts, values and squares add up). Percentiles do not add up:
they are computed from a segment's pixels (``zonal_values``), every chunk's pixels of the
segment kept while it is open (``pipeline.objects.table.complete_values``): exact too.

Why not a zonal-statistics library: rasterstats and exactextract take vector zones and a raster
file and rasterise each zone again; here the zones are already a raster of ids on the cube's grid,
and a bincount per chunk is the whole computation (O(pixels), no Python loop per segment).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Literal

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


PERCENTILE_METHOD: Literal["linear"] = "linear"
"""numpy's percentile method for ``p<q>`` statistics (Hyndman and Fan's type 7: the order
statistics at ``(n - 1) q / 100`` interpolated linearly)."""


def percentile_of(statistic: str) -> int | None:
    """The percentile of a ``p<q>`` statistic (``p10`` -> 10, q an integer 0-100 without leading
    zeros), None for ``mean`` or ``std``."""
    if statistic.startswith("p") and statistic[1:].isdigit():
        q = int(statistic[1:])
        if str(q) == statistic[1:] and 0 <= q <= 100:
            return q
    return None


@dataclass(frozen=True)
class ZonalValues:
    """Per segment id (sorted): its valid pixel count, and every valid pixel's features,
    ``values`` (sum of counts, F), the rows of one segment contiguous, segments in id order."""

    ids: np.ndarray
    count: np.ndarray
    values: np.ndarray

    def rows(self) -> np.ndarray:
        """The segment id of each row of ``values``."""
        return np.repeat(self.ids, self.count)

    def subset(self, keep: np.ndarray) -> ZonalValues:
        """The segments where ``keep`` (a mask over ``ids``)."""
        return ZonalValues(
            self.ids[keep], self.count[keep], self.values[np.repeat(keep, self.count)]
        )


def _grouped(rows: np.ndarray, values: np.ndarray) -> ZonalValues:
    order = np.argsort(rows, kind="stable")
    ids, count = np.unique(rows[order], return_counts=True)
    return ZonalValues(ids.astype(np.int64), count.astype(np.int64), values[order])


def zonal_values(ids: np.ndarray, stack: np.ndarray) -> ZonalValues:
    """The valid pixels of a chunk grouped by segment (the pixels ``zonal_sums`` adds up, in
    the stack's dtype): what exact percentiles need."""
    flat = ids.ravel()
    values = stack.reshape(stack.shape[0], -1)
    keep = (flat > 0) & ~np.isnan(values).any(axis=0)
    return _grouped(flat[keep], values[:, keep].T)


def combine_values(parts: Sequence[ZonalValues]) -> ZonalValues:
    """The pixels of several chunks grouped by segment id."""
    rows = np.concatenate([p.rows() for p in parts])
    return _grouped(rows, np.concatenate([p.values for p in parts]))


def percentiles(values: ZonalValues, qs: Sequence[float]) -> np.ndarray:
    """The percentiles ``qs`` of every segment and feature, (len(qs), n, F): numpy's
    ``percentile`` (``PERCENTILE_METHOD``, in float64) on each segment's pixels, so exactly what
    it gives on the segment's pixels of the whole map. Segments of one size are computed in one
    call."""
    n, width = values.ids.size, values.values.shape[1]
    out = np.full((len(qs), n, width), np.nan)
    start = np.concatenate([[0], np.cumsum(values.count)[:-1]]).astype(np.int64)
    data = values.values.astype(np.float64)
    for size in np.unique(values.count):
        if size == 0:
            continue
        which = np.flatnonzero(values.count == size)
        block = data[start[which][:, None] + np.arange(size)]  # (k, size, F)
        out[:, which] = np.percentile(block, list(qs), axis=1, method=PERCENTILE_METHOD)
    return out
