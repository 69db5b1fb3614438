"""Which training pixels a model learns from: per-class strategies and draws inside polygons.

Selection runs per model (per region when there are regions) on the training pixels, in three
steps, all seeded and independent of the row order of the input:

1. **Cap per polygon.** A polygon offers ``min(n, max_pixels_per_polygon)`` pixels, so that a few
   huge polygons do not drown the others.
2. **Target per class.** ``all``: everything offered; ``percentage``: ``round(fraction * offered)``
   (at least 1); ``per_class_count``: ``count``, or everything offered when a class has fewer
   (a SamplingWarning names those classes); ``smallest_class``: as many as the class offering the
   fewest pixels.
3. **Allocation and draw.** A class's target is shared among its polygons in proportion to what
   each offers (largest remainders, ties to the lower polygon id), so every polygon keeps its
   share of the diversity; inside a polygon the pixels are drawn at ``random`` or ``periodic``-ally
   (evenly spaced along the polygon's pixels in row-major order).

:func:`sample_runs` chains the whole samples plan for every run (seed): split, selection per
region model, small classes dropped, region checks; :func:`pixels_to_extract` gives the pixels
whose features are then extracted once for all runs.
"""

from __future__ import annotations

import warnings
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Literal

import numpy as np
import pandas as pd

from pipeline.samples.config import SamplingConfig
from pipeline.samples.reference import ReferencePolygons
from pipeline.warnings import SamplingWarning

if TYPE_CHECKING:
    from pipeline.samples.regions import RegionMap

Strategy = Literal["all", "percentage", "per_class_count", "smallest_class"]
WithinPolygon = Literal["random", "periodic"]


@dataclass(frozen=True)
class SelectionRule:
    """How many training pixels to keep, and how to draw them (see the module docstring)."""

    strategy: Strategy = "all"
    fraction: float | None = None
    count: int | None = None
    within_polygon: WithinPolygon = "random"
    max_pixels_per_polygon: int | None = None

    def __post_init__(self) -> None:
        if self.strategy == "percentage" and not (
            self.fraction is not None and 0 < self.fraction <= 1
        ):
            raise ValueError(
                f"strategy 'percentage' needs a fraction in (0, 1], got {self.fraction}"
            )
        if self.strategy == "per_class_count" and not (self.count is not None and self.count >= 1):
            raise ValueError(f"strategy 'per_class_count' needs a count >= 1, got {self.count}")
        if self.max_pixels_per_polygon is not None and self.max_pixels_per_polygon < 1:
            raise ValueError(
                f"max_pixels_per_polygon must be at least 1, got {self.max_pixels_per_polygon}"
            )
        if self.strategy not in ("all", "percentage", "per_class_count", "smallest_class"):
            raise ValueError(f"unknown strategy {self.strategy!r}")
        if self.within_polygon not in ("random", "periodic"):
            raise ValueError(f"unknown within_polygon {self.within_polygon!r}")

    @classmethod
    def from_spec(cls, spec: SamplingConfig) -> SelectionRule:
        return cls(
            strategy=spec.strategy,
            fraction=spec.fraction,
            count=spec.count,
            within_polygon=spec.within_polygon,
            max_pixels_per_polygon=spec.max_pixels_per_polygon,
        )

    @property
    def is_everything(self) -> bool:
        return self.strategy == "all" and self.max_pixels_per_polygon is None


def _plain(value: object) -> object:
    """numpy scalars as Python ones, so that messages read ``0``, not ``np.int64(0)``."""
    item = getattr(value, "item", None)
    return item() if callable(item) else value


def _targets(offered: pd.Series, rule: SelectionRule) -> pd.Series:
    """Pixels to keep per class, from the pixels each class offers."""
    if rule.strategy == "all":
        return offered
    if rule.strategy == "percentage":
        assert rule.fraction is not None
        return np.maximum(1, np.round(offered * rule.fraction)).astype(np.int64).clip(upper=offered)
    if rule.strategy == "per_class_count":
        assert rule.count is not None
        return offered.clip(upper=rule.count)
    return pd.Series(int(offered.min()), index=offered.index).clip(upper=offered)


def _allocate(offers: pd.DataFrame, targets: pd.Series) -> pd.Series:
    """Share each class's target among its polygons in proportion to their offers."""
    total = offers.groupby("stratum")["offer"].transform("sum")
    target = offers["stratum"].map(targets)
    quota = offers["offer"] * target / total
    base = np.floor(quota + 1e-9).astype(np.int64)
    left = target - base.groupby(offers["stratum"]).transform("sum")
    remainder = quota - base
    # Largest remainders first, ties to the lower polygon id (offers are sorted by polygon).
    rank = (
        pd.DataFrame({"stratum": offers["stratum"], "r": -remainder})
        .groupby("stratum")["r"]
        .rank(method="first")
    )
    return (base + (rank <= left).astype(np.int64)).astype(np.int64)


def _draw(
    pixels: pd.DataFrame, take: pd.Series, within: WithinPolygon, rng: np.random.Generator
) -> np.ndarray:
    """Index labels of ``take[polygon]`` pixels drawn in each polygon."""
    ordered = pixels.sort_values(["polygon_id", "row", "col"], kind="stable")
    polygon = ordered["polygon_id"].to_numpy()
    n_take = take.reindex(polygon).to_numpy()
    if within == "random":
        keys = rng.random(len(ordered))
        order = np.lexsort((keys, polygon))
        rank = np.empty(len(ordered), dtype=np.int64)
        starts = np.r_[0, np.flatnonzero(np.diff(polygon[order])) + 1]
        sizes = np.diff(np.r_[starts, len(order)])
        rank[order] = np.arange(len(order)) - np.repeat(starts, sizes)
        return np.asarray(ordered.index[rank < n_take])
    # periodic: positions floor((k + 0.5) * n / a), k < a, along the polygon's row-major order
    ids, starts, sizes = np.unique(polygon, return_index=True, return_counts=True)
    wanted = take.reindex(ids).to_numpy()
    keep = wanted > 0
    starts, sizes, wanted = starts[keep], sizes[keep], wanted[keep]
    if not wanted.size:
        return np.asarray(ordered.index[:0])
    k = np.arange(int(wanted.sum())) - np.repeat(np.cumsum(wanted) - wanted, wanted)
    n = np.repeat(sizes, wanted)
    a = np.repeat(wanted, wanted)
    positions = np.repeat(starts, wanted) + ((2 * k + 1) * n) // (2 * a)
    return np.asarray(ordered.index[positions])


def select_pixels(
    pixels: pd.DataFrame,
    rule: SelectionRule,
    seed: int,
    *,
    label_column: str | None = "label",
    by: Sequence[str] = (),
) -> pd.DataFrame:
    """The training pixels ``rule`` keeps, in the input's order.

    ``pixels`` has ``polygon_id``, ``row``, ``col`` and ``label_column`` (None for regression:
    one stratum, so only ``all`` and ``percentage`` apply). ``by`` names columns that split the
    pixels into models (e.g. ``["region"]``); each model's pixels are selected on their own.
    """
    if rule.is_everything or pixels.empty:
        return pixels
    if label_column is None and rule.strategy in ("per_class_count", "smallest_class"):
        raise ValueError(f"strategy {rule.strategy!r} needs classes; use 'all' or 'percentage'")
    rng = np.random.default_rng(seed)
    keys = [*by, label_column] if label_column is not None else list(by)
    single = pd.Series(0, index=pixels.index)
    stratum = pixels.groupby(keys, sort=True).ngroup() if keys else single
    # One row per stratum (model and class): its key values.
    info = pixels[keys].groupby(stratum.to_numpy()).first()
    per_polygon = (
        pd.DataFrame({"polygon_id": pixels["polygon_id"], "stratum": stratum})
        .groupby("polygon_id", sort=True)
        .agg(stratum=("stratum", "first"), n=("stratum", "size"))
    )
    cap = rule.max_pixels_per_polygon
    per_polygon["offer"] = per_polygon["n"].clip(upper=cap) if cap else per_polygon["n"]
    offered = per_polygon.groupby("stratum")["offer"].sum()
    if rule.strategy == "smallest_class" and by:
        # The smallest class of each model, not of all models together.
        model = info[list(by)].astype(str).agg("|".join, axis=1)
        targets = offered.groupby(model.reindex(offered.index)).transform("min")
    else:
        targets = _targets(offered, rule)
    if rule.strategy == "per_class_count" and label_column is not None:
        _warn_short(info.loc[offered.index], offered, rule, label_column, by)
    take = _allocate(per_polygon, targets)
    chosen = _draw(pixels, take, rule.within_polygon, rng)
    return pixels.loc[pixels.index.isin(chosen)]


def _warn_short(
    info: pd.DataFrame,
    offered: pd.Series,
    rule: SelectionRule,
    label_column: str,
    by: Sequence[str],
) -> None:
    assert rule.count is not None
    short = offered[offered < rule.count]
    if short.empty:
        return
    names = []
    for s, n in short.items():
        row = info.loc[s]
        where = "".join(f" in {c} {_plain(row[c])!r}" for c in by)
        names.append(f"class {_plain(row[label_column])}{where} ({int(n)})")
    warnings.warn(
        f"{', '.join(names)} offer(s) fewer than count={rule.count} training pixels; all of them "
        "are kept, so the classes are not balanced. Lower spec.sampling.count or add reference "
        "polygons",
        SamplingWarning,
        stacklevel=3,
    )


def _named(code: Any, names: Mapping[int, str] | None) -> str:
    """A class as warnings show it: its code, and its name when it has one."""
    name = (names or {}).get(int(code)) if isinstance(code, int) else None
    return f"class {code} {name!r}" if name and name != str(code) else f"class {code}"


def drop_small_classes(
    pixels: pd.DataFrame,
    minimum: int,
    *,
    label_column: str = "label",
    by: Sequence[str] = (),
    names: Mapping[int, str] | None = None,
) -> pd.DataFrame:
    """Leave out classes (per model) with fewer than ``minimum`` pixels, with a SamplingWarning
    that names each class (``names``: code -> class name)."""
    keys = [*by, label_column]
    counts = pixels.groupby(keys).size()
    small = counts[counts < minimum]
    if small.empty:
        return pixels
    parts = []
    for key, n in small.items():
        values = [_plain(v) for v in (key if isinstance(key, tuple) else (key,))]
        where = "".join(f" in {c} {v!r}" for c, v in zip(by, values[:-1], strict=True))
        parts.append(f"{_named(values[-1], names)}{where} ({int(n)})")
    described = ", ".join(parts)
    warnings.warn(
        f"{described}: fewer than {minimum} training pixels, so left out of the model (the map "
        "cannot show them there). Add reference polygons or lower "
        "spec.sampling.min_pixels_per_class",
        SamplingWarning,
        stacklevel=2,
    )
    index = pd.MultiIndex.from_frame(pixels[keys])
    small_keys = small.index if len(keys) > 1 else pd.MultiIndex.from_arrays([small.index])
    return pixels[~index.isin(small_keys)]


@dataclass(frozen=True)
class RunSamples:
    """One run's samples: its seed, and its pixels with their ``split`` side.

    ``pixels`` holds the selected training pixels and every validation pixel (validation is
    never subsampled: its pixels all count), with the columns of
    :func:`pipeline.samples.extract.labelled_pixels` (``region`` when there are regions).
    """

    seed: int
    pixels: pd.DataFrame

    @property
    def training(self) -> pd.DataFrame:
        return self.pixels[self.pixels["split"] == "train"]

    @property
    def validation(self) -> pd.DataFrame:
        return self.pixels[self.pixels["split"] == "validation"]


def sample_runs(
    reference: ReferencePolygons,
    sampling: SamplingConfig,
    regions: RegionMap | None = None,
    *,
    value_bins: int = 5,
) -> list[RunSamples]:
    """Split and select the samples of every run (seeds ``seed .. seed + runs - 1``).

    Per run: split by feature (or group) stratified by class (regression: value quantile bin)
    and region, then select training pixels per region model with the manifest's rule, and
    drop classes below ``min_pixels_per_class`` (per region, with a warning). Raises when a
    region ends without training pixels or (classification) with a single class.
    """
    from pipeline.samples.extract import labelled_pixels
    from pipeline.samples.regions import check_region_training, polygon_regions
    from pipeline.samples.split import TRAIN, run_seeds, split_polygons, value_strata

    table = reference.table.set_index("polygon_id")
    present = [int(p) for p in reference.present_ids()]
    if reference.is_regression:
        strata_of = value_strata({p: float(table.at[p, "value"]) for p in present}, value_bins)
    else:
        strata_of = {p: int(table.at[p, "label"]) for p in present}
    groups = {p: table.at[p, "group"] for p in present}
    by_region = polygon_regions(reference, regions) if regions is not None else None
    rule = SelectionRule.from_spec(sampling)
    label_column = None if reference.is_regression else "label"
    by = ["region"] if regions is not None else []
    runs = []
    for seed in run_seeds(sampling.seed, sampling.runs):
        split = split_polygons(
            strata_of,
            sampling.validation_fraction,
            seed,
            strata=by_region,
            groups=groups,
            feature=reference.feature_word.removesuffix("s"),
        )
        pixels = labelled_pixels(reference, split, by_region)
        training = select_pixels(
            pixels[pixels["split"] == TRAIN], rule, seed, label_column=label_column, by=by
        )
        if label_column is not None:
            training = drop_small_classes(
                training,
                sampling.min_pixels_per_class,
                label_column=label_column,
                by=by,
                names={c.code: c.name for c in reference.legend},
            )
        if regions is not None:
            check_region_training(training, regions, classification=label_column is not None)
        chosen = pd.concat([training, pixels[pixels["split"] != TRAIN]])
        runs.append(RunSamples(seed, chosen.sort_values(["row", "col"]).reset_index(drop=True)))
    return runs


def pixels_to_extract(runs: Sequence[RunSamples]) -> pd.DataFrame:
    """The distinct pixels (row, col) any run needs: extract their features once for all runs."""
    frames = [run.pixels[["row", "col"]] for run in runs]
    return pd.concat(frames).drop_duplicates().sort_values(["row", "col"]).reset_index(drop=True)
