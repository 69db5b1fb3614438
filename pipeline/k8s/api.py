"""The operator's Kubernetes client: kr8s, with errors a handler can act on.

kopf watches the SitsRuns and patches them; this module creates, reads, lists, patches and
deletes the objects a run owns (ConfigMap, Secret, NetworkPolicy, DaskCluster, DaskAutoscaler,
Job) and reads the driver's and the workers' pods, through kr8s' asyncio API. kr8s finds the
credentials (a kubeconfig, else the pod's service account) and re-reads them on a 401
(projected tokens rotate). Its failures are turned into typed errors so handlers can tell a
retryable error from a final one.
"""

from __future__ import annotations

import re
from collections.abc import Awaitable, Mapping
from pathlib import Path
from typing import Any, TypeVar

import httpx
import kr8s
import kr8s.asyncio
from kr8s.asyncio.objects import (
    APIObject,
    ConfigMap,
    Job,
    NetworkPolicy,
    Pod,
    Secret,
    Service,
    new_class,
)

from pipeline.k8s import API_VERSION, KIND, PLURAL

TIMEOUT_S = 30.0

DaskCluster = new_class("DaskCluster", version="kubernetes.dask.org/v1", namespaced=True)
DaskAutoscaler = new_class("DaskAutoscaler", version="kubernetes.dask.org/v1", namespaced=True)
SitsRun = new_class(KIND, version=API_VERSION, namespaced=True, plural=PLURAL)

# The kinds the operator handles, by kind.
KINDS: dict[str, type[APIObject]] = {
    "ConfigMap": ConfigMap,
    "Pod": Pod,
    "Service": Service,
    "Job": Job,
    "Secret": Secret,
    "NetworkPolicy": NetworkPolicy,
    "DaskCluster": DaskCluster,
    "DaskAutoscaler": DaskAutoscaler,
    KIND: SitsRun,
}


class ApiError(Exception):
    """The API server refused or failed a request."""

    def __init__(self, status: int, reason: str, message: str, *, url: str) -> None:
        self.status = status
        self.reason = reason
        self.message = message
        self.url = url
        super().__init__(f"{status} {reason} from {url}: {message}")

    @property
    def transient(self) -> bool:
        """Worth retrying later: throttling, timeouts, server-side failures."""
        return self.status in (408, 425, 429) or self.status >= 500


class NotFoundError(ApiError):
    pass


class ConflictError(ApiError):
    pass


# The RBAC authorizer's wording: 'User "system:serviceaccount:ns:sa" cannot patch resource
# "daskclusters" in API group "kubernetes.dask.org" in the namespace "runs"'.
_RBAC_DENIAL = re.compile(r'cannot (\S+) resource "([^"]+)" in API group "([^"]*)"')


class ForbiddenError(ApiError):
    """403. Either RBAC refused the verb (the operator's Role lacks it: no retry helps) or an
    admission rule did (an exceeded ResourceQuota, a namespace being deleted: a retry may)."""

    @property
    def rbac_denial(self) -> tuple[str, str, str] | None:
        """(verb, group, resource) that the Role lacks, when RBAC is what refused."""
        match = _RBAC_DENIAL.search(self.message)
        return (match[1], match[3], match[2]) if match else None


_T = TypeVar("_T")
_BY_STATUS: dict[int, type[ApiError]] = {
    403: ForbiddenError,
    404: NotFoundError,
    409: ConflictError,
}


async def _call(where: str, request: Awaitable[_T]) -> _T:
    """Await one kr8s request; its failures as ApiError subclasses."""
    try:
        return await request
    except kr8s.NotFoundError as exc:
        raise NotFoundError(404, "NotFound", str(exc), url=where) from None
    except kr8s.ServerError as exc:
        response = exc.response
        status = response.status_code if response is not None else 500
        body: dict[str, Any] = exc.status if isinstance(exc.status, dict) else {}
        reason = str(body.get("reason") or (response.reason_phrase if response else "Error"))
        url = str(response.request.url) if response is not None else where
        raise _BY_STATUS.get(status, ApiError)(status, reason, str(exc), url=url) from None
    except (kr8s.APITimeoutError, httpx.TransportError) as exc:
        # Unreachable or too slow: as transient as a 503.
        raise ApiError(503, type(exc).__name__, str(exc) or repr(exc), url=where) from None


def _has_labels(item: Mapping[str, Any], wanted: Mapping[str, str]) -> bool:
    present = (item.get("metadata") or {}).get("labels") or {}
    return all(present.get(k) == v for k, v in wanted.items())


class KubeApi:
    """Create, get, list, patch and delete namespaced objects (plain dicts in and out)."""

    def __init__(self, api: kr8s.asyncio.Api) -> None:
        self.kr8s = api

    @classmethod
    async def connect(
        cls, *, kubeconfig: str | Path | None = None, server: str | None = None
    ) -> KubeApi:
        """A client with the kubeconfig's credentials (``$KUBECONFIG``, ``~/.kube/config``),
        else the pod's service account; ``server`` overrides the API server's URL (e.g.
        ``kubectl proxy``'s)."""
        where = server or str(kubeconfig or "the in-cluster service account")
        api = await _call(
            where,
            kr8s.asyncio.api(url=server, kubeconfig=str(kubeconfig) if kubeconfig else None),
        )
        api.timeout = TIMEOUT_S
        return cls(api)

    @property
    def namespace(self) -> str:
        """The namespace of the credentials (the service account's, the context's)."""
        return str(self.kr8s.namespace)

    async def close(self) -> None:
        # kr8s keeps one httpx client per Api and offers no close(): close it, so that no
        # connection outlives the event loop that made it.
        session = getattr(self.kr8s, "_session", None)
        if session is not None:
            await session.aclose()

    def _object(self, kind: str, namespace: str, name: str) -> APIObject:
        body = {"metadata": {"name": name, "namespace": namespace}}
        return KINDS[kind](body, api=self.kr8s)

    async def create(self, obj: Mapping[str, Any]) -> dict[str, Any]:
        created = KINDS[obj["kind"]](dict(obj), api=self.kr8s)
        await _call(f"{obj['kind']} {obj['metadata']['name']}", created.create())
        return dict(created.to_dict())

    async def get(self, kind: str, namespace: str, name: str) -> dict[str, Any]:
        obj = self._object(kind, namespace, name)
        await _call(f"{kind} {namespace}/{name}", obj.refresh())
        return dict(obj.to_dict())

    async def find(self, kind: str, namespace: str, name: str) -> dict[str, Any] | None:
        try:
            return await self.get(kind, namespace, name)
        except NotFoundError:
            return None

    async def list(
        self, kind: str, namespace: str, labels: Mapping[str, str] | None = None
    ) -> list[dict[str, Any]]:
        async def items() -> list[dict[str, Any]]:
            found = KINDS[kind].list(
                api=self.kr8s, namespace=namespace, label_selector=dict(labels or {}) or None
            )
            return [dict(o.to_dict()) async for o in found if isinstance(o, APIObject)]

        listed = await _call(f"{kind} in {namespace}", items())
        # Filter here as well: the selector is the server's job, the result is ours to trust.
        return [item for item in listed if _has_labels(item, labels or {})]

    async def patch(
        self, kind: str, namespace: str, name: str, patch: Mapping[str, Any], *, sub: str = ""
    ) -> dict[str, Any]:
        """A JSON merge patch (of the ``sub`` subresource, e.g. "status")."""
        obj = self._object(kind, namespace, name)
        await _call(f"{kind} {namespace}/{name}", obj.patch(dict(patch), subresource=sub or None))
        return dict(obj.to_dict())

    async def delete(self, kind: str, namespace: str, name: str) -> bool:
        """Delete with background propagation (a Job's pods go too); False if already gone."""
        obj = self._object(kind, namespace, name)
        try:
            await _call(f"{kind} {namespace}/{name}", obj.delete(propagation_policy="Background"))
        except NotFoundError:
            return False
        return True
