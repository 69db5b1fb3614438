"""Dask clusters from the manifest's ``compute`` section.

The same run code talks to a ``distributed.Client`` whatever is behind it: a ``LocalCluster``
(``local``), an existing scheduler (``address``) or the run's own closed DaskCluster on
Kubernetes (``kubernetes``, made in ``pipeline.run.kube``). Only these modules know how clusters
are made.

Storage and GDAL settings reach the workers explicitly, through a worker plugin that sets the
environment of every worker (also of workers that join later). Only settings are shipped, never
credentials: workers take those from their own environment (a LocalCluster's workers inherit the
driver's; Kubernetes pods get them from ``kubernetes.credentials_secret`` or a service account).

A LocalCluster's workers start without the ``MALLOC_TRIM_THRESHOLD_=65536`` that dask's nanny
sets by default and without numpy's huge-page requests (``WORKER_SPAWN_ENVIRON``), and every
worker a run starts exits without the interpreter's final walk over its heap (``QuickExit``),
so that closing the cluster takes well under a second instead of the nanny's 4 s timeout.
"""

from __future__ import annotations

import contextlib
import gc
import importlib
import logging
import os
import threading
import time
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import dask.config
from distributed import Client, LocalCluster
from distributed.diagnostics.plugin import WorkerPlugin

from pipeline.errors import ComputeError
from pipeline.run import forkserver
from pipeline.run.config import ComputeConfig
from pipeline.run.dask_spec import worker_environment
from pipeline.run.forkserver import WORKER_SPAWN_ENVIRON
from pipeline.run.kube import MANAGED_BY, closed_cluster, cluster_name, kubernetes_cluster_spec

__all__ = ["MANAGED_BY", "cluster_name", "kubernetes_cluster_spec"]  # (pipeline.run.kube's)


class WorkerEnvironment(WorkerPlugin):
    """Sets storage/GDAL settings in every worker's environment, including late joiners."""

    name = "sitsflow-environment"

    def __init__(self, env: Mapping[str, str]) -> None:
        self.env = dict(env)

    def setup(self, worker: Any) -> None:
        os.environ.update(self.env)


class QuickExit(WorkerPlugin):
    """Lets a closing worker process exit at once instead of walking its whole heap.

    A worker process that ran units holds hundreds of thousands of objects (numpy, pandas,
    scikit-learn, GDAL bindings). At exit the interpreter's final garbage collections walk all
    of them: 1.5 s for the imports alone, and more than the nanny's 4 s on a loaded machine, so
    that closing a cluster ended with "Worker process still alive after 4.0 seconds, killing".
    Freezing the heap when the worker closes (``teardown`` runs in ``Worker.close``) keeps those
    objects out of the final collections; they are still freed with the process.
    """

    name = "sitsflow-quick-exit"

    def teardown(self, worker: Any) -> None:
        gc.freeze()


# The workers' spawn environment (``WORKER_SPAWN_ENVIRON``: why each setting). ``None`` drops
# dask's value (the nanny skips keys set to None); a value the user exported in the driver's
# environment still reaches the workers, which inherit that environment.
LOCAL_CLUSTER_CONFIG: dict[str, Any] = {
    f"distributed.nanny.pre-spawn-environ.{name}": value
    for name, value in WORKER_SPAWN_ENVIRON.items()
}


# --- the fork server of a local cluster's workers (pipeline.run.forkserver) ----------------------


def preloaded_modules(preload: str) -> tuple[str, ...]:
    """The warm-up names a fork server's preload (``forkserver.MODULES_VARIABLE``) stands for."""
    if preload.startswith(forkserver.ALL_STAGES):
        from pipeline.stages import stage_names

        return stage_modules(stage_names(), preload.removeprefix(forkserver.ALL_STAGES))
    return tuple(filter(None, preload.split(",")))


def start_fork_server(modules: Sequence[str]) -> None:
    """A fork server that preloaded ``modules`` (warm-up names): the running one when it
    preloaded all of them already (one that ``forkserver.prestart`` started), else a new one."""
    running = forkserver.running()
    if running is not None and set(modules) <= set(preloaded_modules(running)):
        return
    forkserver.start(",".join(modules))


# --- clients -------------------------------------------------------------------------------------


def _quiet_distributed() -> None:
    # Worker start-up chatter is INFO; the run reports its own progress.
    logging.getLogger("distributed").setLevel(logging.WARNING)


@contextlib.contextmanager
def open_client(
    compute: ComputeConfig, *, run: str = "run", preload: Sequence[str] | None = None
) -> Iterator[Client]:
    """A client on the cluster ``compute`` describes, with the worker settings installed.

    A cluster this function starts (local, kubernetes) is closed on exit; an existing
    scheduler (address) is only disconnected from. ``preload``: a local cluster's workers are
    forked from a server that imported these modules (see ``start_fork_server``).
    """
    _quiet_distributed()
    with contextlib.ExitStack() as stack:
        if compute.cluster == "address":
            client = _connect(compute)
            stack.callback(client.close)
        elif compute.cluster == "kubernetes":
            # Closed: TLS with the run's own certificates, NetworkPolicies (pipeline.run.kube).
            client = stack.enter_context(closed_cluster(compute, run, worker_environment()))
        else:
            # For the cluster's whole life: adaptive scaling spawns workers later.
            stack.enter_context(dask.config.set(LOCAL_CLUSTER_CONFIG))
            if preload is not None:
                stack.enter_context(
                    dask.config.set({"distributed.worker.multiprocessing-method": "forkserver"})
                )
                start_fork_server(preload)
                stack.callback(forkserver.stop)  # after the cluster closes (callbacks: LIFO)
            local = LocalCluster(
                n_workers=compute.workers,
                threads_per_worker=compute.threads_per_worker,
                memory_limit=compute.memory_limit,
                processes=True,
                host="127.0.0.1",
                dashboard_address=f"127.0.0.1:{compute.dashboard_port}",
            )
            stack.callback(local.close)
            if compute.adaptive is not None:
                local.adapt(minimum=compute.adaptive.minimum, maximum=compute.adaptive.maximum)
            client = Client(local, timeout=compute.connect_timeout_s)
            stack.callback(client.close)
        client.register_plugin(WorkerEnvironment(worker_environment()))
        if compute.cluster != "address":  # workers this run started, and stops
            client.register_plugin(QuickExit())
        yield client


def _connect(compute: ComputeConfig) -> Client:
    address = compute.address
    assert address is not None
    try:
        client = Client(address, timeout=compute.connect_timeout_s)
    except (OSError, TimeoutError) as exc:
        raise ComputeError(
            f"no dask scheduler answered at {address} within {compute.connect_timeout_s:.0f} s "
            f"({type(exc).__name__})",
            fix="start the scheduler or correct compute.address (tcp://host:port); raise "
            "compute.connect_timeout_s for a slow network",
            field="compute.address",
        ) from None
    try:
        client.wait_for_workers(1, timeout=compute.connect_timeout_s)
    except TimeoutError:
        client.close()
        raise ComputeError(
            f"the scheduler at {address} has no worker after {compute.connect_timeout_s:.0f} s",
            fix=f"start dask workers against it (dask worker {address}), or raise "
            "compute.connect_timeout_s",
            field="compute.address",
        ) from None
    return client


def worker_capacity(client: Client) -> list[tuple[str, int, int]]:
    """(worker name, memory limit in bytes, threads) of the workers connected now."""
    info = client.scheduler_info(n_workers=-1)
    out = []
    for address, worker in sorted(info.get("workers", {}).items()):
        out.append(
            (
                str(worker.get("name", address)),
                int(worker.get("memory_limit") or 0),
                int(worker.get("nthreads") or 1),
            )
        )
    return out


# --- starting early ------------------------------------------------------------------------------

#: Saves and loads scikit-learn models (without torch): not needed by a torch model.
SKOPS = "pipeline.learn.sklearn_store:import_skops"
#: Predicts scikit-learn forests compiled (the trees' kernels): not needed by a torch model.
COMPILED = "pipeline.learn.compiled:load_kernels"


def stage_modules(stages: Sequence[str], model_kind: str = "sklearn") -> tuple[str, ...]:
    """The modules the units of ``stages`` import on a worker, once each, from the registry:
    each stage's own module, then what it names in ``worker_imports`` (the first unit of a stage
    would pay for them); no skops nor compiled engine for a torch model."""
    from pipeline.stages import get

    wanted: list[str] = []
    for name in stages:
        stage = get(name)
        wanted += [type(stage).__module__, *getattr(stage, "worker_imports", ())]
    scikit_learn_only = {SKOPS, COMPILED} if model_kind == "torch" else set()
    return tuple(m for m in dict.fromkeys(wanted) if m not in scikit_learn_only)


def driver_modules(stages: Sequence[str]) -> tuple[str, ...]:
    """What the units of ``stages`` that run on the driver import (each stage's
    ``driver_imports``), from the registry."""
    from pipeline.stages import get

    wanted = [m for name in stages for m in getattr(get(name), "driver_imports", ())]
    return tuple(dict.fromkeys(wanted))


def import_in_background(modules: Sequence[str]) -> threading.Thread:
    """Import ``modules`` in a daemon thread of this process (the driver, while the workers
    compute): a unit that needs them later finds them loaded. A failure is left to that unit's
    own import, which reports it."""

    def run() -> None:
        for name in modules:
            with contextlib.suppress(Exception):
                import_modules([name])

    thread = threading.Thread(target=run, name="sitsflow-driver-imports", daemon=True)
    thread.start()
    return thread


def import_modules(modules: Sequence[str]) -> list[str]:
    """Import ``modules`` (a worker warming up); return them. ``module:function`` imports the
    module and calls the function (e.g. loading compiled kernels)."""
    for name in modules:
        module, _, function = name.partition(":")
        imported = importlib.import_module(module)
        if function:
            getattr(imported, function)()
    return list(modules)


@dataclass(frozen=True)
class WarmUp:
    """A started cluster's workers, ready: how many, and when."""

    workers: int
    seconds: float
    """From the cluster being asked for to its last worker's warm-up done."""
    waited: float
    """Of which the driver waited for (what planning did not hide)."""
    finished: bool = True
    """False: a warm-up was still running when the driver stopped waiting."""


class ClusterStarter:
    """Starts the cluster in a background thread while the driver goes on planning.

    Starting a cluster (spawning workers, scheduling pods) and importing what the units need
    on each worker take seconds to minutes; they overlap with the driver's own work. ``client()``
    waits for it and raises what the start raised; ``ready()`` waits for the workers' warm-up
    too. ``preload``: a local cluster's workers are forked from a server that imported the
    warm-up's modules once (``start_fork_server``) instead of each importing them.

    A cluster started before the stages left are known (a local run, forked from the server
    ``forkserver.prestart`` started: its workers import nothing) gets them later, from
    :meth:`warm_up`.
    """

    def __init__(
        self,
        compute: ComputeConfig,
        run: str,
        stages: Sequence[str] = (),
        *,
        model_kind: str = "sklearn",
        preload: bool = False,
    ) -> None:
        self._compute = compute
        self._run = run
        self._model_kind = model_kind
        self.modules = stage_modules(stages, model_kind)
        """The modules every worker imports before its first unit."""
        self._preload = preload and compute.cluster == "local"
        self._asked = time.perf_counter()
        self._stack = contextlib.ExitStack()
        self._client: Client | None = None
        self._error: BaseException | None = None
        self._warm_up: list[Any] = []
        self._lock = threading.Lock()  # the client and the warm-up, set from two threads
        self._told = bool(stages)
        self._thread = threading.Thread(target=self._start, name="sitsflow-cluster", daemon=True)
        self._thread.start()

    def _start(self) -> None:
        try:
            preload = self.modules if self._preload else None
            client = self._stack.enter_context(
                open_client(self._compute, run=self._run, preload=preload)
            )
            with self._lock:
                self._client = client
                self._submit_warm_up()
        except BaseException as exc:  # handed to the thread that asks for the client
            self._error = exc

    def _submit_warm_up(self) -> None:
        """Each worker imports ``modules`` (under the lock, once the client is up)."""
        if self._client is None or not self.modules or self._warm_up:
            return
        workers = list(self._client.scheduler_info(n_workers=-1).get("workers", {}))
        self._warm_up = [
            self._client.submit(import_modules, list(self.modules), workers=[w], pure=False)
            for w in workers
        ]

    def warm_up(self, stages: Sequence[str]) -> None:
        """The stages left, known once planning has the units: their modules are imported on
        each worker as soon as the cluster is up (at once when it is)."""
        modules = stage_modules(stages, self._model_kind)
        with self._lock:
            if not self._told:  # once: the stages of one plan
                self._told = True
                self.modules = modules
                self._submit_warm_up()

    def client(self) -> Client:
        self._thread.join()
        if self._error is not None:
            raise self._error
        assert self._client is not None
        return self._client

    def ready(self, timeout: float | None = None, *, since: float | None = None) -> WarmUp:
        """Wait for the client and every worker's warm-up (at most ``timeout`` seconds for the
        warm-up); a warm-up that failed raises here, before any unit runs. ``since``: when the
        caller started waiting (``time.perf_counter``), if before this call."""
        from distributed import wait

        waiting = time.perf_counter() if since is None else since
        client = self.client()
        finished = True
        if self._warm_up:
            done, not_done = wait(self._warm_up, timeout=timeout, return_when="ALL_COMPLETED")
            finished = not not_done
            for future in done:
                future.result()
        now = time.perf_counter()
        workers = len(client.scheduler_info(n_workers=-1).get("workers", {}))
        return WarmUp(workers, now - self._asked, now - waiting, finished)

    def close(self) -> None:
        self._thread.join()
        self._warm_up.clear()
        self._stack.close()
