"""The stages of a run, in order: the one list of them (the engine, the reporter, the cluster
warm-up and ``sitsflow status`` read it here).

    discover -> cube -> samples -> train -> predict -> smooth -> mosaic -> postprocess -> validate

Each built-in stage is a module of this package exposing ``STAGE`` (a ``pipeline.run.stage.Stage``),
imported only when planning needs it: importing this package stays light (no numba, sklearn or
torch). Adding a stage is one module plus one name below; a stage from outside the package is
added with ``register(stage, after="predict")``. A stage (see ``pipeline.run.stage.Stage``)::

    class Smooth:
        name, version, needs = "smooth", 1, ("predict",)

        def plan(self, context):             # pure: units and digests, nothing written
            upstream = context.input("predict")   # only stages named in ``needs``
            units = [Unit(self.name, key, stage_digest(self.name, self.version, ...), payload)]
            return StagePlan(self.name, units, digest=..., outputs=...)

        def run(self, context):              # its units through the executor
            plan = context.stage_plan(self.name)
            context.run(StageWork(self.name, plan.units, smooth_unit, SmoothContext(...)))

``smooth_unit(context, payload) -> summary`` runs on a worker and writes its output; units
whose digest the ledger holds are skipped (tests/run/test_registry.py runs such a stage).
"""

from __future__ import annotations

from importlib import import_module
from typing import TYPE_CHECKING

from pipeline.errors import SitsflowError

if TYPE_CHECKING:
    from pipeline.run.stage import Stage

BUILT_IN = (
    "discover",
    "cube",
    "samples",
    "train",
    "predict",
    "smooth",
    "mosaic",
    "postprocess",
    "validate",
    "fusion",
    "objects",
)

_order: list[str] = list(BUILT_IN)
_registered: dict[str, Stage] = {}


def stage_names() -> tuple[str, ...]:
    """The names of the stages, in the order they plan and run."""
    return tuple(_order)


def get(name: str) -> Stage:
    """The stage called ``name`` (a built-in one is imported here, on first use)."""
    if name in _registered:
        return _registered[name]
    if name not in BUILT_IN:
        raise KeyError(name)
    stage: Stage = import_module(f"{__name__}.{name}").STAGE
    return stage


def stages() -> tuple[Stage, ...]:
    """Every stage, in order."""
    return tuple(get(name) for name in _order)


def register(stage: Stage, *, after: str | None = None, before: str | None = None) -> None:
    """Add ``stage`` to the run, after (or before) a stage already there, or at the end.

    Its ``needs`` must all come before it: a stage plans from the plans of its upstream stages.
    """
    if stage.name in _order:
        raise SitsflowError(
            f"a stage named {stage.name!r} is registered already",
            fix="give the new stage another name, or unregister the old one first",
        )
    if after is not None and before is not None:
        raise SitsflowError(
            f"stage {stage.name!r} was given both after={after!r} and before={before!r}",
            fix="place it with one of them",
        )
    anchor = after if after is not None else before
    if anchor is not None and anchor not in _order:
        raise SitsflowError(
            f"stage {stage.name!r} is placed next to {anchor!r}, which is not a stage",
            fix=f"choose one of {', '.join(_order)}",
        )
    if anchor is None:
        position = len(_order)
    else:
        position = _order.index(anchor) + (1 if after is not None else 0)
    missing = [n for n in stage.needs if n not in _order[:position]]
    if missing:
        raise SitsflowError(
            f"stage {stage.name!r} needs {missing}, which would not run before it",
            fix="register it after the stages it needs",
        )
    _order.insert(position, stage.name)
    _registered[stage.name] = stage


def unregister(name: str) -> None:
    """Take a stage added with ``register`` out of the run again (built-in stages stay)."""
    if name not in _registered:
        raise SitsflowError(
            f"stage {name!r} was not added with register()",
            fix=f"registered stages: {', '.join(_registered) or 'none'}",
        )
    del _registered[name]
    _order.remove(name)
