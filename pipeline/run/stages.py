"""The chain's stages as units: what each unit computes, where it writes, and its digest.

    discover (1) -> cube (chunks) -> samples (chunks with samples, then 1 table) -> train (1)
    -> predict (chunks) -> mosaic (1 per map) -> validate (1)

Digests form a chain: a unit's digest hashes its own parameters and the digests of the units it
reads, so a change reruns exactly the units downstream of it (a model parameter: train,
predict, mosaic, validate; the period: everything). ``STAGE_VERSIONS`` enter every digest of
their stage: bump one when a change of code changes that stage's output bytes.

The functions below run on dask workers (or in the driver for the small stages). Their first
argument is the stage's context (shared, stored once in the run store), their second the unit's
payload; they return a small JSON summary that the ledger keeps.
"""

from __future__ import annotations

import contextlib
import dataclasses
import io
import re
import shutil
import tempfile
import threading
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from pipeline.cube.build import CubeChunkTask, build_chunk
from pipeline.cube.plan import CubePlan
from pipeline.model import ClassInfo, GridSpec, Window
from pipeline.run.units import Unit, content_hash, window_key
from pipeline.samples.extract import ExtractTask, extract_chunk
from pipeline.stages import BUILT_IN
from pipeline.storage import RunStore

STAGE_VERSIONS = dict.fromkeys(BUILT_IN, 1)
STORE_KEY = "store"  # ledger key of a stage's Zarr store set-up (not a unit)


def digest(stage: str, *parts: Any) -> str:
    return content_hash(stage, STAGE_VERSIONS[stage], *parts)


_SIGNED = re.compile(
    r"[?&](X-Amz-Signature|X-Amz-Credential|X-Goog-Signature|sig|signature|token|se|st)=",
    re.IGNORECASE,
)


def unsigned_href(href: str) -> str:
    """``href`` without the query string of a signed URL (Planetary Computer SAS tokens,
    presigned S3 URLs): signatures expire and change, the file they open does not."""
    return href.split("?", 1)[0] if _SIGNED.search(href) else href


def unsigned(acquisitions: Any) -> list[Any]:
    """Acquisitions with unsigned asset hrefs, for digests: a re-signed catalog reruns nothing."""
    out = []
    for acquisition in acquisitions:
        assets = {
            key: dataclasses.replace(ref, href=unsigned_href(ref.href))
            for key, ref in acquisition.assets.items()
        }
        out.append(dataclasses.replace(acquisition, assets=assets))
    return out


def cube_identity(plan: CubePlan) -> CubePlan:
    """The plan as it enters digests: every field, with unsigned hrefs."""
    sensors = tuple(
        dataclasses.replace(s, acquisitions=tuple(unsigned(s.acquisitions))) for s in plan.sensors
    )
    return dataclasses.replace(plan, sensors=sensors)


# --- cube ----------------------------------------------------------------------------------------


def tile_prefix(tile: str | None) -> str:
    """The prefix of a tile's unit keys (none in a single-grid run)."""
    return "" if tile is None else f"{tile}-"


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
            "cube",
            tile_prefix(tile) + window_key(w),
            digest("cube", store_digest, w),
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


# --- samples -------------------------------------------------------------------------------------


@dataclass(frozen=True)
class ExtractContext:
    root: str
    tasks: tuple[Any, ...]
    """ExtractTask (from the cube) or CogExtractTask (from the imagery), by unit index."""


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
                "samples",
                key,
                digest(
                    "samples",
                    *source(tile, task),
                    _pixel_array(task.rows),
                    _pixel_array(task.cols),
                ),
                payload=(index, key),
                pixels=len(task.rows),
            )
        )
    table = Unit("samples", "table", digest("samples", [u.digest for u in parts], table_parts))
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


def extract_unit(context: ExtractContext, payload: tuple[int, str]) -> dict[str, Any]:
    from pipeline.samples.extract import CogExtractTask, extract_from_cogs

    index, key = payload
    task = context.tasks[index]
    values = extract_from_cogs(task) if isinstance(task, CogExtractTask) else extract_chunk(task)
    buffer = io.BytesIO()
    np.save(buffer, np.ascontiguousarray(values, dtype=np.float32), allow_pickle=False)
    RunStore(context.root).write_bytes(part_name(key), buffer.getvalue())
    return {"pixels": int(values.shape[0])}


def read_part(store: RunStore, key: str) -> np.ndarray:
    return np.load(io.BytesIO(store.read_bytes(part_name(key))), allow_pickle=False)


# --- train ---------------------------------------------------------------------------------------


@dataclass(frozen=True)
class TrainContext:
    root: str
    samples: str
    model: str
    model_spec: Any
    task: str
    target: str
    feature_names: tuple[str, ...]
    seed: int
    min_pixels_per_class: int
    regions: tuple[str, ...] = ()
    """Runs with regions: the region names (a unit's payload is (run, region index))."""


def region_model(model: str, name: str) -> str:
    """Where the model of region ``name`` is saved."""
    return f"{model}/regions/{name}"


def split_column(run: int) -> str:
    """The samples table's column with run ``run``'s side of each pixel (train, validation,
    or empty: a pixel only another run uses)."""
    return "split" if run == 0 else f"split_r{run}"


def run_model(model: str, run: int) -> str:
    """Where run ``run``'s model is saved: the model folder for run 0 (the one that maps),
    ``<model>-runs/run-<r>`` for the others (they are scored on their validation pixels)."""
    return model if run == 0 else f"{model}-runs/run-{run}"


def train_unit(context: TrainContext, payload: Any) -> dict[str, Any]:
    import geopandas as gpd

    from pipeline.errors import InputDataError
    from pipeline.learn import load_external_model, save_model, train_model
    from pipeline.learn.contract import check_features
    from pipeline.samples.select import drop_small_classes
    from pipeline.samples.split import TRAIN

    store = RunStore(context.root)
    spec = context.model_spec
    names = list(context.feature_names)
    region: int | None = None
    if isinstance(payload, tuple):
        run, region = int(payload[0]), int(payload[1])
    else:
        run = int(payload or 0)
    seed = context.seed + run
    info: dict[str, Any] = {"left_out_classes": [], "training_pixels": 0, "training_polygons": 0}
    if spec.kind == "external":
        model, contract = load_external_model(spec, context.task)  # type: ignore[arg-type]
    else:
        with store.fetch(context.samples) as local:
            samples = gpd.read_parquet(local)
        training = samples[samples[split_column(run)] == TRAIN]
        if region is not None:  # this region's model learns from its own features only
            training = training[training["region"] == region]
        training = training[~training[names].isna().any(axis=1)]
        if context.task == "classification":
            before = set(training["label"].unique().tolist())
            training = drop_small_classes(training, context.min_pixels_per_class)
            info["left_out_classes"] = sorted(
                int(c) for c in before - set(training["label"].unique().tolist())
            )
            if training["label"].nunique() < 2:
                raise InputDataError(
                    f"training needs at least two classes with {context.min_pixels_per_class}+ "
                    f"pixels; found {training['label'].nunique()}",
                    fix="add reference polygons of more classes over the mapped area, or lower "
                    "spec.sampling.min_pixels_per_class",
                    field="spec.reference",
                )
        elif training.empty:
            raise InputDataError(
                "no training pixel has a value for every feature",
                fix="check the period and the reference data",
                field="spec.reference",
            )
        model, contract = train_model(
            spec,
            training[names].to_numpy(dtype=np.float32),
            training[context.target].to_numpy(),
            names,
            seed,
            task=context.task,  # type: ignore[arg-type]
            groups=training["polygon_id"].to_numpy(),
        )
        info["training_pixels"] = len(training)
        info["training_polygons"] = int(training["polygon_id"].nunique())
    check_features(contract, names)
    target = run_model(context.model, run)
    if region is not None:
        target = region_model(target, context.regions[region])
        info["region"] = context.regions[region]
    with store.publish(target) as folder:
        save_model(model, contract, folder)
    info["classes"] = [int(c) for c in contract.classes]
    info["kind"] = str(getattr(contract, "kind", spec.kind))
    return info


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


# --- predict -------------------------------------------------------------------------------------


@dataclass(frozen=True)
class PredictContext:
    root: str
    stores: tuple[tuple[str, str], ...]
    """Per tile, in tile order: the locations of its cube and of its map store."""
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
            "predict",
            tile_prefix(tile) + window_key(w),
            digest("predict", train_digest, cube_digests[(tile, w)], w),
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
    return {
        "predicted_pixels": int(report.predicted_pixels),
        "nodata_pixels": int(report.nodata_pixels),
    }


# --- mosaic --------------------------------------------------------------------------------------


@dataclass(frozen=True)
class MapFile:
    """One COG of the map: its role (labels, confidence), path in the store, and once the
    model is known, the map store variable, no-data value and overview resampling."""

    role: str
    name: str
    variable: str = ""
    nodata: float = 0.0
    resampling: str = "nearest"


@dataclass(frozen=True)
class MosaicContext:
    root: str
    tiles: tuple[tuple[str, GridSpec], ...]
    """Per tile, in tile order: its map store and its grid."""
    grid: GridSpec
    """The mosaic's grid (the only tile's grid in a single-grid run)."""


def mosaic_units(
    files: list[MapFile], predict_digests: list[str], grid: GridSpec, *, prefix: str = ""
) -> list[Unit]:
    """One unit per map file (``prefix``: a further period's, e.g. ``2016-``)."""
    return [
        Unit(
            "mosaic",
            prefix + f.role,
            digest("mosaic", predict_digests, f.role, f.name, grid),
            payload=f,
            pixels=grid.width * grid.height,
        )
        for f in files
    ]


@dataclass(frozen=True)
class CatalogContext:
    root: str
    run_name: str
    period: tuple[Any, Any]
    legend: tuple[ClassInfo, ...]
    files: tuple[MapFile, ...]
    catalog: str
    """Store-relative folder of the STAC collection."""


def catalog_unit(context: CatalogContext, _payload: Any) -> dict[str, Any]:
    """A STAC item per map file (projection, raster and, for labels, classification
    extensions) in a self-contained collection beside the maps."""
    from pipeline.predict.stac import describe_cog, output_item, write_run_catalog
    from pipeline.validate.mapped_area import count_map_classes

    store = RunStore(context.root)
    outputs = []
    counts = None
    with contextlib.ExitStack() as stack:
        for item in context.files:
            local = stack.enter_context(store.fetch(item.name))
            outputs.append(describe_cog(local, role=item.role, href=item.name))
            if item.role == "labels":
                counts = count_map_classes(local).pixels
    items = [
        output_item(
            output,
            run_name=context.run_name,
            period=context.period,
            legend=context.legend if output.role == "labels" else (),
            others=[o for o in outputs if o is not output],
            class_counts=counts if output.role == "labels" else None,
        )
        for output in outputs
    ]
    name = write_run_catalog(store, context.catalog, items, run_name=context.run_name)
    return {"collection": name, "items": [i.id for i in items]}


def mosaic_unit(context: MosaicContext, item: MapFile) -> dict[str, Any]:
    from pipeline.predict.outputs import tiles_to_cog

    store = RunStore(context.root)
    with store.publish(item.name) as target:
        tiles_to_cog(
            context.tiles,
            item.variable,
            context.grid,
            target,
            nodata=item.nodata,
            overview_resampling=item.resampling,
        )
        size = target.stat().st_size
    return {"bytes": int(size), "path": item.name}


# --- validate ------------------------------------------------------------------------------------


@dataclass(frozen=True)
class ValidateContext:
    root: str
    samples: str
    labels: str
    confidence: str
    report: str
    legend: tuple[ClassInfo, ...]
    nodata: int | float
    classes: tuple[int, ...]
    title: str
    details: dict[str, Any]
    tile_maps: tuple[tuple[str, str], ...] = ()
    """Tiled runs: per tile, its id and map store (validation pixels are read there, on their
    own tile's grid, not through the resampled mosaic)."""
    label_variable: str = "labels"
    """The map store variable read at the validation pixels (labels, or values)."""
    task: str = "classification"
    values: str = "maps/values.tif"
    """The value map of a regression run."""
    run_models: tuple[str, ...] = ()
    """Several runs: each run's model folder (run 0's made the map), scored on its own
    validation pixels for the across-runs section."""
    seeds: tuple[int, ...] = ()
    feature_names: tuple[str, ...] = ()
    regions: tuple[str, ...] = ()
    """Runs with regions: each validation pixel is scored with its own region's model of the
    run (without the border blend of the map)."""
    model: str = ""
    """The model folder (run 0's), for validation from the samples' features."""
    from_samples: bool = False
    """Samples with their own windows: each validation pixel is scored on its own window's
    features (the model applied to them in the samples table), not read from one map."""


def _predict_samples(
    store: RunStore,
    folder: str,
    rows: pd.DataFrame,
    names: Sequence[str],
    regions: Sequence[str],
) -> np.ndarray:
    """The model of ``folder`` (or each row's region model) applied to the rows' features."""
    from pipeline.learn import load_model, model_input

    def predict(path: str, part: pd.DataFrame) -> np.ndarray:
        with store.fetch(path) as local:
            model, _ = load_model(Path(local))
        return np.asarray(model.predict(model_input(model, part[list(names)].to_numpy(np.float32))))

    if not regions:
        return predict(folder, rows)
    parts = []
    for index, name in enumerate(regions):
        mine = rows[rows["region"] == index]
        if len(mine):
            parts.append(pd.Series(predict(region_model(folder, name), mine), mine.index))
    return pd.concat(parts).reindex(rows.index).to_numpy()


def _sample_predictions(context: ValidateContext, store: RunStore, rows: pd.DataFrame) -> Any:
    """Each validation row's prediction from its own features; no-data (the map's) where a
    feature is missing (a pixel never valid in its window)."""
    dtype = np.float64 if context.task == "regression" else np.int64
    out = np.full(len(rows), context.nodata, dtype=dtype)
    names = list(context.feature_names)
    complete = ~rows[names].isna().any(axis=1).to_numpy()
    if complete.any():
        predicted = _predict_samples(store, context.model, rows[complete], names, context.regions)
        out[complete] = predicted.astype(dtype)
    return out


def _across_runs(
    context: ValidateContext, store: RunStore, samples: pd.DataFrame, classes: list[int]
) -> Any:
    """Each run's scores on its own validation pixels (its model applied to their features in
    the samples table), summarised as mean and 95 % interval; None for a single run."""
    if len(context.run_models) < 2:
        return None
    from pipeline.samples.split import VALIDATION
    from pipeline.validate.aggregate import aggregate_classification, aggregate_regression
    from pipeline.validate.metrics import classification_metrics
    from pipeline.validate.regression import regression_metrics

    names = list(context.feature_names)
    scores: list[Any] = []
    for run, folder in enumerate(context.run_models):
        rows = samples[samples[split_column(run)] == VALIDATION]
        rows = rows[~rows[names].isna().any(axis=1)]
        predicted = _predict_samples(store, folder, rows, names, context.regions)
        if context.task == "regression":
            scores.append(regression_metrics(rows["value"].to_numpy(np.float64), predicted))
        else:
            reference = rows["label"].to_numpy()
            used = sorted(set(classes) | set(reference.tolist()))
            scores.append(classification_metrics(reference, predicted.astype(np.int64), used))
    if context.task == "regression":
        return aggregate_regression(scores, context.seeds)
    return aggregate_classification(scores, context.seeds)


def _tile_labels(context: ValidateContext, validation: pd.DataFrame) -> np.ndarray:
    """The mapped class (or value) of each validation pixel, read from its tile's map store."""
    import zarr

    dtype = np.float64 if context.task == "regression" else np.int64
    out = np.full(len(validation), context.nodata, dtype=dtype)
    tiles = validation["tile"].to_numpy()
    for tile, store in context.tile_maps:
        here = tiles == tile
        if not here.any():
            continue
        rows = validation["row"].to_numpy()[here]
        cols = validation["col"].to_numpy()[here]
        array = zarr.open_group(store, mode="r")[context.label_variable]
        r0, c0 = int(rows.min()), int(cols.min())
        block = np.asarray(array[r0 : int(rows.max()) + 1, c0 : int(cols.max()) + 1])  # type: ignore[index]
        out[here] = block[rows - r0, cols - c0]
    return out


def validate_unit(context: ValidateContext, _payload: Any) -> dict[str, Any]:
    import warnings

    import geopandas as gpd
    import rasterio

    from pipeline.samples.split import VALIDATION
    from pipeline.validate.metrics import classification_metrics
    from pipeline.validate.report import write_report
    from pipeline.warnings import DataQualityWarning

    store = RunStore(context.root)
    with store.fetch(context.samples) as local:
        samples = gpd.read_parquet(local)
    validation = samples[samples["split"] == VALIDATION]
    if context.task == "regression":
        return _validate_values(context, store, samples, validation)
    with store.fetch(context.labels) as labels_path, store.fetch(context.confidence) as conf_path:
        if context.from_samples:
            predicted = _sample_predictions(context, store, validation)
        elif context.tile_maps:
            predicted = _tile_labels(context, validation)
        else:
            with rasterio.open(labels_path) as src:
                labels_map = src.read(1)
            predicted = labels_map[validation["row"].to_numpy(), validation["col"].to_numpy()]
        mapped = predicted != context.nodata
        unmapped = int((~mapped).sum())
        if unmapped:
            warnings.warn(
                f"{unmapped} validation pixel(s) fall on unmapped (never valid) pixels and are "
                "not counted in the accuracy",
                DataQualityWarning,
                stacklevel=2,
            )
        reference = validation["label"].to_numpy()[mapped]
        predicted = predicted[mapped].astype(np.int64)
        classes = sorted(set(context.classes) | set(reference.tolist()))
        metrics = classification_metrics(reference, predicted, classes)
        known = {c.code for c in context.legend}
        legend = [c for c in context.legend if c.code in classes] + [
            ClassInfo(code, str(code)) for code in classes if code not in known
        ]
        details = {
            **context.details,
            "validation polygons / pixels": (
                f"{validation['polygon_id'].nunique()} / {int(mapped.sum())}"
            ),
        }
        runs = _across_runs(context, store, samples, classes)
        # Validation pixels of several windows are not a sample of the one map: no area estimate.
        area = None
        if not context.from_samples:
            area = _area_assessment(labels_path, reference, predicted, classes)
        with store.publish(context.report) as folder:
            write_report(
                folder,
                metrics,
                legend,
                labels_path,
                conf_path,
                title=context.title,
                details=details,
                area=area,
                runs=runs,
            )
    out = metrics.to_dict()
    return {k: out[k] for k in ("overall_accuracy", "kappa", "n_samples") if k in out}


def _area_assessment(
    labels_path: Path, reference: np.ndarray, predicted: np.ndarray, classes: list[int]
) -> Any:
    """Olofsson area and accuracy estimates from the label map's class areas, or None (with a
    warning saying why) when the map and the validation pixels do not allow them."""
    import warnings

    from pipeline.errors import SitsflowError
    from pipeline.validate.mapped_area import assess_area, count_map_classes
    from pipeline.warnings import DataQualityWarning

    try:
        return assess_area(count_map_classes(labels_path), reference, predicted, classes=classes)
    except SitsflowError as error:
        warnings.warn(
            f"no area-weighted accuracy or class areas in the report: {error}",
            DataQualityWarning,
            stacklevel=2,
        )
        return None


def _validate_values(
    context: ValidateContext, store: RunStore, samples: pd.DataFrame, validation: pd.DataFrame
) -> dict[str, Any]:
    """A regression run's report: the mapped value against the reference value of each
    validation pixel (RMSE, MAE, bias, R², a scatter plot and the map)."""
    import warnings

    import rasterio

    from pipeline.validate.report import write_regression_report
    from pipeline.warnings import DataQualityWarning

    with store.fetch(context.values) as values_path:
        if context.from_samples:
            predicted = _sample_predictions(context, store, validation)
        elif context.tile_maps:
            predicted = _tile_labels(context, validation)
        else:
            with rasterio.open(values_path) as src:
                value_map = src.read(1)
            rows, cols = validation["row"].to_numpy(), validation["col"].to_numpy()
            predicted = value_map[rows, cols].astype(np.float64)
        mapped = np.isfinite(predicted)
        unmapped = int((~mapped).sum())
        if unmapped:
            warnings.warn(
                f"{unmapped} validation pixel(s) fall on unmapped (never valid) pixels and are "
                "not counted in the scores",
                DataQualityWarning,
                stacklevel=2,
            )
        reference = validation["value"].to_numpy(dtype=np.float64)[mapped]
        details = {
            **context.details,
            "validation polygons / pixels": (
                f"{validation['polygon_id'].nunique()} / {int(mapped.sum())}"
            ),
        }
        title = context.title.replace("accuracy on", "scores on")
        runs = _across_runs(context, store, samples, [])
        with store.publish(context.report) as folder:
            _, metrics = write_regression_report(
                folder,
                reference,
                predicted[mapped],
                values_path,
                title=title,
                details=details,
                runs=runs,
            )
    out = metrics.to_dict()
    return {k: out[k] for k in ("rmse", "mae", "bias", "r2", "n_samples") if k in out}


def frame_for_digest(frame: pd.DataFrame, columns: list[str]) -> pd.DataFrame:
    """The columns of ``frame`` that decide a digest, in a stable order."""
    present = [c for c in columns if c in frame.columns]
    return frame[present].reset_index(drop=True)
