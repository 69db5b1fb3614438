"""A whole run: plan (pure checks, no write), then the stages on a dask cluster.

    discover -> cube (chunk units) -> samples (chunk units) -> train -> predict (chunk units)
    -> mosaic (COGs) -> validate (report)

``plan_run`` reads only metadata (catalog, reference attributes) and fails with a clear error on
bad input before anything is written. Each stage writes its outputs atomically, so a failure
leaves the outputs of finished stages intact and no half-written file.
"""

from __future__ import annotations

import json
import time
import warnings
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pystac
import rasterio
from dask.utils import parse_bytes

from pipeline import __version__
from pipeline.catalog.sensors import SensorProfile
from pipeline.catalog.static import find_acquisitions, save_items
from pipeline.cube.build import ChunkReport, CubeChunkTask, build_chunk
from pipeline.cube.plan import CubePlan, plan_cube
from pipeline.cube.store import create_cube_store
from pipeline.errors import InputDataError, OutputError
from pipeline.grid import plan_grid
from pipeline.learn.sklearn import check_features, save_model, train
from pipeline.manifest import RunManifest
from pipeline.model import ClassInfo
from pipeline.predict.blockwise import (
    CONFIDENCE_NODATA,
    CONFIDENCE_VARIABLE,
    LABEL_VARIABLE,
    MapEncoding,
    PredictReport,
    PredictTask,
    create_map_store,
    predict_chunk,
)
from pipeline.predict.outputs import zarr_to_cog
from pipeline.run.clusters import open_client
from pipeline.run.executor import run_units
from pipeline.run.layout import RunLayout
from pipeline.run.progress import Progress
from pipeline.samples.extract import (
    extract_chunk,
    labelled_pixels,
    plan_extraction,
    samples_table,
    write_samples,
)
from pipeline.samples.reference import ReferencePolygons, load_reference
from pipeline.samples.split import TRAIN, VALIDATION, select_training_pixels, split_polygons
from pipeline.storage import atomic_path, check_writable, write_text_atomic
from pipeline.validate.metrics import classification_metrics
from pipeline.validate.report import write_report
from pipeline.warnings import DataQualityWarning, SamplingWarning


@dataclass(frozen=True)
class RunPlan:
    manifest: RunManifest
    layout: RunLayout
    cube: CubePlan
    items: dict[str, list[pystac.Item]]
    reference: ReferencePolygons

    @property
    def estimate(self) -> dict[str, Any]:
        grid = self.cube.grid
        return {
            "grid": f"{grid.width} x {grid.height} px, {grid.crs}",
            "chunks": len(self.cube.windows),
            "pixels": grid.width * grid.height,
            "acquisitions": sum(len(s.acquisitions) for s in self.cube.sensors),
            "features": len(self.cube.feature_names),
            "memory_per_chunk": self.cube.bytes_per_chunk(),
        }


@dataclass
class RunResult:
    layout: RunLayout
    metrics: dict[str, Any]
    stage_seconds: dict[str, float] = field(default_factory=dict)
    dashboard: str | None = None


def plan_run(manifest: RunManifest) -> RunPlan:
    """Check every input and build the plan; reads metadata only and writes nothing."""
    spec = manifest.spec
    layout = RunLayout(Path(spec.outputs.store))
    check_writable(layout.root)
    sensors = []
    items: dict[str, list[pystac.Item]] = {}
    for i, sensor_spec in enumerate(spec.sensors):
        profile = SensorProfile.from_spec(sensor_spec)
        acquisitions, raw_items = find_acquisitions(
            sensor_spec.catalog, profile, spec.period.start, spec.period.end,
            field=f"spec.sensors[{i}]",
        )  # fmt: skip
        sensors.append((profile, acquisitions))
        items[profile.name] = raw_items
    grid = plan_grid(spec.area, [a for _, acqs in sensors for a in acqs])
    cube = plan_cube(
        grid, sensors, spec.period.start, spec.period.end, spec.features.indices,
        spec.compute.chunk_size,
    )  # fmt: skip
    needed = cube.bytes_per_chunk()
    limit = parse_bytes(spec.compute.memory_limit) * spec.compute.threads_per_worker
    if needed > 0.6 * parse_bytes(spec.compute.memory_limit) / spec.compute.threads_per_worker:
        raise OutputError(
            f"one chunk needs about {needed / 2**20:.0f} MiB, more than 60% of a worker thread's "
            f"share of compute.memory_limit ({limit / 2**20:.0f} MiB for "
            f"{spec.compute.threads_per_worker} thread(s))",
            fix="lower spec.compute.chunk_size or raise spec.compute.memory_limit",
            field="spec.compute",
        )
    reference = load_reference(spec.reference, grid)
    return RunPlan(manifest, layout, cube, items, reference)


@contextmanager
def _stage(name: str, timings: dict[str, float], progress: Progress) -> Iterator[None]:
    started = time.perf_counter()
    progress.stage_started(name)
    yield
    timings[name] = time.perf_counter() - started
    progress.stage_finished(name, timings[name])


def execute(plan: RunPlan, progress: Progress) -> RunResult:
    manifest, layout, cube = plan.manifest, plan.layout, plan.cube
    spec = manifest.spec
    timings: dict[str, float] = {}
    layout.root.mkdir(parents=True, exist_ok=True)

    with open_client(spec.compute) as client:
        dashboard = client.dashboard_link
        progress.info(f"dask dashboard: {dashboard}")

        with _stage("discover", timings, progress):
            for sensor, sensor_items in plan.items.items():
                save_items(sensor_items, layout.items_of(sensor))

        with _stage("cube", timings, progress), atomic_path(layout.cube) as tmp_cube:
            create_cube_store(cube, str(tmp_cube))
            tasks = [CubeChunkTask(cube, w, str(tmp_cube)) for w in cube.windows]
            bar = progress.bar("cube chunks", len(tasks))
            chunk_reports: list[ChunkReport] = run_units(
                client, build_chunk, tasks, key_prefix="cube", on_done=lambda _r: bar.advance()
            )
        never_valid = sum(r.never_valid_pixels for r in chunk_reports)
        if never_valid:
            warnings.warn(
                f"{never_valid} pixel(s) have no valid acquisition in the period; they are left "
                "unmapped (no-data in the map)",
                DataQualityWarning,
                stacklevel=2,
            )

        with _stage("samples", timings, progress):
            samples = _samples_stage(plan, client, progress)

        with _stage("train", timings, progress):
            model_info = _train_stage(plan, samples)

        encoding = MapEncoding.for_classes(tuple(model_info["classes"]))
        with _stage("predict", timings, progress), atomic_path(layout.map_store) as tmp_map:
            create_map_store(str(tmp_map), cube.grid, cube.chunk_size, encoding)
            predict_tasks = [
                PredictTask(
                    str(layout.cube),
                    tuple(cube.time_series_variables),
                    str(layout.model),
                    str(tmp_map),
                    w,
                    encoding,
                )
                for w in cube.windows
            ]
            bar = progress.bar("predicted chunks", len(predict_tasks))
            predict_reports: list[PredictReport] = run_units(
                client, predict_chunk, predict_tasks, key_prefix="predict",
                on_done=lambda _r: bar.advance(),
            )  # fmt: skip

    with _stage("mosaic", timings, progress):
        zarr_to_cog(str(layout.map_store), LABEL_VARIABLE, cube.grid, layout.labels,
                    nodata=encoding.nodata, overview_resampling="mode")  # fmt: skip
        zarr_to_cog(str(layout.map_store), CONFIDENCE_VARIABLE, cube.grid, layout.confidence,
                    nodata=CONFIDENCE_NODATA, overview_resampling="average")  # fmt: skip

    with _stage("validate", timings, progress):
        metrics = _validate_stage(plan, samples, encoding, model_info, timings, predict_reports)

    summary = {
        "sitsflow_version": __version__,
        "run": manifest.name,
        "manifest": manifest.model_dump(mode="json"),
        "estimate": plan.estimate,
        "stage_seconds": {k: round(v, 3) for k, v in timings.items()},
        "dashboard": dashboard,
        "outputs": {
            "items": str(layout.items),
            "cube": str(layout.cube),
            "samples": str(layout.samples),
            "model": str(layout.model),
            "labels": str(layout.labels),
            "confidence": str(layout.confidence),
            "report": str(layout.report / "report.html"),
            "metrics": str(layout.report / "metrics.json"),
        },
        "overall_accuracy": metrics["overall_accuracy"],
        "kappa": metrics["kappa"],
    }
    write_text_atomic(layout.summary, json.dumps(summary, indent=2, sort_keys=True, default=str))
    return RunResult(layout, metrics, timings, dashboard)


def _samples_stage(plan: RunPlan, client: Any, progress: Progress) -> pd.DataFrame:
    spec = plan.manifest.spec
    reference = plan.reference
    polygon_labels = dict(
        zip(
            reference.table["polygon_id"].astype(int),
            reference.table["label"].astype(int),
            strict=True,
        )
    )
    present = set(np.unique(reference.polygon_ids[reference.polygon_ids >= 0]).tolist())
    split = split_polygons(
        {p: c for p, c in polygon_labels.items() if p in present},
        spec.sampling.validation_fraction,
        spec.sampling.seed,
    )
    pixels = labelled_pixels(reference, split)
    train = select_training_pixels(
        pixels[pixels["split"] == TRAIN], spec.sampling.max_pixels_per_polygon, spec.sampling.seed
    )
    pixels = pd.concat([train, pixels[pixels["split"] == VALIDATION]]).sort_values(["row", "col"])
    tasks = plan_extraction(
        pixels, plan.cube.windows, str(plan.layout.cube), plan.cube.time_series_variables
    )
    bar = progress.bar("sample chunks", len(tasks))
    values = run_units(
        client, extract_chunk, tasks, key_prefix="extract", on_done=lambda _r: bar.advance()
    )
    table = samples_table(tasks, values, pixels, plan.cube.feature_names, plan.cube.grid)
    write_samples(table, plan.layout.samples)
    return table


def _train_stage(plan: RunPlan, samples: pd.DataFrame) -> dict[str, Any]:
    spec = plan.manifest.spec
    feature_names = plan.cube.feature_names
    training = samples[samples["split"] == TRAIN]
    training = training[~training[feature_names].isna().any(axis=1)]
    counts = training["label"].value_counts()
    too_small = sorted(int(c) for c in counts[counts < spec.sampling.min_pixels_per_class].index)
    if too_small:
        warnings.warn(
            f"class(es) {too_small} have fewer than {spec.sampling.min_pixels_per_class} training "
            f"pixels ({ {c: int(counts[c]) for c in too_small} }); they are left out of the model, "
            "so the map cannot show them. Add reference polygons or lower "
            "spec.sampling.min_pixels_per_class",
            SamplingWarning,
            stacklevel=2,
        )
        training = training[~training["label"].isin(too_small)]
    if training["label"].nunique() < 2:
        raise InputDataError(
            f"training needs at least two classes with {spec.sampling.min_pixels_per_class}+ "
            f"pixels; found {training['label'].nunique()}",
            fix="add reference polygons of more classes over the mapped area",
            field="spec.reference",
        )
    estimator, contract = train(
        spec.model,
        training[feature_names].to_numpy(dtype=np.float32),
        training["label"].to_numpy(),
        feature_names,
        spec.sampling.seed,
    )
    check_features(contract, plan.cube.feature_names)
    save_model(estimator, contract, plan.layout.model)
    return {
        "classes": list(contract.classes),
        "left_out_classes": too_small,
        "training_pixels": len(training),
        "training_polygons": int(training["polygon_id"].nunique()),
    }


def _validate_stage(
    plan: RunPlan,
    samples: pd.DataFrame,
    encoding: MapEncoding,
    model_info: dict[str, Any],
    timings: dict[str, float],
    predict_reports: list[PredictReport],
) -> dict[str, Any]:
    spec = plan.manifest.spec
    validation = samples[samples["split"] == VALIDATION]
    with rasterio.open(plan.layout.labels) as src:
        labels_map = src.read(1)
    predicted = labels_map[validation["row"].to_numpy(), validation["col"].to_numpy()]
    mapped = predicted != encoding.nodata
    unmapped = int((~mapped).sum())
    if unmapped:
        warnings.warn(
            f"{unmapped} validation pixel(s) fall on unmapped (never valid) pixels and are not "
            "counted in the accuracy",
            DataQualityWarning,
            stacklevel=2,
        )
    reference_labels = validation["label"].to_numpy()[mapped]
    predicted = predicted[mapped].astype(np.int64)
    classes = sorted(set(model_info["classes"]) | set(reference_labels.tolist()))
    metrics = classification_metrics(reference_labels, predicted, classes)
    legend = [c for c in plan.reference.legend if c.code in classes]
    details: dict[str, Any] = {
        "run": plan.manifest.name,
        "period": f"{spec.period.start} .. {spec.period.end}",
        "sensors": ", ".join(
            f"{s.profile.name} ({len(s.acquisitions)} acquisitions -> {len(s.dates)} dates every "
            f"{s.profile.date_step_days} days)"
            for s in plan.cube.sensors
        ),
        "grid": plan.estimate["grid"],
        "estimator": f"{spec.model.estimator} {spec.model.params}",
        "features": len(plan.cube.feature_names),
        "training polygons / pixels": (
            f"{model_info['training_polygons']} / {model_info['training_pixels']}"
        ),
        "validation polygons / pixels": (
            f"{validation['polygon_id'].nunique()} / {int(mapped.sum())}"
        ),
        "classes left out of the model": model_info["left_out_classes"] or "none",
        "unmapped pixels": sum(r.nodata_pixels for r in predict_reports),
        "stage seconds": {k: round(v, 1) for k, v in timings.items()},
    }
    write_report(
        plan.layout.report,
        metrics,
        _legend_for(legend, classes),
        plan.layout.labels,
        plan.layout.confidence,
        title=f"sitsflow run {plan.manifest.name}: accuracy on validation polygons",
        details=details,
    )
    return metrics.to_dict()


def _legend_for(legend: list[ClassInfo], classes: list[int]) -> list[ClassInfo]:
    known = {c.code for c in legend}
    return legend + [ClassInfo(code, str(code)) for code in classes if code not in known]
