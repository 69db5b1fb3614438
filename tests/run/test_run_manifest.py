"""The run engine's part of the manifest: compute, outputs, metadata.

Every malformed manifest below goes through the real CLI (``sitsflow run``): it must exit with
code 2, name the field path and a fix, show no traceback and no secret, and write nothing.
"""

from __future__ import annotations

import copy
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
import yaml
from typer.testing import CliRunner

from pipeline.cli import app
from pipeline.errors import ManifestError
from pipeline.manifest import (
    ComputeSpec,
    KubernetesSpec,
    Metadata,
    OutputsSpec,
    json_schema,
    load_manifest,
    with_store,
)
from tests.conftest import DEMO_DIR, DEMO_MANIFEST

Change = Callable[[dict[str, Any]], None]


def write_manifest(folder: Path, change: Change) -> Path:
    data = yaml.safe_load(DEMO_MANIFEST.read_text())
    data["spec"]["sensors"][0]["catalog"]["url"] = str(DEMO_DIR / "catalog" / "catalog.json")
    data["spec"]["reference"]["path"] = str(DEMO_DIR / "reference" / "lulc.gpkg")
    data["spec"]["outputs"]["store"] = str(folder / "store")
    data = copy.deepcopy(data)
    change(data)
    path = folder / "run.yaml"
    path.write_text(yaml.safe_dump(data))
    return path


def compute(**values: Any) -> Change:
    return lambda d: d["spec"]["compute"].update(values)


def outputs(**values: Any) -> Change:
    return lambda d: d["spec"]["outputs"].update(values)


def metadata(**values: Any) -> Change:
    return lambda d: d["metadata"].update(values)


def kube(**values: Any) -> Change:
    def change(d: dict[str, Any]) -> None:
        d["spec"]["compute"].update(cluster="kubernetes", kubernetes={"image": "repo/img:1"})
        d["spec"]["compute"]["kubernetes"].update(values)

    return change


def both(*changes: Change) -> Change:
    def change(d: dict[str, Any]) -> None:
        for c in changes:
            c(d)

    return change


def _set(path: str, value: Any) -> Change:
    def change(d: dict[str, Any]) -> None:
        *parents, leaf = path.split(".")
        target = d
        for key in parents:
            target = target[key]
        target[leaf] = value

    return change


SECRET = "wJalrXUtnFEMI-K7MDENG"


def _catalog_with_credentials(d: dict[str, Any]) -> None:
    d["spec"]["sensors"][0]["catalog"]["url"] = f"https://user:{SECRET}@example.org/catalog.json"


def _reference_in_store(d: dict[str, Any]) -> None:
    d["spec"]["reference"]["path"] = d["spec"]["outputs"]["store"] + "/state/lulc.gpkg"


MALFORMED: list[tuple[str, Change, list[str]]] = [
    # types
    ("workers-text", compute(workers="two"), ["spec.compute.workers", "integer"]),
    ("threads-float", compute(threads_per_worker=1.5), ["spec.compute.threads_per_worker"]),
    ("chunk-text", compute(chunk_size="64px"), ["spec.compute.chunk_size"]),
    ("memory-number", compute(memory_limit=4), ["spec.compute.memory_limit"]),
    ("retries-list", compute(retries=[1]), ["spec.compute.retries"]),
    ("adaptive-number", compute(adaptive=5), ["spec.compute.adaptive"]),
    ("kubernetes-text", compute(cluster="kubernetes", kubernetes="img"),
     ["spec.compute.kubernetes"]),
    ("store-number", outputs(store=42), ["spec.outputs.store"]),
    ("outputs-text", _set("spec.outputs", "runs/x"), ["spec.outputs"]),
    ("labels-list", metadata(labels=["a"]), ["metadata.labels"]),
    ("metadata-text", _set("metadata", "demo"), ["metadata"]),
    ("timeout-text", compute(connect_timeout_s="soon"), ["spec.compute.connect_timeout_s"]),
    ("port-text", compute(dashboard_port="auto"), ["spec.compute.dashboard_port"]),
    # ranges
    ("workers-zero", compute(workers=0), ["spec.compute.workers", "greater than or equal"]),
    ("workers-huge", compute(workers=10000), ["spec.compute.workers"]),
    ("threads-zero", compute(threads_per_worker=0), ["spec.compute.threads_per_worker"]),
    ("chunk-tiny", compute(chunk_size=8), ["spec.compute.chunk_size"]),
    ("chunk-odd", compute(chunk_size=100), ["spec.compute.chunk_size", "multiple of 16", "96"]),
    ("chunk-huge", compute(chunk_size=10000), ["spec.compute.chunk_size"]),
    ("port-range", compute(dashboard_port=70000), ["spec.compute.dashboard_port"]),
    ("memory-words", compute(memory_limit="4 GB of RAM"), ["spec.compute.memory_limit"]),
    ("memory-tiny", compute(memory_limit="100MiB"), ["spec.compute.memory_limit", "256MiB"]),
    ("retries-many", compute(retries=11), ["spec.compute.retries"]),
    ("in-flight-zero", compute(max_units_in_flight=0), ["spec.compute.max_units_in_flight"]),
    ("timeout-zero", compute(connect_timeout_s=0), ["spec.compute.connect_timeout_s"]),
    ("adaptive-max-zero", compute(adaptive={"maximum": 0}), ["spec.compute.adaptive.maximum"]),
    ("adaptive-min-negative", compute(adaptive={"minimum": -1, "maximum": 4}),
     ["spec.compute.adaptive.minimum"]),
    ("adaptive-inverted", compute(adaptive={"minimum": 5, "maximum": 2}),
     ["spec.compute.adaptive.minimum", "above maximum"]),
    # a task and a reference that do not go together
    ("regression-with-labels", _set("spec.task", "regression"),
     ["spec", "task 'regression' needs values", "reference.value_field"]),
    ("classification-with-values",
     lambda d: d["spec"].update(
         reference={"path": d["spec"]["reference"]["path"], "value_field": "AREA"}),
     ["spec", "task 'classification' needs class labels", "task: regression"]),
    ("task-unknown", _set("spec.task", "segmentation"), ["spec.task", "extraction"]),
    ("regression-balancing-classes",
     lambda d: d["spec"].update(
         task="regression",
         reference={"path": d["spec"]["reference"]["path"], "value_field": "AREA"},
         sampling={"strategy": "smallest_class"}),
     ["spec", "balances classes", "'percentage'"]),
    ("scheduler-memory", kube(scheduler_memory="lots"),
     ["spec.compute.kubernetes.scheduler_memory"]),
    ("name-pattern", metadata(name="Demo_Run"), ["metadata.name"]),
    ("name-long", metadata(name="a" * 70), ["metadata.name"]),
    ("label-value-long", metadata(labels={"team": "x" * 70}), ["metadata.labels", "team"]),
    ("label-key-bad", metadata(labels={"bad key!": "x"}), ["metadata.labels", "bad key!"]),
    ("annotation-key-bad", metadata(annotations={"-bad": "x"}), ["metadata.annotations"]),
    # unknown keys
    ("typo-worker", compute(worker=2), ["spec.compute.worker", "did you mean 'workers'"]),
    ("outputs-path", outputs(path="x"), ["spec.outputs.path"]),
    ("misplaced-cluster", _set("spec.cluster", "local"), ["spec.cluster", "compute"]),
    ("metadata-owner", metadata(owner="me"), ["metadata.owner"]),
    ("top-level-status", _set("status", {}), ["status"]),
    ("camel-case-key", kube(imagePullPolicy="Always"),
     ["spec.compute.kubernetes.imagePullPolicy", "image_pull_policy"]),
    ("adaptive-max", compute(adaptive={"max": 3}), ["spec.compute.adaptive.max", "maximum"]),
    # conflicting options
    ("address-missing", compute(cluster="address"), ["spec.compute.address", "tcp://"]),
    ("address-unused", compute(address="tcp://sched:8786"), ["spec.compute.address", "local"]),
    ("kubernetes-missing", compute(cluster="kubernetes"), ["spec.compute.kubernetes", "image"]),
    ("kubernetes-unused", compute(kubernetes={"image": "repo/img:1"}),
     ["spec.compute.kubernetes", "cluster: kubernetes"]),
    ("adaptive-below-workers", compute(workers=8, adaptive={"maximum": 4}),
     ["spec.compute.workers", "adaptive.maximum"]),
    ("adaptive-above-workers", compute(workers=1, adaptive={"minimum": 3, "maximum": 4}),
     ["spec.compute.workers", "adaptive.minimum"]),
    ("same-map-paths", outputs(confidence="maps/labels.tif"), ["spec.outputs.confidence"]),
    ("report-inside-map", outputs(report="maps/labels.tif/report"), ["spec.outputs.report"]),
    ("unknown-cluster", compute(cluster="slurm"), ["spec.compute.cluster", "kubernetes"]),
    # bad paths and URLs
    ("address-no-scheme", compute(cluster="address", address="localhost:8786"),
     ["spec.compute.address"]),
    ("address-http", compute(cluster="address", address="http://sched:8786"),
     ["spec.compute.address"]),
    ("address-credentials", compute(cluster="address", address=f"tcp://u:{SECRET}@h:8786"),
     ["spec.compute.address", "***"]),
    ("image-bad", kube(image="Not An Image!"), ["spec.compute.kubernetes.image"]),
    ("namespace-bad", kube(namespace="Bad_NS"), ["spec.compute.kubernetes.namespace"]),
    ("secret-name-bad", kube(credentials_secret="AKIA/SECRET"),
     ["spec.compute.kubernetes.credentials_secret"]),
    ("store-http", outputs(store="https://example.org/runs"), ["spec.outputs.store", "HTTP"]),
    ("store-ftp", outputs(store="ftp://host/runs"), ["spec.outputs.store", "scheme"]),
    ("store-credentials", outputs(store=f"s3://AKIAKEY:{SECRET}@bucket/x"),
     ["spec.outputs.store", "credentials"]),
    ("store-bucket-bad", outputs(store="s3://Bad_Bucket/x"), ["spec.outputs.store", "bucket"]),
    ("store-no-bucket", outputs(store="s3:///x"), ["spec.outputs.store", "bucket"]),
    ("store-query", outputs(store="s3://bucket/x?versionId=1"), ["spec.outputs.store", "query"]),
    ("store-signed", outputs(store=f"https://host/x?sig={SECRET}"),
     ["spec.outputs.store", "query"]),
    ("store-http-credentials", outputs(store=f"https://u:{SECRET}@host/x"),
     ["spec.outputs.store", "credentials"]),
    ("store-file-relative", outputs(store="file://relative/x"), ["spec.outputs.store"]),
    ("catalog-credentials", _catalog_with_credentials,
     ["spec.sensors[0].catalog.url", "credentials"]),
    ("reference-in-store", _reference_in_store, ["spec.reference.path", "inside"]),
    # paths climbing out of the run store
    ("labels-parent", outputs(labels="../labels.tif"), ["spec.outputs.labels", ".."]),
    ("labels-absolute", outputs(labels="/tmp/labels.tif"), ["spec.outputs.labels"]),
    ("confidence-climbs", outputs(confidence="maps/../../c.tif"), ["spec.outputs.confidence"]),
    ("report-home", outputs(report="~/report"), ["spec.outputs.report"]),
    ("labels-url", outputs(labels="s3://bucket/labels.tif"), ["spec.outputs.labels"]),
    ("labels-png", outputs(labels="maps/labels.png"), ["spec.outputs.labels", ".tif"]),
    ("labels-in-state", outputs(labels="state/labels.tif"), ["spec.outputs.labels", "state"]),
    ("report-in-cube", outputs(report="cube.zarr/report"), ["spec.outputs.report", "cube.zarr"]),
    ("labels-empty-segment", outputs(labels="maps//labels.tif"), ["spec.outputs.labels"]),
    ("report-drive", outputs(report="C:/report"), ["spec.outputs.report"]),
    ("confidence-backslash", outputs(confidence="maps\\conf.tif"), ["spec.outputs.confidence"]),
    ("labels-in-map-store", outputs(labels="maps/map.zarr/x.tif"),
     ["spec.outputs.labels", "maps/map.zarr"]),
]  # fmt: skip


CASES = MALFORMED


def test_there_are_at_least_fifty_cases() -> None:
    assert len(CASES) >= 50
    assert len({name for name, _, _ in CASES}) == len(CASES)


def files_under(folder: Path) -> list[Path]:
    return sorted(p for p in folder.rglob("*") if p.name != "run.yaml")


@pytest.mark.parametrize(("change", "words"), [c[1:] for c in CASES], ids=[c[0] for c in CASES])
def test_malformed_manifests_are_refused_with_the_field_and_a_fix(
    tmp_path: Path, change: Change, words: list[str]
) -> None:
    manifest = write_manifest(tmp_path, change)
    result = CliRunner().invoke(app, ["--log-format", "text", "run", str(manifest)])
    output = result.output
    assert result.exit_code == 2, output
    error = output[output.index("error:") :]
    assert "\n\n" not in error.strip()  # one paragraph
    flat = " ".join(error.split())
    for word in words:
        assert word in flat, (word, output)
    assert "Fix:" in flat
    assert "Traceback" not in output
    assert SECRET not in output
    assert files_under(tmp_path) == []


def test_a_store_that_is_a_file_is_refused_before_anything_is_written(tmp_path: Path) -> None:
    blocker = tmp_path / "blocker"
    blocker.write_text("x")
    manifest = write_manifest(tmp_path, outputs(store=str(blocker / "store")))
    result = CliRunner().invoke(app, ["--log-format", "json", "run", str(manifest)])
    assert result.exit_code == 2
    assert "spec.outputs.store" in result.output and "Fix:" in result.output
    assert files_under(tmp_path) == [blocker]


def test_a_store_override_is_checked_like_the_manifest(tmp_path: Path) -> None:
    manifest = load_manifest(write_manifest(tmp_path, lambda d: None))
    with pytest.raises(ManifestError, match="--store") as caught:
        with_store(manifest, f"s3://key:{SECRET}@bucket/runs")
    assert SECRET not in str(caught.value)
    moved = with_store(manifest, "s3://bucket/runs/b/", base_dir=tmp_path)
    assert moved.spec.outputs.store == "s3://bucket/runs/b"
    local = with_store(manifest, "relative/store", base_dir=tmp_path)
    assert local.spec.outputs.store == str(tmp_path / "relative" / "store")


def test_valid_cluster_and_output_settings_load(tmp_path: Path) -> None:
    def change(d: dict[str, Any]) -> None:
        d["metadata"].update(
            namespace="mapping", labels={"example.org/team": "land-cover"}, annotations={"a": "b"}
        )
        d["spec"]["compute"].update(
            cluster="kubernetes",
            workers=4,
            adaptive={"minimum": 1, "maximum": 10},
            kubernetes={"image": "ghcr.io/org/sitsflow:0.1.0", "credentials_secret": "s3-keys"},
        )
        d["spec"]["outputs"].update(
            store="file://" + str(tmp_path / "s"), labels="lulc/2017.tif", report="accuracy"
        )

    spec = load_manifest(write_manifest(tmp_path, change)).spec
    assert spec.outputs.store == str(tmp_path / "s")
    assert spec.outputs.labels == "lulc/2017.tif"
    assert spec.compute.kubernetes == KubernetesSpec(
        image="ghcr.io/org/sitsflow:0.1.0", credentials_secret="s3-keys"
    )
    address = ComputeSpec(cluster="address", address="tcp://10.0.0.5:8786")
    assert address.address == "tcp://10.0.0.5:8786"
    assert ComputeSpec(cluster="address", address="tls://[::1]:8786").address


def test_every_field_is_documented_for_the_crd() -> None:
    for model in (ComputeSpec, KubernetesSpec, OutputsSpec, Metadata):
        for name, info in model.model_fields.items():
            assert info.description, f"{model.__name__}.{name} has no description"
    compute_schema = json_schema()["$defs"]["ComputeSpec"]
    assert {"address", "adaptive", "kubernetes", "retries"} <= set(compute_schema["properties"])
    assert compute_schema["additionalProperties"] is False
