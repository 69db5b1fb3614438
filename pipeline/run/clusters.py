"""Dask clusters from the manifest's ``compute`` section.

The same run code talks to a ``distributed.Client`` whatever is behind it; only this module knows
how clusters are made.
"""

from __future__ import annotations

import contextlib
import logging
from collections.abc import Iterator

from distributed import Client, LocalCluster

from pipeline.manifest import ComputeSpec


@contextlib.contextmanager
def open_client(compute: ComputeSpec) -> Iterator[Client]:
    """A client on a fresh LocalCluster of worker processes, closed on exit."""
    # Worker processes log their start-up chatter at INFO; the run reports its own progress.
    logging.getLogger("distributed").setLevel(logging.WARNING)
    cluster = LocalCluster(
        n_workers=compute.workers,
        threads_per_worker=compute.threads_per_worker,
        memory_limit=compute.memory_limit,
        processes=True,
        host="127.0.0.1",
        dashboard_address=f"127.0.0.1:{compute.dashboard_port}",
    )
    try:
        client = Client(cluster)
        try:
            yield client
        finally:
            client.close()
    finally:
        cluster.close()
