"""The postprocess section: map products made after the raw maps (smoothing, regularization to
a minimum mapping unit, polygons, uncertainty layers) and the legend's colours. Each part is
optional; a part left out is not made."""

from __future__ import annotations

import re
from typing import Literal

from pydantic import Field, field_validator, model_validator

from pipeline.manifest.common import _at, _Strict

_COLOR = re.compile(r"^#[0-9a-fA-F]{6}$")


class SmoothingSpec(_Strict):
    """Bayesian spatial smoothing of the class probabilities (sits' ``sits_smooth``), then
    labels and confidence from the smoothed probabilities. Needs outputs.probabilities."""

    window_size: int = Field(
        7, ge=3, description="Side of the square neighbourhood, in pixels (odd; sits: 7)."
    )
    neigh_fraction: float = Field(
        0.5,
        gt=0,
        le=1,
        description="Share of the neighbourhood's highest logits that form the prior (sits: 0.5).",
    )
    smoothness: list[float] = Field(
        default_factory=lambda: [10.0],
        min_length=1,
        description="Prior variance: one value for all classes, or one per class in class-code "
        "order (sits: 10). Larger values smooth more.",
    )

    @field_validator("window_size")
    @classmethod
    def _odd(cls, value: int) -> int:
        if value % 2 == 0:
            raise _at("window_size", f"{value} is even", "give an odd size such as 5, 7 or 9")
        return value

    @field_validator("smoothness")
    @classmethod
    def _positive(cls, values: list[float]) -> list[float]:
        if any(not v > 0 for v in values):
            raise _at(
                "smoothness", f"{values} has a value that is not above 0", "give variances > 0"
            )
        return values


class RegularizationSpec(_Strict):
    """Regions smaller than the minimum mapping unit take the class of their surroundings
    (the majority of the pixels around them, as a sieve does)."""

    mmu_pixels: int | None = Field(
        None, ge=1, description="The minimum mapping unit in pixels (or give mmu_hectares)."
    )
    mmu_hectares: float | None = Field(
        None,
        gt=0,
        description="The minimum mapping unit in hectares, rounded up to whole pixels of the "
        "map (or give mmu_pixels).",
    )
    connectivity: Literal[4, 8] = Field(
        4,
        description="4: pixels touching by an edge form a region; 8: also by a corner.",
    )
    majority_radius: int = Field(
        0,
        ge=0,
        le=10,
        description="A majority filter of this radius (pixels) first; 0: none.",
    )
    passes: int = Field(
        2, ge=1, le=4, description="Sieve passes (a second one sieves clusters of small regions)."
    )

    @model_validator(mode="after")
    def _one_unit(self) -> RegularizationSpec:
        if (self.mmu_pixels is None) == (self.mmu_hectares is None):
            given = "both" if self.mmu_pixels is not None else "neither"
            raise _at(
                "mmu_pixels",
                f"{given} of mmu_pixels and mmu_hectares given",
                "give the minimum mapping unit once, e.g. mmu_hectares: 0.5 or mmu_pixels: 5",
            )
        return self


class VectorizationSpec(_Strict):
    """Polygons of the final map (regularized when regularization is on), one per region, with
    class, area, mean confidence, the share of each class before regularization and the mean
    probability of each class (when probabilities are kept)."""

    formats: list[Literal["parquet", "gpkg"]] = Field(
        default_factory=lambda: ["parquet", "gpkg"],  # type: ignore[arg-type]
        min_length=1,
        description="GeoParquet ('parquet') and/or GeoPackage ('gpkg'), written beside the maps.",
    )
    connectivity: Literal[4, 8] | None = Field(
        None,
        description="Connectivity of the regions the polygons outline; default: the "
        "regularization's (4 without one).",
    )
    simplify: float | None = Field(
        None,
        gt=0,
        description="Simplify the polygons with this tolerance (map units, e.g. metres), "
        "keeping them a coverage: an edge shared by two polygons is simplified once, so no gap "
        "or overlap opens between neighbours; none if absent.",
    )

    @field_validator("formats")
    @classmethod
    def _unique(cls, formats: list[str]) -> list[str]:
        if len(set(formats)) != len(formats):
            raise _at("formats", f"{formats} repeats a format", "list each format once")
        return formats


class UncertaintySpec(_Strict):
    """Per-pixel uncertainty of the class probabilities (sits' uncertainty maps), as percent
    COGs: where they are high, new samples help most. Needs outputs.probabilities."""

    layers: list[Literal["entropy", "margin"]] = Field(
        default_factory=lambda: ["entropy", "margin"],  # type: ignore[arg-type]
        min_length=1,
        description="'entropy' (normalized, 0: certain) and/or 'margin' (1 - (first - second)).",
    )


class PostprocessSpec(_Strict):
    """Map products after the raw maps: each part optional, made after the mosaic."""

    smoothing: SmoothingSpec | None = Field(None, description="Bayesian smoothing; none if absent.")
    regularization: RegularizationSpec | None = Field(
        None, description="Regularization to a minimum mapping unit; none if absent."
    )
    vectorization: VectorizationSpec | None = Field(
        None, description="Polygons of the final map; none if absent."
    )
    uncertainty: UncertaintySpec | None = Field(
        None, description="Uncertainty layers; none if absent."
    )
    colors: dict[int, str] = Field(
        default_factory=dict,
        description="Legend colours by class code ('#rrggbb'); classes left out get the default "
        "palette, where related land covers get related colours.",
    )

    @field_validator("colors")
    @classmethod
    def _colors(cls, colors: dict[int, str]) -> dict[int, str]:
        bad = {code: c for code, c in colors.items() if not _COLOR.match(c)}
        if bad:
            raise _at("colors", f"{bad} are not '#rrggbb' colours", "write them as e.g. '#1b6b2a'")
        return colors

    @property
    def needs_probabilities(self) -> list[str]:
        """The parts given that read the class probabilities."""
        return [n for n in ("smoothing", "uncertainty") if getattr(self, n) is not None]


def check_postprocess(postprocess: PostprocessSpec | None, task: str, probabilities: bool) -> None:
    """The section's checks against the rest of the spec (called by ``RunSpec``)."""
    if postprocess is None:
        return
    if task != "classification":
        raise ValueError(
            f"postprocess makes products of a label map, but task {task!r} makes none; remove "
            "postprocess, or set task: classification"
        )
    needing = postprocess.needs_probabilities
    if needing and not probabilities:
        raise ValueError(
            f"postprocess.{needing[0]} reads the class probabilities, but outputs.probabilities "
            "is false; set outputs.probabilities: true, or remove postprocess."
            + " and postprocess.".join(needing)
        )
