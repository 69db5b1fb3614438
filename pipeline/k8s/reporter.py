"""The driver's side of the status: stage, progress and tiles written into its SitsRun.

When ``sitsflow run`` runs in a Job the operator made, the pod has the run's name and namespace
in its environment and a service-account token allowed to patch ``sitsruns/status``. The driver
then reports as it goes, so ``kubectl get sitsruns`` shows Progress and Tiles. Reporting is best
effort: a failed report is logged once and never stops the run. Outside such a pod nothing is sent.
"""

from __future__ import annotations

import json
import logging
import os
import ssl
import time
import urllib.error
import urllib.request
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any
from urllib.parse import quote

from rich.console import Console

from pipeline.k8s import GROUP, PLURAL, VERSION
from pipeline.k8s.api import SERVICE_ACCOUNT_DIR
from pipeline.k8s.status import progress_text, tiles_text
from pipeline.run.progress import Bar, Progress

log = logging.getLogger(__name__)

# The runner's stages in order; a stage not listed here is added at the end when it starts.
STAGES = ("discover", "cube", "samples", "train", "predict", "mosaic", "validate")


class StatusReporter:
    """Merge-patches ``status`` fields of one SitsRun, at most every ``min_interval`` seconds."""

    def __init__(
        self,
        server: str,
        namespace: str,
        name: str,
        *,
        token_path: Path | None = None,
        ca_path: Path | None = None,
        min_interval: float = 5.0,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.url = (
            f"{server.rstrip('/')}/apis/{GROUP}/{VERSION}/namespaces/{quote(namespace)}/"
            f"{PLURAL}/{quote(name)}/status"
        )
        self._token_path = token_path
        self._ssl = (
            ssl.create_default_context(cafile=str(ca_path) if ca_path else None)
            if server.startswith("https://")
            else None
        )
        self._min_interval = min_interval
        self._clock = clock
        self._pending: dict[str, Any] = {}
        self._last_sent = -float("inf")
        self._warned = False
        self.sent = 0

    @classmethod
    def from_environment(
        cls, env: Mapping[str, str] | None = None, account_dir: Path = SERVICE_ACCOUNT_DIR
    ) -> StatusReporter | None:
        """A reporter for the pod's own SitsRun, or None when not run by the operator."""
        env = os.environ if env is None else env
        name, namespace = env.get("SITSFLOW_RUN_NAME"), env.get("SITSFLOW_RUN_NAMESPACE")
        host = env.get("KUBERNETES_SERVICE_HOST")
        token = account_dir / "token"
        if not (name and namespace and host and token.exists()):
            return None
        host = f"[{host}]" if ":" in host else host
        port = env.get("KUBERNETES_SERVICE_PORT", "443")
        return cls(
            f"https://{host}:{port}",
            namespace,
            name,
            token_path=token,
            ca_path=(account_dir / "ca.crt") if (account_dir / "ca.crt").exists() else None,
        )

    def update(self, force: bool = False, **fields: Any) -> None:
        self._pending.update(fields)
        if force or self._clock() - self._last_sent >= self._min_interval:
            self.flush()

    def flush(self) -> None:
        if not self._pending:
            return
        fields, self._pending = self._pending, {}
        self._last_sent = self._clock()
        body = json.dumps({"status": fields}).encode()
        request = urllib.request.Request(self.url, data=body, method="PATCH")
        request.add_header("Content-Type", "application/merge-patch+json")
        if self._token_path is not None:
            request.add_header("Authorization", f"Bearer {self._token_path.read_text().strip()}")
        try:
            with urllib.request.urlopen(request, timeout=5, context=self._ssl) as response:
                response.read()
            self.sent += 1
        except (urllib.error.URLError, OSError, ValueError) as exc:
            if not self._warned:  # once: a run must not drown its log in reporting failures
                log.warning("cannot report progress to %s (%s); the run goes on", self.url, exc)
                self._warned = True


class ProgressTracker:
    """Overall progress from stage starts/ends and per-stage bars (equal weight per stage)."""

    def __init__(self, stages: tuple[str, ...] = STAGES) -> None:
        self.stages = list(stages)
        self.done: set[str] = set()
        self.current: str | None = None
        self._bar: tuple[int, int] = (0, 0)
        self.tiles: tuple[int, int] | None = None
        self._best = 0.0

    def start(self, stage: str) -> None:
        _ = self.fraction  # remember the progress so far before the stage list grows
        if stage not in self.stages:
            self.stages.append(stage)
        self.current, self._bar = stage, (0, 0)

    def finish(self, stage: str) -> None:
        self.done.add(stage)
        self.current, self._bar = None, (0, 0)

    def bar(self, description: str, total: int) -> None:
        self._bar = (0, total)
        if "tile" in description.lower():
            self.tiles = (0, total)

    def advance(self, description: str, amount: int) -> None:
        done, total = self._bar
        self._bar = (min(total, done + amount), total)
        if self.tiles is not None and "tile" in description.lower():
            self.tiles = (min(self.tiles[1], self.tiles[0] + amount), self.tiles[1])

    @property
    def fraction(self) -> float:
        done, total = self._bar
        partial = done / total if total and self.current and self.current not in self.done else 0
        value = (len(self.done & set(self.stages)) + partial) / len(self.stages)
        self._best = max(self._best, value)  # a stage added late must not move it backwards
        return self._best

    def fields(self) -> dict[str, Any]:
        out: dict[str, Any] = {"progress": progress_text(self.fraction)}
        if self.current:
            out["stage"] = self.current
        if self.tiles is not None:
            done, total = self.tiles
            out.update(tilesDone=done, tilesTotal=total, tiles=tiles_text(done, total))
        return out


class _ReportingBar:
    def __init__(self, inner: Bar, owner: ReportingProgress, description: str) -> None:
        self._inner, self._owner, self._description = inner, owner, description

    def advance(self, amount: int = 1) -> None:
        self._inner.advance(amount)
        self._owner.tracker.advance(self._description, amount)
        self._owner.report()


class ReportingProgress(Progress):
    """The terminal progress, plus the same events sent to the SitsRun's status."""

    def __init__(self, reporter: StatusReporter, console: Console | None = None) -> None:
        super().__init__(console)
        self.reporter = reporter
        self.tracker = ProgressTracker()

    def report(self, force: bool = False) -> None:
        self.reporter.update(force=force, **self.tracker.fields())

    def stage_started(self, name: str) -> None:
        super().stage_started(name)
        self.tracker.start(name)
        self.report(force=True)

    def stage_finished(self, name: str, seconds: float) -> None:
        super().stage_finished(name, seconds)
        self.tracker.finish(name)
        self.report(force=True)

    def bar(self, description: str, total: int) -> Bar:
        self.tracker.bar(description, total)
        return _ReportingBar(super().bar(description, total), self, description)

    def __exit__(self, *exc: object) -> None:
        super().__exit__(*exc)
        self.reporter.flush()


def progress_for(console: Console | None = None) -> Progress:
    """The Progress a run should use: reporting to its SitsRun when the operator started it."""
    reporter = StatusReporter.from_environment()
    return ReportingProgress(reporter, console) if reporter else Progress(console)
