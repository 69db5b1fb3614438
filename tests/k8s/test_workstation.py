"""A run started from a workstation (``compute.cluster: kubernetes``, ``pipeline.run.kube``) is
closed like the operator's: its certificates' Secret, its DaskCluster with dask's TLS settings
and the Secret mounted, NetworkPolicies selecting its own pods, created on the Kubernetes API
emulator in that order and deleted again, and a REAL scheduler started with the rendered
settings that accepts the driver's Security and refuses a plain client."""

from __future__ import annotations

import asyncio
import contextlib
import ssl
import stat
from pathlib import Path
from typing import Any

import jsonschema
import kubernetes_validate
import pytest
from distributed import Client
from distributed.security import Security

from pipeline.errors import ComputeError
from pipeline.run.certificates import client_security, make_certificates, write_private
from pipeline.run.config import AdaptiveConfig, ComputeConfig, KubernetesConfig
from pipeline.run.dask_spec import TLS_DIR, tls_environment
from pipeline.run.kube import closed_cluster, cluster_objects, create_objects, wait_for_scheduler
from tests.k8s.emulator import api_server, stored, write_kubeconfig
from tests.k8s.rbac import Access
from tests.k8s.test_specs import dask_cluster_schema
from tests.k8s.test_tls import K8S_VERSION, start_scheduler, write

RUN = "france-2024"
RESOURCES = {
    "Secret": "v1/secrets",
    "NetworkPolicy": "networking.k8s.io/v1/networkpolicies",
    "DaskCluster": "kubernetes.dask.org/v1/daskclusters",
    "DaskAutoscaler": "kubernetes.dask.org/v1/daskautoscalers",
}


def compute(namespace: str | None = "mapping", **fields: Any) -> ComputeConfig:
    settings: dict[str, Any] = {
        "cluster": "kubernetes",
        "workers": 3,
        "threads_per_worker": 2,
        "memory_limit": "4GiB",
        "adaptive": AdaptiveConfig(minimum=1, maximum=6),
        "kubernetes": KubernetesConfig(
            image="registry.example.org/sitsflow:1.2.3",
            credentials_secret="s3-credentials",
            namespace=namespace,
        ),
    }
    return ComputeConfig(**(settings | fields))


def matches(selector: dict[str, Any], labels: dict[str, str]) -> bool:
    """Whether a label selector (matchLabels, matchExpressions with In) selects ``labels``."""
    if any(labels.get(k) != v for k, v in selector.get("matchLabels", {}).items()):
        return False
    for expression in selector.get("matchExpressions", []):
        assert expression["operator"] == "In"
        if labels.get(expression["key"]) not in expression["values"]:
            return False
    return True


def test_the_rendered_objects_close_the_runs_scheduler() -> None:
    files = make_certificates(f"mapping/{RUN}").files()
    objects = cluster_objects(compute(), RUN, "mapping", files, {"AWS_REGION": "eu-west-1"})
    assert [o["kind"] for o in objects] == [
        "Secret", "NetworkPolicy", "NetworkPolicy", "DaskCluster", "DaskAutoscaler",
    ]  # fmt: skip
    secret, to_scheduler, to_workers, cluster, autoscaler = objects
    for obj in (secret, to_scheduler, to_workers):
        kubernetes_validate.validate(obj, K8S_VERSION, strict=True)
        assert obj["metadata"]["namespace"] == "mapping"
    jsonschema.Draft4Validator(dask_cluster_schema()).validate(cluster)
    # The Secret: the run's CA and its one certificate and key, never changed.
    assert secret["metadata"]["name"] == "sitsflow-france-2024-dask-tls"
    assert secret["type"] == "kubernetes.io/tls" and secret["immutable"] is True
    assert secret["stringData"] == files
    # Scheduler and workers mount it and speak TLS only; the workers dial the Service on tls://.
    for role in ("scheduler", "worker"):
        pod = cluster["spec"][role]["spec"]
        mode = {"secretName": secret["metadata"]["name"], "defaultMode": 0o440}
        assert {"name": "dask-tls", "secret": mode} in pod["volumes"]
        (container,) = pod["containers"]
        assert {"name": "dask-tls", "mountPath": TLS_DIR, "readOnly": True} in (
            container["volumeMounts"]
        )
        env = {e["name"]: e["value"] for e in container["env"]}
        assert env.items() >= tls_environment().items()
        assert env["AWS_REGION"] == "eu-west-1"
    (scheduler,) = cluster["spec"]["scheduler"]["spec"]["containers"]
    assert scheduler["args"][scheduler["args"].index("--protocol") + 1] == "tls"
    (worker,) = cluster["spec"]["worker"]["spec"]["containers"]
    assert worker["args"][2] == "tls://sitsflow-france-2024-scheduler.mapping.svc:8786"
    assert autoscaler["spec"] == {"cluster": "sitsflow-france-2024", "minimum": 1, "maximum": 6}
    assert cluster["spec"]["worker"]["replicas"] == 3  # the start size, within the bounds
    # The policies select the run's own pods: the scheduler port admits its workers only.
    pods = {role: cluster["spec"][role]["metadata"]["labels"] for role in ("scheduler", "worker")}
    assert matches(to_scheduler["spec"]["podSelector"], pods["scheduler"])
    assert not matches(to_scheduler["spec"]["podSelector"], pods["worker"])
    to_port, to_dashboard = to_scheduler["spec"]["ingress"]
    assert to_port["ports"] == [{"protocol": "TCP", "port": 8786}]
    (peer,) = to_port["from"]
    assert set(peer) == {"podSelector"}  # no namespaceSelector: this namespace only
    assert matches(peer["podSelector"], pods["worker"])
    assert not matches(peer["podSelector"], pods["scheduler"])
    assert to_dashboard["ports"] == [{"protocol": "TCP", "port": 8787}]
    assert matches(to_workers["spec"]["podSelector"], pods["worker"])
    (rule,) = to_workers["spec"]["ingress"]
    (from_run,) = rule["from"]
    assert matches(from_run["podSelector"], pods["scheduler"])
    assert matches(from_run["podSelector"], pods["worker"])
    # Nobody else's pods: another run's, nor an operator's SitsRun of the same name.
    other_run = pods["worker"] | {"sitsflow.dev/run": "other"}
    operators = pods["worker"] | {"app.kubernetes.io/managed-by": "sitsflow-operator"}
    for selector in (peer["podSelector"], from_run["podSelector"]):
        assert not matches(selector, other_run) and not matches(selector, operators)
    # A fixed-size cluster gets no autoscaler.
    fixed = cluster_objects(compute(adaptive=None), RUN, "mapping", files)
    assert [o["kind"] for o in fixed][-1] == "DaskCluster"


def test_the_drivers_copy_of_the_certificates_is_private(tmp_path: Path) -> None:
    certificates = make_certificates(f"mapping/{RUN}")
    folder = write_private(certificates, tmp_path / "tls")
    assert stat.S_IMODE(folder.stat().st_mode) == 0o700
    for name, text in certificates.files().items():
        assert stat.S_IMODE((folder / name).stat().st_mode) == 0o600
        assert (folder / name).read_text() == text
    args = client_security(folder).get_connection_args("client")
    assert args["require_encryption"] is True and isinstance(args["ssl_context"], ssl.SSLContext)


@pytest.mark.asyncio
async def test_the_objects_are_created_on_the_api_and_deleted_in_reverse(tmp_path: Path) -> None:
    import kr8s

    files = make_certificates(f"mapping/{RUN}").files()
    objects = cluster_objects(compute(), RUN, "mapping", files, {})
    async with api_server() as (server, url):
        kubeconfig = write_kubeconfig(tmp_path / "kubeconfig", url, "a-token", "mapping")

        def create_then_close() -> list[Any]:
            api = kr8s.api(kubeconfig=str(kubeconfig))
            with contextlib.ExitStack() as stack:
                create_objects(api, objects, stack)
                return [
                    stored(server, RESOURCES[o["kind"]], "mapping", o["metadata"]["name"])
                    for o in objects
                ]

        created = await asyncio.to_thread(create_then_close)
        for body, seen in zip(objects, created, strict=True):
            assert seen is not None, body["kind"]
            for key in ("spec", "stringData", "type"):
                assert seen.get(key) == body.get(key), (body["kind"], key)
            assert seen["metadata"]["labels"] == body["metadata"]["labels"]
        for body in objects:
            assert stored(server, RESOURCES[body["kind"]], "mapping", body["metadata"]["name"]) is (
                None
            )
        verbs = [
            (a.verb, a.resource)
            for a in server.accesses("a-token")
            if a.verb in ("create", "delete")
        ]
        made = ["secrets", "networkpolicies", "networkpolicies", "daskclusters", "daskautoscalers"]
        assert verbs == [("create", r) for r in made] + [("delete", r) for r in made[::-1]]


@pytest.mark.asyncio
async def test_a_scheduler_that_never_gets_ready_is_a_clear_error_and_leaves_nothing(
    tmp_path: Path,
) -> None:
    """The emulator runs no controller: no scheduler pod ever gets ready. The namespace comes
    from the kubeconfig when compute.kubernetes names none."""
    async with api_server() as (server, url):
        kubeconfig = write_kubeconfig(tmp_path / "kubeconfig", url, "a-token", "teams")
        settings = compute(namespace=None, adaptive=None, connect_timeout_s=1.0)

        def start() -> None:
            with closed_cluster(settings, RUN, {}, kubeconfig=str(kubeconfig)):
                raise AssertionError("no client without a scheduler")

        with pytest.raises(ComputeError) as caught:
            await asyncio.to_thread(start)
        message = str(caught.value)
        assert "teams/sitsflow-france-2024" in message and "Fix:" in message
        accesses = server.accesses("a-token")
        created = [a for a in accesses if a.verb == "create"]
        deleted = [a for a in accesses if a.verb == "delete"]
        assert {a.namespace for a in created} == {"teams"}
        assert [a.resource for a in deleted] == [a.resource for a in created][::-1]
        assert isinstance(created[0], Access) and created[0].resource == "secrets"
        for kind, name in (
            ("Secret", "sitsflow-france-2024-dask-tls"),
            ("NetworkPolicy", "sitsflow-france-2024-scheduler-policy"),
            ("DaskCluster", "sitsflow-france-2024"),
        ):
            assert stored(server, RESOURCES[kind], "teams", name) is None


def test_a_real_scheduler_with_the_runs_settings_accepts_the_drivers_security(
    tmp_path: Path,
) -> None:
    certificates = make_certificates(f"mapping/{RUN}")
    files = certificates.files()
    secret, *_, cluster = cluster_objects(compute(adaptive=None), RUN, "mapping", files)
    # The scheduler reads the Secret where the pod mounts it; the driver its private copy.
    mounted = write(secret["stringData"], tmp_path / "mounted")
    (container,) = cluster["spec"]["scheduler"]["spec"]["containers"]
    with start_scheduler(container, mounted, tmp_path) as address:
        with pytest.raises(OSError):  # a plain client is refused
            Client(f"tcp://{address}", timeout=5, security=Security())
        # As through the port-forward: tls://127.0.0.1:<port>, the chain checked, not the host.
        security = client_security(write_private(certificates, tmp_path / "driver"))
        with Client(f"tls://{address}", timeout=10, security=security) as client:
            assert client.scheduler_info()["address"] == f"tls://{address}"


def scheduler_pod(name: str, cluster: str, ready: str) -> dict[str, Any]:
    """A scheduler pod as the dask-kubernetes controller labels it, ready or not."""
    meta = {"dask.org/component": "scheduler", "dask.org/cluster-name": cluster}
    return {
        "apiVersion": "v1",
        "kind": "Pod",
        "metadata": {"name": name, "namespace": "mapping", "labels": meta},
        "spec": {"containers": [{"name": "scheduler", "image": "x"}]},
        "status": {
            "phase": "Running",
            "conditions": [
                {"type": kind, "status": ready} for kind in ("ContainersReady", "Ready")
            ],
        },
    }


SCHEDULER_SERVICE = {
    "apiVersion": "v1",
    "kind": "Service",
    "metadata": {"name": "sitsflow-france-2024-scheduler", "namespace": "mapping"},
    "spec": {
        "selector": {"dask.org/cluster-name": "sitsflow-france-2024"},
        "ports": [{"name": "tcp-comm", "port": 8786}],
    },
}


def play_the_controller(api: Any, *objects: dict[str, Any]) -> None:
    """Create what the dask-kubernetes controller (and the kubelet: status) would."""
    import kr8s

    kinds = {"Pod": kr8s.objects.Pod, "Service": kr8s.objects.Service}
    for body in objects:
        obj = kinds[body["kind"]](body, api=api)
        obj.create()
        if "status" in body:
            obj.patch({"status": body["status"]}, subresource="status")


@pytest.mark.asyncio
async def test_the_driver_waits_for_a_ready_scheduler_pod_of_its_own_cluster(
    tmp_path: Path,
) -> None:
    """A pod that is not ready, or another cluster's, is not waited for; the run's ready one
    is."""
    import kr8s

    async with api_server() as (_, url):
        kubeconfig = write_kubeconfig(tmp_path / "kubeconfig", url, "a-token", "mapping")

        def wait(*objects: dict[str, Any]) -> str:
            api = kr8s.api(kubeconfig=str(kubeconfig))
            play_the_controller(api, *objects)
            return str(wait_for_scheduler(api, RUN, "mapping", timeout=1.0).name)

        others = (
            SCHEDULER_SERVICE,
            scheduler_pod("starting", "sitsflow-france-2024", "False"),
            scheduler_pod("another-run", "sitsflow-other", "True"),
        )
        with pytest.raises(ComputeError):
            await asyncio.to_thread(wait, *others)
        ready = scheduler_pod("scheduler", "sitsflow-france-2024", "True")
        assert await asyncio.to_thread(wait, ready) == "sitsflow-france-2024-scheduler"


@pytest.mark.asyncio
async def test_the_driver_reaches_its_closed_scheduler_through_the_port_forward(
    tmp_path: Path,
) -> None:
    """End to end but for the pods: the run creates its objects on the API; the test plays the
    controller with a REAL scheduler started from the DaskCluster the run created, with the
    certificates of the Secret the run created; the run's client gets through the API's
    port-forward on TLS with its own copy of them; everything is deleted at the end."""
    import kr8s

    async with api_server() as (server, url):
        kubeconfig = write_kubeconfig(tmp_path / "kubeconfig", url, "a-token", "mapping")
        settings = compute(adaptive=None, connect_timeout_s=15.0)
        names = {
            "Secret": "sitsflow-france-2024-dask-tls",
            "DaskCluster": "sitsflow-france-2024",
            "NetworkPolicy": "sitsflow-france-2024-scheduler-policy",
        }

        def drive() -> dict[str, Any]:
            with closed_cluster(settings, RUN, {}, kubeconfig=str(kubeconfig)) as client:
                info = client.scheduler_info()
                return {"address": client.scheduler.address, "id": info["id"]}

        driver = asyncio.create_task(asyncio.to_thread(drive))
        for _ in range(300):
            if stored(server, RESOURCES["DaskCluster"], "mapping", names["DaskCluster"]):
                break
            await asyncio.sleep(0.1)
        secret = stored(server, RESOURCES["Secret"], "mapping", names["Secret"])
        cluster = stored(server, RESOURCES["DaskCluster"], "mapping", names["DaskCluster"])
        mounted = write(secret["stringData"], tmp_path / "mounted")
        (container,) = cluster["spec"]["scheduler"]["spec"]["containers"]
        with contextlib.ExitStack() as stack:
            scheduler = start_scheduler(container, mounted, tmp_path)
            address = await asyncio.to_thread(stack.enter_context, scheduler)
            server.forwards["mapping", "scheduler"] = int(address.rsplit(":", 1)[1])
            ready = scheduler_pod("scheduler", "sitsflow-france-2024", "True")

            def controller() -> None:  # kr8s' blocking API: off the emulator's loop
                play_the_controller(kr8s.api(kubeconfig=str(kubeconfig)), SCHEDULER_SERVICE, ready)

            await asyncio.to_thread(controller)
            seen = await asyncio.wait_for(driver, 40)
        assert seen["address"].startswith("tls://127.0.0.1:")
        assert seen["id"].startswith("Scheduler-")
        forwarded = [a for a in server.accesses("a-token") if a.resource == "pods/portforward"]
        assert forwarded and {a.namespace for a in forwarded} == {"mapping"}
        for kind, name in names.items():
            assert stored(server, RESOURCES[kind], "mapping", name) is None, kind
