"""The driver's side of the status: stage, progress and tiles written into its SitsRun.

When ``sitsflow run`` runs in a Job the operator made, the pod has the run's name and namespace
in its environment and a service-account token allowed to patch ``sitsruns/status``. The driver
then reports as it goes (merge patches through kr8s, as the operator's own client), so
``kubectl get sitsruns`` shows Progress and Tiles. Reporting is best effort: a failed report is
logged once and never stops the run. Outside such a pod nothing is sent.
"""

from __future__ import annotations

import logging
import os
import time
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any

from rich.console import Console

from pipeline.k8s import API_VERSION, KIND, PLURAL
from pipeline.k8s.status import progress_text, tiles_text
from pipeline.run.progress import Bar, Progress
from pipeline.stages import stage_names

log = logging.getLogger(__name__)

SERVICE_ACCOUNT_DIR = Path("/var/run/secrets/kubernetes.io/serviceaccount")
TIMEOUT_S = 5.0  # a report waits no longer: the run goes on


class StatusReporter:
    """Merge-patches ``status`` fields of one SitsRun, at most every ``min_interval`` seconds.

    The credentials are kr8s': a kubeconfig when given, else the pod's service account.
    """

    def __init__(
        self,
        namespace: str,
        name: str,
        *,
        kubeconfig: Path | None = None,
        serviceaccount: Path | None = None,
        min_interval: float = 5.0,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.namespace, self.name = namespace, name
        self.target = f"{KIND} {namespace}/{name}"
        self._kubeconfig = kubeconfig
        self._serviceaccount = serviceaccount
        self._run: Any = None  # the SitsRun as a kr8s object, made at the first report
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
        if not (name and namespace and env.get("KUBERNETES_SERVICE_HOST")):
            return None
        if not (account_dir / "token").exists():
            return None
        return cls(namespace, name, serviceaccount=account_dir)

    def update(self, force: bool = False, **fields: Any) -> None:
        self._pending.update(fields)
        if force or self._clock() - self._last_sent >= self._min_interval:
            self.flush()

    def _sitsrun(self) -> Any:
        if self._run is None:
            # Imported here: kr8s takes a second to import, and only an operator's pod reports.
            import kr8s
            from kr8s.objects import new_class

            api = kr8s.api(
                kubeconfig=str(self._kubeconfig) if self._kubeconfig else None,
                serviceaccount=str(self._serviceaccount) if self._serviceaccount else None,
            )
            api.timeout = TIMEOUT_S
            sitsrun = new_class(KIND, version=API_VERSION, plural=PLURAL, asyncio=False)
            meta = {"name": self.name, "namespace": self.namespace}
            self._run = sitsrun({"metadata": meta}, api=api)
        return self._run

    def flush(self) -> None:
        if not self._pending:
            return
        fields, self._pending = self._pending, {}
        self._last_sent = self._clock()
        import httpx
        import kr8s

        try:
            self._sitsrun().patch({"status": fields}, subresource="status")
            self.sent += 1
        except (
            kr8s.ServerError,  # refused (RBAC, a deleted SitsRun) or failed by the server
            kr8s.NotFoundError,
            kr8s.APITimeoutError,
            httpx.HTTPError,  # unreachable
            OSError,
            ValueError,  # no credentials found
        ) as exc:
            if not self._warned:  # once: a run must not drown its log in reporting failures
                log.warning(
                    "cannot report progress to %s (%s: %s); the run goes on",
                    self.target,
                    type(exc).__name__,
                    exc,
                )
                self._warned = True


class ProgressTracker:
    """Overall progress from stage starts/ends and per-stage bars (equal weight per stage)."""

    def __init__(self, stages: Sequence[str] | None = None) -> None:
        # The registry's stages in order (read now: a registered stage counts); a stage not
        # there is added at the end when it starts.
        self.stages = list(stage_names() if stages is None else stages)
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
