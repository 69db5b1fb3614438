"""validate: the map at the validation pixels (or, for samples with their own windows, the
model applied to their features) -> metrics -> report (JSON, HTML, PNGs); with several runs,
each run scored on its own validation pixels."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from pipeline.model import ClassInfo
from pipeline.run.context import PlanContext, RunContext
from pipeline.run.executor import StageWork
from pipeline.run.stage import StagePlan, stage_digest
from pipeline.run.units import Unit
from pipeline.stages.common import split_column
from pipeline.stages.train import region_model, run_model
from pipeline.storage import RunStore

NAME = "validate"
VERSION = 1


def digest(*parts: Any) -> str:
    return stage_digest(NAME, VERSION, *parts)


@dataclass(frozen=True)
class ReportFiles:
    """Store-relative names of what validation reads and writes."""

    samples: str
    labels: str
    confidence: str
    values: str
    """The value map of a regression run."""
    report: str


@dataclass(frozen=True)
class MapReading:
    """How the mapped class (or value) of a validation pixel is read."""

    nodata: int | float
    label_variable: str = "labels"
    """The map store variable read at the validation pixels (labels, or values)."""
    tile_maps: tuple[tuple[str, str], ...] = ()
    """Tiled runs: per tile, its id and map store (validation pixels are read there, on their
    own tile's grid, not through the resampled mosaic)."""
    from_samples: bool = False
    """Samples with their own windows: each validation pixel is scored on its own window's
    features (the model applied to them in the samples table), not read from one map."""


@dataclass(frozen=True)
class ScoredModels:
    """The models validation applies itself (across runs, per region, from the samples)."""

    model: str
    """The model folder (run 0's)."""
    classes: tuple[int, ...]
    feature_names: tuple[str, ...]
    run_models: tuple[str, ...] = ()
    """Several runs: each run's model folder (run 0's made the map), scored on its own
    validation pixels for the across-runs section."""
    seeds: tuple[int, ...] = ()
    regions: tuple[str, ...] = ()
    """Runs with regions: each validation pixel is scored with its own region's model of the
    run (without the border blend of the map)."""


@dataclass(frozen=True)
class ValidateContext:
    root: str
    task: str
    files: ReportFiles
    reading: MapReading
    models: ScoredModels
    legend: tuple[ClassInfo, ...]
    title: str
    details: dict[str, Any]
    features_word: str = "polygons"
    """What the reference's features are called: points, polygons or features (both)."""
    skipped: tuple[dict[str, str], ...] = ()
    """Catalog items the run left out (``on_bad_item: skip``): item, sensor, problem."""
    final_model: bool = False
    """The map is the final model's (``sampling.final_model: all``); the scores are run 0's."""


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
    out = np.full(len(rows), context.reading.nodata, dtype=dtype)
    names = list(context.models.feature_names)
    complete = ~rows[names].isna().any(axis=1).to_numpy()
    if complete.any():
        predicted = _predict_samples(
            store, context.models.model, rows[complete], names, context.models.regions
        )
        out[complete] = predicted.astype(dtype)
    return out


def _across_runs(
    context: ValidateContext, store: RunStore, samples: pd.DataFrame, classes: list[int]
) -> Any:
    """Each run's scores on its own validation pixels (its model applied to their features in
    the samples table), summarised as mean and 95 % interval; None for a single run."""
    if len(context.models.run_models) < 2:
        return None
    from pipeline.samples.split import VALIDATION
    from pipeline.validate.aggregate import aggregate_classification, aggregate_regression
    from pipeline.validate.metrics import classification_metrics
    from pipeline.validate.regression import regression_metrics

    names = list(context.models.feature_names)
    scores: list[Any] = []
    for run, folder in enumerate(context.models.run_models):
        rows = samples[samples[split_column(run)] == VALIDATION]
        rows = rows[~rows[names].isna().any(axis=1)]
        predicted = _predict_samples(store, folder, rows, names, context.models.regions)
        if context.task == "regression":
            scores.append(regression_metrics(rows["value"].to_numpy(np.float64), predicted))
        else:
            reference = rows["label"].to_numpy()
            used = sorted(set(classes) | set(reference.tolist()))
            scores.append(classification_metrics(reference, predicted.astype(np.int64), used))
    if context.task == "regression":
        return aggregate_regression(scores, context.models.seeds)
    return aggregate_classification(scores, context.models.seeds)


def _tile_labels(context: ValidateContext, validation: pd.DataFrame) -> np.ndarray:
    """The mapped class (or value) of each validation pixel, read from its tile's map store."""
    import zarr

    dtype = np.float64 if context.task == "regression" else np.int64
    out = np.full(len(validation), context.reading.nodata, dtype=dtype)
    tiles = validation["tile"].to_numpy()
    for tile, store in context.reading.tile_maps:
        here = tiles == tile
        if not here.any():
            continue
        rows = validation["row"].to_numpy()[here]
        cols = validation["col"].to_numpy()[here]
        array = zarr.open_group(store, mode="r")[context.reading.label_variable]
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
    with store.fetch(context.files.samples) as local:
        samples = gpd.read_parquet(local)
    validation = samples[samples["split"] == VALIDATION]
    if context.task == "regression":
        return _validate_values(context, store, samples, validation)
    with (
        store.fetch(context.files.labels) as labels_path,
        store.fetch(context.files.confidence) as conf_path,
    ):
        if context.reading.from_samples:
            predicted = _sample_predictions(context, store, validation)
        elif context.reading.tile_maps:
            predicted = _tile_labels(context, validation)
        else:
            with rasterio.open(labels_path) as src:
                labels_map = src.read(1)
            predicted = labels_map[validation["row"].to_numpy(), validation["col"].to_numpy()]
        mapped = predicted != context.reading.nodata
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
        classes = sorted(set(context.models.classes) | set(reference.tolist()))
        metrics = classification_metrics(reference, predicted, classes)
        known = {c.code for c in context.legend}
        legend = [c for c in context.legend if c.code in classes] + [
            ClassInfo(code, str(code)) for code in classes if code not in known
        ]
        details = {
            **context.details,
            f"validation {context.features_word} / pixels": (
                f"{validation['polygon_id'].nunique()} / {int(mapped.sum())}"
            ),
        }
        runs = _across_runs(context, store, samples, classes)
        # Validation pixels of several windows are not a sample of the one map: no area estimate.
        area = None
        if not context.reading.from_samples:
            area = _area_assessment(
                labels_path, reference, predicted, classes, context.features_word
            )
        with store.publish(context.files.report) as folder:
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
                skipped=context.skipped,
            )
    out = metrics.to_dict()
    return _console(
        {k: out[k] for k in ("overall_accuracy", "kappa", "n_samples") if k in out}, context, runs
    )


def _named_legend(legend: tuple[ClassInfo, ...], model_info: Any) -> tuple[ClassInfo, ...]:
    """The reference's legend, plus the classes only an external model knows, by its names."""
    known = {c.code for c in legend}
    names = (model_info or {}).get("class_names") or {}
    extra = sorted((int(k), str(v)) for k, v in names.items() if int(k) not in known)
    return (*legend, *(ClassInfo(code, name) for code, name in extra))


def _console(scores: dict[str, Any], context: ValidateContext, runs: Any) -> dict[str, Any]:
    """What the console prints after a run: the scores, what the reference's features are
    (points, polygons), and the mean and interval across repeated runs."""
    scores["features"] = context.features_word
    if runs is not None:
        scores["across_runs"] = runs.to_dict()
    if context.final_model:
        scores["scored_model"] = (
            "these are run 0's model's scores (sampling.final_model: all): the map is made by "
            "the final model, trained on every sample pixel, those of the validation "
            f"{context.features_word} included"
        )
    return scores


def _area_assessment(
    labels_path: Path,
    reference: np.ndarray,
    predicted: np.ndarray,
    classes: list[int],
    features: str = "polygons",
) -> Any:
    """Olofsson area and accuracy estimates from the label map's class areas, or None (with a
    warning saying why) when the map and the validation pixels do not allow them."""
    import warnings

    from pipeline.errors import SitsflowError
    from pipeline.validate.mapped_area import Sampling, assess_area, count_map_classes
    from pipeline.warnings import DataQualityWarning

    try:
        sampling: Sampling = "point_split" if features == "points" else "polygon_split"
        return assess_area(
            count_map_classes(labels_path), reference, predicted, classes=classes, sampling=sampling
        )
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

    with store.fetch(context.files.values) as values_path:
        if context.reading.from_samples:
            predicted = _sample_predictions(context, store, validation)
        elif context.reading.tile_maps:
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
            f"validation {context.features_word} / pixels": (
                f"{validation['polygon_id'].nunique()} / {int(mapped.sum())}"
            ),
        }
        title = context.title.replace("accuracy on", "scores on")
        runs = _across_runs(context, store, samples, [])
        with store.publish(context.files.report) as folder:
            _, metrics = write_regression_report(
                folder,
                reference,
                predicted[mapped],
                values_path,
                title=title,
                details=details,
                runs=runs,
                skipped=context.skipped,
            )
    out = metrics.to_dict()
    return _console(
        {k: out[k] for k in ("rmse", "mae", "bias", "r2", "n_samples") if k in out}, context, runs
    )


def _report_details(
    context: RunContext, model_info: dict[str, Any], unmapped: int
) -> dict[str, Any]:
    config = context.config
    cubes = context.stage_plan("cube").outputs
    samples = context.stage_plan("samples").outputs
    return {
        "run": config.name,
        "period": f"{config.period.start} .. {config.period.end}",
        **(
            {"also mapped": ", ".join(f"{p.label} ({p.start} .. {p.end})" for p in config.also_map)}
            if config.also_map
            else {}
        ),
        **(
            {
                "sample windows": ", ".join(
                    sorted({s.window for s in samples.sources if s.window})
                ),
                "validation": "each validation pixel scored on its own window's features "
                "(the model applied to them), not read from one map; no area estimate",
            }
            if samples.windowed
            else {}
        ),
        "sensors": ", ".join(
            f"{s.profile.name} ({len(s.acquisitions)} acquisitions -> {len(s.dates)} dates every "
            f"{s.profile.date_step_days} days)"
            for s in cubes.cube.sensors
        ),
        "grid": cubes.grid_text(),
        "model": f"{config.model.kind} {config.model.estimator} {config.model.params}",
        "features": len(cubes.cube.feature_names),
        f"training {samples.reference.feature_word} / pixels": (
            f"{model_info.get('training_polygons', 0)} / {model_info.get('training_pixels', 0)}"
        ),
        "classes left out of the model": model_info.get("left_out_classes") or "none",
        "unmapped pixels": unmapped,
        "stage seconds (this session)": {k: round(v, 1) for k, v in context.timings.items()},
    }


class Validate:
    name = NAME
    version = VERSION
    needs = ("samples", "train", "mosaic")
    # Its one unit runs on the driver (none on a worker: no worker_imports). What it imports
    # (matplotlib ...), imported while others compute.
    driver_imports = ("pipeline.validate.report",)

    def plan(self, context: PlanContext) -> StagePlan:
        layout = context.layout
        maps = context.outputs("mosaic")
        other_runs = context.outputs("train").other_runs
        unit = Unit(
            NAME,
            "report",
            digest(
                [u.digest for u in maps[0].map_units],
                context.input("samples").digest,
                layout.report_name,
                *([u.digest for u in other_runs] if other_runs else []),
            ),
        )
        if context.config.task == "extraction":
            return StagePlan(NAME)
        files = {
            "report": layout.relative(layout.report / "report.html"),
            "metrics": layout.relative(layout.report / "metrics.json"),
        }
        return StagePlan(NAME, [unit], files=files)

    def run(self, context: RunContext) -> None:
        from pipeline.predict.blockwise import LABEL_VARIABLE, VALUE_VARIABLE
        from pipeline.stages.postprocess import run_legend

        config, layout = context.config, context.layout
        cubes = context.stage_plan("cube").outputs
        samples = context.stage_plan("samples").outputs
        model_info = context.results["train"]
        predicted = context.results["predict"]
        runs = config.sampling.runs
        regions = samples.regions.names if samples.regions is not None else ()
        model = layout.relative(layout.model)
        # A final model maps (sampling.final_model: all): it has seen every validation pixel, so
        # the scores are run 0's model's, applied to its own held-out pixels' features.
        final = config.sampling.final_model == "all"
        details = _report_details(context, model_info, predicted["unmapped"])
        if final:
            word = samples.reference.feature_word
            details["model that mapped"] = (
                f"the final model (sampling.final_model: all), trained on every sample pixel: "
                f"{model_info.get('training_polygons', 0)} {word} / "
                f"{model_info.get('training_pixels', 0)} pixels; the scores are run 0's model's "
                f"on its own validation {word} (from their features in the samples table), "
                "which the final model saw in training; no area estimate"
            )
        validate_context = ValidateContext(
            context.store.root,
            config.task,
            ReportFiles(
                layout.relative(layout.samples),
                layout.labels_name,
                layout.confidence_name,
                layout.values_name,
                layout.report_name,
            ),
            MapReading(
                predicted["encoding"].nodata,
                VALUE_VARIABLE if config.task == "regression" else LABEL_VARIABLE,
                tuple((t.key or "", t.map_url) for t in cubes.tiles) if cubes.tiled else (),
                samples.windowed or final,
            ),
            ScoredModels(
                run_model(model, 0, final=final),
                tuple(model_info["classes"]),
                tuple(cubes.cube.feature_names),
                tuple(run_model(model, r, final=final) for r in range(runs)) if runs > 1 else (),
                tuple(config.sampling.seed + r for r in range(runs)),
                regions,
            ),
            _named_legend(
                samples.reference.legend
                if config.postprocess is None  # else the map products' colours, here too
                else run_legend(config, samples.reference.legend),
                model_info,
            ),
            f"sitsflow run {config.name}: accuracy on validation {samples.reference.feature_word}",
            details,
            samples.reference.feature_word,
            tuple(context.stage_plan("discover").facts.get("skipped_items", ())),
            final,
        )
        checked = context.run(
            StageWork(
                NAME,
                context.stage_plan(NAME).units,
                validate_unit,
                validate_context,
                on_cluster=False,
                description="accuracy report",
            )
        )
        context.metrics = dict(checked.summaries["report"])


STAGE = Validate()
