"""A real multi-process dask cluster for tests: `dask scheduler` and `dask worker` processes."""

from __future__ import annotations

import contextlib
import shutil
import sys
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from subprocess import Popen

from tests.servers._process import free_port, port_open, running


@dataclass
class DaskCluster:
    address: str
    dashboard_port: int
    workers: list[Popen[bytes]] = field(default_factory=list)


def _dask() -> str:
    return shutil.which("dask", path=str(Path(sys.executable).parent)) or "dask"


@contextlib.contextmanager
def dask_cluster(
    n_workers: int = 2, memory_limit: str = "2GiB", log_dir: Path | None = None
) -> Iterator[DaskCluster]:
    """A scheduler and ``n_workers`` single-thread worker processes on 127.0.0.1."""
    port, dashboard = free_port(), free_port()
    address = f"tcp://127.0.0.1:{port}"
    with contextlib.ExitStack() as stack:
        stack.enter_context(running(
            [_dask(), "scheduler", "--host", "127.0.0.1", "--port", str(port),
             "--dashboard-address", f"127.0.0.1:{dashboard}"],
            lambda: port_open(port), name="dask scheduler",
            log=log_dir / "scheduler.log" if log_dir else None,
        ))  # fmt: skip
        cluster = DaskCluster(address, dashboard)
        for i in range(n_workers):
            worker = stack.enter_context(running(
                [_dask(), "worker", address, "--nthreads", "1", "--nworkers", "1",
                 "--memory-limit", memory_limit, "--host", "127.0.0.1", "--no-dashboard",
                 "--name", f"test-worker-{i}"],
                lambda: True, name=f"dask worker {i}",
                log=log_dir / f"worker-{i}.log" if log_dir else None,
            ))  # fmt: skip
            cluster.workers.append(worker)
        yield cluster
