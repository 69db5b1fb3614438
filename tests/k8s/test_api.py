"""The operator's API client (kr8s) and its idempotent create, against the in-memory API on
127.0.0.1."""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest
import pytest_asyncio

from pipeline.k8s.api import ApiError, ConflictError, ForbiddenError, KubeApi, NotFoundError
from pipeline.k8s.operator import ensure
from pipeline.k8s.specs import RunRef, owner_reference
from tests.k8s.emulator import ApiServer, api_server, stored, write_kubeconfig
from tests.servers._process import free_port

pytestmark = pytest.mark.asyncio
REF = RunRef("demo", "runs", "uid-1")


def config_map(name: str, owner: RunRef | None = REF, **labels: str) -> dict[str, Any]:
    meta: dict[str, Any] = {"name": name, "namespace": "runs", "labels": labels}
    if owner is not None:
        meta["ownerReferences"] = [owner_reference(owner)]
    return {"apiVersion": "v1", "kind": "ConfigMap", "metadata": meta, "data": {"a": "1"}}


@pytest_asyncio.fixture
async def api(tmp_path: Path) -> AsyncIterator[tuple[KubeApi, ApiServer]]:
    async with api_server() as (server, url):
        kubeconfig = write_kubeconfig(tmp_path / "kubeconfig", url, "a-token", namespace="runs")
        client = await KubeApi.connect(kubeconfig=kubeconfig)
        assert client.namespace == "runs"
        try:
            yield client, server
        finally:
            await client.close()


async def test_create_get_list_patch_delete(api: tuple[KubeApi, ApiServer]) -> None:
    client, server = api
    await client.create(config_map("one", run="demo"))
    await client.create(config_map("two", run="other"))
    assert (await client.get("ConfigMap", "runs", "one"))["data"] == {"a": "1"}
    assert [
        o["metadata"]["name"] for o in await client.list("ConfigMap", "runs", {"run": "demo"})
    ] == ["one"]
    await client.patch("ConfigMap", "runs", "one", {"data": {"b": "2"}})
    assert stored(server, "v1/configmaps", "runs", "one")["data"] == {"a": "1", "b": "2"}
    assert await client.delete("ConfigMap", "runs", "one") is True
    assert await client.delete("ConfigMap", "runs", "one") is False
    assert await client.find("ConfigMap", "runs", "one") is None
    with pytest.raises(NotFoundError):
        await client.get("ConfigMap", "runs", "one")
    with pytest.raises(ConflictError) as conflict:
        await client.create(config_map("two"))
    assert conflict.value.status == 409 and not conflict.value.transient


async def test_an_unreachable_server_is_a_transient_error(
    api: tuple[KubeApi, ApiServer], tmp_path: Path
) -> None:
    gone = f"http://127.0.0.1:{free_port()}"
    with pytest.raises(ApiError) as error:
        await KubeApi.connect(kubeconfig=write_kubeconfig(tmp_path / "gone", gone, "t"))
    assert error.value.transient
    client, _ = api
    client.kr8s.auth.server = gone  # the server goes away after the client connected
    await client.close()
    with pytest.raises(ApiError) as error:
        await client.get("Job", "runs", "x")
    assert error.value.transient and error.value.status == 503


async def test_a_403_names_what_rbac_refused(api: tuple[KubeApi, ApiServer]) -> None:
    client, server = api
    message = (
        'pods is forbidden: User "system:serviceaccount:sitsflow:sitsflow" cannot list '
        'resource "pods" in API group "" in the namespace "runs"'
    )
    status = {"kind": "Status", "status": "Failure", "reason": "Forbidden", "code": 403}
    server["get /api/v1/namespaces/runs/pods"] << 403 << {**status, "message": message}
    with pytest.raises(ForbiddenError) as error:
        await client.list("Pod", "runs")
    assert error.value.rbac_denial == ("list", "", "pods")
    assert error.value.reason == "Forbidden" and not error.value.transient


async def test_ensure_accepts_its_own_object_and_refuses_anothers(
    api: tuple[KubeApi, ApiServer],
) -> None:
    client, server = api
    await ensure(client, config_map("mine"), REF)
    await ensure(client, config_map("mine"), REF)  # again: accepted as it is
    await client.create(config_map("theirs", owner=RunRef("demo", "runs", "uid-of-old-run")))
    with pytest.raises(ApiError, match="belongs to another object"):
        await ensure(client, config_map("theirs"), REF)
    changed = config_map("mine")
    changed["spec"] = {"replicas": 3}
    await ensure(client, changed, REF, update_spec=True)
    assert stored(server, "v1/configmaps", "runs", "mine")["spec"] == {"replicas": 3}


async def test_ensure_waits_for_an_object_still_being_deleted(
    api: tuple[KubeApi, ApiServer],
) -> None:
    client, _ = api
    dying = config_map("dying")
    dying["metadata"]["finalizers"] = ["kubernetes.dask.org/cleanup"]
    await client.create(dying)
    await client.delete("ConfigMap", "runs", "dying")  # the finalizer keeps it, terminating
    with pytest.raises(ApiError, match="is being deleted") as error:
        await ensure(client, config_map("dying"), REF)
    assert error.value.status == 409
