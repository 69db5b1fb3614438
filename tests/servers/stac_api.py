"""A real STAC API for tests: stac-fastapi-pgstac on PostgreSQL + PostGIS, all on 127.0.0.1.

``pgstac_server()`` creates a throw-away database cluster in a temporary folder (initdb runs as the
``postgres`` user when the tests run as root, since initdb refuses root), installs pgstac with
``pypgstac migrate``, starts the API with the transactions extension, loads the given collections
and items through that API, and on exit stops every process by PID and removes the folder.
"""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.request
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from tests.servers._process import free_port, running

_PG_VERSIONS = ("17", "16", "15")
_DATABASE = "stac"
_STEP_TIMEOUT_S = 60.0


def _postgres_bin(name: str) -> str:
    for version in _PG_VERSIONS:
        path = Path(f"/usr/lib/postgresql/{version}/bin/{name}")
        if path.is_file():
            return str(path)
    found = shutil.which(name)
    if found is None:
        raise RuntimeError(
            f"PostgreSQL's {name} is not installed; install postgresql-15 and "
            "postgresql-15-postgis-3 (scripts/apt-packages.txt, scripts/bootstrap.sh)"
        )
    return found


def _venv_bin(name: str) -> str:
    return shutil.which(name, path=str(Path(sys.executable).parent)) or name


def _as_postgres(command: list[str]) -> list[str]:
    """PostgreSQL refuses to run as root: drop to the ``postgres`` user when we are root."""
    if os.geteuid() != 0:
        return command
    return ["runuser", "-u", "postgres", "--", *command]


def _http_ok(url: str) -> bool:
    try:
        with urllib.request.urlopen(url, timeout=1) as response:
            return bool(response.status == 200)
    except (OSError, urllib.error.URLError):
        return False


def _pg_ready(port: int) -> bool:
    result = subprocess.run(
        [_postgres_bin("pg_isready"), "-h", "127.0.0.1", "-p", str(port), "-t", "1"],
        capture_output=True,
        check=False,
        timeout=5,
    )
    return result.returncode == 0


@dataclass(frozen=True)
class StacApiServer:
    """A running STAC API: its root URL and helpers that write through the transactions API."""

    url: str
    port: int

    def _send(self, method: str, path: str, body: Any) -> Any:
        request = urllib.request.Request(
            f"{self.url}{path}",
            data=json.dumps(body).encode(),
            method=method,
            headers={"Content-Type": "application/json"},
        )
        with urllib.request.urlopen(request, timeout=30) as response:
            text = response.read()
        return json.loads(text) if text else None

    def add_collection(self, collection: dict[str, Any]) -> None:
        self._send("POST", "/collections", collection)

    def add_items(self, collection_id: str, items: Sequence[dict[str, Any]]) -> None:
        """Insert items (a bulk FeatureCollection POST, as data centres load them)."""
        if items:
            body = {"type": "FeatureCollection", "features": list(items)}
            self._send("POST", f"/collections/{collection_id}/items", body)


@contextlib.contextmanager
def pgstac_server(
    collections: Sequence[dict[str, Any]] = (),
    items: Sequence[dict[str, Any]] = (),
    *,
    log_dir: Path | None = None,
) -> Iterator[StacApiServer]:
    """A fresh stac-fastapi-pgstac API holding ``collections`` and ``items``."""
    root = Path(tempfile.mkdtemp(prefix="sitsflow-pgstac-"))
    try:
        data = root / "pgdata"
        data.mkdir()
        if os.geteuid() == 0:
            shutil.chown(root, "postgres")
            shutil.chown(data, "postgres")
        subprocess.run(
            _as_postgres([_postgres_bin("initdb"), "-D", str(data), "-U", "postgres",
                          "-A", "trust", "-E", "UTF8", "--locale=C", "--no-sync"]),
            check=True, capture_output=True, timeout=_STEP_TIMEOUT_S,
        )  # fmt: skip
        pg_port = free_port()
        postgres = _as_postgres([
            _postgres_bin("postgres"), "-D", str(data), "-p", str(pg_port),
            "-c", "listen_addresses=127.0.0.1", "-c", f"unix_socket_directories={root}",
            # A test database: durability buys nothing, speed does.
            "-c", "fsync=off", "-c", "synchronous_commit=off", "-c", "full_page_writes=off",
        ])  # fmt: skip
        with contextlib.ExitStack() as stack:
            stack.enter_context(running(
                postgres, lambda: _pg_ready(pg_port), name="PostgreSQL", timeout=_STEP_TIMEOUT_S,
                log=log_dir / "postgres.log" if log_dir else None,
            ))  # fmt: skip
            subprocess.run(
                [_postgres_bin("createdb"), "-h", "127.0.0.1", "-p", str(pg_port),
                 "-U", "postgres", _DATABASE],
                check=True, capture_output=True, timeout=_STEP_TIMEOUT_S,
            )  # fmt: skip
            dsn = f"postgresql://postgres@127.0.0.1:{pg_port}/{_DATABASE}"
            subprocess.run(
                [_venv_bin("pypgstac"), "migrate", "--dsn", dsn],
                check=True, capture_output=True, timeout=_STEP_TIMEOUT_S,
            )  # fmt: skip
            api_port = free_port()
            url = f"http://127.0.0.1:{api_port}"
            env = {
                "PGUSER": "postgres",
                "PGPASSWORD": "unused",  # required by the settings; trust auth ignores it
                "PGHOST": "127.0.0.1",
                "PGPORT": str(pg_port),
                "PGDATABASE": _DATABASE,
                "ENABLE_TRANSACTIONS_EXTENSIONS": "true",
            }
            stack.enter_context(running(
                [sys.executable, "-m", "uvicorn", "stac_fastapi.pgstac.app:create_app",
                 "--factory", "--host", "127.0.0.1", "--port", str(api_port),
                 "--log-level", "warning"],
                lambda: _http_ok(f"{url}/_mgmt/ping"), name="stac-fastapi-pgstac",
                timeout=_STEP_TIMEOUT_S, env=env,
                log=log_dir / "stac-api.log" if log_dir else None,
            ))  # fmt: skip
            server = StacApiServer(url=url, port=api_port)
            for collection in collections:
                server.add_collection(collection)
            by_collection: dict[str, list[dict[str, Any]]] = {}
            for item in items:
                by_collection.setdefault(str(item["collection"]), []).append(item)
            for collection_id, members in by_collection.items():
                server.add_items(collection_id, members)
            yield server
    finally:
        # The processes are stopped (ExitStack above); their files go with the folder.
        deadline = time.monotonic() + 10
        while True:
            try:
                shutil.rmtree(root)
                break
            except FileNotFoundError:
                break
            except OSError:
                if time.monotonic() > deadline:
                    raise
                time.sleep(0.1)
