"""A whole run: plan (checks, no write), then the stages as units on a dask cluster.

    discover -> cube (chunk units) -> samples (chunk units + table) -> train -> predict
    (chunk units) -> mosaic (COGs) -> validate (report)

``plan_run`` reads only metadata (catalog, reference, the run store's ledger) and fails with a
clear error on bad input before anything is written; it also computes the digest of every unit
(see ``pipeline.run.stages``). ``execute`` runs each stage through the ``Executor``: units
already in the ledger with the same digest are skipped, the others run on the cluster and are
recorded once their output is written. Killing the run at any moment and running it again with
``resume`` finishes it, with the same bytes as an undisturbed run.
"""

from __future__ import annotations

import contextlib
import dataclasses
import functools
import json
import os
import socket
import tempfile
import time
import uuid
import warnings
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pystac
from dask.utils import parse_bytes

from pipeline import __version__
from pipeline.catalog.items import discovery_fingerprint, save_items
from pipeline.catalog.sensors import SensorProfile, sensor_profiles
from pipeline.catalog.static import find_acquisitions
from pipeline.cube.build import check_user_features
from pipeline.cube.plan import CubePlan, plan_cube, plan_tile_cubes
from pipeline.cube.store import create_cube_store
from pipeline.errors import ComputeError, InputDataError, OutputError
from pipeline.grid import mosaic_grid, plan_tiles
from pipeline.manifest import PeriodSpec, RunManifest
from pipeline.model import Acquisition, GridSpec
from pipeline.run import stages as st
from pipeline.run.clusters import ClusterStarter, open_client, worker_capacity
from pipeline.run.estimate import WorkEstimate, check_memory, predict_bytes
from pipeline.run.executor import Executor, StageOutcome, StageWork
from pipeline.run.layout import RunLayout
from pipeline.run.lock import StoreLock, check_free
from pipeline.run.monitor import MemoryMonitor
from pipeline.run.plan_cache import PlanCache, cached_burn, code_digest
from pipeline.run.progress import Progress
from pipeline.run.units import Ledger, Record, Unit, canonical, content_hash
from pipeline.samples.extract import (
    CogExtractTask,
    ExtractTask,
    labelled_pixels,
    plan_cog_extraction,
    plan_extraction,
)
from pipeline.samples.reference import (
    Burn,
    ReferencePolygons,
    burn_features,
    load_reference,
    reference_windows,
    window_name,
)
from pipeline.samples.regions import NO_REGION, RegionMap, check_region_training, load_regions
from pipeline.samples.select import SelectionRule, select_pixels
from pipeline.samples.split import TRAIN, VALIDATION, split_polygons, value_strata
from pipeline.stages import stage_names
from pipeline.storage import RunStore, check_writable
from pipeline.warnings import DataQualityWarning, SitsflowWarning, category_named


@dataclass(frozen=True)
class TilePlan:
    """One output tile of the run: its cube plan and where its cube and map stores are."""

    key: str | None
    """The tile id in unit keys and store names; None in a single-grid run."""
    cube: CubePlan
    cube_url: str
    map_url: str
    period: str | None = None
    """The further period (spec.also_map) this tile's cube and map are of; None: spec.period."""
    cube_name: str = ""
    map_name: str = ""
    """Store-relative names of the cube and map stores."""

    @property
    def unit_key(self) -> str | None:
        """The tile's prefix in unit keys: the period and the tile id, when there are any."""
        parts = [p for p in (self.period, self.key) if p is not None]
        return "-".join(parts) if parts else None


@dataclass(frozen=True)
class SampleSource:
    """Where the samples of one tile (and one window) are read: the reference burnt for them
    and the cube plan of their dates (the tile's cube, or their window's own date grid)."""

    tile: TilePlan
    window: str | None
    reference: ReferencePolygons
    cube: CubePlan

    @property
    def group(self) -> str | None:
        """The prefix of the samples' unit keys."""
        parts = [p for p in (self.tile.key, self.window) if p is not None]
        return "-".join(parts) if parts else None


@dataclass(frozen=True)
class PeriodMaps:
    """One mapped period: its tiles, the grid of its maps, and its mosaic and catalog units."""

    period: PeriodSpec
    name: str | None
    """None for spec.period, whose maps are the run's main outputs."""
    layout: RunLayout
    tiles: tuple[TilePlan, ...]
    mosaic: GridSpec
    map_units: tuple[Unit, ...]
    catalog: Unit


@dataclass(frozen=True)
class RunPlan:
    manifest: RunManifest
    store: RunStore
    layout: RunLayout
    """Names relative to the run store (``layout.relative`` turns them into store names)."""
    maps: tuple[PeriodMaps, ...]
    """Every mapped period: spec.period first (the run's main maps), then spec.also_map."""
    sources: tuple[SampleSource, ...]
    """Where the samples are read: per tile (and per sample window)."""
    items: dict[str, tuple[list[pystac.Item], str]]
    """Per sensor profile: the items used and their discovery fingerprint."""
    reference: ReferencePolygons
    """The reference on the first tile's grid (its table and legend are the same on every tile)."""
    pixels: pd.DataFrame
    """Sample pixels in table order; a ``tile`` column in a tiled run (row/col of that tile)."""
    extract_tasks: list[tuple[str | None, ExtractTask | CogExtractTask]]
    units: dict[str, list[Unit]]
    digests: dict[str, str]
    work: WorkEstimate
    regions: RegionPlan | None = None
    cache: PlanCache | None = None
    """What planning computed afresh, written to the store by ``execute`` (see plan_cache)."""

    @property
    def tiles(self) -> tuple[TilePlan, ...]:
        """The tiles of spec.period (samples, regions and validation are on these)."""
        return self.maps[0].tiles

    @property
    def mosaic(self) -> GridSpec:
        """The grid of the final maps: the only tile's grid, or the mosaic of every tile."""
        return self.maps[0].mosaic

    @property
    def map_tiles(self) -> tuple[TilePlan, ...]:
        """The tiles of every mapped period, in unit payload order."""
        return tuple(t for m in self.maps for t in m.tiles)

    @property
    def windowed(self) -> bool:
        """The samples carry their own windows (spec.reference.start_field)."""
        return any(s.window is not None for s in self.sources)

    @property
    def cube(self) -> CubePlan:
        """The first tile's cube plan (every tile has the same sensors, dates and features)."""
        return self.tiles[0].cube

    @property
    def tiled(self) -> bool:
        return self.tiles[0].key is not None

    @property
    def estimate(self) -> dict[str, Any]:
        return {**self.work.as_dict(), "grid": _grid_text(self)}


@dataclass
class RunResult:
    layout: RunLayout
    store: RunStore
    metrics: dict[str, Any]
    stage_seconds: dict[str, float] = field(default_factory=dict)
    dashboard: str | None = None
    outcomes: dict[str, StageOutcome] = field(default_factory=dict)
    summary: dict[str, Any] = field(default_factory=dict)


def _grid_text(plan: RunPlan) -> str:
    grid = plan.mosaic
    text = f"{grid.width} x {grid.height} px, {grid.crs}"
    if plan.tiled:
        shown = ", ".join(t.key or "" for t in plan.tiles[:6])
        more = ", ..." if len(plan.tiles) > 6 else ""
        text += f" (mosaic of {len(plan.tiles)} tiles: {shown}{more})"
    return text


# --- planning ------------------------------------------------------------------------------------


def _check_store_state(
    store: RunStore, manifest: RunManifest, resume: bool, *, check_lock: bool = True
) -> None:
    if check_lock:
        check_free(store, remote_too=False)  # another host's lock may be a dead driver's
    ledger = Ledger(store)
    if ledger.is_empty():
        return
    previous = None
    with contextlib.suppress(FileNotFoundError, ValueError, KeyError):
        previous = json.loads(store.read_text("state/manifest.json"))["metadata"]["name"]
    if previous is not None and previous != manifest.name:
        raise OutputError(
            f"run store {store.root!r} holds the work of run {previous!r}, not {manifest.name!r}",
            fix="choose another outputs.store (or --store) for this run, or use the run name "
            f"{previous!r} to continue that run",
            field="spec.outputs.store",
        )
    if not resume:
        raise OutputError(
            f"run store {store.root!r} already holds work of run {manifest.name!r}",
            fix="add --resume to continue it (finished units whose inputs did not change are "
            "kept, the others run again), or choose another outputs.store (or --store)",
            field="spec.outputs.store",
        )


def _span(spec: Any, windows: Sequence[tuple[Any, Any]]) -> tuple[Any, Any]:
    """The dates discovery covers: every mapped period and every sample window."""
    periods = [(spec.period.start, spec.period.end)]
    periods += [(p.start, p.end) for p in spec.also_map]
    periods += list(windows)
    return min(a for a, _ in periods), max(b for _, b in periods)


def _within(acquisitions: Sequence[Acquisition], start: Any, end: Any) -> list[Acquisition]:
    """The acquisitions dated start .. end (inclusive), as discovery of that period finds."""
    return [a for a in acquisitions if start <= a.datetime.date() <= end]


def _discover(
    manifest: RunManifest, store: RunStore, layout: RunLayout, span: tuple[Any, Any]
) -> tuple[list[tuple[SensorProfile, list[Acquisition]]], dict[str, tuple[list[pystac.Item], str]]]:
    spec = manifest.spec
    start, end = span
    sensors: list[tuple[SensorProfile, list[Acquisition]]] = []
    items: dict[str, tuple[list[pystac.Item], str]] = {}
    with tempfile.TemporaryDirectory(prefix="sitsflow-items-") as scratch:
        for i, sensor_spec in enumerate(spec.sensors):
            for profile in sensor_profiles(sensor_spec):
                saved = _saved_items(store, layout, profile.name, Path(scratch))
                acquisitions, raw = find_acquisitions(
                    sensor_spec.catalog,
                    profile,
                    start,
                    end,
                    field=f"spec.sensors[{i}]",
                    saved=saved,
                )
                sensors.append((profile, acquisitions))
                fingerprint = discovery_fingerprint(sensor_spec.catalog, start, end)
                items[profile.name] = (raw, fingerprint)
    return sensors, items


def _saved_items(store: RunStore, layout: RunLayout, name: str, scratch: Path) -> Path | None:
    """The item list a previous session saved (a local copy for remote stores), if any."""
    relative = layout.relative(layout.items_of(name))
    if not store.exists(relative):
        return None
    if not store.remote:
        return store.local_path(relative)
    local = scratch / f"{name}.json"
    store.download(relative, local)
    return local


def _sample_pixels(
    manifest: RunManifest,
    references: Sequence[SampleSource],
    regions: RegionPlan | None = None,
) -> pd.DataFrame:
    """The split by polygon and the training selection: every pixel the samples table holds.

    The split is drawn once for the whole run (a polygon on two tiles stays on one side), the
    selection once over every tile's pixels, and the table is in the order of the ground: pixel
    centres north to south, then west to east (a single grid's row and column order).
    """
    sampling = manifest.spec.sampling
    table = references[0].reference.table
    regression = references[0].reference.is_regression
    present: set[int] = set()
    for source in references:
        present.update(source.reference.present_ids().tolist())
    chosen = table[table["polygon_id"].isin(present)]
    ids = chosen["polygon_id"].astype(int)
    if regression:  # stratified by value quantile bins, as sample_runs does
        labels = value_strata(dict(zip(ids, chosen["value"].astype(float), strict=True)))
    else:
        labels = dict(zip(ids, chosen["label"].astype(int), strict=True))
    groups = dict(zip(ids, chosen["group"], strict=True))
    # One split and one selection per run (seeds seed, seed + 1, ...): run 0 maps, every run is
    # scored on its own validation polygons.
    by_region = regions.polygon_region if regions is not None else None
    if "fixed_split" in chosen.columns:  # the reference says each feature's side
        fixed = dict(zip(ids, chosen["fixed_split"].astype(str), strict=True))
        splits = [fixed] * sampling.runs
    else:
        splits = [
            split_polygons(
                labels,
                sampling.validation_fraction,
                sampling.seed + run,
                strata=by_region,
                groups=groups,
            )
            for run in range(sampling.runs)
        ]
    frames = []
    for source in references:
        pixels = labelled_pixels(source.reference, splits[0], by_region)
        if source.window is not None:
            pixels.insert(0, "window", source.window)
        if source.tile.key is not None:
            pixels.insert(0, "tile", source.tile.key)
        frames.append(pixels)
    pixels = frames[0] if len(frames) == 1 else pd.concat(frames, ignore_index=True)
    pixels = pixels.reset_index(drop=True)
    kept = np.zeros(len(pixels), dtype=bool)
    rule = SelectionRule.from_spec(sampling)
    for run, split in enumerate(splits):
        side = pixels["polygon_id"].map(split).to_numpy()
        training = select_pixels(
            pixels[side == TRAIN],
            rule,
            sampling.seed + run,
            label_column=None if regression else "label",
            by=["region"] if regions is not None else [],
        )
        if regions is not None:
            every_region = RegionMap(regions.names, np.arange(len(regions.names))[None, :])
            check_region_training(training, every_region, classification=not regression)
        column = np.where(side == VALIDATION, VALIDATION, "").astype(object)
        column[training.index.to_numpy()] = TRAIN
        pixels[st.split_column(run)] = column
        kept |= column != ""
    both = pixels[kept]
    windowed = "window" in both.columns
    if references[0].tile.key is None:
        order = ["window", "row", "col"] if windowed else ["row", "col"]
        return both.sort_values(order, kind="stable").reset_index(drop=True)
    grounded = _in_ground_order(both, {s.tile.key: s.tile.cube.grid for s in references})
    if windowed:
        grounded = grounded.sort_values("window", kind="stable").reset_index(drop=True)
    return grounded


_PIXEL_COLUMNS = ["row", "col", "polygon_id", "label", "value", "group", "region", "split"]


def _cached_sample_pixels(
    cache: PlanCache,
    manifest: RunManifest,
    references: Sequence[SampleSource],
    regions: RegionPlan | None,
) -> tuple[pd.DataFrame, Any]:
    """``_sample_pixels`` kept in the plan cache, with the canonical form of the columns
    that make the samples' digest (hashing 10^6 rows is itself a planning cost)."""
    spec = manifest.spec
    name = "pixels-" + content_hash(
        code_digest(),
        spec.task,
        spec.sampling,
        [
            (s.tile.key, s.window, s.tile.cube.grid, s.reference.target, s.reference.polygon_ids)
            for s in references
        ],
        references[0].reference.table,
        None if regions is None else (regions.names, regions.polygon_region),
    )
    kept = cache.frame(name)
    if kept is not None:
        pixels, extra = kept
        for said in extra["warnings"]:  # what drawing them warned of, said again
            warnings.warn(said["message"], category_named(said["category"]), stacklevel=3)
        return pixels, extra["identity"]
    with warnings.catch_warnings(record=True) as caught:  # "error" filters still raise
        pixels = _sample_pixels(manifest, references, regions)
    said = [  # sitsflow's own warnings (the others are the libraries', said once)
        {"category": w.category.__name__, "message": str(w.message)}
        for w in caught
        if issubclass(w.category, SitsflowWarning)
    ]
    for warning in caught:
        warnings.warn_explicit(warning.message, warning.category, warning.filename, warning.lineno)
    columns = ["tile", "window", *_PIXEL_COLUMNS]
    columns += [st.split_column(r) for r in range(1, spec.sampling.runs)]
    identity = canonical(st.frame_for_digest(pixels, columns))
    cache.put_frame(name, pixels, {"identity": identity, "warnings": said})
    return pixels, identity


@dataclass(frozen=True)
class RegionPlan:
    """The run's regions: those covering a pixel of some tile, each with its own model."""

    names: tuple[str, ...]
    polygon_region: dict[int, int] = field(hash=False)
    """Reference feature -> index in ``names``: the region of most of its pixels (all tiles)."""
    urls: tuple[str, ...]
    """Per tile, where its region index (Zarr) is written for prediction."""


def _region_map(spec: Any, grid: GridSpec, names: Sequence[str]) -> RegionMap:
    """The regions burnt onto ``grid``, indexed in ``names`` (the run's regions)."""
    loaded = load_regions(spec.reference.regions, grid)
    position = {name: i for i, name in enumerate(names)}
    remap = np.array([position.get(n, NO_REGION) for n in loaded.names], dtype=np.int16)
    return RegionMap(tuple(names), remap[loaded.index], loaded.filled_pixels)


def _plan_regions(
    spec: Any,
    tiles: tuple[TilePlan, ...],
    references: Sequence[SampleSource],
    store: RunStore,
    layout: RunLayout,
) -> RegionPlan | None:
    if spec.reference.regions is None:
        return None
    maps = {t.key: load_regions(spec.reference.regions, t.cube.grid) for t in tiles}
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


def _in_ground_order(pixels: pd.DataFrame, grids: dict[str | None, GridSpec]) -> pd.DataFrame:
    """``pixels`` (with a tile column) sorted by pixel centre: y descending, x, then tile."""
    x = np.empty(len(pixels))
    y = np.empty(len(pixels))
    tiles = pixels["tile"].to_numpy()
    for key, grid in grids.items():
        here = tiles == key
        a, _, c, _, e, f = grid.transform
        x[here] = c + a * (pixels["col"].to_numpy()[here] + 0.5)
        y[here] = f + e * (pixels["row"].to_numpy()[here] + 0.5)
    order = np.lexsort((tiles.astype(str), x, -y))
    return pixels.iloc[order].reset_index(drop=True)


def _plan_tiles(
    manifest: RunManifest,
    sensors: list[tuple[SensorProfile, list[Acquisition]]],
    store: RunStore,
    layout: RunLayout,
    period: PeriodSpec,
    *,
    seasonal: bool,
    field: str = "spec.period",
) -> tuple[TilePlan, ...]:
    """A cube plan per output tile of ``period`` (the period of ``layout``); a single-grid run
    has one tile without a key."""
    spec = manifest.spec
    tiles = plan_tiles(spec.area, [a for _, acqs in sensors for a in acqs])
    mine = [(p, _within(acqs, period.start, period.end)) for p, acqs in sensors]
    common: dict[str, Any] = {
        "start": period.start,
        "end": period.end,
        "indices": spec.features.indices,
        "chunk_size": spec.compute.chunk_size,
        "user_functions": spec.features.user_functions,
        "season_names": seasonal,
        "encoding": spec.outputs.cube_encoding,
    }
    cubes: list[tuple[str | None, CubePlan]]
    if len(tiles) == 1:
        empty = [p.name for p, acqs in mine if not acqs]
        if empty:
            raise InputDataError(
                f"sensor(s) {empty} have no acquisition in the period {period.start} .. "
                f"{period.end}",
                fix="check the catalog's dates against this period, or change the period",
                field=field,
            )
        cubes = [(None, plan_cube(tiles.tiles[0].grid, mine, **common))]
    else:
        planned = plan_tile_cubes(tiles.tiles, mine, **common)
        cubes = []
        for cube in planned:
            assert cube.tile is not None
            if not any(s.acquisitions for s in cube.sensors):
                warnings.warn(
                    f"tile {cube.tile.id} has no acquisition of any sensor in the period; it is "
                    "left out of the map",
                    DataQualityWarning,
                    stacklevel=3,
                )
                continue
            cubes.append((cube.tile.id, cube))
        if not cubes:
            raise InputDataError(
                f"none of the {len(tiles)} tiles of spec.area has an acquisition in the period "
                f"{period.start} .. {period.end}",
                fix="check spec.area against the catalog's coverage and the period",
                field="spec.area" if field == "spec.period" else field,
            )
    return tuple(
        TilePlan(
            key,
            cube,
            store.url(layout.relative(layout.cube_of(key))),
            store.url(layout.relative(layout.map_store_of(key))),
            layout.period,
            layout.relative(layout.cube_of(key)),
            layout.relative(layout.map_store_of(key)),
        )
        for key, cube in cubes
    )


def _check_same_dates(cube: CubePlan, season: CubePlan, what: str, field: str) -> None:
    """One model reads every period: each must give as many dates as spec.period per sensor."""
    for mine, theirs in zip(cube.sensors, season.sensors, strict=True):
        if len(mine.dates) != len(theirs.dates):
            length = (theirs.dates[-1] - theirs.dates[0]).days + theirs.profile.date_step_days
            raise InputDataError(
                f"{what} gives {len(mine.dates)} dates of sensor {mine.profile.name!r} every "
                f"{mine.profile.date_step_days} days, but spec.period gives {len(theirs.dates)}; "
                "one model reads the same features (aligned by position in the season) in "
                "every period",
                fix=f"make it as long as spec.period (about {length} days)",
                field=field,
            )


def _window_cube(
    manifest: RunManifest,
    tile: TilePlan,
    sensors: list[tuple[SensorProfile, list[Acquisition]]],
    start: Any,
    end: Any,
) -> CubePlan:
    """The cube plan of samples observed start .. end on ``tile``: the tile's grid, the
    window's own acquisitions and date grid (read from the imagery, never stored)."""
    from pipeline.grid import acquisitions_over

    spec = manifest.spec
    chosen = []
    for profile, acquisitions in sensors:
        dated = _within(acquisitions, start, end)
        if tile.cube.tile is not None:
            dated = acquisitions_over(tile.cube.tile, dated)
        chosen.append((profile, dated))
    return plan_cube(
        tile.cube.grid,
        chosen,
        start,
        end,
        spec.features.indices,
        spec.compute.chunk_size,
        user_functions=spec.features.user_functions,
        tile=tile.cube.tile,
        tiles=tile.cube.tiles,
        season_names=True,
        encoding=spec.outputs.cube_encoding,
    )


def _tile_references(
    manifest: RunManifest,
    tiles: tuple[TilePlan, ...],
    windows: Sequence[tuple[Any, Any]],
    sensors: list[tuple[SensorProfile, list[Acquisition]]],
    burn: Burn | None = None,
) -> list[SampleSource]:
    """The reference burnt onto each tile's grid (once per sample window, with windows), on
    the pixels the tile owns only, with the cube plan the samples are read on."""
    spec = manifest.spec
    season = spec.period
    if not windows and tiles[0].key is None:
        tile = tiles[0]
        reference = load_reference(spec.reference, tile.cube.grid, burn=burn)
        return [SampleSource(tile, None, reference, tile.cube)]
    out = []
    first_error: InputDataError | None = None
    for tile in tiles:
        for start, end in windows or [(None, None)]:
            name = None if start is None else window_name(start, end)
            try:
                reference = load_reference(
                    spec.reference, tile.cube.grid, season=season, window=name, burn=burn
                )
            except InputDataError as error:  # no polygon on this tile: other tiles may have some
                first_error = first_error or error
                continue
            if name is not None and not reference.present_ids().size:
                continue
            if tile.key is not None:
                ids = reference.polygon_ids.copy()
                owned = np.zeros(ids.shape, dtype=bool)
                for window in tile.cube.windows:
                    owned[window.slices] = tile.cube.owned(window)
                ids[~owned] = -1
                reference = dataclasses.replace(reference, polygon_ids=ids)
            cube = tile.cube
            if name is not None:
                cube = _window_cube(manifest, tile, sensors, start, end)
                _check_same_dates(
                    cube,
                    tile.cube,
                    f"the sample window {start} .. {end}",
                    "spec.reference.end_field" if spec.reference.end_field else "spec.period",
                )
            out.append(SampleSource(tile, name, reference, cube))
    if not any(s.reference.present_ids().size for s in out):
        raise first_error or InputDataError(
            "no reference feature covers a pixel owned by a tile of spec.area",
            fix="check that the reference data and the tiles cover the same area",
            field="spec.reference.path",
        )
    return out


def plan_run(
    manifest: RunManifest,
    *,
    resume: bool = False,
    on_work_ahead: Callable[[list[str]], None] | None = None,
    check_lock: bool = True,
) -> RunPlan:
    """Check every input and build the plan; reads metadata only and writes nothing.

    ``on_work_ahead(stages)`` is called once the units and their digests are known, with the
    stages that have units left to run, before the slowest checks: a caller starts its cluster
    there, so that it comes up while planning ends. ``check_lock=False`` plans a store another
    driver is working in (to report on it).
    """
    spec = manifest.spec
    outputs = spec.outputs
    store = RunStore(outputs.store)
    layout = RunLayout(Path(), outputs.labels, outputs.confidence, outputs.report, outputs.values)
    check_writable(outputs.store)
    _check_store_state(store, manifest, resume, check_lock=check_lock)
    windows = reference_windows(spec.reference, spec.period)
    # Samples of several seasons, or maps of several periods: one model reads the same
    # features everywhere, so they are named by position in the season, not by date.
    seasonal = bool(windows or spec.also_map)
    span = _span(spec, windows)
    sensors, items = _discover(manifest, store, layout, span)
    tiles = _plan_tiles(manifest, sensors, store, layout, spec.period, seasonal=seasonal)
    cube = tiles[0].cube
    check_user_features(cube)
    further: list[tuple[PeriodSpec, RunLayout, tuple[TilePlan, ...]]] = []
    for i, period in enumerate(spec.also_map):
        where = f"spec.also_map[{i}]"
        period_layout = layout.for_period(period.label)
        planned_tiles = _plan_tiles(
            manifest, sensors, store, period_layout, period, seasonal=True, field=where
        )
        for tile in planned_tiles:
            _check_same_dates(tile.cube, cube, f"{where} ({period.start} .. {period.end})", where)
        further.append((period, period_layout, planned_tiles))
    cache = PlanCache(store)
    references = _tile_references(
        manifest, tiles, windows, sensors, burn=cached_burn(cache, burn_features)
    )
    regions = _plan_regions(spec, tiles, references, store, layout)
    if regions is not None:
        main_keys = {t.key for t in tiles}
        for period, _, planned_tiles in further:
            lacking = [t.key for t in planned_tiles if t.key not in main_keys]
            if lacking:
                raise InputDataError(
                    f"tiles {lacking} have acquisitions in {period.label} but none in "
                    "spec.period, so they have no region index",
                    fix="map a spec.period that covers every tile, or narrow spec.area",
                    field="spec.also_map",
                )
    pixels, pixels_identity = _cached_sample_pixels(cache, manifest, references, regions)
    # Extraction, and samples with their own windows, read the samples' windows straight from
    # the imagery; the other runs read the cube they build anyway for the map.
    extraction = spec.task == "extraction"
    windowed = bool(windows)
    tasks: list[tuple[str | None, ExtractTask | CogExtractTask]] = []
    for source in references:
        mine = pixels
        if source.tile.key is not None:
            mine = mine[mine["tile"] == source.tile.key]
        if source.window is not None:
            mine = mine[mine["window"] == source.window]
        planned: Sequence[ExtractTask | CogExtractTask]
        if extraction or windowed:
            planned = plan_cog_extraction(mine, source.cube)
        else:
            tile = source.tile
            planned = plan_extraction(
                mine, tile.cube.windows, tile.cube_url, tile.cube.time_series_variables
            )
        tasks.extend((source.group, task) for task in planned)

    digests: dict[str, str] = {}
    digests["discover"] = st.digest("discover", [(p, st.unsigned(a)) for p, a in sensors], span)
    cube_units: list[Unit] = []
    by_window: dict[tuple[str | None, Any], str] = {}
    map_tiles = [*tiles, *(t for _, _, planned_tiles in further for t in planned_tiles)]
    for index, tile in enumerate(map_tiles):
        key = tile.unit_key
        name = "cube_store" if key is None else f"cube_store:{key}"
        digests[name] = st.digest("cube", "store", st.cube_identity(tile.cube))
        units_of_tile = st.cube_units(tile.cube, digests[name], tile=key, index=index)
        cube_units.extend(units_of_tile)
        by_window.update({(key, u.payload[1]): u.digest for u in units_of_tile})
    table_inputs = (
        pixels_identity,
        cube.feature_names,
        cube.grid if tiles[0].key is None else tuple(t.cube.grid for t in tiles),
    )
    if extraction or windowed:
        parts, table = st.cog_sample_units(
            tasks, {s.group: s.cube for s in references}, table_inputs
        )
    else:
        parts, table = st.sample_units(tasks, by_window, table_inputs)  # type: ignore[arg-type]
    digests["samples"] = table.digest
    train = Unit(
        "train",
        "model",
        st.digest(
            "train",
            table.digest,
            spec.model,
            spec.task,
            spec.sampling.seed,
            spec.sampling.min_pixels_per_class,
        ),
    )
    region_units: list[Unit] = []
    if regions is not None:
        region_units = [
            Unit(
                "train",
                f"model-{name}",
                st.digest("train", train.digest, "region", name),
                payload=(0, index),
            )
            for index, name in enumerate(regions.names)
        ]
        train = Unit(  # the digest the maps depend on: every region's model, the regions
            "train",
            "model",
            st.digest("train", [u.digest for u in region_units], spec.reference.regions),
        )
    digests["train"] = train.digest
    other_runs = [
        Unit(
            "train",
            f"model-run{run}",
            st.digest(
                "train",
                table.digest,
                spec.model,
                spec.task,
                spec.sampling.seed + run,
                spec.sampling.min_pixels_per_class,
            ),
            payload=run,
        )
        for run in range(1, spec.sampling.runs)
    ]
    if regions is not None:  # a model per region in every run
        other_runs = [
            Unit(
                "train",
                f"model-{name}-run{u.payload}",
                st.digest("train", u.digest, "region", name),
                payload=(u.payload, index),
            )
            for u in other_runs
            for index, name in enumerate(regions.names)
        ]
    predict = []
    predict_of: dict[str | None, list[Unit]] = {}
    for index, tile in enumerate(map_tiles):
        units_of_tile = st.predict_units(
            tile.cube.windows, train.digest, by_window, tile=tile.unit_key, index=index
        )
        predict.extend(units_of_tile)
        predict_of.setdefault(tile.period, []).extend(units_of_tile)
    probability_classes = _probability_classes(manifest, pixels)
    legend = references[0].reference.legend
    maps = []
    for period, period_layout, planned_tiles in [(spec.period, layout, tiles), *further]:
        period_name = period_layout.period
        grid = mosaic_grid([t.cube.grid for t in planned_tiles])
        files = _map_files(period_layout, spec.task, probability_classes)
        prefix = "" if period_name is None else f"{period_name}-"
        map_units = st.mosaic_units(
            files, [u.digest for u in predict_of[period_name]], grid, prefix=prefix
        )
        catalog = Unit(
            "mosaic",
            f"{prefix}catalog",
            st.digest(
                "mosaic",
                "catalog",
                [u.digest for u in map_units],
                manifest.name,
                period,
                legend,
            ),
        )
        maps.append(
            PeriodMaps(
                period, period_name, period_layout, planned_tiles, grid, tuple(map_units), catalog
            )
        )
    mosaic = list(maps[0].map_units)
    validate = Unit(
        "validate",
        "report",
        st.digest(
            "validate",
            [u.digest for u in mosaic],
            table.digest,
            layout.report_name,
            *([u.digest for u in other_runs] if other_runs else []),
        ),
    )
    units = {
        "discover": [Unit("discover", "items", digests["discover"])],
        "cube": cube_units,
        "samples": [*parts, table],
        "train": [*region_units, *other_runs] if region_units else [train, *other_runs],
        "predict": predict,
        "mosaic": [u for m in maps for u in (*m.map_units, m.catalog)],
        "validate": [validate],
    }
    if extraction:  # the samples table is the product
        units.update(cube=[], train=[], predict=[], mosaic=[], validate=[])
    work = WorkEstimate(
        tiles=len(map_tiles),
        chunks=sum(len(t.cube.windows) for t in map_tiles),
        pixels=sum(t.cube.grid.width * t.cube.grid.height for t in map_tiles),
        acquisitions=sum(len(s.acquisitions) for t in map_tiles for s in t.cube.sensors),
        features=len(cube.feature_names),
        chunk_size=cube.chunk_size,
        chunk_bytes=max(t.cube.bytes_per_chunk() for t in map_tiles),
        predict_bytes=predict_bytes(len(cube.feature_names), cube.chunk_size),
        units={k: len(v) for k, v in units.items()},
    )
    if spec.compute.cluster != "address":  # an existing scheduler's workers are checked live
        check_memory(
            work, int(parse_bytes(spec.compute.memory_limit)), spec.compute.threads_per_worker
        )
    if on_work_ahead is not None:
        ledger = Ledger(store)
        ahead = [stage for stage, todo in units.items() if ledger.split(todo)[1]]
        if ahead:
            on_work_ahead(ahead)
    from pipeline.learn import check_model_spec  # heavy (estimators, torch): once work is known

    if not extraction:
        check_model_spec(spec.model, spec.task, cube.feature_names)  # type: ignore[arg-type]
    return RunPlan(
        manifest,
        store,
        layout,
        tuple(maps),
        tuple(references),
        items,
        references[0].reference,
        pixels,
        tasks,
        units,
        digests,
        work,
        regions,
        cache,
    )


def _map_files(
    layout: RunLayout, task: str, probability_classes: Sequence[int] = ()
) -> list[st.MapFile]:
    if task == "regression":
        return [st.MapFile("values", layout.values_name)]
    folder = Path(layout.labels_name).parent
    return [
        st.MapFile("labels", layout.labels_name),
        st.MapFile("confidence", layout.confidence_name),
        *(
            st.MapFile(f"probability_{code}", (folder / f"probability_{code}.tif").as_posix())
            for code in probability_classes
        ),
    ]


def _probability_classes(manifest: RunManifest, pixels: pd.DataFrame) -> tuple[int, ...]:
    """The classes that get a probability map: those of the training pixels (a class the model
    leaves out, for too few pixels, gets probability 0 everywhere)."""
    spec = manifest.spec
    if spec.task != "classification" or not spec.outputs.probabilities:
        return ()
    return tuple(sorted(int(c) for c in pixels.loc[pixels["split"] == TRAIN, "label"].unique()))


# --- status --------------------------------------------------------------------------------------


@dataclass(frozen=True)
class StageStatus:
    stage: str
    total: int
    done: int

    @property
    def left(self) -> int:
        return self.total - self.done


def run_status(plan: RunPlan) -> list[StageStatus]:
    """Per stage: units planned and units finished with their current digest."""
    ledger = Ledger(plan.store)
    out = []
    for stage in stage_names():
        units = plan.units[stage]
        done, _ = ledger.split(units)
        out.append(StageStatus(stage, len(units), len(done)))
    return out


def sessions(store: RunStore) -> list[dict[str, Any]]:
    """The run's sessions (one per `sitsflow run`), oldest first."""
    out = []
    for name in store.list_names("state/sessions"):
        with contextlib.suppress(ValueError, FileNotFoundError):
            out.append(json.loads(store.read_text(f"state/sessions/{name}")))
    return out


# --- execution -----------------------------------------------------------------------------------


@contextlib.contextmanager
def _stage(name: str, timings: dict[str, float], progress: Progress) -> Iterator[None]:
    started = time.perf_counter()
    progress.stage_started(name)
    yield
    timings[name] = time.perf_counter() - started
    progress.stage_finished(name, timings[name])


def _new_session() -> str:
    return f"{datetime.now(UTC):%Y%m%dT%H%M%SZ}-{uuid.uuid4().hex[:6]}"


class _Session:
    """The session's record in ``state/sessions/``: who runs, where the dashboard is, the end."""

    def __init__(self, plan: RunPlan, session: str) -> None:
        self.store = plan.store
        self.name = f"state/sessions/{session}.json"
        self.data: dict[str, Any] = {
            "session": session,
            "run": plan.manifest.name,
            "sitsflow_version": __version__,
            "host": socket.gethostname(),
            "pid": os.getpid(),
            "started": datetime.now(UTC).isoformat(timespec="seconds"),
            "state": "running",
        }

    def update(self, **fields: Any) -> None:
        self.data.update(fields)
        self.store.write_text(self.name, json.dumps(self.data, indent=2, default=str))


def execute(
    plan: RunPlan,
    progress: Progress,
    *,
    session: str | None = None,
    cluster: ClusterStarter | None = None,
) -> RunResult:
    """Run every stage, skipping units the ledger already holds with the same digest.

    ``cluster``: a cluster started beforehand (see ``plan_run``'s ``on_work_ahead``); without
    one, a cluster is opened here when units are left to run.
    """
    session = session or _new_session()
    with StoreLock(plan.store, session, notify=lambda m: progress.info(m, "run.waiting")):
        return _execute(plan, progress, session, cluster)


def _execute(
    plan: RunPlan, progress: Progress, session: str, cluster: ClusterStarter | None
) -> RunResult:
    manifest, store, layout = plan.manifest, plan.store, plan.layout
    spec = manifest.spec
    timings: dict[str, float] = {}
    outcomes: dict[str, StageOutcome] = {}
    leftovers = store.remove_temporaries()  # a killed session's half-written files
    if leftovers:
        progress.info(
            f"removed {len(leftovers)} file(s) an interrupted session left half-written",
            "run.cleaned",
            files=leftovers,
        )
    store.write_text("state/manifest.json", json.dumps(manifest.model_dump(mode="json"), indent=2))
    if plan.cache is not None:  # what planning computed afresh, for a later --resume
        plan.cache.flush()
    record = _Session(plan, session)
    record.update()
    progress.info(
        f"work: {plan.work.describe(spec.compute.threads_per_worker)}",
        "run.estimate",
        estimate=plan.estimate,
    )

    def on_unit(stage: str, result: Any) -> None:
        # One event per unit that ran (JSON logs only: a terminal shows the bars instead).
        if progress.log.json:
            progress.log.event(
                "unit.finished",
                f"{stage}/{result.key} finished on {result.worker} in {result.seconds:.2f} s",
                level="debug",
                stage=stage,
                unit=result.key,
                worker=result.worker,
                seconds=round(result.seconds, 4),
                session=session,
            )

    started = time.perf_counter()
    pending = sum(len(Ledger(store).split(units)[1]) for units in plan.units.values())
    dashboard: str | None = None
    memory_summary: dict[str, Any] = {"peak_worker_memory_bytes": 0, "workers_seen": 0}
    with contextlib.ExitStack() as stack:
        client = None
        if cluster is not None:
            client = cluster.client()
        elif pending:  # a finished run needs no cluster to report on itself
            client = stack.enter_context(open_client(spec.compute, run=manifest.name))
        if client is not None:
            dashboard = client.dashboard_link
            progress.info(f"dask dashboard: {dashboard}", "run.dashboard", dashboard=dashboard)
            record.update(dashboard=dashboard)
            if spec.compute.cluster == "address":
                _check_workers(client, plan.work)
        if not pending:
            progress.info("every unit is finished already: nothing to compute", "run.complete")
        executor = Executor(
            store,
            session,
            client,
            progress,
            retries=spec.compute.retries,
            max_in_flight=spec.compute.max_units_in_flight,
            on_unit=on_unit,
        )
        memory = stack.enter_context(MemoryMonitor(client)) if client is not None else None
        try:
            metrics = _run_stages(plan, executor, progress, timings, outcomes)
        except BaseException as exc:
            record.update(state="failed", error=type(exc).__name__)
            raise
        if memory is not None:
            memory_summary = memory.summary()
    summary = _summary(plan, session, timings, outcomes, dashboard, memory_summary, metrics)
    summary["wall_seconds"] = round(time.perf_counter() - started, 3)
    store.write_text(
        layout.relative(layout.summary), json.dumps(summary, indent=2, sort_keys=True, default=str)
    )
    record.update(
        state="finished",
        ended=datetime.now(UTC).isoformat(timespec="seconds"),
        units=summary["units"],
        stage_seconds=summary["stage_seconds"],
    )
    return RunResult(layout, store, metrics, timings, dashboard, outcomes, summary)


def _check_workers(client: Any, work: WorkEstimate) -> None:
    """An existing scheduler's workers (open_client waited for one): can each hold a unit?"""
    capacity = worker_capacity(client)
    if not capacity:
        raise ComputeError(
            "the scheduler has no worker",
            fix="start dask workers against it (dask worker <address>)",
            field="spec.compute.address",
        )
    for name, limit, threads in capacity:
        if limit:
            check_memory(work, limit, threads, where=f"scheduler's (worker {name!r})")


def _run_stages(
    plan: RunPlan,
    executor: Executor,
    progress: Progress,
    timings: dict[str, float],
    outcomes: dict[str, StageOutcome],
) -> dict[str, Any]:
    manifest, store, layout, cube = plan.manifest, plan.store, plan.layout, plan.cube
    spec = manifest.spec
    root = store.root

    def run(work: StageWork, **kwargs: Any) -> StageOutcome:
        outcome = executor.run(work, **kwargs)
        previous = outcomes.get(work.name)
        if previous is not None:  # a stage of two steps (samples: parts, then the table)
            outcome = StageOutcome(
                work.name,
                previous.total + outcome.total,
                previous.skipped + outcome.skipped,
                previous.ran + outcome.ran,
                previous.seconds + outcome.seconds,
                previous.pixels + outcome.pixels,
                previous.unit_seconds + outcome.unit_seconds,
                {**previous.summaries, **outcome.summaries},
            )
        outcomes[work.name] = outcome
        return outcome

    with _stage("discover", timings, progress):
        run(
            StageWork(
                "discover",
                plan.units["discover"],
                _save_items,
                _ItemsContext(root, plan),
                on_cluster=False,
                description="item lists",
            )
        )

    extraction = spec.task == "extraction"
    if not extraction:  # extraction reads the imagery itself: no cube
        with _stage("cube", timings, progress):
            for tile in plan.map_tiles:
                key = tile.unit_key
                _ensure_store(
                    store,
                    "cube",
                    plan.digests["cube_store" if key is None else f"cube_store:{key}"],
                    tile.cube_name,
                    functools.partial(create_cube_store, tile.cube, tile.cube_url),
                    key=st.STORE_KEY if key is None else f"{st.STORE_KEY}-{key}",
                )
            chunks = run(
                StageWork(
                    "cube",
                    plan.units["cube"],
                    st.build_cube_unit,
                    st.CubeContext(tuple((t.cube, t.cube_url) for t in plan.map_tiles)),
                    description="cube chunks",
                )
            )
        never_valid = sum(int(s.get("never_valid_pixels", 0)) for s in chunks.summaries.values())
        if never_valid:
            warnings.warn(
                f"{never_valid} pixel(s) have no valid acquisition in the period; they are left "
                "unmapped (no-data in the map)",
                DataQualityWarning,
                stacklevel=2,
            )

    with _stage("samples", timings, progress):
        parts, table = plan.units["samples"][:-1], plan.units["samples"][-1]
        run(
            StageWork(
                "samples",
                parts,
                st.extract_unit,
                st.ExtractContext(root, tuple(task for _, task in plan.extract_tasks)),
                description="sample chunks",
            ),
            read_summaries=False,
        )
        run(
            StageWork(
                "samples",
                [table],
                _assemble_samples,
                _TableContext(plan, parts),
                on_cluster=False,
                description="samples table",
            )
        )

    if extraction:
        return dict(outcomes["samples"].summaries["table"])

    with _stage("train", timings, progress):
        trained = run(
            StageWork(
                "train",
                plan.units["train"],
                st.train_unit,
                st.TrainContext(
                    root,
                    layout.relative(layout.samples),
                    layout.relative(layout.model),
                    spec.model,
                    spec.task,
                    "value" if spec.task == "regression" else "label",
                    tuple(cube.feature_names),
                    spec.sampling.seed,
                    spec.sampling.min_pixels_per_class,
                    plan.regions.names if plan.regions is not None else (),
                ),
                description="model" if plan.regions is None else "region models",
            )
        )
    model_info = _model_info(trained.summaries, plan.regions)
    from pipeline.predict.blockwise import MapEncoding, create_map_store

    if spec.task == "regression":
        encoding = MapEncoding.for_values()
    else:
        encoding = MapEncoding.for_classes(tuple(model_info["classes"]))
        probability_classes = tuple(
            int(u.key.removeprefix("probability_"))
            for u in plan.units["mosaic"]
            if u.key.startswith("probability_")
        )
        encoding = dataclasses.replace(encoding, probability_classes=probability_classes)

    with _stage("predict", timings, progress):
        for tile in plan.map_tiles:
            grid, key = tile.cube.grid, tile.unit_key
            _ensure_store(
                store,
                "predict",
                st.digest("predict", "store", grid, cube.chunk_size, encoding),
                tile.map_name,
                functools.partial(create_map_store, tile.map_url, grid, cube.chunk_size, encoding),
                key=st.STORE_KEY if key is None else f"{st.STORE_KEY}-{key}",
            )
        region_context: dict[str, Any] = {}
        if plan.regions is not None:
            region_context = _prepare_regions(plan, store, layout, cube.chunk_size, model_info)
            # Every period's tile reads its tile's one region index.
            by_tile = dict(zip((t.key for t in plan.tiles), plan.regions.urls, strict=True))
            region_context["region_stores"] = tuple(by_tile[t.key] for t in plan.map_tiles)
        predicted = run(
            StageWork(
                "predict",
                plan.units["predict"],
                st.predict_unit,
                st.PredictContext(
                    root,
                    tuple((t.cube_url, t.map_url) for t in plan.map_tiles),
                    tuple(cube.time_series_variables),
                    layout.relative(layout.model),
                    plan.digests["train"],
                    encoding,
                    **region_context,
                ),
                description="predicted chunks",
            )
        )

    with _stage("mosaic", timings, progress):
        for maps in plan.maps:  # spec.period, then each of spec.also_map
            mosaic_units = [
                Unit(u.stage, u.key, u.digest, _resolved(u.payload, encoding), u.pixels)
                for u in maps.map_units
            ]
            what = "" if maps.name is None else f" of {maps.name}"
            run(
                StageWork(
                    "mosaic",
                    mosaic_units,
                    st.mosaic_unit,
                    st.MosaicContext(
                        root, tuple((t.map_url, t.cube.grid) for t in maps.tiles), maps.mosaic
                    ),
                    description=f"map files{what}",
                )
            )
            run(
                StageWork(
                    "mosaic",
                    [maps.catalog],
                    st.catalog_unit,
                    st.CatalogContext(
                        root,
                        manifest.name,
                        (maps.period.start, maps.period.end),
                        plan.reference.legend,
                        tuple(u.payload for u in mosaic_units),
                        maps.layout.catalog_name,
                    ),
                    on_cluster=False,
                    description=f"STAC catalog{what}",
                )
            )

    from pipeline.predict.blockwise import LABEL_VARIABLE, VALUE_VARIABLE

    unmapped = sum(int(s.get("nodata_pixels", 0)) for s in predicted.summaries.values())
    with _stage("validate", timings, progress):
        details = _report_details(plan, model_info, unmapped, timings)
        checked = run(
            StageWork(
                "validate",
                plan.units["validate"],
                st.validate_unit,
                st.ValidateContext(
                    root,
                    layout.relative(layout.samples),
                    layout.labels_name,
                    layout.confidence_name,
                    layout.report_name,
                    plan.reference.legend,
                    encoding.nodata,
                    tuple(model_info["classes"]),
                    f"sitsflow run {manifest.name}: accuracy on validation polygons",
                    details,
                    tuple((t.key or "", t.map_url) for t in plan.tiles) if plan.tiled else (),
                    VALUE_VARIABLE if spec.task == "regression" else LABEL_VARIABLE,
                    spec.task,
                    layout.values_name,
                    tuple(
                        st.run_model(layout.relative(layout.model), run)
                        for run in range(spec.sampling.runs)
                    )
                    if spec.sampling.runs > 1
                    else (),
                    tuple(spec.sampling.seed + run for run in range(spec.sampling.runs)),
                    tuple(cube.feature_names),
                    plan.regions.names if plan.regions is not None else (),
                    layout.relative(layout.model),
                    plan.windowed,
                ),
                on_cluster=False,
                description="accuracy report",
            )
        )
    return dict(checked.summaries["report"])


def _model_info(summaries: dict[str, Any], regions: RegionPlan | None) -> dict[str, Any]:
    """What the report and the map encoding need of the trained model(s): with regions, the
    union of the region models' classes and their training pixels summed."""
    if regions is None:
        return dict(summaries["model"])
    parts = [summaries[f"model-{name}"] for name in regions.names]
    left_out = {name: p["left_out_classes"] for name, p in zip(regions.names, parts, strict=True)}
    return {
        "classes": sorted({int(c) for p in parts for c in p["classes"]}),
        "training_pixels": sum(int(p["training_pixels"]) for p in parts),
        "training_polygons": sum(int(p["training_polygons"]) for p in parts),
        "left_out_classes": {k: v for k, v in left_out.items() if v},
        "regions": list(regions.names),
    }


def _prepare_regions(
    plan: RunPlan, store: RunStore, layout: RunLayout, chunk_size: int, model_info: dict[str, Any]
) -> dict[str, Any]:
    """Write each tile's region index once (kept while the regions are the same) and give the
    prediction its region models, in region order."""
    from pipeline.predict.blockwise import write_region_raster

    regions = plan.regions
    assert regions is not None
    spec = plan.manifest.spec
    settings = spec.reference.regions
    assert settings is not None
    ledger = Ledger(store)
    for tile, url in zip(plan.tiles, regions.urls, strict=True):
        key = f"regions-{tile.key or 'grid'}"
        made = st.digest("predict", "regions", settings, regions.names, tile.cube.grid)
        if made in ledger.finished("predict").get(key, set()):
            continue
        index = _region_map(spec, tile.cube.grid, regions.names)
        store.remove(layout.relative(layout.regions_of(tile.key)))
        write_region_raster(index, url, chunk_size=max(chunk_size, 256))
        ledger.write(
            Record("predict", key, made, "", "driver", 0.0,
                   datetime.now(UTC).isoformat(timespec="milliseconds"), {"url": url})
        )  # fmt: skip
    models = tuple(
        (
            st.region_model(layout.relative(layout.model), name),
            st.digest("train", plan.digests["train"], name),
        )
        for name in regions.names
    )
    return {
        "region_models": models,
        "region_stores": regions.urls,
        "border_pixels": settings.border_pixels,
        "border_rule": settings.border_rule,
        "classes": tuple(model_info["classes"]),
    }


def _resolved(item: st.MapFile, encoding: Any) -> st.MapFile:
    """The map file with the variable, no-data and resampling of its role."""
    from pipeline.predict.blockwise import (
        CONFIDENCE_NODATA,
        CONFIDENCE_VARIABLE,
        LABEL_VARIABLE,
        PROBABILITY_NODATA,
        VALUE_VARIABLE,
        probability_variable,
    )

    if item.role.startswith("probability_"):
        code = int(item.role.removeprefix("probability_"))
        return st.MapFile(
            item.role, item.name, probability_variable(code), PROBABILITY_NODATA, "average"
        )
    if item.role == "values":  # a continuous value: its mean over the pixels below
        return st.MapFile(item.role, item.name, VALUE_VARIABLE, float(encoding.nodata), "average")
    if item.role == "labels":  # classes: the most common class of the pixels below
        return st.MapFile(item.role, item.name, LABEL_VARIABLE, float(encoding.nodata), "mode")
    return st.MapFile(item.role, item.name, CONFIDENCE_VARIABLE, CONFIDENCE_NODATA, "average")


def _ensure_store(
    store: RunStore,
    stage: str,
    store_digest: str,
    relative: str,
    create: Any,
    *,
    key: str = st.STORE_KEY,
) -> None:
    """Keep a stage's Zarr store when it was made for the same plan; else make it anew and forget
    the units that wrote into it (their regions are gone): the stage's units in a single-grid
    run, the tile's in a tiled run (``key``: ``store-<tile>``)."""
    ledger = Ledger(store)
    if store_digest in ledger.finished(stage).get(key, set()):
        return
    if key == st.STORE_KEY:
        ledger.clear(stage)
    else:
        ledger.clear(stage, prefixes=(key.removeprefix(f"{st.STORE_KEY}-") + "-", key))
    store.remove(relative)
    create()
    ledger.write(
        Record(
            stage,
            key,
            store_digest,
            "",
            "driver",
            0.0,
            datetime.now(UTC).isoformat(timespec="milliseconds"),
            {"path": relative},
        )
    )


@dataclass(frozen=True)
class _ItemsContext:
    root: str
    plan: RunPlan


def _save_items(context: _ItemsContext, _payload: Any) -> dict[str, Any]:
    store, layout = RunStore(context.root), context.plan.layout
    counts = {}
    for name, (items, fingerprint) in context.plan.items.items():
        with store.publish(layout.relative(layout.items_of(name))) as path:
            save_items(items, path, fingerprint=fingerprint)
        counts[name] = len(items)
    return {"items": counts}


@dataclass(frozen=True)
class _TableContext:
    plan: RunPlan
    parts: list[Unit]


def _assemble_samples(context: _TableContext, _payload: Any) -> dict[str, Any]:
    from concurrent.futures import ThreadPoolExecutor

    from pipeline.samples.extract import samples_table, write_samples

    plan = context.plan
    store = plan.store
    with ThreadPoolExecutor(max_workers=8) as pool:
        values = list(pool.map(lambda u: st.read_part(store, u.key), context.parts))
    names = plan.cube.feature_names
    if not plan.tiled and not plan.windowed:
        tasks = [task for _, task in plan.extract_tasks]
        table = samples_table(tasks, values, plan.pixels, names, plan.cube.grid)
    else:
        table = _grouped_samples_table(plan, values)
    with store.publish(plan.layout.relative(plan.layout.samples)) as path:
        write_samples(table, path)
    return {
        "pixels": len(table),
        "training_pixels": int((table["split"] == TRAIN).sum()),
        "validation_pixels": int((table["split"] == VALIDATION).sum()),
    }


def _grouped_samples_table(plan: RunPlan, values: list[np.ndarray]) -> Any:
    """The samples of every tile (and window) in one table, in the plan's order, with point
    geometries in the mosaic's CRS."""
    import geopandas as gpd

    from pipeline.samples.extract import samples_table

    frames = []
    for source in plan.sources:
        mine = [i for i, (key, _) in enumerate(plan.extract_tasks) if key == source.group]
        if not mine:
            continue
        pixels = plan.pixels
        if source.tile.key is not None:
            pixels = pixels[pixels["tile"] == source.tile.key]
        if source.window is not None:
            pixels = pixels[pixels["window"] == source.window]
        part = samples_table(
            [plan.extract_tasks[i][1] for i in mine],
            [values[i] for i in mine],
            pixels,
            plan.cube.feature_names,
            source.tile.cube.grid,
        )
        frames.append(part.to_crs(plan.mosaic.crs))
    table = pd.concat(frames, ignore_index=True)
    keys = [c for c in ("tile", "window") if c in plan.pixels.columns] + ["row", "col"]
    order = plan.pixels[keys].reset_index().rename(columns={"index": "_order"})
    table = table.merge(order, on=keys, how="left")
    table = table.sort_values("_order", kind="stable").drop(columns="_order")
    return gpd.GeoDataFrame(table.reset_index(drop=True), geometry="geometry", crs=plan.mosaic.crs)


def _report_details(
    plan: RunPlan, model_info: dict[str, Any], unmapped: int, timings: dict[str, float]
) -> dict[str, Any]:
    spec = plan.manifest.spec
    return {
        "run": plan.manifest.name,
        "period": f"{spec.period.start} .. {spec.period.end}",
        **(
            {"also mapped": ", ".join(f"{p.label} ({p.start} .. {p.end})" for p in spec.also_map)}
            if spec.also_map
            else {}
        ),
        **(
            {
                "sample windows": ", ".join(sorted({s.window for s in plan.sources if s.window})),
                "validation": "each validation pixel scored on its own window's features "
                "(the model applied to them), not read from one map; no area estimate",
            }
            if plan.windowed
            else {}
        ),
        "sensors": ", ".join(
            f"{s.profile.name} ({len(s.acquisitions)} acquisitions -> {len(s.dates)} dates every "
            f"{s.profile.date_step_days} days)"
            for s in plan.cube.sensors
        ),
        "grid": _grid_text(plan),
        "model": f"{spec.model.kind} {spec.model.estimator} {spec.model.params}",
        "features": len(plan.cube.feature_names),
        "training polygons / pixels": (
            f"{model_info.get('training_polygons', 0)} / {model_info.get('training_pixels', 0)}"
        ),
        "classes left out of the model": model_info.get("left_out_classes") or "none",
        "unmapped pixels": unmapped,
        "stage seconds (this session)": {k: round(v, 1) for k, v in timings.items()},
    }


def _summary(
    plan: RunPlan,
    session: str,
    timings: dict[str, float],
    outcomes: dict[str, StageOutcome],
    dashboard: str | None,
    memory: dict[str, Any],
    metrics: dict[str, Any],
) -> dict[str, Any]:
    layout, store = plan.layout, plan.store

    def where(path: Path) -> str:
        return store.url(layout.relative(path))

    units = {
        name: {"total": o.total, "skipped": o.skipped, "ran": o.ran} for name, o in outcomes.items()
    }
    outputs: dict[str, Any] = {
        "items": where(layout.items),
        "cube": where(layout.cube if not plan.tiled else layout.root / "cubes"),
        "samples": where(layout.samples),
        "model": where(layout.model),
        **(
            {"values": where(layout.values)}
            if plan.manifest.spec.task == "regression"
            else {"labels": where(layout.labels), "confidence": where(layout.confidence)}
        ),
        "catalog": where(layout.catalog / "collection.json"),
        "report": where(layout.report / "report.html"),
        "metrics": where(layout.report / "metrics.json"),
    }
    probabilities = [
        where(layout.root / u.payload.name)
        for u in plan.units["mosaic"]
        if u.key.startswith("probability_")
    ]
    if probabilities:
        outputs["probabilities"] = probabilities
    further = {
        maps.name: {
            "cube": where(
                maps.layout.cube if not plan.tiled else maps.layout.root / "periods" / maps.name
            ),
            **{u.payload.role: where(layout.root / u.payload.name) for u in maps.map_units},
            "catalog": where(maps.layout.catalog / "collection.json"),
        }
        for maps in plan.maps[1:]
        if maps.name is not None
    }
    if further:
        outputs["periods"] = further
    if plan.manifest.spec.task == "extraction":
        outputs = {k: outputs[k] for k in ("items", "samples")}
    throughput = {
        name: {
            "pixels": o.pixels,
            "seconds": round(o.seconds, 3),  # the time the rates are taken over
            "pixels_per_second": round(o.pixels / o.seconds, 1) if o.seconds and o.pixels else 0,
            "units_per_second": round(o.ran / o.seconds, 3) if o.seconds and o.ran else 0,
            "unit_seconds": round(o.unit_seconds, 3),
        }
        for name, o in outcomes.items()
    }
    return {
        "sitsflow_version": __version__,
        "run": plan.manifest.name,
        "session": session,
        "manifest": plan.manifest.model_dump(mode="json"),
        "estimate": plan.estimate,
        "stage_seconds": {k: round(v, 3) for k, v in timings.items()},
        "units": units,
        "units_skipped": sum(o.skipped for o in outcomes.values()),
        "units_run": sum(o.ran for o in outcomes.values()),
        "throughput": throughput,
        "memory": memory,
        "dashboard": dashboard,
        "digests": plan.digests,
        "outputs": outputs,
        "overall_accuracy": metrics.get("overall_accuracy"),
        "kappa": metrics.get("kappa"),
        "rmse": metrics.get("rmse"),
        "r2": metrics.get("r2"),
        "n_samples": metrics.get("n_samples"),
    }
