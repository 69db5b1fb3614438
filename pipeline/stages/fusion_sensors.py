"""The fusion stage's models of one sensor each (sources ``sensor``): the run's model
configuration trained on run 0's samples and split with that sensor's feature columns only,
one unit per sensor keyed by the model configuration, the sensor, its features and the samples
digest (a rerun trains none again), saved to ``<model>-sensors/<sensor>``."""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from typing import Any

from pipeline.errors import InputDataError
from pipeline.fusion.sensors import FIELD, SensorColumns, sensor_columns
from pipeline.run.context import PlanContext, RunContext
from pipeline.run.executor import StageWork
from pipeline.run.units import Unit
from pipeline.stages.fusion import NAME, SENSOR_MODELS, digest
from pipeline.stages.train import TrainContext, train_unit


def sensor_model(model: str, sensor: str) -> str:
    """Where the model of ``sensor``'s features is saved (beside the run's model folder)."""
    return f"{model}-sensors/{sensor}"


@dataclass(frozen=True)
class SensorModel:
    """A sensor source's model as planned: its training unit and what it reads."""

    unit: Unit
    folder: str
    """Store-relative model folder."""
    columns: SensorColumns


def plan_sensor_model(context: PlanContext, sensor: str) -> SensorModel:
    """The training unit of ``sensor``'s model (refused for models that cannot be retrained on
    a subset of the features: an external model, a patch model)."""
    config = context.config
    why = None
    if getattr(config.model, "kind", None) == "external":
        why = "the run's model is an external model, trained elsewhere on its own features"
    elif context.outputs("samples").patches is not None:
        why = "a patch model trains on the patch samples of every feature"
    if why is not None:
        raise InputDataError(
            f"fusion source sensor {sensor!r} needs the run's model retrained on that sensor's "
            f"features, but {why}",
            fix="fuse earlier runs' maps (sources: store), one run per sensor, or use a model "
            "the run trains on pixel samples",
            field=FIELD,
        )
    columns = sensor_columns(context.outputs("cube").cube, sensor)
    sampling = config.sampling
    unit = Unit(
        NAME,
        f"{SENSOR_MODELS}{sensor}",
        digest(
            "sensor model",
            config.model,
            config.task,
            sensor,
            columns.features,
            context.input("samples").digest,
            sampling.seed,
            sampling.min_pixels_per_class,
        ),
        payload=sensor,
    )
    layout = context.layout
    return SensorModel(unit, sensor_model(layout.relative(layout.model), sensor), columns)


@dataclass(frozen=True)
class SensorTrainContext:
    train: TrainContext
    """Run 0's training context; each unit replaces its model folder and features."""
    models: tuple[tuple[str, str, tuple[str, ...]], ...]
    """(sensor, model folder, feature columns)."""


def sensor_train_unit(context: SensorTrainContext, payload: str) -> dict[str, Any]:
    """Train one sensor's model: run 0's training with that sensor's columns only."""
    folder, features = next((f, n) for s, f, n in context.models if s == payload)
    return train_unit(
        dataclasses.replace(context.train, model=folder, feature_names=features), None
    )


def train_sensor_models(context: RunContext, models: tuple[SensorModel, ...]) -> None:
    """Run the sensor models' training units (those not trained yet)."""
    if not models:
        return
    config, layout = context.config, context.layout
    samples = context.stage_plan("samples").outputs
    train = TrainContext(
        context.store.root,
        layout.relative(layout.samples),
        layout.relative(layout.model),
        config.model,
        config.task,
        "label",
        (),
        config.sampling.seed,
        config.sampling.min_pixels_per_class,
        class_names=tuple((c.code, c.name) for c in samples.reference.legend),
    )
    context.run(
        StageWork(
            NAME,
            [m.unit for m in models],
            sensor_train_unit,
            SensorTrainContext(
                train, tuple((m.columns.sensor, m.folder, m.columns.features) for m in models)
            ),
            description="sensor models",
        )
    )
