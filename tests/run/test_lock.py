"""One driver per run store: a live driver's lock refuses a second one, a dead one's does not."""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import pytest

from pipeline.errors import OutputError
from pipeline.run.lock import LOCK, STALE_S, StoreLock, check_free, holder
from pipeline.storage import RunStore


def write_lock(store: RunStore, *, host: str, pid: int, age: float) -> None:
    body = {"session": "other", "host": host, "pid": pid, "heartbeat": time.time() - age}
    store.write_text(LOCK, json.dumps(body))


def test_a_live_driver_holds_the_store(tmp_path: Path) -> None:
    store = RunStore(tmp_path)
    sleeper = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)"])
    try:
        write_lock(store, host=socket.gethostname(), pid=sleeper.pid, age=1)
        with pytest.raises(OutputError) as caught:
            check_free(store)
        assert "in use by session 'other'" in str(caught.value)
        assert caught.value.field == "outputs.store"
        with pytest.raises(OutputError), StoreLock(store, "mine"):
            pass
    finally:
        sleeper.kill()
        sleeper.wait()
    # Its process is gone: the lock is taken over at once on the same host.
    assert holder(store) is None
    with StoreLock(store, "mine"):
        assert json.loads(store.read_text(LOCK))["session"] == "mine"
    assert not store.exists(LOCK)


def test_another_hosts_lock_counts_until_its_heartbeat_is_stale(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    store = RunStore(tmp_path)
    write_lock(store, host="another-node", pid=os.getpid(), age=5)
    assert holder(store) is not None
    with pytest.raises(OutputError):
        check_free(store)
    check_free(store, remote_too=False)  # planning leaves it to the lock's wait
    write_lock(store, host="another-node", pid=os.getpid(), age=STALE_S + 1)
    assert holder(store) is None
    check_free(store)


def test_a_restarted_driver_waits_for_its_dead_predecessors_lock(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    import pipeline.run.lock as lock

    monkeypatch.setattr(lock, "STALE_S", 0.6)
    monkeypatch.setattr(lock, "HEARTBEAT_S", 0.2)
    store = RunStore(tmp_path)
    write_lock(store, host="old-pod", pid=1, age=0)  # its heartbeat stopped just now
    said: list[str] = []
    started = time.monotonic()
    with StoreLock(store, "new-pod", notify=said.append):
        assert json.loads(store.read_text(LOCK))["session"] == "new-pod"
    assert time.monotonic() - started >= 0.5
    assert said and "old-pod" in said[0]

    # A live remote driver keeps beating: the wait ends with a refusal.
    def beating() -> None:
        while not done:
            write_lock(store, host="live-pod", pid=1, age=0)
            time.sleep(0.1)

    import threading

    done = False
    thread = threading.Thread(target=beating)
    thread.start()
    while not store.exists(LOCK):
        time.sleep(0.01)
    try:
        with pytest.raises(OutputError, match="live-pod"), StoreLock(store, "late"):
            pass
    finally:
        done = True
        thread.join()


def test_status_reports_a_running_driver_and_run_refuses_its_store(tmp_path: Path) -> None:
    from typer.testing import CliRunner

    from pipeline.cli import app
    from tests.run.helpers import demo_manifest, events

    manifest = demo_manifest(tmp_path)
    store = RunStore(tmp_path / "store")
    sleeper = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)"])
    try:
        write_lock(store, host=socket.gethostname(), pid=sleeper.pid, age=2)
        status = CliRunner().invoke(app, ["--log-format", "json", "status", str(manifest)])
        assert status.exit_code == 0, status.output
        running = [e for e in events(status.output) if e["event"] == "status.running"]
        assert running and "session other" in running[0]["message"]
        refused = CliRunner().invoke(app, ["--log-format", "json", "run", str(manifest)])
        assert refused.exit_code == 2
        assert "in use by session 'other'" in " ".join(refused.output.split())
    finally:
        sleeper.kill()
        sleeper.wait()
    assert sorted(p.name for p in (tmp_path / "store").rglob("*")) == ["lock.json", "state"]


# --- the lock is taken atomically: two takers race, exactly one wins every time ------------------


def _racer(name: str, roots: list[str], barrier: Any, results: Any) -> None:
    from pipeline.run.lock import take

    for root in roots:
        barrier.wait(timeout=60)
        try:
            take(RunStore(root), name)
            won = True
        except OutputError:
            won = False
        results.put((root, name, won))
        barrier.wait(timeout=60)  # the winner stays alive until both have tried


def _race(roots: list[str]) -> dict[str, list[str]]:
    import multiprocessing

    context = multiprocessing.get_context("fork")
    barrier = context.Barrier(2)
    results = context.Queue()
    racers = [
        context.Process(target=_racer, args=(name, roots, barrier, results))
        for name in ("taker-a", "taker-b")
    ]
    for racer in racers:
        racer.start()
    winners: dict[str, list[str]] = {root: [] for root in roots}
    for _ in range(2 * len(roots)):
        root, name, won = results.get(timeout=120)
        if won:
            winners[root].append(name)
    for racer in racers:
        racer.join(timeout=60)
        assert racer.exitcode == 0
    return winners


@pytest.mark.timeout(300)
def test_two_takers_racing_on_a_local_store_never_both_win(tmp_path: Path) -> None:
    roots = [str(tmp_path / f"store-{i}") for i in range(200)]
    winners = _race(roots)
    assert all(len(names) == 1 for names in winners.values()), winners
    firsts = {names[0] for names in winners.values()}
    print(f"local lock race: {len(roots)} rounds, one winner each; winners seen: {sorted(firsts)}")
    for root in roots:  # the winner's lock is the one on disk
        (name,) = winners[root]
        assert json.loads(Path(root, LOCK).read_text())["session"] == name


@pytest.mark.timeout(300)
def test_two_takers_racing_on_an_s3_store_never_both_win(monkeypatch: pytest.MonkeyPatch) -> None:
    import boto3

    from tests.servers.s3 import moto_s3_server

    with moto_s3_server() as s3:
        for key, value in s3.env.items():
            monkeypatch.setenv(key, value)
        boto3.client("s3", endpoint_url=s3.endpoint_url).create_bucket(Bucket="race")
        roots = [f"s3://race/store-{i}" for i in range(40)]
        winners = _race(roots)
    assert all(len(names) == 1 for names in winners.values()), winners


def test_a_dead_drivers_running_session_is_marked_interrupted(tmp_path: Path) -> None:
    store = RunStore(tmp_path)
    record = {"session": "old", "state": "running", "host": socket.gethostname(), "pid": 1}
    store.write_text("state/sessions/old.json", json.dumps(record))
    finished = {"session": "done", "state": "finished"}
    store.write_text("state/sessions/done.json", json.dumps(finished))
    said: list[str] = []
    with StoreLock(store, "new", notify=said.append):
        pass
    assert json.loads(store.read_text("state/sessions/old.json"))["state"] == "interrupted"
    assert json.loads(store.read_text("state/sessions/done.json"))["state"] == "finished"
    assert said and "old" in said[0]
