"""Whole runs through the real CLI that meet bad luck: a missing asset, a store frozen mid-run,
credentials in the environment and in catalog headers.

* a missing asset file stops the run at planning (exit 2, the file named, no traceback, nothing
  written); restored, the run gives the undisturbed run's maps byte for byte;
* a store made unwritable (``chattr +i``: root writes through permissions) while the cube is
  built stops the run (exit 2, the path, --resume, no traceback); made writable again,
  ``--resume`` keeps every finished unit and gives the undisturbed run's maps byte for byte;
* credential values (headers_from_env, GDAL_HTTP_BEARER, AWS keys) and any token of them are in
  no log line, no stored file and no rendered Kubernetes spec.
"""

from __future__ import annotations

import json
import shutil
import subprocess
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from pipeline.secrets import parts
from tests.conftest import DEMO_DIR
from tests.run.helpers import (
    cli,
    count_done,
    demo_manifest,
    kill_group,
    ledger_records,
    start_cli,
    wait_until,
)
from tests.servers.misbehaving_http import misbehaving_server

pytestmark = pytest.mark.slow

MAPS = ("maps/labels.tif", "maps/confidence.tif")
HEADER_TOKEN = "hdr-7c1f0e9a2b4d"  # in a variable whose name does not look secret
SECRETS = {
    "CATALOG_HEADER_VALUE": f"Bearer {HEADER_TOKEN}",
    "GDAL_HTTP_BEARER": "gdal-bearer-5e8a1c3f9d",
    "AWS_SECRET_ACCESS_KEY": "aws-secret-0b9e7d5c3a",
    "AZURE_STORAGE_SAS_TOKEN": "sv=2024&sig=azsig4f2e8c6a1b",
}
WITH_HEADER = {"Authorization": "CATALOG_HEADER_VALUE"}


def _pieces() -> set[str]:
    found: set[str] = set()
    for value in SECRETS.values():
        found |= parts(value)
    return found


def map_bytes(store: Path) -> dict[str, bytes]:
    return {name: (store / name).read_bytes() for name in MAPS}


def _with_header(spec: dict[str, Any]) -> None:
    spec["sensors"][0]["catalog"]["headers_from_env"] = WITH_HEADER


@pytest.fixture(scope="module")
def reference(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    """An undisturbed run, with credentials in its environment and a catalog header."""
    folder = tmp_path_factory.mktemp("reference")
    done = cli("run", str(demo_manifest(folder, _with_header)), env=SECRETS)
    assert done.returncode == 0, done.stderr[-5000:]
    return {"store": folder / "store", "output": done.stdout + done.stderr}


def _copy_catalog(folder: Path) -> Path:
    target = folder / "data" / "catalog"
    shutil.copytree(DEMO_DIR / "catalog", target)
    return target


def test_no_secret_in_logs_store_or_kubernetes_specs(reference: dict[str, Any]) -> None:
    from pipeline.run.clusters import kubernetes_cluster_spec
    from pipeline.run.config import ComputeConfig, KubernetesConfig
    from pipeline.run.dask_spec import worker_environment

    pieces = _pieces()
    output = reference["output"]
    for piece in pieces:
        assert piece not in output, piece
    for path in reference["store"].rglob("*"):
        if path.is_file():
            data = path.read_bytes()
            for piece in pieces:
                assert piece.encode() not in data, (path, piece)
    compute = ComputeConfig(
        cluster="kubernetes", kubernetes=KubernetesConfig(image="ghcr.io/example/sitsflow:1")
    )
    env = {**SECRETS, "AWS_REGION": "eu-west-1", "GDAL_HTTP_TIMEOUT": "30"}
    spec = json.dumps(kubernetes_cluster_spec(compute, "run", worker_environment(env)))
    assert "GDAL_HTTP_TIMEOUT" in spec  # settings are shipped, credentials are not
    for piece in pieces:
        assert piece not in spec, piece


@pytest.mark.timeout(120)
def test_a_401_echoing_the_header_leaks_nothing_through_the_cli(tmp_path: Path) -> None:
    with misbehaving_server("echo-401") as server:

        def on_the_api(spec: dict[str, Any]) -> None:
            spec["sensors"][0]["catalog"] = {
                "kind": "stac_api", "url": server.url, "collections": ["s2"],
                "bbox": [14.0, 46.0, 15.0, 47.0], "timeout_s": 2, "retries": 1,
                "headers_from_env": WITH_HEADER,
            }  # fmt: skip

        done = cli("run", str(demo_manifest(tmp_path, on_the_api)), env=SECRETS, timeout=100)
    output = done.stdout + done.stderr
    assert done.returncode == 2, output[-3000:]
    assert "HTTP 401" in output and "Traceback" not in output
    for piece in _pieces():
        assert piece not in output, piece
    assert not (tmp_path / "store").exists()


def test_a_missing_asset_stops_at_planning_and_the_fixed_run_gives_the_same_maps(
    reference: dict[str, Any], tmp_path: Path
) -> None:
    catalog = _copy_catalog(tmp_path)
    victim = next(iter(sorted(catalog.rglob("slovenia-s2-20170521*_NDVI.tif"))))
    hidden = tmp_path / "hidden.tif"
    victim.rename(hidden)

    def on_the_copy(spec: dict[str, Any]) -> None:
        spec["sensors"][0]["catalog"]["url"] = str(catalog / "catalog.json")
        _with_header(spec)

    manifest = demo_manifest(tmp_path / "run", on_the_copy)
    store = tmp_path / "run" / "store"
    stopped = cli("run", str(manifest), env=SECRETS)
    output = stopped.stdout + stopped.stderr
    assert stopped.returncode == 2, output[-3000:]
    flat = " ".join(output.split())
    assert victim.name in flat and "does not exist" in flat and "on_bad_item" in flat
    assert "Traceback" not in output
    assert not store.exists()  # found before anything was written
    hidden.rename(victim)
    fixed = cli("run", str(manifest), "--resume", env=SECRETS)
    assert fixed.returncode == 0, fixed.stderr[-5000:]
    assert map_bytes(store) == map_bytes(reference["store"])


def test_a_skipped_item_is_named_in_the_report(tmp_path: Path) -> None:
    catalog = _copy_catalog(tmp_path)
    victim = next(iter(sorted(catalog.rglob("slovenia-s2-20170521*_NDVI.tif"))))
    victim.unlink()

    def skip(spec: dict[str, Any]) -> None:
        spec["sensors"][0]["catalog"].update(url=str(catalog / "catalog.json"), on_bad_item="skip")

    done = cli("run", str(demo_manifest(tmp_path / "run", skip)))
    assert done.returncode == 0, done.stderr[-5000:]
    report = tmp_path / "run" / "store" / "report"
    item = victim.parent.name
    (entry,) = json.loads((report / "metrics.json").read_text())["skipped_items"]
    assert entry["item"] == item and entry["sensor"] == "s2"
    assert victim.name in entry["problem"] and "does not exist" in entry["problem"]
    page = (report / "report.html").read_text()
    assert "Items left out" in page and f"<td>{item}</td>" in page


@pytest.fixture
def freezable(tmp_path: Path) -> Iterator[Path]:
    probe = tmp_path / "probe"
    probe.mkdir()
    made = subprocess.run(["chattr", "+i", str(probe)], capture_output=True, check=False)
    if made.returncode != 0:
        pytest.skip(f"chattr +i is not available here: {made.stderr.decode()[:200]}")
    subprocess.run(["chattr", "-i", str(probe)], check=True)
    yield tmp_path
    subprocess.run(["chattr", "-R", "-i", str(tmp_path)], check=False, capture_output=True)


def test_a_store_frozen_mid_run_stops_cleanly_and_resume_gives_the_same_maps(
    reference: dict[str, Any], freezable: Path
) -> None:
    manifest = demo_manifest(freezable / "run", _with_header)
    store = freezable / "run" / "store"
    log = freezable / "frozen.log"
    total = len(ledger_records(reference["store"])["cube"])
    process = start_cli("run", str(manifest), env=SECRETS, log=log)
    try:
        wait_until(
            lambda: count_done(store, "cube") >= 2,
            timeout=400,
            what="two cube units",
            process=process,
            interval=0.02,
        )
        subprocess.run(["chattr", "-R", "+i", str(store)], check=True)
        code = process.wait(timeout=300)
    finally:
        if process.poll() is None:
            kill_group(process)
        subprocess.run(["chattr", "-R", "-i", str(store)], check=False)
    output = log.read_text()
    assert code == 2, output[-5000:]
    flat = " ".join(output.split())
    assert "cannot be written any more" in flat and "--resume" in flat, flat[-3000:]
    assert str(store) in flat
    assert "Traceback" not in output
    before = ledger_records(store)
    assert 0 < len(before.get("cube", {})) < total
    resumed = cli("run", str(manifest), "--resume", env=SECRETS)
    assert resumed.returncode == 0, resumed.stderr[-5000:]
    after = ledger_records(store)
    for key, record in before["cube"].items():  # nothing finished before ran again
        assert after["cube"][key]["session"] == record["session"], key
    assert map_bytes(store) == map_bytes(reference["store"])
    states = {
        json.loads(p.read_text())["state"] for p in (store / "state" / "sessions").glob("*.json")
    }
    assert "running" not in states  # the frozen session: failed or interrupted, not "running"
