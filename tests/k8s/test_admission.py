"""Admission: a SitsRun whose files the pods cannot reach is refused with the field, the value
and the fix; a run whose data live on a declared PersistentVolumeClaim is accepted and every pod
that reads or writes data mounts the claim."""

from __future__ import annotations

import copy
from pathlib import Path
from typing import Any

import kubernetes_validate
import pytest
import yaml

from pipeline.errors import ManifestError
from pipeline.k8s.admission import admission_message, cluster_problems
from pipeline.k8s.config import OperatorConfig
from pipeline.k8s.operator import InvalidRunError, validate_run
from pipeline.k8s.specs import RunRef, build_dask_cluster, build_driver_job, run_volumes
from pipeline.manifest import RunManifest, parse_manifest

REPO = Path(__file__).resolve().parents[2]
K8S_VERSION = "1.30"
REF = RunRef(name="occitanie-2023", namespace="maps", uid="9f1c2d3e-0000-4000-8000-000000000001")
CONFIG = OperatorConfig(image="registry.example.org/sitsflow:1.2.3")


def spec(path: str = "deploy/examples/production-s2-theia.yaml") -> dict[str, Any]:
    return dict(yaml.safe_load((REPO / path).read_text())["spec"])


def with_volumes(document: dict[str, Any], *volumes: dict[str, Any]) -> dict[str, Any]:
    document = copy.deepcopy(document)
    document["compute"] |= {
        "cluster": "kubernetes",
        "kubernetes": {"image": CONFIG.image, "volumes": list(volumes)},
    }
    return document


def manifest(document: dict[str, Any]) -> RunManifest:
    text = yaml.safe_dump(
        {
            "apiVersion": "sitsflow.dev/v1alpha1",
            "kind": "SitsRun",
            "metadata": {"name": REF.name},
            "spec": document,
        }
    )
    return parse_manifest(text, base_dir=Path("/"))


def test_runs_on_object_storage_and_the_bundled_demo_are_admitted() -> None:
    assert cluster_problems(spec()) == []
    # The demo reads files shipped inside the image (/opt/sitsflow) and writes to S3.
    assert cluster_problems(spec("deploy/examples/demo-run.yaml")) == []


def test_a_local_store_is_refused_with_the_field_the_value_and_the_fix() -> None:
    document = spec()
    document["outputs"]["store"] = "/data/out"
    message = admission_message(document)
    assert message is not None
    assert message.startswith("spec.outputs.store: '/data/out' is a local path")
    assert "s3://bucket/" in message
    assert "compute.kubernetes.volumes: [{claim: <pvc name>, mount_path: /data}]" in message
    # The operator refuses it for good, before creating anything.
    with pytest.raises(InvalidRunError, match=r"cannot run in the cluster:\nspec.outputs.store"):
        validate_run(REF, document)


def test_a_relative_reference_and_a_file_url_are_refused() -> None:
    document = spec()
    document["reference"]["path"] = "reference/lulc.gpkg"
    document["sensors"][0]["catalog"] = {"kind": "static", "url": "file:///srv/catalog.json"}
    problems = cluster_problems(document)
    assert [p.field for p in problems] == ["sensors[0].catalog.url", "reference.path"]
    assert "'file:///srv/catalog.json' is a local path (an input)" in str(problems[0])
    assert "'reference/lulc.gpkg' is a relative path" in str(problems[1])
    assert "has no folder it could be relative to" in str(problems[1])
    text = admission_message(document) or ""
    assert "spec.reference.path: " in text and "spec.sensors[0].catalog.url: " in text


def test_paths_on_a_declared_claim_are_admitted_and_a_read_only_store_is_not() -> None:
    document = with_volumes(
        spec(),
        {"claim": "campaign-data", "mount_path": "/data", "read_only": True},
        {"claim": "campaign-maps", "mount_path": "/maps"},
    )
    document["reference"]["path"] = "/data/reference-2023.gpkg"
    document["outputs"]["store"] = "/maps/occitanie-2023"
    assert cluster_problems(document) == []
    validate_run(REF, document)

    document["outputs"]["store"] = "/data/out"
    (problem,) = cluster_problems(document)
    assert problem.field == "outputs.store"
    assert "mounted read-only at /data" in str(problem) and "read_only: false" in str(problem)


def test_volume_rules_of_the_manifest() -> None:
    for volumes, words in (
        ([{"claim": "a", "mount_path": "/tmp/x"}], "overlaps /tmp"),
        ([{"claim": "a", "mount_path": "data"}], "mount_path"),
        (
            [{"claim": "a", "mount_path": "/data"}, {"claim": "b", "mount_path": "/data/b"}],
            "one would hide the other",
        ),
    ):
        with pytest.raises(ManifestError, match=words):
            manifest(with_volumes(spec(), *volumes))


def test_the_driver_and_every_worker_mount_the_claims_and_the_scheduler_does_not() -> None:
    document = with_volumes(
        spec(),
        {"claim": "campaign-data", "mount_path": "/data", "read_only": True},
        {"claim": "campaign-maps", "mount_path": "/maps"},
    )
    run = manifest(document)
    volumes = run_volumes(run)
    assert [(v.claim, v.mount_path, v.read_only) for v in volumes] == [
        ("campaign-data", "/data", True),
        ("campaign-maps", "/maps", False),
    ]
    cluster = build_dask_cluster(REF, run, CONFIG)
    job = build_driver_job(REF, CONFIG, volumes)
    kubernetes_validate.validate(job, K8S_VERSION, strict=True)
    pods = {
        "driver": job["spec"]["template"]["spec"],
        "worker": cluster["spec"]["worker"]["spec"],
        "scheduler": cluster["spec"]["scheduler"]["spec"],
    }
    for role, pod in pods.items():
        claims = {
            v["name"]: v["persistentVolumeClaim"]
            for v in pod["volumes"]
            if "persistentVolumeClaim" in v
        }
        container = pod["containers"][0]
        mounts = {m["name"]: m for m in container["volumeMounts"]}
        if role == "scheduler":
            assert claims == {}  # it reads no data
            continue
        assert sorted(c["claimName"] for c in claims.values()) == ["campaign-data", "campaign-maps"]
        for name, claim in claims.items():
            mount = mounts[name]
            expected = "/data" if claim["claimName"] == "campaign-data" else "/maps"
            assert mount["mountPath"] == expected
            assert mount["readOnly"] is claim["readOnly"] is (expected == "/data")
        # Each worker pod template is a valid pod spec for Kubernetes.
        kubernetes_validate.validate(
            {"apiVersion": "v1", "kind": "Pod", "metadata": {"name": role}, "spec": pod},
            K8S_VERSION,
            strict=True,
        )


def test_a_kubernetes_run_started_from_a_workstation_mounts_the_claims_in_its_workers() -> None:
    from pipeline.manifest import resolve
    from pipeline.run.clusters import kubernetes_cluster_spec

    document = with_volumes(spec(), {"claim": "campaign-data", "mount_path": "/data"})
    compute = resolve(manifest(document)).compute
    cluster = kubernetes_cluster_spec(compute, REF.name, {})
    worker = cluster["spec"]["worker"]["spec"]
    (claim,) = [v for v in worker["volumes"] if "persistentVolumeClaim" in v]
    assert claim["persistentVolumeClaim"] == {"claimName": "campaign-data", "readOnly": False}
    mounts = {m["name"]: m["mountPath"] for m in worker["containers"][0]["volumeMounts"]}
    assert mounts[claim["name"]] == "/data"
