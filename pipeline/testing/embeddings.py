"""A published annual embedding product in its layout: one COG per year and tile holding N int8
channels (``-128`` no data), scaled by 1/127 to -1..1, and its STAC items (collection
``embeddings-annual``, asset ``embedding``), as the ``embeddings-annual`` sensor profile reads.

Each channel is a smooth field plus noise, so neighbouring pixels are alike and channels differ;
a band of no data runs along the west edge in the second year (a product's missing strip).
"""

from __future__ import annotations

from collections.abc import Sequence
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import numpy as np

from pipeline.catalog.profiles import EMBEDDING_CHANNELS
from pipeline.model import GridSpec
from pipeline.testing.generators import (
    SyntheticScene,
    SyntheticTile,
    _item,
    _rng,
    _smooth,
    overlapping_tiles,
    write_cog,
)

EMBEDDING_NODATA = -128
COLLECTION = "embeddings-annual"


def annual_embeddings(
    root: Path,
    *,
    years: Sequence[int] = (2021, 2022),
    channels: int = EMBEDDING_CHANNELS,
    tiles: Sequence[SyntheticTile] | None = None,
    seed: int = 0,
) -> list[SyntheticScene]:
    """Write the product's COGs under ``root/<tile>/`` and return one scene per tile and year
    (``raw["embedding"]``: the (channels, h, w) int8 values written)."""
    scenes = []
    for t, tile in enumerate(tiles or overlapping_tiles()):
        grid: GridSpec = tile.grid()
        n = tile.size
        for y, year in enumerate(years):
            rng = _rng(seed, 11, t, y)
            values = np.stack([2 * _smooth(rng, n) - 1 for _ in range(channels)])
            values = values * 0.8 + 0.1 * rng.standard_normal(values.shape)
            raw = np.clip(np.round(values * 127), -127, 127).astype(np.int8)
            if y == 1:
                raw[:, :, : max(1, n // 8)] = EMBEDDING_NODATA
            when = datetime(year, 7, 1, tzinfo=UTC)
            path = root / tile.tile / f"embedding_{tile.tile}_{year}.tif"
            write_cog(path, raw, grid, nodata=EMBEDDING_NODATA)
            properties: dict[str, Any] = {"embedding:channels": channels, "embedding:year": year}
            item = _item(
                f"embedding_{tile.tile}_{year}",
                when,
                grid,
                COLLECTION,
                properties,
                {"embedding": (path, grid, ("data",))},
                projection=True,
            )
            files, arrays = {"embedding": path}, {"embedding": raw}
            scenes.append(SyntheticScene(item, tile, when, files, arrays, properties))
    return scenes
