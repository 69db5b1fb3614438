"""Truthful status against the emulated API server: conditions over a run's life, Pending with
the reason when workers cannot be scheduled, and a spec edited while running either applied by a
resumed run or refused with a condition (never dropped)."""

from __future__ import annotations

from typing import Any

import pytest

from pipeline.k8s.conditions import condition, merge
from pipeline.k8s.status import cluster_state
from tests.k8s.test_operator import JOBS, NS, Cluster, demo_run

RUN = "slovenia-demo"
UNSCHEDULABLE = {
    "phase": "Pending",
    "conditions": [
        {
            "type": "PodScheduled",
            "status": "False",
            "reason": "Unschedulable",
            "message": "0/3 nodes are available: 3 Insufficient cpu.",
        }
    ],
}


def conditions(cluster: Cluster) -> dict[str, dict[str, Any]]:
    return {c["type"]: c for c in cluster.status(RUN).get("conditions") or []}


async def set_job(cluster: Cluster, job: str, status: dict[str, Any]) -> None:
    await cluster.request(
        "PATCH", f"/apis/batch/v1/namespaces/{NS}/jobs/{job}/status", {"status": status}, True
    )


async def edit(cluster: Cluster, spec: dict[str, Any]) -> None:
    await cluster.request(
        "PATCH",
        f"/apis/sitsflow.dev/v1alpha1/namespaces/{NS}/sitsruns/{RUN}",
        {"spec": spec},
        merge=True,
    )


def test_a_condition_keeps_its_transition_time_while_its_status_holds() -> None:
    first = merge(None, [condition("ClusterReady", False, "Starting", "starts", 1)], "T1")
    again = merge(first, [condition("ClusterReady", False, "Unschedulable", "no node", 1)], "T2")
    assert again[0]["lastTransitionTime"] == "T1" and again[0]["reason"] == "Unschedulable"
    ready = merge(again, [condition("ClusterReady", True, "WorkersRunning", "2 of 2", 1)], "T3")
    assert ready[0] == {
        "type": "ClusterReady",
        "status": "True",
        "reason": "WorkersRunning",
        "message": "2 of 2",
        "observedGeneration": 1,
        "lastTransitionTime": "T3",
    }
    both = merge(ready, [condition("Planned", True, "Accepted", "ok", 1)], "T4")
    assert [c["type"] for c in both] == ["Planned", "ClusterReady"]  # the documented order


def test_cluster_state_reads_the_daskcluster_and_its_pods() -> None:
    dask = {"spec": {"worker": {"replicas": 3}}, "status": {"phase": "Running"}}

    def pod(component: str, status: dict[str, Any]) -> dict[str, Any]:
        labels = {"app.kubernetes.io/component": component}
        return {"metadata": {"labels": labels}, "status": status}

    running = {"phase": "Running"}
    assert cluster_state(None, []).reason == "ClusterMissing"
    assert cluster_state(dask, [pod("scheduler", running)]).reason == "Starting"
    stuck = cluster_state(dask, [pod("scheduler", running), *[pod("worker", UNSCHEDULABLE)] * 3])
    assert (stuck.ready, stuck.reason, stuck.blocked) == (False, "Unschedulable", True)
    assert stuck.message.startswith("3 of 3 worker pods cannot be scheduled: 0/3 nodes")
    partly = cluster_state(
        dask, [pod("scheduler", running), pod("worker", running), pod("worker", UNSCHEDULABLE)]
    )
    assert partly.ready and partly.workers_running == 1
    assert "1 pod(s) cannot be scheduled" in partly.message
    pull = {
        "phase": "Pending",
        "containerStatuses": [
            {"state": {"waiting": {"reason": "ImagePullBackOff", "message": "not found"}}}
        ],
    }
    assert cluster_state(dask, [pod("worker", pull)]).reason == "ImagePullFailed"


@pytest.mark.asyncio
async def test_conditions_follow_a_run_from_plan_to_success(cluster: Cluster) -> None:
    run = await cluster.apply(demo_run())
    await cluster.wait_for("the driver Job", lambda: cluster.get(JOBS, f"{RUN}-driver-g1"))
    planned = await cluster.wait_for("Planned", lambda: conditions(cluster).get("Planned"))
    assert (planned["status"], planned["reason"], planned["observedGeneration"]) == (
        "True",
        "Accepted",
        run["metadata"]["generation"],
    )
    assert planned["lastTransitionTime"].endswith("Z")
    # The driver runs, but no worker yet: Pending, and the status says what it waits for.
    await set_job(cluster, f"{RUN}-driver-g1", {"active": 1})
    status = await cluster.wait_for(
        "the wait for workers",
        lambda: (
            "waits for workers" in str(cluster.status(RUN).get("message")) and cluster.status(RUN)
        ),
    )
    assert status["phase"] == "Pending"
    assert conditions(cluster)["ClusterReady"]["reason"] == "Starting"
    assert conditions(cluster)["Progressing"]["status"] == "True"
    await cluster.start_pods(RUN)
    await cluster.wait_for("Running", lambda: cluster.status(RUN).get("phase") == "Running")
    ready = conditions(cluster)["ClusterReady"]
    assert (ready["status"], ready["reason"], ready["message"]) == (
        "True",
        "WorkersRunning",
        "2 of 2 workers running",
    )
    await set_job(
        cluster,
        f"{RUN}-driver-g1",
        {"active": 0, "succeeded": 1, "conditions": [{"type": "Complete", "status": "True"}]},
    )
    await cluster.wait_for("Succeeded", lambda: cluster.status(RUN).get("phase") == "Succeeded")
    final = conditions(cluster)
    assert final["Succeeded"]["status"] == "True" and final["Succeeded"]["reason"] == "Completed"
    assert final["Failed"]["status"] == "False"
    assert final["Progressing"]["status"] == "False"
    assert final["ClusterReady"]["reason"] == "Released"  # the workers are freed


@pytest.mark.asyncio
async def test_unschedulable_workers_make_the_run_pending_with_the_reason(
    cluster: Cluster,
) -> None:
    await cluster.apply(demo_run())
    await cluster.wait_for("the driver Job", lambda: cluster.get(JOBS, f"{RUN}-driver-g1"))
    await set_job(cluster, f"{RUN}-driver-g1", {"active": 1})
    await cluster.start_pods(RUN, status=UNSCHEDULABLE)
    status = await cluster.wait_for(
        "the reason",
        lambda: (
            "cannot be scheduled" in str(cluster.status(RUN).get("message")) and cluster.status(RUN)
        ),
    )
    assert status["phase"] == "Pending"
    assert status["message"].startswith(
        "waiting for workers: 2 of 2 worker pods cannot be scheduled: 0/3 nodes are available: "
        "3 Insufficient cpu."
    )
    ready = conditions(cluster)["ClusterReady"]
    assert (ready["status"], ready["reason"]) == ("False", "Unschedulable")
    assert "lower spec.compute.workers" in ready["message"]
    # Once the nodes come, the run is Running: the condition changes, with a new time.
    await cluster.start_pods(RUN)
    await cluster.wait_for("Running", lambda: cluster.status(RUN).get("phase") == "Running")
    assert conditions(cluster)["ClusterReady"]["status"] == "True"


@pytest.mark.asyncio
async def test_a_spec_edited_while_running_is_applied_by_a_resumed_run(cluster: Cluster) -> None:
    await cluster.apply(demo_run())
    await cluster.wait_for("the driver Job", lambda: cluster.get(JOBS, f"{RUN}-driver-g1"))
    await set_job(cluster, f"{RUN}-driver-g1", {"active": 1})
    await cluster.start_pods(RUN)
    await cluster.wait_for("Running", lambda: cluster.status(RUN).get("phase") == "Running")

    await edit(cluster, {"compute": {"workers": 3}})
    await cluster.wait_for("the new driver", lambda: cluster.get(JOBS, f"{RUN}-driver-g2"))
    await cluster.wait_for(
        "the old driver to go", lambda: cluster.get(JOBS, f"{RUN}-driver-g1") is None
    )
    dask = cluster.get("kubernetes.dask.org/v1/daskclusters", f"{RUN}-dask")
    assert dask["spec"]["worker"]["replicas"] == 3  # the new size, applied
    job = cluster.get(JOBS, f"{RUN}-driver-g2")
    assert "--resume" in job["spec"]["template"]["spec"]["containers"][0]["args"]
    status = await cluster.wait_for(
        "generation 2",
        lambda: cluster.status(RUN).get("observedGeneration") == 2 and cluster.status(RUN),
    )
    assert status["driverJob"] == f"{RUN}-driver-g2"
    planned = conditions(cluster)["Planned"]
    assert (planned["reason"], planned["observedGeneration"]) == ("SpecChangeApplied", 2)
    assert "a new one resumes the run" in planned["message"]


@pytest.mark.asyncio
async def test_an_invalid_edit_while_running_is_refused_with_a_condition(cluster: Cluster) -> None:
    await cluster.apply(demo_run())
    await cluster.wait_for("the driver Job", lambda: cluster.get(JOBS, f"{RUN}-driver-g1"))
    await set_job(cluster, f"{RUN}-driver-g1", {"active": 1})
    await cluster.start_pods(RUN)
    await cluster.wait_for("Running", lambda: cluster.status(RUN).get("phase") == "Running")

    await edit(cluster, {"outputs": {"store": "/data/out"}})
    planned = await cluster.wait_for(
        "the refusal",
        lambda: (
            conditions(cluster).get("Planned", {}).get("reason") == "SpecChangeRefused"
            and conditions(cluster)["Planned"]
        ),
    )
    assert planned["status"] == "False" and planned["observedGeneration"] == 2  # what it refused
    assert "generation 2 is not applied" in planned["message"]
    assert "spec.outputs.store: '/data/out' is a local path" in planned["message"]
    assert "The run goes on with generation 1" in planned["message"]
    status = cluster.status(RUN)
    assert status["phase"] == "Running" and status["observedGeneration"] == 1
    assert cluster.get(JOBS, f"{RUN}-driver-g1") is not None  # the run was not touched
    assert cluster.get(JOBS, f"{RUN}-driver-g2") is None
