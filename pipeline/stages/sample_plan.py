"""Planning the samples: the reference burnt onto each tile (and sample window), the split by
polygon and the training selection, drawn once for the whole run."""

from __future__ import annotations

import dataclasses
import warnings
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import pandas as pd

from pipeline.cube.plan import CubePlan, plan_cube
from pipeline.errors import InputDataError
from pipeline.model import GridSpec
from pipeline.run.plan_cache import PlanCache, code_digest
from pipeline.run.units import canonical, content_hash
from pipeline.samples.extract import labelled_pixels
from pipeline.samples.reference import Burn, ReferencePolygons, load_reference, window_name
from pipeline.samples.regions import RegionMap, check_region_training
from pipeline.samples.select import SelectionRule, select_pixels
from pipeline.samples.split import TRAIN, VALIDATION, split_polygons, value_strata
from pipeline.stages.common import FINAL_RUN, frame_for_digest, split_column, within
from pipeline.stages.cube import TilePlan, check_same_dates, cube_options
from pipeline.stages.discover import Sensors
from pipeline.stages.regions import RegionPlan
from pipeline.warnings import SitsflowWarning, category_named


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


def window_cube(config: Any, tile: TilePlan, sensors: Sensors, start: Any, end: Any) -> CubePlan:
    """The cube plan of samples observed start .. end on ``tile``: the tile's grid, the
    window's own acquisitions and date grid (read from the imagery, never stored)."""
    from pipeline.grid import acquisitions_over

    chosen = []
    for profile, acquisitions in sensors:
        dated = within(acquisitions, start, end)
        if tile.cube.tile is not None:
            dated = acquisitions_over(tile.cube.tile, dated)
        chosen.append((profile, dated))
    options = cube_options(config, start, end, seasonal=True)
    return plan_cube(tile.cube.grid, chosen, **options, tile=tile.cube.tile, tiles=tile.cube.tiles)


def tile_references(
    config: Any,
    tiles: tuple[TilePlan, ...],
    windows: Sequence[tuple[Any, Any]],
    sensors: Sensors,
    burn: Burn | None = None,
) -> list[SampleSource]:
    """The reference burnt onto each tile's grid (once per sample window, with windows), on
    the pixels the tile owns only, with the cube plan the samples are read on."""
    season = config.period
    if not windows and tiles[0].key is None:
        tile = tiles[0]
        reference = load_reference(config.reference, tile.cube.grid, burn=burn)
        return [SampleSource(tile, None, reference, tile.cube)]
    out = []
    first_error: InputDataError | None = None
    for tile in tiles:
        for start, end in windows or [(None, None)]:
            name = None if start is None else window_name(start, end)
            try:
                reference = load_reference(
                    config.reference, tile.cube.grid, season=season, window=name, burn=burn
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
                cube = window_cube(config, tile, sensors, start, end)
                check_same_dates(
                    cube,
                    tile.cube,
                    f"the sample window {start} .. {end}",
                    "reference.end_field" if config.reference.end_field else "period",
                )
            out.append(SampleSource(tile, name, reference, cube))
    if not any(s.reference.present_ids().size for s in out):
        raise first_error or InputDataError(
            "no reference feature covers a pixel owned by a tile of spec.area",
            fix="check that the reference data and the tiles cover the same area",
            field="reference.path",
        )
    return out


def sample_pixels(
    config: Any, references: Sequence[SampleSource], regions: RegionPlan | None = None
) -> pd.DataFrame:
    """The split by polygon and the training selection: every pixel the samples table holds.

    The split is drawn once for the whole run (a polygon on two tiles stays on one side), the
    selection once over every tile's pixels, and the table is in the order of the ground: pixel
    centres north to south, then west to east (a single grid's row and column order).
    """
    sampling = config.sampling
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
                feature=references[0].reference.feature_word.removesuffix("s"),
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
    sides: dict[str, np.ndarray] = {}  # joined once: a column per run inserted one by one
    for run, split in enumerate(splits):  # fragments the frame (pandas warns from 100 runs)
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
        sides[split_column(run)] = column
        kept |= column != ""
    if sampling.final_model == "all":  # the map's model: the selection over every pixel
        training = select_pixels(
            pixels,
            rule,
            sampling.seed,
            label_column=None if regression else "label",
            by=["region"] if regions is not None else [],
        )
        if regions is not None:
            every_region = RegionMap(regions.names, np.arange(len(regions.names))[None, :])
            check_region_training(training, every_region, classification=not regression)
        column = np.full(len(pixels), "", dtype=object)
        column[training.index.to_numpy()] = TRAIN
        sides[split_column(FINAL_RUN)] = column
        kept |= column != ""
    for name in [n for n in sides if n in pixels.columns]:  # "split" (run 0): in its place
        pixels[name] = sides.pop(name)
    pixels = pd.concat([pixels, pd.DataFrame(sides, index=pixels.index)], axis=1)
    both = pixels[kept]
    windowed = "window" in both.columns
    if references[0].tile.key is None:
        order = ["window", "row", "col"] if windowed else ["row", "col"]
        return both.sort_values(order, kind="stable").reset_index(drop=True)
    grounded = in_ground_order(both, {s.tile.key: s.tile.cube.grid for s in references})
    if windowed:
        grounded = grounded.sort_values("window", kind="stable").reset_index(drop=True)
    return grounded


_PIXEL_COLUMNS = ["row", "col", "polygon_id", "label", "value", "group", "region", "split"]


def cached_sample_pixels(
    cache: PlanCache,
    config: Any,
    references: Sequence[SampleSource],
    regions: RegionPlan | None,
) -> tuple[pd.DataFrame, Any]:
    """``sample_pixels`` kept in the plan cache, with the canonical form of the columns
    that make the samples' digest (hashing 10^6 rows is itself a planning cost)."""
    name = "pixels-" + content_hash(
        code_digest(),
        config.task,
        config.sampling,
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
        pixels = sample_pixels(config, references, regions)
    said = [  # sitsflow's own warnings (the others are the libraries', said once)
        {"category": w.category.__name__, "message": str(w.message)}
        for w in caught
        if issubclass(w.category, SitsflowWarning)
    ]
    for warning in caught:
        warnings.warn_explicit(warning.message, warning.category, warning.filename, warning.lineno)
    columns = ["tile", "window", *_PIXEL_COLUMNS]
    columns += [split_column(r) for r in range(1, config.sampling.runs)]
    if config.sampling.final_model == "all":
        columns.append(split_column(FINAL_RUN))
    identity = canonical(frame_for_digest(pixels, columns))
    cache.put_frame(name, pixels, {"identity": identity, "warnings": said})
    return pixels, identity


def in_ground_order(pixels: pd.DataFrame, grids: dict[str | None, GridSpec]) -> pd.DataFrame:
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
