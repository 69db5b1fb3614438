"""Extraction of sample pixels' features into a GeoParquet table, from the cube or the COGs.

Two sources give the same features (sensor -> variable -> date order of ``CubePlan.feature_names``):

* **from the cube** (:func:`plan_extraction` + :func:`extract_chunk`): one task per cube chunk
  holding samples reads that chunk from the Zarr store;
* **straight from the COGs** (:func:`plan_cog_extraction` + :func:`extract_from_cogs`), without
  building the cube: the samples of each chunk are grouped into small cells and only the
  bounding window of the samples in each cell is decoded, and only the samples' pixels are
  masked and gap-filled (:func:`pipeline.cube.build.compute_pixels`, the cube stage's own
  computation). Every step after the read is per pixel, so the values equal the cube's.

Either way the tasks are small frozen dataclasses that dask ships to workers;
:func:`extract_features` runs them on a ``distributed.Client`` (or here, without one) and joins
the table.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Literal, TypeVar

import geopandas as gpd
import numpy as np
import pandas as pd

from pipeline.cube.build import compute_pixels
from pipeline.cube.plan import CubePlan
from pipeline.cube.read import Reader
from pipeline.cube.store import read_features
from pipeline.errors import InputDataError
from pipeline.model import GridSpec, Window
from pipeline.samples.reference import ReferencePolygons
from pipeline.storage import atomic_path

if TYPE_CHECKING:
    from distributed import Client

T = TypeVar("T")

#: Side, in pixels, of the cells whose samples share one read window on the COG path. Each
#: window opens every file of the period once, which costs more than decoding a few more pixels
#: (demo, local COGs: 64 px cells 3x faster than 16 px ones); 256 matches the usual COG block,
#: so cells without samples, and the blocks under them, are never read.
DEFAULT_CELL = 256


@dataclass(frozen=True)
class ExtractTask:
    """The sample pixels of one cube chunk (rows/cols relative to the full grid)."""

    store: str
    variables: tuple[tuple[str, str], ...]
    window: Window
    rows: tuple[int, ...]
    cols: tuple[int, ...]


@dataclass(frozen=True)
class CogExtractTask:
    """Sample pixels of one chunk, read from the COGs window by window (no cube needed).

    ``windows`` are disjoint; every pixel (``rows[i]``, ``cols[i]``) lies in exactly one.
    """

    plan: CubePlan
    windows: tuple[Window, ...]
    rows: tuple[int, ...]
    cols: tuple[int, ...]


def labelled_pixels(
    reference: ReferencePolygons,
    split: Mapping[int, str],
    regions: Mapping[int, int] | None = None,
) -> pd.DataFrame:
    """Every grid pixel covered by a reference feature: row, col, polygon_id, group, split, and
    label (classification) or value (regression), plus region when ``regions`` (polygon ->
    region index) is given."""
    rows, cols = np.nonzero(reference.polygon_ids >= 0)
    polygon = reference.polygon_ids[rows, cols]
    table = reference.table.set_index("polygon_id")
    missing = sorted(set(np.unique(polygon).tolist()) - set(split))
    if missing:
        raise ValueError(f"polygons {missing[:10]} cover pixels but have no side in the split")
    out = pd.DataFrame(
        {
            "row": rows.astype(np.int32),
            "col": cols.astype(np.int32),
            "polygon_id": polygon.astype(np.int32),
        }
    )
    if reference.is_regression:
        out["value"] = table["value"].reindex(polygon).to_numpy(dtype=np.float64)
    else:
        out["label"] = table["label"].reindex(polygon).to_numpy(dtype=np.int64)
    out["group"] = table["group"].reindex(polygon).to_numpy()
    out["split"] = [split[int(p)] for p in polygon]
    if regions is not None:
        out["region"] = np.array([regions[int(p)] for p in polygon], dtype=np.int16)
    return out


def plan_extraction(
    pixels: pd.DataFrame,
    windows: Sequence[Window],
    store: str,
    variables: Sequence[tuple[str, str]],
) -> list[ExtractTask]:
    """One task per chunk that holds sample pixels; pixel order inside a task is preserved."""
    rows, cols = pixels["row"].to_numpy(), pixels["col"].to_numpy()
    tasks = []
    for window, chosen in _pixels_by_window(rows, cols, windows):
        if chosen.size:
            tasks.append(
                ExtractTask(
                    store=store,
                    variables=tuple(variables),
                    window=window,
                    rows=tuple(rows[chosen].tolist()),
                    cols=tuple(cols[chosen].tolist()),
                )
            )
    return tasks


def _pixels_by_window(
    rows: np.ndarray, cols: np.ndarray, windows: Sequence[Window]
) -> list[tuple[Window, np.ndarray]]:
    """Each window with the positions (ascending) of the pixels inside it.

    Windows laid out as a grid (a cube's chunks) are found by sorting the pixels once; other
    layouts test every pixel against every window (a national sample table has millions of
    pixels and a tile hundreds of chunks: the sort is what keeps planning short).
    """
    row_starts = np.unique([w.row_off for w in windows])
    col_starts = np.unique([w.col_off for w in windows])
    if not _grid_like(windows, row_starts, col_starts):
        return [(w, np.flatnonzero(_in_window_arrays(rows, cols, w))) for w in windows]
    r = np.searchsorted(row_starts, rows, side="right") - 1
    c = np.searchsorted(col_starts, cols, side="right") - 1
    key = np.where((r >= 0) & (c >= 0), r * len(col_starts) + c, -1)
    order = np.argsort(key, kind="stable")
    ordered = key[order]
    out = []
    for w in windows:
        k = int(np.searchsorted(row_starts, w.row_off)) * len(col_starts) + int(
            np.searchsorted(col_starts, w.col_off)
        )
        lo, hi = np.searchsorted(ordered, [k, k + 1])
        chosen = order[lo:hi]
        out.append((w, chosen[_in_window_arrays(rows[chosen], cols[chosen], w)]))
    return out


def _grid_like(windows: Sequence[Window], row_starts: np.ndarray, col_starts: np.ndarray) -> bool:
    """No window has another window's first row (column) strictly inside its rows (columns)."""
    for w in windows:
        r = np.searchsorted(row_starts, w.row_off, side="right")
        c = np.searchsorted(col_starts, w.col_off, side="right")
        if r < len(row_starts) and row_starts[r] < w.row_off + w.height:
            return False
        if c < len(col_starts) and col_starts[c] < w.col_off + w.width:
            return False
    return True


def _in_window_arrays(rows: np.ndarray, cols: np.ndarray, window: Window) -> np.ndarray:
    rows_s, cols_s = window.slices
    return (
        (rows >= rows_s.start)
        & (rows < rows_s.stop)
        & (cols >= cols_s.start)
        & (cols < cols_s.stop)
    )


def extract_chunk(task: ExtractTask) -> np.ndarray:
    """(n_pixels, n_features) float32 feature values of the task's pixels."""
    stack = read_features(task.store, list(task.variables), task.window)
    rows = np.asarray(task.rows) - task.window.row_off
    cols = np.asarray(task.cols) - task.window.col_off
    return stack[:, rows, cols].T.copy()


def _check_on_grid(pixels: pd.DataFrame, grid: GridSpec) -> None:
    rows, cols = pixels["row"].to_numpy(), pixels["col"].to_numpy()
    off = (rows < 0) | (rows >= grid.height) | (cols < 0) | (cols >= grid.width)
    if off.any():
        first = pixels[off].iloc[0]
        raise InputDataError(
            f"{int(off.sum())} sample pixel(s) lie outside the {grid.width} x {grid.height} grid "
            f"(e.g. row {int(first['row'])}, col {int(first['col'])})",
            fix="take the samples' rows and columns from the same grid as the cube plan",
        )


def plan_cog_extraction(
    pixels: pd.DataFrame, plan: CubePlan, cell: int = DEFAULT_CELL
) -> list[CogExtractTask]:
    """One task per cube chunk holding samples; each reads the bounding window of the samples
    of every ``cell`` x ``cell`` cell, so sparse samples read few pixels and dense ones few
    windows."""
    if cell < 1:
        raise ValueError(f"cell must be at least 1 pixel, got {cell}")
    _check_on_grid(pixels, plan.grid)
    frame = pd.DataFrame({"row": pixels["row"].to_numpy(), "col": pixels["col"].to_numpy()})
    frame = frame.drop_duplicates().reset_index(drop=True)
    size = plan.chunk_size
    frame["chunk"] = (frame["row"] // size) * (-(-plan.grid.width // size)) + frame["col"] // size
    frame["cell_r"] = frame["row"] // cell
    frame["cell_c"] = frame["col"] // cell
    tasks = []
    for _, chunk in frame.groupby("chunk", sort=True):
        windows = []
        order = []
        for _, members in chunk.groupby(["cell_r", "cell_c"], sort=True):
            r0, c0 = int(members["row"].min()), int(members["col"].min())
            r1, c1 = int(members["row"].max()), int(members["col"].max())
            windows.append(Window(r0, c0, r1 - r0 + 1, c1 - c0 + 1))
            order.append(members)
        chosen = pd.concat(order)
        tasks.append(
            CogExtractTask(
                plan=plan,
                windows=tuple(windows),
                rows=tuple(int(r) for r in chosen["row"]),
                cols=tuple(int(c) for c in chosen["col"]),
            )
        )
    return tasks


def cog_task_of(task: ExtractTask, plan: CubePlan, cell: int = DEFAULT_CELL) -> CogExtractTask:
    """The pixels of a cube chunk's task, read from the COGs instead (a run that keeps no cube):
    the same pixels in the same order, so ``extract_from_cogs`` returns the rows
    ``extract_chunk`` would, in cells as ``plan_cog_extraction`` reads them."""
    if cell < 1:
        raise ValueError(f"cell must be at least 1 pixel, got {cell}")
    rows = np.asarray(task.rows, dtype=np.int64)
    cols = np.asarray(task.cols, dtype=np.int64)
    windows = []
    if rows.size:
        cells = np.unique(np.stack([rows // cell, cols // cell], axis=1), axis=0)
        for cell_r, cell_c in cells:
            inside = (rows // cell == cell_r) & (cols // cell == cell_c)
            r0, c0 = int(rows[inside].min()), int(cols[inside].min())
            r1, c1 = int(rows[inside].max()), int(cols[inside].max())
            windows.append(Window(r0, c0, r1 - r0 + 1, c1 - c0 + 1))
    return CogExtractTask(plan=plan, windows=tuple(windows), rows=task.rows, cols=task.cols)


def extract_from_cogs(task: CogExtractTask, reader: Reader | None = None) -> np.ndarray:
    """(n_pixels, n_features) float32 features of the task's pixels, computed from the COGs."""
    rows = np.asarray(task.rows, dtype=np.int64)
    cols = np.asarray(task.cols, dtype=np.int64)
    done = np.zeros(rows.size, dtype=bool)
    parts, order = [], []
    for window in task.windows:  # each pixel from the first window that holds it
        (inside,) = np.nonzero(_in_window_arrays(rows, cols, window) & ~done)
        if inside.size:
            parts.append((window, rows[inside] - window.row_off, cols[inside] - window.col_off))
            order.append(inside)
            done[inside] = True
    if not done.all():
        raise ValueError(f"{int((~done).sum())} pixel(s) of the task lie in none of its windows")
    out = np.empty((rows.size, len(task.plan.feature_names)), dtype=np.float32)
    if parts:
        out[np.concatenate(order)] = compute_pixels(task.plan, parts, reader)
    return out


def samples_table(
    tasks: Sequence[ExtractTask | CogExtractTask],
    values: Sequence[np.ndarray],
    pixels: pd.DataFrame,
    feature_names: Sequence[str],
    grid: GridSpec,
) -> gpd.GeoDataFrame:
    """Join extracted values back to their pixels, with point geometries at pixel centres."""
    keys = pd.DataFrame(
        {
            "row": np.concatenate([np.asarray(t.rows, dtype=np.int32) for t in tasks]),
            "col": np.concatenate([np.asarray(t.cols, dtype=np.int32) for t in tasks]),
        }
    )
    feats = pd.DataFrame(np.concatenate(values, axis=0), columns=list(feature_names))
    table = pixels.merge(pd.concat([keys, feats], axis=1), on=["row", "col"], how="inner")
    table = table.sort_values(["row", "col"]).reset_index(drop=True)
    a, _, c, _, e, f = grid.transform
    x = c + a * (table["col"].to_numpy() + 0.5)
    y = f + e * (table["row"].to_numpy() + 0.5)
    return gpd.GeoDataFrame(table, geometry=gpd.points_from_xy(x, y), crs=grid.crs)


def write_samples(table: gpd.GeoDataFrame, path: Path) -> None:
    with atomic_path(path) as tmp:
        table.to_parquet(tmp, index=False)


def _run(
    client: Client | None,
    function: Callable[[T], np.ndarray],
    tasks: Sequence[T],
    prefix: str,
    on_done: Callable[[np.ndarray], None] | None,
) -> list[np.ndarray]:
    if client is not None:
        from pipeline.parallel import run_units

        return run_units(client, function, tasks, key_prefix=prefix, on_done=on_done)
    values = []
    for task in tasks:
        values.append(function(task))
        if on_done is not None:
            on_done(values[-1])
    return values


def extract_features(
    pixels: pd.DataFrame,
    plan: CubePlan,
    *,
    source: Literal["cube", "cogs"] = "cogs",
    store: str | None = None,
    client: Client | None = None,
    cell: int = DEFAULT_CELL,
    on_done: Callable[[np.ndarray], None] | None = None,
) -> gpd.GeoDataFrame:
    """The samples table of ``pixels`` (their columns plus one column per feature).

    ``source="cogs"`` reads the acquisitions directly (no cube needed), ``"cube"`` reads the
    Zarr cube at ``store``. With a ``client`` the tasks run on its dask workers, in bounded
    batches; without one they run here, one after the other. ``on_done`` is called with each
    task's values as it finishes (a progress bar).
    """
    if pixels.empty:
        raise InputDataError(
            "no sample pixel to extract",
            fix="check that the reference features cover the grid and the selection keeps pixels",
        )
    if source == "cogs":
        cog_tasks = plan_cog_extraction(pixels, plan, cell)
        values = _run(client, extract_from_cogs, cog_tasks, "extract-cogs", on_done)
        return samples_table(cog_tasks, values, pixels, plan.feature_names, plan.grid)
    if source != "cube":
        raise ValueError(f"unknown source {source!r}; use 'cogs' or 'cube'")
    if store is None:
        raise ValueError("source='cube' needs the cube store path")
    _check_on_grid(pixels, plan.grid)
    tasks = plan_extraction(pixels, plan.windows, store, plan.time_series_variables)
    values = _run(client, extract_chunk, tasks, "extract-cube", on_done)
    return samples_table(tasks, values, pixels, plan.feature_names, plan.grid)
