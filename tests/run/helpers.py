"""Shared helpers of the run-engine tests: small demo manifests, CLI subprocesses, ledger reads."""

from __future__ import annotations

import contextlib
import json
import os
import signal
import subprocess
import sys
import time
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

import yaml

from tests.conftest import DEMO_DIR, DEMO_MANIFEST, REPO


def demo_manifest(folder: Path, change: Callable[[dict[str, Any]], None] | None = None) -> Path:
    """The demo manifest made small and quick (half a year, 32 px chunks, 20 trees, one
    worker), with absolute input paths; ``change`` edits its ``spec``."""
    data = yaml.safe_load(DEMO_MANIFEST.read_text())
    spec = data["spec"]
    spec["sensors"][0]["catalog"]["url"] = str(DEMO_DIR / "catalog" / "catalog.json")
    spec["reference"]["path"] = str(DEMO_DIR / "reference" / "lulc.gpkg")
    spec["period"] = {"start": "2017-03-01", "end": "2017-09-30"}
    spec["model"]["params"] = {"n_estimators": 20}
    spec["outputs"]["store"] = str(folder / "store")
    spec["compute"].update(chunk_size=32, dashboard_port=0, workers=1)
    spec.pop("postprocess", None)  # the map products: tests/postprocess/test_run.py
    if change is not None:
        change(spec)
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / "run.yaml"
    path.write_text(yaml.safe_dump(data))
    return path


def cli(
    *args: str, env: Mapping[str, str] | None = None, timeout: float = 420
) -> subprocess.CompletedProcess[str]:
    """``sitsflow ARGS`` in its own process, JSON logs, bounded in time."""
    return subprocess.run(
        [sys.executable, "-m", "pipeline.cli", "--log-format", "json", *args],
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=timeout,
        check=False,
        env={**os.environ, **(env or {})},
    )


def start_cli(
    *args: str, env: Mapping[str, str] | None = None, log: Path
) -> subprocess.Popen[bytes]:
    """``sitsflow ARGS`` started in its own process group (so a kill takes its workers too)."""
    return subprocess.Popen(
        [sys.executable, "-m", "pipeline.cli", "--log-format", "json", *args],
        cwd=REPO,
        stdout=log.open("wb"),
        stderr=subprocess.STDOUT,
        env={**os.environ, **(env or {})},
        start_new_session=True,
    )


def kill_group(process: subprocess.Popen[bytes]) -> None:
    """SIGKILL the process and everything in its group, and reap it."""
    with contextlib.suppress(ProcessLookupError):
        os.killpg(process.pid, signal.SIGKILL)
    process.wait(timeout=30)


def wait_until(
    condition: Callable[[], bool],
    *,
    timeout: float,
    what: str,
    process: subprocess.Popen[bytes] | None = None,
    interval: float = 0.05,
) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        if process is not None and process.poll() is not None:
            raise AssertionError(f"the run exited (code {process.returncode}) before {what}")
        if time.monotonic() > deadline:
            raise AssertionError(f"{what} did not happen within {timeout:.0f} s")
        time.sleep(interval)


def ledger_records(store: Path) -> dict[str, dict[str, dict[str, Any]]]:
    """stage -> key -> record, from a local run store (set-up records left out)."""
    out: dict[str, dict[str, dict[str, Any]]] = {}
    root = store / "state" / "ledger"
    if not root.is_dir():
        return out
    for folder in sorted(p for p in root.iterdir() if p.is_dir()):
        for path in sorted(folder.glob("*.json")):
            if path.name.startswith(("store@", "store-")):  # a Zarr store's set-up
                continue
            record = json.loads(path.read_text())
            out.setdefault(folder.name, {})[record["key"]] = record
    return out


def count_done(store: Path, stage: str) -> int:
    folder = store / "state" / "ledger" / stage
    if not folder.is_dir():
        return 0
    return sum(1 for p in folder.glob("*.json") if not p.name.startswith(("store@", "store-", ".")))


def events(output: str) -> list[dict[str, Any]]:
    """The JSON log events in a CLI's output (other lines, e.g. worker warnings, skipped)."""
    found = []
    for line in output.splitlines():
        line = line.strip()
        if line.startswith("{"):
            try:
                found.append(json.loads(line))
            except json.JSONDecodeError:
                continue
    return found


def last_summary(output: str) -> dict[str, Any]:
    for event in reversed(events(output)):
        if event.get("event") == "run.finished":
            return dict(event["summary"])
    raise AssertionError("no run.finished event in the output:\n" + output[-3000:])
