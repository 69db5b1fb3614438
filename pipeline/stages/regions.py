"""The run's regions (reference regions): which exist on the tiles, which region each reference
feature belongs to, and each tile's region index for prediction."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import pandas as pd

from pipeline.model import GridSpec
from pipeline.run.layout import RunLayout
from pipeline.samples.regions import NO_REGION, RegionMap, load_regions
from pipeline.storage import RunStore


@dataclass(frozen=True)
class RegionPlan:
    """The run's regions: those covering a pixel of some tile, each with its own model."""

    names: tuple[str, ...]
    polygon_region: dict[int, int] = field(hash=False)
    """Reference feature -> index in ``names``: the region of most of its pixels (all tiles)."""
    urls: tuple[str, ...]
    """Per tile, where its region index (Zarr) is written for prediction."""


def region_map(config: Any, grid: GridSpec, names: Sequence[str]) -> RegionMap:
    """The regions burnt onto ``grid``, indexed in ``names`` (the run's regions)."""
    loaded = load_regions(config.reference.regions, grid)
    position = {name: i for i, name in enumerate(names)}
    remap = np.array([position.get(n, NO_REGION) for n in loaded.names], dtype=np.int16)
    return RegionMap(tuple(names), remap[loaded.index], loaded.filled_pixels)


def plan_regions(
    config: Any,
    tiles: Sequence[Any],
    references: Sequence[Any],
    store: RunStore,
    layout: RunLayout,
) -> RegionPlan | None:
    """``tiles``: the run period's TilePlans; ``references``: their SampleSources."""
    if config.reference.regions is None:
        return None
    maps = {t.key: load_regions(config.reference.regions, t.cube.grid) for t in tiles}
    every = next(iter(maps.values())).names
    used = sorted({int(i) for m in maps.values() for i in np.unique(m.index)})
    names = tuple(every[i] for i in used)
    position = {old: new for new, old in enumerate(used)}
    frames = []
    for source in references:
        tile, reference = source.tile, source.reference
        inside = reference.polygon_ids >= 0
        region = np.vectorize(position.__getitem__, otypes=[np.int64])(maps[tile.key].index[inside])
        frames.append(pd.DataFrame({"polygon_id": reference.polygon_ids[inside], "region": region}))
    counts = pd.concat(frames).value_counts().reset_index(name="n")
    # Most pixels first; ties go to the lower region index (the rule of polygon_regions).
    counts = counts.sort_values(["polygon_id", "n", "region"], ascending=[True, False, True])
    first = counts.drop_duplicates("polygon_id")
    polygon_region = dict(
        zip(first["polygon_id"].astype(int), first["region"].astype(int), strict=True)
    )
    urls = tuple(store.url(layout.relative(layout.regions_of(t.key))) for t in tiles)
    return RegionPlan(names, polygon_region, urls)
