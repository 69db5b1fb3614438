"""Planning a run: checks and units, reading metadata only and writing nothing.

``plan_run`` is a loop over the stage registry (``pipeline.stages``): each stage plans its
units from the plans of the stages it declares it needs, and their digests chain, so a change
reruns exactly what is downstream of it. Bad input fails here, before anything is written.
"""

from __future__ import annotations

import contextlib
import json
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from dask.utils import parse_bytes

from pipeline import stages as registry
from pipeline.errors import OutputError
from pipeline.run.config import RunConfig
from pipeline.run.context import PlanContext
from pipeline.run.estimate import WorkEstimate, check_memory
from pipeline.run.layout import RunLayout
from pipeline.run.lock import check_free
from pipeline.run.plan_cache import PlanCache
from pipeline.run.stage import StagePlan
from pipeline.run.units import Ledger, Unit
from pipeline.storage import RunStore, check_writable


@dataclass(frozen=True)
class RunPlan:
    config: RunConfig
    """The run's configuration: ``name``, ``document`` and one attribute per section."""
    store: RunStore
    layout: RunLayout
    """Names relative to the run store (``layout.relative`` turns them into store names)."""
    stages: dict[str, StagePlan]
    """Every stage's plan, in the registry's order."""
    work: WorkEstimate
    cache: PlanCache | None = None
    """What planning computed afresh, written to the store by ``execute`` (see plan_cache)."""

    @property
    def units(self) -> dict[str, list[Unit]]:
        return {name: list(plan.units) for name, plan in self.stages.items()}

    @property
    def digests(self) -> dict[str, str]:
        return {k: v for plan in self.stages.values() for k, v in plan.digests.items()}

    @property
    def estimate(self) -> dict[str, Any]:
        facts = {k: v for plan in self.stages.values() for k, v in plan.facts.items()}
        return {**self.work.as_dict(), **facts}

    def outputs(self, stage: str) -> Any:
        """What stage ``stage`` planned (its ``StagePlan.outputs``)."""
        return self.stages[stage].outputs

    # What callers of the library read of a demo plan (the cube, the burnt reference).
    @property
    def cube(self) -> Any:
        return self.outputs("cube").cube

    @property
    def reference(self) -> Any:
        return self.outputs("samples").reference


def check_store_state(store: RunStore, name: str, resume: bool, *, check_lock: bool = True) -> None:
    if check_lock:
        check_free(store, remote_too=False)  # another host's lock may be a dead driver's
    ledger = Ledger(store)
    if ledger.is_empty():
        return
    previous = None
    with contextlib.suppress(FileNotFoundError, ValueError, KeyError):
        previous = json.loads(store.read_text("state/manifest.json"))["metadata"]["name"]
    if previous is not None and previous != name:
        raise OutputError(
            f"run store {store.root!r} holds the work of run {previous!r}, not {name!r}",
            fix="choose another outputs.store (or --store) for this run, or use the run name "
            f"{previous!r} to continue that run",
            field="outputs.store",
        )
    if not resume:
        raise OutputError(
            f"run store {store.root!r} already holds work of run {name!r}",
            fix="add --resume to continue it (finished units whose inputs did not change are "
            "kept, the others run again), or choose another outputs.store (or --store)",
            field="outputs.store",
        )


def plan_run(
    config: RunConfig,
    *,
    resume: bool = False,
    on_work_ahead: Callable[[list[str]], None] | None = None,
    check_lock: bool = True,
) -> RunPlan:
    """Check every input and build the plan; reads metadata only and writes nothing.

    ``on_work_ahead(stages)`` is called once the units and their digests are known, with the
    stages that have units left to run, before the slowest checks: a caller starts its cluster
    there, so that it comes up while planning ends. ``check_lock=False`` plans a store another
    driver is working in (to report on it).
    """
    outputs = config.outputs
    store = RunStore(outputs.store)
    layout = RunLayout(Path(), outputs.labels, outputs.confidence, outputs.report, outputs.values)
    check_writable(outputs.store)
    check_store_state(store, config.name, resume, check_lock=check_lock)
    cache = PlanCache(store)
    plans: dict[str, StagePlan] = {}
    for stage in registry.stages():
        needed = {name: plans[name] for name in stage.needs}
        context = PlanContext(stage.name, config, store, layout, cache, needed)
        plans[stage.name] = stage.plan(context)
    units = {name: plan.units for name, plan in plans.items()}
    work = _estimate(plans.values(), units)
    compute = config.compute
    if compute.cluster != "address":  # an existing scheduler's workers are checked live
        check_memory(work, int(parse_bytes(compute.memory_limit)), compute.threads_per_worker)
    if on_work_ahead is not None:
        ledger = Ledger(store)
        ahead = [stage for stage, todo in units.items() if ledger.split(todo)[1]]
        if ahead:
            on_work_ahead(ahead)
    for plan in plans.values():
        for check in plan.checks:
            check()
    return RunPlan(config, store, layout, plans, work, cache)


def _estimate(plans: Iterable[StagePlan], units: Mapping[str, Sequence[Unit]]) -> WorkEstimate:
    """The run's size, from the stage that knows it (cube); none: a run of no pixels."""
    for plan in plans:
        if plan.estimate is not None:
            return plan.estimate(units)
    return WorkEstimate(0, 0, 0, 0, 0, 0, 0, 0, units={k: len(v) for k, v in units.items()})


# --- status --------------------------------------------------------------------------------------


@dataclass(frozen=True)
class StageStatus:
    stage: str
    total: int
    done: int

    @property
    def left(self) -> int:
        return self.total - self.done


def run_status(plan: RunPlan) -> list[StageStatus]:
    """Per stage: units planned and units finished with their current digest."""
    ledger = Ledger(plan.store)
    out = []
    for stage in registry.stage_names():
        units = plan.stages[stage].units
        done, _ = ledger.split(units)
        out.append(StageStatus(stage, len(units), len(done)))
    return out


def sessions(store: RunStore) -> list[dict[str, Any]]:
    """The run's sessions (one per `sitsflow run`), oldest first."""
    out = []
    for name in store.list_names("state/sessions"):
        with contextlib.suppress(ValueError, FileNotFoundError):
            out.append(json.loads(store.read_text(f"state/sessions/{name}")))
    return out
