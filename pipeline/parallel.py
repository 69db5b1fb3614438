"""The one bounded-submit loop: items of work on a dask cluster, at most a few in flight.

The run engine's executor (``pipeline.run.executor``: units, ledger, retries) and the library
entry points that take a client (``samples.extract.extract_features``) both submit through
``submit_bounded``, so the scheduler never holds one giant graph of either. It lives here, below
the library packages, because they may not import the run engine.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence
from datetime import UTC, datetime
from typing import Any, TypeVar

from distributed import Client, as_completed

T = TypeVar("T")
R = TypeVar("R")

LIMIT_CHECK_S = 5.0  # adaptive clusters grow and shrink: the bound is read again this often


def default_limit(client: Client) -> int:
    """Two items per worker thread in flight (at least two)."""
    return max(2, 2 * (sum(client.nthreads().values()) or 1))


def submit_bounded(
    client: Client,
    function: Callable[[T], R],
    items: Sequence[T],
    on_result: Callable[[int, R], None],
    *,
    key: Callable[[int, T], str],
    limit: Callable[[], int],
    retries: int = 2,
    pure: bool = True,
) -> None:
    """Run ``function`` on every item, at most ``limit()`` at a time; ``on_result(index,
    result)`` as each finishes (in the order they finish). An exception (from ``on_result``
    too) cancels what is still in flight and is raised."""
    pending = iter(enumerate(items))
    in_flight: dict[str, Any] = {}
    queue = as_completed()
    bound, checked = limit(), time.monotonic()

    def submit_one() -> bool:
        nxt = next(pending, None)
        if nxt is None:
            return False
        index, item = nxt
        future = client.submit(function, item, key=key(index, item), retries=retries, pure=pure)
        in_flight[str(future.key)] = (index, future)
        queue.add(future)
        return True

    while len(in_flight) < bound and submit_one():
        pass
    try:
        for future in queue:
            index, _ = in_flight.pop(str(future.key))
            result = future.result()
            future.release()
            on_result(index, result)
            if time.monotonic() - checked > LIMIT_CHECK_S:
                bound, checked = limit(), time.monotonic()
            while len(in_flight) < bound and submit_one():
                pass
    except BaseException:
        if in_flight:
            client.cancel([f for _, f in in_flight.values()], force=True)
        raise


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
    """``function`` on every item on the cluster, results in the items' order. No ledger:
    for work that is cheap to redo."""
    if not units:
        return []
    results: dict[int, R] = {}
    token = datetime.now(UTC).strftime("%H%M%S%f")

    def keep(index: int, result: R) -> None:
        results[index] = result
        if on_done is not None:
            on_done(result)

    submit_bounded(
        client,
        function,
        units,
        keep,
        key=lambda index, _: f"{key_prefix}-{token}-{index}",
        limit=(lambda: max_in_flight) if max_in_flight else (lambda: default_limit(client)),
        retries=retries,
        pure=False,
    )
    return [results[i] for i in range(len(units))]
