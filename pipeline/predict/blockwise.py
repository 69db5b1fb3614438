"""Blockwise prediction: each dask task predicts one cube chunk and writes it to the map store.

The model travels by path, not in the task graph: each worker loads it once and keeps it.
"""

from __future__ import annotations

import functools
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import dask.array as da
import numpy as np
import rioxarray  # noqa: F401  (registers the .rio accessor)
import xarray as xr
import zarr

from pipeline.cube.store import read_features, write_template
from pipeline.learn.sklearn import load_model
from pipeline.model import GridSpec, Window

LABEL_VARIABLE = "label"
CONFIDENCE_VARIABLE = "confidence"
CONFIDENCE_NODATA = 255  # confidence is 0..100 percent


@dataclass(frozen=True)
class MapEncoding:
    """How labels are stored: integer type and the no-data code (never a class code)."""

    dtype: str
    nodata: int

    @classmethod
    def for_classes(cls, classes: tuple[int, ...]) -> MapEncoding:
        low, high = min(classes), max(classes)
        if low >= 0 and high <= 254:
            return cls("uint8", 0 if 0 not in classes else 255)
        if low >= 0 and high <= 65534:
            return cls("uint16", 0 if 0 not in classes else 65535)
        return cls("int32", -(2**31))


@dataclass(frozen=True)
class PredictTask:
    cube_store: str
    variables: tuple[tuple[str, str], ...]
    model_folder: str
    map_store: str
    window: Window
    encoding: MapEncoding


@dataclass(frozen=True)
class PredictReport:
    window: Window
    predicted_pixels: int
    nodata_pixels: int


@functools.lru_cache(maxsize=4)
def _cached_model(folder: str) -> tuple[Any, Any]:
    return load_model(Path(folder))


def create_map_store(path: str, grid: GridSpec, chunk_size: int, encoding: MapEncoding) -> None:
    """Metadata of the map store: label and confidence on the grid, with CRS."""
    shape = (grid.height, grid.width)
    chunks = (chunk_size, chunk_size)
    ds = xr.Dataset(
        {
            LABEL_VARIABLE: (
                ("y", "x"),
                da.full(shape, encoding.nodata, dtype=encoding.dtype, chunks=chunks),
                {"long_name": "class code", "_FillValue": encoding.nodata},
            ),
            CONFIDENCE_VARIABLE: (
                ("y", "x"),
                da.full(shape, CONFIDENCE_NODATA, dtype="uint8", chunks=chunks),
                {
                    "long_name": "share of the winning class (percent)",
                    "units": "%",
                    "_FillValue": CONFIDENCE_NODATA,
                },
            ),
        },
        coords={"y": grid.y_coords(), "x": grid.x_coords()},
    )
    ds = ds.rio.write_crs(grid.crs).rio.write_transform(grid.affine)
    write_template(ds, path)


def predict_features(
    model: Any, stack: np.ndarray, encoding: MapEncoding
) -> tuple[np.ndarray, np.ndarray]:
    """Labels and confidence (percent) for a (n_features, h, w) stack; NaN pixels get no-data."""
    n_features, height, width = stack.shape
    table = stack.reshape(n_features, -1).T
    ok = ~np.isnan(table).any(axis=1)
    labels = np.full(table.shape[0], encoding.nodata, dtype=encoding.dtype)
    confidence = np.full(table.shape[0], CONFIDENCE_NODATA, dtype=np.uint8)
    if ok.any():
        proba = model.predict_proba(table[ok])
        best = proba.argmax(axis=1)
        labels[ok] = np.asarray(model.classes_)[best].astype(encoding.dtype)
        confidence[ok] = np.round(proba[np.arange(len(best)), best] * 100).astype(np.uint8)
    return labels.reshape(height, width), confidence.reshape(height, width)


def predict_chunk(task: PredictTask) -> PredictReport:
    model, _contract = _cached_model(task.model_folder)
    stack = read_features(task.cube_store, list(task.variables), task.window)
    labels, confidence = predict_features(model, stack, task.encoding)
    group = zarr.open_group(task.map_store, mode="r+")
    rows, cols = task.window.slices
    group[LABEL_VARIABLE][rows, cols] = labels  # type: ignore[index]
    group[CONFIDENCE_VARIABLE][rows, cols] = confidence  # type: ignore[index]
    nodata = int((labels == task.encoding.nodata).sum())
    return PredictReport(task.window, labels.size - nodata, nodata)
