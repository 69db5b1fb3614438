"""The run manifest: pydantic models, loaded from YAML, validated once at the edge.

A manifest is a Kubernetes-style resource::

    apiVersion: sitsflow.dev/v1alpha1
    kind: SitsRun
    metadata: {name: slovenia-demo}
    spec: {...}          # RunSpec (run.py)

so the same file can later be ``kubectl apply``-ed; the CRD's schema is generated from ``RunSpec``.
Relative local paths are resolved against the manifest's folder when it is loaded; inside the
package every path is absolute or a URL. No field holds a credential: storage credentials come from
the environment or fsspec/boto configuration.

One module per section (sensors, area, features, reference, model, outputs, compute, run);
``load`` reads and normalizes a file, ``explain`` words validation errors, ``schema`` gives the
JSON Schema and ``reference_doc`` the generated reference page. ``resolve`` turns a loaded
manifest into the run's domain configs (``to_config``), which is all the rest of sitsflow reads.
"""

from typing import TYPE_CHECKING

from pipeline.manifest.area import AreaSpec, PeriodSpec
from pipeline.manifest.common import API_VERSION, KIND
from pipeline.manifest.compute import AdaptiveSpec, ComputeSpec, KubernetesSpec
from pipeline.manifest.features import FeaturesSpec
from pipeline.manifest.load import load_manifest, parse_manifest, with_store
from pipeline.manifest.model import GridSearchSpec, ModelSpec, TrainingSpec
from pipeline.manifest.outputs import OutputsSpec
from pipeline.manifest.reference import ReferenceSpec, RegionsSpec, SamplingSpec
from pipeline.manifest.run import Metadata, RunManifest, RunSpec
from pipeline.manifest.schema import json_schema
from pipeline.manifest.sensors import BandSpec, CatalogSpec, MaskSpec, SensorSpec

if TYPE_CHECKING:
    from pipeline.run.config import RunConfig

__all__ = [
    "API_VERSION",
    "KIND",
    "AdaptiveSpec",
    "AreaSpec",
    "BandSpec",
    "CatalogSpec",
    "ComputeSpec",
    "FeaturesSpec",
    "GridSearchSpec",
    "KubernetesSpec",
    "MaskSpec",
    "Metadata",
    "ModelSpec",
    "OutputsSpec",
    "PeriodSpec",
    "ReferenceSpec",
    "RegionsSpec",
    "RunManifest",
    "RunSpec",
    "SamplingSpec",
    "SensorSpec",
    "TrainingSpec",
    "json_schema",
    "load_manifest",
    "parse_manifest",
    "resolve",
    "with_store",
]


def resolve(manifest: RunManifest) -> "RunConfig":
    """The run's frozen domain configs (``pipeline.run.config.RunConfig``) from a loaded manifest.

    Imported on first use: the configs live in the library packages, which the manifest's own
    validation does not need.
    """
    from pipeline.manifest.to_config import resolve as build

    return build(manifest)
