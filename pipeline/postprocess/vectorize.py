"""The vector product: one polygon per region of a (regularized) label map, with statistics.

Design (no polygon split at a chunk or tile border, memory bounded by a chunk plus the borders):

1. ``polygonize_chunk`` (one unit per chunk, in parallel): label the chunk's regions (same
   class, 4- or 8-connected; the kernel of the regularization), trace each region's outline
   with GDAL's polygonizer (``rasterio.features.shapes``, 4-connected pieces; the pieces of an
   8-connected region make a MultiPolygon whose parts touch at corners only), and sum its
   statistics: pixels, confidence, the pixels of each class before regularization, the
   probability of each class. Outlines are traced in pixel coordinates (integers) and mapped
   by the grid's affine, the same float operation on the same integers in every chunk, so
   pieces of one region traced in two chunks share their edges exactly.
   A region that touches no inner chunk side is complete. The others are pending: they keep
   their pieces, their sums, and the chunk's border rows and columns of region labels.
2. ``stitch`` (one unit): pending regions whose border pixels touch across a chunk side (with
   the same class and connectivity) are one region of the map (connected components of that
   graph); their outlines are merged (``shapely.union_all``) and their sums added. Sums are
   integers, so the statistics equal those of a whole-map pass exactly.
3. ``to_frame``: means and shares from the sums, regions ordered by their first pixel in
   raster order (the same order whatever the chunking), ids 1..n.

Polygons are valid (GDAL traces 4-connected pieces; merged pieces share exact edges), and a
region's area is its pixel count times the pixel area, which is also its polygon's area.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from itertools import chain
from pathlib import Path
from typing import Any, Literal

import numpy as np
import shapely
from affine import Affine
from rasterio.features import shapes

from pipeline.model import GridSpec, Window
from pipeline.postprocess import _kernels
from pipeline.postprocess.regularize import class_index
from pipeline.storage import atomic_path

PERCENT_NODATA = 255


@dataclass
class Regions:
    """Regions and their sums (one row each). ``first`` is the region's first pixel in raster
    order on the grid (row * width + col); ``raw`` (n, K_raw) counts pixels of each class before
    regularization, ``probability`` (n, K_p) sums percent probabilities over ``probability_n``
    pixels; ``geometry`` is in the grid's CRS."""

    code: np.ndarray
    first: np.ndarray
    pixels: np.ndarray
    confidence_sum: np.ndarray
    confidence_n: np.ndarray
    raw: np.ndarray
    probability: np.ndarray
    probability_n: np.ndarray
    geometry: np.ndarray

    def take(self, rows: np.ndarray) -> Regions:
        return Regions(*(getattr(self, f)[rows] for f in _FIELDS))


_FIELDS = (
    "code",
    "first",
    "pixels",
    "confidence_sum",
    "confidence_n",
    "raw",
    "probability",
    "probability_n",
    "geometry",
)


@dataclass
class ChunkPolygons:
    """What ``polygonize_chunk`` gives for one chunk: its complete regions, its pending ones
    (``pending_labels`` are their local labels) and the local labels on its four sides
    (top, bottom, left, right; 0: no-data), for ``stitch``."""

    window: Window
    complete: Regions
    pending: Regions
    pending_labels: np.ndarray
    sides: tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray] = field(repr=False)


def _sums(values: np.ndarray, labels: np.ndarray, ok: np.ndarray, n: int) -> np.ndarray:
    """Integer sums of ``values`` per label 1..n over the pixels ``ok``."""
    summed = np.bincount(labels[ok], weights=values[ok].astype(np.float64), minlength=n + 1)
    return np.rint(summed[1:]).astype(np.int64)


def polygonize_chunk(
    labels: np.ndarray,
    window: Window,
    grid: GridSpec,
    codes: np.ndarray,
    nodata: int | float,
    *,
    connectivity: Literal[4, 8] = 8,
    confidence: np.ndarray | None = None,
    raw: np.ndarray | None = None,
    raw_codes: np.ndarray | None = None,
    probabilities: np.ndarray | None = None,
) -> ChunkPolygons:
    """Regions of one chunk (``labels`` of ``window`` of ``grid``) with their sums.
    ``confidence`` (percent, 255 no-data), ``raw`` (labels before regularization, codes
    ``raw_codes``) and ``probabilities`` ((K, h, w) percent) are optional layers of the window."""
    shape = grid.shape
    index = class_index(labels, nodata, np.asarray(codes))
    local, n = _kernels.label_regions(index, connectivity == 8)
    flat = local.ravel()
    valid = flat > 0
    first_local = _kernels.first_pixels(local, n)
    rows, cols = np.divmod(first_local, window.width)
    first = (rows + window.row_off) * shape[1] + cols + window.col_off
    code = np.asarray(labels).ravel()[first_local]
    pixels = np.bincount(flat, minlength=n + 1)[1:].astype(np.int64)
    zero = np.zeros(n, dtype=np.int64)
    confidence_sum, confidence_n = zero, zero
    if confidence is not None:
        c = np.asarray(confidence).ravel()
        ok = valid & (c != PERCENT_NODATA)
        confidence_sum = _sums(c, flat, ok, n)
        confidence_n = np.bincount(flat[ok], minlength=n + 1)[1:].astype(np.int64)
    raw_counts = np.zeros((n, 0), dtype=np.int64)
    if raw is not None:
        if raw_codes is None:
            raise ValueError("raw labels need their codes (raw_codes)")
        k_raw = len(raw_codes)
        raw_index = class_index(np.asarray(raw), nodata, np.asarray(raw_codes)).ravel()
        ok = valid & (raw_index >= 0)
        combined = flat[ok].astype(np.int64) * k_raw + raw_index[ok]
        raw_counts = np.bincount(combined, minlength=(n + 1) * k_raw).reshape(n + 1, k_raw)[1:]
    probability = np.zeros((n, 0), dtype=np.int64)
    probability_n = zero
    if probabilities is not None:
        p = np.asarray(probabilities).reshape(len(probabilities), -1)
        ok = valid & ~(p == PERCENT_NODATA).any(axis=0)
        probability = np.stack([_sums(layer, flat, ok, n) for layer in p], axis=1)
        probability_n = np.bincount(flat[ok], minlength=n + 1)[1:].astype(np.int64)
    geometry = _outlines(local, window, grid, n)
    regions = Regions(
        code,
        first,
        pixels,
        confidence_sum,
        confidence_n,
        raw_counts.astype(np.int64),
        probability,
        probability_n,
        geometry,
    )
    sides = (local[0].copy(), local[-1].copy(), local[:, 0].copy(), local[:, -1].copy())
    inner = (
        window.row_off > 0,
        window.row_off + window.height < shape[0],
        window.col_off > 0,
        window.col_off + window.width < shape[1],
    )
    touching = np.zeros(n + 1, dtype=bool)
    for side, is_inner in zip(sides, inner, strict=True):
        if is_inner:
            touching[side] = True
    pending = np.flatnonzero(touching[1:])
    complete = np.flatnonzero(~touching[1:])
    return ChunkPolygons(window, regions.take(complete), regions.take(pending), pending + 1, sides)


def _outlines(local: np.ndarray, window: Window, grid: GridSpec, n: int) -> np.ndarray:
    """One (Multi)Polygon per label 1..n in the grid's CRS. GDAL traces rings in pixel
    coordinates (integers); the grid's affine maps them, x = a * col + c, y = e * row + f: the
    same operation on the same integers, so a corner shared by two chunks gets the same bits in
    both. Rings are gathered into flat arrays and built by shapely in vectorized calls."""
    a, b, c, d, e, f = grid.transform
    if b or d:
        raise ValueError(f"the grid is rotated ({grid.transform}); polygons need a north-up grid")
    transform = Affine.translation(window.col_off, window.row_off)
    rings: list[Any] = []
    rings_per_polygon: list[int] = []
    polygon_label: list[int] = []
    for geojson, value in shapes(local, mask=local > 0, connectivity=4, transform=transform):
        rings.extend(geojson["coordinates"])
        rings_per_polygon.append(len(geojson["coordinates"]))
        polygon_label.append(int(value))
    out = np.empty(n, dtype=object)
    if not rings:
        return out
    lengths = np.fromiter((len(r) for r in rings), dtype=np.int64, count=len(rings))
    flat = np.fromiter(
        chain.from_iterable(chain.from_iterable(rings)), dtype=np.float64, count=2 * lengths.sum()
    ).reshape(-1, 2)
    flat = flat * [a, e] + [c, f]
    ring_offsets = np.concatenate([[0], np.cumsum(lengths)])
    polygon_offsets = np.concatenate([[0], np.cumsum(rings_per_polygon)])
    polygons = shapely.from_ragged_array(
        shapely.GeometryType.POLYGON, flat, (ring_offsets, polygon_offsets)
    )
    labels = np.asarray(polygon_label)
    order = np.argsort(labels, kind="stable")
    counts = np.bincount(labels, minlength=n + 1)[1:]
    single = counts == 1
    first = np.concatenate([[0], np.cumsum(counts)[:-1]])
    out[single] = polygons[order[first[single]]]
    # the 4-connected pieces of an 8-connected region touch at corners only: a valid
    # MultiPolygon as they are, no union needed
    multi = counts[labels[order] - 1] > 1
    if multi.any():  # into `out` at label - 1; the single-piece labels keep their polygon
        parts = order[multi]
        shapely.multipolygons(polygons[parts], indices=labels[parts] - 1, out=out)
    return out


def stitch(chunks: Sequence[ChunkPolygons], grid: GridSpec, connectivity: int) -> Regions:
    """Every region of the map: the chunks' complete regions, and their pending ones merged
    across chunk sides."""
    complete, joined = stitch_groups(chunks, grid, connectivity)
    return _concat([*complete, joined.regions])


@dataclass
class Joined:
    """Pending regions merged across sides: ``regions`` (one per group), and the side pixels
    (flat grid index) of the pending pieces with the group each belongs to."""

    regions: Regions
    pixel: np.ndarray
    group: np.ndarray


def stitch_groups(
    chunks: Sequence[ChunkPolygons], grid: GridSpec, connectivity: int
) -> tuple[list[Regions], Joined]:
    """The chunks' complete regions, and their pending ones merged across chunk sides."""
    shape = grid.shape
    from scipy.sparse import coo_matrix
    from scipy.sparse.csgraph import connected_components

    complete = [c.complete for c in chunks]
    # one node per pending region; a border pixel knows its node
    offsets = np.cumsum([0] + [len(c.pending_labels) for c in chunks])
    n_nodes = int(offsets[-1])
    pixel_parts, node_parts = [], []
    for i, chunk in enumerate(chunks):
        w = chunk.window
        # local label -> node (-1: a complete region, never on an inner side)
        lookup = np.full(int(chunk.pending_labels.max(initial=0)) + 1, -1, dtype=np.int64)
        lookup[chunk.pending_labels] = np.arange(len(chunk.pending_labels)) + offsets[i]
        top, bottom, left, right = chunk.sides
        cols = np.arange(w.width) + w.col_off
        rows = np.arange(w.height) + w.row_off
        for labels, r, c in (
            (top, np.full(w.width, w.row_off), cols),
            (bottom, np.full(w.width, w.row_off + w.height - 1), cols),
            (left, rows, np.full(w.height, w.col_off)),
            (right, rows, np.full(w.height, w.col_off + w.width - 1)),
        ):
            keep = (labels > 0) & (labels < len(lookup))
            nodes = np.full(len(labels), -1, dtype=np.int64)
            nodes[keep] = lookup[labels[keep]]
            keep = nodes >= 0
            pixel_parts.append(r[keep].astype(np.int64) * shape[1] + c[keep])
            node_parts.append(nodes[keep])
    pending = _concat([c.pending for c in chunks])
    if n_nodes == 0:
        none = np.zeros(0, dtype=np.int64)
        return complete, Joined(pending, none, none)
    pixel = np.concatenate(pixel_parts)
    node = np.concatenate(node_parts)
    pixel, unique = np.unique(pixel, return_index=True)
    node = node[unique]
    steps = [(0, 1), (1, 0)] + ([(1, 1), (1, -1)] if connectivity == 8 else [])
    a_parts, b_parts = [node], [node]
    row, col = np.divmod(pixel, shape[1])
    for dr, dc in steps:
        r2, c2 = row + dr, col + dc
        inside = (r2 >= 0) & (r2 < shape[0]) & (c2 >= 0) & (c2 < shape[1])
        target = r2 * shape[1] + c2
        at = np.searchsorted(pixel, target)
        at = np.minimum(at, len(pixel) - 1)
        found = inside & (pixel[at] == target)
        same = found & (pending.code[node] == pending.code[node[at]])
        a_parts.append(node[same])
        b_parts.append(node[at][same])
    a, b = np.concatenate(a_parts), np.concatenate(b_parts)
    graph = coo_matrix((np.ones(len(a)), (a, b)), shape=(n_nodes, n_nodes))
    n_groups, group = connected_components(graph, directed=False)
    merged = _merge(pending, group, n_groups)
    return complete, Joined(merged, pixel, group[node])


def _merge(pending: Regions, group: np.ndarray, n_groups: int) -> Regions:
    order = np.argsort(group, kind="stable")
    starts = np.searchsorted(group[order], np.arange(n_groups))
    geometry = np.empty(n_groups, dtype=object)
    for g, (s, e) in enumerate(zip(starts, [*starts[1:], len(order)], strict=True)):
        members = order[s:e]
        parts = pending.geometry[members]
        geometry[g] = parts[0] if len(parts) == 1 else shapely.union_all(parts)

    def add(values: np.ndarray) -> np.ndarray:
        out = np.zeros((n_groups, *values.shape[1:]), dtype=np.int64)
        np.add.at(out, group, values)
        return out

    first = np.full(n_groups, np.iinfo(np.int64).max, dtype=np.int64)
    np.minimum.at(first, group, pending.first)
    code = np.zeros(n_groups, dtype=pending.code.dtype)
    code[group] = pending.code
    return Regions(
        code,
        first,
        add(pending.pixels),
        add(pending.confidence_sum),
        add(pending.confidence_n),
        add(pending.raw),
        add(pending.probability),
        add(pending.probability_n),
        geometry,
    )


def _concat(parts: Sequence[Regions]) -> Regions:
    return Regions(*(np.concatenate([getattr(p, f) for p in parts]) for f in _FIELDS))


def polygonize(
    labels: np.ndarray, grid: GridSpec, codes: np.ndarray, nodata: int | float, **layers: Any
) -> Regions:
    """Every region of a whole label map in memory (the reference pass)."""
    chunk = polygonize_chunk(labels, Window(0, 0, *grid.shape), grid, codes, nodata, **layers)
    return chunk.complete


def to_frame(
    regions: Regions,
    grid: GridSpec,
    names: Mapping[int, str],
    *,
    raw_codes: Sequence[int] = (),
    probability_codes: Sequence[int] = (),
) -> Any:
    """A GeoDataFrame of the regions in the grid's CRS, ordered by first pixel: ``region``,
    ``class_code``, ``class_name``, ``pixels``, ``area`` (CRS units²), ``confidence_mean``
    (percent; NaN without confidence), ``share_<code>`` (share of the region's pixels that had
    each class before regularization) and ``probability_<code>`` (mean percent), the last two
    when the regions were summed over those layers (codes in the order of their layers)."""
    import geopandas as gpd
    import pandas as pd

    a, e = grid.transform[0], grid.transform[4]
    order = np.argsort(regions.first, kind="stable")
    r = regions.take(order)
    geometry = np.asarray(r.geometry)
    with np.errstate(invalid="ignore", divide="ignore"):
        columns: dict[str, Any] = {
            "region": np.arange(1, len(order) + 1, dtype=np.int64),
            "class_code": r.code.astype(np.int64),
            "class_name": [names.get(int(k), str(int(k))) for k in r.code],
            "pixels": r.pixels,
            "area": r.pixels * abs(a * e),
            "confidence_mean": r.confidence_sum / r.confidence_n,
        }
        # columns only for the layers the regions were summed over
        for i, code in enumerate(raw_codes if r.raw.shape[1] else ()):
            columns[f"share_{code}"] = r.raw[:, i] / r.pixels
        for i, code in enumerate(probability_codes if r.probability.shape[1] else ()):
            columns[f"probability_{code}"] = r.probability[:, i] / r.probability_n
    return gpd.GeoDataFrame(pd.DataFrame(columns), geometry=geometry, crs=grid.crs)


def write_polygons(frame: Any, parquet: Path | None = None, gpkg: Path | None = None) -> None:
    """Write the polygons as GeoParquet and/or GeoPackage (layer ``regions``), atomically."""
    if parquet is not None:
        with atomic_path(parquet) as tmp:
            frame.to_parquet(tmp, index=False)
    if gpkg is not None:
        with atomic_path(gpkg) as tmp:
            staging = tmp.with_name(tmp.name + ".gpkg")  # GDAL wants the extension
            try:
                frame.to_file(
                    staging,
                    driver="GPKG",
                    layer="regions",
                    engine="pyogrio",
                    promote_to_multi=True,
                )
                staging.replace(tmp)
            finally:
                staging.unlink(missing_ok=True)
