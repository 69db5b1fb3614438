"""Dask clusters from the manifest's ``compute`` section.

The same run code talks to a ``distributed.Client`` whatever is behind it: a ``LocalCluster``
(``local``), an existing scheduler (``address``) or a DaskCluster that dask-kubernetes starts
(``kubernetes``). Only this module knows how clusters are made.

Storage and GDAL settings reach the workers explicitly, through a worker plugin that sets the
environment of every worker (also of workers that join later). Only settings are shipped, never
credentials: workers take those from their own environment (a LocalCluster's workers inherit the
driver's; Kubernetes pods get them from ``kubernetes.credentials_secret`` or a service account).

A LocalCluster's workers start without the ``MALLOC_TRIM_THRESHOLD_=65536`` that dask's nanny
sets by default (see ``LOCAL_CLUSTER_CONFIG``), and every worker a run starts exits without the
interpreter's final walk over its heap (``QuickExit``), so that closing the cluster takes well
under a second instead of the nanny's 4 s timeout.
"""

from __future__ import annotations

import contextlib
import gc
import importlib
import logging
import os
import re
import threading
from collections.abc import Iterator, Mapping, Sequence
from typing import Any

import dask.config
from dask.utils import parse_bytes
from distributed import Client, LocalCluster
from distributed.diagnostics.plugin import WorkerPlugin

from pipeline.errors import ComputeError
from pipeline.manifest import ComputeSpec

# Settings shipped to workers unless the driver's environment sets them otherwise.
GDAL_DEFAULTS: dict[str, str] = {
    # Opening a COG must not list its folder (thousands of objects on a bucket prefix).
    "GDAL_DISABLE_READDIR_ON_OPEN": "EMPTY_DIR",
    "GDAL_HTTP_MAX_RETRY": "5",
    "GDAL_HTTP_RETRY_DELAY": "1",
    "GDAL_HTTP_MULTIPLEX": "YES",
    "GDAL_HTTP_MERGE_CONSECUTIVE_RANGES": "YES",
    "VSI_CACHE": "TRUE",
}
# Non-secret variables copied from the driver's environment to the workers.
_SHIPPED = re.compile(
    r"^(AWS_(REGION|DEFAULT_REGION|ENDPOINT_URL|ENDPOINT_URL_S3|S3_ENDPOINT|HTTPS|"
    r"VIRTUAL_HOSTING|NO_SIGN_REQUEST|REQUEST_PAYER|PROFILE|CONFIG_FILE|"
    r"SHARED_CREDENTIALS_FILE|WEB_IDENTITY_TOKEN_FILE|ROLE_ARN|ROLE_SESSION_NAME|"
    r"STS_REGIONAL_ENDPOINTS|MAX_ATTEMPTS|RETRY_MODE)|"
    r"GDAL_[A-Z0-9_]+|CPL_[A-Z0-9_]+|VSI_[A-Z0-9_]+|GS_NO_SIGN_REQUEST|"
    r"GOOGLE_APPLICATION_CREDENTIALS|AZURE_STORAGE_ACCOUNT|PROJ_NETWORK)$"
)
# Names that hold secrets even when they match the pattern above (GDAL_HTTP_USERPWD ...).
_NEVER = re.compile(r"(SECRET|TOKEN$|PASSWORD|USERPWD|AUTH|HEADER|COOKIE|KEY$|_KEY_)")


def worker_environment(environ: Mapping[str, str] | None = None) -> dict[str, str]:
    """The storage/GDAL settings workers get: defaults, then the driver's non-secret settings.

    Paths to credential files and role names are settings (the files stay where they are);
    keys, tokens and passwords are never copied.
    """
    env = os.environ if environ is None else environ
    out = dict(GDAL_DEFAULTS)
    for name, value in env.items():
        if _SHIPPED.match(name) and not _NEVER.search(name):
            out[name] = value
    return out


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


# dask's nanny sets MALLOC_TRIM_THRESHOLD_=65536 in the environment of the worker processes it
# spawns (``distributed.nanny.pre-spawn-environ``). Setting the variable at all turns off glibc's
# dynamic mmap threshold: every array above 128 KiB is then mmap'd and unmapped again, and the
# cube benchmark measured chunks 1.7x slower (system time from page faults). ``None`` drops it
# from the spawn environment (the nanny skips keys set to None); a value the user exported in
# the driver's environment still reaches the workers, which inherit that environment.
LOCAL_CLUSTER_CONFIG: dict[str, Any] = {
    "distributed.nanny.pre-spawn-environ.MALLOC_TRIM_THRESHOLD_": None,
}
#: The same for ``dask worker`` in a pod, as dask reads it from the environment (one variable
#: per key would be lower-cased by dask; a dict is merged into the nanny's other defaults).
WORKER_POD_ENV: dict[str, str] = {
    "DASK_DISTRIBUTED__NANNY__PRE_SPAWN_ENVIRON": "{'MALLOC_TRIM_THRESHOLD_': None}",
}


# --- kubernetes ----------------------------------------------------------------------------------


def k8s_quantity(size: str) -> str:
    """A dask memory size ('4GiB', '1.5 GB') as a Kubernetes quantity ('4Gi', '1500M')."""
    count = int(parse_bytes(size.replace(" ", "")))
    for unit, factor in (("Gi", 2**30), ("Mi", 2**20), ("G", 10**9), ("M", 10**6)):
        if count % factor == 0:
            return f"{count // factor}{unit}"
    return str(count)


def cluster_name(run: str) -> str:
    """The DaskCluster's name: the run's, prefixed, within Kubernetes' 63 characters."""
    return f"sitsflow-{run}"[:63].rstrip("-")


def kubernetes_cluster_spec(
    compute: ComputeSpec, run: str, env: Mapping[str, str] | None = None
) -> dict[str, Any]:
    """The DaskCluster resource for ``compute`` (pure: no cluster is contacted).

    Built with dask-kubernetes' ``make_cluster_spec`` and completed with what it does not set:
    threads and memory of the workers, separate scheduler resources, the credentials secret as
    ``envFrom``, labels, service account, pull policy and the shipped settings.
    """
    from dask_kubernetes.operator import make_cluster_spec

    k8s = compute.kubernetes
    if k8s is None:
        raise ValueError("compute.kubernetes is needed for a Kubernetes cluster")
    memory = k8s_quantity(compute.memory_limit)
    worker_resources = {
        "requests": {"cpu": str(compute.threads_per_worker), "memory": memory},
        "limits": {"memory": memory},
    }
    shipped = dict(worker_environment({}) if env is None else env)
    name = cluster_name(run)
    spec: dict[str, Any] = make_cluster_spec(
        name=name,
        image=k8s.image,
        n_workers=compute.workers,
        resources=worker_resources,
        env=shipped,
        worker_command=(
            f"dask worker --nthreads {compute.threads_per_worker} "
            f"--memory-limit {compute.memory_limit.replace(' ', '')}"
        ),
    )
    labels = {
        "app.kubernetes.io/name": "sitsflow",
        "app.kubernetes.io/instance": run,
        "app.kubernetes.io/component": "dask",
        "app.kubernetes.io/managed-by": "sitsflow",
    }
    spec["metadata"]["labels"] = labels
    if k8s.namespace:
        spec["metadata"]["namespace"] = k8s.namespace
    scheduler_memory = k8s_quantity(k8s.scheduler_memory)
    for role in ("worker", "scheduler"):
        part = spec["spec"][role]
        part.setdefault("metadata", {})["labels"] = {**labels, "sitsflow.dev/role": role}
        pod = part["spec"]
        if k8s.service_account:
            pod["serviceAccountName"] = k8s.service_account
        for container in pod["containers"]:
            container["imagePullPolicy"] = k8s.image_pull_policy
            if role == "worker":
                container.setdefault("env", []).extend(
                    {"name": k, "value": v} for k, v in WORKER_POD_ENV.items()
                )
            if k8s.credentials_secret:
                container["envFrom"] = [{"secretRef": {"name": k8s.credentials_secret}}]
            if role == "scheduler":
                container["resources"] = {
                    "requests": {"cpu": "1", "memory": scheduler_memory},
                    "limits": {"memory": scheduler_memory},
                }
    return spec


# --- clients -------------------------------------------------------------------------------------


def _quiet_distributed() -> None:
    # Worker start-up chatter is INFO; the run reports its own progress.
    logging.getLogger("distributed").setLevel(logging.WARNING)


@contextlib.contextmanager
def open_client(compute: ComputeSpec, *, run: str = "run") -> Iterator[Client]:
    """A client on the cluster ``compute`` describes, with the worker settings installed.

    A cluster this function starts (local, kubernetes) is closed on exit; an existing
    scheduler (address) is only disconnected from.
    """
    _quiet_distributed()
    with contextlib.ExitStack() as stack:
        if compute.cluster == "address":
            client = _connect(compute)
            stack.callback(client.close)
        elif compute.cluster == "kubernetes":
            cluster = _kube_cluster(compute, run)
            stack.callback(cluster.close)
            client = Client(cluster, timeout=compute.connect_timeout_s)
            stack.callback(client.close)
        else:
            # For the cluster's whole life: adaptive scaling spawns workers later.
            stack.enter_context(dask.config.set(LOCAL_CLUSTER_CONFIG))
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


def _connect(compute: ComputeSpec) -> Client:
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
            field="spec.compute.address",
        ) from None
    try:
        client.wait_for_workers(1, timeout=compute.connect_timeout_s)
    except TimeoutError:
        client.close()
        raise ComputeError(
            f"the scheduler at {address} has no worker after {compute.connect_timeout_s:.0f} s",
            fix=f"start dask workers against it (dask worker {address}), or raise "
            "compute.connect_timeout_s",
            field="spec.compute.address",
        ) from None
    return client


def _kube_cluster(compute: ComputeSpec, run: str) -> Any:
    from dask_kubernetes.operator import KubeCluster

    k8s = compute.kubernetes
    assert k8s is not None
    try:
        cluster = KubeCluster(
            custom_cluster_spec=kubernetes_cluster_spec(compute, run, worker_environment()),
            namespace=k8s.namespace,
            shutdown_on_close=True,
            resource_timeout=int(compute.connect_timeout_s),
        )
    except Exception as exc:  # kubernetes clients raise many types; all mean "cannot start"
        raise ComputeError(
            f"the Kubernetes DaskCluster could not be started ({type(exc).__name__}: {exc})",
            fix="check the kubeconfig or in-cluster service account, that the dask-kubernetes "
            "operator is installed, and compute.kubernetes (image, namespace)",
            field="spec.compute.kubernetes",
        ) from None
    if compute.adaptive is not None:
        cluster.adapt(minimum=compute.adaptive.minimum, maximum=compute.adaptive.maximum)
    return cluster


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

# What the units of each stage import on a worker (the first unit of a stage pays for it).
# skops.io alone takes 2 s or more: its import scans every scikit-learn estimator; the train,
# predict and validate units save or load the model with it.
SKOPS = "skops.io"
KERNELS = "pipeline.cube.build:load_kernels"
STAGE_MODULES: dict[str, tuple[str, ...]] = {
    "cube": ("pipeline.run.stages", KERNELS),
    "samples": ("pipeline.run.stages",),
    "train": ("pipeline.run.stages", "pipeline.learn", SKOPS),
    "predict": ("pipeline.run.stages", "pipeline.predict.blockwise", SKOPS),
    "mosaic": (
        "pipeline.run.stages",
        "pipeline.predict.outputs",
        "pipeline.predict.stac",
        "pipeline.validate.mapped_area",
    ),
    "validate": ("pipeline.run.stages", "pipeline.validate.report", "pipeline.learn", SKOPS),
}


def stage_modules(stages: Sequence[str], model_kind: str = "sklearn") -> tuple[str, ...]:
    """The modules the units of ``stages`` import, once each (no skops for a torch model)."""
    wanted = (m for s in stages for m in STAGE_MODULES.get(s, ()))
    return tuple(m for m in dict.fromkeys(wanted) if m != SKOPS or model_kind != "torch")


def import_modules(modules: Sequence[str]) -> list[str]:
    """Import ``modules`` (a worker warming up); return them. ``module:function`` imports the
    module and calls the function (e.g. loading compiled kernels)."""
    for name in modules:
        module, _, function = name.partition(":")
        imported = importlib.import_module(module)
        if function:
            getattr(imported, function)()
    return list(modules)


class ClusterStarter:
    """Starts the cluster in a background thread while the driver goes on planning.

    Starting a cluster (spawning workers, scheduling pods) and importing what the units need
    on each worker take seconds to minutes; they overlap with the driver's own work. ``client()``
    waits for it and raises what the start raised.
    """

    def __init__(
        self,
        compute: ComputeSpec,
        run: str,
        stages: Sequence[str] = (),
        *,
        model_kind: str = "sklearn",
    ) -> None:
        self._compute = compute
        self._run = run
        self.modules = stage_modules(stages, model_kind)
        """The modules every worker imports before its first unit."""
        self._stack = contextlib.ExitStack()
        self._client: Client | None = None
        self._error: BaseException | None = None
        self._warm_up: list[Any] = []
        self._thread = threading.Thread(target=self._start, name="sitsflow-cluster", daemon=True)
        self._thread.start()

    def _start(self) -> None:
        try:
            client = self._stack.enter_context(open_client(self._compute, run=self._run))
            if self.modules:
                workers = list(client.scheduler_info(n_workers=-1).get("workers", {}))
                self._warm_up = [
                    client.submit(import_modules, list(self.modules), workers=[w], pure=False)
                    for w in workers
                ]
            self._client = client
        except BaseException as exc:  # handed to the thread that asks for the client
            self._error = exc

    def client(self) -> Client:
        self._thread.join()
        if self._error is not None:
            raise self._error
        assert self._client is not None
        return self._client

    def close(self) -> None:
        self._thread.join()
        self._warm_up.clear()
        self._stack.close()
