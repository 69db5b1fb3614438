"""The cube of a tiled run read as one grid: the mosaic's pixel lattice, each pixel from the tile
that owns it, so that segments are computed, stitched and summed across tile borders exactly as
across chunk borders.

A tile's cube is NaN on the pixels it does not own (``pipeline.cube.build``), so a mosaic pixel
is taken from the first tile (in tile order) with a valid value there: the owner, as the map
mosaic (``pipeline.predict.outputs.tiles_to_cog``) takes the first tile with a label. Tiles must
lie on the mosaic's lattice (same CRS, pixel size and origin modulo a pixel); a tile that would
have to be resampled is refused by the stage.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

from pipeline.model import Window


@dataclass(frozen=True)
class TileCube:
    """A tile's cube store and where its grid lies in the mosaic."""

    url: str
    row: int
    col: int
    height: int
    width: int

    @property
    def extent(self) -> Window:
        return Window(self.row, self.col, self.height, self.width)


def overlap(a: Window, b: Window) -> Window | None:
    """The pixels two windows share, or None."""
    r0, c0 = max(a.row_off, b.row_off), max(a.col_off, b.col_off)
    r1 = min(a.row_off + a.height, b.row_off + b.height)
    c1 = min(a.col_off + a.width, b.col_off + b.width)
    return Window(r0, c0, r1 - r0, c1 - c0) if r1 > r0 and c1 > c0 else None


def read_mosaic(
    tiles: Sequence[TileCube],
    variables: Sequence[tuple[str, str]],
    n_features: int,
    window: Window,
) -> np.ndarray:
    """The (n_features, h, w) float32 features of a mosaic window (NaN where no tile has a
    valid value)."""
    from pipeline.cube.store import read_features

    only = tiles[0] if len(tiles) == 1 else None
    if only is not None and only.row == only.col == 0 and overlap(only.extent, window) == window:
        return read_features(only.url, list(variables), window)  # a single grid: straight through
    out = np.full((n_features, window.height, window.width), np.nan, dtype=np.float32)
    free = np.ones((window.height, window.width), dtype=bool)
    for tile in tiles:
        inside = overlap(tile.extent, window)
        if inside is None:
            continue
        local = Window(inside.row_off - tile.row, inside.col_off - tile.col, inside.height,
                       inside.width)  # fmt: skip
        part = read_features(tile.url, list(variables), local)
        r0, c0 = inside.row_off - window.row_off, inside.col_off - window.col_off
        rows, cols = slice(r0, r0 + inside.height), slice(c0, c0 + inside.width)
        take = free[rows, cols] & ~np.isnan(part).all(axis=0)
        out[:, rows, cols][:, take] = part[:, take]
        free[rows, cols] &= ~take
        if not free.any():
            break
    return out
