"""objects: object-based classification beside the pixel map. Segments (computed per chunk with a
halo and stitched, or the user's file), their zonal statistics per cube feature as features, the
reference assigned to segments, a model of the run's kind on them, one label per segment as a
raster (objects/labels.tif) and polygons with their statistics (objects/segments.gpkg), and
accuracy per segment and per pixel beside the pixel map's (objects/report.json).

No ``objects`` section: no units (the stage adds nothing to a run's digests).

Units: ``segment-<chunk>`` (computed segments: the chunk with its halo, saved), ``stitch`` (the
ids of every chunk's segments, two chunks in memory at a time), ``zonal-<chunk>`` (the chunk's
ids and per-segment sums), ``model`` (sums added by id, samples, fit, one label per segment),
``maps`` (the label COG and the polygons, chunk by chunk) and ``report``.
"""

from __future__ import annotations

import io
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from pipeline.errors import InputDataError
from pipeline.model import GridSpec, Window
from pipeline.run.context import PlanContext, RunContext
from pipeline.run.executor import StageWork
from pipeline.run.stage import StagePlan, stage_digest
from pipeline.run.units import Unit, window_key
from pipeline.stages.cube import Cubes

NAME = "objects"
VERSION = 1
FOLDER = "objects"
LABELS = f"{FOLDER}/labels.tif"
SEGMENTS = f"{FOLDER}/segments.tif"
POLYGONS = f"{FOLDER}/segments.gpkg"
TABLE = f"{FOLDER}/segments.parquet"
REPORT = f"{FOLDER}/report.json"
MAP_STORE = f"{FOLDER}/map.zarr"
IDS_STORE = f"{FOLDER}/ids.zarr"


def digest(*parts: Any) -> str:
    return stage_digest(NAME, VERSION, *parts)


def _part(kind: str, window: Window) -> str:
    return f"{FOLDER}/parts/{kind}-{window_key(window)}.npz"


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
        if config.task != "classification" or cubes.tiled or samples.windowed:
            raise InputDataError(
                "an objects section was given but the run is not a single-grid classification "
                "run with samples on one map",
                fix="remove the objects section, or classify one grid",
                field="objects",
            )
        tile = cubes.tiles[0]
        grid = tile.cube.grid
        windows = tuple(tile.cube.windows)
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
        cube_digests = [cubes.cube_digests[(None, w)] for w in windows]
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
        zonal = tuple(
            Unit(NAME, f"zonal-{window_key(w)}", digest(made, d, w), payload=w, pixels=w.n_pixels)
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
                windows, segment, stitch, zonal, model, maps, report, grid, kind, variables
            ),
            files=files,
        )

    def run(self, context: RunContext) -> None:
        plan: ObjectsPlan | None = context.stage_plan(NAME).outputs
        if plan is None:
            return
        config, store = context.config, context.store
        assert config.objects is not None
        cubes: Cubes = context.stage_plan("cube").outputs
        shared = ObjectsContext(
            store.root,
            cubes.tiles[0].cube_url,
            tuple(cubes.cube.time_series_variables),
            tuple(cubes.cube.feature_names),
            plan.variables,
            plan.grid,
            plan.windows,
            plan.kind,
            config.objects,
            config.model,
            config.sampling.seed,
            context.layout.relative(context.layout.samples),
            context.layout.labels_name,
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


@dataclass(frozen=True)
class ObjectsContext:
    root: str
    cube: str
    features: tuple[tuple[str, str], ...]
    feature_names: tuple[str, ...]
    segment_variables: tuple[tuple[str, str], ...]
    grid: GridSpec
    windows: tuple[Window, ...]
    kind: str
    settings: Any
    model: Any
    seed: int
    samples: str
    pixel_labels: str


def _save(root: str, name: str, **arrays: Any) -> None:
    from pipeline.storage import RunStore

    buffer = io.BytesIO()
    np.savez(buffer, **arrays)
    with RunStore(root).publish(name) as target:
        target.write_bytes(buffer.getvalue())


def _load(root: str, name: str) -> dict[str, np.ndarray]:
    from pipeline.storage import RunStore

    with RunStore(root).fetch(name) as local, np.load(local) as data:
        return {k: data[k] for k in data.files}


def segment_unit(context: ObjectsContext, window: Window) -> dict[str, Any]:
    from pipeline.cube.store import read_features
    from pipeline.objects.segments import SegmentParams, segment_chunk

    s = context.settings.segmentation
    params = SegmentParams(s.method, s.size, s.compactness, s.halo)
    shape = (context.grid.height, context.grid.width)

    def read(w: Window) -> np.ndarray:
        return read_features(context.cube, list(context.segment_variables), w)

    chunk = segment_chunk(read, shape, window, params)
    outer = chunk.outer
    _save(
        context.root,
        _part("segments", window),
        labels=chunk.labels,
        anchors=chunk.anchors,
        outer=np.array([outer.row_off, outer.col_off, outer.height, outer.width]),
    )
    return {"segments": int(chunk.labels.max())}


def _chunk(context: ObjectsContext, index: int) -> Any:
    from pipeline.objects.segments import ChunkSegments

    window = context.windows[index]
    data = _load(context.root, _part("segments", window))
    return ChunkSegments(
        window, Window(*(int(v) for v in data["outer"])), data["labels"], data["anchors"]
    )


def stitch_unit(context: ObjectsContext, _payload: Any) -> dict[str, Any]:
    from functools import lru_cache

    from pipeline.objects.segments import neighbours, stitch

    load = lru_cache(maxsize=2)(lambda i: _chunk(context, i))
    ids = stitch(len(context.windows), load, neighbours(context.windows))
    _save(context.root, f"{FOLDER}/parts/ids.npz", **{str(i): v for i, v in enumerate(ids)})
    return {"segments": len(np.unique(np.concatenate(ids)[np.concatenate(ids) > 0]))}


def _ids(context: ObjectsContext, window: Window) -> np.ndarray:
    if context.kind == "computed":
        from pipeline.objects.segments import core_ids

        index = context.windows.index(window)
        ids = _load(context.root, f"{FOLDER}/parts/ids.npz")[str(index)]
        return core_ids(_chunk(context, index), ids)
    from pipeline.objects.build import user_ids

    return user_ids(context.settings.segmentation.path, context.kind, context.grid, window)


def zonal_unit(context: ObjectsContext, window: Window) -> dict[str, Any]:
    from pipeline.cube.store import read_features
    from pipeline.objects.zonal import zonal_sums

    ids = _ids(context, window)
    stack = read_features(context.cube, list(context.features), window)
    sums = zonal_sums(ids, stack)
    _save(
        context.root,
        _part("zonal", window),
        core=ids,
        ids=sums.ids,
        count=sums.count,
        sums=sums.sums,
        squares=sums.squares,
    )
    return {"segments": int(sums.ids.size)}


def model_unit(context: ObjectsContext, _payload: Any) -> dict[str, Any]:
    import geopandas as gpd
    import pandas as pd

    from pipeline.learn import train_model
    from pipeline.learn.learner import predict_rows
    from pipeline.objects.build import assign, feature_names
    from pipeline.objects.zonal import ZonalSums, combine, statistics
    from pipeline.samples.split import TRAIN
    from pipeline.storage import RunStore

    parts = []
    store = RunStore(context.root)
    with store.fetch(context.samples) as local:
        samples = gpd.read_parquet(local)
    rows, cols = samples["row"].to_numpy(), samples["col"].to_numpy()
    sample_ids = np.zeros(len(samples), dtype=np.int64)
    for window in context.windows:
        data = _load(context.root, _part("zonal", window))
        parts.append(ZonalSums(data["ids"], data["count"], data["sums"], data["squares"]))
        r0, c0 = window.row_off, window.col_off
        inside = (
            (rows >= r0) & (rows < r0 + window.height) & (cols >= c0) & (cols < c0 + window.width)
        )
        sample_ids[inside] = data["core"][rows[inside] - r0, cols[inside] - c0]
    total = combine(parts)
    mean, std = statistics(total)
    stats = {"mean": mean, "std": std}
    chosen = list(context.settings.statistics)
    names = feature_names(context.feature_names, chosen)
    features = np.concatenate([stats[s] for s in chosen], axis=1).astype(np.float32)
    table = pd.DataFrame(features, columns=names)
    table.insert(0, "pixels", total.count)
    table.insert(0, "segment", total.ids)
    sizes = pd.Series(total.count, index=total.ids)
    chosen_samples = assign(sample_ids, samples, sizes, context.settings.min_overlap)
    table = table.merge(chosen_samples, on="segment", how="left")
    complete = ~table[names].isna().any(axis=1)
    training = table[(table["split"] == TRAIN) & complete]
    if training["label"].nunique() < 2:
        raise InputDataError(
            f"{len(training)} training segment(s) of {training['label'].nunique()} class(es): "
            "too few to fit a model",
            fix="make the segments smaller (objects.segmentation.size) than the reference "
            "polygons, or lower objects.min_overlap",
            field="objects",
        )
    model, contract = train_model(
        context.model,
        training[names].to_numpy(np.float32),
        training["label"].to_numpy().astype(np.int64),
        names,
        context.seed,
        groups=training["polygon_id"].to_numpy(),
    )
    table["predicted"] = 0
    table["confidence"] = 255
    found = predict_rows(
        model, table[names].to_numpy(np.float32), "classification", complete.to_numpy()
    )
    if found.probabilities is not None and found.classes is not None:
        best = found.probabilities.argmax(axis=1)
        table.loc[complete, "predicted"] = found.classes[best]
        table.loc[complete, "confidence"] = np.round(found.probabilities.max(axis=1) * 100).astype(
            int
        )
    with store.publish(TABLE) as target:
        table.to_parquet(target)
    return {
        "segments": len(table),
        "training_segments": len(training),
        "classes": [int(c) for c in contract.classes],
    }


def maps_unit(context: ObjectsContext, _payload: Any) -> dict[str, Any]:
    import geopandas as gpd
    import pandas as pd
    import zarr

    from pipeline.objects.build import polygons_of
    from pipeline.predict.blockwise import (
        CONFIDENCE_NODATA,
        CONFIDENCE_VARIABLE,
        LABEL_VARIABLE,
        MapEncoding,
        create_map_store,
    )
    from pipeline.predict.outputs import tiles_to_cog
    from pipeline.storage import RunStore

    store = RunStore(context.root)
    with store.fetch(TABLE) as local:
        table = pd.read_parquet(local)
    ids = table["segment"].to_numpy()
    labels = table["predicted"].to_numpy()
    confidence = table["confidence"].to_numpy()
    classes = tuple(sorted(int(c) for c in set(labels.tolist()) - {0})) or (1,)
    encoding = MapEncoding.for_classes(classes)
    url = store.url(MAP_STORE)
    store.remove(MAP_STORE)
    chunk = max(w.height for w in context.windows)
    create_map_store(url, context.grid, chunk, encoding)
    group = zarr.open_group(url, mode="r+")
    ids_url = store.url(IDS_STORE)
    store.remove(IDS_STORE)
    zarr.open_group(ids_url, mode="w").create_array(
        "segment",
        shape=(context.grid.height, context.grid.width),
        chunks=(chunk, chunk),
        dtype="int64",
        fill_value=0,
    )
    segment_array = zarr.open_group(ids_url, mode="r+")["segment"]
    pieces: list[tuple[int, Any]] = []
    for window in context.windows:
        core = _load(context.root, _part("zonal", window))["core"]
        at = np.clip(np.searchsorted(ids, core), 0, max(len(ids) - 1, 0))
        found = (core > 0) & (ids[at] == core) if len(ids) else np.zeros(core.shape, bool)
        rows, cols = window.slices
        out = np.where(found & (labels[at] > 0), labels[at], encoding.nodata)
        group[LABEL_VARIABLE][rows, cols] = out.astype(encoding.dtype)  # type: ignore[index]
        group[CONFIDENCE_VARIABLE][rows, cols] = np.where(  # type: ignore[index]
            found & (labels[at] > 0), confidence[at], CONFIDENCE_NODATA
        ).astype(np.uint8)
        segment_array[rows, cols] = core  # type: ignore[index]
        pieces.extend(polygons_of(core, context.grid, window))
    for name, variable, nodata, resampling in (
        (LABELS, LABEL_VARIABLE, float(encoding.nodata), "mode"),
        (SEGMENTS, "segment", 0.0, "nearest"),
    ):
        source = ids_url if variable == "segment" else url
        with store.publish(name) as target:
            tiles_to_cog(
                ((source, context.grid),),
                variable,
                context.grid,
                target,
                nodata=nodata,
                overview_resampling=resampling,
            )
    pieces_frame = gpd.GeoDataFrame(
        {"segment": [p[0] for p in pieces]}, geometry=[p[1] for p in pieces], crs=context.grid.crs
    )
    polygons = pieces_frame.dissolve(by="segment").reset_index()  # a segment across chunks: one
    keep = ["segment", "pixels", "label", "split", "predicted", "confidence"]
    stats = [c for c in table.columns if c not in keep and c != "polygon_id"]
    polygons = polygons.merge(table[keep + stats], on="segment", how="left")
    with store.publish(POLYGONS) as target:
        polygons.to_file(target, driver="GPKG", layer="segments")
    return {"segments": len(polygons)}


def report_unit(context: ObjectsContext, _payload: Any) -> dict[str, Any]:
    import json

    import geopandas as gpd
    import pandas as pd
    import rasterio

    from pipeline.samples.split import VALIDATION
    from pipeline.storage import RunStore
    from pipeline.validate.metrics import classification_metrics

    store = RunStore(context.root)
    with store.fetch(TABLE) as local:
        table = pd.read_parquet(local)
    with store.fetch(context.samples) as local:
        samples = gpd.read_parquet(local)
    validation = samples[samples["split"] == VALIDATION]
    rows, cols = validation["row"].to_numpy(), validation["col"].to_numpy()
    with store.fetch(LABELS) as path, rasterio.open(path) as src:
        objects, object_nodata = src.read(1)[rows, cols], src.nodata
    with store.fetch(context.pixel_labels) as path, rasterio.open(path) as src:
        pixels, pixel_nodata = src.read(1)[rows, cols], src.nodata
    both = (objects != object_nodata) & (pixels != pixel_nodata)
    reference = validation["label"].to_numpy()[both]
    per_pixel = {
        "objects": classification_metrics(reference, objects[both].astype(np.int64)),
        "pixels": classification_metrics(reference, pixels[both].astype(np.int64)),
    }
    segments = table[(table["split"] == VALIDATION) & (table["predicted"] > 0)]
    per_segment = classification_metrics(
        segments["label"].to_numpy().astype(np.int64),
        segments["predicted"].to_numpy().astype(np.int64),
    )
    document = {
        "segmentation": context.kind,
        "segments": len(table),
        "per_pixel": {
            "validation_pixels": int(both.sum()),
            **{
                k: {
                    "overall_accuracy": m.overall_accuracy,
                    "kappa": m.kappa,
                    "macro_f1": m.macro_f1,
                }
                for k, m in per_pixel.items()
            },
        },
        "per_segment": {"segments": len(segments), **per_segment.to_dict()},
    }
    with store.publish(REPORT) as target:
        target.write_text(json.dumps(document, indent=2, default=float), encoding="utf-8")
    return {
        "object_overall_accuracy": per_pixel["objects"].overall_accuracy,
        "pixel_overall_accuracy": per_pixel["pixels"].overall_accuracy,
        "validation_pixels": int(both.sum()),
        "validation_segments": len(segments),
    }


STAGE = ObjectsStage()
