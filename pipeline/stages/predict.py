"""predict: one unit per chunk of every map tile: features -> labels + confidence (or values,
or class probabilities) -> map Zarr region write. The features are read from the cube, or, in a
run that keeps no cube (``outputs.keep_cube: false``), computed from the imagery for the chunk
and the model's halo in the same unit (fused chunks: the same numbers, the same unit digests)."""

from __future__ import annotations

import contextlib
import dataclasses
import functools
import shutil
import tempfile
import threading
import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from pipeline.model import Window
from pipeline.run.context import PlanContext, RunContext, ensure_store
from pipeline.run.context import record_driver_unit as _record
from pipeline.run.executor import StageWork
from pipeline.run.stage import StagePlan, stage_digest
from pipeline.run.units import Ledger, Unit, window_key
from pipeline.samples.split import TRAIN
from pipeline.stages import train as train_stage
from pipeline.stages.common import tile_prefix
from pipeline.stages.cube import Cubes, store_key
from pipeline.stages.regions import region_map
from pipeline.stages.samples import Samples
from pipeline.storage import RunStore
from pipeline.warnings import DataQualityWarning

NAME = "predict"
VERSION = 1


def digest(*parts: Any) -> str:
    return stage_digest(NAME, VERSION, *parts)


@dataclass(frozen=True)
class Predictions:
    by_period: dict[str | None, list[Unit]]
    """The predict units of each mapped period (None: the run's period)."""
    probability_classes: tuple[int, ...]
    """The classes that get a probability map (none unless outputs.probabilities)."""


_model_lock = threading.Lock()


def local_model(root: str, model: str, model_digest: str) -> Path:
    """A worker-local copy of the model folder, named by its digest (a new model, a new path:
    per-path model caches never serve a stale model)."""
    cache = Path(tempfile.gettempdir()) / "sitsflow-models" / model_digest
    with _model_lock:
        if not cache.exists():
            cache.parent.mkdir(parents=True, exist_ok=True)
            staging = Path(tempfile.mkdtemp(dir=cache.parent, prefix=".partial-"))
            try:
                RunStore(root).download(model, staging / "model")
                with contextlib.suppress(OSError):  # another process here was first: same bytes
                    (staging / "model").rename(cache)
            finally:
                shutil.rmtree(staging, ignore_errors=True)
    return cache


@dataclass(frozen=True)
class PredictContext:
    root: str
    stores: tuple[tuple[Any, str], ...]
    """Per tile, in tile order: where its features come from (its cube's location, or the cube
    plan they are computed from: ``Cubes.features_of``) and the location of its map store."""
    variables: tuple[tuple[str, str], ...]
    model: str
    model_digest: str
    encoding: Any
    region_models: tuple[tuple[str, str], ...] = ()
    """Runs with regions: each region's model folder and digest, in region order."""
    region_stores: tuple[str, ...] = ()
    """Per tile: its region index (Zarr)."""
    border_pixels: int = 0
    border_rule: str = "blend"
    classes: tuple[int, ...] = ()


def predict_units(
    windows: list[Window],
    train_digest: str,
    cube_digests: dict[tuple[str | None, Window], str],
    *,
    tile: str | None = None,
    index: int = 0,
) -> list[Unit]:
    """The chunk units of one tile's map (payload: the tile's index and the window)."""
    return [
        Unit(
            NAME,
            tile_prefix(tile) + window_key(w),
            digest(train_digest, cube_digests[(tile, w)], w),
            payload=(index, w),
            pixels=w.n_pixels,
        )
        for w in windows
    ]


def predict_unit(context: PredictContext, payload: tuple[int, Window]) -> dict[str, Any]:
    from pipeline.predict.blockwise import PredictTask, predict_chunk

    index, window = payload
    cube, map_store = context.stores[index]
    if context.region_models:
        from pipeline.predict.blockwise import RegionPredictTask, predict_chunk_regions

        folders = tuple(str(local_model(context.root, m, d)) for m, d in context.region_models)
        report = predict_chunk_regions(
            RegionPredictTask(
                cube,
                context.variables,
                folders,
                map_store,
                window,
                context.encoding,
                context.region_stores[index],
                border_pixels=context.border_pixels,
                rule=context.border_rule,  # type: ignore[arg-type]
                classes=context.classes,
            )
        )
    else:
        folder = local_model(context.root, context.model, context.model_digest)
        report = predict_chunk(
            PredictTask(cube, context.variables, str(folder), map_store, window, context.encoding)
        )
    summary = {
        "predicted_pixels": int(report.predicted_pixels),
        "nodata_pixels": int(report.nodata_pixels),
    }
    if report.never_valid_pixels is not None:  # no cube: its stage did not count them
        summary["never_valid_pixels"] = int(report.never_valid_pixels)
    return summary


def probability_classes(config: Any, samples: Samples) -> tuple[int, ...]:
    """The classes that get a probability map: those of the training pixels (a class the model
    leaves out, for too few pixels, gets probability 0 everywhere)."""
    if config.task != "classification" or not config.outputs.probabilities:
        return ()
    pixels = samples.pixels
    return tuple(sorted(int(c) for c in pixels.loc[pixels["split"] == TRAIN, "label"].unique()))


def _prepare_regions(
    context: RunContext, samples: Samples, cubes: Cubes, model_info: dict[str, Any]
) -> dict[str, Any]:
    """Write each tile's region index once (kept while the regions are the same) and give the
    prediction its region models, in region order."""
    from pipeline.predict.blockwise import write_region_raster

    regions = samples.regions
    assert regions is not None
    config, store, layout = context.config, context.store, context.layout
    settings = config.reference.regions
    assert settings is not None
    chunk_size = cubes.cube.chunk_size
    ledger = Ledger(store)
    for tile, url in zip(cubes.tiles, regions.urls, strict=True):
        key = f"regions-{tile.key or 'grid'}"
        made = digest("regions", settings, regions.names, tile.cube.grid)
        if made in ledger.finished(NAME).get(key, set()):
            continue
        index = region_map(config, tile.cube.grid, regions.names)
        store.remove(layout.relative(layout.regions_of(tile.key)))
        write_region_raster(index, url, chunk_size=max(chunk_size, 256))
        _record(store, NAME, key, made, {"url": url})
    model = layout.relative(layout.model)
    trained = context.stage_plan("train").digest
    models = tuple(
        (train_stage.region_model(model, name), train_stage.digest(trained, name))
        for name in regions.names
    )
    # Every period's tile reads its tile's one region index.
    by_tile = dict(zip((t.key for t in cubes.tiles), regions.urls, strict=True))
    return {
        "region_models": models,
        "region_stores": tuple(by_tile[t.key] for t in cubes.map_tiles),
        "border_pixels": settings.border_pixels,
        "border_rule": settings.border_rule,
        "classes": tuple(model_info["classes"]),
    }


class Predict:
    name = NAME
    version = VERSION
    needs = ("cube", "samples", "train")
    # What its units import on a worker, loaded by the cluster warm-up (the cube's kernels: a
    # run without a cube computes the features here).
    worker_imports = (
        "pipeline.predict.blockwise",
        "pipeline.learn.sklearn_store:import_skops",
        "pipeline.cube.build:load_kernels",
        "pipeline.learn.rows:load_kernels",
        "pipeline.learn.compiled:load_kernels",
    )

    def plan(self, context: PlanContext) -> StagePlan:
        cubes: Cubes = context.outputs("cube")
        trained = context.input("train").digest
        assert trained is not None
        units: list[Unit] = []
        by_period: dict[str | None, list[Unit]] = {}
        for index, tile in enumerate(cubes.map_tiles):
            of_tile = predict_units(
                tile.cube.windows, trained, cubes.cube_digests, tile=tile.unit_key, index=index
            )
            units.extend(of_tile)
            by_period.setdefault(tile.period, []).extend(of_tile)
        classes = probability_classes(context.config, context.outputs("samples"))
        extraction = context.config.task == "extraction"
        return StagePlan(NAME, [] if extraction else units, outputs=Predictions(by_period, classes))

    def run(self, context: RunContext) -> None:
        from pipeline.predict.blockwise import MapEncoding, create_map_store

        config, store = context.config, context.store
        plan = context.stage_plan(NAME)
        predictions: Predictions = plan.outputs
        cubes: Cubes = context.stage_plan("cube").outputs
        samples: Samples = context.stage_plan("samples").outputs
        model_info = context.results["train"]
        chunk_size = cubes.cube.chunk_size
        if config.task == "regression":
            encoding = MapEncoding.for_values()
        else:
            encoding = MapEncoding.for_classes(tuple(model_info["classes"]))
            encoding = dataclasses.replace(
                encoding, probability_classes=predictions.probability_classes
            )
        for tile in cubes.map_tiles:
            grid = tile.cube.grid
            ensure_store(
                store,
                NAME,
                digest("store", grid, chunk_size, encoding),
                tile.map_name,
                functools.partial(create_map_store, tile.map_url, grid, chunk_size, encoding),
                key=store_key(tile),
            )
        regions: dict[str, Any] = {}
        if samples.regions is not None:
            regions = _prepare_regions(context, samples, cubes, model_info)
        layout = context.layout
        predicted = context.run(
            StageWork(
                NAME,
                plan.units,
                predict_unit,
                PredictContext(
                    store.root,
                    tuple((cubes.features_of(t), t.map_url) for t in cubes.map_tiles),
                    tuple(cubes.cube.time_series_variables),
                    layout.relative(layout.model),
                    context.stage_plan("train").digest or "",
                    encoding,
                    **regions,
                ),
                description="predicted chunks",
            )
        )
        unmapped = sum(int(s.get("nodata_pixels", 0)) for s in predicted.summaries.values())
        never_valid = sum(int(s.get("never_valid_pixels", 0)) for s in predicted.summaries.values())
        if never_valid:  # the cube stage's warning, from the units that computed the features
            warnings.warn(
                f"{never_valid} pixel(s) have no valid acquisition in the period; they are left "
                "unmapped (no-data in the map)",
                DataQualityWarning,
                stacklevel=2,
            )
        context.results[NAME] = {"encoding": encoding, "unmapped": unmapped}


STAGE = Predict()
