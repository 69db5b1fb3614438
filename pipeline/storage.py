"""Writing outputs so that a failure never leaves a half-written file or folder behind.

Every output is written under a temporary name in the same folder, then renamed into place:
a reader sees either the old output, or the whole new one.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import uuid
from collections.abc import Iterator
from pathlib import Path

from pipeline.errors import OutputError


def _temporary_sibling(path: Path) -> Path:
    return path.with_name(f".{path.name}.tmp-{uuid.uuid4().hex[:8]}")


@contextlib.contextmanager
def atomic_path(path: str | Path) -> Iterator[Path]:
    """Yield a temporary path to write a file or a folder to; rename it to ``path`` on success.

    On any exception the temporary is removed and ``path`` is left as it was.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = _temporary_sibling(path)
    try:
        yield tmp
        if path.is_dir() and not path.is_symlink():
            shutil.rmtree(path)
        tmp.replace(path)
    finally:
        if tmp.is_dir():
            shutil.rmtree(tmp, ignore_errors=True)
        elif tmp.exists():
            tmp.unlink()


def write_text_atomic(path: str | Path, text: str) -> Path:
    with atomic_path(path) as tmp:
        tmp.write_text(text, encoding="utf-8")
    return Path(path)


def check_writable(folder: str | Path, *, field: str = "spec.outputs.store") -> None:
    """Fail early, before any work, if ``folder`` cannot be created and written to.

    Creates nothing that was not there: a folder made for the check is removed again.
    """
    folder = Path(folder)
    existing = folder
    while not existing.exists():
        if existing.parent == existing:
            break
        existing = existing.parent
    if existing.exists() and not existing.is_dir():
        raise OutputError(
            f"output location {str(folder)!r} is below {str(existing)!r}, which is a file",
            fix="point outputs.store to a folder",
            field=field,
        )
    if not os.access(existing, os.W_OK | os.X_OK):
        raise OutputError(
            f"output location {str(folder)!r} is not writable (no write permission on "
            f"{str(existing)!r})",
            fix="choose a folder you can write to, or change its permissions",
            field=field,
        )
    probe = existing / f".sitsflow-write-test-{uuid.uuid4().hex[:8]}"
    try:
        probe.write_bytes(b"")
        probe.unlink()
    except OSError as exc:
        raise OutputError(
            f"output location {str(folder)!r} cannot be written ({exc.strerror})",
            fix="choose a writable folder (a read-only or full file system cannot hold outputs)",
            field=field,
        ) from None
