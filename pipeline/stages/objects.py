"""objects: object-based classification beside the pixel map. Segments (computed per chunk with a
halo and stitched, or the user's file), their zonal statistics per cube feature as features, the
reference assigned to segments, a model of the run's kind on them, one label per segment as a
raster (objects/labels.tif) and polygons with their statistics (objects/segments.gpkg), and
accuracy per segment and per pixel beside the pixel map's (objects/report.json).

A tiled run is segmented on the mosaic's grid: chunks of the mosaic's lattice read from the tiles
that own their pixels (``pipeline.objects.mosaic``), so a segment crossing a tile border is
stitched as one crossing a chunk border. No ``objects`` section: no units (the stage adds nothing
to a run's digests).

Units: ``segment-<chunk>`` (computed segments: the chunk with its halo, saved), ``stitch`` (the
ids of every chunk's segments, two chunks in memory at a time), ``zonal-<chunk>`` (the chunk's
ids and per-segment sums; with percentiles asked, its valid pixels' values by segment too),
``model`` (the segments' sums, and the open segments' values for percentiles, streamed chunk by
chunk into table parts, samples, fit, one label per segment), ``maps`` (the label COG and the
polygons, chunk by chunk, a segment written once complete) and ``report``. The driver holds an
index of 24 bytes per segment, the training segments and the segments open across the chunk
being read; never every segment's features or polygon (``pipeline.objects.table``).
"""

from __future__ import annotations

import io
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from pipeline.errors import InputDataError
from pipeline.model import GridSpec, Window
from pipeline.objects.mosaic import TileCube, overlap
from pipeline.objects.outputs import (
    IDS_PART,
    LABELS,
    POLYGONS,
    REPORT,
    SEGMENTS,
    ObjectsContext,
    load_part,
    maps_unit,
    model_unit,
    report_unit,
    segments_part,
    zonal_part,
)
from pipeline.run.context import PlanContext, RunContext
from pipeline.run.executor import StageWork
from pipeline.run.stage import StagePlan, stage_digest
from pipeline.run.units import Unit, window_key
from pipeline.stages.cube import Cubes

NAME = "objects"
VERSION = 1


def digest(*parts: Any) -> str:
    return stage_digest(NAME, VERSION, *parts)


@dataclass(frozen=True)
class ObjectsPlan:
    windows: tuple[Window, ...]
    segment: tuple[Unit, ...]
    stitch: Unit | None
    zonal: tuple[Unit, ...]
    model: Unit
    maps: Unit
    report: Unit
    grid: GridSpec
    kind: str
    """computed, raster or vector."""
    variables: tuple[tuple[str, str], ...]
    """The cube variables segmented (computed segments)."""
    tiles: tuple[TileCube, ...]
    """Each tile's cube and its place in the mosaic (tile order; the grid's one in a single-grid
    run)."""


def _segment_variables(config: Any, cubes: Cubes) -> tuple[tuple[str, str], ...]:
    chosen = config.objects.segmentation.variables
    every = list(cubes.cube.time_series_variables)
    if chosen:
        known = {name for name, _ in every}
        missing = [v for v in chosen if v not in known]
        if missing:
            raise InputDataError(
                f"objects.segmentation.variables {missing} are not cube variables",
                fix=f"choose among {sorted(known)}",
                field="objects.segmentation.variables",
            )
        return tuple(v for v in every if v[0] in chosen)
    ndvi = tuple(v for v in every if v[0].endswith("_ndvi"))
    return ndvi or tuple(every)


def _tile_cubes(cubes: Cubes, grid: GridSpec) -> tuple[TileCube, ...]:
    """Each tile of the run's period as read on the mosaic's lattice (refused when a tile would
    have to be resampled)."""
    from pipeline.grid import aligned_offset

    out = []
    for tile in cubes.tiles:
        offset = aligned_offset(grid, tile.cube.grid)
        if offset is None:
            raise InputDataError(
                f"an objects section was given but tile {tile.key} ({tile.cube.grid.crs}) is not "
                f"on the mosaic's pixel lattice ({grid.crs}, origin {grid.transform[2]}, "
                f"{grid.transform[5]}): segments are computed on one lattice",
                fix="map tiles of one CRS and pixel lattice (area.grid: user with a tile_size, "
                "or one area), or remove the objects section",
                field="objects",
            )
        height, width = tile.cube.grid.height, tile.cube.grid.width
        out.append(TileCube(tile.cube_url, offset[0], offset[1], height, width))
    return tuple(out)


def _window_digests(
    cubes: Cubes, tiles: tuple[TileCube, ...], windows: tuple[Window, ...]
) -> list[str]:
    """What each mosaic chunk reads: its cube chunk's digest in a single-grid run (as before
    tiles were mapped), the digests of every tile chunk it covers in a tiled run."""
    if not cubes.tiled:
        return [cubes.cube_digests[(None, w)] for w in windows]
    placed = [
        (Window(w.row_off + t.row, w.col_off + t.col, w.height, w.width), digest_)
        for tile, t in zip(cubes.tiles, tiles, strict=True)
        for w in tile.cube.windows
        if (digest_ := cubes.cube_digests.get((tile.unit_key, w))) is not None
    ]
    return [digest([d for at, d in placed if overlap(at, w) is not None], w) for w in windows]


class ObjectsStage:
    name = NAME
    version = VERSION
    needs = ("cube", "samples", "train", "mosaic")
    # What its units import on a worker, loaded by the cluster warm-up.
    worker_imports = ("pipeline.objects.segments", "skimage.segmentation")

    def plan(self, context: PlanContext) -> StagePlan:
        config = context.config
        settings = config.objects
        if settings is None:
            return StagePlan(NAME)
        cubes: Cubes = context.outputs("cube")
        samples = context.outputs("samples")
        if config.task != "classification" or samples.windowed:
            raise InputDataError(
                "an objects section was given but the run is not a classification run with "
                "samples on its map",
                fix="remove the objects section, or classify a map (no reference start_field)",
                field="objects",
            )
        grid = cubes.periods[0].grid
        tiles = _tile_cubes(cubes, grid)
        windows = tuple(
            w
            for w in grid.chunks(cubes.cube.chunk_size)
            if any(overlap(t.extent, w) for t in tiles)
        )
        cube_digests = _window_digests(cubes, tiles, windows)
        segmentation = settings.segmentation
        if segmentation.path is not None:
            from pipeline.objects.build import segmentation_kind

            kind = segmentation_kind(segmentation.path, grid)
            stat = Path(segmentation.path).stat()
            source: Any = (segmentation.path, stat.st_size, stat.st_mtime_ns)
            variables: tuple[tuple[str, str], ...] = ()
        else:
            kind, variables = "computed", _segment_variables(config, cubes)
            source = None
        segment: tuple[Unit, ...] = ()
        stitch = None
        if kind == "computed":
            segment = tuple(
                Unit(
                    NAME,
                    f"segment-{window_key(w)}",
                    digest(segmentation, variables, cube_digests, w),
                    payload=w,
                    pixels=w.n_pixels,
                )
                for w in windows
            )
            stitch = Unit(NAME, "stitch", digest([u.digest for u in segment]))
            made = stitch.digest
        else:
            made = digest(segmentation, source)
        # With percentiles asked a zonal part keeps its pixels' values too (a new digest then;
        # the same as before without).
        pixels = ("values",) if _percentiles(settings.statistics) else ()
        zonal = tuple(
            Unit(
                NAME,
                f"zonal-{window_key(w)}",
                digest(made, d, w, *pixels),
                payload=w,
                pixels=w.n_pixels,
            )
            for w, d in zip(windows, cube_digests, strict=True)
        )
        trained = digest(
            [u.digest for u in zonal],
            settings.statistics,
            settings.min_overlap,
            context.input("samples").digest,
            config.model,
            config.sampling.seed,
        )
        model = Unit(NAME, "model", trained)
        maps = Unit(NAME, "maps", digest(trained, "maps", grid))
        pixel_maps = [u.digest for u in context.outputs("mosaic")[0].map_units]
        report = Unit(NAME, "report", digest(maps.digest, pixel_maps))
        units = [*segment, *([stitch] if stitch else []), *zonal, model, maps, report]
        files = {
            "object labels": LABELS,
            "object segments": SEGMENTS,
            "object polygons": POLYGONS,
            "object report": REPORT,
        }
        return StagePlan(
            NAME,
            units,
            outputs=ObjectsPlan(
                windows, segment, stitch, zonal, model, maps, report, grid, kind, variables, tiles
            ),
            files=files,
        )

    def run(self, context: RunContext) -> None:
        plan: ObjectsPlan | None = context.stage_plan(NAME).outputs
        if plan is None:
            return
        config = context.config
        assert config.objects is not None
        cubes: Cubes = context.stage_plan("cube").outputs
        every = tuple(cubes.cube.time_series_variables)
        sizes = dict(zip(every, _features_per_variable(cubes), strict=True))
        shared = ObjectsContext(
            context.store.root,
            plan.tiles,
            every,
            sum(sizes.values()),
            tuple(cubes.cube.feature_names),
            plan.variables,
            sum(sizes[v] for v in plan.variables),
            plan.grid,
            plan.windows,
            plan.kind,
            config.objects,
            config.model,
            config.sampling.seed,
            context.layout.relative(context.layout.samples),
            context.layout.labels_name,
            _offsets(cubes, plan.tiles),
        )
        steps: list[tuple[Any, Any, bool, str]] = []
        if plan.segment:
            steps.append((plan.segment, segment_unit, True, "segmented chunks"))
            steps.append(([plan.stitch], stitch_unit, False, "segments stitched"))
        steps += [
            (plan.zonal, zonal_unit, True, "zonal statistics"),
            ([plan.model], model_unit, False, "object model"),
            ([plan.maps], maps_unit, False, "object maps"),
            ([plan.report], report_unit, False, "object accuracy"),
        ]
        for units, function, on_cluster, description in steps:
            outcome = context.run(
                StageWork(
                    NAME, units, function, shared, on_cluster=on_cluster, description=description
                )
            )
        context.metrics["objects"] = outcome.summaries["report"]


def _features_per_variable(cubes: Cubes) -> list[int]:
    """How many features (dates) each time-series variable has, in cube order."""
    return [len(s.dates) for s in cubes.cube.sensors for _ in s.variables]


def _offsets(
    cubes: Cubes, tiles: tuple[TileCube, ...]
) -> tuple[tuple[str | None, tuple[int, int]], ...]:
    """Each tile's key (the samples' ``tile`` column) and its place in the mosaic."""
    return tuple((t.key, (c.row, c.col)) for t, c in zip(cubes.tiles, tiles, strict=True))


def _save(root: str, name: str, **arrays: Any) -> None:
    from pipeline.storage import RunStore

    buffer = io.BytesIO()
    np.savez(buffer, **arrays)
    with RunStore(root).publish(name) as target:
        target.write_bytes(buffer.getvalue())


def _read(context: ObjectsContext, variables: Any, n_features: int, window: Window) -> np.ndarray:
    from pipeline.objects.mosaic import read_mosaic

    return read_mosaic(context.tiles, variables, n_features, window)


def segment_unit(context: ObjectsContext, window: Window) -> dict[str, Any]:
    from pipeline.objects.segments import SegmentParams, segment_chunk

    s = context.settings.segmentation
    params = SegmentParams(s.method, s.size, s.compactness, s.halo)
    shape = (context.grid.height, context.grid.width)

    def read(w: Window) -> np.ndarray:
        return _read(context, context.segment_variables, context.n_segment_features, w)

    chunk = segment_chunk(read, shape, window, params)
    outer = chunk.outer
    _save(
        context.root,
        segments_part(window),
        labels=chunk.labels,
        anchors=chunk.anchors,
        outer=np.array([outer.row_off, outer.col_off, outer.height, outer.width]),
    )
    return {"segments": int(chunk.labels.max())}


def _chunk(context: ObjectsContext, index: int) -> Any:
    from pipeline.objects.segments import ChunkSegments

    window = context.windows[index]
    data = load_part(context.root, segments_part(window))
    return ChunkSegments(
        window, Window(*(int(v) for v in data["outer"])), data["labels"], data["anchors"]
    )


def stitch_unit(context: ObjectsContext, _payload: Any) -> dict[str, Any]:
    from functools import lru_cache

    from pipeline.objects.segments import neighbours, stitch

    load = lru_cache(maxsize=2)(lambda i: _chunk(context, i))
    ids = stitch(len(context.windows), load, neighbours(context.windows))
    _save(context.root, IDS_PART, **{str(i): v for i, v in enumerate(ids)})
    found = np.concatenate(ids) if ids else np.zeros(0, np.int64)
    return {"segments": len(np.unique(found[found > 0]))}


def _ids(context: ObjectsContext, window: Window) -> np.ndarray:
    if context.kind == "computed":
        from pipeline.objects.segments import core_ids

        index = context.windows.index(window)
        ids = load_part(context.root, IDS_PART, (str(index),))[str(index)]
        return core_ids(_chunk(context, index), ids)
    from pipeline.objects.build import user_ids

    return user_ids(context.settings.segmentation.path, context.kind, context.grid, window)


def _percentiles(statistics: Any) -> bool:
    from pipeline.objects.zonal import percentile_of

    return any(percentile_of(s) is not None for s in statistics)


def zonal_unit(context: ObjectsContext, window: Window) -> dict[str, Any]:
    from pipeline.objects.zonal import zonal_sums, zonal_values

    ids = _ids(context, window)
    stack = _read(context, context.features, context.n_features, window)
    sums = zonal_sums(ids, stack)
    extra = {}
    if _percentiles(context.settings.statistics):
        pixels = zonal_values(ids, stack)
        assert np.array_equal(pixels.ids, sums.ids)
        extra["values"] = pixels.values
    _save(
        context.root,
        zonal_part(window),
        core=ids,
        present=np.unique(ids[ids > 0]),
        ids=sums.ids,
        count=sums.count,
        sums=sums.sums,
        squares=sums.squares,
        **extra,
    )
    return {"segments": int(sums.ids.size)}


STAGE = ObjectsStage()
