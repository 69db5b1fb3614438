"""Reliability of whole runs, through the real CLI in its own processes, on real clusters.

* a driver killed (SIGKILL, with its LocalCluster) half way through prediction, then
  ``--resume``: it completes, no finished unit runs again (ledger sessions and log events
  counted), and the maps are byte-identical to an undisturbed run. That run keeps no cube
  (``outputs.keep_cube: false``, fused chunks: each predict unit computes its chunk's features
  from the imagery), the undisturbed one does: its maps and samples table are also those of the
  cube path, to the bit, and no cube is written;
* ``sitsflow status`` on the interrupted run says what is done and what is left (and that the
  cube is not kept);
* a changed model parameter reruns train, predict, mosaic and validate only;
* workers killed (SIGKILL) in the middle of the cube and of the prediction stage of a run on an
  existing scheduler (``dask scheduler`` + ``dask worker`` processes) writing to an S3 run store
  (moto): it completes with byte-identical maps, and the fake credentials in its environment
  appear in no log line and no object it wrote.
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path
from typing import Any

import boto3
import geopandas as gpd
import pandas as pd
import pytest
from typer.testing import CliRunner

from pipeline.cli import app
from tests.run.helpers import (
    cli,
    count_done,
    demo_manifest,
    events,
    kill_group,
    last_summary,
    ledger_records,
    start_cli,
    wait_until,
)
from tests.servers.dask_cluster import dask_cluster
from tests.servers.s3 import ACCESS_KEY, SECRET_KEY, moto_s3_server

pytestmark = pytest.mark.slow

MAPS = ("maps/labels.tif", "maps/confidence.tif")


def _no_cube(spec: dict[str, Any]) -> None:
    spec["outputs"]["keep_cube"] = False


def map_bytes(store: Path) -> dict[str, bytes]:
    return {name: (store / name).read_bytes() for name in MAPS}


@pytest.fixture(scope="module")
def reference(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """An undisturbed run on a LocalCluster: the maps every other run must reproduce."""
    folder = tmp_path_factory.mktemp("reference")
    done = cli("run", str(demo_manifest(folder)))
    assert done.returncode == 0, done.stderr[-5000:]
    return folder / "store"


@pytest.fixture(scope="module")
def interrupted(reference: Path, tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    """A run without a cube (fused chunks) whose driver (and its local workers) is killed half
    way through prediction, then its status, then its resumption."""
    folder = tmp_path_factory.mktemp("interrupted")
    manifest = demo_manifest(folder, _no_cube)
    store = folder / "store"
    total = len(ledger_records(reference)["predict"])
    process = start_cli("run", str(manifest), log=folder / "killed.log")
    try:
        wait_until(
            lambda: count_done(store, "predict") >= total // 2,
            timeout=400,
            what="half of the prediction",
            process=process,
        )
    finally:
        kill_group(process)
    before = ledger_records(store)
    status = CliRunner().invoke(app, ["--log-format", "json", "status", str(manifest)])
    refused = CliRunner().invoke(app, ["--log-format", "json", "run", str(manifest)])
    resumed = cli("run", str(manifest), "--resume")
    return {
        "manifest": manifest,
        "store": store,
        "before": before,
        "status": status,
        "refused": refused,
        "resumed": resumed,
        "after": ledger_records(store),
        "total_predict": total,
    }


def test_driver_killed_half_way_then_resumed_recomputes_nothing(
    interrupted: dict[str, Any], reference: Path
) -> None:
    before, after, resumed = interrupted["before"], interrupted["after"], interrupted["resumed"]
    assert resumed.returncode == 0, resumed.stderr[-5000:]
    # Killed half way through prediction: every earlier stage finished, prediction did not.
    assert {"discover", "samples", "train"} <= set(before) and "cube" not in before
    assert 0 < len(before["predict"]) < interrupted["total_predict"]
    # No unit finished before the kill ran again: its record is still the first session's.
    for stage, records in before.items():
        for key, record in records.items():
            assert after[stage][key]["session"] == record["session"], (stage, key)
            assert after[stage][key]["finished"] == record["finished"], (stage, key)
    summary = last_summary(resumed.stderr)
    for stage, counts in summary["units"].items():
        assert counts["skipped"] == len(before.get(stage, {})), stage
        assert counts["ran"] == counts["total"] - counts["skipped"], stage
    ran = [e for e in events(resumed.stderr) if e.get("event") == "unit.finished"]
    assert len(ran) == summary["units_run"] > 0
    assert not {(e["stage"], e["unit"]) for e in ran} & {
        (stage, key) for stage, records in before.items() for key in records
    }
    assert map_bytes(interrupted["store"]) == map_bytes(reference)
    leftovers = [p for p in interrupted["store"].rglob("*") if ".tmp-" in p.name]
    assert leftovers == []


def test_the_fused_run_equals_the_cube_run_and_writes_no_cube(
    interrupted: dict[str, Any], reference: Path
) -> None:
    store = interrupted["store"]
    assert map_bytes(store) == map_bytes(reference)  # labels.tif and confidence.tif
    samples = "samples/samples.parquet"
    fused, kept = gpd.read_parquet(store / samples), gpd.read_parquet(reference / samples)
    pd.testing.assert_frame_equal(fused, kept, check_exact=True)
    assert (reference / "cube.zarr").is_dir() and not (store / "cube.zarr").exists()
    summary = last_summary(interrupted["resumed"].stderr)
    assert "cube" not in summary["outputs"] and "not kept" in summary["estimate"]["cube"]
    assert summary["digests"] == json.loads((reference / "run.json").read_text())["digests"]


def test_status_of_an_interrupted_run(interrupted: dict[str, Any]) -> None:
    status = interrupted["status"]
    assert status.exit_code == 0, status.output[-3000:]
    found = {e["stage"]: e for e in events(status.output) if e.get("event") == "status.stage"}
    assert found["cube"]["total"] == 0 and "not kept" in found["cube"]["message"]
    before = interrupted["before"]
    for stage in ("discover", "cube", "samples", "train", "predict", "mosaic", "validate"):
        assert found[stage]["done"] == len(before.get(stage, {})), stage
        assert found[stage]["left"] == found[stage]["total"] - found[stage]["done"]
    assert found["predict"]["left"] > 0
    (session,) = [e for e in events(status.output) if e.get("event") == "status.session"]
    assert "interrupted" in session["message"]  # killed: its record still says running
    incomplete = [e for e in events(status.output) if e.get("event") == "status.incomplete"]
    assert incomplete and "--resume" in incomplete[0]["message"]


def test_a_second_run_into_the_same_store_needs_resume(interrupted: dict[str, Any]) -> None:
    refused = interrupted["refused"]  # asked before the resumption, on the interrupted store
    assert refused.exit_code == 2
    flat = " ".join(refused.output.split())
    assert "spec.outputs.store" in flat and "--resume" in flat and "Fix:" in flat


def test_a_model_parameter_change_reruns_only_what_depends_on_the_model(
    interrupted: dict[str, Any], tmp_path: Path
) -> None:
    store = tmp_path / "store"
    shutil.copytree(interrupted["store"], store)

    def more_trees(spec: dict[str, Any]) -> None:
        _no_cube(spec)  # as the interrupted run (a cube asked for now would be built: 16 units)
        spec["model"]["params"] = {"n_estimators": 21}

    manifest = demo_manifest(tmp_path / "changed", more_trees)
    done = cli("run", str(manifest), "--store", str(store), "--resume")
    assert done.returncode == 0, done.stderr[-5000:]
    units = last_summary(done.stderr)["units"]
    assert "cube" not in units  # no cube: no cube unit at all
    for stage in ("discover", "samples"):
        assert units[stage]["ran"] == 0, (stage, units[stage])
    for stage in ("train", "predict", "mosaic", "validate"):
        assert units[stage]["ran"] == units[stage]["total"] > 0, (stage, units[stage])


def _s3_count(client: Any, bucket: str, prefix: str) -> int:
    pages = client.get_paginator("list_objects_v2").paginate(Bucket=bucket, Prefix=prefix)
    return sum(
        1
        for page in pages
        for obj in page.get("Contents", [])
        if not obj["Key"].rsplit("/", 1)[-1].startswith("store@")
    )


def test_workers_killed_mid_stage_on_an_existing_scheduler_with_an_s3_store(
    reference: Path, tmp_path: Path
) -> None:
    bucket, prefix = "sitsflow-runs", "runs/killed-workers"
    total = len(ledger_records(reference)["cube"])
    with moto_s3_server() as s3, pytest.MonkeyPatch.context() as env:
        for key, value in s3.env.items():
            env.setenv(key, value)  # the cluster's processes and the CLI inherit them
        client = boto3.client("s3", endpoint_url=s3.endpoint_url)
        client.create_bucket(Bucket=bucket)
        with dask_cluster(n_workers=3, log_dir=tmp_path) as cluster:

            def on_the_cluster(spec: dict[str, Any]) -> None:
                spec["compute"].update(cluster="address", address=cluster.address)
                spec["outputs"]["store"] = f"s3://{bucket}/{prefix}"

            manifest = demo_manifest(tmp_path / "run", on_the_cluster)
            log = tmp_path / "driver.log"
            process = start_cli("run", str(manifest), log=log)
            try:
                for stage, victim in (("cube", 0), ("predict", 1)):
                    ledger = f"{prefix}/state/ledger/{stage}/"
                    wait_until(
                        lambda ledger=ledger: _s3_count(client, bucket, ledger) >= 2,
                        timeout=400,
                        what=f"two {stage} units",
                        process=process,
                    )
                    kill_group(cluster.workers[victim])
                    assert _s3_count(client, bucket, ledger) < total, f"{stage} ended too soon"
                assert process.wait(timeout=400) == 0, log.read_text()[-5000:]
            finally:
                if process.poll() is None:
                    kill_group(process)
        output = log.read_text()
        summary = last_summary(output)
        assert summary["units"]["cube"]["ran"] == total
        for name in MAPS:
            body = client.get_object(Bucket=bucket, Key=f"{prefix}/{name}")["Body"].read()
            assert body == (reference / name).read_bytes(), name
        # The fake credentials of the environment are in no log line and no stored object.
        assert SECRET_KEY not in output and ACCESS_KEY not in output
        for page in client.get_paginator("list_objects_v2").paginate(Bucket=bucket):
            for obj in page.get("Contents", []):
                data = client.get_object(Bucket=bucket, Key=obj["Key"])["Body"].read()
                assert SECRET_KEY.encode() not in data, obj["Key"]
                assert ACCESS_KEY.encode() not in data, obj["Key"]


def test_driver_killed_in_the_middle_of_the_cube_then_resumed(
    reference: Path, tmp_path_factory: pytest.TempPathFactory
) -> None:
    """The same as above, but killed while the cube is half built: no finished chunk is built
    again, the rest of the chain runs, and the maps are byte-identical."""
    folder = tmp_path_factory.mktemp("killed-in-cube")
    manifest = demo_manifest(folder)
    store = folder / "store"
    total = len(ledger_records(reference)["cube"])
    process = start_cli("run", str(manifest), log=folder / "killed.log")
    try:
        wait_until(
            lambda: count_done(store, "cube") >= total // 2,
            timeout=400,
            what="half of the cube",
            process=process,
            interval=0.02,
        )
    finally:
        kill_group(process)
    before = ledger_records(store)
    assert 0 < len(before["cube"]) < total
    assert "train" not in before
    resumed = cli("run", str(manifest), "--resume")
    assert resumed.returncode == 0, resumed.stderr[-5000:]
    after = ledger_records(store)
    for key, record in before["cube"].items():
        assert after["cube"][key]["session"] == record["session"], key
    summary = last_summary(resumed.stderr)
    assert summary["units"]["cube"]["skipped"] == len(before["cube"])
    assert summary["units"]["cube"]["ran"] == total - len(before["cube"])
    assert map_bytes(store) == map_bytes(reference)
