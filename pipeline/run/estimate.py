"""How much work a run is, and whether its workers can hold it, before anything starts.

The heaviest unit is a cube chunk: every acquisition's bands and masks of one chunk, the
gap-filled series and their temporaries, all in memory at once (``CubePlan.bytes_per_chunk``).
A worker runs one unit per thread, on top of its own footprint (Python, GDAL, numpy:
``WORKER_BASELINE``). dask starts spilling at 60% of a worker's memory limit and pauses it at
80%, so a run is refused when ``baseline + threads x unit`` exceeds 60% of the limit; the message
gives the chunk size that would fit and the memory limit that would be needed.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass, field
from typing import Any

from pipeline.errors import ComputeError

WORKER_BASELINE = 300 * 2**20
USABLE_FRACTION = 0.6


@dataclass(frozen=True)
class WorkEstimate:
    tiles: int
    chunks: int
    pixels: int
    acquisitions: int
    features: int
    chunk_size: int
    chunk_bytes: int
    """Peak memory of building the largest cube chunk."""
    predict_bytes: int
    """Peak memory of predicting one chunk (feature stack and its copies, without the model)."""
    units: dict[str, int] = field(default_factory=dict)
    """Units per stage."""
    periods: int = 1
    """Mapped periods (``period`` and each of ``also_map``): each has a cube per tile."""

    @property
    def tasks(self) -> int:
        return sum(self.units.values())

    @property
    def unit_bytes(self) -> int:
        return max(self.chunk_bytes, self.predict_bytes)

    def worker_bytes(self, threads: int) -> int:
        """Memory one worker with ``threads`` threads needs at its peak."""
        return WORKER_BASELINE + threads * self.unit_bytes

    def as_dict(self) -> dict[str, Any]:
        out = asdict(self)
        out["tasks"] = self.tasks
        return out

    def describe(self, threads: int) -> str:
        mib = 2**20
        return (
            f"{self.tiles} tile(s)"
            + (f" x {self.periods} period(s)" if self.periods > 1 else "")
            + f", {self.chunks} chunk(s) of {self.chunk_size} px, "
            f"{self.pixels:,} pixels, {self.acquisitions} acquisition(s), {self.features} "
            f"features, {self.tasks} units ({', '.join(f'{k} {v}' for k, v in self.units.items())}"
            f"); about {self.unit_bytes / mib:.0f} MiB per unit, "
            f"{self.worker_bytes(threads) / mib:.0f} MiB per worker of {threads} thread(s)"
        )


def predict_bytes(features: int, chunk_size: int) -> int:
    """The feature stack, its pixel table and the class probabilities, float32."""
    return 4 * chunk_size * chunk_size * (3 * features + 64)


def _largest_fitting_chunk(estimate: WorkEstimate, usable: float, threads: int) -> int | None:
    per_pixel = estimate.unit_bytes / (estimate.chunk_size * estimate.chunk_size)
    room = (usable - WORKER_BASELINE) / threads
    if room <= 0 or per_pixel <= 0:
        return None
    side = int(math.sqrt(room / per_pixel)) // 16 * 16
    return side if side >= 16 else None


def check_memory(
    estimate: WorkEstimate,
    memory_limit: int,
    threads: int,
    *,
    where: str = "configured",
    field_name: str = "compute",
) -> None:
    """Refuse a run whose workers cannot hold one unit per thread, saying what would fit."""
    needed = estimate.worker_bytes(threads)
    usable = USABLE_FRACTION * memory_limit
    if needed <= usable:
        return
    mib = 2**20
    fitting = _largest_fitting_chunk(estimate, usable, threads)
    limit_needed = math.ceil(needed / USABLE_FRACTION / 2**28) * 2**28  # round up to 256 MiB
    options = []
    if fitting is not None and fitting < estimate.chunk_size:
        options.append(f"set compute.chunk_size to {fitting} or less")
    options.append(f"raise compute.memory_limit to {limit_needed / 2**30:g}GiB or more")
    if threads > 1:
        options.append("or lower compute.threads_per_worker (each thread holds one unit)")
    raise ComputeError(
        f"the {where} workers cannot hold the work: one unit of {estimate.chunk_size} x "
        f"{estimate.chunk_size} px needs about {estimate.unit_bytes / mib:.0f} MiB "
        f"({estimate.acquisitions} acquisitions in, {estimate.features} features out), so a "
        f"worker with {threads} thread(s) needs {needed / mib:.0f} MiB with its own "
        f"{WORKER_BASELINE / mib:.0f} MiB, but only {USABLE_FRACTION:.0%} of its "
        f"{memory_limit / mib:.0f} MiB memory limit ({usable / mib:.0f} MiB) is usable before "
        "dask spills and pauses it",
        fix="; ".join(options),
        field=field_name,
    )
