"""What a run is told: every section of the manifest as frozen domain configs.

``pipeline.manifest.resolve`` builds a :class:`RunConfig` from a checked manifest, once, at the
edge; the planner, the stages and the library packages read it (``config.model.params`` where they
read ``manifest.spec.model.params``). The sections owned by a library package live there (catalog,
samples, learn, grid, model); the run-level ones (outputs, compute, features) live here.
Validation happened once, in the manifest; these only carry the checked values.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Literal

from pipeline.catalog.config import SensorConfig
from pipeline.cube.encoders import EncoderConfig
from pipeline.fusion.config import FusionConfig
from pipeline.grid import AreaConfig
from pipeline.learn.config import ModelConfig
from pipeline.model import PeriodConfig, section_canonical
from pipeline.objects.config import ObjectsConfig
from pipeline.postprocess.config import PostprocessConfig
from pipeline.samples.config import ReferenceConfig, SamplingConfig

__all__ = [
    "AdaptiveConfig",
    "ComputeConfig",
    "FeaturesConfig",
    "KubernetesConfig",
    "OutputsConfig",
    "RunConfig",
    "VolumeConfig",
]

Task = Literal["classification", "regression", "extraction"]


@dataclass(frozen=True)
class FeaturesConfig:
    """Features computed from the gap-filled bands (``features``; None: every index that fits)."""

    indices: tuple[str, ...] | None = None
    user_functions: tuple[str, ...] = ()
    encoders: tuple[EncoderConfig, ...] = ()

    def __canonical__(self) -> dict[str, object]:
        # The digest of the pydantic FeaturesSpec it replaces: run stores keep their units.
        # encoders came later: they enter the digest only when given.
        form = section_canonical(self, "FeaturesSpec")
        if not self.encoders:
            del form["encoders"]
        return form


@dataclass(frozen=True)
class OutputsConfig:
    """Where the run writes: the run store and the paths inside it (``outputs``)."""

    store: str
    labels: str = "maps/labels.tif"
    confidence: str = "maps/confidence.tif"
    probabilities: bool = False
    values: str = "maps/values.tif"
    report: str = "report"
    cube_encoding: Literal["int16", "float32"] = "int16"
    keep_cube: bool = True
    """False: no cube; each predict unit computes its chunk's features from the imagery."""
    # Not in digests (compare=False): the licence only labels the STAC collection.
    license: str | None = field(default=None, compare=False)
    license_url: str | None = field(default=None, compare=False)

    def __canonical__(self) -> dict[str, object]:
        # The digest of the pydantic OutputsSpec it replaces: run stores keep their units.
        # keep_cube came later: it enters the digest only when set (false).
        form = section_canonical(self, "OutputsSpec")
        if self.keep_cube:
            del form["keep_cube"]
        return form


@dataclass(frozen=True)
class AdaptiveConfig:
    """Adaptive scaling between ``minimum`` and ``maximum`` workers (``compute.adaptive``)."""

    maximum: int
    minimum: int = 0

    def __canonical__(self) -> dict[str, object]:
        # The digest of the pydantic AdaptiveSpec it replaces.
        return section_canonical(self, "AdaptiveSpec")


@dataclass(frozen=True)
class VolumeConfig:
    """A PersistentVolumeClaim mounted in the driver and every worker (``kubernetes.volumes``)."""

    claim: str
    mount_path: str
    read_only: bool = False

    def __canonical__(self) -> dict[str, object]:
        # The digest of the pydantic VolumeSpec it replaces.
        return section_canonical(self, "VolumeSpec")


@dataclass(frozen=True)
class KubernetesConfig:
    """A dask cluster the run starts on Kubernetes (``compute.kubernetes``)."""

    image: str
    namespace: str | None = None
    credentials_secret: str | None = None
    service_account: str | None = None
    scheduler_memory: str = "2GiB"
    image_pull_policy: Literal["IfNotPresent", "Always", "Never"] = "IfNotPresent"
    volumes: tuple[VolumeConfig, ...] = ()

    def __canonical__(self) -> dict[str, object]:
        # The digest of the pydantic KubernetesSpec it replaces.
        return section_canonical(self, "KubernetesSpec")


@dataclass(frozen=True)
class ComputeConfig:
    """The dask cluster, the chunking of the work and how units are submitted (``compute``)."""

    cluster: Literal["local", "address", "kubernetes"] = "local"
    address: str | None = None
    workers: int = 2
    threads_per_worker: int = 1
    memory_limit: str = "4GiB"
    chunk_size: int = 256
    dashboard_port: int = 8787
    adaptive: AdaptiveConfig | None = None
    kubernetes: KubernetesConfig | None = None
    retries: int = 2
    max_units_in_flight: int | None = None
    connect_timeout_s: float = 60.0

    def __canonical__(self) -> dict[str, object]:
        # The digest of the pydantic ComputeSpec it replaces: run stores keep their units.
        return section_canonical(self, "ComputeSpec")


@dataclass(frozen=True)
class RunConfig:
    """A whole run: its name and every section of the manifest's spec, resolved.

    ``document`` is the manifest as JSON (``model_dump(mode="json")``): what the run store
    records and compares on resume; it is not part of the config's identity.
    """

    name: str
    task: Task
    period: PeriodConfig
    sensors: tuple[SensorConfig, ...]
    reference: ReferenceConfig
    outputs: OutputsConfig
    also_map: tuple[PeriodConfig, ...] = ()
    area: AreaConfig = field(default_factory=AreaConfig)
    features: FeaturesConfig = field(default_factory=FeaturesConfig)
    sampling: SamplingConfig = field(default_factory=SamplingConfig)
    model: ModelConfig = field(default_factory=ModelConfig)
    compute: ComputeConfig = field(default_factory=ComputeConfig)
    fusion: FusionConfig | None = None
    objects: ObjectsConfig | None = None
    postprocess: PostprocessConfig | None = None
    document: dict[str, Any] = field(default_factory=dict, compare=False, hash=False, repr=False)

    @property
    def periods(self) -> tuple[PeriodConfig, ...]:
        """The run's period first, then the further periods it maps."""
        return (self.period, *self.also_map)
