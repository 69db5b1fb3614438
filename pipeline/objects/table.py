"""The segment table and polygons streamed chunk by chunk, so that the driver never holds every
segment's features or geometry.

Chunks are read in their fixed (row-major) order. A segment is *complete* at the last chunk whose
ids hold it (``SegmentIndex.last``); its sums (and its polygon's pieces) are added up while it is
open and handed on at that chunk, then forgotten. What stays in memory for the whole map is the
index (id, valid pixel count, last chunk: 24 bytes per segment); what is open at a time is the
segments crossing the front between processed and unprocessed chunks (their sums, and with
percentiles asked their pixels' values: ``complete_values``).
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from typing import Any

import numpy as np

from pipeline.objects.zonal import ZonalSums, ZonalValues, combine, combine_values


@dataclass(frozen=True)
class SegmentIndex:
    """Per segment id (sorted): its valid pixel count and the last chunk (index in chunk order)
    whose ids hold it."""

    ids: np.ndarray
    size: np.ndarray
    last: np.ndarray

    def at(self, ids: np.ndarray) -> np.ndarray:
        """Positions of ``ids`` (each in the index) in it."""
        return np.searchsorted(self.ids, ids)


def segment_index(
    parts: Iterable[tuple[int, np.ndarray, np.ndarray, np.ndarray]],
) -> SegmentIndex:
    """The index of ``(chunk index, ids present in the chunk's raster, ids with valid pixels
    there, their valid pixel counts)``, chunks in order."""
    present: list[np.ndarray] = []
    chunk: list[np.ndarray] = []
    counted: list[np.ndarray] = []
    counts: list[np.ndarray] = []
    for i, ids, valid_ids, count in parts:
        present.append(np.asarray(ids, dtype=np.int64))
        chunk.append(np.full(len(ids), i, dtype=np.int64))
        counted.append(np.asarray(valid_ids, dtype=np.int64))
        counts.append(np.asarray(count, dtype=np.int64))
    if not present:
        empty = np.zeros(0, dtype=np.int64)
        return SegmentIndex(empty, empty, empty)
    every = np.concatenate(present)
    ids, inverse = np.unique(every, return_inverse=True)
    last = np.full(ids.size, -1, dtype=np.int64)
    np.maximum.at(last, inverse, np.concatenate(chunk))
    size = np.zeros(ids.size, dtype=np.int64)
    with_sums = np.concatenate(counted)
    np.add.at(size, np.searchsorted(ids, with_sums), np.concatenate(counts))
    return SegmentIndex(ids, size, last)


def _subset(sums: ZonalSums, keep: np.ndarray) -> ZonalSums:
    return ZonalSums(sums.ids[keep], sums.count[keep], sums.sums[keep], sums.squares[keep])


def complete_sums(parts: Iterable[ZonalSums], index: SegmentIndex) -> Iterator[ZonalSums]:
    """Per chunk (in order), the sums of the segments complete there: each segment's sums over
    every chunk, exactly as ``combine`` of all the parts gives them, once."""
    held: ZonalSums | None = None
    for i, part in enumerate(parts):
        held = part if held is None else combine([held, part])
        done = index.last[index.at(held.ids)] <= i
        yield _subset(held, done)
        held = _subset(held, ~done)
    if held is not None and held.ids.size:
        raise ValueError(f"{held.ids.size} segment(s) never completed: the index is not theirs")


def complete_values(parts: Iterable[ZonalValues], index: SegmentIndex) -> Iterator[ZonalValues]:
    """Per chunk (in order), the pixels of the segments complete there, all their chunks' pixels
    once (what exact percentiles need). Held between chunks: the pixels of the open segments
    only; a segment inside one chunk is handed on at that chunk and never held."""
    held: ZonalValues | None = None
    for i, part in enumerate(parts):
        held = part if held is None or not held.ids.size else combine_values([held, part])
        done = index.last[index.at(held.ids)] <= i
        yield held.subset(done)
        held = held.subset(~done)
    if held is not None and held.ids.size:
        raise ValueError(f"{held.ids.size} segment(s) never completed: the index is not theirs")


def complete_pieces(
    chunks: Iterable[list[tuple[int, Any]]], index: SegmentIndex
) -> Iterator[list[tuple[int, Any]]]:
    """Per chunk (in order), ``(segment id, polygon)`` of the segments complete there: the
    union of the segment's pieces in every chunk, once, sorted by id."""
    from shapely import union_all

    held: dict[int, list[Any]] = {}
    for i, pieces in enumerate(chunks):
        for segment, geometry in pieces:
            held.setdefault(segment, []).append(geometry)
        found = np.fromiter(held, dtype=np.int64, count=len(held))
        done = found[index.last[index.at(found)] <= i] if found.size else found
        out = []
        for segment in sorted(done.tolist()):
            parts = held.pop(segment)
            out.append((segment, parts[0] if len(parts) == 1 else union_all(parts)))
        yield out
    if held:
        raise ValueError(f"{len(held)} segment(s) never completed: the index is not theirs")
