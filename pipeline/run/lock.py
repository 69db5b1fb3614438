"""One driver at a time per run store: a lock object with a heartbeat.

``state/lock.json`` names the session holding the store, its host and process, and a heartbeat
refreshed every ``HEARTBEAT_S`` seconds. Another driver refuses to start while the lock is
live. A driver that died (SIGKILL, lost node) leaves a lock behind: on the same host it is
taken over at once when its process is gone; from another host once its heartbeat is older
than ``STALE_S`` seconds (a Kubernetes driver pod restarted elsewhere waits that long, then
goes on; it refuses only if the heartbeat keeps being refreshed).

Taking the lock is atomic, so two drivers started at the same moment cannot both win:

* on a local disk the lock file is created exclusively (``O_CREAT | O_EXCL``), and the decision
  to take over a dead driver's lock is made under an ``flock`` of ``state/.lock-guard`` (the
  kernel releases it when its holder dies);
* on S3 the lock object is created with a conditional put (``If-None-Match: *``) and a dead
  driver's lock is replaced only if it is still the same object (``If-Match: <its ETag>``);
  AWS S3 and MinIO support both, and so does moto;
* on other object stores (gs://, az:// ...) fsspec offers no conditional write: the lock is read,
  then written, and two drivers started within the same second could both proceed (a documented
  limitation: docs/troubleshooting.md).

The taker that wins also marks the records of sessions that still say ``running`` (their driver
died: it held no lock) as ``interrupted``, so ``sitsflow status`` and the sessions' history say
so.
"""

from __future__ import annotations

import contextlib
import json
import os
import socket
import threading
import time
from collections.abc import Callable, Iterator
from datetime import UTC, datetime
from typing import Any

from pipeline.errors import OutputError
from pipeline.storage import RunStore

LOCK = "state/lock.json"
GUARD = "state/.lock-guard"
SESSIONS = "state/sessions"
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


# --- taking the lock atomically -------------------------------------------------------------------


def _body(session: str) -> dict[str, Any]:
    return {
        "session": session,
        "host": socket.gethostname(),
        "pid": os.getpid(),
        "heartbeat": time.time(),
    }


@contextlib.contextmanager
def _guard(store: RunStore) -> Iterator[None]:
    """Local stores: one taker at a time decides (flock; released by the kernel if it dies)."""
    if store.remote:
        yield
        return
    import fcntl

    path = store.local_path(GUARD)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd = os.open(path, os.O_CREAT | os.O_RDWR, 0o644)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX)
        yield
    finally:
        os.close(fd)  # releases the flock


def _create_local(store: RunStore, data: bytes) -> bool:
    path = store.local_path(LOCK)
    try:
        fd = os.open(path, os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o644)
    except FileExistsError:
        return False
    with os.fdopen(fd, "wb") as f:
        f.write(data)
    return True


def _etag(store: RunStore) -> str | None:
    try:
        info = store.fs.info(store.url(LOCK), refresh=True)
    except FileNotFoundError:
        return None
    tag = info.get("ETag") or info.get("etag")
    return str(tag) if tag else None


def _conditional(store: RunStore, data: bytes, **condition: str) -> bool | None:
    """A conditional PUT of the lock on S3: True written, False refused, None not supported."""
    if not store.root.startswith(("s3://", "s3a://")):
        return None
    try:
        store.fs.pipe_file(store.url(LOCK), data, **condition)
    except Exception as exc:  # botocore's 412 arrives as OSError or ClientError, by version
        text = f"{type(exc).__name__} {exc}"
        if "412" in text or "PreconditionFailed" in text or "FileExists" in text:
            return False
        if "NoSuchKey" in text or isinstance(exc, FileNotFoundError):  # If-Match, gone since
            return False
        raise
    finally:
        store._refresh(store.url(LOCK))
    return True


def _create(store: RunStore, data: bytes) -> bool:
    """Create the lock if there is none, atomically where the store allows it."""
    if not store.remote:
        return _create_local(store, data)
    done = _conditional(store, data, mode="create")
    if done is not None:
        return done
    if store.exists(LOCK):  # no conditional write on this store: check, then write
        return False
    store.write_bytes(LOCK, data)
    return True


def _replace(store: RunStore, seen: str, data: bytes) -> bool:
    """Replace a dead driver's lock whose text was ``seen``, unless it changed since."""
    if not store.remote:  # under the guard: nobody else decides meanwhile
        try:
            current = store.read_text(LOCK)
        except FileNotFoundError:
            return _create_local(store, data)
        if current != seen:
            return False
        store.write_bytes(LOCK, data)
        return True
    tag = _etag(store)
    if tag is None:
        return _create(store, data)
    if store.read_text(LOCK) != seen or _etag(store) != tag:
        return False
    done = _conditional(store, data, IfMatch=tag)
    if done is not None:
        return done
    store.write_bytes(LOCK, data)
    return True


def take(store: RunStore, session: str) -> None:
    """Take the store for ``session`` or raise the OutputError naming the live holder."""
    data = json.dumps(_body(session)).encode()
    for _ in range(20):  # a race lost to a taker that then died: look again
        with _guard(store):
            if _create(store, data):
                return
            try:
                seen = store.read_text(LOCK)
            except FileNotFoundError:
                continue  # released meanwhile
            if not seen.strip():  # another taker is writing it right now
                time.sleep(0.05)
                continue
            check_free(store)  # a live holder: refused here
            if _replace(store, seen, data):
                return
        time.sleep(0.05)
    check_free(store)
    raise OutputError(
        f"run store {store.root!r}: the lock could not be taken (other drivers kept taking it)",
        fix="make sure a single driver runs on this store, then run again",
        field="outputs.store",
    )


def mark_interrupted(store: RunStore, session: str) -> list[str]:
    """Sessions other than ``session`` whose record still says running: their driver is dead
    (we hold the lock), so say so in their record. Best effort; returns their names."""
    marked = []
    for name in store.list_names(SESSIONS):
        relative = f"{SESSIONS}/{name}"
        with contextlib.suppress(Exception):
            record = json.loads(store.read_text(relative))
            if record.get("state") != "running" or record.get("session") == session:
                continue
            record.update(
                state="interrupted",
                noticed=datetime.now(UTC).isoformat(timespec="seconds"),
                noticed_by=session,
            )
            store.write_text(relative, json.dumps(record, indent=2, default=str))
            marked.append(str(record.get("session")))
    return marked


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
        self.store.write_text(LOCK, json.dumps(_body(self.session)))

    def _beat(self) -> None:
        while not self._stop.wait(HEARTBEAT_S):
            with contextlib.suppress(Exception):  # a missed beat is retried; never stop the run
                lock = json.loads(self.store.read_text(LOCK))
                if lock.get("session") != self.session:
                    return  # taken over (this driver was thought dead): never overwrite it
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
        take(self.store, self.session)
        dead = mark_interrupted(self.store, self.session)
        if dead and self._notify is not None:
            self._notify(
                f"session(s) {', '.join(dead)} ended without finishing (their driver is gone); "
                "marked interrupted"
            )
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join(timeout=HEARTBEAT_S + 5)
        with contextlib.suppress(Exception):
            lock = json.loads(self.store.read_text(LOCK))
            if lock.get("session") == self.session:
                self.store.remove(LOCK)
