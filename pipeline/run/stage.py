"""What a stage is to the run engine: a name, a plan of units, and the work those units do.

The engine knows units and digests, not remote sensing. A stage (``pipeline.stages``) plans its
units from the digests and outputs its upstream stages declared (``needs``), and later runs them
through the executor. Planning reads metadata only and writes nothing; running writes.

    plan(PlanContext) -> StagePlan      pure: units, their digests, what downstream stages read
    run(RunContext) -> None              runs the stage's units (``context.run(StageWork)``)
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Protocol, runtime_checkable

from pipeline.run.estimate import WorkEstimate
from pipeline.run.units import Unit, content_hash

if TYPE_CHECKING:
    from pipeline.run.context import PlanContext, RunContext


def stage_digest(stage: str, version: int, *parts: Any) -> str:
    """A unit digest of ``stage``: its name and code version, then what decides its output."""
    return content_hash(stage, version, *parts)


@dataclass(frozen=True)
class StagePlan:
    """What planning a stage gave: its units and what the stages downstream of it read."""

    name: str
    units: Sequence[Unit] = ()
    digest: str | None = None
    """The digest downstream units depend on (the model's, the samples table's...), if any."""
    digests: Mapping[str, str] = field(default_factory=dict)
    """Named digests recorded in the run summary (``cube_store:<tile>``, ``train``...)."""
    outputs: Any = None
    """The stage's own planning result (tiles, sample pixels...), for itself and downstream."""
    checks: tuple[Callable[[], None], ...] = ()
    """Slow checks (heavy imports) run once every unit is known, after the cluster is asked for."""
    files: Mapping[str, Any] = field(default_factory=dict)
    """What the stage writes, for the run summary: store-relative names (or lists, or dicts of
    them) by role (``samples``, ``labels``...)."""
    facts: Mapping[str, Any] = field(default_factory=dict)
    """What the run's estimate says of this stage (the grid of the maps...)."""
    estimate: Callable[[Mapping[str, Sequence[Unit]]], WorkEstimate] | None = None
    """The run's size (pixels, chunks, memory per unit) given every stage's units: set by the
    stage that knows it (cube)."""


@runtime_checkable
class Stage(Protocol):
    """One step of the chain. ``needs`` names the stages whose plans it reads: planning gives it
    those and no other, so its digests are made of declared upstream digests only."""

    @property
    def name(self) -> str:
        """The stage's name: its units' stage and its place in the registry."""

    @property
    def version(self) -> int:
        """Enters every digest of the stage: bump it when a change of code changes its bytes."""

    @property
    def needs(self) -> tuple[str, ...]:
        """The stages whose plans this one reads (they come before it)."""

    def plan(self, context: PlanContext) -> StagePlan: ...

    def run(self, context: RunContext) -> None: ...
