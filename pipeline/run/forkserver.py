"""The fork server a local cluster's workers are forked from, started early and cheaply.

A spawned worker starts a bare interpreter and imports distributed, numpy, rasterio, zarr,
scikit-learn, skops and the stages' code: about 4 CPU s each, twice on two workers, on the two
cores the driver plans on. Forked instead from multiprocessing's fork server, which imports all
of that once and loads the compiled kernels there too (``pipeline.run.preload``), each worker
starts with every module and kernel in memory (shared, copy-on-write). The server is
single-threaded when it forks (imports start no thread) and lives as long as the cluster.

``sitsflow run`` starts it as soon as it has read the raw manifest and knows the run is local
(``prestart``), with every stage's modules, so that its imports run on the second core while the
driver validates and plans on the first; the cluster, started once planning knows the stages
left, forks its workers from it (``pipeline.run.clusters.start_fork_server``). This module
imports nothing heavy, so that the server starts within a fraction of a second of the command.
The server's environment is the driver's at that moment (credentials included, as a spawned
worker inherits them) plus the nanny's spawn settings (``WORKER_SPAWN_ENVIRON``).
"""

from __future__ import annotations

import contextlib
import os
from pathlib import Path

#: The environment variable that tells the server what to preload: module names (comma-separated
#: warm-up names, ``module:function`` calls the function), or ``ALL_STAGES`` and a model kind.
MODULES_VARIABLE = "SITSFLOW_WORKER_MODULES"
ALL_STAGES = "stages:"

#: The environment a worker process starts with, over dask's own spawn settings
#: (``distributed.nanny.pre-spawn-environ``; None drops dask's value):
#:
#: * MALLOC_TRIM_THRESHOLD_ dropped: setting it at all turns off glibc's dynamic mmap threshold,
#:   so every array above 128 KiB is mmap'd and unmapped again (cube chunks 1.7x slower, system
#:   time from page faults);
#: * NUMPY_MADVISE_HUGEPAGE=0: numpy asks for transparent huge pages on every array of 4 MiB or
#:   more, and where the kernel's THP defrag setting is "madvise" (Debian's and Ubuntu's default)
#:   each first touch of such an array compacts memory synchronously: a worker's first chunk took
#:   4.7 s instead of 2.0 (2.7 s of system time faulting its chunk buffers and feature table) and
#:   every later one 0.15 s more (``bench.chain``: predict stage 17.6 -> 12.6 s). numpy reads it
#:   when it is imported, hence before the process starts.
WORKER_SPAWN_ENVIRON: dict[str, str | None] = {
    "MALLOC_TRIM_THRESHOLD_": None,
    "NUMPY_MADVISE_HUGEPAGE": "0",
}

_running: str | None = None  # what the running server preloaded (MODULES_VARIABLE's value)


def spawn_environment() -> dict[str, str]:
    """What dask's nanny sets before spawning a worker (OMP_NUM_THREADS=1, ... as dask's config
    says) with ``WORKER_SPAWN_ENVIRON`` over it, less the keys set to None: a forked worker gets
    its environment from the fork server, so the server must start with it."""
    import dask.config

    key = "distributed.nanny.pre-spawn-environ"
    if dask.config.get(key, None) is None:  # distributed not imported yet: its defaults
        _load_distributed_defaults()
    settings = {**dask.config.get(key), **WORKER_SPAWN_ENVIRON}
    return {name: str(value) for name, value in settings.items() if value is not None}


def _load_distributed_defaults() -> None:
    """distributed's configuration defaults, as its import installs them, without importing it
    (a second of imports)."""
    import importlib.util

    import dask.config
    import yaml

    spec = importlib.util.find_spec("distributed")
    if spec is None or spec.origin is None:
        return
    defaults = yaml.safe_load(Path(spec.origin).with_name("distributed.yaml").read_text())
    dask.config.update_defaults(defaults)


def start(preload: str) -> None:
    """Start a fork server that preloads ``preload`` (``MODULES_VARIABLE``'s value), in place of
    one running."""
    global _running
    import multiprocessing
    from multiprocessing import forkserver

    stop()
    multiprocessing.get_context("forkserver").set_forkserver_preload(["pipeline.run.preload"])
    # The server inherits this process's environment when it starts: the spawn settings and the
    # preload for a while (key by key: another thread may read the environment meanwhile).
    environment = {**spawn_environment(), MODULES_VARIABLE: preload}
    before = {name: os.environ.get(name) for name in environment}
    try:
        os.environ.update(environment)
        forkserver.ensure_running()
    finally:
        for name, value in before.items():
            if value is None:
                os.environ.pop(name, None)
            else:
                os.environ[name] = value
    _running = preload


def prestart(model_kind: str = "sklearn") -> None:
    """Start the fork server with every stage's modules for a model of ``model_kind``."""
    start(ALL_STAGES + model_kind)


def running() -> str | None:
    """What the running fork server preloaded; None when none of ours runs."""
    return _running if pid() is not None else None


def pid() -> int | None:
    """The fork server's process id while one runs."""
    from multiprocessing import forkserver

    found = getattr(forkserver._forkserver, "_forkserver_pid", None)
    return int(found) if found is not None else None


def stop() -> None:
    """Stop the fork server at once, even in the middle of its preload (a run that failed while
    planning): it has nothing to finish, the workers it forked are processes of their own."""
    global _running
    import signal
    from multiprocessing import forkserver

    _running = None
    server = pid()
    if server is not None:
        with contextlib.suppress(ProcessLookupError):
            os.kill(server, signal.SIGTERM)
    stop_server = getattr(forkserver._forkserver, "_stop", None)  # CPython's, since 3.4
    if stop_server is not None:
        stop_server()  # closes its socket and reaps it
