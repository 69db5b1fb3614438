"""The compute section: the dask cluster, Kubernetes workers and unit submission."""

from __future__ import annotations

from typing import Literal

from pydantic import (
    Field,
    field_validator,
    model_validator,
)

from pipeline.manifest.common import (
    _MEMORY,
    _NAME,
    _at,
    _Strict,
)

_DASK_ADDRESS = (
    r"^(tcp|tls|ws|wss)://(\[[0-9A-Fa-f:.]+\]|[A-Za-z0-9]([A-Za-z0-9.-]*[A-Za-z0-9])?):\d{1,5}$"
)
_IMAGE = (
    r"^[a-z0-9]+([._-][a-z0-9]+)*(:\d+)?(/[a-z0-9]+([._-][a-z0-9]+)*)*"
    r"(:[\w][\w.-]{0,127})?(@sha256:[0-9a-f]{64})?$"
)
_SECRET_NAME = r"^[a-z0-9]([-a-z0-9.]*[a-z0-9])?$"
# An absolute POSIX path without "." or ".." parts (a mount path).
_MOUNT_PATH = r"^(/[A-Za-z0-9_][A-Za-z0-9_.-]*)+/?$"
# Paths a run's pods already use: a volume there would hide them.
_RESERVED_MOUNTS = ("/tmp", "/etc/sitsflow", "/opt/venv", "/opt/sitsflow")


class AdaptiveSpec(_Strict):
    """Adaptive scaling: dask adds workers while units wait and retires idle ones."""

    minimum: int = Field(0, ge=0, le=1000, description="Fewest workers kept.")
    maximum: int = Field(ge=1, le=1000, description="Most workers started.")

    @model_validator(mode="after")
    def _bounds(self) -> AdaptiveSpec:
        if self.minimum > self.maximum:
            raise _at(
                "minimum",
                f"minimum {self.minimum} is above maximum {self.maximum}",
                "make minimum at most maximum",
            )
        return self


class VolumeSpec(_Strict):
    """A PersistentVolumeClaim mounted in the driver and every worker (shared file systems)."""

    claim: str = Field(
        description="Name of a PersistentVolumeClaim in the run's namespace (ReadWriteMany or "
        "ReadOnlyMany: every worker mounts it).",
        pattern=_SECRET_NAME,
        max_length=253,
    )
    mount_path: str = Field(
        description="Absolute path where the pods see the claim, e.g. /data; inputs and "
        "outputs.store under it are read and written there.",
        pattern=_MOUNT_PATH,
        max_length=255,
    )
    read_only: bool = Field(
        False, description="Mount read-only (inputs only: no outputs.store under it)."
    )

    @field_validator("mount_path")
    @classmethod
    def _not_reserved(cls, value: str) -> str:
        value = value.rstrip("/") or "/"
        for reserved in _RESERVED_MOUNTS:
            if (
                value == reserved
                or value.startswith(reserved + "/")
                or reserved.startswith(value + "/")
            ):
                raise ValueError(
                    f"mount_path {value} overlaps {reserved}, which the run's pods use; "
                    "mount the claim elsewhere, e.g. /data"
                )
        return value


class KubernetesSpec(_Strict):
    """A dask cluster the run starts on Kubernetes (dask-kubernetes operator, DaskCluster)."""

    image: str = Field(
        description="Container image of the scheduler and workers; it must hold this sitsflow "
        "version (e.g. ghcr.io/org/sitsflow:0.1.0).",
        pattern=_IMAGE,
        max_length=255,
    )
    namespace: str | None = Field(
        None,
        description="Namespace of the DaskCluster (default: the current context's namespace).",
        pattern=_NAME,
        max_length=63,
    )
    credentials_secret: str | None = Field(
        None,
        description="Name of a Kubernetes Secret whose keys become environment variables of the "
        "scheduler and workers (e.g. AWS_ACCESS_KEY_ID); the manifest holds only its name.",
        pattern=_SECRET_NAME,
        max_length=253,
    )
    service_account: str | None = Field(
        None,
        description="Service account of the pods (e.g. one bound to a cloud role: no keys).",
        pattern=_SECRET_NAME,
        max_length=253,
    )
    scheduler_memory: str = Field(
        "2GiB", pattern=_MEMORY, description="Memory request and limit of the scheduler pod."
    )
    image_pull_policy: Literal["IfNotPresent", "Always", "Never"] = Field(
        "IfNotPresent", description="When the nodes pull the image."
    )
    volumes: list[VolumeSpec] = Field(
        default_factory=list,
        max_length=16,
        description="PersistentVolumeClaims mounted in the driver and every worker; local "
        "inputs and a local outputs.store must lie under one of their mount paths.",
    )

    @field_validator("volumes")
    @classmethod
    def _distinct_mounts(cls, volumes: list[VolumeSpec]) -> list[VolumeSpec]:
        paths = [v.mount_path for v in volumes]
        for i, path in enumerate(paths):
            for other in paths[i + 1 :]:
                if path == other or other.startswith(path + "/") or path.startswith(other + "/"):
                    raise ValueError(
                        f"volumes mount {path} and {other}: one would hide the other; give each "
                        "claim its own, separate mount_path"
                    )
        return volumes


class ComputeSpec(_Strict):
    """The dask cluster, the chunking of the work and how units are submitted."""

    cluster: Literal["local", "address", "kubernetes"] = Field(
        "local",
        description="'local': a distributed.LocalCluster on this machine; 'address': an existing "
        "dask scheduler (compute.address); 'kubernetes': a DaskCluster the run starts with "
        "dask-kubernetes (compute.kubernetes).",
    )
    address: str | None = Field(
        None,
        description="Scheduler address for cluster 'address', e.g. tcp://dask-scheduler:8786.",
        pattern=_DASK_ADDRESS,
    )
    workers: int = Field(
        2,
        ge=1,
        le=512,
        description="Worker processes (local) or pods (kubernetes) at the start; with adaptive, "
        "the number started before scaling.",
    )
    threads_per_worker: int = Field(1, ge=1, le=64, description="Threads in each worker.")
    memory_limit: str = Field(
        "4GiB", pattern=_MEMORY, description="Memory limit per worker, e.g. 4GiB."
    )
    chunk_size: int = Field(
        256, ge=16, le=8192, description="Side of the square chunks, in pixels."
    )
    dashboard_port: int = Field(
        8787, ge=0, le=65535, description="Dashboard port of a local cluster (0: any free port)."
    )
    adaptive: AdaptiveSpec | None = Field(
        None,
        description="Scale the number of workers between minimum and maximum (local and "
        "kubernetes; an existing scheduler scales itself).",
    )
    kubernetes: KubernetesSpec | None = Field(
        None, description="Image, namespace and secrets of cluster 'kubernetes'."
    )
    retries: int = Field(
        2,
        ge=0,
        le=10,
        description="Times a unit is retried after a transient error (lost worker, flaky "
        "storage) before the run stops.",
    )
    max_units_in_flight: int | None = Field(
        None,
        ge=1,
        le=100_000,
        description="Most units submitted to the scheduler at once (default: twice the worker "
        "threads): the graph stays small whatever the size of the run.",
    )
    connect_timeout_s: float = Field(
        60.0,
        gt=0,
        le=3600,
        description="Seconds to wait for the scheduler (and the first worker) to answer.",
    )

    @field_validator("memory_limit")
    @classmethod
    def _memory_floor(cls, value: str) -> str:
        from dask.utils import parse_bytes

        if parse_bytes(value.replace(" ", "")) < 256 * 2**20:
            raise ValueError(
                f"memory_limit {value} is too small for a worker (at least 256MiB); give e.g. 4GiB"
            )
        return value

    @model_validator(mode="after")
    def _cluster_options(self) -> ComputeSpec:
        if self.cluster == "address" and self.address is None:
            raise _at(
                "address",
                "cluster 'address' needs the scheduler's address",
                "set address, e.g. tcp://dask-scheduler:8786, or use cluster: local",
            )
        if self.cluster != "address" and self.address is not None:
            raise _at(
                "address",
                f"address is only used by cluster 'address', but cluster is {self.cluster!r}",
                "remove address, or set cluster: address",
            )
        if self.cluster == "kubernetes" and self.kubernetes is None:
            raise _at(
                "kubernetes",
                "cluster 'kubernetes' needs a kubernetes section",
                "add kubernetes: {image: <image with sitsflow>}",
            )
        if self.cluster == "local" and self.kubernetes is not None:
            raise _at(
                "kubernetes",
                "the kubernetes section is only used by cluster 'kubernetes', but cluster is "
                "'local'",
                "remove it, or set cluster: kubernetes",
            )
        if self.adaptive is not None and self.cluster != "address":
            if self.workers > self.adaptive.maximum:
                raise _at(
                    "workers",
                    f"workers {self.workers} is above adaptive.maximum {self.adaptive.maximum}",
                    "lower workers or raise adaptive.maximum",
                )
            if self.workers < self.adaptive.minimum:
                raise _at(
                    "workers",
                    f"workers {self.workers} is below adaptive.minimum {self.adaptive.minimum}",
                    "raise workers or lower adaptive.minimum",
                )
        return self

    @field_validator("chunk_size")
    @classmethod
    def _chunk_multiple(cls, size: int) -> int:
        if size % 16:
            raise ValueError(
                f"chunk_size {size} must be a multiple of 16 (COG and Zarr blocks); "
                f"try {max(16, size // 16 * 16)}"
            )
        return size
