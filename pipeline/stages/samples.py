"""samples: the reference split by polygon (planned by the driver, see ``sample_plan``), one
extraction unit per chunk holding sample pixels (from the cube, or straight from the imagery on
each sample's own window, or, in a run that keeps no cube, straight from the imagery chunk by
chunk with the cube path's units and digests: the same values), then one unit that assembles the
GeoParquet table; for a learner that
trains on patches (it says so: ``patch_samples``), one more unit cuts them (``patch_samples``
of ``pipeline.stages.patches``)."""

from __future__ import annotations

import io
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import pandas as pd

from pipeline.cube.plan import CubePlan
from pipeline.errors import InputDataError
from pipeline.model import GridSpec, Window
from pipeline.run.context import PlanContext, RunContext
from pipeline.run.executor import StageWork
from pipeline.run.plan_cache import cached_burn
from pipeline.run.stage import StagePlan, stage_digest
from pipeline.run.units import Unit, window_key
from pipeline.samples.extract import (
    CogExtractTask,
    ExtractTask,
    cog_task_of,
    extract_chunk,
    plan_cog_extraction,
    plan_extraction,
)
from pipeline.samples.reference import ReferencePolygons, burn_features
from pipeline.samples.split import TRAIN, VALIDATION
from pipeline.stages.common import cube_identity, tile_prefix
from pipeline.stages.cube import Cubes
from pipeline.stages.discover import Discovered
from pipeline.stages.patches import PatchContext, patch_unit, plan_patches
from pipeline.stages.regions import RegionPlan, plan_regions
from pipeline.stages.sample_plan import SampleSource, cached_sample_pixels, tile_references
from pipeline.storage import RunStore

NAME = "samples"
VERSION = 1

Tasks = list[tuple[str | None, ExtractTask | CogExtractTask]]


def digest(*parts: Any) -> str:
    return stage_digest(NAME, VERSION, *parts)


@dataclass(frozen=True)
class Samples:
    sources: tuple[SampleSource, ...]
    """Where the samples are read: per tile (and per sample window)."""
    pixels: pd.DataFrame
    """Sample pixels in table order; a ``tile`` column in a tiled run (row/col of that tile)."""
    tasks: Tasks
    """Per extraction unit, in unit order: its group (tile, window) and its task."""
    regions: RegionPlan | None
    feature_names: Any
    grid: GridSpec
    """The first tile's grid (the only one of a single-grid run)."""
    crs: Any
    """The CRS of the run period's maps: a tiled run's sample geometries are in it."""
    patches: Any = None
    """The patch samples (a ``PatchPlan``) when the model trains on patches, else None."""

    @property
    def reference(self) -> ReferencePolygons:
        """The reference on the first tile's grid (its table and legend are the same on every
        tile)."""
        return self.sources[0].reference

    @property
    def windowed(self) -> bool:
        """The samples carry their own windows (reference start_field)."""
        return any(s.window is not None for s in self.sources)

    @property
    def tiled(self) -> bool:
        return self.sources[0].tile.key is not None


def part_name(key: str) -> str:
    return f"samples/parts/{key}.npy"


def _pixel_array(values: Sequence[int]) -> np.ndarray:
    """Pixel rows or columns as one array: hashed as bytes, not number by number."""
    return np.asarray(values, dtype=np.int64)


def _sample_part_units(
    tasks: Sequence[tuple[str | None, Any]],
    first_window: Any,
    source: Any,
    table_parts: Any,
) -> tuple[list[Unit], Unit]:
    """One unit per chunk holding sample pixels, keyed by its tile and ``first_window(task)``,
    its digest made of ``source(tile, task)`` (what its values are read from) and its pixels;
    then the unit that assembles the table."""
    parts = []
    for index, (tile, task) in enumerate(tasks):
        key = f"part-{tile_prefix(tile)}{window_key(first_window(task))}"
        parts.append(
            Unit(
                NAME,
                key,
                digest(*source(tile, task), _pixel_array(task.rows), _pixel_array(task.cols)),
                payload=(index, key),
                pixels=len(task.rows),
            )
        )
    table = Unit(NAME, "table", digest([u.digest for u in parts], table_parts))
    return parts, table


def sample_units(
    tasks: list[tuple[str | None, ExtractTask]],
    cube_digests: dict[tuple[str | None, Window], str],
    table_parts: Any,
) -> tuple[list[Unit], Unit]:
    """The samples units of samples read from the cube (``tasks``: per task, its tile): each
    depends on the cube chunk it reads."""
    return _sample_part_units(
        tasks,
        lambda task: task.window,
        lambda tile, task: (cube_digests[(tile, task.window)], task.variables),
        table_parts,
    )


def cog_sample_units(
    tasks: list[tuple[str | None, Any]], cubes: dict[str | None, CubePlan], table_parts: Any
) -> tuple[list[Unit], Unit]:
    """The samples units of samples read straight from the imagery (``CogExtractTask``: an
    extraction run, or samples with their own windows; ``cubes``: the plan of each group)."""
    identities = {key: cube_identity(plan) for key, plan in cubes.items()}
    return _sample_part_units(
        tasks,
        lambda task: task.windows[0],
        lambda tile, task: ("imagery", identities[tile], task.windows),
        table_parts,
    )


@dataclass(frozen=True)
class ExtractContext:
    root: str
    tasks: tuple[Any, ...]
    """ExtractTask (from the cube) or CogExtractTask (from the imagery), by unit index."""


def extract_unit(context: ExtractContext, payload: tuple[int, str]) -> dict[str, Any]:
    from pipeline.samples.extract import extract_from_cogs

    index, key = payload
    task = context.tasks[index]
    values = extract_from_cogs(task) if isinstance(task, CogExtractTask) else extract_chunk(task)
    buffer = io.BytesIO()
    np.save(buffer, np.ascontiguousarray(values, dtype=np.float32), allow_pickle=False)
    RunStore(context.root).write_bytes(part_name(key), buffer.getvalue())
    return {"pixels": int(values.shape[0])}


def read_part(store: RunStore, key: str) -> np.ndarray:
    return np.load(io.BytesIO(store.read_bytes(part_name(key))), allow_pickle=False)


@dataclass(frozen=True)
class TableContext:
    store: RunStore
    samples: Samples
    parts: Sequence[Unit]
    target: str
    """Store-relative name of the samples table."""


def assemble_unit(context: TableContext, _payload: Any) -> dict[str, Any]:
    from concurrent.futures import ThreadPoolExecutor

    from pipeline.samples.extract import samples_table, write_samples

    store, samples = context.store, context.samples
    with ThreadPoolExecutor(max_workers=8) as pool:
        values = list(pool.map(lambda u: read_part(store, u.key), context.parts))
    if not samples.tiled and not samples.windowed:
        tasks = [task for _, task in samples.tasks]
        table = samples_table(tasks, values, samples.pixels, samples.feature_names, samples.grid)
    else:
        table = _grouped_samples_table(samples, values)
    with store.publish(context.target) as path:
        write_samples(table, path)
    return {
        "pixels": len(table),
        "training_pixels": int((table["split"] == TRAIN).sum()),
        "validation_pixels": int((table["split"] == VALIDATION).sum()),
    }


def _grouped_samples_table(samples: Samples, values: list[np.ndarray]) -> Any:
    """The samples of every tile (and window) in one table, in the plan's order, with point
    geometries in the mosaic's CRS."""
    import geopandas as gpd

    from pipeline.samples.extract import samples_table

    frames = []
    for source in samples.sources:
        mine = [i for i, (key, _) in enumerate(samples.tasks) if key == source.group]
        if not mine:
            continue
        pixels = samples.pixels
        if source.tile.key is not None:
            pixels = pixels[pixels["tile"] == source.tile.key]
        if source.window is not None:
            pixels = pixels[pixels["window"] == source.window]
        part = samples_table(
            [samples.tasks[i][1] for i in mine],
            [values[i] for i in mine],
            pixels,
            samples.feature_names,
            source.tile.cube.grid,
        )
        frames.append(part.to_crs(samples.crs))
    table = pd.concat(frames, ignore_index=True)
    keys = [c for c in ("tile", "window") if c in samples.pixels.columns] + ["row", "col"]
    order = samples.pixels[keys].reset_index().rename(columns={"index": "_order"})
    table = table.merge(order, on=keys, how="left")
    table = table.sort_values("_order", kind="stable").drop(columns="_order")
    return gpd.GeoDataFrame(table.reset_index(drop=True), geometry="geometry", crs=samples.crs)


class SamplesStage:
    name = NAME
    version = VERSION
    needs = ("discover", "cube")
    # The cube's kernels, loaded by the cluster warm-up: samples read from the imagery need them.
    worker_imports = ("pipeline.cube.build:load_kernels",)

    def plan(self, context: PlanContext) -> StagePlan:
        config, store, layout = context.config, context.store, context.layout
        found: Discovered = context.outputs("discover")
        cubes: Cubes = context.outputs("cube")
        tiles = cubes.tiles
        references = tile_references(
            config,
            tiles,
            found.windows,
            found.sensors,
            burn=cached_burn(context.cache, burn_features),
        )
        regions = plan_regions(config, tiles, references, store, layout)
        if regions is not None:
            main_keys = {t.key for t in tiles}
            for period in cubes.periods[1:]:
                lacking = [t.key for t in period.tiles if t.key not in main_keys]
                if lacking:
                    raise InputDataError(
                        f"tiles {lacking} have acquisitions in {period.period.label} but none in "
                        "spec.period, so they have no region index",
                        fix="map a spec.period that covers every tile, or narrow spec.area",
                        field="also_map",
                    )
        pixels, identity = cached_sample_pixels(context.cache, config, references, regions)
        # Extraction, and samples with their own windows, read the samples' windows straight
        # from the imagery; the other runs read the cube they build anyway for the map.
        from_imagery = config.task == "extraction" or bool(found.windows)
        tasks: Tasks = []
        cube_tasks: list[tuple[str | None, ExtractTask]] = []  # the digests' form
        for source in references:
            mine = pixels
            if source.tile.key is not None:
                mine = mine[mine["tile"] == source.tile.key]
            if source.window is not None:
                mine = mine[mine["window"] == source.window]
            planned: Sequence[ExtractTask | CogExtractTask]
            if from_imagery:
                planned = plan_cog_extraction(mine, source.cube)
            else:
                tile = source.tile
                chunked = plan_extraction(
                    mine, tile.cube.windows, tile.cube_url, tile.cube.time_series_variables
                )
                cube_tasks.extend((source.group, task) for task in chunked)
                # No cube kept: each chunk's pixels read from the imagery, in the same order.
                kept = cubes.kept
                planned = chunked if kept else [cog_task_of(t, tile.cube) for t in chunked]
            tasks.extend((source.group, task) for task in planned)
        cube = cubes.cube
        table_inputs = (
            identity,
            cube.feature_names,
            cube.grid if not cubes.tiled else tuple(t.cube.grid for t in tiles),
        )
        if from_imagery:
            parts, table = cog_sample_units(
                tasks, {s.group: s.cube for s in references}, table_inputs
            )
        else:
            # The same units and digests whether the cube is kept or not: the values are equal.
            parts, table = sample_units(cube_tasks, cubes.cube_digests, table_inputs)
        patches = plan_patches(context, references, table.digest, from_imagery, regions)
        samples = Samples(
            tuple(references), pixels, tasks, regions, cube.feature_names, cube.grid,
            cubes.periods[0].grid.crs, patches,
        )  # fmt: skip
        last = table if patches is None else patches.unit
        files = {"samples": layout.relative(layout.samples)}
        if patches is not None:
            files["patches"] = patches.path
        return StagePlan(
            NAME,
            [*parts, table] if patches is None else [*parts, table, patches.unit],
            digest=last.digest,
            digests={NAME: last.digest},
            outputs=samples,
            files=files,
        )

    def run(self, context: RunContext) -> None:
        plan = context.stage_plan(NAME)
        samples: Samples = plan.outputs
        units = plan.units if samples.patches is None else plan.units[:-1]
        parts, table = units[:-1], units[-1]
        context.run(
            StageWork(
                NAME,
                parts,
                extract_unit,
                ExtractContext(context.store.root, tuple(task for _, task in samples.tasks)),
                description="sample chunks",
            ),
            read_summaries=False,
        )
        made = context.run(
            StageWork(
                NAME,
                [table],
                assemble_unit,
                TableContext(
                    context.store, samples, parts, context.layout.relative(context.layout.samples)
                ),
                on_cluster=False,
                description="samples table",
            )
        )
        if context.config.task == "extraction":  # the samples table is the product
            context.metrics = dict(made.summaries["table"])
        if samples.patches is not None:
            context.run(
                StageWork(
                    NAME,
                    [samples.patches.unit],
                    patch_unit,
                    PatchContext(context.store, samples.patches, samples.pixels),
                    on_cluster=False,
                    description="patch samples",
                )
            )


STAGE = SamplesStage()
