"""Pure functions from what the cluster reports (Job, pods) to the SitsRun's status fields."""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from pipeline.run.layout import RunLayout

PENDING, RUNNING, SUCCEEDED, FAILED = "Pending", "Running", "Succeeded", "Failed"
FINISHED = (SUCCEEDED, FAILED)
MAX_ERROR_CHARS = 2000

# Reasons a container waits that will not fix themselves (the user must act).
_STUCK = {
    "ErrImagePull": "the image cannot be pulled",
    "ImagePullBackOff": "the image cannot be pulled",
    "InvalidImageName": "the image name is invalid",
    "CreateContainerConfigError": "the pod's configuration is incomplete (a missing Secret?)",
    "CreateContainerError": "the container cannot be created",
}


@dataclass(frozen=True)
class JobState:
    phase: str
    message: str
    failed: bool = False


def now() -> str:
    return datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def _true(conditions: Sequence[Mapping[str, Any]], *types: str) -> Mapping[str, Any] | None:
    for condition in conditions:
        if condition.get("type") in types and str(condition.get("status")) == "True":
            return condition
    return None


def job_state(job: Mapping[str, Any]) -> JobState:
    """The run's phase as its driver Job tells it."""
    status = job.get("status") or {}
    conditions = status.get("conditions") or []
    if _true(conditions, "Complete", "SuccessCriteriaMet"):
        return JobState(SUCCEEDED, "the driver finished: every output is written")
    failed = _true(conditions, "Failed", "FailureTarget")
    if failed:
        why = failed.get("message") or failed.get("reason") or "the driver failed"
        return JobState(FAILED, f"the driver failed: {why}", failed=True)
    if int(status.get("active") or 0) > 0:
        return JobState(RUNNING, "the driver runs")
    return JobState(PENDING, "waiting for the driver pod to start")


def _newest_first(pods: Sequence[Mapping[str, Any]]) -> list[Mapping[str, Any]]:
    return sorted(
        pods, key=lambda p: str(p.get("metadata", {}).get("creationTimestamp", "")), reverse=True
    )


def _driver_status(pod: Mapping[str, Any]) -> Mapping[str, Any]:
    statuses = (pod.get("status") or {}).get("containerStatuses") or []
    for status in statuses:
        if status.get("name") == "driver":
            return dict(status)
    return dict(statuses[0]) if statuses else {}


def _all_statuses(pod: Mapping[str, Any]) -> list[Mapping[str, Any]]:
    """The driver's status first, then the init container's (waiting for the scheduler)."""
    init = (pod.get("status") or {}).get("initContainerStatuses") or []
    return [_driver_status(pod), *init]


def driver_error(pods: Sequence[Mapping[str, Any]]) -> str | None:
    """What the last failed driver said (the tail of its log), or how it died."""
    states = ("state", "lastState")
    for pod in _newest_first(pods):
        for status, key in [(s, k) for s in _all_statuses(pod) for k in states]:
            terminated = (status.get(key) or {}).get("terminated")
            if not terminated or int(terminated.get("exitCode", 0)) == 0:
                continue
            message = _readable(str(terminated.get("message") or ""))
            if not message:
                message = (
                    f"the driver exited with code {terminated.get('exitCode')} "
                    f"({terminated.get('reason') or 'Error'})"
                )
                if terminated.get("reason") == "OOMKilled":
                    message += "; raise the chart's runs.driverResources memory limit"
            return message[-MAX_ERROR_CHARS:]
    return None


def _readable(log_tail: str) -> str:
    """The error lines of a log tail; a JSON-lines log (the driver's default in a pod) is read."""
    lines = [line for line in log_tail.strip().splitlines() if line.strip()]
    records: list[dict[str, Any]] = []
    for line in lines:
        try:
            record = json.loads(line)
        except ValueError:
            return log_tail.strip()  # plain text (a traceback): keep it as it is
        if not isinstance(record, dict) or "message" not in record:
            return log_tail.strip()
        records.append(record)
    errors = [r for r in records if str(r.get("level", "")).lower() in ("error", "critical")]
    chosen = errors or records[-1:]
    return "\n".join(str(r["message"]) for r in chosen)


def driver_stuck(pods: Sequence[Mapping[str, Any]]) -> str | None:
    """Why the driver cannot start, when that needs a person (image, missing Secret)."""
    for pod in _newest_first(pods):
        waiting = (_driver_status(pod).get("state") or {}).get("waiting") or {}
        reason = waiting.get("reason")
        if reason in _STUCK:
            detail = str(waiting.get("message") or "").strip()
            return f"{_STUCK[reason]} ({reason}{': ' + detail if detail else ''})"
    return None


def _join(store: str, relative: Path) -> str:
    return store.rstrip("/") + "/" + relative.as_posix()


def output_urls(store: str) -> dict[str, str]:
    """Where a finished run's main outputs are, under its store (a path or a URL)."""
    layout = RunLayout(Path())
    out = {}
    for name, attr, leaf in (
        ("labels", "labels", None),
        ("confidence", "confidence", None),
        ("report", "report", "report.html"),
        ("metrics", "report", "metrics.json"),
        ("summary", "summary", None),
        ("cube", "cube", None),
    ):
        relative = getattr(layout, attr, None)
        if isinstance(relative, Path):
            out[name] = _join(store, relative / leaf if leaf else relative)
    return out


def progress_text(fraction: float) -> str:
    return f"{round(100 * min(1.0, max(0.0, fraction)))}%"


def tiles_text(done: int, total: int) -> str:
    return f"{done}/{total}"


# --- the DaskCluster and its pods ---------------------------------------------------------------


@dataclass(frozen=True)
class ClusterState:
    """What the run's DaskCluster and its pods say: ready (scheduler and a worker running),
    or why not (reason as in ``pipeline.k8s.conditions``, message in the pods' own words)."""

    ready: bool
    reason: str
    message: str
    workers_running: int = 0
    workers_wanted: int = 0

    @property
    def blocked(self) -> bool:
        """Waiting cannot help: the pods need a person (capacity, quota, image)."""
        return self.reason in ("Unschedulable", "ImagePullFailed")


def _unschedulable(pod: Mapping[str, Any]) -> str | None:
    for condition in (pod.get("status") or {}).get("conditions") or []:
        if (
            condition.get("type") == "PodScheduled"
            and str(condition.get("status")) == "False"
            and condition.get("reason") == "Unschedulable"
        ):
            return str(condition.get("message") or "no node fits the pod")
    return None


def _running(pod: Mapping[str, Any]) -> bool:
    return (pod.get("status") or {}).get("phase") == "Running"


def _pull_failure(pod: Mapping[str, Any]) -> str | None:
    for status in (pod.get("status") or {}).get("containerStatuses") or []:
        waiting = (status.get("state") or {}).get("waiting") or {}
        if waiting.get("reason") in ("ErrImagePull", "ImagePullBackOff", "InvalidImageName"):
            return f"{waiting['reason']}: {waiting.get('message') or ''}".strip(": ")
    return None


def cluster_state(
    dask_cluster: Mapping[str, Any] | None, pods: Sequence[Mapping[str, Any]]
) -> ClusterState:
    """The cluster's readiness from the DaskCluster and the run's scheduler and worker pods
    (selected by the ``app.kubernetes.io/component`` label the shared builder sets)."""
    if dask_cluster is None:
        return ClusterState(False, "ClusterMissing", "the DaskCluster does not exist (yet)")
    wanted = int(((dask_cluster.get("spec") or {}).get("worker") or {}).get("replicas") or 0)

    def role(pod: Mapping[str, Any]) -> str:
        labels = (pod.get("metadata") or {}).get("labels") or {}
        return str(labels.get("app.kubernetes.io/component", ""))

    live = [p for p in pods if not (p.get("metadata") or {}).get("deletionTimestamp")]
    schedulers = [p for p in live if role(p) == "scheduler"]
    workers = [p for p in live if role(p) == "worker"]
    running = sum(1 for p in workers if _running(p))
    counts = {"workers_running": running, "workers_wanted": wanted}
    stuck = [(p, why) for p in [*schedulers, *workers] if (why := _unschedulable(p))]
    if stuck and not (running and any(_running(p) for p in schedulers)):
        why = stuck[0][1]
        kinds = sorted({role(p) for p, _ in stuck})
        n_workers = sum(1 for p, _ in stuck if role(p) == "worker")
        what = f"{n_workers} of {wanted} worker pods" if "worker" in kinds else ""
        if "scheduler" in kinds:
            what = f"the scheduler pod{' and ' + what if what else ''}"
        return ClusterState(
            False,
            "Unschedulable",
            f"{what} cannot be scheduled: {why} (lower spec.compute.workers, "
            "threads_per_worker or memory_limit, or add nodes)",
            **counts,
        )
    pulls = [why for p in [*schedulers, *workers] if (why := _pull_failure(p))]
    if pulls and not running:
        return ClusterState(
            False, "ImagePullFailed", f"the image cannot be pulled ({pulls[0]})", **counts
        )
    if schedulers and any(_running(p) for p in schedulers) and running:
        message = f"{running} of {wanted} workers running"
        if stuck:
            message += f"; {len(stuck)} pod(s) cannot be scheduled: {stuck[0][1]}"
        return ClusterState(True, "WorkersRunning", message, **counts)
    phase = (dask_cluster.get("status") or {}).get("phase") or "Pending"
    return ClusterState(
        False,
        "Starting",
        f"the DaskCluster is {str(phase).lower()}: {running} of {wanted} workers running",
        **counts,
    )
