"""The vector product of a large map, streamed band by band with bounded memory.

``polygonize_chunk`` traces each chunk; here the chunks are taken one row of chunks (a band) at
a time, top to bottom:

1. ``band_step``: the band's pending regions are merged across its chunk sides and with the
   regions left open by the band above (their pixels on its last row: the rules of
   ``vectorize.stitch``). A merged region that reaches the band's last row may go on below: it
   stays open (carried to the next band, with its pixels on that row); every other region is
   closed: it is whole, and written. Memory: one band of chunks, the regions that cross its
   bottom, and the written batches.
2. Each band's closed regions (optionally simplified, below) are sorted by their first pixel
   and written to a run file; ``write_streamed`` then merges the runs by first pixel (each run
   is sorted, so a k-way merge reads a bounded batch of each) into GeoParquet and/or
   GeoPackage, numbering regions 1..n: the same files as the whole map at once gives.

Simplification (``simplify``: a tolerance in map units) keeps the polygons a coverage: no gap
and no overlap between neighbours. A band's closed polygons are simplified together
(``shapely.coverage_simplify``, GEOS' coverage simplifier) with the outline of the set held
fixed (``simplify_boundary=False``), so an edge shared by two polygons of the set is simplified
once for both, and an edge shared with a polygon closed in another band (or the map's edge, or
no-data) is kept as traced in both. Edges are first cut at every pixel corner, in pixel
coordinates (exact integers) before the grid's affine, so two neighbours' shared edges have the
same vertices bit for bit (what a coverage needs); the corners left on edges held fixed are
dropped after (they are collinear: nothing moves). A simplified polygon's geometry area differs
from its ``area`` column, which stays its pixels' area; the polygons still cover the mapped
area exactly once.
"""

from __future__ import annotations

import contextlib
import heapq
import json
import tempfile
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import shapely

from pipeline.model import GridSpec, Window
from pipeline.postprocess.vectorize import (
    ChunkPolygons,
    Regions,
    _concat,
    stitch_groups,
    to_frame,
)
from pipeline.storage import atomic_path

BATCH = 4096  # rows per batch read from a run, and per row group written
FIRST = "_first"


@dataclass
class Carry:
    """Regions left open by a band: ``labels[col]`` is 1 + the index in ``regions`` of the
    region of pixel (``row``, col), 0 where none."""

    regions: Regions
    row: int
    labels: np.ndarray


def _as_part(carry: Carry, width: int) -> ChunkPolygons:
    """The open regions as a one-row 'chunk' on their row, for the stitching rules."""
    n = len(carry.regions.code)
    none = carry.regions.take(np.zeros(0, dtype=np.int64))
    labels = carry.labels
    return ChunkPolygons(
        Window(carry.row, 0, 1, width),
        none,
        carry.regions,
        np.arange(1, n + 1),
        (labels, labels, labels[:1], labels[-1:]),
    )


def band_step(
    carry: Carry | None,
    chunks: Sequence[ChunkPolygons],
    grid: GridSpec,
    connectivity: int,
    bottom: int | None,
) -> tuple[Regions, Carry | None]:
    """One band: the regions it closes, and those it leaves open at grid row ``bottom`` (its
    last row; None for the map's last band, which closes every region)."""
    width = grid.shape[1]
    parts = [*chunks, *([_as_part(carry, width)] if carry is not None else [])]
    complete, joined = stitch_groups(parts, grid, connectivity)
    merged = joined.regions
    n = len(merged.code)
    if bottom is None or n == 0:
        return _concat([*complete, merged]), None
    on_row = joined.pixel // width == bottom
    is_open = np.zeros(n, dtype=bool)
    is_open[joined.group[on_row]] = True
    index = np.zeros(n, dtype=np.int64)
    index[is_open] = np.arange(1, int(is_open.sum()) + 1)
    labels = np.zeros(width, dtype=np.int64)
    labels[joined.pixel[on_row] % width] = index[joined.group[on_row]]
    kept = Carry(merged.take(np.flatnonzero(is_open)), bottom, labels)
    return _concat([*complete, merged.take(np.flatnonzero(~is_open))]), kept


def _on_corners(geometry: np.ndarray, grid: GridSpec) -> np.ndarray:
    """Polygons with a vertex at every pixel corner along their edges, computed in pixel
    coordinates and mapped by the grid's affine as ``vectorize`` maps them (same bits)."""
    a, _, c, _, e, f = grid.transform

    def to_pixels(xy: np.ndarray) -> np.ndarray:
        return np.rint((xy - [c, f]) / [a, e])

    def to_map(xy: np.ndarray) -> np.ndarray:
        return xy * [a, e] + [c, f]

    pixels = shapely.transform(geometry, to_pixels)
    return shapely.transform(shapely.segmentize(pixels, 1.0), to_map)


def simplify_coverage(geometry: np.ndarray, grid: GridSpec, tolerance: float) -> np.ndarray:
    """Polygons of one set simplified as a coverage, their outline held (module notes)."""
    if len(geometry) == 0:
        return geometry
    simple = shapely.coverage_simplify(
        _on_corners(geometry, grid), tolerance, simplify_boundary=False
    )
    # the corners added on edges held fixed are collinear: dropped again (a tolerance of 0
    # moves no point, so no neighbour gains a gap)
    return np.asarray(shapely.simplify(simple, 0.0))


@dataclass(frozen=True)
class Columns:
    """What ``to_frame`` is told about the regions' names and layers."""

    names: Mapping[int, str]
    raw_codes: Sequence[int] = ()
    probability_codes: Sequence[int] = ()


def _run(regions: Regions, grid: GridSpec, columns: Columns, simplify: float | None) -> Any:
    frame = to_frame(
        regions,
        grid,
        columns.names,
        raw_codes=columns.raw_codes,
        probability_codes=columns.probability_codes,
    )
    frame[FIRST] = np.sort(regions.first)
    if simplify:
        frame = frame.set_geometry(simplify_coverage(frame.geometry.values, grid, simplify))
    return frame


def _merged(paths: Sequence[Path]) -> Iterable[Any]:
    """The rows of sorted run files, in order of first pixel, as pyarrow tables."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    readers = [pq.ParquetFile(p).iter_batches(batch_size=BATCH) for p in paths]
    current: list[Any] = [next(r, None) for r in readers]
    position = [0] * len(paths)
    firsts: list[np.ndarray] = [
        np.zeros(0, np.int64) if b is None else b.column(FIRST).to_numpy() for b in current
    ]
    heap = [(int(firsts[i][0]), i) for i, b in enumerate(current) if b is not None and len(b)]
    heapq.heapify(heap)
    out: list[Any] = []
    rows = 0
    while heap:
        _, i = heapq.heappop(heap)
        # every row of this batch up to the next run's head comes first
        limit = heap[0][0] if heap else np.iinfo(np.int64).max
        end = int(np.searchsorted(firsts[i], limit, side="right"))
        end = max(end, position[i] + 1)
        out.append(current[i].slice(position[i], end - position[i]))
        rows += end - position[i]
        position[i] = end
        if end == len(firsts[i]):
            current[i] = next(readers[i], None)
            position[i] = 0
            firsts[i] = (
                np.zeros(0, np.int64) if current[i] is None else current[i].column(FIRST).to_numpy()
            )
        if current[i] is not None and len(firsts[i]):
            heapq.heappush(heap, (int(firsts[i][position[i]]), i))
        if rows >= BATCH:
            yield pa.Table.from_batches(out)
            out, rows = [], 0
    if out:
        yield pa.Table.from_batches(out)


def write_streamed(
    bands: Sequence[Callable[[], Sequence[ChunkPolygons]]],
    grid: GridSpec,
    connectivity: int,
    columns: Columns,
    *,
    parquet: Path | None = None,
    gpkg: Path | None = None,
    simplify: float | None = None,
) -> int:
    """Stitch the chunks' polygons band by band (``bands``: for each row of chunks, top to
    bottom, a function that loads its chunks) and write them as GeoParquet and/or GeoPackage
    (layer ``regions``); the number of polygons. Memory: a band, the regions crossing its
    bottom, and batches of the runs."""
    with tempfile.TemporaryDirectory(prefix="sitsflow-polygons-") as work:
        runs: list[Path] = []
        carry: Carry | None = None
        for index, load in enumerate(bands):
            band = list(load())
            last = index == len(bands) - 1
            bottom = None if last else max(c.window.row_off + c.window.height for c in band) - 1
            closed, carry = band_step(carry, band, grid, connectivity, bottom)
            del band
            if len(closed.code):
                path = Path(work) / f"run-{index:06d}.parquet"
                _run(closed, grid, columns, simplify).to_parquet(
                    path, index=False, row_group_size=BATCH
                )
                runs.append(path)
        return _write(runs, grid, parquet, gpkg)


def _write(runs: list[Path], grid: GridSpec, parquet: Path | None, gpkg: Path | None) -> int:
    import pyarrow as pa
    import pyarrow.parquet as pq

    if not runs:  # no polygon: the whole-map writer makes the empty files
        from pipeline.postprocess.vectorize import polygonize, write_polygons

        empty = polygonize(np.zeros((1, 1), np.uint8), grid, np.array([1]), 0)
        write_polygons(to_frame(empty, grid, {}), parquet=parquet, gpkg=gpkg)
        return 0
    schema = pq.read_schema(runs[0])
    geo = json.loads(schema.metadata[b"geo"])
    for column in geo["columns"].values():
        column.pop("bbox", None)
        column["geometry_types"] = ["MultiPolygon", "Polygon"]
    schema = schema.remove(schema.get_field_index(FIRST))
    schema = schema.with_metadata({**schema.metadata, b"geo": json.dumps(geo).encode()})
    crs = grid.crs
    count = 0
    with _targets(parquet, gpkg) as (parquet_tmp, gpkg_tmp):
        writer = pq.ParquetWriter(parquet_tmp, schema) if parquet_tmp is not None else None
        try:
            for table in _merged(runs):
                table = table.drop_columns([FIRST])
                region = np.arange(count + 1, count + len(table) + 1, dtype=np.int64)
                table = table.set_column(
                    table.schema.get_field_index("region"), "region", pa.array(region)
                )
                count += len(table)
                if writer is not None:
                    writer.write_table(table.cast(schema), row_group_size=BATCH)
                if gpkg_tmp is not None:
                    _append_gpkg(table, gpkg_tmp, crs, first=count == len(table))
        finally:
            if writer is not None:
                writer.close()
    return count


def _append_gpkg(table: Any, path: Path, crs: str, *, first: bool) -> None:
    import geopandas as gpd
    import pyogrio

    frame = table.drop_columns(["geometry"]).to_pandas()
    geometry = shapely.from_wkb(table.column("geometry").to_numpy(zero_copy_only=False))
    pyogrio.write_dataframe(
        gpd.GeoDataFrame(frame, geometry=geometry, crs=crs),
        path,
        layer="regions",
        driver="GPKG",
        append=not first,
        promote_to_multi=True,
    )


@contextlib.contextmanager
def _targets(parquet: Path | None, gpkg: Path | None) -> Iterator[tuple[Path | None, Path | None]]:
    """Atomic targets for the two files (GDAL wants a GeoPackage's extension on its name)."""
    with contextlib.ExitStack() as stack:
        parquet_tmp = stack.enter_context(atomic_path(parquet)) if parquet else None
        gpkg_tmp = stack.enter_context(atomic_path(gpkg)) if gpkg else None
        staging = gpkg_tmp.with_name(gpkg_tmp.name + ".gpkg") if gpkg_tmp else None
        try:
            yield parquet_tmp, staging
            if staging is not None and gpkg_tmp is not None:
                staging.replace(gpkg_tmp)
        finally:
            if staging is not None:
                staging.unlink(missing_ok=True)
