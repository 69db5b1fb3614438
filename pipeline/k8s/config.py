"""How the operator dresses the pods of a run: image, credentials, resources, scheduling.

These settings belong to the cluster, not to the run, so they are not in the SitsRun: the Helm
chart renders its ``runs`` values into a JSON file the operator reads at start (same camelCase keys
as values.yaml). Credentials are never here: ``credentialsSecret`` names a Secret whose keys become
environment variables of the driver and the workers.
"""

from __future__ import annotations

import json
import os
import re
from pathlib import Path
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator
from pydantic.alias_generators import to_camel

from pipeline.errors import SitsflowError

CONFIG_ENV = "SITSFLOW_OPERATOR_CONFIG"
_K8S_NAME = r"^[a-z0-9]([-a-z0-9.]*[a-z0-9])?$"
_ENV_NAME = r"^[A-Za-z_][A-Za-z0-9_]*$"


class OperatorConfigError(SitsflowError):
    """The operator's configuration file is missing or malformed."""


class Resources(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    requests: dict[str, str] = Field(default_factory=dict, description="e.g. {cpu: '1'}.")
    limits: dict[str, str] = Field(default_factory=dict, description="e.g. {memory: 4Gi}.")

    def as_dict(self) -> dict[str, dict[str, str]]:
        return {k: dict(v) for k, v in (("requests", self.requests), ("limits", self.limits)) if v}


class NetworkPolicySettings(BaseModel):
    """Who may reach a run's scheduler and workers besides the run's own pods."""

    model_config = ConfigDict(
        extra="forbid", frozen=True, alias_generator=to_camel, populate_by_name=True
    )

    enabled: bool = Field(
        True, description="Give every run NetworkPolicies that admit only its own pods."
    )
    dashboard_from: list[dict[str, Any]] = Field(
        default_factory=list,
        description="NetworkPolicy peers (namespaceSelector/podSelector) allowed to the dashboard "
        "port, e.g. the ingress controller's namespace; empty: only the run's own pods.",
    )


class OperatorConfig(BaseModel):
    """Cluster-side settings of every run the operator starts."""

    model_config = ConfigDict(
        extra="forbid", frozen=True, alias_generator=to_camel, populate_by_name=True
    )

    image: str = Field(
        "ghcr.io/sitsflow/sitsflow:0.1.0",
        min_length=1,
        description="Image of the driver, scheduler and workers (the same image as the operator).",
    )
    image_pull_policy: Literal["Always", "IfNotPresent", "Never"] = "IfNotPresent"
    image_pull_secrets: list[str] = Field(default_factory=list)
    service_account: str = Field(
        "sitsflow-run",
        pattern=_K8S_NAME,
        description="Service account of the run pods (annotate it for workload identity).",
    )
    credentials_secret: str | None = Field(
        None,
        pattern=_K8S_NAME,
        description="Secret whose keys become env variables of the run pods (e.g. AWS_* keys).",
    )
    env: dict[str, str] = Field(
        default_factory=dict,
        description="Plain env variables of the run pods (endpoints, GDAL options; no secrets).",
    )
    allow_spec_overrides: bool = Field(
        False,
        description="Let a run's spec.compute.kubernetes choose its image, Secret and service "
        "account (else such a run is refused).",
    )
    driver_resources: Resources = Resources(
        requests={"cpu": "1", "memory": "2Gi"}, limits={"memory": "4Gi"}
    )
    scheduler_resources: Resources = Resources(
        requests={"cpu": "500m", "memory": "1Gi"}, limits={"memory": "2Gi"}
    )
    node_selector: dict[str, str] = Field(default_factory=dict)
    tolerations: list[dict[str, Any]] = Field(default_factory=list)
    driver_backoff_limit: int = Field(
        2, ge=0, le=20, description="Driver restarts after a crash (input errors never retry)."
    )
    driver_extra_args: list[str] = Field(
        default_factory=list, description="Extra arguments of `sitsflow run`."
    )
    active_deadline_seconds: int | None = Field(None, ge=60)
    delete_cluster_when_done: bool = Field(
        True, description="Delete the DaskCluster once the driver has finished."
    )
    report_status: bool = Field(
        True, description="Let the driver write its progress into the SitsRun status."
    )
    dashboard_url: str | None = Field(
        None,
        description="Dashboard URL template with {namespace}, {name}, {service} (an ingress); "
        "default: the scheduler Service's in-cluster URL.",
    )
    tls: bool = Field(
        True,
        description="TLS between the driver, the scheduler and the workers, with certificates "
        "made per run (a Secret owned by the run); off: plain TCP.",
    )
    network_policy: NetworkPolicySettings = NetworkPolicySettings()
    poll_seconds: float = Field(
        10.0, gt=0, le=600, description="How often a running run's Job is checked."
    )

    @field_validator("env")
    @classmethod
    def _env_names(cls, env: dict[str, str]) -> dict[str, str]:
        bad = sorted(k for k in env if not re.match(_ENV_NAME, k))
        if bad:
            raise ValueError(f"env names {bad} are not valid variable names; use A-Z, 0-9 and _")
        return env


def load_config(path: str | Path | None = None) -> OperatorConfig:
    """The config file named by ``path`` or $SITSFLOW_OPERATOR_CONFIG; defaults when neither."""
    where = path if path is not None else os.environ.get(CONFIG_ENV)
    if not where:
        return OperatorConfig()
    try:
        data = json.loads(Path(where).read_text(encoding="utf-8"))
    except (OSError, json.JSONDecodeError) as exc:
        raise OperatorConfigError(
            f"operator config {str(where)!r} cannot be read ({exc})",
            fix="check the file the chart mounts (values key 'runs')",
        ) from None
    try:
        return OperatorConfig.model_validate(data)
    except ValidationError as exc:
        raise OperatorConfigError(
            f"operator config {str(where)!r} is invalid: {exc}",
            fix="correct the chart's 'runs' values (helm upgrade ... --set runs.KEY=VALUE)",
        ) from None
