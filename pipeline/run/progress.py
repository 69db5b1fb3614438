"""What the user sees while a run goes: stages, per-stage bars with counts, rate and ETA.

On a terminal the bars are live (rich). Elsewhere (CI, containers, ``--log-format json``) each
bar reports a ``stage.progress`` event at most every ``interval`` seconds and when it completes,
with units done, total, units per second and the estimated seconds left.
"""

from __future__ import annotations

import time
from typing import Any, Protocol

from rich.console import Console
from rich.progress import (
    BarColumn,
    MofNCompleteColumn,
    ProgressColumn,
    Task,
    TextColumn,
    TimeElapsedColumn,
    TimeRemainingColumn,
)
from rich.progress import Progress as RichProgress
from rich.text import Text

from pipeline.run.logs import RunLog


class _RateColumn(ProgressColumn):
    """Units per second (chunks/s), the figure users size their runs with."""

    def render(self, task: Task) -> Text:
        speed = task.finished_speed or task.speed
        return Text(f"{speed:6.2f}/s" if speed else "     -/s")


class Bar(Protocol):
    def advance(self, amount: int = 1) -> None: ...


class _Bar:
    """Counts units; drives a rich task when live, emits rate and ETA events otherwise."""

    def __init__(self, owner: Progress, description: str, total: int) -> None:
        self._owner = owner
        self.description = description
        self.total = total
        self.done = 0
        self._started = time.monotonic()
        self._reported = self._started
        self._task = owner._bars.add_task(description, total=total) if owner.live else None

    def rate(self) -> float:
        elapsed = time.monotonic() - self._started
        return self.done / elapsed if elapsed > 0 else 0.0

    def eta(self) -> float | None:
        rate = self.rate()
        return (self.total - self.done) / rate if rate > 0 else None

    def advance(self, amount: int = 1) -> None:
        self.done += amount
        if self._task is not None:
            self._owner._bars.advance(self._task, amount)
            return
        now = time.monotonic()
        if self.done >= self.total or now - self._reported >= self._owner.interval:
            self._reported = now
            self._owner._report(self)


class Progress:
    def __init__(
        self,
        console: Console | None = None,
        *,
        log: RunLog | None = None,
        interval: float = 10.0,
    ) -> None:
        self.console = console or Console(stderr=True)
        self.log = log or RunLog("text", console=self.console)
        self.interval = interval
        self.stage: str | None = None
        self._bars = self._make_bars()

    def _make_bars(self) -> RichProgress:
        return RichProgress(
            TextColumn("  {task.description:<26}"),
            BarColumn(),
            MofNCompleteColumn(),
            _RateColumn(),
            TimeElapsedColumn(),
            TextColumn("eta"),
            TimeRemainingColumn(),
            console=self.console,
            transient=False,
            disable=not self.live,
        )

    @property
    def live(self) -> bool:
        return not self.log.json and self.console.is_terminal

    def use_log(self, log: RunLog) -> None:
        """Report through ``log`` (its format decides between live bars and events)."""
        self.log = log
        self.console = log.console
        self._bars = self._make_bars()

    def __enter__(self) -> Progress:
        self._bars.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._bars.stop()

    def info(self, message: str, event: str = "info", **fields: Any) -> None:
        self.log.info(message, event, **fields)

    def warn(self, message: str, **fields: Any) -> None:
        self.log.warning(message, **fields)

    def stage_started(self, name: str) -> None:
        self.stage = name
        self.log.info(f"{name} ...", "stage.started", stage=name)

    def stage_finished(self, name: str, seconds: float) -> None:
        self.log.info(
            f"{name} done in {seconds:.1f} s",
            "stage.finished",
            stage=name,
            seconds=round(seconds, 3),
        )
        self.stage = None

    def bar(self, description: str, total: int) -> Bar:
        return _Bar(self, description, total)

    def _report(self, bar: _Bar) -> None:
        eta = bar.eta()
        rate = bar.rate()
        text = f"  {bar.description}: {bar.done}/{bar.total}, {rate:.2f}/s"
        if eta is not None and bar.done < bar.total:
            text += f", about {eta:.0f} s left"
        self.log.info(
            text,
            "stage.progress",
            stage=self.stage,
            bar=bar.description,
            done=bar.done,
            total=bar.total,
            rate_per_s=round(rate, 4),
            eta_s=None if eta is None else round(eta, 1),
        )
