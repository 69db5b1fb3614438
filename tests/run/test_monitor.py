"""What a run reports about itself: peak worker memory (sampled from a real LocalCluster), the
progress events' rate and ETA, and the summary's throughput and memory from a real run."""

from __future__ import annotations

import io
import json
import time
from collections.abc import Iterator
from typing import Any

import numpy as np
import pytest
from dask.utils import parse_bytes
from distributed import Client

from pipeline.manifest import ComputeSpec
from pipeline.run import progress as progress_module
from pipeline.run.clusters import open_client
from pipeline.run.logs import RunLog
from pipeline.run.monitor import MemoryMonitor
from pipeline.run.progress import Progress
from tests.run.helpers import cli, demo_manifest, events, wait_until

HELD = 300 * 2**20
# An idle spawned worker holds its interpreter and what unpickling this module's functions
# imports (pandas, scikit-learn, numba through tests.run.helpers): 0.3-0.4 GiB, by test order.
IDLE_AT_MOST = 2**30
LIMIT = "2GiB"


def hold_memory(seconds: float) -> int:
    """Keep HELD bytes of touched memory for ``seconds`` (in a worker)."""
    block = np.ones(HELD, dtype=np.uint8)
    time.sleep(seconds)
    return int(block.sum())


@pytest.fixture(scope="module")
def client() -> Iterator[Client]:
    compute = ComputeSpec(workers=1, dashboard_port=0, memory_limit=LIMIT)
    with open_client(compute, run="monitor-test") as connected:
        yield connected


def test_the_peak_is_the_most_a_worker_held_and_within_its_limit(client: Client) -> None:
    (name,) = [w["name"] for w in client.scheduler_info(n_workers=-1)["workers"].values()]
    with MemoryMonitor(client, interval=0.1) as monitor:
        before = monitor.peak
        assert 0 < before < IDLE_AT_MOST  # an idle worker: its interpreter and imports
        assert client.submit(hold_memory, 4.0, pure=False).result() == HELD
    summary = monitor.summary()
    assert summary["peak_worker"] == str(name) and summary["workers_seen"] == 1
    assert summary["peak_worker_memory_limit_bytes"] == parse_bytes(LIMIT)
    # The worker's RSS while it held the block, seen in a heartbeat during the 4 s.
    assert before + HELD * 0.9 <= summary["peak_worker_memory_bytes"] <= parse_bytes(LIMIT)
    assert monitor.peaks == {str(name): summary["peak_worker_memory_bytes"]}


def test_a_worker_that_left_keeps_its_peak(client: Client) -> None:
    monitor = MemoryMonitor(client, interval=60)
    monitor.sample()
    seen = monitor.peaks
    assert len(seen) == 1 and next(iter(seen.values())) > 0

    class Gone:
        def scheduler_info(self, n_workers: int = -1) -> dict[str, Any]:
            return {"workers": {}}

    monitor._client = Gone()
    monitor.sample()
    assert monitor.peaks == seen and monitor.summary()["workers_seen"] == 1


def test_progress_events_carry_the_rate_and_what_is_left(monkeypatch: pytest.MonkeyPatch) -> None:
    now = [1000.0]
    monkeypatch.setattr(progress_module.time, "monotonic", lambda: now[0])
    stream = io.StringIO()
    progress = Progress(log=RunLog("json", stream=stream, run="r"), interval=10.0)
    progress.stage_started("cube")
    bar = progress.bar("cube chunks", 10)

    now[0] += 2.0
    bar.advance()  # within the interval: no event
    assert [e["event"] for e in events(stream.getvalue())] == ["stage.started"]

    now[0] += 9.0  # 11 s in, 5 of 10 done
    bar.advance(4)
    (event,) = [e for e in events(stream.getvalue()) if e["event"] == "stage.progress"]
    assert event["stage"] == "cube" and event["bar"] == "cube chunks"
    assert (event["done"], event["total"]) == (5, 10)
    assert event["rate_per_s"] == round(5 / 11, 4)
    assert event["eta_s"] == 11.0  # 5 left at 5/11 per second
    assert event["message"] == "  cube chunks: 5/10, 0.45/s, about 11 s left"

    now[0] += 1.0  # the last one is reported at once, without an ETA in the message
    bar.advance(5)
    last = [e for e in events(stream.getvalue()) if e["event"] == "stage.progress"][-1]
    assert (last["done"], last["rate_per_s"], last["eta_s"]) == (10, round(10 / 12, 4), 0.0)
    assert "left" not in last["message"]


@pytest.fixture(scope="module")
def finished_run(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    manifest = demo_manifest(tmp_path_factory.mktemp("monitored"))
    done = cli("run", str(manifest))
    assert done.returncode == 0, done.stdout + done.stderr[-3000:]
    store = manifest.parent / "store"
    wait_until(lambda: (store / "run.json").exists(), timeout=10, what="the summary")
    return {
        "summary": json.loads((store / "run.json").read_text()),
        "events": events(done.stderr),
    }


def test_the_summary_reports_peak_memory_within_the_worker_limit(
    finished_run: dict[str, Any],
) -> None:
    summary = finished_run["summary"]
    memory = summary["memory"]
    limit = parse_bytes(summary["manifest"]["spec"]["compute"]["memory_limit"])
    assert memory["workers_seen"] == summary["manifest"]["spec"]["compute"]["workers"] == 1
    assert memory["peak_worker_memory_limit_bytes"] == limit
    # More than an interpreter with numpy (the units read a cube and fit a forest), less
    # than the limit (the worker was never restarted for memory).
    assert 100 * 2**20 < memory["peak_worker_memory_bytes"] <= limit


def test_the_summary_throughput_is_the_pixels_over_the_stage_time(
    finished_run: dict[str, Any],
) -> None:
    summary = finished_run["summary"]
    compute = summary["manifest"]["spec"]["compute"]
    threads = compute["threads_per_worker"] * compute["workers"]
    cube = summary["throughput"]["cube"]
    # A fresh run computes every pixel of the grid once.
    assert cube["pixels"] == summary["estimate"]["pixels"] > 0
    assert summary["units"]["cube"]["ran"] == summary["units"]["cube"]["total"]
    for name in ("cube", "predict"):
        figures = summary["throughput"][name]
        seconds = summary["stage_seconds"][name]
        # The rate is taken over the time the stage's units took to run: at most the stage's
        # whole time (which also creates its store), at least what the cluster's ``threads``
        # threads need for the units' own compute.
        rate = figures["pixels_per_second"]
        assert figures["pixels"] / seconds <= rate * 1.001
        assert rate <= figures["pixels"] * threads / figures["unit_seconds"] * 1.001
        # The exact rate, but for the rounding of the recorded seconds (to 1 ms).
        exact = figures["pixels"] / figures["seconds"]
        assert abs(rate - exact) <= exact * 0.0005 / figures["seconds"] + 0.05
        assert figures["seconds"] <= seconds
        assert figures["units_per_second"] == pytest.approx(
            summary["units"][name]["ran"] * rate / figures["pixels"], rel=0.01
        )
    line = next(e for e in finished_run["events"] if e["event"] == "run.summary")
    assert f"cube {cube['pixels_per_second']:,.0f} px/s" in line["message"]
    peak = summary["memory"]["peak_worker_memory_bytes"] / 2**20
    assert f"peak worker memory {peak:.0f} MiB" in line["message"]
