"""Regions (e.g. eco-climatic zones): one model per region, combined near the borders.

Rules, in order:

* **Every grid pixel has one region.** The regions layer is burnt onto the grid (pixel centres);
  pixels that no region polygon covers take the nearest region, with a warning that says how many.
* **A reference feature belongs to one region**, the one holding most of its pixels, so that a
  feature straddling a border trains one model and stays on one side of the split.
* **Each region's model is trained on the training pixels of its own features** (split and
  selection run per region). A region without training pixels, or with a single class, cannot
  have a model: that is an error naming the region, never a silently wrong map.
* **Near borders, models are combined.** With ``border_pixels = B > 0``, region ``r`` weighs
  ``w_r = max(0, 1 - d_r / B)`` at a pixel, where ``d_r`` is the pixel's Euclidean distance (in
  pixels) to the nearest pixel of ``r`` (0 inside ``r``). A pixel's own region always weighs 1, a
  region ``B`` or more pixels away 0, so the map follows the own region's model away from
  borders and changes smoothly across them. ``blend`` averages the class probabilities with these
  weights and takes the most probable class; ``vote`` takes the class whose predicting models
  have the largest total weight (ties go to the larger blended probability). The confidence is
  the blended probability of the chosen class in both cases. ``B = 0`` uses the own model only.
"""

from __future__ import annotations

import warnings
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Literal

import numpy as np
import pandas as pd
from rasterio import features as rio_features
from rasterio.enums import MergeAlg
from scipy import ndimage

from pipeline.errors import InputDataError
from pipeline.model import GridSpec, Window
from pipeline.samples.config import RegionsConfig
from pipeline.samples.reference import ReferencePolygons, read_vector, require_fields
from pipeline.warnings import DataQualityWarning

NO_REGION = -1


@dataclass(frozen=True)
class RegionMap:
    """Regions on the grid: ``names[i]`` is the code of region ``i``; ``index`` (H, W) int16."""

    names: tuple[str, ...]
    index: np.ndarray = field(repr=False)
    filled_pixels: int = 0  # pixels outside every region polygon, given the nearest region

    def __post_init__(self) -> None:
        index = np.asarray(self.index, dtype=np.int16)
        index.setflags(write=False)
        object.__setattr__(self, "index", index)

    def patch(self, window: Window, halo: int) -> np.ndarray:
        """The region index over ``window`` grown by ``halo`` pixels, NO_REGION off the grid."""
        height, width = self.index.shape
        out = np.full((window.height + 2 * halo, window.width + 2 * halo), NO_REGION, np.int16)
        r0, c0 = window.row_off - halo, window.col_off - halo
        rs, cs = max(r0, 0), max(c0, 0)
        re = min(window.row_off + window.height + halo, height)
        ce = min(window.col_off + window.width + halo, width)
        out[rs - r0 : re - r0, cs - c0 : ce - c0] = self.index[rs:re, cs:ce]
        return out


def _code_text(value: object) -> str:
    """A region code as text; 3.0 read from a float column is "3"."""
    if isinstance(value, float) and value.is_integer():
        return str(int(value))
    return str(value)


def _sort_codes(codes: Sequence[object]) -> list[str]:
    """Region codes as text, numeric codes in numeric order."""
    texts = sorted({str(c) for c in codes})
    try:
        return sorted(texts, key=float)
    except ValueError:
        return texts


def load_regions(spec: RegionsConfig, grid: GridSpec) -> RegionMap:
    """Burn the regions layer onto ``grid``; uncovered pixels take the nearest region."""
    where = "reference.regions"
    frame = read_vector(spec.path, spec.layer, f"{where}.path")
    require_fields(frame, {"field": spec.field}, where)
    frame = frame[frame.geometry.notna() & ~frame.geometry.is_empty]
    if frame[spec.field].isna().any():
        raise InputDataError(
            f"{int(frame[spec.field].isna().sum())} region polygon(s) have no value in "
            f"{spec.field!r}",
            fix="give every region polygon a region code, or remove those polygons",
            field=f"{where}.field",
        )
    kinds = set(frame.geom_type) - {"Polygon", "MultiPolygon"}
    if kinds:
        raise InputDataError(
            f"the regions layer holds {sorted(kinds)} geometries; regions must be polygons",
            fix="keep only the region polygons in the regions file",
            field=f"{where}.path",
        )
    frame = frame.to_crs(grid.crs)
    codes = frame[spec.field].map(_code_text)
    names = _sort_codes(codes.tolist())
    position = {name: i for i, name in enumerate(names)}
    shapes = [(geom, position[c]) for geom, c in zip(frame.geometry, codes, strict=True)]
    index = rio_features.rasterize(
        shapes, out_shape=grid.shape, transform=grid.affine, fill=NO_REGION, dtype="int16"
    )
    overlap = rio_features.rasterize(
        ((geom, 1) for geom in frame.geometry),
        out_shape=grid.shape,
        transform=grid.affine,
        fill=0,
        dtype="int32",
        merge_alg=MergeAlg.add,
    )
    if (overlap > 1).any():
        warnings.warn(
            f"{int((overlap > 1).sum())} pixel(s) lie in more than one region polygon; they get "
            "the region listed last in the file. Make the regions a partition (no overlaps)",
            DataQualityWarning,
            stacklevel=2,
        )
    outside = index == NO_REGION
    if outside.all():
        raise InputDataError(
            f"no region polygon of {spec.path!r} covers a pixel of the output grid "
            f"(grid bounds {tuple(round(v, 2) for v in grid.bounds)} in {grid.crs})",
            fix="check that the regions layer and the imagery cover the same area",
            field=f"{where}.path",
        )
    filled = int(outside.sum())
    if filled:
        nearest = ndimage.distance_transform_edt(
            outside, return_distances=False, return_indices=True
        )
        index = index[nearest[0], nearest[1]]
        warnings.warn(
            f"{filled} pixel(s) lie in no region polygon; each takes the nearest region's model",
            DataQualityWarning,
            stacklevel=2,
        )
    present = set(np.unique(index).tolist())
    absent = [n for i, n in enumerate(names) if i not in present]
    if absent:
        warnings.warn(
            f"region(s) {absent} cover no pixel of the grid; they get no model",
            DataQualityWarning,
            stacklevel=2,
        )
    return RegionMap(names=tuple(names), index=index, filled_pixels=filled)


def polygon_regions(reference: ReferencePolygons, regions: RegionMap) -> dict[int, int]:
    """Region index of every feature that covers a pixel: the region of most of its pixels."""
    ids = reference.polygon_ids
    inside = ids >= 0
    frame = pd.DataFrame({"polygon_id": ids[inside], "region": regions.index[inside]})
    counts = frame.value_counts().reset_index(name="n")
    # Most pixels first; ties go to the lower region index, so the rule is deterministic.
    counts = counts.sort_values(["polygon_id", "n", "region"], ascending=[True, False, True])
    first = counts.drop_duplicates("polygon_id")
    return dict(zip(first["polygon_id"].astype(int), first["region"].astype(int), strict=True))


def check_region_training(
    training: pd.DataFrame, regions: RegionMap, *, classification: bool = True
) -> None:
    """Raise when a region of the grid has no training pixel, or (classification) one class.

    ``training`` holds the training pixels with a ``region`` column (region index) and, for
    classification, ``label``.
    """
    used = set(np.unique(regions.index).tolist())
    per_region = training.groupby("region")
    empty = [regions.names[r] for r in sorted(used) if r not in per_region.groups]
    if empty:
        raise InputDataError(
            f"region(s) {empty} have no training pixel, so no model can map them",
            fix="add reference features inside these regions, or merge each into a neighbouring "
            "region in the regions layer",
            field="reference.regions",
        )
    if classification:
        single = {
            regions.names[int(r)]: sorted(int(c) for c in group["label"].unique())
            for r, group in per_region
            if group["label"].nunique() < 2
        }
        if single:
            raise InputDataError(
                f"region(s) {list(single)} have training pixels of a single class ({single}); "
                "a classifier needs at least two",
                fix="add reference features of other classes in these regions, or merge them "
                "into a neighbouring region",
                field="reference.regions",
            )


def border_weights(patch: np.ndarray, n_regions: int, border_pixels: int) -> np.ndarray:
    """(n_regions, h, w) float32 weight of each region's model at each pixel of ``patch``.

    ``patch`` is the region index (NO_REGION off the grid). The rule is in the module docstring.
    """
    weights = np.zeros((n_regions, *patch.shape), dtype=np.float32)
    for region in np.unique(patch[patch != NO_REGION]).tolist():
        inside = patch == region
        if border_pixels == 0:
            weights[region] = inside
            continue
        distance = ndimage.distance_transform_edt(~inside)
        weights[region] = np.clip(1.0 - distance / border_pixels, 0.0, 1.0)
    return weights


def window_weights(regions: RegionMap, window: Window, border_pixels: int) -> np.ndarray:
    """Border weights over ``window`` (computed with a halo, so neighbours outside count)."""
    patch = regions.patch(window, border_pixels)
    weights = border_weights(patch, len(regions.names), border_pixels)
    b = border_pixels
    return weights[:, b : b + window.height, b : b + window.width]


def align_probabilities(
    probabilities: np.ndarray, model_classes: Sequence[int], classes: Sequence[int]
) -> np.ndarray:
    """(len(classes), h, w) probabilities; classes the model does not know get 0."""
    position = {int(c): i for i, c in enumerate(classes)}
    missing = [int(c) for c in model_classes if int(c) not in position]
    if missing:
        raise ValueError(f"model classes {missing} are not among the classes {list(classes)}")
    out = np.zeros((len(classes), *probabilities.shape[1:]), dtype=np.float32)
    for i, code in enumerate(model_classes):
        out[position[int(code)]] = probabilities[i]
    return out


def combine_predictions(
    probabilities: Mapping[int, np.ndarray],
    weights: np.ndarray,
    rule: Literal["blend", "vote"] = "blend",
) -> tuple[np.ndarray, np.ndarray]:
    """Combine region models' (C, h, w) probabilities (aligned to one class list) at each pixel.

    ``probabilities`` maps region index -> probabilities of that region's model; every region
    with a non-zero weight somewhere must be given. Returns the index of the chosen class in the
    class list (h, w) int64 and its blended probability (h, w) float32. The rule is in the
    module docstring.
    """
    needed = [int(r) for r in np.flatnonzero(weights.reshape(len(weights), -1).max(axis=1) > 0)]
    missing = [r for r in needed if r not in probabilities]
    if missing:
        raise ValueError(f"regions {missing} weigh on this window but have no probabilities")
    if not needed:
        raise ValueError("no region weighs on this window")
    shape = probabilities[needed[0]].shape
    total = np.zeros(shape, dtype=np.float64)
    weight_sum = np.zeros(shape[1:], dtype=np.float64)
    votes = np.zeros(shape, dtype=np.float64)
    for region in needed:
        w = weights[region].astype(np.float64)
        proba = probabilities[region]
        total += w * proba
        weight_sum += w
        if rule == "vote":
            chosen = np.argmax(proba, axis=0)
            np.add.at(votes, (chosen, *np.indices(chosen.shape)), w)
    with np.errstate(invalid="ignore", divide="ignore"):
        blended = np.where(weight_sum > 0, total / weight_sum, 0.0)
    if rule == "blend":
        label = np.argmax(blended, axis=0)
    elif rule == "vote":
        # The blended probability, scaled far down, only decides (near-)exact ties.
        label = np.argmax(votes + 1e-6 * blended, axis=0)
    else:
        raise ValueError(f"unknown border rule {rule!r}; use 'blend' or 'vote'")
    confidence = np.take_along_axis(blended, label[None], axis=0)[0]
    return label.astype(np.int64), confidence.astype(np.float32)
