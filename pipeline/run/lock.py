"""One driver at a time per run store: a lock object with a heartbeat.

``state/lock.json`` names the session holding the store, its host and process, and a heartbeat
refreshed every ``HEARTBEAT_S`` seconds. Another driver refuses to start while the lock is
live. A driver that died (SIGKILL, lost node) leaves a lock behind: on the same host it is
taken over at once when its process is gone; from another host once its heartbeat is older
than ``STALE_S`` seconds (a Kubernetes driver pod restarted elsewhere waits that long, then
goes on; it refuses only if the heartbeat keeps being refreshed).
"""

from __future__ import annotations

import contextlib
import json
import os
import socket
import threading
import time
from collections.abc import Callable
from typing import Any

from pipeline.errors import OutputError
from pipeline.storage import RunStore

LOCK = "state/lock.json"
HEARTBEAT_S = 10.0
STALE_S = 60.0


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def holder(store: RunStore, now: float | None = None) -> dict[str, Any] | None:
    """The live lock of another driver, if any (None when free or stale)."""
    try:
        lock = json.loads(store.read_text(LOCK))
    except (FileNotFoundError, ValueError):
        return None
    now = time.time() if now is None else now
    age = now - float(lock.get("heartbeat", 0))
    if age > STALE_S:
        return None
    if lock.get("host") == socket.gethostname():
        pid = int(lock.get("pid", 0))
        if pid == os.getpid() or not _alive(pid):
            return None
    lock["age_s"] = round(age, 1)
    return lock


def _local(lock: dict[str, Any]) -> bool:
    return lock.get("host") == socket.gethostname()


def check_free(store: RunStore, *, remote_too: bool = True) -> None:
    """Refuse a store another driver is working in.

    ``remote_too=False`` refuses only for a live driver of this host: a lock from another host
    may be a dead driver's whose heartbeat has not aged yet (``StoreLock`` waits for it).
    """
    other = holder(store)
    if other is None or (not remote_too and not _local(other)):
        return
    raise OutputError(
        f"run store {store.root!r} is in use by session {other.get('session')!r} (host "
        f"{other.get('host')!r}, process {other.get('pid')}, last heartbeat {other['age_s']} s "
        "ago)",
        fix="wait for that run to end or stop it; a driver that died releases the store after "
        f"{STALE_S:.0f} s without heartbeat (at once on the same host)",
        field="outputs.store",
    )


class StoreLock:
    """Holds the store for a session; a background thread refreshes the heartbeat."""

    def __init__(
        self, store: RunStore, session: str, notify: Callable[[str], None] | None = None
    ) -> None:
        self.store = store
        self.session = session
        self._notify = notify
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._beat, name="sitsflow-lock", daemon=True)

    def _write(self) -> None:
        body = {
            "session": self.session,
            "host": socket.gethostname(),
            "pid": os.getpid(),
            "heartbeat": time.time(),
        }
        self.store.write_text(LOCK, json.dumps(body))

    def _beat(self) -> None:
        while not self._stop.wait(HEARTBEAT_S):
            with contextlib.suppress(Exception):  # a missed beat is retried; never stop the run
                self._write()

    def _wait_for_remote(self) -> None:
        """Another host's lock: a restarted driver (a rescheduled pod) finds its dead
        predecessor's lock; wait until it is stale, unless its heartbeat goes on."""
        other = holder(self.store)
        if other is None or _local(other):
            return
        if self._notify is not None:
            self._notify(
                f"run store held by session {other.get('session')!r} of host "
                f"{other.get('host')!r} (heartbeat {other['age_s']} s ago); waiting up to "
                f"{STALE_S:.0f} s for it to end or go stale"
            )
        deadline = time.monotonic() + STALE_S + HEARTBEAT_S
        while holder(self.store) is not None and time.monotonic() < deadline:
            time.sleep(HEARTBEAT_S / 2)

    def __enter__(self) -> StoreLock:
        self._wait_for_remote()
        check_free(self.store)
        self._write()
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join(timeout=HEARTBEAT_S + 5)
        with contextlib.suppress(Exception):
            self.store.remove(LOCK)
