"""Blocks with halos: how post-processing reads a chunk of a map with the pixels around it.

A ``Reader`` returns the values of a window that lies inside the map's grid, as an array whose
last two axes are (rows, cols) of the window (a label map: (h, w); class probabilities:
(K, h, w)). ``read_with_halo`` grows the window by the halo, clips it to the grid and says which
sides were clipped (the map's edge) and which were not (``open`` sides: the map goes on).
``mosaic_reader`` reads a window of a mosaic grid from the tiles placed on it, so a chunk at a
tile seam sees the neighbouring tile's pixels: chunked and tiled processing then equal one pass
over the whole map. ``cached_reader`` keeps a bounded number of decoded storage chunks of a
chunked array (Zarr), so windows read with halos in raster order decode each chunk about
three times instead of up to nine.
"""

from __future__ import annotations

from collections import OrderedDict
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from pipeline.model import Window

Reader = Callable[[Window], np.ndarray]


@dataclass(frozen=True)
class Block:
    """A window read with its halo: ``data`` covers ``outer`` (the window grown by the halo and
    clipped to the grid); ``core`` is where the window lies in ``data``; ``open`` (top, bottom,
    left, right) is True on a side where the grid goes on beyond ``data``."""

    data: np.ndarray
    outer: Window
    core: tuple[int, int, int, int]  # r0, r1, c0, c1 in data
    open: tuple[bool, bool, bool, bool]


def grow(window: Window, halo: int, shape: tuple[int, int]) -> Window:
    """``window`` grown by ``halo`` pixels on every side, clipped to a grid of ``shape``."""
    height, width = shape
    r0, c0 = max(0, window.row_off - halo), max(0, window.col_off - halo)
    r1 = min(height, window.row_off + window.height + halo)
    c1 = min(width, window.col_off + window.width + halo)
    return Window(r0, c0, r1 - r0, c1 - c0)


def read_with_halo(read: Reader, shape: tuple[int, int], window: Window, halo: int) -> Block:
    """Read ``window`` and up to ``halo`` pixels around it (never beyond the grid)."""
    if halo < 0:
        raise ValueError(f"halo must be 0 or more, got {halo}")
    outer = grow(window, halo, shape)
    data = read(outer)
    r0, c0 = window.row_off - outer.row_off, window.col_off - outer.col_off
    core = (r0, r0 + window.height, c0, c0 + window.width)
    height, width = shape
    open_sides = (
        outer.row_off > 0,
        outer.row_off + outer.height < height,
        outer.col_off > 0,
        outer.col_off + outer.width < width,
    )
    return Block(data, outer, core, open_sides)


def trim(block: Block, halo: int) -> Block:
    """``block`` with at most ``halo`` pixels around its core (a side cut is then open)."""
    r0, r1, c0, c1 = block.core
    rows, cols = block.data.shape[-2:]
    cut = (max(0, r0 - halo), min(rows, r1 + halo), max(0, c0 - halo), min(cols, c1 + halo))
    if cut == (0, rows, 0, cols):
        return block
    outer = Window(
        block.outer.row_off + cut[0], block.outer.col_off + cut[2], cut[1] - cut[0], cut[3] - cut[2]
    )
    return Block(
        block.data[..., cut[0] : cut[1], cut[2] : cut[3]],
        outer,
        (r0 - cut[0], r1 - cut[0], c0 - cut[2], c1 - cut[2]),
        (
            block.open[0] or cut[0] > 0,
            block.open[1] or cut[1] < rows,
            block.open[2] or cut[2] > 0,
            block.open[3] or cut[3] < cols,
        ),
    )


def array_reader(array: Any) -> Reader:
    """A reader of an in-memory array or of anything sliced like one (a zarr array, a memmap)."""

    def read(window: Window) -> np.ndarray:
        rows, cols = window.slices
        return np.asarray(array[..., rows, cols])

    return read


def cached_reader(array: Any, chunks: tuple[int, int], max_chunks: int = 16) -> Reader:
    """A reader of a 2-D array stored in ``chunks`` (a Zarr array's chunk shape) that decodes
    whole storage chunks and keeps the ``max_chunks`` last used (memory: that many chunks,
    whatever the map's size). A window grown by a halo touches up to 9 chunks; its neighbour in
    raster order shares 6 of them, so they are decoded once per row of windows, not per window.
    The values are the array's own: only the number of decodes changes."""
    height, width = array.shape[-2:]
    ch, cw = chunks
    cache: OrderedDict[tuple[int, int], np.ndarray] = OrderedDict()

    def chunk(r: int, c: int) -> np.ndarray:
        key = (r, c)
        if key in cache:
            cache.move_to_end(key)
            return cache[key]
        data = np.asarray(
            array[r * ch : min((r + 1) * ch, height), c * cw : min((c + 1) * cw, width)]
        )
        cache[key] = data
        if len(cache) > max_chunks:
            cache.popitem(last=False)
        return data

    def read(window: Window) -> np.ndarray:
        r0, c0 = window.row_off, window.col_off
        r1, c1 = r0 + window.height, c0 + window.width
        out = np.empty((window.height, window.width), dtype=array.dtype)
        for r in range(r0 // ch, (r1 - 1) // ch + 1):
            for c in range(c0 // cw, (c1 - 1) // cw + 1):
                data = chunk(r, c)
                a0, a1 = max(r0, r * ch), min(r1, (r + 1) * ch)
                b0, b1 = max(c0, c * cw), min(c1, (c + 1) * cw)
                out[a0 - r0 : a1 - r0, b0 - c0 : b1 - c0] = data[
                    a0 - r * ch : a1 - r * ch, b0 - c * cw : b1 - c * cw
                ]
        return out

    return read


@dataclass(frozen=True)
class Placed:
    """A tile's array placed on the mosaic grid at (row_off, col_off)."""

    array: Any
    row_off: int
    col_off: int


def mosaic_reader(tiles: Sequence[Placed], fill: float, dtype: Any) -> Reader:
    """A reader of a mosaic grid from tiles on its lattice: each pixel from the first tile with
    data there (not ``fill``: the rule of ``pipeline.predict.outputs.tiles_to_cog``), ``fill``
    where none has. A pixel of a (K, h, w) tile has data when any of its K values has."""
    if not tiles:
        raise ValueError("a mosaic reader needs at least one tile")
    lead_shape = tuple(np.shape(tiles[0].array)[:-2])

    def read(window: Window) -> np.ndarray:
        out = np.full((*lead_shape, window.height, window.width), fill, dtype=dtype)
        done = np.zeros((window.height, window.width), dtype=bool)
        lead = tuple(range(len(lead_shape)))
        for tile in tiles:
            height, width = np.shape(tile.array)[-2:]
            r0 = max(window.row_off, tile.row_off)
            c0 = max(window.col_off, tile.col_off)
            r1 = min(window.row_off + window.height, tile.row_off + height)
            c1 = min(window.col_off + window.width, tile.col_off + width)
            if r1 <= r0 or c1 <= c0:
                continue
            part = np.asarray(
                tile.array[
                    ...,
                    r0 - tile.row_off : r1 - tile.row_off,
                    c0 - tile.col_off : c1 - tile.col_off,
                ]
            )
            rows = slice(r0 - window.row_off, r1 - window.row_off)
            cols = slice(c0 - window.col_off, c1 - window.col_off)
            has = ~np.isnan(part) if np.isnan(fill) else part != fill
            if lead:
                has = has.any(axis=lead)
            take = has & ~done[rows, cols]
            out[..., rows, cols] = np.where(take, part, out[..., rows, cols])
            done[rows, cols] |= take
        return out

    return read
