"""cube: per output tile (and per mapped period) a cube plan; one unit per chunk: read -> mask
-> gap-fill -> indices -> Zarr region write. Extraction runs plan the cubes (their grids and
date grids) but build none, and so do runs that keep no cube (``outputs.keep_cube: false``):
there each predict unit computes its chunk's features from the imagery (fused chunks)."""

from __future__ import annotations

import functools
import warnings
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from pipeline.cube.build import CubeChunkTask, build_chunk, check_user_features
from pipeline.cube.encoders import check_encoders, plan_encoders
from pipeline.cube.plan import CubePlan, plan_cube, plan_tile_cubes
from pipeline.cube.store import create_cube_store
from pipeline.errors import InputDataError, ManifestError
from pipeline.grid import mosaic_grid, plan_tiles
from pipeline.model import GridSpec, Window
from pipeline.run.context import STORE_KEY, PlanContext, RunContext, ensure_store
from pipeline.run.estimate import WorkEstimate, predict_bytes
from pipeline.run.executor import StageWork
from pipeline.run.layout import RunLayout
from pipeline.run.stage import StagePlan, stage_digest
from pipeline.run.units import Unit, window_key
from pipeline.stages.common import cube_identity, tile_prefix, within
from pipeline.stages.discover import Discovered, Sensors
from pipeline.storage import RunStore
from pipeline.warnings import DataQualityWarning

NAME = "cube"
VERSION = 1


def digest(*parts: Any) -> str:
    return stage_digest(NAME, VERSION, *parts)


@dataclass(frozen=True)
class TilePlan:
    """One output tile of the run: its cube plan and where its cube and map stores are."""

    key: str | None
    """The tile id in unit keys and store names; None in a single-grid run."""
    cube: CubePlan
    cube_url: str
    map_url: str
    period: str | None = None
    """The further period (also_map) this tile's cube and map are of; None: the run's period."""
    cube_name: str = ""
    map_name: str = ""
    """Store-relative names of the cube and map stores."""

    @property
    def unit_key(self) -> str | None:
        """The tile's prefix in unit keys: the period and the tile id, when there are any."""
        parts = [p for p in (self.period, self.key) if p is not None]
        return "-".join(parts) if parts else None


@dataclass(frozen=True)
class PeriodTiles:
    """One mapped period: its tiles and the grid of its maps."""

    period: Any
    """The period (start, end, label) of the configuration."""
    name: str | None
    """None for the run's period, whose maps are the run's main outputs."""
    layout: RunLayout
    tiles: tuple[TilePlan, ...]

    @property
    def grid(self) -> GridSpec:
        """The grid of the period's maps: the only tile's grid, or the mosaic of every tile."""
        return mosaic_grid([t.cube.grid for t in self.tiles])


@dataclass(frozen=True)
class Cubes:
    periods: tuple[PeriodTiles, ...]
    """The run's period first, then each further period (also_map)."""
    cube_digests: dict[tuple[str | None, Window], str]
    """The digest of every chunk unit by (tile unit key, window): what reads a chunk depends on.
    Planned whether the cube is kept or not: it names the chunk's features either way."""
    kept: bool = True
    """False (``outputs.keep_cube: false``): no cube is written; the features of a chunk are
    computed where they are read (prediction, sample extraction), with the same numbers."""

    @property
    def tiles(self) -> tuple[TilePlan, ...]:
        """The tiles of the run's period (samples, regions and validation are on these)."""
        return self.periods[0].tiles

    @property
    def map_tiles(self) -> tuple[TilePlan, ...]:
        """The tiles of every mapped period, in unit payload order."""
        return tuple(t for p in self.periods for t in p.tiles)

    @property
    def cube(self) -> CubePlan:
        """The first tile's cube plan (every tile has the same sensors, dates and features)."""
        return self.tiles[0].cube

    @property
    def tiled(self) -> bool:
        return self.tiles[0].key is not None

    def features_of(self, tile: TilePlan) -> str | CubePlan:
        """Where a tile's features are read: its cube store, or (no cube kept) its cube plan,
        from which a reader computes them (``pipeline.predict.blockwise.read_block``)."""
        return tile.cube_url if self.kept else tile.cube

    def grid_text(self) -> str:
        grid = self.periods[0].grid
        text = f"{grid.width} x {grid.height} px, {grid.crs}"
        if self.tiled:
            shown = ", ".join(t.key or "" for t in self.tiles[:6])
            more = ", ..." if len(self.tiles) > 6 else ""
            text += f" (mosaic of {len(self.tiles)} tiles: {shown}{more})"
        return text

    def estimate(self, units: Mapping[str, Sequence[Unit]]) -> WorkEstimate:
        tiles, cube = self.map_tiles, self.cube
        chunk_bytes = max(t.cube.bytes_per_chunk() for t in tiles)
        predicting = predict_bytes(len(cube.feature_names), cube.chunk_side)
        if not self.kept:  # a predict unit builds its chunk's features, then predicts them
            predicting += chunk_bytes
        return WorkEstimate(
            tiles=len({(t.key, t.cube.grid) for t in tiles}),  # ground tiles, not tile x period
            chunks=sum(len(t.cube.windows) for t in tiles),
            pixels=sum(t.cube.grid.width * t.cube.grid.height for t in tiles),
            acquisitions=sum(len(s.acquisitions) for t in tiles for s in t.cube.sensors),
            features=len(cube.feature_names),
            chunk_size=cube.chunk_side,  # clipped to the image
            chunk_bytes=chunk_bytes,
            predict_bytes=predicting,
            units={k: len(v) for k, v in units.items()},
            periods=len(self.periods),
        )


def cube_options(config: Any, start: Any, end: Any, *, seasonal: bool) -> dict[str, Any]:
    """What every cube plan of the run is given besides its grid and acquisitions (the one
    way the stages call ``plan_cube``: a tile's cube, a sample window's)."""
    return {
        "start": start,
        "end": end,
        "indices": config.features.indices,
        "chunk_size": config.compute.chunk_size,
        "user_functions": config.features.user_functions,
        "season_names": seasonal,
        "encoding": config.outputs.cube_encoding,
        "encoders": plan_encoders(config.features.encoders),
    }


def plan_period_tiles(
    config: Any,
    sensors: Sensors,
    store: RunStore,
    layout: RunLayout,
    period: Any,
    *,
    seasonal: bool,
    field: str = "period",
) -> tuple[TilePlan, ...]:
    """A cube plan per output tile of ``period`` (the period of ``layout``); a single-grid run
    has one tile without a key."""
    tiles = plan_tiles(config.area, [a for _, acqs in sensors for a in acqs])
    mine = [(p, within(acqs, period.start, period.end)) for p, acqs in sensors]
    common = cube_options(config, period.start, period.end, seasonal=seasonal)
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
                field="area" if field == "period" else field,
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


def check_same_dates(cube: CubePlan, season: CubePlan, what: str, field: str) -> None:
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


NOT_KEPT = (
    "not kept (outputs.keep_cube: false): each predict unit computes its chunk's features from "
    "the imagery"
)


def check_without_cube(config: Any) -> None:
    """Refuse, before anything is read, what reads a cube in a run that keeps none."""
    from pipeline.stages.patches import learner_patch_size

    readers = []
    if config.objects is not None:
        readers.append(("objects", "segments the cube and sums its features per segment"))
    if config.fusion is not None:
        readers.append(("fusion", "predicts its model sources from the cube"))
    if config.model.kind != "external" and learner_patch_size(config.model) is not None:
        kind = config.model.kind
        readers.append(("model.kind", f"{kind} cuts its training patches from the cube"))
    if readers:
        key, what = readers[0]
        other = "use a per-pixel model (kind sklearn or torch)" if key == "model.kind" else ""
        raise ManifestError(
            f"no cube is kept, but {key} {what}",
            fix=f"keep the cube (remove outputs.keep_cube: false), or {other or 'remove ' + key}",
            field="outputs.keep_cube",
        )


def check_encoder_readers(config: Any) -> None:
    """Encoders give static features (one value per pixel, no date): refuse, before anything is
    read, what reads the features as (dates, channels) series or per variable over time."""
    if not config.features.encoders:
        return
    readers = []
    if config.model.kind == "torch_patch":  # pixel torch models take them as static channels
        readers.append(("model.kind", "torch_patch reads (dates, channels) patches of the "
                        "series", "use kind sklearn or torch"))  # fmt: skip
    if config.objects is not None:
        readers.append(("objects", "sums time-series variables per segment", "remove objects"))
    if config.fusion is not None:
        readers.append(("fusion", "predicts its model sources from the cube", "remove fusion"))
    if readers:
        key, what, fix = readers[0]
        raise ManifestError(
            f"features.encoders give static features (one value per pixel, no date), but {key} "
            f"{what}",
            fix=f"{fix}, or remove features.encoders",
            field=key,
        )


def store_key(tile: TilePlan) -> str:
    """The ledger key of a tile's store set-up (cube or map store)."""
    key = tile.unit_key
    return STORE_KEY if key is None else f"{STORE_KEY}-{key}"


def store_digest_name(tile: TilePlan) -> str:
    key = tile.unit_key
    return "cube_store" if key is None else f"cube_store:{key}"


@dataclass(frozen=True)
class CubeContext:
    cubes: tuple[tuple[CubePlan, str], ...]
    """Per tile, in tile order: its cube plan and the location of its Zarr store."""


def cube_units(
    plan: CubePlan, store_digest: str, *, tile: str | None = None, index: int = 0
) -> list[Unit]:
    """The chunk units of one tile's cube (payload: the tile's index and the window)."""
    return [
        Unit(
            NAME,
            tile_prefix(tile) + window_key(w),
            digest(store_digest, w),
            payload=(index, w),
            pixels=w.n_pixels,
        )
        for w in plan.windows
    ]


def build_cube_unit(context: CubeContext, payload: tuple[int, Window]) -> dict[str, Any]:
    index, window = payload
    plan, store = context.cubes[index]
    report = build_chunk(CubeChunkTask(plan, window, store))
    return {
        "pixels": int(report.pixels),
        "valid_fraction": float(report.valid_fraction),
        "never_valid_pixels": int(report.never_valid_pixels),
    }


class Cube:
    name = NAME
    version = VERSION
    needs = ("discover",)
    # What its units import on a worker, loaded by the cluster warm-up (compiled kernels).
    worker_imports = ("pipeline.cube.build:load_kernels",)

    def plan(self, context: PlanContext) -> StagePlan:
        config, store, layout = context.config, context.store, context.layout
        found: Discovered = context.outputs("discover")
        sensors = found.sensors
        tiles = plan_period_tiles(
            config, sensors, store, layout, config.period, seasonal=found.seasonal
        )
        first = tiles[0].cube
        check_user_features(first)
        check_encoder_readers(config)
        periods = [PeriodTiles(config.period, None, layout, tiles)]
        for i, period in enumerate(config.also_map):
            where = f"also_map[{i}]"
            period_layout = layout.for_period(period.label)
            planned = plan_period_tiles(
                config, sensors, store, period_layout, period, seasonal=True, field=where
            )
            for tile in planned:
                check_same_dates(
                    tile.cube, first, f"{where} ({period.start} .. {period.end})", where
                )
            periods.append(PeriodTiles(period, period_layout.period, period_layout, planned))
        digests: dict[str, str] = {}
        units: list[Unit] = []
        by_window: dict[tuple[str | None, Window], str] = {}
        map_tiles = [t for p in periods for t in p.tiles]
        for index, tile in enumerate(map_tiles):
            name = store_digest_name(tile)
            digests[name] = digest("store", cube_identity(tile.cube))
            of_tile = cube_units(tile.cube, digests[name], tile=tile.unit_key, index=index)
            units.extend(of_tile)
            by_window.update({(tile.unit_key, u.payload[1]): u.digest for u in of_tile})
        extraction = config.task == "extraction"  # reads the imagery itself: no cube
        kept = config.outputs.keep_cube
        if not kept and not extraction:
            check_without_cube(config)
        cubes = Cubes(tuple(periods), by_window, kept=kept)
        files = {}
        facts: dict[str, Any] = {"grid": cubes.grid_text()}
        if not extraction and kept:
            files["cube"] = layout.relative(
                layout.cube if not cubes.tiled else layout.root / "cubes"
            )
        elif not kept:
            facts["cube"] = NOT_KEPT
        return StagePlan(
            NAME,
            units if kept and not extraction else [],
            digests=digests,
            outputs=cubes,
            files=files,
            facts=facts,
            estimate=cubes.estimate,
            checks=(functools.partial(check_encoders, first.encoders),) if first.encoders else (),
        )

    def run(self, context: RunContext) -> None:
        plan = context.stage_plan(NAME)
        cubes: Cubes = plan.outputs
        if context.config.task == "extraction" or not cubes.kept:  # nothing to build
            return
        tiles = cubes.map_tiles
        for tile in tiles:
            ensure_store(
                context.store,
                NAME,
                plan.digests[store_digest_name(tile)],
                tile.cube_name,
                functools.partial(create_cube_store, tile.cube, tile.cube_url),
                key=store_key(tile),
            )
        chunks = context.run(
            StageWork(
                NAME,
                plan.units,
                build_cube_unit,
                CubeContext(tuple((t.cube, t.cube_url) for t in tiles)),
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


STAGE = Cube()
