"""Unit functions the executor tests run on dask workers (importable there: PYTHONPATH)."""

from __future__ import annotations

import time
from typing import Any

from pipeline.errors import InputDataError
from pipeline.storage import RunStore


def write_square(context: dict[str, Any], payload: int) -> dict[str, Any]:
    """Write payload squared to the store; count attempts; fail as the context says."""
    store = RunStore(context["root"])
    store.write_text(f"attempts/{payload}/{time.perf_counter_ns()}", "")
    if payload in context.get("bad_input", ()):
        raise InputDataError(
            f"unit {payload} has bad input", fix="give it good input", field="spec.test"
        )
    if payload in context.get("flaky", ()) and len(store.list_names(f"attempts/{payload}")) <= 1:
        raise OSError("a transient storage error")
    time.sleep(context.get("sleep", 0.0))
    store.write_text(f"out/{payload}.txt", str(payload * payload))
    return {"square": payload * payload}
