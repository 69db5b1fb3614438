"""``postprocess``: the map products a run makes after its raw maps, as frozen configs.

The attribute names are the manifest section's (``pipeline.manifest.postprocess``), so stages
read ``config.postprocess.regularization.connectivity`` as the manifest says it. Validation
happened in the manifest; ``RegularizationSettings.on_grid`` turns a unit in hectares into
pixels once the map's resolution is known.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

from pipeline.postprocess.regularize import RegularizationConfig, mmu_pixels
from pipeline.postprocess.smooth import SmoothingConfig

__all__ = [
    "PostprocessConfig",
    "RegularizationSettings",
    "SmoothingConfig",
    "UncertaintyConfig",
    "VectorizationConfig",
]

Format = Literal["parquet", "gpkg"]
Layer = Literal["entropy", "margin"]


@dataclass(frozen=True)
class RegularizationSettings:
    """``postprocess.regularization``: the unit in pixels or in hectares (one of them)."""

    mmu_pixels: int | None = None
    mmu_hectares: float | None = None
    connectivity: Literal[4, 8] = 4
    majority_radius: int = 0
    passes: int = 2

    def on_grid(self, resolution: tuple[float, float]) -> RegularizationConfig:
        """The library's config on a grid of ``resolution`` (metres)."""
        if self.mmu_pixels is not None:
            mmu = self.mmu_pixels
        else:
            assert self.mmu_hectares is not None  # the manifest asks for one of them
            mmu = mmu_pixels(self.mmu_hectares, resolution)
        return RegularizationConfig(mmu, self.connectivity, self.majority_radius, self.passes)


@dataclass(frozen=True)
class VectorizationConfig:
    """``postprocess.vectorization``: polygons of the final map, in these formats."""

    formats: tuple[Format, ...] = ("parquet", "gpkg")
    connectivity: Literal[4, 8] | None = None
    """None: the regularization's (4 without one)."""
    simplify: float | None = None
    """Tolerance (map units) of the coverage simplification; None: polygons as traced."""

    def __canonical__(self) -> dict[str, object]:
        # ``simplify`` enters digests only when set: stores made before it resume
        out: dict[str, object] = {
            "__type__": type(self).__qualname__,
            "formats": self.formats,
            "connectivity": self.connectivity,
        }
        if self.simplify is not None:
            out["simplify"] = self.simplify
        return out


@dataclass(frozen=True)
class UncertaintyConfig:
    """``postprocess.uncertainty``: per-pixel layers of the class probabilities."""

    layers: tuple[Layer, ...] = ("entropy", "margin")


@dataclass(frozen=True)
class PostprocessConfig:
    """``postprocess``: each step optional; ``colors`` gives classes their legend colours."""

    smoothing: SmoothingConfig | None = None
    regularization: RegularizationSettings | None = None
    vectorization: VectorizationConfig | None = None
    uncertainty: UncertaintyConfig | None = None
    colors: tuple[tuple[int, str], ...] = ()
    """(class code, '#rrggbb'), for classes given a colour; the others get the default palette."""

    @property
    def connectivity(self) -> Literal[4, 8]:
        """The connectivity of the polygons."""
        if self.vectorization is not None and self.vectorization.connectivity is not None:
            return self.vectorization.connectivity
        return self.regularization.connectivity if self.regularization is not None else 4
