"""train: one unit per model (per region, per run of several) on a worker; the fit's parallel
part (trees, folds) on every worker (joblib's dask backend) -> model/ (skops + model.json)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np

from pipeline.run.context import PlanContext, RunContext
from pipeline.run.executor import StageWork
from pipeline.run.stage import StagePlan, stage_digest
from pipeline.run.units import Unit
from pipeline.stages.common import FINAL_RUN, split_column
from pipeline.stages.cube import Cubes
from pipeline.stages.samples import Samples
from pipeline.storage import RunStore

NAME = "train"
VERSION = 1


def digest(*parts: Any) -> str:
    return stage_digest(NAME, VERSION, *parts)


def region_model(model: str, name: str) -> str:
    """Where the model of region ``name`` is saved."""
    return f"{model}/regions/{name}"


def run_model(model: str, run: int, *, final: bool = False) -> str:
    """Where run ``run``'s model is saved: the model folder for the model that maps (run 0's,
    or with ``final`` the final model's, ``FINAL_RUN``), ``<model>-runs/run-<r>`` for the
    others (they are scored on their validation pixels; run 0's too with ``final``)."""
    if run == FINAL_RUN or (run == 0 and not final):
        return model
    return f"{model}-runs/run-{run}"


@dataclass(frozen=True)
class Models:
    other_runs: tuple[Unit, ...]
    """The models of runs 1.. (scored on their own validation pixels, never mapped), and run 0's
    with a final model (``sampling.final_model: all``)."""
    regions: tuple[str, ...]
    """Runs with regions: the region names (a model per region)."""


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
    patches: str | None = None
    """A patch model: the store-relative patch samples it trains on (samples/patches.zarr)."""
    class_codes: tuple[tuple[int, int], ...] = ()
    """An external model whose class names differ in code from the reference's: (model code,
    run code) pairs (``pipeline.learn.external.source_class_map``)."""
    class_names: tuple[tuple[int, str], ...] = ()
    """(code, name) of the reference's classes, for the warnings that name them."""
    final: bool = False
    """A final model maps (``sampling.final_model: all``): run 0's model is saved apart."""


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
    seed = context.seed + max(run, 0)  # the final model (FINAL_RUN) draws with run 0's seed
    info: dict[str, Any] = {"left_out_classes": [], "training_pixels": 0, "training_polygons": 0}
    if spec.kind == "external":
        model, contract = load_external_model(spec, context.task)  # type: ignore[arg-type]
        if context.class_codes:  # its classes matched to the reference's by name
            from pipeline.learn.external import recode_classes

            model, contract = recode_classes(model, contract, dict(context.class_codes))
    elif context.patches is not None:
        model, contract = _train_on_patches(context, store, seed, info)
    else:
        with store.fetch(context.samples) as local:
            samples = gpd.read_parquet(local)
        training = samples[samples[split_column(run)] == TRAIN]
        if region is not None:  # this region's model learns from its own features only
            training = training[training["region"] == region]
        training = training[~training[names].isna().any(axis=1)]
        if context.task == "classification":
            before = set(training["label"].unique().tolist())
            training = drop_small_classes(
                training, context.min_pixels_per_class, names=dict(context.class_names)
            )
            info["left_out_classes"] = sorted(
                int(c) for c in before - set(training["label"].unique().tolist())
            )
            if training["label"].nunique() < 2:
                raise InputDataError(
                    f"training needs at least two classes with {context.min_pixels_per_class}+ "
                    f"pixels; found {training['label'].nunique()}",
                    fix="add reference polygons of more classes over the mapped area, or lower "
                    "spec.sampling.min_pixels_per_class",
                    field="reference",
                )
        elif training.empty:
            raise InputDataError(
                "no training pixel has a value for every feature",
                fix="check the period and the reference data",
                field="reference",
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
    target = run_model(context.model, run, final=context.final)
    if region is not None:
        target = region_model(target, context.regions[region])
        info["region"] = context.regions[region]
    with store.publish(target) as folder:
        save_model(model, contract, folder)
    info["classes"] = [int(c) for c in contract.classes]
    if contract.training.get("class_names"):  # an external model names its classes
        info["class_names"] = {str(k): str(v) for k, v in contract.training["class_names"].items()}
    info["kind"] = str(getattr(contract, "kind", spec.kind))
    return info


def _train_on_patches(
    context: TrainContext, store: RunStore, seed: int, info: dict[str, Any]
) -> tuple[Any, Any]:
    """A patch model trained on the training labels of the patch samples (run 0's split)."""
    from pipeline.learn import train_model
    from pipeline.samples.patches import read_patches

    assert context.patches is not None
    with store.fetch(context.patches) as local:
        patches = read_patches(str(local))
    features, labels, polygons = patches.training()
    model, contract = train_model(
        context.model_spec,
        features,
        labels,
        list(context.feature_names),
        seed,
        task=context.task,  # type: ignore[arg-type]
        groups=polygons,
    )
    info["training_pixels"] = int((labels >= 0).sum())
    info["training_polygons"] = len(np.unique(polygons[polygons >= 0]))
    info["training_patches"] = len(features)
    return model, contract


def model_info(summaries: dict[str, Any], regions: tuple[str, ...]) -> dict[str, Any]:
    """What the report and the map encoding need of the trained model(s): with regions, the
    union of the region models' classes and their training pixels summed."""
    if not regions:
        return dict(summaries["model"])
    parts = [summaries[f"model-{name}"] for name in regions]
    left_out = {name: p["left_out_classes"] for name, p in zip(regions, parts, strict=True)}
    return {
        "classes": sorted({int(c) for p in parts for c in p["classes"]}),
        "training_pixels": sum(int(p["training_pixels"]) for p in parts),
        "training_polygons": sum(int(p["training_polygons"]) for p in parts),
        "left_out_classes": {k: v for k, v in left_out.items() if v},
        "regions": list(regions),
    }


class Train:
    name = NAME
    version = VERSION
    needs = ("cube", "samples")
    # What its units import on a worker, loaded by the cluster warm-up (skops.io alone
    # takes a second: its import scans every scikit-learn estimator).
    worker_imports = ("pipeline.learn", "pipeline.learn.sklearn_store:import_skops")

    def plan(self, context: PlanContext) -> StagePlan:
        config = context.config
        sampling = config.sampling
        table = context.input("samples").digest
        samples: Samples = context.outputs("samples")
        regions = samples.regions.names if samples.regions is not None else ()

        def model_digest(seed: int) -> str:
            return digest(table, config.model, config.task, seed, sampling.min_pixels_per_class)

        # The model that maps: run 0's, or the final model (trained on every sample pixel, its
        # own digest), with run 0's then one of the others.
        final = sampling.final_model == "all"
        mapping_run = FINAL_RUN if final else 0
        mapping_digest = model_digest(sampling.seed)
        if final:
            mapping_digest = digest(mapping_digest, "final")
        train = Unit(NAME, "model", mapping_digest, payload=FINAL_RUN if final else None)
        if final and samples.patches is not None:
            from pipeline.errors import ManifestError

            raise ManifestError(
                "a patch model trains on run 0's patch samples only, so it has no final model "
                "trained on every sample",
                fix="remove sampling.final_model (or set it to run0)",
                field="sampling.final_model",
            )
        region_units: list[Unit] = []
        if regions:
            region_units = [
                Unit(
                    NAME,
                    f"model-{name}",
                    digest(train.digest, "region", name),
                    payload=(mapping_run, i),
                )
                for i, name in enumerate(regions)
            ]
            train = Unit(  # the digest the maps depend on: every region's model, the regions
                NAME, "model", digest([u.digest for u in region_units], config.reference.regions)
            )
        other_runs = [
            Unit(NAME, f"model-run{run}", model_digest(sampling.seed + run), payload=run)
            for run in range(0 if final else 1, sampling.runs)
        ]
        if regions:  # a model per region in every run
            other_runs = [
                Unit(
                    NAME,
                    f"model-{name}-run{u.payload}",
                    digest(u.digest, "region", name),
                    payload=(u.payload, index),
                )
                for u in other_runs
                for index, name in enumerate(regions)
            ]
        extraction = config.task == "extraction"
        units = [*region_units, *other_runs] if region_units else [train, *other_runs]
        features = context.outputs("cube").cube.feature_names

        def check_model() -> None:
            from pipeline.learn import check_model_spec  # heavy (estimators, torch)

            check_model_spec(config.model, config.task, features)  # type: ignore[arg-type]
            if config.task == "classification":  # an external model's class names
                from pipeline.learn.external import source_class_map

                source_class_map(config.model, samples.reference.legend)

        layout = context.layout
        return StagePlan(
            NAME,
            [] if extraction else units,
            digest=train.digest,
            digests={NAME: train.digest},
            outputs=Models(tuple(other_runs), regions),
            checks=() if extraction else (check_model,),
            files={} if extraction else {"model": layout.relative(layout.model)},
        )

    def run(self, context: RunContext) -> None:
        config, layout = context.config, context.layout
        plan = context.stage_plan(NAME)
        models: Models = plan.outputs
        cubes: Cubes = context.stage_plan("cube").outputs
        from pipeline.learn.external import source_class_map

        samples: Samples = context.stage_plan("samples").outputs
        patches = samples.patches
        trained = context.run(
            StageWork(
                NAME,
                plan.units,
                train_unit,
                TrainContext(
                    context.store.root,
                    layout.relative(layout.samples),
                    layout.relative(layout.model),
                    config.model,
                    config.task,
                    "value" if config.task == "regression" else "label",
                    tuple(cubes.cube.feature_names),
                    config.sampling.seed,
                    config.sampling.min_pixels_per_class,
                    models.regions,
                    None if patches is None else patches.path,
                    tuple(source_class_map(config.model, samples.reference.legend).items()),
                    tuple((c.code, c.name) for c in samples.reference.legend),
                    config.sampling.final_model == "all",
                ),
                description="model" if not models.regions else "region models",
            )
        )
        context.results[NAME] = model_info(trained.summaries, models.regions)


STAGE = Train()
