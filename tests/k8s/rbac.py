"""Kubernetes RBAC, as the API server's authorizer applies it, for the requests a test recorded.

``access_of`` turns an HTTP request into what RBAC checks (verb, API group, resource with its
subresource, namespace); ``allows`` says whether a Role's rules grant it. The operator tests
record every request the operator sends to the emulator and check each against the chart's
rendered Role, so the Role follows the code: a new call without its rule fails a test here
instead of answering 403 in a real cluster.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Any

_VERBS = {"POST": "create", "PUT": "update", "PATCH": "patch"}


@dataclass(frozen=True, order=True)
class Access:
    """One resource request as RBAC sees it; ``resource`` is "plural" or "plural/subresource"."""

    verb: str
    group: str
    resource: str
    namespace: str | None

    def __str__(self) -> str:
        group = self.group or '""'
        return f"{self.verb} {self.resource} (group {group}) in namespace {self.namespace}"


def access_of(method: str, path: str, query: Mapping[str, str]) -> Access | None:
    """The access a request needs, or None for a non-resource URL (/api, /apis/..., /version:
    discovery, which every authenticated identity may read through ``system:discovery``)."""
    parts = [p for p in path.split("/") if p]
    if parts[:1] == ["api"] and len(parts) >= 3:
        group, rest = "", parts[2:]
    elif parts[:1] == ["apis"] and len(parts) >= 4:
        group, rest = parts[1], parts[3:]
    else:
        return None
    namespace = None
    if rest[0] == "namespaces" and len(rest) >= 3:
        namespace, rest = rest[1], rest[2:]
    resource = rest[0] + (f"/{rest[2]}" if len(rest) > 2 else "")
    named = len(rest) > 1
    method = method.upper()
    if method == "GET":
        verb = "watch" if query.get("watch") in ("true", "1") else ("get" if named else "list")
    elif method == "DELETE":
        verb = "delete" if named else "deletecollection"
    else:
        verb = _VERBS[method]
    return Access(verb, group, resource, namespace)


def _matches(values: Iterable[str], wanted: str) -> bool:
    return any(value in ("*", wanted) for value in values)


def allows(role: Mapping[str, Any], access: Access) -> bool:
    """Whether a Role (a rendered manifest) grants the access (wildcards as RBAC reads them)."""
    if access.namespace != role["metadata"].get("namespace"):
        return False
    return any(
        _matches(rule.get("apiGroups", []), access.group)
        and _matches(rule.get("resources", []), access.resource)
        and _matches(rule.get("verbs", []), access.verb)
        for rule in role.get("rules", [])
    )


def granted(role: Mapping[str, Any]) -> set[tuple[str, str, str]]:
    """Every (verb, group, resource) a Role lists, wildcards left as they are."""
    return {
        (verb, group, resource)
        for rule in role.get("rules", [])
        for group in rule.get("apiGroups", [])
        for resource in rule.get("resources", [])
        for verb in rule.get("verbs", [])
    }
