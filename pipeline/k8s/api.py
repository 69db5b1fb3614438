"""A small async Kubernetes API client for the few calls the operator makes.

kopf watches the SitsRuns and patches them; this client creates, reads, lists and deletes the
objects a run owns (ConfigMap, DaskCluster, Job) and reads the driver's pods. It talks to one API
server with one identity (the pod's service account in a cluster, an explicit URL in tests), and
turns HTTP failures into typed errors so handlers can tell a retryable error from a final one.
"""

from __future__ import annotations

import re
import ssl
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import quote

import aiohttp

SERVICE_ACCOUNT_DIR = Path("/var/run/secrets/kubernetes.io/serviceaccount")

# (group, version, plural) of the kinds the operator handles, by kind.
RESOURCES: dict[str, tuple[str, str, str]] = {
    "ConfigMap": ("", "v1", "configmaps"),
    "Pod": ("", "v1", "pods"),
    "Service": ("", "v1", "services"),
    "Job": ("batch", "v1", "jobs"),
    "DaskCluster": ("kubernetes.dask.org", "v1", "daskclusters"),
    "DaskAutoscaler": ("kubernetes.dask.org", "v1", "daskautoscalers"),
    "SitsRun": ("sitsflow.dev", "v1alpha1", "sitsruns"),
}


# Delete dependents (a Job's pods) in the background rather than orphaning them.
_DELETE_OPTIONS = {"apiVersion": "v1", "kind": "DeleteOptions", "propagationPolicy": "Background"}


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


@dataclass(frozen=True)
class ApiConnection:
    """Where the API server is and how to authenticate (a token read fresh on every request)."""

    server: str
    token_path: Path | None = None
    ca_path: Path | None = None
    namespace: str = "default"

    @classmethod
    def in_cluster(cls, account_dir: Path = SERVICE_ACCOUNT_DIR) -> ApiConnection:
        import os

        host = os.environ.get("KUBERNETES_SERVICE_HOST")
        port = os.environ.get("KUBERNETES_SERVICE_PORT", "443")
        if not host:
            raise RuntimeError(
                "KUBERNETES_SERVICE_HOST is not set: the operator runs inside a cluster pod; "
                "outside one, give the API server URL with --server"
            )
        if ":" in host:  # an IPv6 address
            host = f"[{host}]"
        namespace_file = account_dir / "namespace"
        return cls(
            server=f"https://{host}:{port}",
            token_path=account_dir / "token",
            ca_path=account_dir / "ca.crt",
            namespace=namespace_file.read_text().strip() if namespace_file.exists() else "default",
        )

    def token(self) -> str | None:
        # Projected service-account tokens rotate: read the file each time rather than once.
        return self.token_path.read_text().strip() if self.token_path else None

    def ssl_context(self) -> ssl.SSLContext | None:
        if not self.server.startswith("https://"):
            return None
        return ssl.create_default_context(cafile=str(self.ca_path) if self.ca_path else None)


def _has_labels(item: Mapping[str, Any], wanted: Mapping[str, str]) -> bool:
    present = (item.get("metadata") or {}).get("labels") or {}
    return all(present.get(k) == v for k, v in wanted.items())


def resource_path(kind: str, namespace: str, name: str | None = None, sub: str = "") -> str:
    group, version, plural = RESOURCES[kind]
    base = f"/api/{version}" if not group else f"/apis/{group}/{version}"
    path = f"{base}/namespaces/{quote(namespace)}/{plural}"
    if name is not None:
        path += f"/{quote(name)}"
    if sub:
        path += f"/{sub}"
    return path


class KubeApi:
    """Create, get, list, patch and delete namespaced objects; errors as ApiError subclasses."""

    def __init__(self, connection: ApiConnection, *, timeout_s: float = 30.0) -> None:
        self.connection = connection
        self._timeout = aiohttp.ClientTimeout(total=timeout_s)
        self._session: aiohttp.ClientSession | None = None
        self._closed = False

    async def __aenter__(self) -> KubeApi:
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.close()

    async def close(self) -> None:
        self._closed = True
        if self._session is not None:
            await self._session.close()
            self._session = None

    def _client(self) -> aiohttp.ClientSession:
        if self._closed:
            raise ApiError(
                503, "ClientClosed", "the operator is stopping", url=self.connection.server
            )
        if self._session is None or self._session.closed:
            connector = aiohttp.TCPConnector(ssl=self.connection.ssl_context() or False)
            self._session = aiohttp.ClientSession(connector=connector, timeout=self._timeout)
        return self._session

    async def _request(
        self,
        method: str,
        path: str,
        *,
        body: Any = None,
        params: Mapping[str, str] | None = None,
        content_type: str = "application/json",
    ) -> dict[str, Any]:
        headers = {"Accept": "application/json", "Content-Type": content_type}
        token = self.connection.token()
        if token:
            headers["Authorization"] = f"Bearer {token}"
        url = self.connection.server.rstrip("/") + path
        try:
            async with self._client().request(
                method, url, json=body, params=params, headers=headers
            ) as response:
                payload = await response.json(content_type=None) if response.content else None
                if response.status >= 400:
                    data = payload if isinstance(payload, dict) else {}
                    reason = str(data.get("reason") or response.reason)
                    message = str(data.get("message") or "")
                    error = {403: ForbiddenError, 404: NotFoundError, 409: ConflictError}.get(
                        response.status, ApiError
                    )
                    raise error(response.status, reason, message, url=url)
                return payload if isinstance(payload, dict) else {}
        except (aiohttp.ClientConnectionError, TimeoutError) as exc:
            # Unreachable or too slow: as transient as a 503.
            raise ApiError(503, type(exc).__name__, str(exc), url=url) from None

    async def create(self, obj: Mapping[str, Any]) -> dict[str, Any]:
        meta = obj["metadata"]
        return await self._request("POST", resource_path(obj["kind"], meta["namespace"]), body=obj)

    async def get(self, kind: str, namespace: str, name: str) -> dict[str, Any]:
        return await self._request("GET", resource_path(kind, namespace, name))

    async def find(self, kind: str, namespace: str, name: str) -> dict[str, Any] | None:
        try:
            return await self.get(kind, namespace, name)
        except NotFoundError:
            return None

    async def list(
        self, kind: str, namespace: str, labels: Mapping[str, str] | None = None
    ) -> list[dict[str, Any]]:
        params = {}
        if labels:
            params["labelSelector"] = ",".join(f"{k}={v}" for k, v in labels.items())
        data = await self._request("GET", resource_path(kind, namespace), params=params)
        items = [item for item in data.get("items", []) if isinstance(item, dict)]
        # Filter here as well: the selector is the server's job, the result is ours to trust.
        wanted = dict(labels or {})
        return [item for item in items if _has_labels(item, wanted)]

    async def patch(
        self, kind: str, namespace: str, name: str, patch: Mapping[str, Any], *, sub: str = ""
    ) -> dict[str, Any]:
        return await self._request(
            "PATCH",
            resource_path(kind, namespace, name, sub),
            body=patch,
            content_type="application/merge-patch+json",
        )

    async def delete(self, kind: str, namespace: str, name: str) -> bool:
        """Delete with background propagation (a Job's pods go too); False if already gone."""
        try:
            await self._request(
                "DELETE",
                resource_path(kind, namespace, name),
                body=_DELETE_OPTIONS,
            )
        except NotFoundError:
            return False
        return True
