"""The executor on a real multi-process dask cluster (`dask scheduler` + `dask worker`)."""

from __future__ import annotations

import io
import json
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from distributed import Client

from pipeline.errors import InputDataError
from pipeline.run.executor import Executor, StageWork
from pipeline.run.logs import RunLog
from pipeline.run.progress import Progress
from pipeline.run.units import Ledger, Unit, content_hash
from pipeline.storage import RunStore
from tests.conftest import REPO
from tests.run.helpers import wait_until
from tests.run.work import write_square
from tests.servers.dask_cluster import DaskCluster, dask_cluster


@pytest.fixture(scope="module")
def cluster(tmp_path_factory: pytest.TempPathFactory) -> Iterator[DaskCluster]:
    with pytest.MonkeyPatch.context() as env:
        env.setenv("PYTHONPATH", str(REPO))  # the workers import tests.run.work
        with dask_cluster(n_workers=2, log_dir=tmp_path_factory.mktemp("cluster")) as running:
            yield running


@pytest.fixture(scope="module")
def client(cluster: DaskCluster) -> Iterator[Client]:
    with Client(cluster.address, timeout=30) as connected:
        connected.wait_for_workers(2, timeout=60)
        yield connected


def units(n: int, version: str = "v1") -> list[Unit]:
    return [Unit("square", f"u{i:03d}", content_hash("square", version, i), i) for i in range(n)]


def executor(store: RunStore, client: Client | None, **kwargs: Any) -> tuple[Executor, io.StringIO]:
    stream = io.StringIO()
    progress = Progress(log=RunLog("json", stream=stream), interval=0.0)
    return Executor(store, "test-session", client, progress, **kwargs), stream


def test_finished_units_are_skipped_changed_ones_rerun(client: Client, tmp_path: Path) -> None:
    store = RunStore(tmp_path / "store")
    run, log = executor(store, client)
    work = StageWork("square", units(6), write_square, {"root": store.root})
    first = run.run(work)
    assert (first.total, first.skipped, first.ran) == (6, 0, 6)
    assert first.summaries["u004"] == {"square": 16}
    assert store.read_text("out/5.txt") == "25"
    assert {r.worker for r in Ledger(store).read_many(work.units).values()} <= {
        "test-worker-0",
        "test-worker-1",
    }
    progress = [json.loads(line) for line in log.getvalue().splitlines()]
    assert progress[-1]["event"] == "stage.progress" and progress[-1]["done"] == 6

    again = run.run(work)
    assert (again.skipped, again.ran) == (6, 0)
    assert again.summaries == first.summaries  # read back from the ledger
    changed = units(6)[:4] + units(6, "v2")[4:]
    third = run.run(StageWork("square", changed, write_square, {"root": store.root}))
    assert (third.skipped, third.ran) == (4, 2)
    assert Ledger(store).finished("square")["u005"] == {changed[5].digest}
    assert len(store.list_names("attempts/5")) == 2 and len(store.list_names("attempts/0")) == 1


def test_bad_input_stops_the_stage_at_once_and_is_not_retried(
    client: Client, tmp_path: Path
) -> None:
    store = RunStore(tmp_path / "store")
    run, _ = executor(store, client, retries=3)
    context = {"root": store.root, "bad_input": (2,)}
    with pytest.raises(InputDataError) as caught:
        run.run(StageWork("square", units(3), write_square, context))
    assert caught.value.field == "spec.test" and caught.value.fix == "give it good input"
    assert len(store.list_names("attempts/2")) == 1  # not retried: the same input fails again
    assert "u002" not in Ledger(store).finished("square")


def test_transient_errors_are_retried(client: Client, tmp_path: Path) -> None:
    store = RunStore(tmp_path / "store")
    run, _ = executor(store, client, retries=2)
    outcome = run.run(StageWork("square", units(3), write_square,
                                {"root": store.root, "flaky": (1,)}))  # fmt: skip
    assert outcome.ran == 3
    assert len(store.list_names("attempts/1")) == 2


def _waiting_or_running(dask_scheduler: Any) -> int:
    """Tasks the scheduler holds that have not finished (a finished one waits to be released)."""
    active = ("released", "waiting", "no-worker", "queued", "processing")
    return sum(1 for task in dask_scheduler.tasks.values() if task.state in active)


def test_units_are_submitted_in_bounded_batches(client: Client, tmp_path: Path) -> None:
    store = RunStore(tmp_path / "store")
    run, _ = executor(store, client, max_in_flight=3)
    seen: list[int] = []
    stop = threading.Event()

    def sample() -> None:
        while not stop.is_set():
            seen.append(client.run_on_scheduler(_waiting_or_running))
            time.sleep(0.02)

    sampler = threading.Thread(target=sample)
    sampler.start()
    try:
        outcome = run.run(StageWork("square", units(30), write_square,
                                    {"root": store.root, "sleep": 0.05}))  # fmt: skip
    finally:
        stop.set()
        sampler.join()
    assert outcome.ran == 30
    assert seen and max(seen) <= 3


def test_driver_units_run_here(tmp_path: Path) -> None:
    store = RunStore(tmp_path / "store")
    run, _ = executor(store, None)
    outcome = run.run(StageWork("square", units(2), write_square, {"root": store.root},
                                on_cluster=False))  # fmt: skip
    assert outcome.ran == 2
    assert Ledger(store).read_many(units(2))["u001"].worker == "driver"


def test_a_worker_killed_mid_stage_loses_nothing(tmp_path: Path) -> None:
    from tests.run.helpers import kill_group

    store = RunStore(tmp_path / "store")
    with pytest.MonkeyPatch.context() as env:
        env.setenv("PYTHONPATH", str(REPO))
        with (
            dask_cluster(n_workers=2, log_dir=tmp_path) as cluster,
            Client(cluster.address, timeout=30) as connected,
        ):
            connected.wait_for_workers(2, timeout=60)
            run, _ = executor(store, connected)
            work = StageWork("square", units(24), write_square,
                             {"root": store.root, "sleep": 0.25})  # fmt: skip
            result: dict[str, Any] = {}
            thread = threading.Thread(target=lambda: result.update(outcome=run.run(work)))
            thread.start()
            wait_until(lambda: len(Ledger(store).finished("square")) >= 3, timeout=120,
                       what="three finished units")  # fmt: skip
            kill_group(cluster.workers[0])
            killed_at = len(Ledger(store).finished("square"))
            thread.join(timeout=300)
    assert killed_at < 24
    assert result["outcome"].ran == 24
    assert sorted(store.list_names("out")) == sorted(f"{i}.txt" for i in range(24))
    assert len(Ledger(store).finished("square")) == 24


def test_warning_names_come_back_as_their_classes() -> None:
    from pipeline.warnings import SamplingWarning, SitsflowWarning, category_named

    assert category_named("SamplingWarning") is SamplingWarning
    assert category_named("SitsflowWarning") is SitsflowWarning
    for foreign in ("FutureWarning", "category_named", "NoSuchWarning"):
        assert category_named(foreign) is SitsflowWarning  # never a library's or a function
