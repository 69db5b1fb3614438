"""A checked manifest turned into the run's domain configs, once, at the edge.

Each config takes its section's values by attribute name (the configs were written with the
sections' names), lists as tuples; nested sections become nested configs. Importing this module
pulls in the library packages the configs belong to, so ``pipeline.manifest`` imports it lazily.
"""

from __future__ import annotations

from typing import Any

from pipeline.catalog.config import BandConfig, CatalogConfig, MaskConfig, SensorConfig
from pipeline.cube.encoders import EncoderConfig
from pipeline.fusion.config import FusionConfig, FusionSourceConfig
from pipeline.grid import AreaConfig
from pipeline.learn.config import GridSearchConfig, ModelConfig, PatchConfig, TrainingConfig
from pipeline.manifest.area import AreaSpec, PeriodSpec
from pipeline.manifest.compute import ComputeSpec
from pipeline.manifest.features import FeaturesSpec
from pipeline.manifest.fusion import FusionSpec
from pipeline.manifest.model import ModelSpec
from pipeline.manifest.outputs import OutputsSpec
from pipeline.manifest.reference import ReferenceSpec, SamplingSpec
from pipeline.manifest.run import RunManifest
from pipeline.manifest.sensors import SensorSpec
from pipeline.model import PeriodConfig
from pipeline.objects.config import ObjectsConfig, SegmentationConfig
from pipeline.postprocess.config import (
    PostprocessConfig,
    RegularizationSettings,
    SmoothingConfig,
    UncertaintyConfig,
    VectorizationConfig,
)
from pipeline.run.config import (
    AdaptiveConfig,
    ComputeConfig,
    FeaturesConfig,
    KubernetesConfig,
    OutputsConfig,
    RunConfig,
    VolumeConfig,
)
from pipeline.samples.config import ReferenceConfig, RegionsConfig, SamplingConfig


def _values(section: Any) -> dict[str, Any]:
    """The section's fields by name, lists as tuples (nested sections left as they are)."""
    return {
        name: tuple(value) if isinstance(value, list) else value
        for name, value in ((n, getattr(section, n)) for n in type(section).model_fields)
    }


def period_config(spec: PeriodSpec) -> PeriodConfig:
    return PeriodConfig(**_values(spec))


def area_config(spec: AreaSpec) -> AreaConfig:
    return AreaConfig(**_values(spec))


def sensor_config(spec: SensorSpec) -> SensorConfig:
    values = _values(spec)
    values["catalog"] = catalog_config(spec.catalog)
    values["bands"] = {
        name: None if band is None else BandConfig(**_values(band))
        for name, band in spec.bands.items()
    }
    values["masks"] = tuple(MaskConfig(**_values(m)) for m in spec.masks)
    values["options"] = dict(spec.options)
    return SensorConfig(**values)


def reference_config(spec: ReferenceSpec) -> ReferenceConfig:
    values = _values(spec)
    if spec.regions is not None:
        values["regions"] = regions_config(spec.regions)
    return ReferenceConfig(**values)


def sampling_config(spec: SamplingSpec) -> SamplingConfig:
    return SamplingConfig(**_values(spec))


def model_config(spec: ModelSpec) -> ModelConfig:
    values = _values(spec)
    values["training"] = TrainingConfig(**_values(spec.training))
    if spec.grid_search is not None:
        values["grid_search"] = GridSearchConfig(**_values(spec.grid_search))
    if spec.patch is not None:
        values["patch"] = PatchConfig(**_values(spec.patch))
    return ModelConfig(**values)


def features_config(spec: FeaturesSpec) -> FeaturesConfig:
    values = _values(spec)
    values["encoders"] = tuple(
        EncoderConfig(**{**_values(e), "inputs": tuple(e.inputs)}) for e in spec.encoders
    )
    return FeaturesConfig(**values)


def outputs_config(spec: OutputsSpec) -> OutputsConfig:
    return OutputsConfig(**_values(spec))


def compute_config(spec: ComputeSpec) -> ComputeConfig:
    values = _values(spec)
    if spec.adaptive is not None:
        values["adaptive"] = AdaptiveConfig(**_values(spec.adaptive))
    if spec.kubernetes is not None:
        kubernetes = _values(spec.kubernetes)
        if "volumes" in kubernetes:
            kubernetes["volumes"] = tuple(VolumeConfig(**_values(v)) for v in kubernetes["volumes"])
        values["kubernetes"] = KubernetesConfig(**kubernetes)
    return ComputeConfig(**values)


def fusion_config(spec: FusionSpec) -> FusionConfig:
    values = _values(spec)
    values["sources"] = tuple(FusionSourceConfig(**_values(s)) for s in spec.sources)
    return FusionConfig(**values)


def objects_config(spec: Any) -> ObjectsConfig:
    values = _values(spec)
    segmentation = _values(spec.segmentation)
    if segmentation["variables"] is not None:
        segmentation["variables"] = tuple(segmentation["variables"])
    values["segmentation"] = SegmentationConfig(**segmentation)
    return ObjectsConfig(**values)


def resolve(manifest: RunManifest) -> RunConfig:
    """The run's configs, built from a loaded (checked, paths resolved) manifest."""
    spec = manifest.spec
    return RunConfig(
        name=manifest.name,
        task=spec.task,
        period=period_config(spec.period),
        also_map=tuple(period_config(p) for p in spec.also_map),
        sensors=tuple(sensor_config(s) for s in spec.sensors),
        area=area_config(spec.area),
        features=features_config(spec.features),
        reference=reference_config(spec.reference),
        sampling=sampling_config(spec.sampling),
        model=model_config(spec.model),
        outputs=outputs_config(spec.outputs),
        compute=compute_config(spec.compute),
        fusion=None if spec.fusion is None else fusion_config(spec.fusion),
        objects=None if spec.objects is None else objects_config(spec.objects),
        postprocess=postprocess_config(spec.postprocess),
        document=manifest.model_dump(mode="json"),
    )


def catalog_config(spec: Any) -> CatalogConfig:
    """One sensor's catalog section as the catalog package's config."""
    return CatalogConfig(**_values(spec))


def regions_config(spec: Any) -> RegionsConfig:
    return RegionsConfig(**_values(spec))


def postprocess_config(spec: Any) -> PostprocessConfig | None:
    """The postprocess section's config (None: no section, no products)."""
    if spec is None:
        return None
    return PostprocessConfig(
        smoothing=None if spec.smoothing is None else SmoothingConfig(**_values(spec.smoothing)),
        regularization=None
        if spec.regularization is None
        else RegularizationSettings(**_values(spec.regularization)),
        vectorization=None
        if spec.vectorization is None
        else VectorizationConfig(**_values(spec.vectorization)),
        uncertainty=None
        if spec.uncertainty is None
        else UncertaintyConfig(**_values(spec.uncertainty)),
        colors=tuple(sorted(spec.colors.items())),
    )
