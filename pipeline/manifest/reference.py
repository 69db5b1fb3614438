"""The reference and sampling sections: labelled polygons, regions and how pixels are drawn."""

from __future__ import annotations

from typing import Literal

from pydantic import (
    Field,
    model_validator,
)

from pipeline.manifest.common import (
    _Strict,
)


class RegionsSpec(_Strict):
    """Regions (e.g. eco-climatic zones): one model per region, blended near the borders."""

    path: str = Field(
        description="GeoPackage, GeoParquet or Shapefile with the region polygons "
        "(relative paths are relative to the manifest).",
        min_length=1,
    )
    layer: str | None = Field(None, description="Layer name inside a multi-layer file.")
    field: str = Field(
        description="Field with each region's code or name (integers or text).", min_length=1
    )
    border_pixels: int = Field(
        0,
        ge=0,
        le=1000,
        description="Width, in pixels, of the band along region borders where the models of "
        "the regions within that distance are combined (0: each pixel uses its own region's "
        "model only).",
    )
    border_rule: Literal["blend", "vote"] = Field(
        "blend",
        description="How models are combined near a border: 'blend' averages their class "
        "probabilities, 'vote' picks the class with the largest total weight; each region's "
        "weight falls linearly from 1 inside it to 0 at border_pixels away.",
    )


class ReferenceSpec(_Strict):
    """Reference polygons (or points) with their labels (classification) or values (regression)."""

    path: str = Field(description="GeoPackage, GeoParquet or Shapefile with the reference data.")
    layer: str | None = Field(None, description="Layer name inside a multi-layer file.")
    label_field: str | None = Field(
        None,
        description="Field with the class (classification): integer codes, or text (codes 1..K "
        "in sorted order of the texts, the texts becoming the class names).",
    )
    value_field: str | None = Field(
        None,
        description="Numeric field with the value to predict (regression); give it instead of "
        "label_field.",
    )
    name_field: str | None = Field(None, description="Optional field with the class name.")
    ignore_labels: list[int] = Field(
        default_factory=list, description="Class codes to leave out (e.g. 0 for 'no data')."
    )
    group_field: str | None = Field(
        None,
        description="Field whose equal values keep features together on one side of the "
        "train/validation split (e.g. a parcel id shared by several points); default: each "
        "feature on its own.",
    )
    regions: RegionsSpec | None = Field(
        None, description="Regions layer: one model is trained and applied per region."
    )
    start_field: str | None = Field(
        None,
        description="Date field with the start of each feature's own time window (the season "
        "it was observed): its features are read on the date grid that starts there, with as "
        "many dates as spec.period's, and aligned by position in the season (feature names "
        "<sensor>_<variable>_t<NN>, the NN-th date of the window's grid). Default: every "
        "feature is observed in spec.period.",
    )
    end_field: str | None = Field(
        None,
        description="Date field with the end of each feature's window (needs start_field); "
        "the window must give as many dates as spec.period on every sensor's grid. Default: "
        "start plus the length of spec.period.",
    )
    split_field: str | None = Field(
        None,
        description="Field fixing each feature's side of the split ('train' or 'validation'), "
        "e.g. an independent validation set or validation on another year; replaces the "
        "random split by polygon (sampling.validation_fraction is then unused).",
    )

    @model_validator(mode="after")
    def _one_target(self) -> ReferenceSpec:
        if (self.label_field is None) == (self.value_field is None):
            raise ValueError(
                "give exactly one of label_field (classification) and value_field (regression)"
                f", got {'both' if self.label_field else 'neither'}; set label_field to the "
                "class-code field, or value_field to the numeric field to predict"
            )
        if self.value_field is not None and (self.name_field or self.ignore_labels):
            raise ValueError(
                "name_field and ignore_labels describe classes, but this reference has a "
                "value_field (regression); remove name_field and ignore_labels"
            )
        if self.end_field is not None and self.start_field is None:
            raise ValueError(
                f"end_field {self.end_field!r} is given without start_field; a window needs "
                "its start: set start_field too, or remove end_field"
            )
        return self


MAX_MIN_PIXELS_PER_CLASS = 10_000_000


class SamplingSpec(_Strict):
    """How reference polygons become training and validation pixels."""

    validation_fraction: float = Field(
        0.3,
        gt=0,
        lt=1,
        description="Share of each class's polygons kept for validation (split by polygon).",
    )
    seed: int = Field(0, ge=0, description="Seed of the split and the selection.")
    max_pixels_per_polygon: int | None = Field(
        None, ge=1, description="Cap of training pixels drawn from one polygon (None: all)."
    )
    min_pixels_per_class: int = Field(
        10, ge=1, description="Classes with fewer training pixels are left out with a warning."
    )
    strategy: Literal["all", "percentage", "per_class_count", "smallest_class"] = Field(
        "all",
        description="Training pixels kept per class (per region with regions): 'all'; "
        "'percentage' (fraction of each class); 'per_class_count' (count per class, all of a "
        "smaller class); 'smallest_class' (as many per class as the smallest class has).",
    )
    fraction: float | None = Field(
        None, gt=0, le=1, description="Share of each class's pixels kept (strategy percentage)."
    )
    count: int | None = Field(
        None, ge=1, description="Pixels kept per class (strategy per_class_count)."
    )
    within_polygon: Literal["random", "periodic"] = Field(
        "random",
        description="How pixels are drawn inside a polygon: 'random' (seeded) or 'periodic' "
        "(evenly spaced in row-major order).",
    )
    runs: int = Field(
        1,
        ge=1,
        le=100,
        description="Number of repeated split/train/validate runs with seeds seed, seed+1, ...; "
        "metrics are reported as mean and 95% interval across runs.",
    )
    final_model: Literal["run0", "all"] = Field(
        "run0",
        description="The model that makes the map: 'run0', run 0's (trained on its training "
        "split; the map is scored at its validation pixels); 'all', a model trained on every "
        "sample pixel (the selection applied to both sides of the split), with run 0's model "
        "kept apart and scored on its held-out pixels (docs/concepts.md#the-final-model).",
    )

    def __canonical__(self) -> dict[str, object]:
        # final_model only when set: runs made before it existed keep their digests.
        exclude = {"final_model"} if self.final_model == "run0" else set()
        return {"__type__": "SamplingSpec", **self.model_dump(mode="json", exclude=exclude)}

    @model_validator(mode="after")
    def _strategy_parameters(self) -> SamplingSpec:
        # A bound no reference reaches (a checked validator: the schema and CRD stay as they are),
        # so a typo such as 1e9 fails here, not after the cube is built.
        if self.min_pixels_per_class > MAX_MIN_PIXELS_PER_CLASS:
            raise ValueError(
                f"[min_pixels_per_class] min_pixels_per_class {self.min_pixels_per_class} is more "
                f"than {MAX_MIN_PIXELS_PER_CLASS:,} training pixels per class, which no "
                "reference holds, so every class would be left out; use a value such as 10 "
                f"(at most {MAX_MIN_PIXELS_PER_CLASS:,})"
            )
        needs = {"percentage": "fraction", "per_class_count": "count"}
        wanted = needs.get(self.strategy)
        for name in ("fraction", "count"):
            given = getattr(self, name) is not None
            if name == wanted and not given:
                raise ValueError(
                    f"strategy {self.strategy!r} needs {name}; set {name} "
                    f"(e.g. {name}: {0.5 if name == 'fraction' else 1000})"
                )
            if name != wanted and given:
                users = [s for s, n in needs.items() if n == name]
                raise ValueError(
                    f"{name} is only used by strategy {users[0]!r}, but strategy is "
                    f"{self.strategy!r}; remove {name} or set strategy: {users[0]}"
                )
        return self
