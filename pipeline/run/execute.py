"""Running a plan in one session: the lock, the cluster, the ledger, progress and the summary.

Each stage of the registry runs its units through the ``Executor``: units already in the ledger
with the same digest are skipped, the others run on the cluster and are recorded once their
output is written. Killing the run at any moment and running it again with ``resume`` finishes
it, with the same bytes as an undisturbed run.
"""

from __future__ import annotations

import contextlib
import json
import os
import socket
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

from pipeline import __version__
from pipeline import stages as registry
from pipeline.errors import ComputeError
from pipeline.run.clusters import (
    ClusterStarter,
    WarmUp,
    driver_modules,
    import_in_background,
    open_client,
    worker_capacity,
)
from pipeline.run.context import RunContext
from pipeline.run.estimate import WorkEstimate, check_memory
from pipeline.run.executor import Executor, StageOutcome
from pipeline.run.layout import RunLayout
from pipeline.run.lock import StoreLock
from pipeline.run.monitor import MemoryMonitor
from pipeline.run.plan import RunPlan
from pipeline.run.progress import Progress
from pipeline.run.units import Ledger
from pipeline.storage import RunStore


@dataclass
class RunResult:
    layout: RunLayout
    store: RunStore
    metrics: dict[str, Any]
    stage_seconds: dict[str, float] = field(default_factory=dict)
    dashboard: str | None = None
    outcomes: dict[str, StageOutcome] = field(default_factory=dict)
    summary: dict[str, Any] = field(default_factory=dict)


@contextlib.contextmanager
def _stage(name: str, timings: dict[str, float], progress: Progress) -> Iterator[None]:
    started = time.perf_counter()
    progress.stage_started(name)
    yield
    timings[name] = time.perf_counter() - started
    progress.stage_finished(name, timings[name])


def _new_session() -> str:
    return f"{datetime.now(UTC):%Y%m%dT%H%M%SZ}-{uuid.uuid4().hex[:6]}"


class _Session:
    """The session's record in ``state/sessions/``: who runs, where the dashboard is, the end."""

    def __init__(self, plan: RunPlan, session: str) -> None:
        self.store = plan.store
        self.name = f"state/sessions/{session}.json"
        self.data: dict[str, Any] = {
            "session": session,
            "run": plan.config.name,
            "sitsflow_version": __version__,
            "host": socket.gethostname(),
            "pid": os.getpid(),
            "started": datetime.now(UTC).isoformat(timespec="seconds"),
            "state": "running",
        }

    def update(self, **fields: Any) -> None:
        self.data.update(fields)
        self.store.write_text(self.name, json.dumps(self.data, indent=2, default=str))


def execute(
    plan: RunPlan,
    progress: Progress,
    *,
    session: str | None = None,
    cluster: ClusterStarter | None = None,
) -> RunResult:
    """Run every stage, skipping units the ledger already holds with the same digest.

    ``cluster``: a cluster started beforehand (see ``plan_run``'s ``on_work_ahead``); without
    one, a cluster is opened here when units are left to run.
    """
    session = session or _new_session()
    with StoreLock(plan.store, session, notify=lambda m: progress.info(m, "run.waiting")):
        return _execute(plan, progress, session, cluster)


def _execute(
    plan: RunPlan, progress: Progress, session: str, cluster: ClusterStarter | None
) -> RunResult:
    config, store, layout = plan.config, plan.store, plan.layout
    leftovers = store.remove_temporaries()  # a killed session's half-written files
    if leftovers:
        progress.info(
            f"removed {len(leftovers)} file(s) an interrupted session left half-written",
            "run.cleaned",
            files=leftovers,
        )
    store.write_text("state/manifest.json", json.dumps(config.document, indent=2))
    if plan.cache is not None:  # what planning computed afresh, for a later --resume
        plan.cache.flush()
    record = _Session(plan, session)
    record.update()
    progress.info(
        f"work: {plan.work.describe(config.compute.threads_per_worker)}",
        "run.estimate",
        estimate=plan.estimate,
    )

    def on_unit(stage: str, result: Any) -> None:
        # One event per unit that ran (JSON logs only: a terminal shows the bars instead).
        if progress.log.json:
            progress.log.event(
                "unit.finished",
                f"{stage}/{result.key} finished on {result.worker} in {result.seconds:.2f} s",
                level="debug",
                stage=stage,
                unit=result.key,
                worker=result.worker,
                seconds=round(result.seconds, 4),
                session=session,
            )

    started = time.perf_counter()
    ledger = Ledger(store)
    left = {name: len(ledger.split(units)[1]) for name, units in plan.units.items()}
    pending = sum(left.values())
    dashboard: str | None = None
    memory_summary: dict[str, Any] = {"peak_worker_memory_bytes": 0, "workers_seen": 0}
    with contextlib.ExitStack() as stack:
        client = None
        imports = driver_modules([name for name, n in left.items() if n])
        if imports:  # what the driver's own units import, while it waits for the workers
            import_in_background(imports)
        waiting = time.perf_counter()  # for the cluster: what planning did not hide
        if cluster is not None:
            client = cluster.client()
        elif pending:  # a finished run needs no cluster to report on itself
            client = stack.enter_context(open_client(config.compute, run=config.name))
        if client is not None:
            dashboard = client.dashboard_link
            progress.info(f"dask dashboard: {dashboard}", "run.dashboard", dashboard=dashboard)
            record.update(dashboard=dashboard)
            if config.compute.cluster == "address":
                _check_workers(client, plan.work)
        if cluster is not None and pending:
            # Before the first stage: its timer and rates count its units, not the workers'
            # start and imports, which get their own line.
            warm = cluster.ready(timeout=config.compute.connect_timeout_s, since=waiting)
            _report_warm_up(warm, progress)
        if not pending:
            progress.info("every unit is finished already: nothing to compute", "run.complete")
        executor = Executor(
            store,
            session,
            client,
            progress,
            retries=config.compute.retries,
            max_in_flight=config.compute.max_units_in_flight,
            on_unit=on_unit,
        )
        memory = stack.enter_context(MemoryMonitor(client)) if client is not None else None
        context = RunContext(plan, executor, progress)
        try:
            run_stages(context)
        except BaseException as exc:
            # When it can be written: an unwritable store is the error being reported.
            with contextlib.suppress(Exception):
                record.update(state="failed", error=type(exc).__name__)
            raise
        if memory is not None:
            memory_summary = memory.summary()
    summary = _summary(plan, session, context, dashboard, memory_summary)
    summary["wall_seconds"] = round(time.perf_counter() - started, 3)
    store.write_text(
        layout.relative(layout.summary), json.dumps(summary, indent=2, sort_keys=True, default=str)
    )
    record.update(
        state="finished",
        ended=datetime.now(UTC).isoformat(timespec="seconds"),
        units=summary["units"],
        stage_seconds=summary["stage_seconds"],
    )
    return RunResult(
        layout, store, context.metrics, context.timings, dashboard, context.outcomes, summary
    )


def _report_warm_up(warm: WarmUp, progress: Progress) -> None:
    done = "imports and compiled kernels loaded" if warm.finished else "a warm-up still running"
    progress.info(
        f"{warm.workers} worker(s) ready {warm.seconds:.1f} s after the cluster was asked for: "
        f"{done}, {warm.waited:.1f} s of it after planning",
        "run.workers",
        workers=warm.workers,
        seconds=round(warm.seconds, 3),
        waited=round(warm.waited, 3),
        finished=warm.finished,
    )


def run_stages(context: RunContext) -> None:
    """Every stage of the plan in order; a stage without units (an extraction run's map
    stages) does not run."""
    for name in registry.stage_names():
        if not context.plan.stages[name].units:
            continue
        with _stage(name, context.timings, context.progress):
            registry.get(name).run(context)


def _check_workers(client: Any, work: WorkEstimate) -> None:
    """An existing scheduler's workers (open_client waited for one): can each hold a unit?"""
    capacity = worker_capacity(client)
    if not capacity:
        raise ComputeError(
            "the scheduler has no worker",
            fix="start dask workers against it (dask worker <address>)",
            field="compute.address",
        )
    for name, limit, threads in capacity:
        if limit:
            check_memory(work, limit, threads, where=f"scheduler's (worker {name!r})")


def _urls(store: RunStore, value: Any) -> Any:
    """Store-relative names (in lists and dicts too) as the store's URLs."""
    if isinstance(value, str):
        return store.url(value)
    if isinstance(value, list | tuple):
        return [_urls(store, v) for v in value]
    return {k: _urls(store, v) for k, v in value.items()}


def _summary(
    plan: RunPlan,
    session: str,
    context: RunContext,
    dashboard: str | None,
    memory: dict[str, Any],
) -> dict[str, Any]:
    outcomes, timings, metrics = context.outcomes, context.timings, context.metrics
    units = {
        name: {"total": o.total, "skipped": o.skipped, "ran": o.ran} for name, o in outcomes.items()
    }
    outputs: dict[str, Any] = {}
    for stage_plan in plan.stages.values():
        outputs.update(_urls(plan.store, dict(stage_plan.files)))
    throughput = {
        name: {
            "pixels": o.pixels,
            "seconds": round(o.seconds, 3),  # the time the rates are taken over
            "pixels_per_second": round(o.pixels / o.seconds, 1) if o.seconds and o.pixels else 0,
            "units_per_second": round(o.ran / o.seconds, 3) if o.seconds and o.ran else 0,
            "unit_seconds": round(o.unit_seconds, 3),
        }
        for name, o in outcomes.items()
    }
    return {
        "sitsflow_version": __version__,
        "run": plan.config.name,
        "session": session,
        "manifest": plan.config.document,
        "estimate": plan.estimate,
        "stage_seconds": {k: round(v, 3) for k, v in timings.items()},
        "units": units,
        "units_skipped": sum(o.skipped for o in outcomes.values()),
        "units_run": sum(o.ran for o in outcomes.values()),
        "throughput": throughput,
        "memory": memory,
        "dashboard": dashboard,
        "digests": plan.digests,
        "outputs": outputs,
        "overall_accuracy": metrics.get("overall_accuracy"),
        "kappa": metrics.get("kappa"),
        "rmse": metrics.get("rmse"),
        "r2": metrics.get("r2"),
        "n_samples": metrics.get("n_samples"),
    }
