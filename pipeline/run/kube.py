"""A run's own closed DaskCluster on Kubernetes (``compute.cluster: kubernetes``), started from
wherever the driver runs: a workstation, a CI job, a notebook pod.

Closed as the operator's runs are (``pipeline.k8s``): certificates made for the run
(``pipeline.run.certificates``) in a Secret, dask's TLS settings and that Secret in every pod
(``PodSettings.tls_secret``), and NetworkPolicies that let only the run's workers reach its
scheduler port. The driver presents the same certificate (a ``distributed.security.Security``
on files in a private temporary folder) through a port-forward to the scheduler's Service.

Not through dask-kubernetes' ``KubeCluster``: it takes no ``security=``, hands out ``tcp://``
addresses only, and waits for the scheduler with a bare ``rpc`` that never gets through a TLS
scheduler (it retries forever). So this module does the few steps itself, with kr8s (the client
dask-kubernetes uses): the Secret, the policies, the DaskCluster (and its DaskAutoscaler) are
created in that order and deleted in the reverse order when the run closes or fails to start;
the dask-kubernetes controller still makes the pods and the Service from the DaskCluster.

The port-forward is always used, also from inside the cluster: it goes through the API server
and the kubelet, which NetworkPolicies do not filter, while a direct connection from a pod that
is not one of the run's would be refused by the policy.
"""

from __future__ import annotations

import contextlib
import shutil
import socket
import tempfile
import time
from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import Any

from pipeline.errors import ComputeError
from pipeline.run.certificates import client_security, make_certificates, write_private
from pipeline.run.config import ComputeConfig
from pipeline.run.dask_spec import (
    DASHBOARD_PORT,
    RUN_LABEL,
    SCHEDULER_PORT,
    ClusterSize,
    PodSettings,
    Volume,
    build_dask_cluster_spec,
    labels,
    scheduler_resources,
    worker_environment,
)

MANAGED_BY = "sitsflow"  # a run's own cluster (the operator's say sitsflow-operator)
DASK_API = "kubernetes.dask.org/v1"
COMPONENT = "app.kubernetes.io/component"
POLL_S = 1.0


def cluster_name(run: str) -> str:
    """The DaskCluster's name: the run's, prefixed, within Kubernetes' 63 characters."""
    return f"sitsflow-{run}"[:63].rstrip("-")


def tls_secret_name(run: str) -> str:
    return f"{cluster_name(run)}-dask-tls"


def scheduler_service(run: str) -> str:
    """The Service the dask-kubernetes controller makes for the DaskCluster's scheduler."""
    return f"{cluster_name(run)}-scheduler"


def kubernetes_cluster_spec(
    compute: ComputeConfig,
    run: str,
    env: Mapping[str, str] | None = None,
    *,
    tls_secret: str | None = None,
    namespace: str | None = None,
) -> dict[str, Any]:
    """The DaskCluster resource for ``compute`` (pure: no cluster is contacted), from the
    builder the operator uses too, with the driver's shipped settings in every pod.

    ``tls_secret``: the Secret with the run's certificates, mounted in the scheduler and the
    workers, which then speak TLS only (the workers dial the Service in ``namespace``, by
    default ``compute.kubernetes.namespace``)."""
    k8s = compute.kubernetes
    if k8s is None:
        raise ValueError("compute.kubernetes is needed for a Kubernetes cluster")
    namespace = namespace or k8s.namespace
    address = None
    if tls_secret:
        if not namespace:
            raise ValueError("a TLS cluster needs its namespace (the workers dial the Service)")
        address = f"tls://{scheduler_service(run)}.{namespace}.svc:{SCHEDULER_PORT}"
    return build_dask_cluster_spec(
        cluster_name(run),
        instance=run,
        managed_by=MANAGED_BY,
        size=ClusterSize(
            workers=compute.workers,
            threads_per_worker=compute.threads_per_worker,
            memory_limit=compute.memory_limit,
            scheduler_resources=scheduler_resources(k8s.scheduler_memory),
        ),
        pods=PodSettings(
            image=k8s.image,
            image_pull_policy=k8s.image_pull_policy,
            service_account=k8s.service_account,
            credentials_secret=k8s.credentials_secret,
            env=worker_environment({}) if env is None else env,
            # The workers read and write the claims (the driver runs where it was started).
            volumes=tuple(Volume(v.claim, v.mount_path, v.read_only) for v in k8s.volumes),
            tls_secret=tls_secret,
        ),
        namespace=namespace,
        scheduler_address=address,
    )


def _metadata(run: str, name: str, namespace: str, component: str) -> dict[str, Any]:
    return {"name": name, "namespace": namespace, "labels": labels(run, component, MANAGED_BY)}


def run_pods(run: str, *components: str) -> dict[str, Any]:
    """A selector for this run's pods of these components (``managed-by`` keeps apart an
    operator's SitsRun of the same name)."""
    return {
        "matchLabels": {RUN_LABEL: run, "app.kubernetes.io/managed-by": MANAGED_BY},
        "matchExpressions": [{"key": COMPONENT, "operator": "In", "values": list(components)}],
    }


def network_policies(run: str, namespace: str) -> list[dict[str, Any]]:
    """The scheduler port only from the run's workers (the driver comes through the
    port-forward), the dashboard only from the run's pods; the workers only from the run's
    scheduler and workers."""

    def policy(suffix: str, selector: dict[str, Any], ingress: list[Any]) -> dict[str, Any]:
        name = f"{cluster_name(run)}-{suffix}"
        return {
            "apiVersion": "networking.k8s.io/v1",
            "kind": "NetworkPolicy",
            "metadata": _metadata(run, name, namespace, "network-policy"),
            "spec": {"podSelector": selector, "policyTypes": ["Ingress"], "ingress": ingress},
        }

    tcp = "TCP"
    scheduler = policy(
        "scheduler-policy",
        run_pods(run, "scheduler"),
        [
            {
                "from": [{"podSelector": run_pods(run, "worker")}],
                "ports": [{"protocol": tcp, "port": SCHEDULER_PORT}],
            },
            {
                "from": [{"podSelector": run_pods(run, "scheduler", "worker")}],
                "ports": [{"protocol": tcp, "port": DASHBOARD_PORT}],
            },
        ],
    )
    workers = policy(
        "workers-policy",
        run_pods(run, "worker"),
        [{"from": [{"podSelector": run_pods(run, "scheduler", "worker")}]}],
    )
    return [scheduler, workers]


def cluster_objects(
    compute: ComputeConfig,
    run: str,
    namespace: str,
    files: Mapping[str, str],
    env: Mapping[str, str] | None = None,
) -> list[dict[str, Any]]:
    """What the run creates, in creation order: the certificates' Secret (before any pod
    mounts it), the NetworkPolicies (before any pod listens), the DaskCluster, and with
    ``compute.adaptive`` its DaskAutoscaler."""
    name = cluster_name(run)
    secret = {
        "apiVersion": "v1",
        "kind": "Secret",
        "metadata": _metadata(run, tls_secret_name(run), namespace, "dask-tls"),
        "type": "kubernetes.io/tls",
        "immutable": True,
        "stringData": dict(files),
    }
    cluster = kubernetes_cluster_spec(
        compute, run, env, tls_secret=tls_secret_name(run), namespace=namespace
    )
    objects = [secret, *network_policies(run, namespace), cluster]
    if compute.adaptive is not None:
        objects.append(
            {
                "apiVersion": DASK_API,
                "kind": "DaskAutoscaler",
                "metadata": {
                    **_metadata(run, name, namespace, "dask-autoscaler"),
                    "labels": {
                        **labels(run, "dask-autoscaler", MANAGED_BY),
                        "dask.org/cluster-name": name,
                    },
                },
                "spec": {
                    "cluster": name,
                    "minimum": compute.adaptive.minimum,
                    "maximum": compute.adaptive.maximum,
                },
            }
        )
    return objects


# --- talking to the cluster ---------------------------------------------------------------------


def _kr8s_object(api: Any, body: Mapping[str, Any]) -> Any:
    from kr8s.objects import NetworkPolicy, Secret, new_class

    kinds: dict[str, Any] = {"Secret": Secret, "NetworkPolicy": NetworkPolicy}
    kind = body["kind"]
    cls = kinds.get(kind) or new_class(kind, version=DASK_API, namespaced=True, asyncio=False)
    return cls(dict(body), api=api)


def create_objects(api: Any, objects: list[dict[str, Any]], stack: contextlib.ExitStack) -> None:
    """Create ``objects`` in order; each one's deletion goes on ``stack`` as soon as it exists
    (so a failure half-way deletes what was made, in the reverse order)."""
    for body in objects:
        obj = _kr8s_object(api, body)
        obj.create()
        stack.callback(_delete, obj)


def _delete(obj: Any) -> None:
    import kr8s

    with contextlib.suppress(kr8s.NotFoundError):
        obj.delete()


def wait_for_scheduler(api: Any, run: str, namespace: str, timeout: float) -> Any:
    """The scheduler's Service once a scheduler pod behind it is ready."""
    import kr8s
    from kr8s.objects import Pod, Service

    selector = {"dask.org/component": "scheduler", "dask.org/cluster-name": cluster_name(run)}
    deadline = time.monotonic() + timeout
    while True:
        pods = Pod.list(namespace=namespace, label_selector=selector, api=api)
        # The selector checked here too: the API server filters, a proxy or an emulator may not.
        ours = [p for p in pods if isinstance(p, Pod) and selector.items() <= p.labels.items()]
        if any(pod.ready() for pod in ours):
            with contextlib.suppress(kr8s.NotFoundError):
                return Service.get(scheduler_service(run), namespace=namespace, api=api)
        if time.monotonic() >= deadline:
            raise ComputeError(
                f"the scheduler of DaskCluster {namespace}/{cluster_name(run)} was not ready "
                f"after {timeout:.0f} s",
                fix=f"kubectl describe pods -n {namespace} -l dask.org/cluster-name="
                f"{cluster_name(run)} (image, Secret, resources), check that the dask-kubernetes "
                "operator runs, or raise compute.connect_timeout_s",
                field="compute.kubernetes",
            )
        time.sleep(POLL_S)


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def _wait_for_port(port: int, timeout: float) -> None:
    deadline = time.monotonic() + timeout
    while True:
        with socket.socket() as sock:
            if sock.connect_ex(("127.0.0.1", port)) == 0:
                return
        if time.monotonic() >= deadline:
            raise OSError(f"the port-forward to the scheduler did not open 127.0.0.1:{port}")
        time.sleep(0.1)


def _stop_forward(forward: Any) -> None:
    """Stop kr8s' port-forward. Its ``stop`` closes each listening server again, and an asyncio
    server closed twice (its loop already ended it) raises TypeError inside asyncio: the
    forward is stopped either way, so that is not an error of the run's."""
    with contextlib.suppress(TypeError):
        forward.stop()


@contextlib.contextmanager
def closed_cluster(
    compute: ComputeConfig,
    run: str,
    env: Mapping[str, str] | None = None,
    *,
    kubeconfig: str | None = None,
) -> Iterator[Any]:
    """A ``distributed.Client`` on the run's closed DaskCluster; everything made for it (the
    Kubernetes objects, the port-forward, the driver's copy of the certificates) is removed on
    exit, also when starting fails."""
    import kr8s
    from distributed import Client

    k8s = compute.kubernetes
    assert k8s is not None
    with contextlib.ExitStack() as stack:
        try:
            api = kr8s.api(kubeconfig=kubeconfig)
            namespace = k8s.namespace or str(api.namespace)
            certificates = make_certificates(f"{namespace}/{run}")
            files = certificates.files()
            # mkdtemp: 0700, this user's; the files inside 0600. Removed last.
            folder = Path(tempfile.mkdtemp(prefix="sitsflow-tls-"))
            stack.callback(shutil.rmtree, folder, True)
            security = client_security(write_private(certificates, folder))
            create_objects(api, cluster_objects(compute, run, namespace, files, env), stack)
            service = wait_for_scheduler(api, run, namespace, compute.connect_timeout_s)
            port = _free_port()
            forward = service.portforward(SCHEDULER_PORT, local_port=port)
            forward.start()
            stack.callback(_stop_forward, forward)
            _wait_for_port(port, compute.connect_timeout_s)
        except ComputeError:
            raise
        except Exception as exc:  # kubernetes clients raise many types; all mean "cannot start"
            raise ComputeError(
                f"the Kubernetes DaskCluster could not be started ({type(exc).__name__}: {exc})",
                fix="check the kubeconfig or in-cluster service account (it must create "
                "Secrets, NetworkPolicies and DaskClusters), that the dask-kubernetes operator "
                "is installed, and compute.kubernetes (image, namespace)",
                field="compute.kubernetes",
            ) from None
        try:
            client = Client(
                f"tls://127.0.0.1:{port}", security=security, timeout=compute.connect_timeout_s
            )
        except (OSError, TimeoutError) as exc:
            raise ComputeError(
                f"the scheduler of DaskCluster {namespace}/{cluster_name(run)} did not answer "
                f"on TLS through the port-forward ({type(exc).__name__}: {exc})",
                fix="check the scheduler pod's log (kubectl logs), or raise "
                "compute.connect_timeout_s",
                field="compute.kubernetes",
            ) from None
        stack.callback(client.close)
        yield client
