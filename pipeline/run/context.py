"""What a stage sees: while planning (``PlanContext``) and while running (``RunContext``)."""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any

from pipeline.run.config import RunConfig
from pipeline.run.executor import Executor, StageOutcome, StageWork
from pipeline.run.layout import RunLayout
from pipeline.run.stage import StagePlan
from pipeline.run.units import Ledger, Record
from pipeline.storage import RunStore

if TYPE_CHECKING:
    from pipeline.run.plan import RunPlan
    from pipeline.run.plan_cache import PlanCache
    from pipeline.run.progress import Progress


@dataclass(frozen=True)
class PlanContext:
    """Planning one stage: the run's configuration and the plans of the stages it needs."""

    stage: str
    config: RunConfig
    """The run's configuration: its ``name`` and one attribute per section (``model``...)."""
    store: RunStore
    layout: RunLayout
    cache: PlanCache
    plans: Mapping[str, StagePlan]
    """The plans of the stages this one declared in ``needs`` (and no other)."""

    def input(self, name: str) -> StagePlan:
        """The plan of upstream stage ``name``, which this stage must have declared."""
        if name not in self.plans:
            raise KeyError(
                f"stage {self.stage!r} reads the plan of {name!r} but does not declare it in "
                f"its needs ({', '.join(self.plans) or 'none'})"
            )
        return self.plans[name]

    def outputs(self, name: str) -> Any:
        """What upstream stage ``name`` planned (its ``StagePlan.outputs``)."""
        return self.input(name).outputs


@dataclass
class RunContext:
    """Running one stage in a session: the whole plan, the executor, and what the stages that
    ran before it in this session left for the stages downstream (``results``)."""

    plan: RunPlan
    executor: Executor
    progress: Progress
    timings: dict[str, float] = field(default_factory=dict)
    outcomes: dict[str, StageOutcome] = field(default_factory=dict)
    results: dict[str, Any] = field(default_factory=dict)
    """Per stage, what running it gave the stages after it (the model's classes...)."""
    metrics: dict[str, Any] = field(default_factory=dict)
    """What the run reports as its result (the validation scores, or an extraction's table)."""

    @property
    def config(self) -> RunConfig:
        return self.plan.config

    @property
    def store(self) -> RunStore:
        return self.plan.store

    @property
    def layout(self) -> RunLayout:
        return self.plan.layout

    def stage_plan(self, name: str) -> StagePlan:
        return self.plan.stages[name]

    def run(self, work: StageWork, **kwargs: Any) -> StageOutcome:
        """Run ``work`` on the executor; a stage of several steps adds up into one outcome."""
        outcome = self.executor.run(work, **kwargs)
        previous = self.outcomes.get(work.name)
        if previous is not None:  # a stage of two steps (samples: parts, then the table)
            outcome = StageOutcome(
                work.name,
                previous.total + outcome.total,
                previous.skipped + outcome.skipped,
                previous.ran + outcome.ran,
                previous.seconds + outcome.seconds,
                previous.pixels + outcome.pixels,
                previous.unit_seconds + outcome.unit_seconds,
                {**previous.summaries, **outcome.summaries},
            )
        self.outcomes[work.name] = outcome
        return outcome


STORE_KEY = "store"  # ledger key of a stage's Zarr store set-up (not a unit)


def ensure_store(
    store: RunStore,
    stage: str,
    store_digest: str,
    relative: str,
    create: Callable[[], Any],
    *,
    key: str = STORE_KEY,
    keep: tuple[str, ...] = (),
) -> None:
    """Keep a stage's Zarr store when it was made for the same plan; else make it anew and forget
    the units that wrote into it (their regions are gone): the stage's units in a single-grid
    run, the tile's in a tiled run (``key``: ``store-<tile>``). ``keep``: key prefixes of the
    stage's units that write elsewhere (the fusion's sensor models), whose records stay."""
    ledger = Ledger(store)
    finished = ledger.finished(stage)
    if store_digest in finished.get(key, set()):
        return
    if key == STORE_KEY and not keep:
        ledger.clear(stage)
    elif key == STORE_KEY:
        stale = tuple(k for k in finished if not k.startswith(keep))
        if stale:
            ledger.clear(stage, prefixes=stale)
    else:
        ledger.clear(stage, prefixes=(key.removeprefix(f"{STORE_KEY}-") + "-", key))
    store.remove(relative)
    create()
    record_driver_unit(store, stage, key, store_digest, {"path": relative})


def record_driver_unit(
    store: RunStore, stage: str, key: str, digest: str, summary: dict[str, Any]
) -> None:
    """Record set-up work the driver did itself (a store, a region index) in the ledger."""
    finished = datetime.now(UTC).isoformat(timespec="milliseconds")
    Ledger(store).write(Record(stage, key, digest, "", "driver", 0.0, finished, summary))
