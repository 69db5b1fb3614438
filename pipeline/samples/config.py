"""What the samples package is told: the reference data, its regions and the sampling rule.

Frozen dataclasses with the attribute names of the manifest sections they come from
(``pipeline.manifest.resolve`` builds them), so the samples code never sees the manifest.
Validation happened once, in the manifest; these only carry the checked values.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

from pipeline.model import section_canonical

__all__ = ["ReferenceConfig", "RegionsConfig", "SamplingConfig"]


@dataclass(frozen=True)
class RegionsConfig:
    """Regions (e.g. eco-climatic zones): one model per region, blended near the borders."""

    path: str
    field: str
    layer: str | None = None
    border_pixels: int = 0
    border_rule: Literal["blend", "vote"] = "blend"

    def __canonical__(self) -> dict[str, object]:
        # The digest of the pydantic RegionsSpec it replaces: run stores keep their units.
        return section_canonical(self, "RegionsSpec")


@dataclass(frozen=True)
class ReferenceConfig:
    """Reference polygons (or points) with their labels or values (``reference``)."""

    path: str
    layer: str | None = None
    label_field: str | None = None
    value_field: str | None = None
    name_field: str | None = None
    ignore_labels: tuple[int, ...] = ()
    group_field: str | None = None
    regions: RegionsConfig | None = None
    start_field: str | None = None
    end_field: str | None = None
    split_field: str | None = None

    def __canonical__(self) -> dict[str, object]:
        # The digest of the pydantic ReferenceSpec it replaces: run stores keep their units.
        return section_canonical(self, "ReferenceSpec")


@dataclass(frozen=True)
class SamplingConfig:
    """How reference polygons become training and validation pixels (``sampling``)."""

    validation_fraction: float = 0.3
    seed: int = 0
    max_pixels_per_polygon: int | None = None
    min_pixels_per_class: int = 10
    strategy: Literal["all", "percentage", "per_class_count", "smallest_class"] = "all"
    fraction: float | None = None
    count: int | None = None
    within_polygon: Literal["random", "periodic"] = "random"
    runs: int = 1
    final_model: Literal["run0", "all"] = "run0"
    """The model that maps: run 0's, or one trained on every sample pixel (``all``)."""

    def __canonical__(self) -> dict[str, object]:
        # The digest of the pydantic SamplingSpec it replaces: run stores keep their units
        # (final_model only when set, as the section gives it).
        out = section_canonical(self, "SamplingSpec")
        if self.final_model == "run0":
            out.pop("final_model")
        return out
