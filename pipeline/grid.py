"""The output grid of a run (pure: no pixel is read here)."""

from __future__ import annotations

from collections.abc import Sequence

from pipeline.errors import CatalogError
from pipeline.manifest import AreaSpec
from pipeline.model import Acquisition, GridSpec


def plan_grid(area: AreaSpec, acquisitions: Sequence[Acquisition]) -> GridSpec:
    """The grid given by ``area``, or the one native grid every acquisition shares."""
    if area.crs is not None and area.bbox is not None and area.resolution is not None:
        return GridSpec.from_bounds(area.crs, area.bbox, area.resolution)
    grids = {a.grid for a in acquisitions}
    if None in grids:
        missing = next(a for a in acquisitions if a.grid is None)
        raise CatalogError(
            f"item {missing.item_id!r} has no projection metadata (proj:code or proj:epsg, "
            "proj:transform, proj:shape), so the output grid cannot be taken from the items",
            fix="set spec.area.crs, spec.area.resolution and spec.area.bbox",
            field="spec.area",
        )
    if len(grids) > 1:
        sample = sorted(str(g) for g in grids)[:2]
        raise CatalogError(
            f"the items lie on {len(grids)} different grids (e.g. {sample[0]} and {sample[1]}), "
            "so no single native grid exists",
            fix="set spec.area.crs, spec.area.resolution and spec.area.bbox (the output grid)",
            field="spec.area",
        )
    grid = grids.pop()
    assert grid is not None
    return grid
