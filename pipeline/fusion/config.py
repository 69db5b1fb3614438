"""The ``fusion`` section as the run reads it (built by ``pipeline.manifest.resolve``)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal


@dataclass(frozen=True)
class FusionSourceConfig:
    """One map to fuse: a model of this run (``run``) or an earlier run's store (``store``)."""

    run: int | None = None
    store: str | None = None
    name: str | None = None

    @property
    def label(self) -> str:
        """The source's name in the report."""
        if self.name is not None:
            return self.name
        if self.run is not None:
            return f"run-{self.run}"
        return str(self.store).rstrip("/").rsplit("/", 1)[-1].replace("-", "_").lower()


@dataclass(frozen=True)
class FusionConfig:
    """How the sources are combined (``majority_vote`` or ``dempster_shafer``) and from what."""

    sources: tuple[FusionSourceConfig, ...]
    method: Literal["majority_vote", "dempster_shafer"] = "dempster_shafer"
    mass: Literal["precision", "recall", "accuracy"] = "precision"
