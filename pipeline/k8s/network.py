"""The NetworkPolicies of one run: its scheduler and workers admit only the run's own pods.

A dask scheduler executes what its clients send, on workers that hold the run's storage
credentials; TLS (``pipeline.k8s.tls``) already refuses a peer without the run's certificate, and
these policies keep everyone else from even opening a connection:

- ``<run>-scheduler``: the scheduler port only from the run's driver and workers; the dashboard
  port from the run's pods and from the peers the chart names (the dashboard ingress);
- ``<run>-workers``: the workers only from the run's scheduler and the other workers (task data
  moves between workers); the driver talks to the scheduler alone.

Policies add up, so the chart's baseline (``templates/networkpolicy.yaml``: the same pods admit
nothing but the dashboard ingress) and these give exactly the rule above.
"""

from __future__ import annotations

from typing import Any

from pipeline.k8s.config import OperatorConfig
from pipeline.k8s.specs import RunRef, _metadata, child_name
from pipeline.run.dask_spec import DASHBOARD_PORT, RUN_LABEL, SCHEDULER_PORT

COMPONENT = "app.kubernetes.io/component"


def run_pods(ref: RunRef, *components: str) -> dict[str, Any]:
    """A label selector for the run's pods of these components."""
    return {
        "matchLabels": {RUN_LABEL: ref.name},
        "matchExpressions": [{"key": COMPONENT, "operator": "In", "values": list(components)}],
    }


def _policy(ref: RunRef, suffix: str, selector: dict[str, Any], ingress: list[Any]) -> Any:
    return {
        "apiVersion": "networking.k8s.io/v1",
        "kind": "NetworkPolicy",
        "metadata": _metadata(ref, child_name(ref.name, suffix), "network-policy"),
        "spec": {"podSelector": selector, "policyTypes": ["Ingress"], "ingress": ingress},
    }


def build_network_policies(ref: RunRef, config: OperatorConfig) -> list[dict[str, Any]]:
    """The run's two policies (none when the chart turned them off)."""
    settings = config.network_policy
    if not settings.enabled:
        return []
    own = [{"podSelector": run_pods(ref, "driver", "worker", "scheduler")}]
    dashboard_from = [*own, *(dict(peer) for peer in settings.dashboard_from)]
    scheduler = _policy(
        ref,
        "scheduler-policy",
        run_pods(ref, "scheduler"),
        [
            {
                "from": [{"podSelector": run_pods(ref, "driver", "worker")}],
                "ports": [{"protocol": "TCP", "port": SCHEDULER_PORT}],
            },
            {"from": dashboard_from, "ports": [{"protocol": "TCP", "port": DASHBOARD_PORT}]},
        ],
    )
    workers = _policy(
        ref,
        "workers-policy",
        run_pods(ref, "worker"),
        [{"from": [{"podSelector": run_pods(ref, "scheduler", "worker")}]}],
    )
    return [scheduler, workers]
