"""Extraction of sample pixels' features from the cube, chunk by chunk, into a GeoParquet table."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

import geopandas as gpd
import numpy as np
import pandas as pd

from pipeline.cube.store import read_features
from pipeline.model import GridSpec, Window
from pipeline.samples.reference import ReferencePolygons
from pipeline.storage import atomic_path


@dataclass(frozen=True)
class ExtractTask:
    """The sample pixels of one cube chunk (rows/cols relative to the full grid)."""

    store: str
    variables: tuple[tuple[str, str], ...]
    window: Window
    rows: tuple[int, ...]
    cols: tuple[int, ...]


def labelled_pixels(reference: ReferencePolygons, split: Mapping[int, str]) -> pd.DataFrame:
    """Every grid pixel covered by a reference polygon: row, col, polygon_id, label, split."""
    rows, cols = np.nonzero(reference.polygon_ids >= 0)
    polygon = reference.polygon_ids[rows, cols]
    labels = reference.table.set_index("polygon_id")["label"]
    return pd.DataFrame(
        {
            "row": rows.astype(np.int32),
            "col": cols.astype(np.int32),
            "polygon_id": polygon.astype(np.int32),
            "label": labels.reindex(polygon).to_numpy(dtype=np.int64),
            "split": [split[int(p)] for p in polygon],
        }
    )


def plan_extraction(
    pixels: pd.DataFrame,
    windows: Sequence[Window],
    store: str,
    variables: Sequence[tuple[str, str]],
) -> list[ExtractTask]:
    """One task per chunk that holds sample pixels; pixel order inside a task is preserved."""
    tasks = []
    for window in windows:
        rows_s, cols_s = window.slices
        inside = (
            (pixels["row"] >= rows_s.start)
            & (pixels["row"] < rows_s.stop)
            & (pixels["col"] >= cols_s.start)
            & (pixels["col"] < cols_s.stop)
        )
        if inside.any():
            chosen = pixels[inside]
            tasks.append(
                ExtractTask(
                    store=store,
                    variables=tuple(variables),
                    window=window,
                    rows=tuple(int(r) for r in chosen["row"]),
                    cols=tuple(int(c) for c in chosen["col"]),
                )
            )
    return tasks


def extract_chunk(task: ExtractTask) -> np.ndarray:
    """(n_pixels, n_features) float32 feature values of the task's pixels."""
    stack = read_features(task.store, list(task.variables), task.window)
    rows = np.asarray(task.rows) - task.window.row_off
    cols = np.asarray(task.cols) - task.window.col_off
    return stack[:, rows, cols].T.copy()


def samples_table(
    tasks: Sequence[ExtractTask],
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
