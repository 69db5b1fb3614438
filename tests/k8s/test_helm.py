"""The Helm chart, with the real helm binary: strict lint, rendering with default and non-default
values, the values schema, and every rendered object checked offline against the Kubernetes
schemas (kubernetes-validate)."""

from __future__ import annotations

import json
import shutil
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import kubernetes_validate
import pytest
import yaml

from pipeline.k8s import chartdoc
from pipeline.k8s.config import OperatorConfig
from pipeline.k8s.crd import build_crd
from tests.k8s.tools import CHART, REPO, Runner, helm_runner, render, require_tool

K8S_VERSION = "1.30"
RECOMMENDED_LABELS = (
    "app.kubernetes.io/name",
    "app.kubernetes.io/instance",
    "app.kubernetes.io/version",
    "app.kubernetes.io/managed-by",
    "app.kubernetes.io/part-of",
)
# The operator Role, pinned (test_operator.py derives what it must hold from the requests the
# operator really sends; this table makes any change to it a visible one).
OPERATOR_RULES = {
    ("sitsflow.dev", "sitsruns"): {"list", "watch", "patch"},
    ("sitsflow.dev", "sitsruns/status"): {"patch"},
    ("sitsflow.dev", "sitsruns/finalizers"): {"update"},
    ("", "configmaps"): {"create", "get", "list", "delete"},
    ("batch", "jobs"): {"create", "get", "list", "delete"},
    ("kubernetes.dask.org", "daskclusters"): {"create", "get", "patch", "delete"},
    ("kubernetes.dask.org", "daskautoscalers"): {"create", "get", "patch", "delete"},
    ("", "secrets"): {"create", "delete"},  # the run's certificates: never read
    ("networking.k8s.io", "networkpolicies"): {"create", "get", "delete"},
    ("", "pods"): {"list"},
    ("", "events"): {"create"},
}
INGRESS = {"namespaceSelector": {"matchLabels": {"kubernetes.io/metadata.name": "ingress-nginx"}}}
CUSTOM_VALUES = {
    "image": {
        "repository": "registry.example.org/geo/sitsflow",
        "tag": "1.4.2",
        "pullPolicy": "Always",
    },
    "imagePullSecrets": [{"name": "regcred"}],
    "watchNamespaces": ["maps-prod", "maps-staging"],
    "serviceAccount": {"name": "sitsflow-controller", "annotations": {"team": "geo"}},
    "operator": {
        "logLevel": "DEBUG",
        "nodeSelector": {"pool": "system"},
        "tolerations": [{"key": "system", "operator": "Exists", "effect": "NoSchedule"}],
        "priorityClassName": "system-cluster-critical",
        "podAnnotations": {"prometheus.io/scrape": "false"},
    },
    "runs": {
        "serviceAccount": {
            "name": "mapper",
            "annotations": {"eks.amazonaws.com/role-arn": "arn:aws:iam::123456789012:role/maps"},
        },
        "credentialsSecret": "s3-credentials",
        "env": {"AWS_REGION": "eu-west-3", "AWS_ENDPOINT_URL": "https://s3.example.org"},
        "driverResources": {"requests": {"cpu": "2", "memory": "8Gi"}, "limits": {"memory": "8Gi"}},
        "nodeSelector": {"pool": "spot"},
        "tolerations": [{"key": "spot", "operator": "Exists", "effect": "NoSchedule"}],
        "driverBackoffLimit": 4,
        "driverExtraArgs": ["--store=s3://other/run"],
        "activeDeadlineSeconds": 172800,
        "deleteClusterWhenDone": False,
        "dashboardUrl": "https://{name}.dask.example.org/status",
        "networkPolicy": {"dashboardFrom": [INGRESS]},
        "pollSeconds": 30,
    },
}


@pytest.fixture(scope="module")
def helm(tmp_path_factory: pytest.TempPathFactory) -> Runner:
    """A runner for the real helm binary (skips without one, fails in CI: tests/k8s/tools.py)."""
    return helm_runner(require_tool("helm", install=True), tmp_path_factory.mktemp("helm-home"))


def values_file(tmp_path: Path, values: dict[str, Any]) -> str:
    path = tmp_path / "values.yaml"
    path.write_text(yaml.safe_dump(values))
    return str(path)


def of_kind(objects: Sequence[dict[str, Any]], kind: str) -> list[dict[str, Any]]:
    return [o for o in objects if o["kind"] == kind]


def test_lint_strict_with_default_and_custom_values(helm: Any, tmp_path: Path) -> None:
    helm("lint", "--strict", str(CHART))
    helm("lint", "--strict", str(CHART), "-f", values_file(tmp_path, CUSTOM_VALUES))


@pytest.mark.parametrize("custom", [False, True], ids=["default", "custom"])
def test_rendered_objects_are_valid_kubernetes(helm: Any, tmp_path: Path, custom: bool) -> None:
    args = ["--include-crds"]
    if custom:
        args += ["-f", values_file(tmp_path, CUSTOM_VALUES)]
    objects = render(helm, *args)
    kinds = sorted({o["kind"] for o in objects})
    assert kinds == [
        "ConfigMap",
        "CustomResourceDefinition",
        "Deployment",
        "NetworkPolicy",
        "Role",
        "RoleBinding",
        "ServiceAccount",
    ]
    for obj in objects:
        kubernetes_validate.validate(obj, K8S_VERSION, strict=True)
        if obj["kind"] != "CustomResourceDefinition":
            labels = obj["metadata"]["labels"]
            assert all(label in labels for label in RECOMMENDED_LABELS), obj["metadata"]["name"]
    (crd,) = of_kind(objects, "CustomResourceDefinition")
    # The chart ships the generated CRD (its drift from the model is tested in test_crd.py).
    assert crd == yaml.safe_load((REPO / "deploy" / "crd.yaml").read_text())
    assert crd["metadata"]["name"] == build_crd()["metadata"]["name"]


def test_operator_rbac_is_namespaced_and_least_privilege(helm: Any, tmp_path: Path) -> None:
    objects = render(helm, "-f", values_file(tmp_path, CUSTOM_VALUES))
    assert not of_kind(objects, "ClusterRole") and not of_kind(objects, "ClusterRoleBinding")
    roles = {
        (r["metadata"]["namespace"], r["metadata"]["name"]): r for r in of_kind(objects, "Role")
    }
    assert set(roles) == {
        (ns, f"sitsflow-{who}")
        for ns in ("maps-prod", "maps-staging")
        for who in ("operator", "run")
    }
    for namespace in ("maps-prod", "maps-staging"):
        granted: dict[tuple[str, str], set[str]] = {}
        for rule in roles[(namespace, "sitsflow-operator")]["rules"]:
            for group in rule["apiGroups"]:
                for resource in rule["resources"]:
                    granted.setdefault((group, resource), set()).update(rule["verbs"])
        assert granted == OPERATOR_RULES
        (run_rule,) = roles[(namespace, "sitsflow-run")]["rules"]
        assert run_rule == {
            "apiGroups": ["sitsflow.dev"],
            "resources": ["sitsruns/status"],
            "verbs": ["patch"],
        }
    bindings = of_kind(objects, "RoleBinding")
    assert {b["subjects"][0]["name"] for b in bindings} == {"sitsflow-controller", "mapper"}
    for binding in bindings:
        if binding["metadata"]["name"] == "sitsflow-operator":
            assert binding["subjects"][0]["namespace"] == "sitsflow"  # the operator's namespace


def test_operator_deployment_is_hardened_and_watches_the_namespaces(
    helm: Any, tmp_path: Path
) -> None:
    objects = render(helm, "-f", values_file(tmp_path, CUSTOM_VALUES))
    (deployment,) = of_kind(objects, "Deployment")
    pod = deployment["spec"]["template"]["spec"]
    assert deployment["spec"]["replicas"] == 1
    assert deployment["spec"]["strategy"] == {"type": "Recreate"}
    assert pod["securityContext"]["runAsNonRoot"] is True
    assert pod["securityContext"]["seccompProfile"] == {"type": "RuntimeDefault"}
    (container,) = pod["containers"]
    assert container["image"] == "registry.example.org/geo/sitsflow:1.4.2"
    assert container["command"] == ["python", "-m", "pipeline.k8s.operator"]
    assert "--namespace=maps-prod,maps-staging" in container["args"]
    assert container["securityContext"] == {
        "allowPrivilegeEscalation": False,
        "readOnlyRootFilesystem": True,
        "runAsNonRoot": True,
        "capabilities": {"drop": ["ALL"]},
    }
    assert container["livenessProbe"]["httpGet"]["path"] == "/healthz"
    assert pod["nodeSelector"] == {"pool": "system"}
    assert pod["imagePullSecrets"] == [{"name": "regcred"}]
    sa = {s["metadata"]["name"]: s for s in of_kind(objects, "ServiceAccount")}
    assert (
        sa["mapper"]["metadata"]["annotations"]
        == CUSTOM_VALUES["runs"]["serviceAccount"]["annotations"]
    )


@pytest.mark.parametrize("custom", [False, True], ids=["default", "custom"])
def test_operator_config_is_what_the_operator_reads(
    helm: Any, tmp_path: Path, custom: bool
) -> None:
    """Chart values and the operator's settings are one key space: the rendered file loads."""
    args = ["-f", values_file(tmp_path, CUSTOM_VALUES)] if custom else []
    (config_map,) = of_kind(render(helm, *args), "ConfigMap")
    config = OperatorConfig.model_validate(json.loads(config_map["data"]["config.json"]))
    if not custom:
        assert config == OperatorConfig(image="ghcr.io/sitsflow/sitsflow:0.1.0")
        return
    runs = CUSTOM_VALUES["runs"]
    assert config.image == "registry.example.org/geo/sitsflow:1.4.2"
    assert config.image_pull_policy == "Always"
    assert config.image_pull_secrets == ["regcred"]
    assert config.service_account == "mapper"
    assert config.credentials_secret == "s3-credentials"
    assert config.env == runs["env"]
    assert config.driver_resources.as_dict() == runs["driverResources"]
    assert config.tolerations == runs["tolerations"]
    assert (config.driver_backoff_limit, config.active_deadline_seconds) == (4, 172800)
    assert config.driver_extra_args == ["--store=s3://other/run"]
    assert config.delete_cluster_when_done is False
    assert config.dashboard_url == runs["dashboardUrl"]
    assert config.poll_seconds == 30


@pytest.mark.parametrize(
    ("values", "message"),
    [
        ({"replicas": 2}, "Additional property replicas is not allowed"),
        (
            {"runs": {"credentialSecret": "x"}},
            "Additional property credentialSecret is not allowed",
        ),
        ({"image": {"pullPolicy": "Sometimes"}}, "pullPolicy"),
        ({"runs": {"pollSeconds": 0}}, "pollSeconds"),
        ({"runs": {"env": {"BAD-NAME": "x"}}}, "BAD-NAME"),
        ({"watchNamespaces": ["Maps"]}, "watchNamespaces"),
    ],
)
def test_values_schema_rejects_unknown_keys_and_bad_values(
    helm: Any, tmp_path: Path, values: dict[str, Any], message: str
) -> None:
    result = helm("template", "x", str(CHART), "-f", values_file(tmp_path, values), check=False)
    assert result.returncode != 0
    assert message in result.stderr, result.stderr


def test_every_value_is_documented_in_the_schema_and_the_readme() -> None:
    values_text = (CHART / "values.yaml").read_text()
    schema = json.loads((CHART / "values.schema.json").read_text())
    documented = {d.key for d in chartdoc.documented_values(values_text)}

    def leaves(value: Any, prefix: str, node: dict[str, Any]) -> None:
        for key, item in value.items():
            path = f"{prefix}{key}"
            assert key in node.get("properties", {}), f"{path} is not in values.schema.json"
            assert path in documented or prefix.rstrip(".") in documented, f"{path} has no # --"
            child = node["properties"][key]
            if isinstance(item, dict) and child.get("additionalProperties") is False:
                leaves(item, f"{path}.", child)

    leaves(yaml.safe_load(values_text), "", schema)
    assert chartdoc.main(["--check"]) == 0, "run `python -m pipeline.k8s.chartdoc --write`"


def test_notes_tell_how_to_apply_a_first_run(helm: Any, tmp_path: Path) -> None:
    """NOTES.txt rendered through a copy of the chart (helm template does not show notes)."""
    chart = tmp_path / "chart"
    shutil.copytree(CHART, chart)
    (chart / "notes.txt").write_text((CHART / "templates" / "NOTES.txt").read_text())
    (chart / "templates" / "NOTES.txt").unlink()
    (chart / "templates" / "zz-notes.yaml").write_text(
        "apiVersion: v1\nkind: ConfigMap\nmetadata: {name: notes}\n"
        'data:\n  notes: |\n    {{- tpl (.Files.Get "notes.txt") . | nindent 4 }}\n'
    )

    def notes(*args: str) -> str:
        objects = render(helm, *args, chart=chart)
        return next(o for o in objects if o["metadata"]["name"] == "notes")["data"]["notes"]

    text = notes()
    assert "kubectl apply -n sitsflow -f deploy/examples/demo-run.yaml" in text
    assert "kubectl get sitsruns -n sitsflow -w" in text
    assert "svc/slovenia-demo-dask-scheduler 8787:8787" in text
    assert "no DaskCluster kind yet" in text  # no dask-kubernetes operator: say how to get it
    assert "no DaskCluster kind" not in notes(
        "--api-versions", "kubernetes.dask.org/v1/DaskCluster"
    )


@pytest.mark.parametrize("custom", [False, True], ids=["default", "custom"])
def test_the_chart_closes_every_runs_scheduler_and_workers(
    helm: Any, tmp_path: Path, custom: bool
) -> None:
    """The baseline policy: a run's scheduler and workers admit nothing but the dashboard
    ingress (each run's own policies, tests/k8s/test_tls.py, admit its driver and workers)."""
    args = ["-f", values_file(tmp_path, CUSTOM_VALUES)] if custom else []
    objects = render(helm, *args)
    policies = of_kind(objects, "NetworkPolicy")
    assert len(policies) == (2 if custom else 1)  # one per watched namespace
    for policy in policies:
        spec = policy["spec"]
        assert spec["policyTypes"] == ["Ingress"]
        assert spec["podSelector"]["matchExpressions"] == [
            {
                "key": "app.kubernetes.io/component",
                "operator": "In",
                "values": ["scheduler", "worker"],
            }
        ]
        if custom:
            assert spec["ingress"] == [
                {"from": [INGRESS], "ports": [{"protocol": "TCP", "port": 8787}]}
            ]
        else:
            assert spec["ingress"] == []
    (config_map,) = [o for o in of_kind(objects, "ConfigMap") if "config.json" in o["data"]]
    config = OperatorConfig.model_validate(json.loads(config_map["data"]["config.json"]))
    assert config.tls is True and config.network_policy.enabled is True
    assert config.network_policy.dashboard_from == ([INGRESS] if custom else [])
    off = render(helm, "-f", values_file(tmp_path, {"runs": {"networkPolicy": {"enabled": False}}}))
    assert of_kind(off, "NetworkPolicy") == []
