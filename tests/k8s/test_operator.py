"""The operator against an in-memory Kubernetes API on 127.0.0.1 (kmock): kopf watches SitsRuns
there, creates the children through HTTP, and the tests play the Job controller's part.

The operator authenticates with its own token, so the emulator can tell its requests from the
test's: after every test, each request it sent must be allowed by the operator Role that the real
helm renders from the chart (a new API call without its RBAC rule fails here, not with a 403 in a
cluster), and one scenario that makes every call checks that the Role grants nothing more.
"""

from __future__ import annotations

import asyncio
import contextlib
import copy
import threading
import warnings
from collections.abc import AsyncIterator, Callable
from pathlib import Path
from typing import Any

import aiohttp
import kopf
import pytest
import pytest_asyncio
import yaml

from pipeline.k8s.config import OperatorConfig
from pipeline.k8s.operator import RETRY_DELAYS, run_operator
from tests.k8s.emulator import ApiServer, api_server, stored, write_kubeconfig
from tests.k8s.rbac import Access, allows, granted
from tests.k8s.tools import find_tool, helm_runner, in_ci, missing, render

REPO = Path(__file__).resolve().parents[2]
DEMO_RUN = REPO / "deploy" / "examples" / "demo-run.yaml"
NS = "runs"
RUNS = "sitsflow.dev/v1alpha1/sitsruns"
JOBS = "batch/v1/jobs"
CLUSTERS = "kubernetes.dask.org/v1/daskclusters"
CONFIG_MAPS = "v1/configmaps"
SECRETS = "v1/secrets"
POLICIES = "networking.k8s.io/v1/networkpolicies"
CONFIG = OperatorConfig(
    image="registry.example.org/sitsflow:test",
    credentials_secret="s3-credentials",
    env={"AWS_REGION": "eu-west-3"},
    poll_seconds=0.2,
)
TOKEN = "operator-service-account-token"
# Granted by the Role without being a request the operator sends: the API server's
# OwnerReferencesPermissionEnforcement admission checks it when a child's ownerReference sets
# blockOwnerDeletion on its SitsRun.
NOT_A_REQUEST = {("update", "sitsflow.dev", "sitsruns/finalizers")}
# Sent in a real cluster but not seen here: kopf posts its handler logs as core v1 Events, and
# its event poster posts none to the emulator.
NOT_SEEN_HERE = {("create", "", "events")}

pytestmark = pytest.mark.asyncio


class Cluster:
    """The emulated API server, a client to it, and helpers to wait for its state."""

    def __init__(self, server: ApiServer, url: str, session: aiohttp.ClientSession) -> None:
        self.server, self.url, self.session = server, url, session

    def get(self, resource: str, name: str) -> Any:
        return stored(self.server, resource, NS, name)

    async def request(self, method: str, path: str, body: Any = None, merge: bool = False) -> Any:
        headers = {"Content-Type": "application/merge-patch+json"} if merge else {}
        async with self.session.request(
            method, self.url + path, json=body, headers=headers
        ) as response:
            assert response.status < 300, await response.text()
            return await response.json(content_type=None)

    async def apply(self, run: dict[str, Any]) -> dict[str, Any]:
        return dict(
            await self.request("POST", f"/apis/sitsflow.dev/v1alpha1/namespaces/{NS}/sitsruns", run)
        )

    async def wait_for(self, what: str, check: Callable[[], Any], timeout: float = 15.0) -> Any:
        deadline = asyncio.get_running_loop().time() + timeout
        while True:
            value = check()
            if value:
                return value
            if asyncio.get_running_loop().time() > deadline:
                raise AssertionError(f"timed out waiting for {what}")
            await asyncio.sleep(0.05)

    def accesses(self) -> list[Access]:
        """What the operator asked for so far (its requests, as RBAC sees them)."""
        return self.server.accesses(TOKEN)

    def status(self, name: str) -> dict[str, Any]:
        run = self.get(RUNS, name)
        return dict(run.get("status") or {}) if run else {}

    async def start_pods(
        self, run: str, workers: int = 2, status: dict[str, Any] | None = None
    ) -> None:
        """Play the dask-kubernetes controller and the kubelet: the run's scheduler and worker
        pods (labelled as the shared builder labels them), Running unless ``status`` says
        otherwise (for the workers)."""
        running = {"phase": "Running", "conditions": [{"type": "Ready", "status": "True"}]}
        pods = [("scheduler", f"{run}-dask-scheduler", running)]
        pods += [
            ("worker", f"{run}-dask-default-worker-{i}", status or running) for i in range(workers)
        ]
        for component, name, pod_status in pods:
            labels = {"sitsflow.dev/run": run, "app.kubernetes.io/component": component}
            pod = {"apiVersion": "v1", "kind": "Pod", "metadata": {"name": name, "labels": labels}}
            if self.get("v1/pods", name) is None:
                await self.request("POST", f"/api/v1/namespaces/{NS}/pods", pod)
            await self.request(
                "PATCH",
                f"/api/v1/namespaces/{NS}/pods/{name}/status",
                {"status": pod_status},
                merge=True,
            )


@pytest.fixture(scope="module")
def operator_role(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any] | None:
    """The operator's Role in NS as the real helm renders the chart (None without helm, outside
    CI: the operator tests still run, without the RBAC check)."""
    binary = find_tool("helm", install=True)
    if binary is None:
        if not in_ci():
            return None
        missing("helm is absent: the operator's requests cannot be checked against the chart")
    assert binary is not None
    helm = helm_runner(binary, tmp_path_factory.mktemp("helm-home"))
    objects = render(helm, "--set", f"watchNamespaces={{{NS}}}", namespace=NS)
    (role,) = (
        o for o in objects if o["kind"] == "Role" and o["metadata"]["name"].endswith("-operator")
    )
    return dict(role)


def check_against_role(server: ApiServer, role: dict[str, Any] | None) -> None:
    """Every request the operator sent is one its Role allows."""
    if role is None:
        warnings.warn(
            "helm is absent: the operator's requests were not checked against its Role",
            stacklevel=2,
        )
        return
    accesses = server.accesses(TOKEN)
    assert accesses, "no request carried the operator's token"
    denied = sorted({str(a) for a in accesses if not allows(role, a)})
    assert not denied, (
        "the operator sent requests that its Role (helm/sitsflow/templates/rbac.yaml) does not "
        "allow; a real API server answers them 403:\n  " + "\n  ".join(denied)
    )
    # Anything else is discovery (/api, /apis/GROUP/VERSION), open to every identity.
    assert all(p.startswith(("/api", "/version")) for p in server.non_resource_paths(TOKEN))


@contextlib.asynccontextmanager
async def operator_on(
    server: ApiServer, url: str, config: OperatorConfig, kubeconfig: Path
) -> AsyncIterator[None]:
    """The operator running against the emulator with its own token, stopped on exit.

    It runs in a thread with its own event loop, as in production (kopf owns its loop and
    cancels the tasks it did not start when it stops).
    """
    write_kubeconfig(kubeconfig, url, TOKEN, namespace=NS)
    stop, ready = threading.Event(), threading.Event()
    settings = kopf.OperatorSettings()
    settings.queueing.exit_timeout = 0.2  # the emulator's watch streams never end by themselves
    settings.background.instant_exit_timeout = 0.2
    operator = threading.Thread(
        target=lambda: asyncio.run(
            run_operator(
                config, [NS], kubeconfig=kubeconfig, stop=stop, ready=ready, settings=settings
            )
        ),
        name="sitsflow-operator",
    )
    operator.start()
    try:
        assert await asyncio.to_thread(ready.wait, 15), "the operator did not start"
        yield
    finally:
        stop.set()
        await asyncio.to_thread(operator.join, 15)
        assert not operator.is_alive(), "the operator did not stop"


@pytest_asyncio.fixture
async def cluster(tmp_path: Path, operator_role: dict[str, Any] | None) -> AsyncIterator[Cluster]:
    """The emulated API with the operator running against it; its requests checked after."""
    async with api_server() as (server, url), aiohttp.ClientSession() as session:
        async with operator_on(server, url, CONFIG, tmp_path / "kubeconfig"):
            yield Cluster(server, url, session)
        check_against_role(server, operator_role)


def demo_run(name: str = "slovenia-demo") -> dict[str, Any]:
    run = yaml.safe_load(DEMO_RUN.read_text())
    run["metadata"]["name"] = name
    return copy.deepcopy(run)


async def test_apply_creates_cluster_job_and_manifest(cluster: Cluster) -> None:
    run = await cluster.apply(demo_run())
    uid = run["metadata"]["uid"]
    job = await cluster.wait_for(
        "the driver Job", lambda: cluster.get(JOBS, "slovenia-demo-driver-g1")
    )
    dask = cluster.get(CLUSTERS, "slovenia-demo-dask")
    config_map = cluster.get(CONFIG_MAPS, "slovenia-demo-manifest-g1")
    assert dask is not None and config_map is not None
    # The closed scheduler: the run's certificates and its two NetworkPolicies.
    secret = cluster.get(SECRETS, "slovenia-demo-dask-tls")
    policies = [
        cluster.get(POLICIES, f"slovenia-demo-{p}-policy") for p in ("scheduler", "workers")
    ]
    assert secret is not None and all(policies)
    assert set(secret["stringData"]) == {"ca.crt", "tls.crt", "tls.key"}

    for child in (job, dask, config_map, secret, *policies):
        (owner,) = child["metadata"]["ownerReferences"]
        assert (owner["kind"], owner["name"], owner["uid"]) == ("SitsRun", "slovenia-demo", uid)
        assert child["metadata"]["labels"]["sitsflow.dev/run"] == "slovenia-demo"

    # The workers are sized by the run's compute section.
    worker = dask["spec"]["worker"]
    assert worker["replicas"] == 2
    (container,) = worker["spec"]["containers"]
    assert container["image"] == CONFIG.image
    assert container["args"][container["args"].index("--nthreads") + 1] == "1"
    assert container["args"][container["args"].index("--memory-limit") + 1] == "2GiB"
    assert container["resources"]["limits"]["memory"] == "2Gi"
    assert container["envFrom"] == [{"secretRef": {"name": "s3-credentials"}}]

    # The driver runs `sitsflow run` on the mounted manifest, against the cluster's scheduler.
    (driver,) = job["spec"]["template"]["spec"]["containers"]
    assert driver["args"] == ["sitsflow", "run", "/etc/sitsflow/run.yaml", "--resume"]
    env = {e["name"]: e.get("value") for e in driver["env"]}
    assert env["DASK_SCHEDULER_ADDRESS"] == "tls://slovenia-demo-dask-scheduler.runs.svc:8786"
    volumes = {v["name"]: v for v in job["spec"]["template"]["spec"]["volumes"]}
    assert volumes["manifest"]["configMap"]["name"] == "slovenia-demo-manifest-g1"
    manifest = yaml.safe_load(config_map["data"]["run.yaml"])
    assert manifest["metadata"]["name"] == "slovenia-demo"
    assert manifest["spec"]["outputs"] == run["spec"]["outputs"]

    status = await cluster.wait_for(
        "the Pending status",
        lambda: (
            cluster.status("slovenia-demo").get("phase") == "Pending"
            and cluster.status("slovenia-demo")
        ),
    )
    assert status["driverJob"] == "slovenia-demo-driver-g1"
    assert status["daskCluster"] == "slovenia-demo-dask"
    assert status["dashboard"] == "http://slovenia-demo-dask-scheduler.runs.svc:8787/status"
    assert status["outputs"]["labels"] == "s3://sitsflow-runs/slovenia-demo/maps/labels.tif"
    assert status["observedGeneration"] == 1


async def test_job_failure_fails_the_run_with_the_drivers_message(cluster: Cluster) -> None:
    await cluster.apply(demo_run())
    job = await cluster.wait_for(
        "the driver Job", lambda: cluster.get(JOBS, "slovenia-demo-driver-g1")
    )
    error = (
        "error: spec.reference: reference file 's3://bucket/ref.gpkg' does not exist. "
        "Fix: check the path."
    )
    # The Job controller's part: a pod ran and failed, the Job is marked Failed.
    pod = {
        "apiVersion": "v1",
        "kind": "Pod",
        "metadata": {
            "name": "slovenia-demo-driver-g1-x7k2p",
            "labels": job["spec"]["template"]["metadata"]["labels"]
            | {"batch.kubernetes.io/job-name": "slovenia-demo-driver-g1"},
        },
        "status": {
            "containerStatuses": [
                {
                    "name": "driver",
                    "state": {"terminated": {"exitCode": 2, "reason": "Error", "message": error}},
                }
            ]
        },
    }
    await cluster.request("POST", f"/api/v1/namespaces/{NS}/pods", pod)
    await cluster.request(
        "PATCH",
        f"/apis/batch/v1/namespaces/{NS}/jobs/slovenia-demo-driver-g1/status",
        {
            "status": {
                "failed": 1,
                "conditions": [
                    {
                        "type": "Failed",
                        "status": "True",
                        "reason": "PodFailurePolicy",
                        "message": "Container driver for pod runs/slovenia-demo-driver-g1-x7k2p "
                        "failed with exit code 2 matching FailJob rule at index 0",
                    },
                ],
            }
        },
        merge=True,
    )
    status = await cluster.wait_for(
        "the Failed phase",
        lambda: (
            cluster.status("slovenia-demo").get("phase") == "Failed"
            and cluster.status("slovenia-demo")
        ),
    )
    assert status["lastError"] == error
    assert status["message"].startswith("the driver failed: Container driver")
    assert "completionTime" in status
    # The workers are released at once; the Job stays for its logs.
    await cluster.wait_for(
        "the DaskCluster deletion", lambda: cluster.get(CLUSTERS, "slovenia-demo-dask") is None
    )
    assert cluster.get(JOBS, "slovenia-demo-driver-g1") is not None


async def test_job_success_makes_the_run_succeed(cluster: Cluster) -> None:
    await cluster.apply(demo_run())
    await cluster.wait_for("the driver Job", lambda: cluster.get(JOBS, "slovenia-demo-driver-g1"))
    await cluster.request(
        "PATCH",
        f"/apis/batch/v1/namespaces/{NS}/jobs/slovenia-demo-driver-g1/status",
        {"status": {"active": 1}},
        merge=True,
    )
    await cluster.start_pods("slovenia-demo")
    await cluster.wait_for(
        "Running", lambda: cluster.status("slovenia-demo").get("phase") == "Running"
    )
    await cluster.request(
        "PATCH",
        f"/apis/batch/v1/namespaces/{NS}/jobs/slovenia-demo-driver-g1/status",
        {
            "status": {
                "active": 0,
                "succeeded": 1,
                "conditions": [{"type": "Complete", "status": "True"}],
            }
        },
        merge=True,
    )
    status = await cluster.wait_for(
        "Succeeded",
        lambda: (
            cluster.status("slovenia-demo").get("phase") == "Succeeded"
            and cluster.status("slovenia-demo")
        ),
    )
    assert status["progress"] == "100%"
    assert status["outputs"]["report"] == "s3://sitsflow-runs/slovenia-demo/report/report.html"


async def test_delete_removes_every_child(cluster: Cluster) -> None:
    await cluster.apply(demo_run())
    await cluster.wait_for("the driver Job", lambda: cluster.get(JOBS, "slovenia-demo-driver-g1"))
    await cluster.wait_for(
        "the finalizer",
        lambda: (
            "sitsflow.dev/cleanup"
            in (cluster.get(RUNS, "slovenia-demo")["metadata"].get("finalizers") or [])
        ),
    )
    await cluster.request(
        "DELETE", f"/apis/sitsflow.dev/v1alpha1/namespaces/{NS}/sitsruns/slovenia-demo"
    )
    await cluster.wait_for("the run to go", lambda: cluster.get(RUNS, "slovenia-demo") is None)
    assert cluster.get(JOBS, "slovenia-demo-driver-g1") is None
    assert cluster.get(CLUSTERS, "slovenia-demo-dask") is None
    assert cluster.get(CONFIG_MAPS, "slovenia-demo-manifest-g1") is None
    assert cluster.get(SECRETS, "slovenia-demo-dask-tls") is None
    assert cluster.get(POLICIES, "slovenia-demo-scheduler-policy") is None


async def test_a_run_the_pods_could_not_read_or_write_is_refused_at_admission(
    cluster: Cluster,
) -> None:
    run = demo_run("local-run")
    run["spec"]["outputs"]["store"] = "/data/out"
    run["spec"]["reference"]["path"] = "reference/lulc.gpkg"
    await cluster.apply(run)
    status = await cluster.wait_for(
        "the Failed phase",
        lambda: (
            cluster.status("local-run").get("phase") == "Failed" and cluster.status("local-run")
        ),
    )
    error = status["lastError"]
    assert error.startswith("SitsRun runs/local-run cannot run in the cluster:")
    assert "spec.outputs.store: '/data/out' is a local path" in error
    assert "spec.reference.path: 'reference/lulc.gpkg' is a relative path" in error
    assert "s3://bucket/" in error and "compute.kubernetes.volumes" in error
    await asyncio.sleep(0.3)
    assert cluster.get(JOBS, "local-run-driver-g1") is None
    assert cluster.get(SECRETS, "local-run-dask-tls") is None


async def test_invalid_spec_fails_for_good_with_the_validation_message(cluster: Cluster) -> None:
    run = demo_run("bad-run")
    run["spec"]["period"] = {"start": "2017-12-31", "end": "2017-01-01"}
    run["spec"]["compute"]["chunk_size"] = 100
    await cluster.apply(run)
    status = await cluster.wait_for(
        "the Failed phase",
        lambda: cluster.status("bad-run").get("phase") == "Failed" and cluster.status("bad-run"),
    )
    assert (
        "SitsRun runs/bad-run is not a valid SitsRun manifest (2 problem(s))" in status["lastError"]
    )
    assert "spec.period: the period is empty" in status["lastError"]
    assert "spec.compute.chunk_size" in status["lastError"] and "try 96" in status["lastError"]
    assert status["message"] == "the spec is invalid: fix it and apply it again"
    await asyncio.sleep(0.5)  # a few poll periods: nothing is created, nothing retried
    assert cluster.get(JOBS, "bad-run-driver-g1") is None
    assert cluster.get(CLUSTERS, "bad-run-dask") is None


async def test_a_failed_api_call_is_retried_and_creation_stays_idempotent(cluster: Cluster) -> None:
    # The API server answers 503 to the first Job creation, after storing the Job (as when a
    # request times out after the write). The retry must accept the Job it finds, not fail.
    jobs_post = cluster.server[f"post /apis/batch/v1/namespaces/{NS}/jobs"]
    jobs_post[:1] << 503
    await cluster.apply(demo_run())
    status = await cluster.wait_for(
        "the Pending status after a retry",
        lambda: (
            cluster.status("slovenia-demo").get("driverJob") and cluster.status("slovenia-demo")
        ),
    )
    assert status["phase"] == "Pending"
    assert len(jobs_post) >= 2  # retried
    assert cluster.get(JOBS, "slovenia-demo-driver-g1") is not None
    assert "lastError" not in status


async def test_fixing_an_invalid_spec_starts_the_run(cluster: Cluster) -> None:
    run = demo_run("fixed-run")
    run["spec"]["compute"]["chunk_size"] = 100
    await cluster.apply(run)
    await cluster.wait_for(
        "the Failed phase", lambda: cluster.status("fixed-run").get("phase") == "Failed"
    )
    await cluster.request(
        "PATCH",
        f"/apis/sitsflow.dev/v1alpha1/namespaces/{NS}/sitsruns/fixed-run",
        {"spec": {"compute": {"chunk_size": 64}}},
        merge=True,
    )
    job = await cluster.wait_for(
        "the driver Job of generation 2", lambda: cluster.get(JOBS, "fixed-run-driver-g2")
    )
    assert job["metadata"]["labels"]["sitsflow.dev/run"] == "fixed-run"
    status = await cluster.wait_for(
        "the Pending phase",
        lambda: (
            cluster.status("fixed-run").get("phase") == "Pending" and cluster.status("fixed-run")
        ),
    )
    assert status["observedGeneration"] == 2
    assert "lastError" not in status


async def test_a_driver_that_cannot_start_says_why(cluster: Cluster) -> None:
    await cluster.apply(demo_run())
    job = await cluster.wait_for(
        "the driver Job", lambda: cluster.get(JOBS, "slovenia-demo-driver-g1")
    )
    pod = {
        "apiVersion": "v1",
        "kind": "Pod",
        "metadata": {
            "name": "slovenia-demo-driver-g1-abcde",
            "labels": job["spec"]["template"]["metadata"]["labels"]
            | {"batch.kubernetes.io/job-name": "slovenia-demo-driver-g1"},
        },
        "status": {
            "containerStatuses": [
                {
                    "name": "driver",
                    "state": {
                        "waiting": {
                            "reason": "CreateContainerConfigError",
                            "message": 'secret "s3-credentials" not found',
                        }
                    },
                }
            ]
        },
    }
    await cluster.request("POST", f"/api/v1/namespaces/{NS}/pods", pod)
    status = await cluster.wait_for(
        "the reason",
        lambda: (
            "cannot start" in cluster.status("slovenia-demo").get("message", "")
            and cluster.status("slovenia-demo")
        ),
    )
    assert status["phase"] == "Pending"
    assert 'secret "s3-credentials" not found' in status["lastError"]


async def test_an_adaptive_run_gets_an_autoscaler_that_goes_with_it(cluster: Cluster) -> None:
    run = demo_run("adaptive")
    run["spec"]["compute"] |= {
        "cluster": "kubernetes",
        "kubernetes": {"image": CONFIG.image, "scheduler_memory": "3GiB"},
        "adaptive": {"minimum": 1, "maximum": 6},
    }
    await cluster.apply(run)
    scaler = await cluster.wait_for(
        "the autoscaler",
        lambda: cluster.get("kubernetes.dask.org/v1/daskautoscalers", "adaptive-dask"),
    )
    assert scaler["spec"] == {"cluster": "adaptive-dask", "minimum": 1, "maximum": 6}
    dask = await cluster.wait_for("the cluster", lambda: cluster.get(CLUSTERS, "adaptive-dask"))
    (scheduler,) = dask["spec"]["scheduler"]["spec"]["containers"]
    assert scheduler["resources"]["limits"]["memory"] == "3Gi"
    await cluster.wait_for("the Job", lambda: cluster.get(JOBS, "adaptive-driver-g1"))
    await cluster.request(
        "DELETE", f"/apis/sitsflow.dev/v1alpha1/namespaces/{NS}/sitsruns/adaptive"
    )
    await cluster.wait_for(
        "the autoscaler to go",
        lambda: cluster.get("kubernetes.dask.org/v1/daskautoscalers", "adaptive-dask") is None,
    )


async def test_a_run_choosing_another_image_is_refused(cluster: Cluster) -> None:
    run = demo_run("own-image")
    run["spec"]["compute"] |= {
        "cluster": "kubernetes",
        "kubernetes": {"image": "docker.io/someone/else:latest"},
    }
    await cluster.apply(run)
    status = await cluster.wait_for(
        "the Failed phase",
        lambda: (
            cluster.status("own-image").get("phase") == "Failed" and cluster.status("own-image")
        ),
    )
    assert "spec.compute.kubernetes.image is 'docker.io/someone/else:latest'" in status["lastError"]
    assert cluster.get(JOBS, "own-image-driver-g1") is None


async def test_the_role_grants_exactly_what_the_operator_calls(
    tmp_path: Path, operator_role: dict[str, Any] | None
) -> None:
    """One run through every path that calls the API: a retried create, a failed driver, a rerun
    with a new size (the DaskCluster and its autoscaler patched), then deletion. Every request
    must be allowed (least privilege the other way round: every granted verb is used)."""
    if operator_role is None:
        missing("helm is absent: the chart's Role cannot be rendered")
    assert operator_role is not None
    keep = CONFIG.model_copy(update={"delete_cluster_when_done": False})
    async with api_server() as (server, url), aiohttp.ClientSession() as session:
        # A create answered 503 after the write: the retry finds the ConfigMap and reads it.
        server[f"post /api/v1/namespaces/{NS}/configmaps"][:1] << 503
        async with operator_on(server, url, keep, tmp_path / "kubeconfig"):
            cluster = Cluster(server, url, session)
            run = demo_run("every-call")
            run["spec"]["compute"] |= {"adaptive": {"minimum": 1, "maximum": 4}}
            await cluster.apply(run)
            await cluster.wait_for("the Job", lambda: cluster.get(JOBS, "every-call-driver-g1"))
            await cluster.request(
                "PATCH",
                f"/apis/batch/v1/namespaces/{NS}/jobs/every-call-driver-g1/status",
                {"status": {"failed": 1, "conditions": [{"type": "Failed", "status": "True"}]}},
                merge=True,
            )
            await cluster.wait_for(
                "Failed", lambda: cluster.status("every-call").get("phase") == "Failed"
            )
            await cluster.request(
                "PATCH",
                f"/apis/sitsflow.dev/v1alpha1/namespaces/{NS}/sitsruns/every-call",
                {"spec": {"compute": {"workers": 3, "adaptive": {"maximum": 8}}}},
                merge=True,
            )
            await cluster.wait_for("the rerun", lambda: cluster.get(JOBS, "every-call-driver-g2"))
            scaler = cluster.get("kubernetes.dask.org/v1/daskautoscalers", "every-call-dask")
            assert scaler["spec"]["maximum"] == 8  # patched in place
            await cluster.request(
                "DELETE", f"/apis/sitsflow.dev/v1alpha1/namespaces/{NS}/sitsruns/every-call"
            )
            await cluster.wait_for("the run to go", lambda: cluster.get(RUNS, "every-call") is None)
        check_against_role(server, operator_role)
    used = {(a.verb, a.group, a.resource) for a in server.accesses(TOKEN)}
    unused = granted(operator_role) - used - NOT_A_REQUEST - NOT_SEEN_HERE
    assert not unused, f"the Role grants what the operator never calls: {sorted(unused)}"


def forbidden(message: str) -> dict[str, Any]:
    """A 403 Status as the API server sends it."""
    return {
        "kind": "Status",
        "apiVersion": "v1",
        "status": "Failure",
        "message": message,
        "reason": "Forbidden",
        "code": 403,
    }


async def test_a_verb_the_role_lacks_fails_the_run_with_what_to_grant(cluster: Cluster) -> None:
    # What a real API server answers when the operator's Role lacks `list` on pods: a retry asks
    # the same question and gets the same answer, forever. (A read, because the emulator stores
    # what a refused write carries.)
    pods = cluster.server[f"get /api/v1/namespaces/{NS}/pods"]
    (
        pods
        << 403
        << forbidden(
            'pods is forbidden: User "system:serviceaccount:sitsflow:sitsflow" cannot list '
            'resource "pods" in API group "" in the namespace "runs"'
        )
    )
    await cluster.apply(demo_run())
    status = await cluster.wait_for(
        "the Failed phase",
        lambda: (
            cluster.status("slovenia-demo").get("phase") == "Failed"
            and cluster.status("slovenia-demo")
        ),
    )
    assert status["message"] == "the operator is not allowed to do this: see lastError"
    error = status["lastError"]
    assert error.startswith("the operator may not list pods: its Role lacks that verb (403")
    assert "helm upgrade" in error and "'list' on 'pods'" in error
    assert "delete the SitsRun and apply it again" in error

    def pod_listings() -> int:
        return sum(a.verb == "list" and a.resource == "pods" for a in cluster.accesses())

    # Not retried: a temporary error would be, after RETRY_DELAYS[0] seconds.
    sent = pod_listings()
    await asyncio.sleep(RETRY_DELAYS[0] + 0.5)
    assert pod_listings() == sent


async def test_a_403_from_an_exceeded_quota_is_retried(cluster: Cluster) -> None:
    # Not RBAC: a ResourceQuota refuses the Job until other runs free their share.
    jobs_post = cluster.server[f"post /apis/batch/v1/namespaces/{NS}/jobs"]
    (
        jobs_post[:1]
        << 403
        << forbidden(
            'jobs.batch "slovenia-demo-driver-g1" is forbidden: exceeded quota: runs, requested: '
            "count/jobs.batch=1, used: count/jobs.batch=4, limited: count/jobs.batch=4"
        )
    )
    await cluster.apply(demo_run())
    status = await cluster.wait_for(
        "the Pending status after a retry",
        lambda: (
            cluster.status("slovenia-demo").get("driverJob") and cluster.status("slovenia-demo")
        ),
        timeout=20,
    )
    assert status["phase"] == "Pending" and "lastError" not in status
    assert len(jobs_post) >= 2
