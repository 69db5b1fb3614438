"""Writing outputs so that a failure never leaves a half-written file or folder behind.

On a local disk every output is written under a temporary name in the same folder, then renamed
into place: a reader sees either the old output, or the whole new one (``atomic_path``).

A run store can also live on object storage (``s3://``, ``gs://``, ``az://`` ... through fsspec):
``RunStore`` gives both the same small interface. There, one object is written by a single PUT
(atomic), and a folder is staged locally and uploaded; whoever publishes a folder records its
completion (the run ledger) only after the upload, so a half-uploaded folder never counts as done.
Credentials are never passed here: fsspec and boto read them from the environment, their
configuration files or the pod's identity.
"""

from __future__ import annotations

import contextlib
import errno
import functools
import os
import re
import shutil
import tempfile
import uuid
from collections.abc import Iterator
from pathlib import Path, PurePosixPath
from typing import Any

from pipeline.errors import OutputError

_URL = re.compile(r"^[a-zA-Z][a-zA-Z0-9+.-]*://")
_TEMPORARY = re.compile(r"^\..+\.tmp-[0-9a-f]{8}")  # what _temporary_sibling names


# What a store that became unwritable raises: permissions, a read-only or immutable file system,
# a full disk or quota. Other OSErrors (a flaky network) are retried by the executor as before.
_UNWRITABLE = frozenset({errno.EACCES, errno.EPERM, errno.EROFS, errno.ENOSPC, errno.EDQUOT})


def unwritable_error(exc: BaseException, root: str) -> OutputError | None:
    """The clear stop for a store that cannot be written any more (None: another problem)."""
    if not isinstance(exc, OSError):
        return None
    if exc.errno not in _UNWRITABLE and not isinstance(exc, PermissionError):
        return None
    path = exc.filename if isinstance(exc.filename, str) else root
    reason = exc.strerror or str(exc) or type(exc).__name__
    if exc.errno in (errno.ENOSPC, errno.EDQUOT):
        cause = "free space or raise the quota"
    else:
        cause = "restore write permission (a read-only or frozen mount, changed permissions or a "
        cause += "bucket policy)"
    return OutputError(
        f"the run store {root!r} cannot be written any more: {path!r}: {reason}",
        fix=f"{cause}, then run again with --resume: every unit finished before is kept",
        field="outputs.store",
    )


def is_url(value: str) -> bool:
    """True for ``scheme://...`` locations (object storage, HTTP), False for local paths."""
    return bool(_URL.match(value))


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


def _relative(relative: str) -> str:
    """A member name inside a store: posix, relative, never climbing out of the store."""
    if not relative:
        return ""
    pure = PurePosixPath(relative)
    if pure.is_absolute() or ".." in pure.parts or "\\" in relative:
        raise ValueError(f"{relative!r} is not a relative name inside the run store")
    return pure.as_posix()


class RunStore:
    """The run store: a local folder or an object storage prefix, addressed by relative names.

    Every method takes posix names relative to the store's root (``"maps/labels.tif"``).
    Instances hold no open connection and pickle to their root only, so workers rebuild them.
    """

    def __init__(self, root: str | Path) -> None:
        text = str(root)
        if text.startswith("file://"):
            text = text.removeprefix("file://")
        self.remote = is_url(text)
        self.root = text.rstrip("/") if self.remote else str(Path(text).expanduser().absolute())
        self._fs: Any = None

    def __reduce__(self) -> tuple[Any, ...]:
        return (RunStore, (self.root,))

    def __repr__(self) -> str:
        return f"RunStore({self.root!r})"

    def __eq__(self, other: object) -> bool:
        return isinstance(other, RunStore) and other.root == self.root

    def __hash__(self) -> int:
        return hash(self.root)

    @property
    def fs(self) -> Any:
        """The fsspec file system of a remote store (created on first use)."""
        if self._fs is None:
            self._fs = _filesystem(self.root.split("://", 1)[0], _endpoint_settings())
        return self._fs

    def url(self, relative: str = "") -> str:
        """The full location of a member: a URL for a remote store, an absolute path otherwise."""
        name = _relative(relative)
        if not name:
            return self.root
        return f"{self.root}/{name}" if self.remote else str(Path(self.root) / name)

    def local_path(self, relative: str = "") -> Path:
        if self.remote:
            raise ValueError(f"{self.root} is not a local folder")
        return Path(self.url(relative))

    @contextlib.contextmanager
    def writing(self) -> Iterator[None]:
        """Turn "the store cannot be written any more" into an OutputError that says so."""
        try:
            yield
        except OSError as exc:
            error = unwritable_error(exc, self.root)
            if error is None:
                raise
            raise error from None

    def _refresh(self, url: str) -> None:
        # Listings are cached by fsspec; a ledger read must see what other processes wrote.
        with contextlib.suppress(Exception):
            self.fs.invalidate_cache(url)

    def exists(self, relative: str) -> bool:
        if not self.remote:
            return self.local_path(relative).exists()
        url = self.url(relative)
        self._refresh(url)
        return bool(self.fs.exists(url))

    def read_bytes(self, relative: str) -> bytes:
        if not self.remote:
            return self.local_path(relative).read_bytes()
        return bytes(self.fs.cat_file(self.url(relative)))

    def read_text(self, relative: str) -> str:
        return self.read_bytes(relative).decode("utf-8")

    def write_bytes(self, relative: str, data: bytes) -> None:
        """Write one object atomically (rename locally, one PUT remotely)."""
        with self.writing():
            if not self.remote:
                with atomic_path(self.local_path(relative)) as tmp:
                    tmp.write_bytes(data)
                return
            self.fs.pipe_file(self.url(relative), data)

    def write_text(self, relative: str, text: str) -> None:
        self.write_bytes(relative, text.encode("utf-8"))

    def list_names(self, relative: str) -> list[str]:
        """Names of the files directly in a folder (none when it does not exist), sorted.

        Hidden names (local temporaries such as ``.x.tmp-1234``) are left out.
        """
        if not self.remote:
            folder = self.local_path(relative)
            if not folder.is_dir():
                return []
            names = [p.name for p in folder.iterdir() if p.is_file()]
        else:
            url = self.url(relative)
            self._refresh(url)
            try:
                entries = self.fs.ls(url, detail=True)
            except FileNotFoundError:
                return []
            names = [PurePosixPath(str(e["name"])).name for e in entries if e.get("type") == "file"]
        return sorted(n for n in names if not n.startswith("."))

    def remove(self, relative: str) -> None:
        """Delete a file or a folder with everything in it; nothing happens when it is absent."""
        name = _relative(relative)
        if not name:
            raise ValueError("refusing to remove the whole run store")
        if not self.remote:
            path = self.local_path(name)
            if path.is_dir() and not path.is_symlink():
                shutil.rmtree(path)
            elif path.exists() or path.is_symlink():
                path.unlink()
            return
        url = self.url(name)
        self._refresh(url)
        with contextlib.suppress(FileNotFoundError):
            if self.fs.isdir(url):
                self.fs.rm(url, recursive=True)
            elif self.fs.exists(url):
                self.fs.rm_file(url)
        self._refresh(url)

    def remove_temporaries(self, depth: int = 4) -> list[str]:
        """Delete what writers killed mid-write left behind (``.name.tmp-1234abcd`` siblings of
        local outputs), down to ``depth`` folders, not inside Zarr stores; return their names.

        Only while no other driver uses the store (the run's lock). Object storage has none:
        an object is written whole or not at all.
        """
        if self.remote or not Path(self.root).is_dir():
            return []
        removed = []
        folders = [(Path(self.root), 0)]
        while folders:
            folder, level = folders.pop()
            for entry in folder.iterdir():
                if _TEMPORARY.match(entry.name):
                    if entry.is_dir() and not entry.is_symlink():
                        shutil.rmtree(entry, ignore_errors=True)
                    else:
                        entry.unlink(missing_ok=True)
                    removed.append(entry.relative_to(self.root).as_posix())
                elif entry.is_dir() and level < depth and not entry.name.endswith(".zarr"):
                    folders.append((entry, level + 1))
        return sorted(removed)

    @contextlib.contextmanager
    def publish(self, relative: str) -> Iterator[Path]:
        """Yield a local path to write a file or folder to; put it at ``relative`` on success.

        Locally this is ``atomic_path``. Remotely the staged file is uploaded with one PUT; a
        staged folder replaces the remote folder (removed first, then uploaded file by file).
        """
        name = _relative(relative)
        if not self.remote:
            with self.writing(), atomic_path(self.local_path(name)) as tmp:
                yield tmp
            return
        with tempfile.TemporaryDirectory(prefix="sitsflow-publish-") as staging:
            local = Path(staging) / PurePosixPath(name).name
            yield local
            self.upload(local, name)

    def upload(self, local: Path, relative: str) -> None:
        """Copy a local file or folder to ``relative`` (a folder replaces what was there)."""
        name = _relative(relative)
        with self.writing():
            if not self.remote:
                with atomic_path(self.local_path(name)) as tmp:
                    if local.is_dir():
                        shutil.copytree(local, tmp)
                    else:
                        shutil.copyfile(local, tmp)
                return
            url = self.url(name)
            if local.is_dir():
                self.remove(name)
                for path in sorted(p for p in local.rglob("*") if p.is_file()):
                    self.fs.put_file(str(path), f"{url}/{path.relative_to(local).as_posix()}")
            else:
                self.fs.put_file(str(local), url)
            self._refresh(url)

    @contextlib.contextmanager
    def fetch(self, relative: str) -> Iterator[Path]:
        """A local path to read a member from: the file itself, or a temporary download."""
        name = _relative(relative)
        if not self.remote:
            yield self.local_path(name)
            return
        with tempfile.TemporaryDirectory(prefix="sitsflow-fetch-") as staging:
            local = Path(staging) / PurePosixPath(name).name
            self.download(name, local)
            yield local

    def download(self, relative: str, local: Path) -> None:
        """Copy a member (file or folder) to ``local``."""
        url = self.url(relative)
        if not self.remote:
            source = Path(url)
            if source.is_dir():
                shutil.copytree(source, local)
            else:
                shutil.copyfile(source, local)
            return
        self._refresh(url)
        if self.fs.isdir(url):
            local.mkdir(parents=True, exist_ok=True)
            for remote in sorted(self.fs.find(url)):
                inner = PurePosixPath(remote).relative_to(
                    PurePosixPath(self.fs._strip_protocol(url))
                )
                target = local / inner
                target.parent.mkdir(parents=True, exist_ok=True)
                self.fs.get_file(remote, str(target))
        else:
            self.fs.get_file(url, str(local))


_ENDPOINT_VARIABLES = ("AWS_ENDPOINT_URL", "AWS_ENDPOINT_URL_S3", "AWS_REGION", "AWS_PROFILE")


def _endpoint_settings() -> tuple[str | None, ...]:
    return tuple(os.environ.get(name) for name in _ENDPOINT_VARIABLES)


@functools.lru_cache(maxsize=8)
def _filesystem(protocol: str, settings: tuple[str | None, ...]) -> Any:
    """One file system per protocol and endpoint settings. fsspec's own instance cache ignores
    the environment, so a process that meets two endpoints would reuse the first one."""
    import fsspec

    del settings  # part of the cache key only: fsspec reads them from the environment
    return fsspec.filesystem(protocol, skip_instance_cache=True)


def check_writable(folder: str | Path, *, field: str = "outputs.store") -> None:
    """Fail early, before any work, if ``folder`` cannot be created and written to.

    Creates nothing that was not there: a probe written for the check is removed again. Works for
    local folders and object storage URLs (a bucket must exist: it is never created).
    """
    if is_url(str(folder)) and not str(folder).startswith("file://"):
        _check_remote_writable(str(folder), field)
        return
    folder = Path(str(folder).removeprefix("file://"))
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


def _check_remote_writable(url: str, field: str) -> None:
    store = RunStore(url)
    probe = f".sitsflow-write-test-{uuid.uuid4().hex[:8]}"
    try:
        fs = store.fs
    except (ImportError, ValueError) as exc:
        raise OutputError(
            f"output location {url!r} uses a storage protocol that is not available ({exc})",
            fix="use a local folder or s3:// (install the fsspec package of that protocol)",
            field=field,
        ) from None
    bucket = url.split("://", 1)[1].split("/", 1)[0]
    scheme = url.split("://", 1)[0]
    try:
        fs.pipe_file(store.url(probe), b"")
        fs.rm_file(store.url(probe))
    except FileNotFoundError:
        raise OutputError(
            f"output location {url!r}: bucket {bucket!r} does not exist or cannot be seen",
            fix=f"create the bucket, or point outputs.store to an existing {scheme}:// bucket",
            field=field,
        ) from None
    except PermissionError:
        raise OutputError(
            f"output location {url!r} cannot be written: access denied",
            fix="give the run's credentials write access to it (environment, profile or "
            "service account), or choose another location",
            field=field,
        ) from None
    except Exception as exc:  # botocore/aiohttp raise many types; the type name says which
        raise OutputError(
            f"output location {url!r} cannot be reached or written ({type(exc).__name__})",
            fix="check the endpoint, network and credentials of the object storage "
            "(AWS_ENDPOINT_URL, AWS_REGION, AWS_PROFILE ... in the environment)",
            field=field,
        ) from None
