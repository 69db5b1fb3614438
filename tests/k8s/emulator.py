"""An in-memory Kubernetes API on 127.0.0.1 (kmock) that behaves enough like a real one.

kmock stores, lists, watches, patches and deletes objects and honours finalizers. A real API
server also stamps what it owns on every new object (uid, resourceVersion, generation,
creationTimestamp) and bumps ``generation`` when a spec changes; kopf relies on those, so this
subclass adds them. It does not run controllers: no pods start and no garbage collector follows
owner references, so tests play the Job controller's part by patching statuses themselves.

kr8s asks ``/version/`` before its first request: the emulator answers it as a 1.33 server.
``write_kubeconfig`` points a client (kr8s, the operator) at it with a token of its own.

It also keeps a log of every request with the identity that sent it (its bearer token), so a test
can check what one client (the operator) asked for against the chart's RBAC Role.

A pod's port-forward (``pods/<name>/portforward``, the websocket protocol kubectl and kr8s speak)
reaches a TCP port of 127.0.0.1 that a test names in ``forwards``: a real server playing the pod.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import re
import uuid
from collections.abc import AsyncIterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import aiohttp.web
import attrs
import kmock

from tests.k8s.rbac import Access, access_of

VERBS = {"create", "get", "list", "watch", "patch", "update", "delete"}
RESOURCES = {
    "v1/namespaces": ("Namespace", False),
    "v1/events": ("Event", True),
    "v1/configmaps": ("ConfigMap", True),
    "v1/pods": ("Pod", True),
    "v1/services": ("Service", True),
    "v1/secrets": ("Secret", True),
    "networking.k8s.io/v1/networkpolicies": ("NetworkPolicy", True),
    "batch/v1/jobs": ("Job", True),
    "kubernetes.dask.org/v1/daskclusters": ("DaskCluster", True),
    "kubernetes.dask.org/v1/daskautoscalers": ("DaskAutoscaler", True),
    "sitsflow.dev/v1alpha1/sitsruns": ("SitsRun", True),
}


@attrs.define(kw_only=True)
class ApiServer(kmock.KubernetesEmulator):
    """kmock's emulator plus the server-owned metadata a real API server stamps: uid,
    resourceVersion, generation (bumped when a spec changes) and creationTimestamp.

    resourceVersion stays "1": kmock's watch can miss an event that lands between its initial
    listing and its subscription, and kopf, seeing newer versions, would then wait for an event
    that never comes. With a constant version kopf may handle a stale event twice instead, which
    the operator must survive anyway (its handlers are idempotent).
    """

    # (Authorization header, the access RBAC would check or the path of a non-resource URL).
    requests: list[tuple[str | None, Access | str]] = attrs.field(factory=list)
    # (namespace, pod name) -> the port of 127.0.0.1 that the pod's port-forward reaches.
    forwards: dict[tuple[str, str], int] = attrs.field(factory=dict)

    def accesses(self, token: str) -> list[Access]:
        """The resource requests sent with this bearer token, in order."""
        wanted = f"Bearer {token}"
        return [a for auth, a in self.requests if auth == wanted and isinstance(a, Access)]

    def non_resource_paths(self, token: str) -> set[str]:
        wanted = f"Bearer {token}"
        return {a for auth, a in self.requests if auth == wanted and isinstance(a, str)}

    async def _handle(self, request: kmock.Request) -> aiohttp.web.StreamResponse:
        method, path = kmock.method(request.method).value, request.url.path
        access = access_of(method, path, request.params)
        self.requests.append((request.headers.get("Authorization"), access or path))
        forward = PORT_FORWARD.fullmatch(path)
        raw = request._raw_request
        if forward and raw is not None and (forward["namespace"], forward["pod"]) in self.forwards:
            port = self.forwards[forward["namespace"], forward["pod"]]
            return await port_forward(raw, port, int(request.params["ports"]))
        data = request.data
        if request.resource is not None and isinstance(data, dict):
            if request.action == kmock.action.CREATE:
                meta = data.setdefault("metadata", {})
                meta.setdefault("uid", str(uuid.uuid4()))
                meta.setdefault("resourceVersion", "1")
                meta.setdefault("generation", 1)
                meta.setdefault(
                    "creationTimestamp", datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")
                )
                if request.namespace:
                    meta.setdefault("namespace", request.namespace)
            elif request.action == kmock.action.UPDATE and "spec" in data:
                current = stored(self, request.resource, request.namespace, request.name)
                if current is not None and data["spec"] != current.get("spec"):
                    generation = int(current["metadata"].get("generation", 1)) + 1
                    data.setdefault("metadata", {})["generation"] = generation
        return await super()._handle(request)


PORT_FORWARD = re.compile(
    r"/api/v1/namespaces/(?P<namespace>[^/]+)/pods/(?P<pod>[^/]+)/portforward"
)


async def port_forward(
    raw: aiohttp.web.BaseRequest, port: int, remote_port: int
) -> aiohttp.web.StreamResponse:
    """Kubernetes' port-forward protocol over a websocket: every frame starts with its channel
    (0 data, 1 errors); the first frame of each channel names the port; then channel 0 carries
    the bytes of one TCP connection, here to 127.0.0.1:``port``."""
    ws = aiohttp.web.WebSocketResponse()
    await ws.prepare(raw)
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    named = remote_port.to_bytes(2, "little")
    await ws.send_bytes(b"\x00" + named)
    await ws.send_bytes(b"\x01" + named)

    async def to_pod() -> None:
        async for message in ws:
            if message.type == aiohttp.WSMsgType.BINARY and message.data[:1] == b"\x00":
                writer.write(message.data[1:])
                await writer.drain()
        writer.close()

    async def from_pod() -> None:
        while data := await reader.read(1 << 16):
            await ws.send_bytes(b"\x00" + data)
        await ws.close()

    tasks = [asyncio.create_task(to_pod()), asyncio.create_task(from_pod())]
    try:
        await asyncio.wait(tasks, return_when=asyncio.FIRST_COMPLETED)
    finally:
        for task in tasks:
            task.cancel()
        writer.close()
        await ws.close()
    return ws


def declare_resources(server: kmock.KubernetesEmulator) -> None:
    for key, (kind, namespaced) in RESOURCES.items():
        server.resources[key] = kmock.ResourceInfo(
            kind=kind,
            namespaced=namespaced,
            verbs=VERBS,
            subresources={"status"} if kind in ("SitsRun", "Job", "Pod", "DaskCluster") else set(),
        )


@contextlib.asynccontextmanager
async def api_server() -> AsyncIterator[tuple[ApiServer, str]]:
    """The emulator listening on a free port of 127.0.0.1, and its URL."""
    async with ApiServer() as server, kmock.Server(server, host="127.0.0.1"):
        declare_resources(server)
        server["get /version/"] << VERSION
        yield server, str(server.url).rstrip("/")


VERSION = {"major": "1", "minor": "33", "gitVersion": "v1.33.0", "platform": "linux/amd64"}


def write_kubeconfig(path: Path, url: str, token: str, namespace: str = "default") -> Path:
    """A kubeconfig (in the test's own directory) for ``url`` with a bearer token."""
    config = {
        "apiVersion": "v1",
        "kind": "Config",
        "clusters": [{"name": "emulator", "cluster": {"server": url}}],
        "users": [{"name": "client", "user": {"token": token}}],
        "contexts": [
            {
                "name": "emulator",
                "context": {"cluster": "emulator", "user": "client", "namespace": namespace},
            }
        ],
        "current-context": "emulator",
    }
    path.write_text(json.dumps(config))
    return path


def stored(
    server: kmock.KubernetesEmulator,
    resource: str | kmock.resource,
    namespace: str | None,
    name: str | None,
) -> Any:
    """The object as stored now, or None when absent or deleted."""
    if name is None:
        return None
    key = (kmock.resource(resource), namespace, name)
    if key not in server.objects or server.objects[key].deleted:
        return None
    return server.objects[key].raw
