"""The whole resource: RunSpec (the CRD's spec), its metadata and the RunManifest."""

from __future__ import annotations

import re
from typing import Literal

from pydantic import (
    Field,
    field_validator,
    model_validator,
)

from pipeline.manifest.area import AreaSpec, PeriodSpec
from pipeline.manifest.common import (
    _NAME,
    API_VERSION,
    KIND,
    _at,
    _Strict,
)
from pipeline.manifest.compute import ComputeSpec
from pipeline.manifest.features import FeaturesSpec
from pipeline.manifest.fusion import FusionSpec
from pipeline.manifest.model import ModelSpec
from pipeline.manifest.objects import ObjectsSpec
from pipeline.manifest.outputs import OutputsSpec
from pipeline.manifest.postprocess import PostprocessSpec, check_postprocess
from pipeline.manifest.reference import ReferenceSpec, SamplingSpec
from pipeline.manifest.sensors import SensorSpec


class RunSpec(_Strict):
    """Everything a run needs. This is the ``spec`` of the SitsRun custom resource."""

    task: Literal["classification", "regression", "extraction"] = Field(
        "classification",
        description="What the run produces: 'classification' (a label map), 'regression' "
        "(a map of values) or 'extraction' (the samples' features as GeoParquet, read straight "
        "from the imagery: no cube, model or map).",
    )
    period: PeriodSpec
    also_map: list[PeriodSpec] = Field(
        default_factory=list,
        description="Further periods mapped with the run's one model (e.g. other years): one "
        "cube and one set of maps per period under periods/<name>/. Each must give as many "
        "dates as spec.period on every sensor's grid (features are aligned by position in "
        "the season).",
    )
    sensors: list[SensorSpec] = Field(min_length=1)
    area: AreaSpec = Field(default_factory=AreaSpec)
    features: FeaturesSpec = Field(default_factory=FeaturesSpec)
    reference: ReferenceSpec
    sampling: SamplingSpec = Field(default_factory=SamplingSpec)
    model: ModelSpec = Field(default_factory=ModelSpec)
    outputs: OutputsSpec
    compute: ComputeSpec = Field(default_factory=ComputeSpec)
    fusion: FusionSpec | None = Field(
        None,
        description="Decision fusion of two or more maps of the area (this run's models, or "
        "earlier runs' maps) into fusion/labels.tif with its own accuracy report.",
    )
    objects: ObjectsSpec | None = Field(
        None,
        description="Object-based classification beside the pixel map: one label per segment "
        "(objects/labels.tif, objects/segments.gpkg) and its accuracy per segment and pixel.",
    )
    postprocess: PostprocessSpec | None = Field(
        None, description="Map products after the raw maps (none if absent)."
    )

    @model_validator(mode="after")
    def _consistent(self) -> RunSpec:
        names = [s.name for s in self.sensors]
        dupes = sorted({n for n in names if names.count(n) > 1})
        if dupes:
            raise ValueError(f"sensor names {dupes} appear more than once; give each a unique name")
        reference = self.reference
        if self.task == "classification" and reference.label_field is None:
            raise ValueError(
                "task 'classification' needs class labels but reference gives value_field "
                f"{reference.value_field!r}; set task: regression, or give reference.label_field"
            )
        if self.task == "regression" and reference.value_field is None:
            raise ValueError(
                "task 'regression' needs values but reference gives label_field "
                f"{reference.label_field!r}; set task: classification, or give "
                "reference.value_field (a numeric field)"
            )
        labels = [self.period.label, *(p.label for p in self.also_map)]
        twice = sorted({n for n in labels if labels.count(n) > 1})
        if twice:
            raise ValueError(
                f"period names {twice} appear more than once among period and also_map; give "
                "each period a unique name (also_map[i].name) or remove the repeated period"
            )
        if self.also_map and self.task == "extraction":
            raise ValueError(
                "also_map lists periods to map, but task 'extraction' makes no map; remove "
                "also_map, or give the samples their own windows (reference.start_field)"
            )
        if reference.split_field is not None and self.sampling.runs > 1:
            raise ValueError(
                f"reference.split_field {reference.split_field!r} fixes the split, so "
                f"sampling.runs {self.sampling.runs} would repeat the same split; set "
                "sampling.runs: 1, or remove split_field"
            )
        if self.task == "regression" and self.sampling.strategy in (
            "per_class_count",
            "smallest_class",
        ):
            raise ValueError(
                f"sampling.strategy {self.sampling.strategy!r} balances classes, which a "
                "regression run has none of; use strategy 'all' or 'percentage'"
            )
        needs = {"ndvi": ("red", "nir"), "ndwi": ("green", "nir"), "brightness": ()}
        for index in self.features.indices or []:
            for sensor in self.sensors:
                missing = [b for b in needs[index] if b not in sensor.bands]
                if missing:
                    raise ValueError(
                        f"index {index!r} needs bands {list(needs[index])} but sensor "
                        f"{sensor.name!r} has no {missing}; add them to its bands or drop the index"
                    )
        check_postprocess(self.postprocess, self.task, self.outputs.probabilities)
        self._fusion_sensors(names)
        return self

    def _fusion_sensors(self, names: list[str]) -> None:
        """A fusion source ``sensor`` names one of the run's sensors."""
        if self.fusion is None:
            return
        for i, source in enumerate(self.fusion.sources):
            if source.sensor is not None and source.sensor not in names:
                raise _at(
                    f"fusion.sources.{i}.sensor",
                    f"fusion source sensor {source.sensor!r} is not a sensor of this run "
                    f"(sensors: {names})",
                    "name one of sensors[].name, or add that sensor to the sensors section",
                )


_LABEL_NAME = r"^[A-Za-z0-9]([-A-Za-z0-9_.]{0,61}[A-Za-z0-9])?$"
_DNS_SUBDOMAIN = r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?(\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*$"


def _check_label_key(key: str) -> None:
    prefix, _, name = key.rpartition("/")
    if prefix and (len(prefix) > 253 or not re.match(_DNS_SUBDOMAIN, prefix)):
        raise ValueError(
            f"key {key!r} has an invalid prefix {prefix!r}; use a DNS name such as example.org/"
        )
    if not re.match(_LABEL_NAME, name):
        raise ValueError(
            f"key {key!r} is not a Kubernetes label key (1-63 letters, digits, '-', '_', '.', "
            "starting and ending alphanumeric, with an optional DNS prefix); rename it, e.g. "
            "team or example.org/team"
        )


class Metadata(_Strict):
    """The resource's metadata, as in every Kubernetes object."""

    name: str = Field(
        description="Run name (lowercase letters, digits and '-', as Kubernetes names).",
        pattern=_NAME,
        max_length=63,
    )
    namespace: str | None = Field(
        None,
        description="Kubernetes namespace of the SitsRun (used by kubectl and the operator).",
        pattern=_NAME,
        max_length=63,
    )
    labels: dict[str, str] = Field(
        default_factory=dict,
        description="Kubernetes labels (key: value, values of at most 63 characters).",
    )
    annotations: dict[str, str] = Field(
        default_factory=dict, description="Kubernetes annotations (free text values)."
    )

    @field_validator("labels")
    @classmethod
    def _labels(cls, labels: dict[str, str]) -> dict[str, str]:
        for key, value in labels.items():
            _check_label_key(key)
            if value and not re.match(_LABEL_NAME, value):
                raise ValueError(
                    f"label {key!r} has the value {value!r}, not a Kubernetes label value (at "
                    "most 63 letters, digits, '-', '_', '.', starting and ending alphanumeric); "
                    "shorten it or move it to annotations"
                )
        return labels

    @field_validator("annotations")
    @classmethod
    def _annotations(cls, annotations: dict[str, str]) -> dict[str, str]:
        for key in annotations:
            _check_label_key(key)
        if sum(len(k) + len(v) for k, v in annotations.items()) > 256 * 1024:
            raise ValueError("annotations exceed 256 KiB in total; keep large data out of them")
        return annotations


class RunManifest(_Strict):
    """A whole manifest file: the SitsRun resource."""

    apiVersion: Literal["sitsflow.dev/v1alpha1"] = API_VERSION  # noqa: N815 (Kubernetes key)
    kind: Literal["SitsRun"] = KIND
    metadata: Metadata
    spec: RunSpec

    @property
    def name(self) -> str:
        return self.metadata.name
