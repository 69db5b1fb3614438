"""Peak worker memory, sampled from the scheduler's worker metrics while the run goes.

Workers report their process memory (RSS) to the scheduler with every heartbeat; a background
thread asks the scheduler for it every ``interval`` seconds and keeps each worker's maximum.
Workers that die or leave keep their peak in the result.
"""

from __future__ import annotations

import contextlib
import threading
from typing import Any


class MemoryMonitor:
    def __init__(self, client: Any, interval: float = 1.0) -> None:
        self._client = client
        self._interval = interval
        self._stop = threading.Event()
        self._lock = threading.Lock()
        self._peaks: dict[str, int] = {}
        self._limits: dict[str, int] = {}
        self._thread = threading.Thread(target=self._loop, name="sitsflow-memory", daemon=True)

    def __enter__(self) -> MemoryMonitor:
        self.sample()
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join(timeout=5 * self._interval + 5)
        with contextlib.suppress(Exception):
            self.sample()

    def _loop(self) -> None:
        while not self._stop.wait(self._interval):
            with contextlib.suppress(Exception):  # a busy or restarting scheduler: next time
                self.sample()

    def sample(self) -> None:
        info = self._client.scheduler_info(n_workers=-1)
        with self._lock:
            for address, worker in info.get("workers", {}).items():
                name = str(worker.get("name", address))
                memory = int((worker.get("metrics") or {}).get("memory") or 0)
                self._peaks[name] = max(self._peaks.get(name, 0), memory)
                self._limits[name] = int(worker.get("memory_limit") or 0)

    @property
    def peaks(self) -> dict[str, int]:
        """Highest memory seen per worker, in bytes."""
        with self._lock:
            return dict(self._peaks)

    @property
    def peak(self) -> int:
        """Highest memory any worker reached, in bytes (0 when none was seen)."""
        return max(self.peaks.values(), default=0)

    def summary(self) -> dict[str, Any]:
        peaks = self.peaks
        with self._lock:
            limits = dict(self._limits)
        worst = max(peaks, key=lambda n: peaks[n], default=None)
        return {
            "peak_worker_memory_bytes": self.peak,
            "peak_worker": worst,
            "peak_worker_memory_limit_bytes": limits.get(worst, 0) if worst else 0,
            "workers_seen": len(peaks),
        }
