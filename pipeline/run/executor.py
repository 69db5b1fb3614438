"""Submitting units of work to dask in bounded batches.

The executor knows units and functions, not remote sensing: a stage hands it a function and a list
of small, deterministic arguments. At most ``max_in_flight`` units are submitted at a time, so the
scheduler never holds one giant graph, whatever the number of tiles and chunks.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any, TypeVar

from distributed import Client, as_completed

T = TypeVar("T")
R = TypeVar("R")


def run_units(
    client: Client,
    function: Callable[[T], R],
    units: Sequence[T],
    *,
    key_prefix: str,
    on_done: Callable[[R], None] | None = None,
    max_in_flight: int | None = None,
    retries: int = 2,
) -> list[R]:
    """Run ``function`` on every unit on the cluster; results come back in the units' order.

    ``retries`` re-runs a unit whose worker died or raised (lost workers, flaky storage); a unit
    that keeps failing raises its error here.
    """
    if not units:
        return []
    if max_in_flight is None:
        threads = sum(client.nthreads().values()) or 1
        max_in_flight = 2 * threads
    results: dict[int, Any] = {}
    futures = {}
    pending = iter(enumerate(units))

    def submit_next(queue: Any) -> bool:
        nxt = next(pending, None)
        if nxt is None:
            return False
        index, unit = nxt
        future = client.submit(
            function, unit, key=f"{key_prefix}-{index}", retries=retries, pure=False
        )
        futures[future.key] = index
        queue.add(future)
        return True

    queue = as_completed()
    for _ in range(max_in_flight):
        if not submit_next(queue):
            break
    for future in queue:
        index = futures.pop(future.key)
        result = future.result()
        results[index] = result
        future.release()
        if on_done is not None:
            on_done(result)
        submit_next(queue)
    return [results[i] for i in range(len(units))]
