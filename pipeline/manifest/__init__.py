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
JSON Schema and ``reference_doc`` the generated reference page.
"""

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
    "with_store",
]
