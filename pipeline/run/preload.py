"""The fork server's preload: what every local worker needs, loaded once before any is forked.

multiprocessing's fork server imports the modules it is told to preload, and can call nothing.
``pipeline.run.forkserver.start`` names this module and says what to load in the server's
environment (``MODULES_VARIABLE``): importing this module imports each warm-up module and calls
the ``module:function`` ones (loading compiled kernels), so that each worker forked from the
server starts with all of it in memory (copy-on-write) instead of loading it itself. A failure
here is left to the workers' own warm-up, which runs the same list and reports it; the server
must not die of it.
"""

from __future__ import annotations

import contextlib
import os

from pipeline.run.forkserver import MODULES_VARIABLE


def _preload(preload: str) -> None:
    from pipeline.run.clusters import import_modules, preloaded_modules

    for name in preloaded_modules(preload):
        with contextlib.suppress(Exception):  # the workers' warm-up reports it
            import_modules([name])


if MODULES_VARIABLE in os.environ:
    _preload(os.environ[MODULES_VARIABLE])
