"""The objects a SitsRun owns, built by pure functions and checked against the schemas the API
server would apply: Kubernetes' own (Job, ConfigMap) and dask-kubernetes' DaskCluster CRD."""

from __future__ import annotations

import re
import socket
import subprocess
import sys
from pathlib import Path
from typing import Any

import dask_kubernetes
import jsonschema
import kubernetes_validate
import pytest
import yaml
from hypothesis import given
from hypothesis import strategies as st

from pipeline.k8s.config import OperatorConfig, Resources
from pipeline.k8s.crd import as_json_schema
from pipeline.k8s.specs import (
    _WAIT_FOR_SCHEDULER,
    RunRef,
    SpecConflictError,
    build_config_map,
    build_dask_autoscaler,
    build_dask_cluster,
    build_driver_job,
    child_name,
    config_for_run,
    dashboard_url,
    driver_manifest,
)
from pipeline.manifest import RunManifest, parse_manifest
from pipeline.run.clusters import kubernetes_cluster_spec
from pipeline.run.config import ComputeConfig, KubernetesConfig
from pipeline.run.dask_spec import k8s_quantity

REPO = Path(__file__).resolve().parents[2]
K8S_VERSION = "1.30"
DNS_LABEL = re.compile(r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?$")
REF = RunRef(name="occitanie-2023", namespace="maps", uid="9f1c2d3e-0000-4000-8000-000000000001")


def production() -> dict[str, Any]:
    path = REPO / "deploy" / "examples" / "production-s2-theia.yaml"
    return dict(yaml.safe_load(path.read_text()))


def manifest(document: dict[str, Any]) -> RunManifest:
    return parse_manifest(yaml.safe_dump(document), base_dir=Path("/"))


def dask_cluster_schema() -> dict[str, Any]:
    """The DaskCluster CRD that dask-kubernetes installs (shipped inside the Python package)."""
    chart = Path(dask_kubernetes.__file__).parent / "operator" / "deployment" / "helm"
    path = chart / "dask-kubernetes-operator" / "crds" / "daskcluster.yaml"
    definition = yaml.safe_load(path.read_text())
    schema = as_json_schema(definition["spec"]["versions"][0]["schema"]["openAPIV3Schema"])
    # The API server adds these to every kind; the CRD leaves them implicit.
    schema["properties"] |= {
        "apiVersion": {"enum": ["kubernetes.dask.org/v1"]},
        "kind": {"enum": ["DaskCluster"]},
        "metadata": {"type": "object"},
    }
    return schema


CONFIG = OperatorConfig(
    image="registry.example.org/sitsflow:1.2.3",
    credentials_secret="s3-credentials",
    env={"AWS_ENDPOINT_URL": "https://s3.example.org"},
    image_pull_secrets=["regcred"],
    node_selector={"pool": "batch"},
    tolerations=[{"key": "spot", "operator": "Exists", "effect": "NoSchedule"}],
    driver_extra_args=["--store", "s3://elsewhere/run"],
    active_deadline_seconds=86400,
)


def all_containers(obj: dict[str, Any]) -> list[dict[str, Any]]:
    if obj["kind"] == "Job":
        return list(obj["spec"]["template"]["spec"]["containers"])
    return [
        *obj["spec"]["worker"]["spec"]["containers"],
        *obj["spec"]["scheduler"]["spec"]["containers"],
    ]


def test_dask_cluster_fits_the_dask_kubernetes_crd_and_the_runs_compute() -> None:
    run = manifest(production())
    cluster = build_dask_cluster(REF, run, CONFIG)
    jsonschema.Draft4Validator(dask_cluster_schema()).validate(cluster)
    assert cluster["metadata"]["name"] == "occitanie-2023-dask"
    worker = cluster["spec"]["worker"]
    assert worker["replicas"] == 40
    (container,) = worker["spec"]["containers"]
    args = container["args"]
    assert args[:2] == ["dask", "worker"]
    assert args[args.index("--nthreads") + 1] == "2"
    assert args[args.index("--memory-limit") + 1] == "12GiB"
    assert container["resources"] == {
        "requests": {"cpu": "2", "memory": "12Gi"},
        "limits": {"memory": "12Gi"},
    }
    assert worker["spec"]["nodeSelector"] == {"pool": "batch"}
    assert worker["spec"]["tolerations"] == CONFIG.tolerations
    assert worker["spec"]["imagePullSecrets"] == [{"name": "regcred"}]
    service = cluster["spec"]["scheduler"]["service"]
    assert service["selector"]["dask.org/cluster-name"] == "occitanie-2023-dask"
    assert {p["port"] for p in service["ports"]} == {8786, 8787}


def test_the_operator_and_a_kubernetes_run_build_the_same_kind_of_cluster() -> None:
    """One builder: the operator's DaskCluster and the one `compute.cluster: kubernetes` starts
    from a workstation (pipeline.run.kube) have the same labels, hardened pods, scratch volume
    and worker settings; they differ in who manages them and in the operator's own settings
    (placement, pull secrets, TLS: compared here with TLS off, checked on its own in
    test_tls.py and test_workstation.py)."""
    run = manifest(production())
    ours = build_dask_cluster(REF, run, CONFIG.model_copy(update={"tls": False}))
    compute = ComputeConfig(
        cluster="kubernetes",
        workers=40,
        threads_per_worker=2,
        memory_limit="12GiB",
        kubernetes=KubernetesConfig(image=CONFIG.image, credentials_secret="s3-credentials"),
    )
    theirs = kubernetes_cluster_spec(compute, REF.name, {})
    schema = dask_cluster_schema()
    for cluster in (ours, theirs):
        jsonschema.Draft4Validator(schema).validate(cluster)
    assert set(ours["metadata"]["labels"]) == set(theirs["metadata"]["labels"])
    for role in ("worker", "scheduler"):
        mine, other = ours["spec"][role], theirs["spec"][role]
        assert (
            mine["metadata"]["labels"] | {"app.kubernetes.io/managed-by": "sitsflow"}
            == (other["metadata"]["labels"])
        )
        assert mine["metadata"]["labels"]["app.kubernetes.io/component"] == role
        for key in ("securityContext", "volumes", "automountServiceAccountToken"):
            assert mine["spec"][key] == other["spec"][key], key
        (a,), (b,) = mine["spec"]["containers"], other["spec"]["containers"]
        for key in ("args", "resources", "securityContext", "volumeMounts", "envFrom", "ports"):
            if role == "scheduler" and key == "resources":
                continue  # the operator's chart value against the run's scheduler_memory
            assert a[key] == b[key], (role, key)
        names = {e["name"] for e in b["env"]}
        assert names <= {e["name"] for e in a["env"]}  # the operator adds the run's identity
    assert ours["spec"]["worker"]["spec"]["nodeSelector"] == {"pool": "batch"}
    assert "nodeSelector" not in theirs["spec"]["worker"]["spec"]


def test_driver_job_is_a_valid_job_that_runs_sitsflow_on_the_manifest() -> None:
    job = build_driver_job(REF, CONFIG)
    kubernetes_validate.validate(job, K8S_VERSION, strict=True)
    pod = job["spec"]["template"]["spec"]
    (driver,) = pod["containers"]
    assert driver["args"] == [
        "sitsflow",
        "run",
        "/etc/sitsflow/run.yaml",
        "--resume",
        "--store",
        "s3://elsewhere/run",
    ]
    assert driver["terminationMessagePolicy"] == "FallbackToLogsOnError"
    (wait,) = pod["initContainers"]
    assert wait["command"][-3:] == ["occitanie-2023-dask-scheduler.maps.svc", "8786", "1200"]
    assert wait["securityContext"]["readOnlyRootFilesystem"] is True
    assert pod["restartPolicy"] == "Never"
    assert pod["automountServiceAccountToken"] is True  # progress reports
    assert {"name": "manifest", "configMap": {"name": REF.config_map}} in pod["volumes"]
    rules = job["spec"]["podFailurePolicy"]["rules"]
    assert rules[0]["action"] == "FailJob" and rules[0]["onExitCodes"]["values"] == [2]
    assert job["spec"]["activeDeadlineSeconds"] == 86400
    env = {e["name"]: e["value"] for e in driver["env"]}
    assert env["DASK_SCHEDULER_ADDRESS"] == "tls://occitanie-2023-dask-scheduler.maps.svc:8786"
    assert env["SITSFLOW_RUN_NAME"] == "occitanie-2023"
    assert env["AWS_ENDPOINT_URL"] == "https://s3.example.org"


def test_credentials_come_from_the_secret_only() -> None:
    """The Secret is referenced by name: no credential value is in anything the operator builds."""
    run = manifest(production())
    for obj in (build_dask_cluster(REF, run, CONFIG), build_driver_job(REF, CONFIG)):
        for container in all_containers(obj):
            assert container["envFrom"] == [{"secretRef": {"name": "s3-credentials"}}]
            names = {e["name"] for e in container["env"]}
            assert not any("SECRET" in n or "PASSWORD" in n or "TOKEN" in n for n in names)
    no_secret = OperatorConfig()
    assert (
        "envFrom"
        not in build_driver_job(REF, no_secret)["spec"]["template"]["spec"]["containers"][0]
    )


def test_every_pod_is_hardened_and_only_the_driver_gets_a_token() -> None:
    run = manifest(production())
    cluster = build_dask_cluster(REF, run, CONFIG)
    job = build_driver_job(REF, CONFIG)
    pods = [cluster["spec"]["worker"]["spec"], cluster["spec"]["scheduler"]["spec"]]
    for pod in pods:
        assert pod["automountServiceAccountToken"] is False
    for pod in [*pods, job["spec"]["template"]["spec"]]:
        assert pod["securityContext"]["runAsNonRoot"] is True
        assert pod["securityContext"]["seccompProfile"] == {"type": "RuntimeDefault"}
        assert pod["serviceAccountName"] == "sitsflow-run"
    for obj in (cluster, job):
        for container in all_containers(obj):
            security = container["securityContext"]
            assert security["readOnlyRootFilesystem"] is True
            assert security["allowPrivilegeEscalation"] is False
            assert security["capabilities"] == {"drop": ["ALL"]}
            assert {"name": "scratch", "mountPath": "/tmp"} in container["volumeMounts"]


def test_children_are_owned_and_labelled() -> None:
    run = manifest(production())
    spec = production()["spec"]
    for obj in (
        build_config_map(REF, spec),
        build_dask_cluster(REF, run, CONFIG),
        build_driver_job(REF, CONFIG),
    ):
        meta = obj["metadata"]
        assert meta["namespace"] == "maps"
        assert meta["ownerReferences"] == [
            {
                "apiVersion": "sitsflow.dev/v1alpha1",
                "kind": "SitsRun",
                "name": "occitanie-2023",
                "uid": REF.uid,
                "controller": True,
                "blockOwnerDeletion": True,
            }
        ]
        assert meta["labels"]["app.kubernetes.io/instance"] == "occitanie-2023"
        assert meta["labels"]["app.kubernetes.io/managed-by"] == "sitsflow-operator"


def test_the_config_map_holds_the_runs_own_spec_as_a_valid_manifest() -> None:
    spec = production()["spec"]
    config_map = build_config_map(REF, spec)
    kubernetes_validate.validate(config_map, K8S_VERSION, strict=True)
    assert config_map["immutable"] is True
    document = yaml.safe_load(config_map["data"]["run.yaml"])
    assert document["metadata"] == {"name": "occitanie-2023"}
    loaded = manifest(document)
    for key in spec:
        if key != "compute":
            assert document["spec"][key] == spec[key]
    assert loaded.spec.compute.workers == 40
    assert (
        driver_manifest(REF, spec)["spec"]["outputs"]["store"]
        == "s3://sitsflow-maps/occitanie-2023"
    )


@given(
    st.from_regex(r"[a-z0-9]([-a-z0-9]{0,61}[a-z0-9])?", fullmatch=True),
    st.sampled_from(["dask", "driver-g1", "driver-g12345", "manifest-g7"]),
    st.sampled_from([52, 53, 63]),
)
def test_child_names_are_valid_short_and_distinct(run: str, suffix: str, limit: int) -> None:
    name = child_name(run, suffix, limit)
    assert len(name) <= limit
    assert DNS_LABEL.match(name), name
    assert name.endswith(f"-{suffix}")
    assert child_name(run, suffix, limit) == name
    if len(f"{run}-{suffix}") > limit:  # shortened: the hash keeps long names apart
        assert child_name(run + "x", suffix, limit) != name


@pytest.mark.parametrize(
    ("size", "quantity"),
    [("4GiB", "4Gi"), ("2 GiB", "2Gi"), ("3.5GB", "3500M"), ("512MiB", "512Mi")],
)
def test_dask_memory_sizes_become_kubernetes_quantities(size: str, quantity: str) -> None:
    assert k8s_quantity(size) == quantity


def test_dashboard_url_defaults_to_the_service_and_follows_a_template() -> None:
    assert dashboard_url(REF, OperatorConfig()) == (
        "http://occitanie-2023-dask-scheduler.maps.svc:8787/status"
    )
    templated = OperatorConfig(dashboard_url="https://{name}.{namespace}.dask.example.org/status")
    assert dashboard_url(REF, templated) == "https://occitanie-2023.maps.dask.example.org/status"


def test_resources_render_only_what_is_set() -> None:
    assert Resources(limits={"memory": "1Gi"}).as_dict() == {"limits": {"memory": "1Gi"}}


def with_compute(**compute: Any) -> RunManifest:
    document = production()
    document["spec"]["compute"].update(compute)
    return manifest(document)


def test_a_run_may_size_its_scheduler_but_not_pick_images_or_secrets() -> None:
    run = with_compute(
        cluster="kubernetes",
        kubernetes={"image": "evil.example.org/miner:1", "scheduler_memory": "6GiB"},
    )
    with pytest.raises(SpecConflictError) as error:
        config_for_run(CONFIG, run, REF)
    message = str(error.value)
    assert "spec.compute.kubernetes.image is 'evil.example.org/miner:1'" in message
    assert "runs.allowSpecOverrides=true" in message

    sized = config_for_run(
        CONFIG,
        with_compute(
            cluster="kubernetes", kubernetes={"image": CONFIG.image, "scheduler_memory": "6GiB"}
        ),
        REF,
    )
    assert sized.scheduler_resources.limits["memory"] == "6Gi"
    assert sized.image == CONFIG.image


def test_an_admin_may_let_runs_choose_their_pod_settings() -> None:
    lenient = CONFIG.model_copy(update={"allow_spec_overrides": True})
    run = with_compute(
        cluster="kubernetes",
        kubernetes={
            "image": "registry.example.org/sitsflow:2.0.0",
            "credentials_secret": "team-bucket",
            "service_account": "team-mapper",
            "image_pull_policy": "Always",
        },
    )
    config = config_for_run(lenient, run, REF)
    job = build_driver_job(REF, config)
    pod = job["spec"]["template"]["spec"]
    assert pod["serviceAccountName"] == "team-mapper"
    (driver,) = pod["containers"]
    assert driver["image"] == "registry.example.org/sitsflow:2.0.0"
    assert driver["imagePullPolicy"] == "Always"
    assert driver["envFrom"] == [{"secretRef": {"name": "team-bucket"}}]


def test_the_workers_run_in_the_runs_own_namespace() -> None:
    run = with_compute(
        cluster="kubernetes", kubernetes={"image": CONFIG.image, "namespace": "elsewhere"}
    )
    with pytest.raises(SpecConflictError, match="apply the run in namespace 'elsewhere'"):
        config_for_run(CONFIG, run, REF)


def test_adaptive_runs_get_an_autoscaler_and_the_driver_only_connects() -> None:
    document = production()
    document["spec"]["compute"].update(
        cluster="kubernetes",
        kubernetes={"image": CONFIG.image},
        adaptive={"minimum": 4, "maximum": 80},
    )
    run = manifest(document)
    autoscaler = build_dask_autoscaler(REF, run)
    assert autoscaler is not None
    assert autoscaler["spec"] == {"cluster": "occitanie-2023-dask", "minimum": 4, "maximum": 80}
    assert autoscaler["metadata"]["ownerReferences"][0]["uid"] == REF.uid
    assert build_dask_autoscaler(REF, manifest(production())) is None
    # The driver's manifest: connect to the operator's scheduler, start nothing itself.
    driver = manifest(driver_manifest(REF, document["spec"]))
    compute = driver.spec.compute
    assert (compute.cluster, compute.address) == (
        "address",
        "tcp://occitanie-2023-dask-scheduler.maps.svc:8786",
    )
    assert compute.kubernetes is None and compute.adaptive is None


def test_the_driver_waits_for_its_scheduler_then_starts() -> None:
    """The init container's script, run for real against a port on 127.0.0.1."""
    with socket.socket() as listening:
        listening.bind(("127.0.0.1", 0))
        listening.listen()
        port = listening.getsockname()[1]
        up = subprocess.run(
            [sys.executable, "-c", _WAIT_FOR_SCHEDULER, "127.0.0.1", str(port), "10"],
            capture_output=True,
            text=True,
            timeout=30,
        )
    assert up.returncode == 0, up.stderr
    down = subprocess.run(
        [sys.executable, "-c", _WAIT_FOR_SCHEDULER, "127.0.0.1", str(port), "1"],
        capture_output=True,
        text=True,
        timeout=30,
    )
    assert down.returncode == 1
    assert f"the dask scheduler 127.0.0.1:{port} did not answer in 1 s" in down.stderr
