"""Patch samples in the samples stage: planned when the model's learner trains on patches.

The stage does not know which kinds of model these are: it asks the model's learner
(``patch_samples(config) -> PatchConfig``, an optional method of a learner). One unit, after
the samples table, cuts the patches around the table's pixels from the cube
(``pipeline.samples.patches``) into ``samples/patches.zarr``; its digest is the table's and
the cubes', so a resumed run keeps them.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import pandas as pd

from pipeline.errors import ModelError
from pipeline.run.context import PlanContext
from pipeline.run.stage import stage_digest
from pipeline.run.units import Unit
from pipeline.storage import RunStore

PATCHES = "samples/patches.zarr"


@dataclass(frozen=True)
class PatchPlan:
    unit: Unit
    path: str
    """Store-relative location of the patch store."""
    size: int
    sources: tuple[Any, ...]
    """``pipeline.samples.patches.PatchSource`` per tile."""
    feature_names: tuple[str, ...]


def learner_patch_size(model: Any) -> int | None:
    """The patch size the model's learner trains on, or None for a per-pixel learner."""
    from pipeline.learn.registry import learner_for

    ask = getattr(learner_for(model.kind), "patch_samples", None)
    return None if ask is None else int(ask(model).size)


def _refuse(what: str, fix: str, field: str) -> ModelError:
    return ModelError(f"patch models (model.kind torch_patch) {what}", fix=fix, field=field)


def plan_patches(
    context: PlanContext,
    references: Sequence[Any],
    table_digest: str,
    from_imagery: bool,
    regions: Any,
) -> PatchPlan | None:
    config = context.config
    if config.task == "extraction" or config.model.kind == "external":
        return None
    size = learner_patch_size(config.model)
    if size is None:
        return None
    from pipeline.learn.config import PatchConfig
    from pipeline.samples.patches import PatchSource

    patch = config.model.patch or PatchConfig()
    if from_imagery:
        raise _refuse(
            "are cut from the run's cube, but these samples are read from the imagery on their "
            "own windows",
            "remove reference.start_field, or use kind torch or sklearn",
            "model.kind",
        )
    if config.sampling.runs > 1:
        raise _refuse(
            "are trained once per run and scored on the map",
            "set sampling.runs to 1",
            "sampling.runs",
        )
    if regions is not None:
        raise _refuse(
            "read neighbouring pixels; region models are blended pixel by pixel",
            "remove reference.regions, or use kind torch or sklearn",
            "reference.regions",
        )
    chunk = config.compute.chunk_size
    if chunk % patch.step:
        raise ModelError(
            f"compute.chunk_size {chunk} is not a multiple of the patch stride {patch.step}; "
            "the chunks' patches would not line up and the map would show seams",
            fix=f"set compute.chunk_size to a multiple of {patch.step}, or model.patch.stride "
            f"to a divisor of {chunk}",
            field="compute.chunk_size",
        )
    cubes = context.outputs("cube")
    sources = tuple(
        PatchSource(
            s.tile.key,
            s.tile.cube_url,
            tuple(s.tile.cube.time_series_variables),
            s.tile.cube.grid.height,
            s.tile.cube.grid.width,
        )
        for s in references
    )
    cube_digests = sorted((repr(k), v) for k, v in cubes.cube_digests.items())
    unit = Unit(
        "samples",
        "patches",
        stage_digest("samples", 1, table_digest, "patches", size, cube_digests),
    )
    return PatchPlan(unit, PATCHES, size, sources, tuple(cubes.cube.feature_names))


@dataclass(frozen=True)
class PatchContext:
    store: RunStore
    plan: PatchPlan
    pixels: pd.DataFrame


def patch_unit(context: PatchContext, _payload: Any) -> dict[str, Any]:
    from pipeline.samples.patches import write_patches

    plan = context.plan
    with context.store.publish(plan.path) as folder:
        return write_patches(
            str(folder), plan.sources, context.pixels, plan.size, plan.feature_names
        )
