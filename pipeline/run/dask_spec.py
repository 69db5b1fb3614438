"""The one DaskCluster builder: pure functions from a run's sizes and pod settings to a dict.

Two callers start dask clusters on Kubernetes: the operator (a SitsRun's own DaskCluster, see
``pipeline.k8s.specs``) and a run with ``compute.cluster: kubernetes`` (``pipeline.run.kube``
creates it with its certificates' Secret and NetworkPolicies, then reaches the scheduler over TLS
through a port-forward: dask-kubernetes' ``KubeCluster`` cannot do TLS). Both build it here, on
dask-kubernetes' own ``make_cluster_spec``, so the pods carry one set of ``app.kubernetes.io/*``
labels, one hardened security context and one environment, whoever starts them. Nothing here
contacts a cluster.

The settings shipped from the driver to the workers are filtered here too (``worker_environment``):
storage and GDAL settings go, credentials never do. Two optional pieces dress the pods further:
PersistentVolumeClaims (``Volume``: mounted in the driver and the workers, not the scheduler)
and TLS (``tls_environment``: dask's own settings pointing at a Secret's certificates; the
operator makes them per run, see ``pipeline.k8s.tls``).
"""

from __future__ import annotations

import hashlib
import os
import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from dask.utils import parse_bytes

from pipeline.run.forkserver import WORKER_SPAWN_ENVIRON

SCHEDULER_PORT = 8786
DASHBOARD_PORT = 8787
WORKER_DASHBOARD_PORT = 8788  # what make_worker_spec opens
SCRATCH_DIR = "/tmp"
TLS_DIR = "/etc/dask-tls"  # the run's certificates (a Secret), read-only
RUN_USER = 10001  # the image's unprivileged user (deploy/Dockerfile)
RUN_LABEL = "sitsflow.dev/run"

# --- what workers get from the driver's environment --------------------------------------------

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
_NEVER = re.compile(r"(SECRET|TOKEN$|PASSWORD|USERPWD|AUTH|HEADER|COOKIE|KEY$|_KEY_|BEARER)")


def worker_environment(environ: Mapping[str, str] | None = None) -> dict[str, str]:
    """The storage/GDAL settings workers get: defaults, then the driver's non-secret settings.

    Paths to credential files and role names are settings (the files stay where they are);
    keys, tokens and passwords are never copied.
    """
    env = os.environ if environ is None else environ
    out = dict(GDAL_DEFAULTS)
    for name in list(env):  # names, then values: a variable may go meanwhile (secrets.known)
        value = env.get(name)
        if value is not None and _SHIPPED.match(name) and not _NEVER.search(name):
            out[name] = value
    return out


#: ``dask worker`` in a pod spawns its worker process with ``WORKER_SPAWN_ENVIRON`` (why: see
#: ``pipeline.run.forkserver``). dask reads the setting from the environment; one variable per key
#: would be lower-cased by dask, a dict is merged into the nanny's defaults.
WORKER_POD_ENV: dict[str, str] = {
    "DASK_DISTRIBUTED__NANNY__PRE_SPAWN_ENVIRON": repr(WORKER_SPAWN_ENVIRON),
}
#: A read-only root: everything that writes goes to the scratch volume.
SCRATCH_ENV: dict[str, str] = {
    "HOME": SCRATCH_DIR,
    "MPLCONFIGDIR": f"{SCRATCH_DIR}/matplotlib",
    "DASK_TEMPORARY_DIRECTORY": f"{SCRATCH_DIR}/dask",
}

# --- TLS between the driver, the scheduler and the workers --------------------------------------

#: The files of a run's TLS Secret: its own CA, and the one certificate and key that the
#: scheduler, the workers and the driver present (dask checks the chain, not host names).
TLS_CA, TLS_CERT, TLS_KEY = "ca.crt", "tls.crt", "tls.key"


def tls_environment(directory: str = TLS_DIR) -> dict[str, str]:
    """dask's own security settings (distributed.comm.tls.*) for certificates in ``directory``:
    every connection encrypted and both ends authenticated by the run's CA."""
    ca, cert, key = (f"{directory}/{name}" for name in (TLS_CA, TLS_CERT, TLS_KEY))
    env = {
        "DASK_DISTRIBUTED__COMM__REQUIRE_ENCRYPTION": "True",
        "DASK_DISTRIBUTED__COMM__TLS__CA_FILE": ca,
    }
    for role in ("SCHEDULER", "WORKER", "CLIENT"):
        env[f"DASK_DISTRIBUTED__COMM__TLS__{role}__CERT"] = cert
        env[f"DASK_DISTRIBUTED__COMM__TLS__{role}__KEY"] = key
    return env


@dataclass(frozen=True)
class Volume:
    """A PersistentVolumeClaim mounted at ``mount_path`` (``compute.kubernetes.volumes``)."""

    claim: str
    mount_path: str
    read_only: bool = False

    @property
    def name(self) -> str:
        # A pod volume name (a DNS label) that two claims cannot share.
        return "data-" + hashlib.sha256(self.mount_path.encode()).hexdigest()[:10]


# --- pieces shared by every pod a run owns ------------------------------------------------------


def k8s_quantity(size: str) -> str:
    """A dask memory size ('4GiB', '1.5 GB') as an exact Kubernetes quantity ('4Gi', '1500M')."""
    count = int(parse_bytes(size.replace(" ", "")))
    for unit, factor in (("Gi", 2**30), ("Mi", 2**20), ("G", 10**9), ("M", 10**6)):
        if count % factor == 0:
            return f"{count // factor}{unit}"
    return str(count)


def labels(instance: str, component: str, managed_by: str) -> dict[str, str]:
    """The labels of every object a run owns (Kubernetes' recommended app.kubernetes.io keys)."""
    return {
        "app.kubernetes.io/name": "sitsflow",
        "app.kubernetes.io/instance": instance,
        "app.kubernetes.io/component": component,
        "app.kubernetes.io/part-of": "sitsflow",
        "app.kubernetes.io/managed-by": managed_by,
        RUN_LABEL: instance,
    }


def pod_security() -> dict[str, Any]:
    return {
        "runAsNonRoot": True,
        "runAsUser": RUN_USER,
        "runAsGroup": RUN_USER,
        "fsGroup": RUN_USER,
        "seccompProfile": {"type": "RuntimeDefault"},
    }


def container_security() -> dict[str, Any]:
    return {
        "allowPrivilegeEscalation": False,
        "readOnlyRootFilesystem": True,
        "runAsNonRoot": True,
        "capabilities": {"drop": ["ALL"]},
    }


@dataclass(frozen=True)
class PodSettings:
    """How a run's pods are dressed: image, identity, credentials, plain settings, placement."""

    image: str
    image_pull_policy: str = "IfNotPresent"
    image_pull_secrets: tuple[str, ...] = ()
    service_account: str | None = None
    #: A Secret whose keys become environment variables (the spec holds only its name).
    credentials_secret: str | None = None
    #: Plain variables of every container, after the scratch settings (never a secret).
    env: Mapping[str, str] = field(default_factory=dict)
    node_selector: Mapping[str, str] = field(default_factory=dict)
    tolerations: tuple[Mapping[str, Any], ...] = ()
    #: Claims mounted in the driver and the workers (not the scheduler: it reads no data).
    volumes: tuple[Volume, ...] = ()
    #: The Secret with the run's certificates (see ``tls_environment``); None: plain TCP.
    tls_secret: str | None = None


def pod_common(pods: PodSettings, *, data: bool = True) -> dict[str, Any]:
    """What every pod of a run has: identity, hardening, the scratch volume, placement, the TLS
    certificates; ``data``: the claims too."""
    pod: dict[str, Any] = {}
    if pods.service_account:
        pod["serviceAccountName"] = pods.service_account
    # Scheduler and workers never call the API: no token in their pods (the driver sets its own).
    pod["automountServiceAccountToken"] = False
    pod["securityContext"] = pod_security()
    pod["volumes"] = [{"name": "scratch", "emptyDir": {}}]
    if pods.tls_secret:
        # 0440 with fsGroup: readable by the run's user only.
        secret = {"secretName": pods.tls_secret, "defaultMode": 0o440}
        pod["volumes"].append({"name": "dask-tls", "secret": secret})
    if data:
        pod["volumes"] += [
            {
                "name": v.name,
                "persistentVolumeClaim": {"claimName": v.claim, "readOnly": v.read_only},
            }
            for v in pods.volumes
        ]
    if pods.image_pull_secrets:
        pod["imagePullSecrets"] = [{"name": n} for n in pods.image_pull_secrets]
    if pods.node_selector:
        pod["nodeSelector"] = dict(pods.node_selector)
    if pods.tolerations:
        pod["tolerations"] = [dict(t) for t in pods.tolerations]
    return pod


def env_list(*parts: Mapping[str, str]) -> list[dict[str, str]]:
    """Container ``env`` entries from mappings, later ones winning, first-seen order kept."""
    merged: dict[str, str] = {}
    for part in parts:
        merged.update(part)
    return [{"name": k, "value": v} for k, v in merged.items()]


def dress_container(
    container: dict[str, Any], pods: PodSettings, *env: Mapping[str, str], data: bool = True
) -> None:
    """Image policy, environment, credentials, hardening, the scratch, TLS and (``data``) claim
    mounts, in place."""
    container["imagePullPolicy"] = pods.image_pull_policy
    tls = tls_environment() if pods.tls_secret else {}
    container["env"] = env_list(SCRATCH_ENV, pods.env, tls, *env)
    if pods.credentials_secret:
        container["envFrom"] = [{"secretRef": {"name": pods.credentials_secret}}]
    container["securityContext"] = container_security()
    ours = {"scratch", "dask-tls", *(v.name for v in pods.volumes)}
    mounts = [m for m in container.get("volumeMounts") or [] if m.get("name") not in ours]
    added: list[dict[str, Any]] = [{"name": "scratch", "mountPath": SCRATCH_DIR}]
    if pods.tls_secret:
        added.append({"name": "dask-tls", "mountPath": TLS_DIR, "readOnly": True})
    if data:
        added += [
            {"name": v.name, "mountPath": v.mount_path, "readOnly": v.read_only}
            for v in pods.volumes
        ]
    container["volumeMounts"] = [*added, *mounts]


# --- the DaskCluster ----------------------------------------------------------------------------


@dataclass(frozen=True)
class ClusterSize:
    """The workers (from ``compute``) and the scheduler's resources."""

    workers: int
    threads_per_worker: int
    memory_limit: str  # a dask size, e.g. "4GiB"
    scheduler_resources: Mapping[str, Mapping[str, str]]


def scheduler_resources(memory: str, cpu: str = "1") -> dict[str, dict[str, str]]:
    """Requests and limits of a scheduler with ``memory`` (a dask size)."""
    quantity = k8s_quantity(memory)
    return {"requests": {"cpu": cpu, "memory": quantity}, "limits": {"memory": quantity}}


def build_dask_cluster_spec(
    name: str,
    *,
    instance: str,
    managed_by: str,
    size: ClusterSize,
    pods: PodSettings,
    namespace: str | None = None,
    scheduler_address: str | None = None,
) -> dict[str, Any]:
    """A kubernetes.dask.org/v1 DaskCluster: dask-kubernetes' ``make_cluster_spec``, completed
    with what it does not set (threads and memory of the workers, the scheduler's own resources,
    labels, identity, hardening, the scratch volume and the environment).

    With ``pods.tls_secret`` the scheduler listens on TLS only and the workers connect to
    ``scheduler_address`` (tls://...), which is then required: dask-kubernetes hands workers a
    tcp:// address of its own, which a TLS scheduler refuses.
    """
    from dask_kubernetes.operator import make_cluster_spec

    if pods.tls_secret and not (scheduler_address or "").startswith("tls://"):
        raise ValueError(f"a TLS cluster needs a tls:// scheduler address, not {scheduler_address}")
    memory = k8s_quantity(size.memory_limit)
    # A positional address wins over the DASK_SCHEDULER_ADDRESS dask-kubernetes sets.
    address = f"{scheduler_address} " if pods.tls_secret else ""
    spec: dict[str, Any] = make_cluster_spec(
        name=name,
        image=pods.image,
        n_workers=size.workers,
        # One CPU per thread; memory as dask is told, so dask spills before the kernel kills.
        resources={
            "requests": {"cpu": str(size.threads_per_worker), "memory": memory},
            "limits": {"memory": memory},
        },
        worker_command=(
            f"dask worker {address}--nthreads {size.threads_per_worker} "
            f"--memory-limit {size.memory_limit.replace(' ', '')} "
            f"--local-directory {SCRATCH_DIR}/dask"
        ),
    )
    spec["metadata"]["labels"] = labels(instance, "dask-cluster", managed_by)
    if namespace:
        spec["metadata"]["namespace"] = namespace
    for role in ("worker", "scheduler"):
        part = spec["spec"][role]
        part["metadata"] = {"labels": labels(instance, role, managed_by)}
        part["spec"] = {**pod_common(pods, data=role == "worker"), **part["spec"]}
    (worker,) = spec["spec"]["worker"]["spec"]["containers"]
    dress_container(worker, pods, WORKER_POD_ENV)
    (scheduler,) = spec["spec"]["scheduler"]["spec"]["containers"]
    dress_container(scheduler, pods, data=False)
    scheduler.update(
        # `dask-scheduler` (make_scheduler_spec's) is deprecated; the dashboard on its own port.
        args=scheduler_args(tls=bool(pods.tls_secret)),
        resources={k: dict(v) for k, v in size.scheduler_resources.items() if v},
        readinessProbe={
            "httpGet": {"port": "http-dashboard", "path": "/health"},
            "periodSeconds": 5,
            "timeoutSeconds": 5,
        },
    )
    return spec


def scheduler_args(*, tls: bool, host: str = "0.0.0.0", port: int = SCHEDULER_PORT) -> list[str]:
    """The scheduler's command: TLS only when ``tls`` (the certificates come from
    ``tls_environment``), the dashboard (plain HTTP, for the probe and the ingress) apart."""
    args = ["dask", "scheduler", "--host", host, "--port", str(port)]
    if tls:
        args += ["--protocol", "tls"]
    return [*args, "--dashboard-address", f":{DASHBOARD_PORT}"]
