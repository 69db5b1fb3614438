"""Kubernetes: the SitsRun custom resource, its CRD, and the operator that runs it.

``crd`` builds the CustomResourceDefinition from the run manifest's pydantic schema (one source),
``specs`` holds pure builders of the objects a run needs (driver Job, ConfigMap; the DaskCluster
from ``pipeline.run.dask_spec``, the builder ``compute.cluster: kubernetes`` uses too),
``status`` turns what the cluster reports into the run's status, ``api`` is the Kubernetes client
(kr8s) and ``operator`` wires them into kopf handlers; ``reporter`` is the driver's side of the
status (kr8s as well). Only ``operator`` imports kopf.
"""

from __future__ import annotations

from pipeline.manifest import API_VERSION, KIND

GROUP, VERSION = API_VERSION.split("/")
PLURAL = "sitsruns"
SINGULAR = "sitsrun"
SHORT_NAMES = ("sr",)
CATEGORIES = ("sitsflow",)
CRD_NAME = f"{PLURAL}.{GROUP}"

__all__ = [
    "API_VERSION",
    "CATEGORIES",
    "CRD_NAME",
    "GROUP",
    "KIND",
    "PLURAL",
    "SHORT_NAMES",
    "SINGULAR",
    "VERSION",
]
