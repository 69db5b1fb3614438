"""Blockwise prediction: each dask task predicts one cube chunk and writes it to the map store.

The model travels by path, not in the task graph: each worker loads it once and keeps it. Memory
per task depends on the chunk size only, never on the size of the mapped area.

Classification writes ``label`` (class code) and ``confidence`` (the winning class's probability,
percent), and optionally ``probability_<code>`` per class (percent); regression writes ``value``
(float32, NaN where no prediction). Pixels with a NaN feature (never valid in the period) get
no-data in every variable.
"""

from __future__ import annotations

import ctypes
import functools
import math
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

import dask.array as da
import numpy as np
import rioxarray  # noqa: F401  (registers the .rio accessor)
import xarray as xr
import zarr

from pipeline.cube.store import read_features, write_template
from pipeline.learn import load_model, model_input
from pipeline.learn.contract import ModelContract
from pipeline.model import GridSpec, Window

LABEL_VARIABLE = "label"
CONFIDENCE_VARIABLE = "confidence"
VALUE_VARIABLE = "value"
PROBABILITY_PREFIX = "probability_"
CONFIDENCE_NODATA = 255  # confidence and probabilities are 0..100 percent
PROBABILITY_NODATA = CONFIDENCE_NODATA


def probability_variable(code: int) -> str:
    return f"{PROBABILITY_PREFIX}{code}"


@dataclass(frozen=True)
class MapEncoding:
    """What the map store holds and how: the value type and no-data of the main variable (never
    a class code), the task, and the classes that get a probability variable."""

    dtype: str
    nodata: int | float
    task: Literal["classification", "regression"] = "classification"
    probability_classes: tuple[int, ...] = ()

    @classmethod
    def for_classes(cls, classes: tuple[int, ...], *, probabilities: bool = False) -> MapEncoding:
        low, high = min(classes), max(classes)
        extra = tuple(classes) if probabilities else ()
        if low >= 0 and high <= 254:
            return cls("uint8", 0 if 0 not in classes else 255, probability_classes=extra)
        if low >= 0 and high <= 65534:
            return cls("uint16", 0 if 0 not in classes else 65535, probability_classes=extra)
        return cls("int32", -(2**31), probability_classes=extra)

    @classmethod
    def for_values(cls) -> MapEncoding:
        return cls("float32", math.nan, task="regression")

    @property
    def variables(self) -> tuple[str, ...]:
        if self.task == "regression":
            return (VALUE_VARIABLE,)
        probabilities = tuple(probability_variable(c) for c in self.probability_classes)
        return (LABEL_VARIABLE, CONFIDENCE_VARIABLE, *probabilities)


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


def _use_worker_threads(contract: ModelContract) -> None:
    """Inside a dask worker, let torch use the worker's threads, not every core of the machine
    (several worker processes share the cores)."""
    if contract.kind != "torch":
        return
    try:
        from distributed import get_worker

        threads = int(get_worker().state.nthreads)
    except (ImportError, ValueError, AttributeError):
        return
    import torch

    torch.set_num_threads(max(1, threads))


M_TRIM_THRESHOLD, M_MMAP_THRESHOLD = -1, -3  # glibc mallopt parameters (malloc.h)
TRIM_THRESHOLD = 4 * 2**20
MMAP_THRESHOLD = 32 * 2**20  # glibc's ceiling for its own dynamic threshold


@functools.cache
def _reuse_freed_blocks() -> bool:
    """Keep a few MB of freed memory in a dask worker instead of returning it at once.

    dask starts workers with MALLOC_TRIM_THRESHOLD_=64 KiB so that freed memory goes back to the
    OS. Prediction frees and allocates a few MB per tree and chunk; at 64 KiB each free gives the
    pages back and the next allocation faults them in again. Measured in a dask worker on a
    100-tree forest and 16 chunks of 256 x 256 px: 786,000 page faults and 1.4 s of system time
    at 64 KiB, 26,000 and 0.13 s at 4 MiB (about 18 % of the CPU time of the chunks). Memory
    above 4 MiB at the top of a heap is still given back.
    """
    if "MALLOC_TRIM_THRESHOLD_" not in os.environ:  # not a dask worker: glibc's defaults adapt
        return False
    try:
        libc = ctypes.CDLL("libc.so.6")
        trim = libc.mallopt(M_TRIM_THRESHOLD, TRIM_THRESHOLD)
        return bool(trim and libc.mallopt(M_MMAP_THRESHOLD, MMAP_THRESHOLD))
    except (OSError, AttributeError):  # not glibc
        return False


@functools.lru_cache(maxsize=4)
def _cached_model(folder: str) -> tuple[Any, ModelContract]:
    model, contract = load_model(Path(folder))
    _use_worker_threads(contract)
    _reuse_freed_blocks()
    return model, contract


def create_map_store(path: str, grid: GridSpec, chunk_size: int, encoding: MapEncoding) -> None:
    """Metadata of the map store: the encoding's variables on the grid, with CRS."""
    shape = (grid.height, grid.width)
    chunks = (chunk_size, chunk_size)

    def layer(fill: int | float, dtype: str, attrs: dict[str, Any]) -> tuple[Any, ...]:
        data = da.full(shape, fill, dtype=dtype, chunks=chunks)
        return (("y", "x"), data, {**attrs, "_FillValue": fill})

    percent = {"units": "%"}
    variables: dict[str, Any] = {}
    if encoding.task == "regression":
        variables[VALUE_VARIABLE] = layer(
            encoding.nodata, encoding.dtype, {"long_name": "predicted value"}
        )
    else:
        variables[LABEL_VARIABLE] = layer(
            encoding.nodata, encoding.dtype, {"long_name": "class code"}
        )
        variables[CONFIDENCE_VARIABLE] = layer(
            CONFIDENCE_NODATA,
            "uint8",
            {"long_name": "share of the winning class (percent)", **percent},
        )
        for code in encoding.probability_classes:
            variables[probability_variable(code)] = layer(
                PROBABILITY_NODATA,
                "uint8",
                {"long_name": f"probability of class {code} (percent)", **percent},
            )
    ds = xr.Dataset(variables, coords={"y": grid.y_coords(), "x": grid.x_coords()})
    ds = ds.rio.write_crs(grid.crs).rio.write_transform(grid.affine)
    write_template(ds, path)


def _percent(probability: np.ndarray) -> np.ndarray:
    return np.round(np.clip(probability, 0.0, 1.0) * 100).astype(np.uint8)


def _rows(table: np.ndarray, ok: np.ndarray) -> np.ndarray:
    """The valid rows, C-contiguous (tree models read a row's features together)."""
    return np.ascontiguousarray(table) if ok.all() else table[ok]


def predict_table(
    model: Any, table: np.ndarray, encoding: MapEncoding, valid: np.ndarray | None = None
) -> dict[str, np.ndarray]:
    """Each of the encoding's variables for a (n_pixels, n_features) table; rows with a NaN get
    no-data. ``valid`` (rows without NaN) may be given when already known."""
    ok = ~np.isnan(table).any(axis=1) if valid is None else valid
    n = table.shape[0]
    if encoding.task == "regression":
        values = np.full(n, encoding.nodata, dtype=encoding.dtype)
        if ok.any():
            values[ok] = np.asarray(model.predict(model_input(model, _rows(table, ok))))
        return {VALUE_VARIABLE: values}
    out = {
        LABEL_VARIABLE: np.full(n, encoding.nodata, dtype=encoding.dtype),
        CONFIDENCE_VARIABLE: np.full(n, CONFIDENCE_NODATA, dtype=np.uint8),
    }
    for code in encoding.probability_classes:
        out[probability_variable(code)] = np.full(n, PROBABILITY_NODATA, dtype=np.uint8)
    if ok.any():
        proba = np.asarray(model.predict_proba(model_input(model, _rows(table, ok))))
        classes = np.asarray(model.classes_)
        best = proba.argmax(axis=1)
        out[LABEL_VARIABLE][ok] = classes[best].astype(encoding.dtype)
        out[CONFIDENCE_VARIABLE][ok] = _percent(np.take_along_axis(proba, best[:, None], 1)[:, 0])
        column = {int(c): i for i, c in enumerate(classes)}
        for code in encoding.probability_classes:
            out[probability_variable(code)][ok] = (
                _percent(proba[:, column[code]]) if code in column else 0
            )
    return out


def predict_stack(model: Any, stack: np.ndarray, encoding: MapEncoding) -> dict[str, np.ndarray]:
    """Each of the encoding's variables, (h, w), for a (n_features, h, w) feature stack."""
    n_features, height, width = stack.shape
    flat = stack.reshape(n_features, -1)
    valid = ~np.isnan(flat).any(axis=0)  # reduced along contiguous rows: cheaper than on flat.T
    return {
        name: values.reshape(height, width)
        for name, values in predict_table(model, flat.T, encoding, valid).items()
    }


def predict_features(
    model: Any, stack: np.ndarray, encoding: MapEncoding
) -> tuple[np.ndarray, np.ndarray]:
    """Labels and confidence (percent) for a (n_features, h, w) stack; NaN pixels get no-data."""
    out = predict_stack(model, stack, encoding)
    return out[LABEL_VARIABLE], out[CONFIDENCE_VARIABLE]


def predict_chunk(task: PredictTask) -> PredictReport:
    model, _contract = _cached_model(task.model_folder)
    stack = read_features(task.cube_store, list(task.variables), task.window)
    layers = predict_stack(model, stack, task.encoding)
    group = zarr.open_group(task.map_store, mode="r+")
    rows, cols = task.window.slices
    for name, values in layers.items():
        group[name][rows, cols] = values  # type: ignore[index]
    main = layers[task.encoding.variables[0]]
    if task.encoding.task == "regression":
        nodata = int(np.isnan(main).sum())
    else:
        nodata = int((main == task.encoding.nodata).sum())
    return PredictReport(task.window, main.size - nodata, nodata)
