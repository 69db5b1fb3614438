"""The fork server's preload: what every local worker needs, loaded once before any is forked.

multiprocessing's fork server imports the modules it is told to preload, and can call nothing.
``pipeline.run.clusters.start_fork_server`` names this module and passes the workers' warm-up
list in the server's environment (``SITSFLOW_WORKER_MODULES``, comma-separated): importing this
module imports each of them and calls the ``module:function`` ones (loading compiled kernels),
so that each worker forked from the server starts with all of it in memory (copy-on-write)
instead of loading it itself. A failure here is left to the workers' own warm-up, which runs
the same list and reports it; the server must not die of it.
"""

from __future__ import annotations

import contextlib
import os

MODULES_VARIABLE = "SITSFLOW_WORKER_MODULES"


def _preload() -> None:
    from pipeline.run.clusters import import_modules

    for name in filter(None, os.environ.get(MODULES_VARIABLE, "").split(",")):
        with contextlib.suppress(Exception):  # the workers' warm-up reports it
            import_modules([name])


if MODULES_VARIABLE in os.environ:
    _preload()
