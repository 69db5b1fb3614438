"""Object-based classification, the parts a stage runs: a user segmentation read by window, the
reference assigned to segments, the segment features, and the segments as polygons.

The reference rule: a segment is a sample of the reference polygon that covers the largest share
of the segment's sample pixels (the pixels the reference burnt onto the grid inside it), when
that share is at least ``min_overlap`` of the segment's valid pixels; the segment takes that
polygon's label and its side of the split, so segments are split by reference polygon as the
pixel samples are.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from pipeline.errors import InputDataError
from pipeline.model import GridSpec, Window

FIELD = "objects.segmentation.path"
VECTOR_SUFFIXES = (".gpkg", ".shp", ".geojson", ".json", ".parquet", ".fgb")


def segmentation_kind(path: str, grid: GridSpec) -> str:
    """``raster`` or ``vector``: the user segmentation, checked against the run's grid."""
    import rasterio

    if not Path(path).is_file():
        raise InputDataError(
            f"segmentation file {path!r} does not exist",
            fix="give a raster of segment ids or a vector file of polygons",
            field=FIELD,
        )
    if Path(path).suffix.lower() in VECTOR_SUFFIXES:
        return "vector"
    with rasterio.open(path) as src:
        same = (src.width, src.height) == (grid.width, grid.height) and tuple(src.transform)[
            :6
        ] == tuple(grid.affine)[:6]
        found = f"{src.width} x {src.height} px, transform {tuple(src.transform)[:6]}"
        integer = np.issubdtype(np.dtype(src.dtypes[0]), np.integer)
    if not same or not integer:
        raise InputDataError(
            f"segmentation raster {path!r} ({found}, {'integer' if integer else 'not integer'}"
            f") is not a raster of integer ids on the run's grid ({grid.width} x {grid.height} "
            f"px, transform {tuple(grid.affine)[:6]})",
            fix="write the segment ids (0 = none) on the run's grid, or give polygons as a "
            "vector file",
            field=FIELD,
        )
    return "raster"


def user_ids(path: str, kind: str, grid: GridSpec, window: Window) -> np.ndarray:
    """Segment ids of ``window`` (int64, 0: none): a raster's values, or each polygon of a
    vector file burnt with its position in the file plus one (the last polygon wins where
    polygons overlap)."""
    import rasterio
    from rasterio.windows import Window as RioWindow

    if kind == "raster":
        with rasterio.open(path) as src:
            values = src.read(
                1, window=RioWindow(window.col_off, window.row_off, window.width, window.height)
            )
            nodata = src.nodata
        out = values.astype(np.int64)
        if nodata is not None:
            out[values == nodata] = 0
        return np.maximum(out, 0)
    import geopandas as gpd
    from rasterio.features import rasterize

    sub = grid.window_grid(window)
    polygons = _polygons(path, grid.crs)
    left, bottom, right, top = sub.bounds
    near = polygons.cx[left:right, bottom:top]
    if near.empty:
        return np.zeros((window.height, window.width), dtype=np.int64)
    del gpd
    shapes = zip(near.geometry, near["_segment"].astype(np.int64), strict=True)
    return rasterize(
        shapes,
        out_shape=(window.height, window.width),
        transform=sub.affine,
        fill=0,
        dtype="int64",
    )


_cache: dict[tuple[str, str], Any] = {}


def _polygons(path: str, crs: str) -> Any:
    import geopandas as gpd

    key = (path, crs)
    if key not in _cache:
        frame = gpd.read_file(path) if not path.endswith(".parquet") else gpd.read_parquet(path)
        frame = frame.to_crs(crs)
        frame["_segment"] = np.arange(1, len(frame) + 1)
        _cache.clear()
        _cache[key] = frame[["_segment", "geometry"]]
    return _cache[key]


def assign(
    sample_ids: np.ndarray, samples: pd.DataFrame, sizes: pd.Series, min_overlap: float
) -> pd.DataFrame:
    """One row per segment that is a sample: ``segment``, ``label``, ``polygon_id``, ``split``.

    ``sample_ids``: the segment of each sample pixel (0: none); ``sizes``: valid pixels per
    segment id."""
    frame = pd.DataFrame(
        {
            "segment": sample_ids,
            "polygon_id": samples["polygon_id"].to_numpy(),
            "label": samples["label"].to_numpy(),
            "split": samples["split"].to_numpy(),
        }
    )
    frame = frame[frame["segment"] > 0]
    counts = frame.groupby(["segment", "polygon_id"], sort=True).agg(
        pixels=("label", "size"), label=("label", "first"), split=("split", "first")
    )
    counts = counts.reset_index().sort_values(
        ["segment", "pixels", "polygon_id"], ascending=[True, False, True], kind="stable"
    )
    best = counts.drop_duplicates("segment", keep="first")
    share = best["pixels"].to_numpy() / sizes.reindex(best["segment"]).to_numpy()
    return best[share >= min_overlap][["segment", "label", "polygon_id", "split"]].reset_index(
        drop=True
    )


def feature_names(names: Sequence[str], statistics: Sequence[str]) -> list[str]:
    """Segment feature names: ``<feature>_<statistic>`` per statistic, features in cube order."""
    return [f"{name}_{stat}" for stat in statistics for name in names]


def polygons_of(ids: np.ndarray, grid: GridSpec, window: Window) -> list[tuple[int, Any]]:
    """(segment id, polygon) of every piece of a chunk of ids, in the grid's CRS."""
    from rasterio.features import shapes
    from shapely.geometry import shape

    sub = grid.window_grid(window)
    return [
        (int(value), shape(geometry))
        for geometry, value in shapes(ids.astype(np.int32), mask=ids > 0, transform=sub.affine)
    ]
