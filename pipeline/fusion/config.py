"""The ``fusion`` section as the run reads it (built by ``pipeline.manifest.resolve``)."""

from __future__ import annotations

from dataclasses import dataclass, fields
from typing import Literal


@dataclass(frozen=True)
class FusionSourceConfig:
    """One map to fuse: a model of this run (``run``), a model of this run on one sensor's
    features (``sensor``) or an earlier run's store (``store``)."""

    run: int | None = None
    store: str | None = None
    name: str | None = None
    sensor: str | None = None

    def __canonical__(self) -> dict[str, object]:
        # sensor came later: it enters the digest only when given, so that the fusion units of
        # existing run stores keep their digests.
        form: dict[str, object] = {"__type__": type(self).__qualname__}
        form.update({f.name: getattr(self, f.name) for f in fields(self)})
        if self.sensor is None:
            del form["sensor"]
        return form

    @property
    def label(self) -> str:
        """The source's name in the report."""
        if self.name is not None:
            return self.name
        if self.run is not None:
            return f"run-{self.run}"
        if self.sensor is not None:
            return f"sensor-{self.sensor}"
        return str(self.store).rstrip("/").rsplit("/", 1)[-1].replace("-", "_").lower()


@dataclass(frozen=True)
class FusionConfig:
    """How the sources are combined (``majority_vote`` or ``dempster_shafer``) and from what."""

    sources: tuple[FusionSourceConfig, ...]
    method: Literal["majority_vote", "dempster_shafer"] = "dempster_shafer"
    mass: Literal["precision", "recall", "accuracy"] = "precision"
