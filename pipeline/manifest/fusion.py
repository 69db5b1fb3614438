"""The fusion section: several class maps of the run's area combined per pixel."""

from __future__ import annotations

from collections.abc import Callable
from typing import Literal

from pydantic import Field, model_validator

from pipeline.manifest.common import _IDENT, _at, _Strict


class FusionSourceSpec(_Strict):
    """One map to fuse: a model of this run (``run``, ``sensor``) or an earlier run (``store``)."""

    run: int | None = Field(
        None,
        ge=0,
        description="A model of this run by its sampling run (0 .. sampling.runs - 1; run r "
        "has seed sampling.seed + r): applied to the cube chunk by chunk. Its masses come from "
        "its own validation pixels.",
    )
    store: str | None = Field(
        None,
        description="The run store of an earlier classification run on the same grid (another "
        "sensor, say): its label and confidence maps and its report's confusion matrix are read.",
    )
    sensor: str | None = Field(
        None,
        pattern=_IDENT,
        description="A model of this run on one sensor's features only (a sensors[].name: its "
        "cube variables, the <sensor>_* feature columns), the run's model configuration trained "
        "on run 0's samples and split: applied to the cube chunk by chunk. Its masses come from "
        "run 0's validation pixels (radar and optical, say, fused where clouds persist).",
    )
    name: str | None = Field(
        None,
        pattern=_IDENT,
        description="The source's name in the report (default: run-<r>, sensor-<sensor>, or "
        "the store's folder name).",
    )

    @model_validator(mode="after")
    def _one_kind(self) -> FusionSourceSpec:
        given = [k for k in ("run", "store", "sensor") if getattr(self, k) is not None]
        if len(given) != 1:
            raise _at(
                "run",
                "a fusion source names either a run of this run's models, a sensor of this run "
                f"or an earlier run's store (got run={self.run!r}, sensor={self.sensor!r}, "
                f"store={self.store!r})",
                "give exactly one of run, sensor or store",
            )
        return self

    @property
    def label(self) -> str:
        if self.name is not None:
            return self.name
        if self.run is not None:
            return f"run-{self.run}"
        if self.sensor is not None:
            return f"sensor-{self.sensor}"
        return str(self.store).rstrip("/").rsplit("/", 1)[-1].replace("-", "_").lower()


class FusionSpec(_Strict):
    """Decision fusion: the sources' labels combined per pixel into fusion/labels.tif, with its
    confidence and an accuracy report beside each source's (fusion/metrics.json, report.md)."""

    method: Literal["majority_vote", "dempster_shafer"] = Field(
        "dempster_shafer",
        description="'majority_vote' (ties to the more confident voters, then the smaller code) "
        "or 'dempster_shafer' (each source's mass of belief in its label from its validation "
        "confusion matrix, combined by Dempster's rule; the OTB FusionOfClassifications rule).",
    )
    mass: Literal["precision", "recall", "accuracy"] = Field(
        "precision",
        description="Dempster-Shafer: a source's mass of belief in the class it maps, from its "
        "confusion matrix: the class's precision (user's accuracy), recall (producer's "
        "accuracy) or the overall accuracy.",
    )
    sources: list[FusionSourceSpec] = Field(
        min_length=2, description="The maps to fuse (two or more)."
    )

    @model_validator(mode="after")
    def _distinct(self) -> FusionSpec:
        labels = [s.label for s in self.sources]
        twice = sorted({n for n in labels if labels.count(n) > 1})
        if twice:
            raise _at(
                "sources",
                f"fusion sources {twice} appear more than once",
                "list each source once, or give them distinct names",
            )
        return self

    def with_paths(self, resolve: Callable[[str], str]) -> FusionSpec:
        """The section with each store location normalized by ``resolve``."""
        sources = [
            s if s.store is None else s.model_copy(update={"store": resolve(s.store)})
            for s in self.sources
        ]
        return self.model_copy(update={"sources": sources})
