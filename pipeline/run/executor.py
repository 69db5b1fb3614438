"""Running a stage: skip its finished units, run the others on dask in bounded batches.

The executor knows units, digests and functions, not remote sensing. A stage hands it a
``StageWork``: its units, one function ``function(context, payload) -> summary`` and the
context every unit shares. The context is written once to the run store and loaded (and cached)
by each worker, so the task graph only ever holds small payloads; at most ``max_in_flight``
units are submitted at a time, so the scheduler never holds one giant graph.

A unit's record goes to the ledger from the worker, right after its output is written, so work
finished by workers still counts when the driver dies. ``SitsflowError``s (bad input: the same
input fails the same way) come back as values and stop the stage at once without dask retries;
other exceptions (lost workers, flaky storage) are retried ``retries`` times by dask.
"""

from __future__ import annotations

import functools
import hashlib
import importlib
import pickle
import time
import uuid
import warnings
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any, Protocol

from distributed import Client

from pipeline.errors import SitsflowError
from pipeline.parallel import default_limit, submit_bounded
from pipeline.run.units import Ledger, Record, Unit
from pipeline.storage import RunStore, unwritable_error
from pipeline.warnings import SitsflowWarning, category_named

CONTEXTS = "state/contexts"

WorkFunction = Callable[[Any, Any], Mapping[str, Any] | None]


class Bar(Protocol):
    def advance(self, amount: int = 1) -> None: ...


class Display(Protocol):
    """What the executor needs from the progress display."""

    def bar(self, description: str, total: int) -> Bar: ...


@dataclass(frozen=True)
class StageWork:
    """The units of one stage and how to compute one."""

    name: str
    units: Sequence[Unit]
    function: WorkFunction
    context: Any = None
    on_cluster: bool = True
    description: str = ""


@dataclass
class StageOutcome:
    name: str
    total: int
    skipped: int
    ran: int
    seconds: float
    pixels: int
    """Pixels computed by the units that ran in this session (skipped units not counted)."""
    unit_seconds: float
    """Time the units that ran spent in their function, summed over units (compute cost)."""
    summaries: dict[str, dict[str, Any]] = field(default_factory=dict)
    """Summary of every unit by key: returned by the units that ran, read back for the others."""


@dataclass(frozen=True)
class ErrorInfo:
    """A SitsflowError carried back from a worker as data (rebuilt on the driver)."""

    kind: str
    what: str
    fix: str | None
    field: str | None

    @classmethod
    def of(cls, exc: SitsflowError) -> ErrorInfo:
        kind = f"{type(exc).__module__}:{type(exc).__qualname__}"
        return cls(kind, exc.what, exc.fix, exc.field)

    def rebuild(self) -> SitsflowError:
        module, _, name = self.kind.partition(":")
        try:
            cls = getattr(importlib.import_module(module), name)
        except (ImportError, AttributeError):
            cls = SitsflowError
        if not (isinstance(cls, type) and issubclass(cls, SitsflowError)):
            cls = SitsflowError
        return cls(self.what, fix=self.fix, field=self.field)


@dataclass(frozen=True)
class UnitCall:
    """Everything a worker needs to run one unit: small, picklable, no secret."""

    function: WorkFunction
    context: str | None
    payload: Any
    store: str
    stage: str
    key: str
    digest: str
    session: str


@dataclass(frozen=True)
class UnitResult:
    key: str
    summary: dict[str, Any]
    seconds: float
    worker: str
    warnings: tuple[tuple[str, str], ...] = ()
    error: ErrorInfo | None = None


# --- the worker side -----------------------------------------------------------------------------


@functools.lru_cache(maxsize=16)
def _load_context(store: str, name: str) -> Any:
    return pickle.loads(RunStore(store).read_bytes(f"{CONTEXTS}/{name}"))


def _worker_name() -> tuple[str, int]:
    try:
        from distributed import get_worker

        worker = get_worker()
    except ValueError:
        return "driver", 1
    return str(worker.name), int(worker.state.nthreads)


def _capture_warnings(threads: int) -> Any:
    """Record warnings raised by the unit, where that is safe (one thread per process)."""
    if threads == 1:
        return warnings.catch_warnings(record=True)
    return _NoCapture()


class _NoCapture:
    def __enter__(self) -> list[Any]:
        return []

    def __exit__(self, *exc: object) -> None:
        return None


def run_unit(call: UnitCall, context: Any = None) -> UnitResult:
    """Run one unit and record it in the ledger once its output is written.

    ``context`` is given directly when the unit runs in the driver; on a worker it is loaded
    from the run store by name.
    """
    if call.context is not None:
        context = _load_context(call.store, call.context)
    worker, threads = _worker_name()
    started = time.perf_counter()
    with _capture_warnings(threads) as caught:
        if threads == 1:
            warnings.simplefilter("always", SitsflowWarning)
        try:
            summary = dict(call.function(context, call.payload) or {})
        except SitsflowError as exc:
            return UnitResult(call.key, {}, 0.0, worker, error=ErrorInfo.of(exc))
        except OSError as exc:  # an unwritable store fails every retry alike: a clear stop
            error = unwritable_error(exc, call.store)
            if error is None:
                raise
            return UnitResult(call.key, {}, 0.0, worker, error=ErrorInfo.of(error))
    seconds = time.perf_counter() - started
    found = tuple(
        (w.category.__name__, str(w.message))
        for w in caught
        if isinstance(w.category, type) and issubclass(w.category, SitsflowWarning)
    )
    record = Record(
        stage=call.stage,
        key=call.key,
        digest=call.digest,
        session=call.session,
        worker=worker,
        seconds=round(seconds, 4),
        finished=datetime.now(UTC).isoformat(timespec="milliseconds"),
        summary=summary,
    )
    try:
        Ledger(RunStore(call.store)).write(record)
    except SitsflowError as exc:  # the store became unwritable after the unit's own output
        return UnitResult(call.key, {}, 0.0, worker, error=ErrorInfo.of(exc))
    return UnitResult(call.key, summary, seconds, worker, found)


# --- the driver side -----------------------------------------------------------------------------


def _reemit(results: Sequence[UnitResult]) -> None:
    """Show each distinct worker warning once on the driver, with how many units raised it."""
    counts: dict[tuple[str, str], int] = {}
    for result in results:
        for item in result.warnings:
            counts[item] = counts.get(item, 0) + 1
    for (name, message), count in counts.items():
        suffix = f" (in {count} units)" if count > 1 else ""
        warnings.warn(f"{message}{suffix}", category_named(name), stacklevel=3)


class Executor:
    """Runs stages for one session of a run, against one run store and one dask client."""

    def __init__(
        self,
        store: RunStore,
        session: str,
        client: Client | None,
        display: Display,
        *,
        retries: int = 2,
        max_in_flight: int | None = None,
        on_unit: Callable[[str, UnitResult], None] | None = None,
    ) -> None:
        self.store = store
        self.ledger = Ledger(store)
        self.session = session
        self.client = client
        self.display = display
        self.retries = retries
        self.max_in_flight = max_in_flight
        self.on_unit = on_unit
        self._round = 0
        self._token = uuid.uuid4().hex[:6]  # executors of one session never share dask keys

    def run(self, work: StageWork, *, read_summaries: bool = True) -> StageOutcome:
        started = time.perf_counter()
        self._round += 1
        done, todo = self.ledger.split(work.units)
        self.ledger.forget_stale(todo)
        label = work.description or work.name
        if done:
            label += f" ({len(done)} kept)"
        bar = self.display.bar(label, len(todo))
        results: list[UnitResult] = []

        def finished(unit: Unit, result: UnitResult) -> None:
            results.append(result)
            bar.advance(1)
            if self.on_unit is not None:
                self.on_unit(work.name, result)

        if todo:
            if work.on_cluster and self.client is not None:
                name = self._put_context(work) if work.context is not None else None
                self._run_on_cluster(work, todo, name, finished)
            else:
                for unit in todo:
                    result = run_unit(self._call(work, unit, None), work.context)
                    if result.error is not None:
                        raise result.error.rebuild()
                    finished(unit, result)
        _reemit(results)
        summaries = {r.key: r.summary for r in results}
        if read_summaries and done:
            summaries.update({k: r.summary for k, r in self.ledger.read_many(done).items()})
        by_key = {u.key: u for u in todo}
        return StageOutcome(
            name=work.name,
            total=len(work.units),
            skipped=len(done),
            ran=len(results),
            seconds=time.perf_counter() - started,
            pixels=sum(by_key[r.key].pixels for r in results),
            unit_seconds=sum(r.seconds for r in results),
            summaries={u.key: summaries[u.key] for u in work.units if u.key in summaries},
        )

    def _call(self, work: StageWork, unit: Unit, context: str | None) -> UnitCall:
        return UnitCall(
            function=work.function,
            context=context,
            payload=unit.payload,
            store=self.store.root,
            stage=unit.stage,
            key=unit.key,
            digest=unit.digest,
            session=self.session,
        )

    def _put_context(self, work: StageWork) -> str:
        """Store the stage's shared context once (content-addressed) and return its name."""
        data = pickle.dumps(work.context, protocol=pickle.HIGHEST_PROTOCOL)
        name = f"{work.name}-{hashlib.sha256(data).hexdigest()[:32]}.pickle"
        if not self.store.exists(f"{CONTEXTS}/{name}"):
            self.store.write_bytes(f"{CONTEXTS}/{name}", data)
        return name

    def _limit(self) -> int:
        if self.max_in_flight is not None:
            return self.max_in_flight
        assert self.client is not None
        return default_limit(self.client)

    def _run_on_cluster(
        self,
        work: StageWork,
        todo: Sequence[Unit],
        context: str | None,
        finished: Callable[[Unit, UnitResult], None],
    ) -> None:
        assert self.client is not None
        calls = [self._call(work, unit, context) for unit in todo]

        def done(index: int, result: UnitResult) -> None:
            if result.error is not None:
                raise result.error.rebuild()
            finished(todo[index], result)

        # Unique per unit, digest, session and stage run: dask treats equal keys as equal
        # results, and a key cancelled earlier must not be reused.
        submit_bounded(
            self.client,
            run_unit,
            calls,
            done,
            key=lambda _, c: f"{c.stage}-{c.key}-{c.digest[:12]}-{self._token}{self._round}",
            limit=self._limit,
            retries=self.retries,
        )
