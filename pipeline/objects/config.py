"""The ``objects`` section as the run reads it (built by ``pipeline.manifest.resolve``)."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Literal


@dataclass(frozen=True)
class SegmentationConfig:
    path: str | None = None
    method: Literal["slic", "felzenszwalb"] = "slic"
    variables: tuple[str, ...] | None = None
    size: int = 100
    compactness: float = 0.1
    halo: int = 16


@dataclass(frozen=True)
class ObjectsConfig:
    segmentation: SegmentationConfig = field(default_factory=SegmentationConfig)
    statistics: tuple[str, ...] = ("mean",)
    """``mean``, ``std`` and percentiles ``p<q>`` (``pipeline.objects.zonal.percentile_of``)."""
    min_overlap: float = 0.5
