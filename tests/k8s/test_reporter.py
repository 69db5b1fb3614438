"""The driver's progress reports: real merge patches (kr8s) to an in-memory API server on
127.0.0.1, throttled, best effort, and derived from the runner's stage and bar events."""

from __future__ import annotations

import asyncio
import io
import logging
from pathlib import Path
from typing import Any

import aiohttp
import pytest
from rich.console import Console

from pipeline.k8s.reporter import (
    ProgressTracker,
    ReportingProgress,
    StatusReporter,
    progress_for,
)
from pipeline.k8s.status import progress_text
from pipeline.run.progress import Progress
from pipeline.stages import stage_names
from tests.k8s.emulator import api_server, stored, write_kubeconfig

RUN = {
    "apiVersion": "sitsflow.dev/v1alpha1",
    "kind": "SitsRun",
    "metadata": {"name": "demo", "namespace": "runs"},
    "spec": {},
    "status": {"phase": "Running"},
}


class Clock:
    def __init__(self) -> None:
        self.now = 0.0

    def __call__(self) -> float:
        return self.now


@pytest.mark.asyncio
async def test_reports_are_merged_into_the_runs_status_and_throttled(tmp_path: Path) -> None:
    async with api_server() as (server, url), aiohttp.ClientSession() as session:
        async with session.post(
            f"{url}/apis/sitsflow.dev/v1alpha1/namespaces/runs/sitsruns", json=RUN
        ):
            pass
        kubeconfig = write_kubeconfig(tmp_path / "kubeconfig", url, "a-token")
        clock = Clock()
        reporter = StatusReporter(
            "runs", "demo", kubeconfig=kubeconfig, clock=clock, min_interval=5
        )

        def status() -> dict[str, Any]:
            return dict(stored(server, "sitsflow.dev/v1alpha1/sitsruns", "runs", "demo")["status"])

        # kr8s' sync API blocks: report from a thread, as the driver does, while the server serves.
        await asyncio.to_thread(reporter.update, stage="cube", progress="10%")
        assert status() == {"phase": "Running", "stage": "cube", "progress": "10%"}
        clock.now = 1.0
        await asyncio.to_thread(reporter.update, progress="12%")  # too soon: kept for later
        assert status()["progress"] == "10%"
        clock.now = 6.0
        await asyncio.to_thread(reporter.update, tiles="1/4")
        assert status() == {"phase": "Running", "stage": "cube", "progress": "12%", "tiles": "1/4"}
        await asyncio.to_thread(reporter.update, force=True, stage="predict")
        assert status()["stage"] == "predict"
        assert reporter.sent == 3
        patches = server["patch /apis/sitsflow.dev/v1alpha1/namespaces/runs/sitsruns/demo/status"]
        assert all(p.headers["Authorization"] == "Bearer a-token" for p in patches)


def test_an_unreachable_api_never_stops_the_run(
    caplog: pytest.LogCaptureFixture, tmp_path: Path
) -> None:
    from tests.servers._process import free_port

    gone = write_kubeconfig(tmp_path / "kubeconfig", f"http://127.0.0.1:{free_port()}", "t")
    reporter = StatusReporter("runs", "demo", kubeconfig=gone, min_interval=0)
    with caplog.at_level(logging.WARNING):
        reporter.update(progress="1%")
        reporter.update(progress="2%")
    assert reporter.sent == 0
    assert len([r for r in caplog.records if "cannot report progress" in r.message]) == 1


def test_reporting_is_on_only_in_an_operator_pod(tmp_path: Path) -> None:
    assert StatusReporter.from_environment({}, tmp_path) is None
    env = {
        "SITSFLOW_RUN_NAME": "demo",
        "SITSFLOW_RUN_NAMESPACE": "runs",
        "KUBERNETES_SERVICE_HOST": "10.0.0.1",
        "KUBERNETES_SERVICE_PORT": "443",
    }
    assert StatusReporter.from_environment(env, tmp_path) is None  # no token mounted
    (tmp_path / "token").write_text("t")
    reporter = StatusReporter.from_environment(env, tmp_path)
    assert reporter is not None
    assert (reporter.namespace, reporter.name) == ("runs", "demo")
    assert reporter.target == "SitsRun runs/demo"


def test_progress_for_a_plain_run_is_the_terminal_progress(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("SITSFLOW_RUN_NAME", raising=False)
    progress = progress_for(Console(file=io.StringIO()))
    assert type(progress) is Progress


def test_tracker_weights_stages_and_never_goes_back() -> None:
    tracker = ProgressTracker(("cube", "predict"))
    assert tracker.fields() == {"progress": "0%"}
    tracker.start("cube")
    tracker.bar("cube chunks", 4)
    tracker.advance("cube chunks", 2)
    assert tracker.fields() == {"progress": "25%", "stage": "cube"}
    tracker.finish("cube")
    tracker.start("validate")  # a stage the tracker did not know: added, progress kept
    assert tracker.fraction == 0.5
    tracker.finish("validate")
    tracker.start("predict")
    tracker.bar("predicted tiles", 3)
    tracker.advance("predicted tiles", 3)
    assert tracker.fields() == {
        "progress": "100%",
        "stage": "predict",
        "tilesDone": 3,
        "tilesTotal": 3,
        "tiles": "3/3",
    }


class Recorder(StatusReporter):
    def __init__(self) -> None:
        super().__init__("runs", "demo")
        self.reports: list[dict[str, Any]] = []

    def update(self, force: bool = False, **fields: Any) -> None:
        self.reports.append({"force": force, **fields})

    def flush(self) -> None:
        self.reports.append({"flush": True})


def test_reporting_progress_relays_the_runners_events() -> None:
    recorder = Recorder()
    progress = ReportingProgress(recorder, Console(file=io.StringIO()))
    with progress:
        progress.stage_started("discover")
        progress.stage_finished("discover", 0.1)
        progress.stage_started("cube")
        bar = progress.bar("cube chunks", 2)
        bar.advance()
        bar.advance()
        progress.stage_finished("cube", 1.0)
    stages = len(stage_names())  # every stage of the registry weighs the same
    assert recorder.reports[0] == {"force": True, "progress": "0%", "stage": "discover"}
    half = progress_text(1.5 / stages)  # discover done, cube half way
    assert {"force": False, "progress": half, "stage": "cube"} in recorder.reports
    assert recorder.reports[-2] == {"force": True, "progress": progress_text(2 / stages)}
    assert recorder.reports[-1] == {"flush": True}


def test_the_tracker_follows_the_stage_registry() -> None:
    assert ProgressTracker().stages == list(stage_names())
    assert ProgressTracker().stages[:2] == ["discover", "cube"]
