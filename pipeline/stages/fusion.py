"""fusion: two or more class maps of the run's area (its models of several sampling runs, its
models of one sensor's features each, or the maps of earlier runs) combined per pixel, chunk by
chunk, into fusion/labels.tif and fusion/confidence.tif, with an accuracy report of the fused map
beside each source's.

No ``fusion`` section: no units (the stage adds nothing to a run's digests). Units: one per
sensor source (its model trained: ``pipeline.stages.fusion_sensors``), one per chunk
of each tile's grid (the sources' labels there, fused, written to the tile's fused map store:
fusion/map.zarr in a single-grid run, fusion/tiles/<tile>.zarr in a tiled one), one per COG (the
tiles' stores mosaicked as the pixel maps are: each pixel from the tile that owns it), and the
report (on the driver). Each source's mass of belief comes from its own validation
confusion matrix: a model of this run from its run's validation pixels (a sensor's model: run
0's), an earlier run's from its report.
"""

from __future__ import annotations

import functools
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from pipeline.errors import InputDataError
from pipeline.model import GridSpec, Window
from pipeline.run.context import STORE_KEY, PlanContext, RunContext, ensure_store
from pipeline.run.executor import StageWork
from pipeline.run.stage import StagePlan, stage_digest
from pipeline.run.units import Unit, window_key
from pipeline.stages.common import split_column, tile_prefix
from pipeline.stages.cube import Cubes
from pipeline.stages.train import Models, run_model

NAME = "fusion"
VERSION = 1
FIELD = "fusion.sources"
MAP_STORE = "fusion/map.zarr"
TILES = "fusion/tiles"
LABELS = "fusion/labels.tif"
CONFIDENCE = "fusion/confidence.tif"
REPORT = "fusion/report"
SENSOR_MODELS = "model-"
"""Key prefix of the sensor models' units (they write no fused map store)."""


def digest(*parts: Any) -> str:
    return stage_digest(NAME, VERSION, *parts)


@dataclass(frozen=True)
class PlannedSource:
    """A source as planned: its name, and a model of this run (``run``; ``sensor``: a model of
    one sensor's features, on run 0's split) or a store's maps."""

    name: str
    run: int | None
    model: str = ""
    """Store-relative model folder (model sources)."""
    model_digest: str = ""
    maps: Any = None
    """``pipeline.fusion.sources.StoreMaps`` (store sources)."""
    sensor: Any = None
    """``pipeline.stages.fusion_sensors.SensorModel`` (sensor sources)."""

    @property
    def variables(self) -> tuple[tuple[str, str], ...] | None:
        """The cube variables its model reads (None: every feature variable)."""
        return None if self.sensor is None else self.sensor.columns.variables

    def features(self, names: list[str]) -> list[str]:
        """Its model's feature columns, given every feature column ``names``."""
        return names if self.sensor is None else list(self.sensor.columns.features)


@dataclass(frozen=True)
class FusedTile:
    """A tile as the fusion reads and writes it."""

    key: str | None
    """The tile's unit key (None in a single-grid run)."""
    cube: str
    grid: GridSpec
    map_name: str
    """Store-relative name of its fused map store."""
    offset: tuple[int, int] | None
    """Its top-left pixel in the mosaic (None: it must be resampled onto the mosaic)."""
    plan: Any = None
    """Its ``CubePlan`` (a tiled run: which pixels it owns); None in a single-grid run."""


@dataclass(frozen=True)
class Fusion:
    sources: tuple[PlannedSource, ...]
    chunks: tuple[Unit, ...]
    cogs: tuple[Unit, ...]
    report: Unit
    grid: GridSpec
    """The mosaic's grid (the only tile's in a single-grid run)."""
    tiles: tuple[FusedTile, ...] = ()


def _sources(context: PlanContext, grid: GridSpec) -> tuple[PlannedSource, ...]:
    from pipeline.fusion.sources import store_maps

    config = context.config
    assert config.fusion is not None
    models: Models = context.outputs("train")
    model = context.layout.relative(context.layout.model)
    other = {int(u.payload): u.digest for u in models.other_runs}
    planned = []
    for source in config.fusion.sources:
        if source.sensor is not None:
            from pipeline.stages.fusion_sensors import plan_sensor_model

            sensor = plan_sensor_model(context, source.sensor)
            planned.append(
                PlannedSource(source.label, None, sensor.folder, sensor.unit.digest, sensor=sensor)
            )
            continue
        if source.run is None:
            assert source.store is not None
            planned.append(PlannedSource(source.label, None, maps=store_maps(source.store, grid)))
            continue
        if source.run >= config.sampling.runs:
            raise InputDataError(
                f"fusion source run {source.run} is not a model of this run (sampling.runs "
                f"is {config.sampling.runs})",
                fix=f"use runs 0 .. {config.sampling.runs - 1}, or raise sampling.runs",
                field=FIELD,
            )
        trained = context.input("train").digest or ""
        planned.append(
            PlannedSource(
                source.label,
                source.run,
                run_model(model, source.run),
                trained if source.run == 0 else other[source.run],
            )
        )
    return tuple(planned)


def _fused_tiles(cubes: Cubes, grid: GridSpec) -> tuple[FusedTile, ...]:
    """The run's tiles as the fusion writes them: one fused map store per tile of a tiled run."""
    from pipeline.grid import aligned_offset

    if not cubes.tiled:
        tile = cubes.tiles[0]
        return (FusedTile(None, tile.cube_url, tile.cube.grid, MAP_STORE, (0, 0)),)
    return tuple(
        FusedTile(
            tile.unit_key,
            tile.cube_url,
            tile.cube.grid,
            f"{TILES}/{tile.unit_key}.zarr",
            aligned_offset(grid, tile.cube.grid),
            tile.cube,
        )
        for tile in cubes.tiles
    )


def _refuse(config: Any, cubes: Cubes, samples: Any, regions: tuple[str, ...]) -> None:
    why = None
    if config.task != "classification":
        why = f"task {config.task!r} makes no class map"
    elif regions:
        why = "the run has a model per region"
    elif samples.windowed:
        why = "the samples carry their own windows (no one map to score)"
    if why is not None:
        raise InputDataError(
            f"a fusion section was given but {why}",
            fix="remove the fusion section, or fuse the maps of single-grid classification runs",
            field="fusion",
        )


class FusionStage:
    name = NAME
    version = VERSION
    needs = ("cube", "samples", "train")
    # What its units import on a worker, loaded by the cluster warm-up.
    worker_imports = (
        "pipeline.fusion.sources",
        "pipeline.predict.blockwise",
        "pipeline.learn",
        "pipeline.learn.sklearn_store:import_skops",
    )

    def plan(self, context: PlanContext) -> StagePlan:
        config = context.config
        if config.fusion is None:
            return StagePlan(NAME)
        cubes: Cubes = context.outputs("cube")
        samples = context.outputs("samples")
        _refuse(config, cubes, samples, context.outputs("train").regions)
        grid = cubes.periods[0].grid
        tiles = _fused_tiles(cubes, grid)
        sources = _sources(context, grid)
        if any(s.maps is not None for s in sources) and any(t.offset is None for t in tiles):
            raise InputDataError(
                "a fusion source is an earlier run's map but a tile of this run is not on the "
                f"mosaic's pixel lattice ({grid.crs}): its pixels cannot be read from that map",
                fix="fuse models of this run (sources: run), or map tiles of one CRS and lattice",
                field=FIELD,
            )
        identity = [
            (s.name, s.run, s.model_digest, None if s.maps is None else s.maps.identity())
            for s in sources
        ]
        trained = [s.sensor.unit for s in sources if s.sensor is not None]
        samples_digest = context.input("samples").digest
        chunks = tuple(
            Unit(
                NAME,
                tile_prefix(tile.unit_key) + window_key(w),
                digest(
                    config.fusion,
                    identity,
                    samples_digest,
                    cubes.cube_digests[(tile.unit_key, w)],
                    w,
                ),
                payload=(index, w),
                pixels=w.n_pixels,
            )
            for index, tile in enumerate(cubes.tiles)
            for w in tile.cube.windows
        )
        made = [u.digest for u in chunks]
        cogs = tuple(
            Unit(NAME, role, digest(made, role, name, grid), payload=(role, name))
            for role, name in (("labels", LABELS), ("confidence", CONFIDENCE))
        )
        report = Unit(NAME, "report", digest([u.digest for u in cogs], samples_digest, REPORT))
        files = {
            "fused labels": LABELS,
            "fused confidence": CONFIDENCE,
            "fusion report": f"{REPORT}/report.html",
        }
        return StagePlan(
            NAME,
            [*trained, *chunks, *cogs, report],
            outputs=Fusion(sources, chunks, cogs, report, grid, tiles),
            files=files,
        )

    def run(self, context: RunContext) -> None:
        plan = context.stage_plan(NAME)
        fusion: Fusion | None = plan.outputs
        if fusion is None:
            return
        from pipeline.fusion.kernels import masses_of
        from pipeline.predict.blockwise import MapEncoding, create_map_store

        config, store = context.config, context.store
        assert config.fusion is not None
        cubes: Cubes = context.stage_plan("cube").outputs
        from pipeline.stages.fusion_sensors import train_sensor_models

        train_sensor_models(context, tuple(s.sensor for s in fusion.sources if s.sensor))
        confusions = _confusions(context, fusion.sources)
        classes = tuple(sorted({c for codes, _ in confusions for c in codes}))
        masses = tuple(
            tuple(float(m) for m in masses_of(matrix, codes, classes, config.fusion.mass))
            for codes, matrix in confusions
        )
        encoding = MapEncoding.for_classes(classes)
        chunk_size = cubes.cube.chunk_size
        for tile in fusion.tiles:
            ensure_store(
                store,
                NAME,
                digest("store", tile.grid, chunk_size, encoding),
                tile.map_name,
                functools.partial(
                    create_map_store, store.url(tile.map_name), tile.grid, chunk_size, encoding
                ),
                key=STORE_KEY if tile.key is None else f"{STORE_KEY}-{tile.key}",
                keep=(SENSOR_MODELS,),
            )
        fused = context.run(
            StageWork(
                NAME,
                fusion.chunks,
                fuse_unit,
                FuseContext(
                    store.root,
                    fusion.tiles,
                    tuple(cubes.cube.time_series_variables),
                    fusion.sources,
                    tuple(store.url(t.map_name) for t in fusion.tiles),
                    encoding,
                    config.fusion.method,
                    masses,
                    classes,
                ),
                description="fused chunks",
            )
        )
        context.run(
            StageWork(
                NAME,
                fusion.cogs,
                cog_unit,
                CogContext(
                    store.root,
                    tuple((store.url(t.map_name), t.grid) for t in fusion.tiles),
                    fusion.grid,
                    float(encoding.nodata),
                ),
                description="fused map files",
            )
        )
        reported = context.run(
            StageWork(
                NAME,
                [fusion.report],
                report_unit,
                ReportContext(
                    store.root,
                    context.layout.relative(context.layout.samples),
                    fusion.sources,
                    tuple(confusion for confusion in confusions),
                    masses,
                    classes,
                    int(encoding.nodata),
                    config.fusion.method,
                    config.fusion.mass,
                    tuple(cubes.cube.feature_names),
                    context.stage_plan("samples").outputs.reference.legend,
                    [fused.summaries[u.key] for u in fusion.chunks],
                    tuple((t.key, t.offset, store.url(t.map_name)) for t in fusion.tiles),
                ),
                on_cluster=False,
                description="fusion report",
            )
        )
        context.metrics["fusion"] = reported.summaries["report"]


def _confusions(
    context: RunContext, sources: tuple[PlannedSource, ...]
) -> list[tuple[tuple[int, ...], np.ndarray]]:
    """Each source's classes and validation confusion matrix: a model of this run scored on its
    own run's validation pixels (the samples table; a sensor's model: run 0's, on its own
    feature columns), an earlier run's from its report."""
    import geopandas as gpd

    from pipeline.fusion.sources import store_confusion
    from pipeline.samples.split import VALIDATION
    from pipeline.stages.validate import _predict_samples
    from pipeline.validate.metrics import classification_metrics

    samples = None
    names = list(context.stage_plan("cube").outputs.cube.feature_names)
    out = []
    for source in sources:
        if source.maps is not None:
            out.append(store_confusion(source.maps))
            continue
        if samples is None:
            with context.store.fetch(context.layout.relative(context.layout.samples)) as local:
                samples = gpd.read_parquet(local)
        columns = source.features(names)
        rows = samples[samples[split_column(source.run or 0)] == VALIDATION]
        rows = rows[~rows[columns].isna().any(axis=1)]
        predicted = _predict_samples(context.store, source.model, rows, columns, ())
        reference = rows["label"].to_numpy()
        metrics = classification_metrics(reference, predicted.astype(np.int64))
        out.append((tuple(int(c) for c in metrics.classes), np.asarray(metrics.confusion)))
    return out


@dataclass(frozen=True)
class FuseContext:
    root: str
    tiles: tuple[FusedTile, ...]
    variables: tuple[tuple[str, str], ...]
    sources: tuple[PlannedSource, ...]
    map_stores: tuple[str, ...]
    """Per tile, its fused map store."""
    encoding: Any
    method: str
    masses: tuple[tuple[float, ...], ...]
    classes: tuple[int, ...]


def fuse_unit(context: FuseContext, payload: tuple[int, Window]) -> dict[str, Any]:
    from pipeline.fusion.sources import FuseTask, MapSource, ModelSource, Source, fuse_chunk
    from pipeline.stages.predict import local_model

    index, window = payload
    tile = context.tiles[index]
    sources: list[Source] = []
    for source in context.sources:
        if source.maps is not None:
            sources.append(MapSource(source.maps.labels, source.maps.confidence))
        else:
            folder = local_model(context.root, source.model, source.model_digest)
            sources.append(ModelSource(str(folder), source.variables))
    return fuse_chunk(
        FuseTask(
            tile.cube,
            context.variables,
            tuple(sources),
            context.map_stores[index],
            window,
            context.encoding,
            context.method,
            context.masses,
            context.classes,
            offset=tile.offset or (0, 0),
            owned=None if tile.plan is None else tile.plan.owned(window),
        )
    )


@dataclass(frozen=True)
class CogContext:
    root: str
    tiles: tuple[tuple[str, GridSpec], ...]
    """Per tile, in tile order: its fused map store and its grid."""
    grid: GridSpec
    nodata: float


def cog_unit(context: CogContext, payload: tuple[str, str]) -> dict[str, Any]:
    from pipeline.predict.blockwise import CONFIDENCE_NODATA, CONFIDENCE_VARIABLE, LABEL_VARIABLE
    from pipeline.predict.outputs import tiles_to_cog
    from pipeline.storage import RunStore

    role, name = payload
    labels = role == "labels"
    with RunStore(context.root).publish(name) as target:
        tiles_to_cog(
            context.tiles,
            LABEL_VARIABLE if labels else CONFIDENCE_VARIABLE,
            context.grid,
            target,
            nodata=context.nodata if labels else CONFIDENCE_NODATA,
            overview_resampling="mode" if labels else "average",
        )
        size = target.stat().st_size
    return {"bytes": int(size), "path": name}


@dataclass(frozen=True)
class ReportContext:
    root: str
    samples: str
    sources: tuple[PlannedSource, ...]
    confusions: tuple[tuple[tuple[int, ...], np.ndarray], ...]
    masses: tuple[tuple[float, ...], ...]
    classes: tuple[int, ...]
    nodata: int
    method: str
    mass: str
    feature_names: tuple[str, ...]
    legend: Any
    chunks: list[dict[str, Any]]
    tiles: tuple[tuple[str | None, tuple[int, int] | None, str], ...] = ()
    """Per tile: its key (the samples' ``tile`` column), its top-left pixel in the mosaic (None:
    not on the mosaic's lattice) and its fused map store."""


def _map_at(path: Path, rows: np.ndarray, cols: np.ndarray, nodata: int) -> np.ndarray:
    """A label COG's values at pixels (read block by block around them), its own no-data
    turned into ``nodata``."""
    import rasterio

    from pipeline.objects.outputs import values_at

    values = values_at(path, rows, cols).astype(np.int64)
    with rasterio.open(path) as src:
        if src.nodata is not None:
            values[values == int(src.nodata)] = nodata
    return values


def _fused_at(context: ReportContext, validation: Any, nodata: int) -> np.ndarray:
    """The fused label of each validation pixel, read from its tile's fused map store (the
    pixels of a tiled run's samples are on their tile's grid)."""
    import zarr

    from pipeline.predict.blockwise import LABEL_VARIABLE

    out = np.full(len(validation), nodata, dtype=np.int64)
    tiles = validation["tile"].to_numpy()
    for key, _offset, url in context.tiles:
        here = tiles == key
        if not here.any():
            continue
        rows = validation["row"].to_numpy()[here]
        cols = validation["col"].to_numpy()[here]
        array = zarr.open_group(url, mode="r")[LABEL_VARIABLE]
        r0, c0 = int(rows.min()), int(cols.min())
        block = np.asarray(array[r0 : int(rows.max()) + 1, c0 : int(cols.max()) + 1])  # type: ignore[index]
        out[here] = block[rows - r0, cols - c0]
    return out


def _on_mosaic(context: ReportContext, validation: Any) -> tuple[np.ndarray, np.ndarray]:
    """The validation pixels on the mosaic's grid (every tile is on its lattice when a store
    source is read: the plan refused otherwise)."""
    rows = validation["row"].to_numpy().astype(np.int64)
    cols = validation["col"].to_numpy().astype(np.int64)
    if len(context.tiles) > 1:
        tiles = validation["tile"].to_numpy()
        for key, offset, _url in context.tiles:
            here = tiles == key
            if offset is not None:
                rows[here] += offset[0]
                cols[here] += offset[1]
    return rows, cols


def report_unit(context: ReportContext, _payload: Any) -> dict[str, Any]:
    """The fused map and every source scored on the same pixels: the run's validation pixels
    (run 0's side of the split) where every map has a label; and again on those of them that
    no model source trained on (a model of another sampling run had its own split)."""
    import json

    import geopandas as gpd

    from pipeline.model import ClassInfo
    from pipeline.samples.split import VALIDATION
    from pipeline.stages.validate import _predict_samples
    from pipeline.storage import RunStore
    from pipeline.validate.metrics import classification_metrics
    from pipeline.validate.report import write_report

    store = RunStore(context.root)
    with store.fetch(context.samples) as local:
        samples = gpd.read_parquet(local)
    validation = samples[samples["split"] == VALIDATION]
    # A model of another sampling run may have trained on some of these pixels: its share is
    # reported, and every map is scored again on the pixels no model source trained on.
    held_out = np.ones(len(validation), dtype=bool)
    trained_on: dict[str, float] = {}
    for source in context.sources:
        if source.run is not None and source.run > 0:
            side = validation[split_column(source.run)].to_numpy() == VALIDATION
            trained_on[source.name] = round(float(1 - side.mean()), 4) if len(side) else 0.0
            held_out &= side
    rows, cols = _on_mosaic(context, validation)
    names = list(context.feature_names)
    predicted: dict[str, np.ndarray] = {}
    if len(context.tiles) > 1:
        fused = _fused_at(context, validation, context.nodata)
    else:
        with store.fetch(LABELS) as labels_path:
            fused = _map_at(labels_path, rows, cols, context.nodata)
    for source in context.sources:
        if source.maps is not None:
            predicted[source.name] = _map_at(Path(source.maps.labels), rows, cols, context.nodata)
            continue
        out = np.full(len(validation), context.nodata, dtype=np.int64)
        columns = source.features(names)
        complete = ~validation[columns].isna().any(axis=1).to_numpy()
        if complete.any():
            found = _predict_samples(store, source.model, validation[complete], columns, ())
            out[complete] = found.astype(np.int64)
        predicted[source.name] = out
    common = fused != context.nodata
    for values in predicted.values():
        common &= values != context.nodata
    labels = validation["label"].to_numpy()
    reference = labels[common]
    classes = sorted(set(context.classes) | set(reference.tolist()))
    scored = {"fused": classification_metrics(reference, fused[common], classes)}
    for name, values in predicted.items():
        scored[name] = classification_metrics(reference, values[common], classes)
    unseen = common & held_out
    held_out_scores = {}
    if unseen.any():
        for name, values in {"fused": fused, **predicted}.items():
            metrics = classification_metrics(labels[unseen], values[unseen], classes)
            held_out_scores[name] = metrics.overall_accuracy
    confidence = {
        "fused": _mean_confidence(
            [c["mapped_pixels"] for c in context.chunks],
            [c["confidence_sum"] for c in context.chunks],
        )
    }
    for i, source in enumerate(context.sources):
        parts = [c["sources"][i] for c in context.chunks]
        confidence[source.name] = _mean_confidence([p[0] for p in parts], [p[1] for p in parts])
    table = {
        name: {
            "overall_accuracy": m.overall_accuracy,
            "kappa": m.kappa,
            "macro_f1": m.macro_f1,
            "mean_confidence_percent": confidence[name],
        }
        for name, m in scored.items()
    }
    masses = {
        s.name: {str(c): round(m, 6) for c, m in zip(context.classes, row, strict=True)}
        for s, row in zip(context.sources, context.masses, strict=True)
    }
    known = {c.code for c in context.legend}
    legend = [c for c in context.legend if c.code in classes] + [
        ClassInfo(code, str(code)) for code in classes if code not in known
    ]
    details = {
        "method": context.method
        + (
            f" (masses: each source's {context.mass})"
            if context.method == "dempster_shafer"
            else ""
        ),
        "validation pixels (labelled by every map)": int(common.sum()),
        "share of them another run's model trained on": trained_on or "none",
        **{
            f"{name}": f"OA {row['overall_accuracy']:.4f}, kappa {row['kappa']:.4f}, "
            f"macro F1 {row['macro_f1']:.4f}, mean confidence {row['mean_confidence_percent']} %"
            for name, row in table.items()
        },
    }
    with (
        store.fetch(LABELS) as labels_path,
        store.fetch(CONFIDENCE) as confidence_path,
        store.publish(REPORT) as folder,
    ):
        write_report(
            folder,
            scored["fused"],
            legend,
            labels_path,
            confidence_path,
            title="fused map: accuracy on validation polygons, beside each source's",
            details=details,
        )
        document = {
            "method": context.method,
            "mass": context.mass,
            "pixels": int(common.sum()),
            "scores": table,
            "masses": masses,
            "confusion": {name: m.to_dict()["confusion"] for name, m in scored.items()},
            "trained_on_scored_pixels": trained_on,
            "held_out": {"pixels": int(unseen.sum()), "overall_accuracy": held_out_scores},
            "classes": classes,
        }
        (folder / "fusion.json").write_text(json.dumps(document, indent=2), encoding="utf-8")
    return {
        "overall_accuracy": scored["fused"].overall_accuracy,
        "kappa": scored["fused"].kappa,
        "n_samples": int(common.sum()),
        "sources": {n: table[n]["overall_accuracy"] for n in predicted},
    }


def _mean_confidence(counts: list[int], sums: list[float]) -> float | None:
    total = sum(counts)
    return round(sum(sums) / total, 2) if total else None


STAGE = FusionStage()
