"""What the user sees while a run goes: stage starts and ends, per-stage bars with rate and ETA.

On a terminal the bars are live; elsewhere (CI, logs) each stage prints one line when it ends.
"""

from __future__ import annotations

from typing import Protocol

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


class _RateColumn(ProgressColumn):
    """Units per second (chunks/s), the figure users size their runs with."""

    def render(self, task: Task) -> Text:
        speed = task.finished_speed or task.speed
        return Text(f"{speed:6.2f}/s" if speed else "     -/s")


class Bar(Protocol):
    def advance(self, amount: int = 1) -> None: ...


class _RichBar:
    def __init__(self, progress: RichProgress, description: str, total: int) -> None:
        self._progress = progress
        self._task = progress.add_task(description, total=total)

    def advance(self, amount: int = 1) -> None:
        self._progress.advance(self._task, amount)


class Progress:
    def __init__(self, console: Console | None = None) -> None:
        self.console = console or Console(stderr=True)
        self._bars = RichProgress(
            TextColumn("  {task.description:<18}"),
            BarColumn(),
            MofNCompleteColumn(),
            _RateColumn(),
            TimeElapsedColumn(),
            TextColumn("eta"),
            TimeRemainingColumn(),
            console=self.console,
            transient=False,
            disable=not self.console.is_terminal,
        )

    def __enter__(self) -> Progress:
        self._bars.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._bars.stop()

    def info(self, message: str) -> None:
        self.console.print(message, highlight=False)

    def warn(self, message: str) -> None:
        self.console.print(f"[yellow]warning:[/yellow] {message}", highlight=False)

    def stage_started(self, name: str) -> None:
        self.console.print(f"[bold]{name}[/bold] ...", highlight=False)

    def stage_finished(self, name: str, seconds: float) -> None:
        self.console.print(f"[bold]{name}[/bold] done in {seconds:.1f} s", highlight=False)

    def bar(self, description: str, total: int) -> Bar:
        return _RichBar(self._bars, description, total)
