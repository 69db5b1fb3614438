"""Pure builders of the objects one SitsRun owns: a ConfigMap, a DaskCluster and a driver Job.

Nothing here talks to a cluster: each function takes the run and the operator's settings and
returns a dict ready to POST, so every field is unit-tested. The DaskCluster comes from the one
builder that ``compute.cluster: kubernetes`` uses too (``pipeline.run.dask_spec``); the driver's
pod is dressed the same way. All objects carry the same labels and an owner reference to the
SitsRun, so deleting the run deletes them (Kubernetes garbage collection; the operator's delete
handler also deletes them explicitly, to stop the workers at once).
"""

from __future__ import annotations

import hashlib
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import PurePosixPath
from typing import Any

import yaml

from pipeline.k8s import API_VERSION, KIND
from pipeline.k8s.config import OperatorConfig
from pipeline.manifest import RunManifest
from pipeline.run.dask_spec import (
    DASHBOARD_PORT,
    RUN_LABEL,
    SCHEDULER_PORT,
    ClusterSize,
    PodSettings,
    Volume,
    build_dask_cluster_spec,
    container_security,
    dress_container,
    k8s_quantity,
    pod_common,
)
from pipeline.run.dask_spec import labels as run_labels

MANIFEST_DIR = "/etc/sitsflow"
MANIFEST_FILE = "run.yaml"
MANAGED_BY = "sitsflow-operator"
__all__ = ["RUN_LABEL"]  # re-exported: the operator selects a run's objects by it
DASK_CLUSTER_MAX_NAME = 53  # dask-kubernetes appends "-scheduler" and keeps names under 63
JOB_MAX_NAME = 52  # pod names add a suffix to the Job's name


@dataclass(frozen=True)
class RunRef:
    """The identity of one SitsRun object, as the API server gave it."""

    name: str
    namespace: str
    uid: str
    generation: int = 1

    @classmethod
    def from_body(cls, body: Mapping[str, Any]) -> RunRef:
        meta = body["metadata"]
        return cls(
            name=meta["name"],
            namespace=meta.get("namespace") or "default",
            uid=meta["uid"],
            generation=int(meta.get("generation") or 1),
        )

    @property
    def config_map(self) -> str:
        return child_name(self.name, f"manifest-g{self.generation}")

    @property
    def dask_cluster(self) -> str:
        return child_name(self.name, "dask", DASK_CLUSTER_MAX_NAME)

    @property
    def scheduler_service(self) -> str:
        return f"{self.dask_cluster}-scheduler"

    @property
    def driver_job(self) -> str:
        return child_name(self.name, f"driver-g{self.generation}", JOB_MAX_NAME)

    @property
    def scheduler_address(self) -> str:
        return f"tcp://{self.scheduler_service}.{self.namespace}.svc:{SCHEDULER_PORT}"

    @property
    def tls_secret(self) -> str:
        return child_name(self.name, "dask-tls")

    def address(self, config: OperatorConfig) -> str:
        """The scheduler's address as the driver and workers dial it (tls:// when closed)."""
        plain = self.scheduler_address
        return plain.replace("tcp://", "tls://", 1) if config.tls else plain


def child_name(run: str, suffix: str, max_len: int = 63) -> str:
    """``<run>-<suffix>``, shortened with a hash of the run name when it would be too long."""
    name = f"{run}-{suffix}"
    if len(name) <= max_len:
        return name
    digest = hashlib.sha256(run.encode()).hexdigest()[:6]
    keep = max_len - len(suffix) - len(digest) - 2
    return f"{run[:keep].rstrip('-')}-{digest}-{suffix}"


def labels(ref: RunRef, component: str) -> dict[str, str]:
    return run_labels(ref.name, component, MANAGED_BY)


def owner_reference(ref: RunRef) -> dict[str, Any]:
    return {
        "apiVersion": API_VERSION,
        "kind": KIND,
        "name": ref.name,
        "uid": ref.uid,
        "controller": True,
        "blockOwnerDeletion": True,
    }


def _metadata(ref: RunRef, name: str, component: str) -> dict[str, Any]:
    return {
        "name": name,
        "namespace": ref.namespace,
        "labels": labels(ref, component),
        "ownerReferences": [owner_reference(ref)],
    }


# --- the run's own cluster settings ----------------------------------------------------------


class SpecConflictError(ValueError):
    """The run asks for pod settings this operator does not let runs choose."""


# spec.compute.kubernetes field -> (OperatorConfig field, chart value): who may choose what.
_GUARDED = {
    "image": ("image", "image.repository/image.tag"),
    "credentials_secret": ("credentials_secret", "runs.credentialsSecret"),
    "service_account": ("service_account", "runs.serviceAccount.name"),
}


def config_for_run(config: OperatorConfig, manifest: RunManifest, ref: RunRef) -> OperatorConfig:
    """The operator's pod settings, with what the run's ``compute.kubernetes`` section sets.

    A run may always size its scheduler and pick a pull policy. Image, Secret and service account
    decide what a pod can read, so a run may choose them only where the cluster admin allows it
    (chart value runs.allowSpecOverrides); elsewhere such a run is refused, never silently changed.
    """
    section = getattr(manifest.spec.compute, "kubernetes", None)
    if section is None:
        return config
    chosen = section.model_fields_set
    problems = []
    namespace = getattr(section, "namespace", None)
    if "namespace" in chosen and namespace and namespace != ref.namespace:
        problems.append(
            f"spec.compute.kubernetes.namespace is {namespace!r}, but a SitsRun's workers run in "
            f"its own namespace ({ref.namespace!r}); remove the key, or apply the run in "
            f"namespace {namespace!r}"
        )
    overrides: dict[str, Any] = {}
    for field, (key, value_name) in _GUARDED.items():
        value = getattr(section, field, None)
        if field not in chosen or value is None or value == getattr(config, key):
            continue
        if config.allow_spec_overrides:
            overrides[key] = value
        else:
            problems.append(
                f"spec.compute.kubernetes.{field} is {value!r}, but this cluster runs every run "
                f"with {getattr(config, key)!r} (chart value {value_name}); remove the key, or "
                "ask the cluster admin to set runs.allowSpecOverrides=true"
            )
    if "image_pull_policy" in chosen:
        overrides["image_pull_policy"] = section.image_pull_policy
    if "scheduler_memory" in chosen:
        memory = k8s_quantity(section.scheduler_memory)
        resources = config.scheduler_resources
        overrides["scheduler_resources"] = resources.model_copy(
            update={
                "requests": {**resources.requests, "memory": memory},
                "limits": {**resources.limits, "memory": memory},
            }
        )
    if problems:
        raise SpecConflictError("\n".join(problems))
    return config.model_copy(update=overrides)


# --- the manifest the driver runs -------------------------------------------------------------


def driver_manifest(
    ref: RunRef, spec: Mapping[str, Any], address: str | None = None
) -> dict[str, Any]:
    """The run manifest the driver reads: the SitsRun's own spec, pointed at its DaskCluster.

    The workers are the DaskCluster's, so ``compute`` is switched to the scheduler's address; every
    other key is the spec exactly as applied.
    """
    spec = dict(spec)
    # The operator made the cluster and its autoscaler: the driver only connects to it.
    compute = {
        k: v
        for k, v in dict(spec.get("compute") or {}).items()
        if k not in ("kubernetes", "adaptive", "dashboard_port")
    }
    compute.setdefault("connect_timeout_s", CONNECT_TIMEOUT_S)
    address = address or ref.scheduler_address
    spec["compute"] = {**compute, "cluster": "address", "address": address}
    return {
        "apiVersion": API_VERSION,
        "kind": KIND,
        "metadata": {"name": ref.name},
        "spec": spec,
    }


def build_config_map(
    ref: RunRef, spec: Mapping[str, Any], address: str | None = None
) -> dict[str, Any]:
    text = yaml.safe_dump(driver_manifest(ref, spec, address), sort_keys=False)
    return {
        "apiVersion": "v1",
        "kind": "ConfigMap",
        "metadata": _metadata(ref, ref.config_map, "manifest"),
        "immutable": True,
        "data": {MANIFEST_FILE: text},
    }


# --- pods -------------------------------------------------------------------------------------


def pod_settings(
    ref: RunRef, config: OperatorConfig, volumes: tuple[Volume, ...] = ()
) -> PodSettings:
    """The operator's pod settings for this run's pods (driver, scheduler and workers)."""
    return PodSettings(
        volumes=volumes,
        tls_secret=ref.tls_secret if config.tls else None,
        image=config.image,
        image_pull_policy=config.image_pull_policy,
        image_pull_secrets=tuple(config.image_pull_secrets),
        service_account=config.service_account,
        credentials_secret=config.credentials_secret,
        env={
            "SITSFLOW_RUN_NAME": ref.name,
            "SITSFLOW_RUN_NAMESPACE": ref.namespace,
            **dict(sorted(config.env.items())),
        },
        node_selector=config.node_selector,
        tolerations=tuple(config.tolerations),
    )


def run_volumes(manifest: RunManifest) -> tuple[Volume, ...]:
    """The claims the run's ``compute.kubernetes.volumes`` declares."""
    section = manifest.spec.compute.kubernetes
    if section is None:
        return ()
    return tuple(Volume(v.claim, v.mount_path, v.read_only) for v in section.volumes)


def build_dask_cluster(
    ref: RunRef, manifest: RunManifest, config: OperatorConfig
) -> dict[str, Any]:
    """The run's DaskCluster (the shared builder), sized by its ``compute`` section and owned
    by the SitsRun."""
    compute = manifest.spec.compute
    cluster = build_dask_cluster_spec(
        ref.dask_cluster,
        instance=ref.name,
        managed_by=MANAGED_BY,
        size=ClusterSize(
            workers=compute.workers,
            threads_per_worker=compute.threads_per_worker,
            memory_limit=compute.memory_limit,
            scheduler_resources=config.scheduler_resources.as_dict(),
        ),
        pods=pod_settings(ref, config, run_volumes(manifest)),
        namespace=ref.namespace,
        scheduler_address=ref.address(config),
    )
    cluster["metadata"]["ownerReferences"] = [owner_reference(ref)]
    return cluster


def build_dask_autoscaler(ref: RunRef, manifest: RunManifest) -> dict[str, Any] | None:
    """A DaskAutoscaler between the run's adaptive bounds, or None for a fixed-size cluster."""
    adaptive = getattr(manifest.spec.compute, "adaptive", None)
    if adaptive is None:
        return None
    return {
        "apiVersion": "kubernetes.dask.org/v1",
        "kind": "DaskAutoscaler",
        "metadata": _metadata(ref, ref.dask_cluster, "dask-autoscaler"),
        "spec": {
            "cluster": ref.dask_cluster,
            "minimum": adaptive.minimum,
            "maximum": adaptive.maximum,
        },
    }


# How long the driver waits for its scheduler and first worker: new nodes may have to start and
# pull the image first (a run's own compute.connect_timeout_s wins).
CONNECT_TIMEOUT_S = 1200

_WAIT_FOR_SCHEDULER = """\
import socket, sys, time
host, port, limit = sys.argv[1], int(sys.argv[2]), float(sys.argv[3])
deadline = time.monotonic() + limit
while True:
    try:
        socket.create_connection((host, port), timeout=5).close()
        break
    except OSError as exc:
        if time.monotonic() > deadline:
            sys.exit(f"the dask scheduler {host}:{port} did not answer in {limit:.0f} s ({exc}); "
                     "check the DaskCluster's pods (kubectl describe daskcluster)")
        time.sleep(2)
"""


# Exit code of `sitsflow run` for bad input (manifest, catalog, reference...): retrying cannot help.
INPUT_ERROR_EXIT_CODE = 2


def build_driver_job(
    ref: RunRef, config: OperatorConfig, volumes: tuple[Volume, ...] = ()
) -> dict[str, Any]:
    """A batch/v1 Job that runs ``sitsflow run`` on the run's manifest against its DaskCluster
    (with the run's claims mounted and, when closed, its certificates)."""
    manifest_path = str(PurePosixPath(MANIFEST_DIR) / MANIFEST_FILE)
    pods = pod_settings(ref, config, volumes)
    driver: dict[str, Any] = {
        "name": "driver",
        "image": config.image,
        # --resume: a driver restarted by the Job keeps the work units already finished.
        "args": ["sitsflow", "run", manifest_path, "--resume", *config.driver_extra_args],
        "volumeMounts": [{"name": "manifest", "mountPath": MANIFEST_DIR, "readOnly": True}],
        "resources": config.driver_resources.as_dict(),
        # On failure the log's tail becomes the termination message: the operator copies it into
        # the run's status.lastError, so `kubectl get sr -o wide` shows what to fix.
        "terminationMessagePolicy": "FallbackToLogsOnError",
    }
    dress_container(driver, pods, {"DASK_SCHEDULER_ADDRESS": ref.address(config)})
    wait = {
        "name": "wait-for-scheduler",
        "image": config.image,
        "imagePullPolicy": config.image_pull_policy,
        "command": [
            "python",
            "-c",
            _WAIT_FOR_SCHEDULER,
            f"{ref.scheduler_service}.{ref.namespace}.svc",
            str(SCHEDULER_PORT),
            str(CONNECT_TIMEOUT_S),
        ],
        "securityContext": container_security(),
        "resources": {"requests": {"cpu": "10m", "memory": "32Mi"}, "limits": {"memory": "64Mi"}},
        "terminationMessagePolicy": "FallbackToLogsOnError",
    }
    pod = pod_common(pods)
    pod["initContainers"] = [wait]
    pod["volumes"] = [
        *pod["volumes"],
        {"name": "manifest", "configMap": {"name": ref.config_map}},
    ]
    pod.update(
        restartPolicy="Never",
        # The token lets the driver report progress into the SitsRun status; nothing else.
        automountServiceAccountToken=config.report_status,
        containers=[driver],
    )
    spec: dict[str, Any] = {
        "backoffLimit": config.driver_backoff_limit,
        "podFailurePolicy": {
            "rules": [
                {
                    "action": "FailJob",
                    "onExitCodes": {
                        "containerName": "driver",
                        "operator": "In",
                        "values": [INPUT_ERROR_EXIT_CODE],
                    },
                },
                # A node drained or preempted: not the run's fault, not counted as a failure.
                {
                    "action": "Ignore",
                    "onPodConditions": [{"type": "DisruptionTarget", "status": "True"}],
                },
            ]
        },
        "template": {"metadata": {"labels": labels(ref, "driver")}, "spec": pod},
    }
    if config.active_deadline_seconds:
        spec["activeDeadlineSeconds"] = config.active_deadline_seconds
    return {
        "apiVersion": "batch/v1",
        "kind": "Job",
        "metadata": _metadata(ref, ref.driver_job, "driver"),
        "spec": spec,
    }


def dashboard_url(ref: RunRef, config: OperatorConfig) -> str:
    if config.dashboard_url:
        return config.dashboard_url.format(
            namespace=ref.namespace, name=ref.name, service=ref.scheduler_service
        )
    return f"http://{ref.scheduler_service}.{ref.namespace}.svc:{DASHBOARD_PORT}/status"


def build_tls_secret(ref: RunRef, files: Mapping[str, str]) -> dict[str, Any]:
    """The Secret holding the run's certificates (``pipeline.k8s.tls``), owned by the SitsRun."""
    return {
        "apiVersion": "v1",
        "kind": "Secret",
        "metadata": _metadata(ref, ref.tls_secret, "dask-tls"),
        "type": "kubernetes.io/tls",
        "immutable": True,
        "stringData": dict(files),
    }
