"""The objects section: classify segments instead of pixels (object-based classification)."""

from __future__ import annotations

from collections.abc import Callable
from typing import Annotated, Literal

from pydantic import Field, StringConstraints, field_validator

from pipeline.manifest.common import _Strict

STATISTIC = r"^(mean|std|p(100|[1-9]?[0-9]))$"
"""A zonal statistic: the mean, the standard deviation or a percentile ``p<q>`` (``p0``-``p100``,
no leading zero)."""


class SegmentationSpec(_Strict):
    """Where the segments come from: computed per chunk with a halo and stitched, or a file."""

    path: str | None = Field(
        None,
        description="A segmentation of your own: a raster of segment ids on the run's grid "
        "(GeoTIFF, 0 = no segment) or a vector file of polygons (each one segment). Absent: "
        "the chain computes the segments.",
    )
    method: Literal["slic", "felzenszwalb"] = Field(
        "slic",
        description="Computed segments: scikit-image SLIC superpixels or Felzenszwalb-"
        "Huttenlocher graph segments on the standardised variables.",
    )
    variables: list[str] | None = Field(
        None,
        description="The cube variables segmented (e.g. [s2_ndvi]: every date of each); "
        "default: each sensor's ndvi, or every variable of a sensor without one.",
    )
    size: int = Field(100, ge=4, description="The mean segment size sought, in pixels.")
    compactness: float = Field(
        0.1, gt=0, description="SLIC: the weight of space against the standardised features."
    )
    halo: int = Field(
        16,
        ge=0,
        description="Pixels read around each chunk when segmenting: at least the width of the "
        "segments expected to cross a chunk border.",
    )


class ObjectsSpec(_Strict):
    """Object-based classification beside the pixel map: segments, their zonal statistics per
    date as features, one label per segment (objects/labels.tif and objects/segments.gpkg),
    accuracy per segment and per pixel beside the pixel map's (objects/report.json)."""

    segmentation: SegmentationSpec = Field(default_factory=SegmentationSpec)
    statistics: list[Annotated[str, StringConstraints(pattern=STATISTIC)]] = Field(
        ["mean"],
        min_length=1,
        description="The zonal statistics of each segment and cube feature used as features: "
        "mean, std (population standard deviation) and percentiles p<q> (q an integer 0-100, "
        "e.g. p10, p50, p90; numpy's 'linear' method, exact whatever the chunking). Feature "
        "names: <feature>_<statistic>, e.g. s2_ndvi_20170101_p90.",
    )

    @field_validator("statistics")
    @classmethod
    def _once_each(cls, value: list[str]) -> list[str]:
        twice = sorted({s for s in value if value.count(s) > 1})
        if twice:
            raise ValueError(f"statistics {twice} are named twice: name each statistic once")
        return value

    min_overlap: float = Field(
        0.5,
        gt=0,
        le=1,
        description="A segment is a sample of the reference polygon that covers the largest "
        "share of its pixels, when that share is at least this.",
    )

    def with_paths(self, resolve: Callable[[str], str]) -> ObjectsSpec:
        """The section with the segmentation file's location normalized by ``resolve``."""
        path = self.segmentation.path
        if path is None:
            return self
        segmentation = self.segmentation.model_copy(update={"path": resolve(path)})
        return self.model_copy(update={"segmentation": segmentation})
