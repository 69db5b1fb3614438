"""smooth: Bayesian smoothing of the class probabilities (``postprocess.smoothing``) between
predict and mosaic: one unit per predicted chunk of the run's period, read with a halo of
``window_size // 2`` pixels, writing the smoothed labels, confidence and probabilities into a
map store beside the tile's (``<map store>_smoothed.zarr``, the same variables), which the
mosaic turns into ``labels_smoothed.tif``, ``confidence_smoothed.tif`` and
``probability_<code>_smoothed.tif``.

The rule at chunk and tile borders: a chunk's halo is read from the predictions of the whole
mosaic grid, not of its tile alone, so a chunk equals one pass over the whole map:

* tiles on the mosaic's lattice (the same CRS and pixel grid, the usual case) are read through
  ``pipeline.postprocess.blocks.mosaic_reader``: each pixel from the first tile with data
  there, as the mosaic does, so a chunk at a tile seam sees the neighbouring tile's pixels;
* a tile the mosaic resamples (another CRS) is smoothed on its own grid, its halo from its own
  prediction only (its edge is the map's edge);
* a unit writes its tile's own pixels only (where the tile's raw prediction has data), so
  the mosaic's ownership of pixels is unchanged.

A unit's digest is made of the digests of every predicted chunk its halo reads (its own tile's
and its neighbours'), so a resumed run keeps a smoothed chunk until one of those changes.
"""

from __future__ import annotations

import functools
from dataclasses import dataclass
from typing import Any

import numpy as np

from pipeline.grid import aligned_offset
from pipeline.model import Window
from pipeline.run.context import PlanContext, RunContext, ensure_store
from pipeline.run.executor import StageWork
from pipeline.run.stage import StagePlan, stage_digest
from pipeline.run.units import Unit, window_key
from pipeline.stages.common import tile_prefix
from pipeline.stages.cube import Cubes, TilePlan, store_key
from pipeline.stages.predict import Predictions

NAME = "smooth"
VERSION = 1


def digest(*parts: Any) -> str:
    return stage_digest(NAME, VERSION, *parts)


def smoothed_name(map_name: str) -> str:
    """The store-relative name of a tile's smoothed map store (beside its map store)."""
    return f"{map_name.removesuffix('.zarr')}_smoothed.zarr"


@dataclass(frozen=True)
class Smoothed:
    """What the stage planned for the run's period: each tile's smoothed store (tile order) and
    the units, whose digests the mosaic of the smoothed maps depends on. Empty: no smoothing."""

    stores: tuple[str, ...] = ()
    units: tuple[Unit, ...] = ()

    @property
    def on(self) -> bool:
        return bool(self.stores)


@dataclass(frozen=True)
class Placement:
    """A tile of the run's period: its map stores, its grid's shape and its place on the mosaic
    grid (None: resampled into the mosaic, so smoothed on its own grid)."""

    map_url: str
    smoothed_url: str
    shape: tuple[int, int]
    offset: tuple[int, int] | None


def placements(tiles: tuple[TilePlan, ...], store: Any = None) -> list[Placement]:
    """The tiles of a period placed on its mosaic grid (``store``: to name the smoothed stores
    by URL; planning gives none)."""
    from pipeline.grid import mosaic_grid

    grid = mosaic_grid([t.cube.grid for t in tiles])
    out = []
    for tile in tiles:
        offset = (0, 0) if len(tiles) == 1 else aligned_offset(grid, tile.cube.grid)
        name = smoothed_name(tile.map_name)
        url = store.url(name) if store is not None else name
        out.append(Placement(tile.map_url, url, tile.cube.grid.shape, offset))
    return out


def _reach(
    index: int, window: Window, places: list[Placement], halo: int, shape: tuple[int, int]
) -> list[tuple[int, Window]]:
    """The (tile, window on that tile's grid) a chunk's halo reads: on the mosaic grid for a tile
    on its lattice, on the tile's own grid otherwise."""
    from pipeline.postprocess.blocks import grow

    own = places[index]
    if own.offset is None:
        return [(index, grow(window, halo, own.shape))]
    row, col = own.offset
    shifted = Window(window.row_off + row, window.col_off + col, window.height, window.width)
    outer = grow(shifted, halo, shape)
    out = []
    for j, place in enumerate(places):
        if place.offset is None:
            continue
        r0, c0 = max(outer.row_off - place.offset[0], 0), max(outer.col_off - place.offset[1], 0)
        r1 = min(outer.row_off + outer.height - place.offset[0], place.shape[0])
        c1 = min(outer.col_off + outer.width - place.offset[1], place.shape[1])
        if r1 > r0 and c1 > c0:
            out.append((j, Window(r0, c0, r1 - r0, c1 - c0)))
    return out


def smooth_units(
    keys: list[str | None],
    places: list[Placement],
    shape: tuple[int, int],
    predicted: list[Unit],
    chunk_size: int,
    smoothing: Any,
) -> list[Unit]:
    """One unit per predicted chunk (payload: tile index, window) of the tiles ``places`` (unit
    keys ``keys``) on a mosaic grid of ``shape``; its digest covers every chunk it reads."""
    by_chunk: dict[tuple[int, int, int], str] = {}
    for unit in predicted:
        index, w = unit.payload
        by_chunk[(index, w.row_off // chunk_size, w.col_off // chunk_size)] = unit.digest
    units = []
    for unit in predicted:
        index, window = unit.payload
        read: list[str] = []
        for j, part in _reach(index, window, places, smoothing.halo, shape):
            rows = range(
                part.row_off // chunk_size, (part.row_off + part.height - 1) // chunk_size + 1
            )
            cols = range(
                part.col_off // chunk_size, (part.col_off + part.width - 1) // chunk_size + 1
            )
            read.extend(by_chunk[(j, r, c)] for r in rows for c in cols)
        units.append(
            Unit(
                NAME,
                tile_prefix(keys[index]) + window_key(window),
                digest(sorted(read), places[index].offset, window, smoothing),
                payload=(index, window),
                pixels=window.n_pixels,
            )
        )
    return units


@dataclass(frozen=True)
class SmoothContext:
    places: tuple[Placement, ...]
    shape: tuple[int, int]
    """The mosaic grid's (rows, cols)."""
    codes: tuple[int, ...]
    """The classes of the probability variables, in code order."""
    nodata: int
    dtype: str
    smoothing: Any


class _Stacked:
    """The (K, H, W) probability variables of a map store, sliced like one array."""

    def __init__(self, url: str, codes: tuple[int, ...]) -> None:
        import zarr

        from pipeline.predict.blockwise import probability_variable

        group = zarr.open_group(url, mode="r")
        self.arrays: list[Any] = [group[probability_variable(c)] for c in codes]
        self.shape = (len(codes), *self.arrays[0].shape)

    def __getitem__(self, key: Any) -> np.ndarray:
        rows, cols = key[-2:]
        return np.stack([np.asarray(a[rows, cols]) for a in self.arrays])


def smooth_unit(context: SmoothContext, payload: tuple[int, Window]) -> dict[str, Any]:
    """Smooth one chunk (read with its halo across the tiles it touches) into its tile's
    smoothed store."""
    import zarr

    from pipeline.postprocess.blocks import Placed, array_reader, mosaic_reader
    from pipeline.postprocess.smooth import (
        labels_and_confidence,
        percent_to_probability,
        smooth_window,
    )
    from pipeline.postprocess.uncertainty import to_percent
    from pipeline.predict.blockwise import (
        CONFIDENCE_NODATA,
        CONFIDENCE_VARIABLE,
        LABEL_VARIABLE,
        PROBABILITY_NODATA,
        probability_variable,
    )

    index, window = payload
    own = context.places[index]
    if own.offset is None:
        read = array_reader(_Stacked(own.map_url, context.codes))
        shape, where = own.shape, window
    else:
        # the tiles the halo reaches (a unit opens those stores only), in tile order
        places = list(context.places)
        reach = _reach(index, window, places, context.smoothing.halo, context.shape)
        tiles = []
        for j in sorted(j for j, _ in reach):
            offset = places[j].offset
            assert offset is not None  # _reach gives tiles on the lattice only
            tiles.append(Placed(_Stacked(places[j].map_url, context.codes), *offset))
        read = mosaic_reader(tiles, PROBABILITY_NODATA, np.uint8)
        shape = context.shape
        row, col = own.offset
        where = Window(window.row_off + row, window.col_off + col, window.height, window.width)
    probabilities = smooth_window(
        lambda w: percent_to_probability(read(w), PROBABILITY_NODATA),
        shape,
        where,
        context.smoothing,
    )
    labels_array: Any = zarr.open_group(own.map_url, mode="r")[LABEL_VARIABLE]
    raw = np.asarray(labels_array[window.slices])
    labels, confidence = labels_and_confidence(
        probabilities, context.codes, context.nodata, context.dtype
    )
    theirs = raw == context.nodata  # a pixel of another tile, or unmapped: not this tile's
    labels[theirs] = context.nodata
    confidence[theirs] = CONFIDENCE_NODATA
    group = zarr.open_group(own.smoothed_url, mode="r+")
    rows, cols = window.slices
    group[LABEL_VARIABLE][rows, cols] = labels  # type: ignore[index]
    group[CONFIDENCE_VARIABLE][rows, cols] = confidence  # type: ignore[index]
    for code, layer in zip(context.codes, probabilities, strict=True):
        percent = to_percent(layer)
        percent[theirs] = PROBABILITY_NODATA
        group[probability_variable(code)][rows, cols] = percent  # type: ignore[index]
    mapped = ~theirs
    return {
        "smoothed_pixels": int(mapped.sum()),
        "changed_labels": int((labels[mapped] != raw[mapped]).sum()),
    }


class Smooth:
    name = NAME
    version = VERSION
    needs = ("cube", "predict")
    # What its units import on a worker, loaded by the cluster warm-up.
    worker_imports = ("pipeline.postprocess.smooth", "pipeline.predict.blockwise")

    def plan(self, context: PlanContext) -> StagePlan:
        config = context.config
        post = config.postprocess
        if post is None or post.smoothing is None or config.task != "classification":
            return StagePlan(NAME, outputs=Smoothed())
        cubes: Cubes = context.outputs("cube")
        predictions: Predictions = context.outputs("predict")
        period = cubes.periods[0]  # the run's period (further periods: raw maps only)
        units = smooth_units(
            [t.unit_key for t in period.tiles],
            placements(period.tiles),
            period.grid.shape,
            predictions.by_period[None],
            cubes.cube.chunk_size,
            post.smoothing,
        )
        stores = tuple(smoothed_name(t.map_name) for t in period.tiles)
        return StagePlan(NAME, units, outputs=Smoothed(stores, tuple(units)))

    def run(self, context: RunContext) -> None:
        from pipeline.predict.blockwise import create_map_store

        plan = context.stage_plan(NAME)
        if not plan.units:
            return
        config, store = context.config, context.store
        post = config.postprocess
        assert post is not None and post.smoothing is not None  # planned units: it is on
        cubes: Cubes = context.stage_plan("cube").outputs
        encoding = context.results["predict"]["encoding"]
        tiles = cubes.periods[0].tiles
        chunk_size = cubes.cube.chunk_size
        places = placements(tiles, store)
        for tile, place in zip(tiles, places, strict=True):
            grid = tile.cube.grid
            ensure_store(
                store,
                NAME,
                digest("store", grid, chunk_size, encoding),
                smoothed_name(tile.map_name),
                functools.partial(create_map_store, place.smoothed_url, grid, chunk_size, encoding),
                key=store_key(tile),
            )
        context.run(
            StageWork(
                NAME,
                plan.units,
                smooth_unit,
                SmoothContext(
                    tuple(places),
                    cubes.periods[0].grid.shape,
                    tuple(encoding.probability_classes),
                    int(encoding.nodata),
                    str(encoding.dtype),
                    post.smoothing,
                ),
                description="smoothed chunks",
            )
        )


STAGE = Smooth()
