"""The sitsflow operator: kopf handlers that turn a SitsRun into a DaskCluster and a driver Job.

(Over 600 lines on purpose: one resource's lifecycle (start, sync, restart, delete) and the
conditions it reports read as one state machine; the pure spec builders live in specs.py.)

    kubectl apply -f run.yaml   ->  validate the spec (the same rules as `sitsflow validate`)
                                ->  ConfigMap (the manifest) + DaskCluster (workers) + Job (driver)
    every poll_seconds          ->  phase from the Job, the driver's error from its pod
    kubectl delete sitsrun x    ->  Job, DaskCluster and ConfigMaps deleted

The work is in plain async functions (``start_run``, ``sync_run``, ``restart_run``,
``delete_run``) that take an API client and return status fields; the kopf handlers only map
their errors: an invalid spec fails the run for good with the validation message in its status,
and so does a request RBAC refuses (the message names the verb and resource the Role lacks); an
API server that is down or throttling, or a 403 from admission (a full quota), is retried with
back-off.

Run it with ``python -m pipeline.k8s.operator`` (what the chart's Deployment does).

(Over 600 lines on purpose: the run's life cycle, start, poll, change and delete, and the kopf
handlers that map their errors read best as one file; the pure parts live in specs, status,
conditions, admission, network and tls.)
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import logging
import os
import sys
import threading
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import kopf
import yaml

from pipeline.errors import ManifestError
from pipeline.k8s import API_VERSION, GROUP, KIND, PLURAL, VERSION
from pipeline.k8s.admission import admission_message
from pipeline.k8s.api import ApiError, ConflictError, ForbiddenError, KubeApi
from pipeline.k8s.conditions import (
    CLUSTER_READY,
    PLANNED,
    PROGRESSING,
    condition,
    find,
    is_true,
    merge,
)
from pipeline.k8s.conditions import FAILED as FAILED_C
from pipeline.k8s.conditions import SUCCEEDED as SUCCEEDED_C
from pipeline.k8s.config import OperatorConfig, load_config
from pipeline.k8s.network import build_network_policies
from pipeline.k8s.specs import (
    RUN_LABEL,
    RunRef,
    SpecConflictError,
    build_config_map,
    build_dask_autoscaler,
    build_dask_cluster,
    build_driver_job,
    build_tls_secret,
    child_name,
    config_for_run,
    dashboard_url,
    run_volumes,
)
from pipeline.k8s.status import (
    FAILED,
    FINISHED,
    PENDING,
    RUNNING,
    SUCCEEDED,
    cluster_state,
    driver_error,
    driver_stuck,
    job_state,
    now,
    output_urls,
)
from pipeline.k8s.tls import make_certificates
from pipeline.manifest import RunManifest, parse_manifest
from pipeline.manifest.fields import locate

FINALIZER = "sitsflow.dev/cleanup"
RETRY_DELAYS = (2, 5, 15, 30, 60, 120)
log = logging.getLogger(__name__)

Status = dict[str, Any]


class InvalidRunError(Exception):
    """The SitsRun's spec breaks a manifest rule: no retry can fix it, the user must.

    ``reason`` is the Failed condition's: InvalidSpec (a manifest rule), NotAdmitted (what the
    pods could not reach) or NotAllowed (a pod setting the cluster admin keeps)."""

    def __init__(self, message: str, reason: str = "InvalidSpec") -> None:
        super().__init__(message)
        self.reason = reason


# --- the work, without kopf -------------------------------------------------------------------


def validate_run(ref: RunRef, spec: Mapping[str, Any]) -> RunManifest:
    """The spec as a run manifest, checked by the same rules as `sitsflow validate`."""
    document = {"apiVersion": API_VERSION, "kind": KIND, "metadata": {"name": ref.name}}
    text = yaml.safe_dump({**document, "spec": dict(spec)}, sort_keys=False)
    source = f"SitsRun {ref.namespace}/{ref.name}"
    try:
        manifest = parse_manifest(text, base_dir=Path("/"), source=source)
    except ManifestError as exc:
        raise InvalidRunError(str(locate(exc))) from None
    # Valid for `sitsflow run` on a workstation, but what the pods cannot reach is refused here.
    problems = admission_message(spec)
    if problems:
        raise InvalidRunError(f"{source} cannot run in the cluster:\n{problems}", "NotAdmitted")
    return manifest


async def ensure_secret(api: KubeApi, secret: Mapping[str, Any]) -> None:
    """Create the run's certificate Secret once. The operator may create and delete Secrets but
    never read one: a Secret of that name already there is this run's (made by an earlier pass
    of this handler; a leftover of a deleted run of the same name goes with its owner)."""
    with contextlib.suppress(ConflictError):
        await api.create(secret)


async def ensure(
    api: KubeApi, obj: Mapping[str, Any], ref: RunRef, *, update_spec: bool = False
) -> None:
    """Create ``obj``, or accept the one already there if this run owns it (idempotent).

    With ``update_spec``, an existing object gets this spec (a rerun with a new size).
    """
    meta = obj["metadata"]
    try:
        await api.create(obj)
        return
    except ConflictError:
        existing = await api.get(obj["kind"], meta["namespace"], meta["name"])
    where = f"{meta['namespace']}/{meta['name']}"
    existing_meta = existing.get("metadata", {})
    if existing_meta.get("deletionTimestamp"):
        # Still being deleted (its finalizers run): create it again once it is gone.
        raise ApiError(409, "Terminating", f"{obj['kind']} {where} is being deleted", url=where)
    owners = {o.get("uid") for o in existing_meta.get("ownerReferences") or []}
    if ref.uid not in owners:
        # Most often the leftover of a deleted run of the same name, not yet garbage-collected.
        raise ApiError(
            409,
            "AlreadyExists",
            f"{obj['kind']} {meta['name']} exists and belongs to another object; it is retried "
            "until that one is gone (delete it if it is a leftover)",
            url=where,
        )
    if update_spec and existing.get("spec") != obj.get("spec"):
        await api.patch(obj["kind"], meta["namespace"], meta["name"], {"spec": obj["spec"]})


async def start_run(api: KubeApi, config: OperatorConfig, body: Mapping[str, Any]) -> Status:
    """Create what the run needs and say so; a no-op for a run already finished or started."""
    ref = RunRef.from_body(body)
    status = dict(body.get("status") or {})
    same_generation = status.get("observedGeneration") == ref.generation
    if same_generation and status.get("phase") in FINISHED:
        return {}
    manifest = validate_run(ref, body.get("spec") or {})
    try:
        run_config = config_for_run(config, manifest, ref)
    except SpecConflictError as exc:
        raise InvalidRunError(f"SitsRun {ref.namespace}/{ref.name}: {exc}", "NotAllowed") from None
    spec = body.get("spec") or {}
    if run_config.tls:
        # Made before any pod that mounts it; the CA's key is not kept (see pipeline.k8s.tls).
        files = make_certificates(f"{ref.namespace}/{ref.name}").files()
        await ensure_secret(api, build_tls_secret(ref, files))
    for policy in build_network_policies(ref, run_config):
        await ensure(api, policy, ref)
    await ensure(api, build_config_map(ref, spec, ref.address(run_config)), ref)
    await ensure(api, build_dask_cluster(ref, manifest, run_config), ref, update_spec=True)
    autoscaler = build_dask_autoscaler(ref, manifest)
    if autoscaler is not None:
        await ensure(api, autoscaler, ref, update_spec=True)
    await ensure(api, build_driver_job(ref, run_config, run_volumes(manifest)), ref)
    started = same_generation and status.get("phase") == RUNNING
    conditions = status.get("conditions")
    if not same_generation:
        conditions = merge(
            conditions,
            [
                condition(
                    PLANNED,
                    True,
                    "Accepted",
                    f"generation {ref.generation} accepted: its manifest, DaskCluster and driver "
                    "Job exist",
                    ref.generation,
                ),
                condition(
                    CLUSTER_READY, False, "Starting", "the DaskCluster starts", ref.generation
                ),
                condition(
                    PROGRESSING, False, "DriverStarting", "the driver pod starts", ref.generation
                ),
                condition(
                    SUCCEEDED_C, False, "NotFinished", "the run is not finished", ref.generation
                ),
                condition(FAILED_C, False, "NotFailed", "the run has not failed", ref.generation),
            ],
            now(),
        )
    return {
        "phase": RUNNING if started else PENDING,
        "message": status.get("message") if started else "waiting for the driver pod to start",
        "lastError": None,
        "conditions": conditions,
        "observedGeneration": ref.generation,
        "daskCluster": ref.dask_cluster,
        "driverJob": ref.driver_job,
        "dashboardService": f"{ref.scheduler_service}:8787",
        "dashboard": dashboard_url(ref, config),
        "outputs": output_urls(manifest.spec.outputs.store),
        "startTime": status.get("startTime") if same_generation else now(),
        "completionTime": None,
    }


async def sync_run(api: KubeApi, config: OperatorConfig, body: Mapping[str, Any]) -> Status:
    """The phase and conditions as the driver Job, the DaskCluster and its pods report them;
    frees the workers once the driver is done."""
    ref = RunRef.from_body(body)
    status = dict(body.get("status") or {})
    job_name = status.get("driverJob")
    if not job_name or status.get("phase") in FINISHED:
        return {}
    generation = int(status.get("observedGeneration") or ref.generation)
    conditions = status.get("conditions")
    planned = find(conditions, PLANNED)
    if planned is not None and int(planned.get("observedGeneration") or 0) < ref.generation:
        # A spec change not handled yet: its handler writes the status; a poll of this stale
        # view would overwrite what it writes.
        return {}
    job = await api.find("Job", ref.namespace, job_name)
    if job is None:
        error = (
            f"the driver Job {job_name} was deleted while the run was "
            f"{str(status.get('phase', PENDING)).lower()}; apply the SitsRun again to rerun it"
        )
        return {
            "phase": FAILED,
            "message": f"the driver Job {job_name} is gone",
            "lastError": error,
            "conditions": merge(
                conditions, _finished(False, "DriverJobDeleted", error, generation), now()
            ),
            "completionTime": now(),
        }
    state = job_state(job)
    pods = await api.list("Pod", ref.namespace, {RUN_LABEL: ref.name})
    # lastError is cleared once a stuck driver starts; a failure sets it again below.
    patch: Status = {"phase": state.phase, "message": state.message, "lastError": None}
    updates = []
    if state.phase in (PENDING, FAILED):
        drivers = [p for p in pods if _component(p) == "driver" and _owned_by_job(p, job)]
        if state.phase == PENDING:
            stuck = driver_stuck(drivers)
            if stuck:
                patch.update(message=f"the driver cannot start: {stuck}", lastError=stuck)
        else:
            patch["lastError"] = driver_error(drivers) or state.message
    if state.phase in FINISHED:
        ok = state.phase == SUCCEEDED
        text = state.message if ok else str(patch["lastError"])
        updates += _finished(ok, "Completed" if ok else "DriverFailed", text, generation)
        if ok:
            patch["progress"] = "100%"
        patch["completionTime"] = now()
        if config.delete_cluster_when_done:
            await api.delete("DaskAutoscaler", ref.namespace, ref.dask_cluster)
            if await api.delete("DaskCluster", ref.namespace, ref.dask_cluster):
                patch["message"] += "; its DaskCluster is deleted"
            updates.append(
                condition(
                    CLUSTER_READY, False, "Released", "the DaskCluster is deleted", generation
                )
            )
    else:
        cluster = cluster_state(
            await api.find("DaskCluster", ref.namespace, ref.dask_cluster), pods
        )
        updates.append(
            condition(CLUSTER_READY, cluster.ready, cluster.reason, cluster.message, generation)
        )
        was_ready = is_true(conditions, CLUSTER_READY)
        if cluster.blocked and not cluster.workers_running:
            # Waiting will not help: say why instead of Running until a connect timeout.
            patch.update(phase=PENDING, message=f"waiting for workers: {cluster.message}")
        elif state.phase == RUNNING and not (cluster.ready or was_ready):
            patch.update(phase=PENDING, message=f"the driver waits for workers: {cluster.message}")
        running = state.phase == RUNNING
        updates.append(
            condition(
                PROGRESSING,
                running,
                "DriverRunning" if running else "DriverStarting",
                state.message if running else str(patch["message"]),
                generation,
            )
        )
    patch["conditions"] = merge(conditions, updates, now())
    return patch


def _component(pod: Mapping[str, Any]) -> str:
    return str(((pod.get("metadata") or {}).get("labels") or {}).get("app.kubernetes.io/component"))


def _finished(ok: bool, reason: str, message: str, generation: int) -> list[dict[str, Any]]:
    """The conditions of a run that has stopped, successfully (``ok``) or not."""
    return [
        condition(PROGRESSING, False, "Finished", "the driver has stopped", generation),
        condition(
            SUCCEEDED_C, ok, reason if ok else "NotFinished", message if ok else "", generation
        ),
        condition(
            FAILED_C, not ok, "NotFailed" if ok else reason, "" if ok else message, generation
        ),
    ]


def _owned_by_job(pod: Mapping[str, Any], job: Mapping[str, Any]) -> bool:
    job_meta = job.get("metadata", {})
    owners = pod.get("metadata", {}).get("ownerReferences") or []
    if any(o.get("uid") and o.get("uid") == job_meta.get("uid") for o in owners):
        return True
    pod_labels = pod.get("metadata", {}).get("labels") or {}
    job_name = job_meta.get("name")
    return job_name in (pod_labels.get("batch.kubernetes.io/job-name"), pod_labels.get("job-name"))


async def restart_run(api: KubeApi, config: OperatorConfig, body: Mapping[str, Any]) -> Status:
    """A spec changed. A finished run reruns with it. A running one is never left on the old
    spec silently: a valid change stops the old driver and a new one resumes the run with the new
    spec (the run store keeps every finished work unit); an invalid one is refused with a Planned
    condition that says why, and the run goes on with the spec it had."""
    ref = RunRef.from_body(body)
    status = dict(body.get("status") or {})
    old_generation = status.get("observedGeneration")
    active = status.get("phase") in (PENDING, RUNNING) and old_generation
    if active:
        try:
            manifest = validate_run(ref, body.get("spec") or {})
            config_for_run(config, manifest, ref)
        except (InvalidRunError, SpecConflictError) as exc:
            why = (
                f"generation {ref.generation} is not applied: {exc}. The run goes on with "
                f"generation {old_generation}; fix the spec and apply it again"
            )
            # The condition describes the refused generation: the poll knows it was handled.
            refused = condition(PLANNED, False, "SpecChangeRefused", why, ref.generation)
            return {
                "message": f"a change of the spec is refused (generation {ref.generation}): "
                "see the Planned condition",
                "conditions": merge(status.get("conditions"), [refused], now()),
            }
    old_job = status.get("driverJob")
    if old_job and old_job != ref.driver_job:
        await api.delete("Job", ref.namespace, old_job)
    await _delete_config_maps(api, ref, keep=ref.config_map)
    started = await start_run(api, config, body)
    if active and started:
        applied = condition(
            PLANNED,
            True,
            "SpecChangeApplied",
            f"generation {ref.generation} applied while the run was "
            f"{str(status['phase']).lower()}: the driver of generation {old_generation} is stopped "
            "and a new one resumes the run (finished work units are kept)",
            ref.generation,
        )
        started["conditions"] = merge(started.get("conditions"), [applied], now())
    return started


async def _delete_config_maps(api: KubeApi, ref: RunRef, keep: str | None = None) -> None:
    selector = {RUN_LABEL: ref.name, "app.kubernetes.io/component": "manifest"}
    for config_map in await api.list("ConfigMap", ref.namespace, selector):
        name = config_map["metadata"]["name"]
        if name != keep:
            await api.delete("ConfigMap", ref.namespace, name)


async def delete_run(api: KubeApi, body: Mapping[str, Any]) -> None:
    """Delete the run's objects now (owner references would, later; the workers stop at once)."""
    ref = RunRef.from_body(body)
    status = dict(body.get("status") or {})
    selector = {RUN_LABEL: ref.name, "app.kubernetes.io/component": "driver"}
    jobs = {j["metadata"]["name"] for j in await api.list("Job", ref.namespace, selector)}
    jobs |= {status["driverJob"]} if status.get("driverJob") else set()
    for job in sorted(jobs):
        await api.delete("Job", ref.namespace, job)
    await api.delete("DaskAutoscaler", ref.namespace, ref.dask_cluster)
    await api.delete("DaskCluster", ref.namespace, ref.dask_cluster)
    await _delete_config_maps(api, ref)
    for name in (child_name(ref.name, s) for s in ("scheduler-policy", "workers-policy")):
        await api.delete("NetworkPolicy", ref.namespace, name)
    await api.delete("Secret", ref.namespace, ref.tls_secret)


# --- kopf -------------------------------------------------------------------------------------


def _delay(retry: int) -> float:
    return RETRY_DELAYS[min(retry, len(RETRY_DELAYS) - 1)]


def _apply(patch: kopf.Patch, body: Mapping[str, Any], fields: Mapping[str, Any]) -> None:
    """Patch only what changed: a poll that learns nothing new writes nothing."""
    current = body.get("status") or {}
    for key, value in fields.items():
        if current.get(key) != value:
            patch.status[key] = value


async def _fail_for_good(
    api: KubeApi,
    body: Mapping[str, Any],
    error: str,
    message: str = "the spec is invalid: fix it and apply it again",
    reason: str = "InvalidSpec",
) -> None:
    ref = RunRef.from_body(body)
    current = (body.get("status") or {}).get("conditions")
    updates = [
        condition(PLANNED, False, reason, error, ref.generation),
        *_finished(False, reason, error, ref.generation),
    ]
    fields = {
        "phase": FAILED,
        "message": message,
        "lastError": error,
        "conditions": merge(current, updates, now()),
        "observedGeneration": ref.generation,
        "completionTime": now(),
    }
    # Written here rather than through kopf's patch, which is not applied for a failed handler.
    await api.patch(KIND, ref.namespace, ref.name, {"status": fields}, sub="status")


def rbac_denied_message(exc: ForbiddenError) -> str | None:
    """What to fix when RBAC refused a request (None for another 403, e.g. a full quota)."""
    denial = exc.rbac_denial
    if denial is None:
        return None
    verb, group, resource = denial
    kind = f'{resource} (API group "{group}")' if group else resource
    return (
        f"the operator may not {verb} {kind}: its Role lacks that verb ({exc.status} "
        f"{exc.reason} from {exc.url}: {exc.message}). Fix: grant it, by upgrading to a chart "
        f"whose operator Role has it (helm upgrade) or by adding {verb!r} on {resource!r} to that "
        "Role; then delete the SitsRun and apply it again (finished work units are reused)"
    )


async def _guarded(api: KubeApi, body: Mapping[str, Any], retry: int, work: Any) -> Status:
    try:
        result: Status = await work
        return result
    except InvalidRunError as exc:
        await _fail_for_good(api, body, str(exc), reason=exc.reason)
        raise kopf.PermanentError(str(exc)) from None
    except ForbiddenError as exc:
        denied = rbac_denied_message(exc)
        if denied is None:
            # Admission, not RBAC: an exceeded ResourceQuota or a namespace being deleted.
            raise kopf.TemporaryError(str(exc), delay=_delay(retry)) from None
        # The Role lacks a verb: a retry asks the same question and gets the same 403, forever.
        # Fail the run with the verb and resource to grant, where `kubectl get` shows it.
        try:
            await _fail_for_good(
                api,
                body,
                denied,
                "the operator is not allowed to do this: see lastError",
                reason="Forbidden",
            )
        except ApiError as status_error:  # even the status is refused: the log must say it
            log.error("%s (and its status could not be written: %s)", denied, status_error)
        raise kopf.PermanentError(denied) from None
    except ApiError as exc:
        if exc.transient or exc.status in (401, 409):
            # Down, throttled, a token being rotated, or a leftover being removed.
            raise kopf.TemporaryError(str(exc), delay=_delay(retry)) from None
        raise kopf.PermanentError(str(exc)) from None


def operator_settings(settings: kopf.OperatorSettings | None = None) -> kopf.OperatorSettings:
    settings = settings or kopf.OperatorSettings()
    settings.persistence.finalizer = FINALIZER
    # Keep kopf's bookkeeping in annotations: the status holds only the run's own fields.
    settings.persistence.progress_storage = kopf.AnnotationsProgressStorage(prefix=GROUP)
    settings.persistence.diffbase_storage = kopf.AnnotationsDiffBaseStorage(
        prefix=GROUP, key="last-handled-configuration"
    )
    # Namespaced RBAC: the operator may not list namespaces or CRDs; watch the given ones.
    settings.scanning.disabled = True
    settings.posting.level = logging.INFO
    settings.watching.server_timeout = 300
    settings.networking.request_timeout = 60
    return settings


def make_registry(config: OperatorConfig, api: KubeApi) -> kopf.OperatorRegistry:
    """Every handler, bound to one config and one API client (no module-level state)."""
    registry = kopf.OperatorRegistry()

    @kopf.on.login(registry=registry)
    async def login(**_: Any) -> kopf.ConnectionInfo:
        # kopf's watches use the same credentials as the client, re-read (tokens rotate).
        auth = api.kr8s.auth
        await auth.reauthenticate()
        return kopf.ConnectionInfo(
            server=auth.server,
            ca_path=str(auth.server_ca_file) if auth.server_ca_file else None,
            insecure=getattr(auth, "_insecure_skip_tls_verify", False) or None,
            scheme="Bearer" if auth.token else None,
            token=auth.token,
            certificate_path=str(auth.client_cert_file) if auth.client_cert_file else None,
            private_key_path=str(auth.client_key_file) if auth.client_key_file else None,
            default_namespace=auth.namespace,
        )

    @kopf.on.create(GROUP, VERSION, PLURAL, registry=registry)
    @kopf.on.resume(GROUP, VERSION, PLURAL, registry=registry)
    async def start(body: kopf.Body, patch: kopf.Patch, **kwargs: Any) -> None:
        work = start_run(api, config, body)
        _apply(patch, body, await _guarded(api, body, kwargs.get("retry", 0), work))

    @kopf.on.update(GROUP, VERSION, PLURAL, field="spec", registry=registry)
    async def changed(body: kopf.Body, patch: kopf.Patch, **kwargs: Any) -> None:
        work = restart_run(api, config, body)
        _apply(patch, body, await _guarded(api, body, kwargs.get("retry", 0), work))

    @kopf.timer(
        GROUP,
        VERSION,
        PLURAL,
        interval=config.poll_seconds,
        initial_delay=min(config.poll_seconds, 5.0),
        when=lambda status, **_: status.get("phase") not in FINISHED,
        registry=registry,
    )
    async def poll(body: kopf.Body, patch: kopf.Patch, **kwargs: Any) -> None:
        work = sync_run(api, config, body)
        _apply(patch, body, await _guarded(api, body, kwargs.get("retry", 0), work))

    @kopf.on.delete(GROUP, VERSION, PLURAL, registry=registry)
    async def delete(body: kopf.Body, **kwargs: Any) -> None:
        await _guarded(api, body, kwargs.get("retry", 0), _none(delete_run(api, body)))

    return registry


async def _none(work: Any) -> Status:
    await work
    return {}


# --- command line -----------------------------------------------------------------------------


def _namespaces(given: Sequence[str]) -> list[str]:
    names = [n for value in given for n in value.split(",") if n.strip()]
    from_env = os.environ.get("SITSFLOW_WATCH_NAMESPACES", "")
    return names or [n.strip() for n in from_env.split(",") if n.strip()]


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m pipeline.k8s.operator",
        description="Run the sitsflow operator (SitsRun -> DaskCluster + driver Job).",
    )
    parser.add_argument(
        "--namespace",
        action="append",
        default=[],
        help="namespace to watch (repeat or comma-separate; default $SITSFLOW_WATCH_NAMESPACES, "
        "else the operator's own namespace)",
    )
    parser.add_argument("--config", help="operator config JSON (default $SITSFLOW_OPERATOR_CONFIG)")
    parser.add_argument(
        "--kubeconfig",
        help="kubeconfig file (default $KUBECONFIG, ~/.kube/config, else the pod's service "
        "account)",
    )
    parser.add_argument(
        "--server", help="API server URL, e.g. http://127.0.0.1:8001 from `kubectl proxy`"
    )
    parser.add_argument("--liveness", default="http://0.0.0.0:8080/healthz")
    args = parser.parse_args(argv)
    level = os.environ.get("SITSFLOW_LOG_LEVEL", "INFO").upper()
    logging.basicConfig(
        level=getattr(logging, level, logging.INFO),
        format="%(asctime)s %(levelname)s %(name)s %(message)s",
    )
    config = load_config(args.config)
    asyncio.run(
        run_operator(
            config,
            _namespaces(args.namespace),
            kubeconfig=args.kubeconfig,
            server=args.server,
            liveness_endpoint=args.liveness,
        )
    )
    return 0


async def run_operator(
    config: OperatorConfig,
    namespaces: Sequence[str] = (),
    *,
    kubeconfig: str | Path | None = None,
    server: str | None = None,
    stop: asyncio.Event | threading.Event | None = None,
    ready: asyncio.Event | threading.Event | None = None,
    settings: kopf.OperatorSettings | None = None,
    liveness_endpoint: str | None = None,
) -> None:
    """Run the operator until ``stop`` is set (or the process is signalled); it watches
    ``namespaces``, or its credentials' own namespace when none is given."""
    api = await KubeApi.connect(kubeconfig=kubeconfig, server=server)
    try:
        await kopf.operator(
            registry=make_registry(config, api),
            settings=operator_settings(settings),
            standalone=True,
            namespaces=list(namespaces) or [api.namespace],
            stop_flag=stop,
            ready_flag=ready,
            liveness_endpoint=liveness_endpoint,
        )
    finally:
        await api.close()


if __name__ == "__main__":
    sys.exit(main())
