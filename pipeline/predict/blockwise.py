"""Blockwise prediction: each dask task predicts one cube chunk and writes it to the map store.

The model travels by path, not in the task graph: each worker loads it once and keeps it. Memory
per task depends on the chunk size only, never on the size of the mapped area.

The model's learner (``pipeline.learn.registry``, by the contract's kind) says how many pixels it
needs around a chunk (its halo: 0 for per-pixel models); the task reads the chunk grown by that
halo (NaN off the grid's edges) and the learner predicts the chunk's core from it.

Features come from a cube store, or (a run that keeps no cube: fused chunks) are computed from
the imagery for the chunk plus its halo by the cube's own streamed path
(``pipeline.cube.build.stream_features``), which hands over the values a stored cube would: the
same arithmetic, quantized as the cube's encoding says. Both give the learner the same block, so
the maps are the same to the bit.

Classification writes ``label`` (class code) and ``confidence`` (the winning class's probability,
percent), and optionally ``probability_<code>`` per class (percent); regression writes ``value``
(float32, NaN where no prediction). Pixels with a NaN feature (never valid in the period) get
no-data in every variable.
"""

from __future__ import annotations

import ctypes
import dataclasses
import functools
import math
import os
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

import dask.array as da
import numpy as np
import rioxarray  # noqa: F401  (registers the .rio accessor)
import xarray as xr
import zarr

from pipeline.cube.plan import CubePlan
from pipeline.cube.store import read_features, write_template
from pipeline.errors import ModelError
from pipeline.learn import load_model, model_input
from pipeline.learn.contract import ModelContract
from pipeline.learn.learner import BlockPrediction, PixelLearner, predict_rows, valid_rows
from pipeline.learn.registry import learner_for
from pipeline.model import GridSpec, Window
from pipeline.samples.regions import (
    NO_REGION,
    RegionMap,
    align_probabilities,
    border_weights,
    combine_predictions,
)

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


FeatureSource = str | CubePlan
"""Where a chunk's features come from: a cube store's location, or the plan of a cube that is not
kept, whose features are computed from the imagery where they are read."""


@dataclass(frozen=True)
class PredictTask:
    cube_store: FeatureSource
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
    never_valid_pixels: int | None = None
    """Pixels of the tile never valid in the period (features computed here, no cube), else
    None: the cube stage counted them."""


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
    model, contract = load_model(Path(folder))  # torch models take the worker's threads
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


def encode_prediction(prediction: BlockPrediction, encoding: MapEncoding) -> dict[str, np.ndarray]:
    """Each of the encoding's variables, shaped like ``prediction.valid``; pixels without a
    prediction get no-data."""
    ok = prediction.valid.reshape(-1)
    n = ok.size
    shape = prediction.valid.shape
    if encoding.task == "regression":
        values = np.full(n, encoding.nodata, dtype=encoding.dtype)
        if prediction.values is not None:
            values[ok] = prediction.values
        return {VALUE_VARIABLE: values.reshape(shape)}
    out = {
        LABEL_VARIABLE: np.full(n, encoding.nodata, dtype=encoding.dtype),
        CONFIDENCE_VARIABLE: np.full(n, CONFIDENCE_NODATA, dtype=np.uint8),
    }
    for code in encoding.probability_classes:
        out[probability_variable(code)] = np.full(n, PROBABILITY_NODATA, dtype=np.uint8)
    if prediction.probabilities is not None and prediction.classes is not None:
        proba, classes = prediction.probabilities, prediction.classes
        best = proba.argmax(axis=1)
        out[LABEL_VARIABLE][ok] = classes[best].astype(encoding.dtype)
        out[CONFIDENCE_VARIABLE][ok] = _percent(np.take_along_axis(proba, best[:, None], 1)[:, 0])
        column = {int(c): i for i, c in enumerate(classes)}
        for code in encoding.probability_classes:
            out[probability_variable(code)][ok] = (
                _percent(proba[:, column[code]]) if code in column else 0
            )
    return {name: values.reshape(shape) for name, values in out.items()}


def predict_table(
    model: Any, table: np.ndarray, encoding: MapEncoding, valid: np.ndarray | None = None
) -> dict[str, np.ndarray]:
    """Each of the encoding's variables for a (n_pixels, n_features) table of a per-pixel model;
    rows with a NaN get no-data. ``valid`` (rows without NaN) may be given when already known."""
    ok = ~np.isnan(table).any(axis=1) if valid is None else valid
    return encode_prediction(predict_rows(model, table, encoding.task, ok), encoding)


def predict_stack(model: Any, stack: np.ndarray, encoding: MapEncoding) -> dict[str, np.ndarray]:
    """Each of the encoding's variables, (h, w), for a (n_features, h, w) feature stack of a
    per-pixel model."""
    return encode_prediction(PixelLearner().predict_block(model, stack, 0, encoding.task), encoding)


def _features(source: FeatureSource, variables: Sequence[tuple[str, str]], window: Window) -> Any:
    """The (n_features, h, w) features of ``window`` (on the grid) from ``source``."""
    if isinstance(source, str):
        return read_features(source, list(variables), window)
    from pipeline.cube.build import stream_features

    if tuple(source.time_series_variables) != tuple(variables):
        raise ValueError(
            f"the variables asked for, {list(variables)}, are not the cube plan's "
            f"{list(source.time_series_variables)}: the streamed path computes the plan's features"
        )
    return stream_features(source, window)


def read_block(
    source: FeatureSource, variables: Sequence[tuple[str, str]], window: Window, halo: int
) -> np.ndarray:
    """The features of ``window`` grown by ``halo`` pixels on each side: (n_features,
    h + 2 halo, w + 2 halo) float32, NaN off the grid's edges (only what is on the grid is read,
    or computed from the imagery when ``source`` is a cube plan)."""
    if halo == 0:
        return np.asarray(_features(source, variables, window))
    if isinstance(source, str):
        first = zarr.open_group(source, mode="r")[variables[0][0]]
        assert isinstance(first, zarr.Array)
        height, width = first.shape[-2:]
    else:
        height, width = source.grid.height, source.grid.width
    r0, c0 = window.row_off - halo, window.col_off - halo
    rs, cs = max(r0, 0), max(c0, 0)
    re = min(window.row_off + window.height + halo, height)
    ce = min(window.col_off + window.width + halo, width)
    inside = _features(source, variables, Window(rs, cs, re - rs, ce - cs))
    block = np.full(
        (inside.shape[0], window.height + 2 * halo, window.width + 2 * halo), np.nan, np.float32
    )
    block[:, rs - r0 : re - r0, cs - c0 : ce - c0] = inside
    return block


def predict_features(
    model: Any, stack: np.ndarray, encoding: MapEncoding
) -> tuple[np.ndarray, np.ndarray]:
    """Labels and confidence (percent) for a (n_features, h, w) stack; NaN pixels get no-data."""
    out = predict_stack(model, stack, encoding)
    return out[LABEL_VARIABLE], out[CONFIDENCE_VARIABLE]


def never_valid(source: FeatureSource, block: np.ndarray, window: Window, halo: int) -> int | None:
    """Pixels of ``window`` the tile owns that some sensor never saw valid in the period (the
    cube stage's count: every gap-filled band of such a sensor is NaN there, on every date),
    when the features were computed here; None when they were read from a cube (its stage
    counted them)."""
    if isinstance(source, str):
        return None
    core = block[:, halo : halo + window.height, halo : halo + window.width]
    missing = np.zeros(core.shape[1:], dtype=bool)
    first = 0  # each sensor's features start with its bands, date by date
    for sensor in source.sensors:
        n_dates = len(sensor.dates)
        bands = core[first : first + len(sensor.profile.bands) * n_dates : n_dates]
        missing |= np.isnan(bands).all(axis=0)
        first += len(sensor.series_names) * n_dates
    return int((missing & source.owned(window)).sum())


def _write_layers(
    map_store: str, window: Window, layers: dict[str, np.ndarray], encoding: MapEncoding
) -> PredictReport:
    """Write a chunk's predicted layers into its region of the map store; count what is mapped."""
    group = zarr.open_group(map_store, mode="r+")
    rows, cols = window.slices
    for name, values in layers.items():
        group[name][rows, cols] = values  # type: ignore[index]
    main = layers[encoding.variables[0]]
    if encoding.task == "regression":
        nodata = int(np.isnan(main).sum())
    else:
        nodata = int((main == encoding.nodata).sum())
    return PredictReport(window, main.size - nodata, nodata)


def predict_chunk(task: PredictTask) -> PredictReport:
    """Predict one chunk (read with the halo its model's learner asks for) into the map store."""
    model, contract = _cached_model(task.model_folder)
    learner = learner_for(contract.kind)
    halo = learner.halo(contract)
    block = read_block(task.cube_store, task.variables, task.window, halo)
    prediction = learner.predict_block(model, block, halo, task.encoding.task)
    layers = encode_prediction(prediction, task.encoding)
    report = _write_layers(task.map_store, task.window, layers, task.encoding)
    missing = never_valid(task.cube_store, block, task.window, halo)
    return report if missing is None else dataclasses.replace(report, never_valid_pixels=missing)


# --- one model per region ------------------------------------------------------------------------
#
# The rules (which models weigh where, blend and vote) are those of pipeline.samples.regions. The
# driver writes the region index of the grid once (write_region_raster); each task reads its window
# grown by the border band from that store, so the task itself stays small. Far from a border only
# the own region's model runs; near one, each region model with a weight > 0 predicts only the
# pixels where it weighs.

REGION_VARIABLE = "region"
REGION_NAMES_ATTRIBUTE = "region_names"
BorderRule = Literal["blend", "vote"]


def write_region_raster(regions: RegionMap, store_path: str, *, chunk_size: int = 1024) -> None:
    """Write the grid's region index (``region``, int16 y x) to a Zarr v3 store, once per grid.

    The store's ``region_names`` attribute lists the regions in index order: model folder ``i``
    of a ``RegionPredictTask`` must be the model of ``region_names[i]``. Writing again replaces
    the store (idempotent).
    """
    if chunk_size <= 0:
        raise ValueError(f"chunk_size must be positive, got {chunk_size}")
    index = regions.index
    outside = (index < 0) | (index >= len(regions.names))
    if outside.any():
        raise ValueError(
            f"{int(outside.sum())} pixel(s) of the region map have no region (index outside "
            f"0..{len(regions.names) - 1}); every grid pixel needs one (load_regions fills them)"
        )
    height, width = index.shape
    group = zarr.open_group(store_path, mode="w", zarr_format=3)
    array = group.create_array(
        REGION_VARIABLE,
        shape=index.shape,
        chunks=(min(chunk_size, height), min(chunk_size, width)),
        dtype="int16",
        fill_value=NO_REGION,
    )
    array[:] = index
    group.attrs.update(
        {REGION_NAMES_ATTRIBUTE: list(regions.names), "filled_pixels": regions.filled_pixels}
    )


def region_names(store_path: str) -> tuple[str, ...]:
    """The regions of a store written by ``write_region_raster``, in index order."""
    group = zarr.open_group(store_path, mode="r")
    return tuple(str(n) for n in group.attrs[REGION_NAMES_ATTRIBUTE])  # type: ignore[union-attr]


def read_region_patch(store_path: str, window: Window, halo: int) -> np.ndarray:
    """The region index over ``window`` grown by ``halo`` pixels, NO_REGION off the grid."""
    array = zarr.open_group(store_path, mode="r")[REGION_VARIABLE]
    assert isinstance(array, zarr.Array)
    height, width = array.shape
    out = np.full((window.height + 2 * halo, window.width + 2 * halo), NO_REGION, np.int16)
    r0, c0 = window.row_off - halo, window.col_off - halo
    rs, cs = max(r0, 0), max(c0, 0)
    re = min(window.row_off + window.height + halo, height)
    ce = min(window.col_off + window.width + halo, width)
    out[rs - r0 : re - r0, cs - c0 : ce - c0] = np.asarray(array[rs:re, cs:ce])
    return out


def region_weights(store_path: str, window: Window, border_pixels: int) -> np.ndarray:
    """(n_regions, h, w) float32 weight of each region's model over ``window`` (the border rule
    of pipeline.samples.regions; neighbours up to ``border_pixels`` outside the window count)."""
    patch = read_region_patch(store_path, window, border_pixels)
    weights = border_weights(patch, len(region_names(store_path)), border_pixels)
    b = border_pixels
    return weights[:, b : b + window.height, b : b + window.width]


def region_classes(model_folders: Sequence[str]) -> tuple[int, ...]:
    """The sorted union of the classes of the region models (the ``classes`` of the tasks)."""
    from pipeline.learn import load_contract

    return tuple(sorted({int(c) for f in model_folders for c in load_contract(Path(f)).classes}))


@dataclass(frozen=True)
class RegionPredictTask:
    """One cube chunk predicted by the region models and written to the map store.

    ``model_folders[i]`` is the model of region ``i``, in the order of the ``region_names`` of
    ``region_store`` (written once by ``write_region_raster``). ``classes`` (classification) is
    the sorted union of the models' classes; a model that lacks a class gives it probability 0.
    ``border_pixels`` and ``rule`` are those of ``spec.reference.regions``.
    """

    cube_store: FeatureSource
    variables: tuple[tuple[str, str], ...]
    model_folders: tuple[str, ...]
    map_store: str
    window: Window
    encoding: MapEncoding
    region_store: str
    border_pixels: int = 0
    rule: BorderRule = "blend"
    classes: tuple[int, ...] = ()

    def __post_init__(self) -> None:
        if not self.model_folders:
            raise ValueError("a RegionPredictTask needs one model folder per region, got none")
        if self.border_pixels < 0:
            raise ValueError(f"border_pixels must be 0 or more, got {self.border_pixels}")
        if self.rule not in ("blend", "vote"):
            raise ValueError(f"unknown border rule {self.rule!r}; use 'blend' or 'vote'")
        if self.encoding.task == "regression":
            if self.rule == "vote":
                raise ModelError(
                    "border_rule 'vote' picks a class, but the models predict values",
                    fix="use border_rule 'blend' (the weighted mean of the region models' "
                    "values) for regression",
                    field="reference.regions.border_rule",
                )
            return
        if not self.classes or list(self.classes) != sorted(set(self.classes)):
            raise ValueError(
                f"classes must be the sorted union of the region models' classes, got "
                f"{list(self.classes)} (see region_classes)"
            )
        extra = sorted(set(self.encoding.probability_classes) - set(self.classes))
        if extra:
            raise ValueError(f"probability classes {extra} are not among the classes")


def predict_stack_regions(
    model_of: Callable[[int], Any],
    stack: np.ndarray,
    weights: np.ndarray,
    encoding: MapEncoding,
    *,
    classes: Sequence[int] = (),
    rule: BorderRule = "blend",
) -> dict[str, np.ndarray]:
    """Each of the encoding's variables, (h, w), for a (n_features, h, w) feature stack and the
    (n_regions, h, w) border weights; ``model_of(i)`` is region ``i``'s model.

    Only regions with a weight > 0 at a pixel with valid features are asked for their model, and
    each predicts those pixels only. Classification combines the aligned probabilities by
    ``rule`` (combine_predictions); regression takes the weighted mean of the values.
    """
    n_features, height, width = stack.shape
    if weights.shape[1:] != (height, width):
        raise ValueError(f"weights {weights.shape} do not fit the stack {stack.shape}")
    flat = stack.reshape(n_features, -1)
    valid = ~np.isnan(flat).any(axis=0)
    n = height * width
    if encoding.task == "regression":
        out = {VALUE_VARIABLE: np.full(n, encoding.nodata, dtype=encoding.dtype)}
    else:
        out = {
            LABEL_VARIABLE: np.full(n, encoding.nodata, dtype=encoding.dtype),
            CONFIDENCE_VARIABLE: np.full(n, CONFIDENCE_NODATA, dtype=np.uint8),
        }
        for code in encoding.probability_classes:
            out[probability_variable(code)] = np.full(n, PROBABILITY_NODATA, dtype=np.uint8)
    if valid.any():
        w = weights.reshape(len(weights), -1)[:, valid]
        weight_sum = w.sum(axis=0, dtype=np.float64)
        if (weight_sum <= 0).any():
            raise ValueError(
                f"{int((weight_sum <= 0).sum())} pixel(s) with features have no region; the "
                "region store must give every grid pixel a region"
            )
        table = flat[:, valid].T  # (n_valid, n_features)
        needed = [int(r) for r in np.flatnonzero(w.max(axis=1) > 0)]
        if encoding.task == "regression":
            total = np.zeros(table.shape[0], dtype=np.float64)
            for region in needed:
                rows = w[region] > 0
                model = model_of(region)
                values = np.asarray(model.predict(model_input(model, valid_rows(table, rows))))
                total[rows] += w[region, rows] * values.reshape(-1)
            out[VALUE_VARIABLE][valid] = (total / weight_sum).astype(encoding.dtype)
        else:
            _combine_classes(out, model_of, table, w, valid, needed, encoding, classes, rule)
    return {name: values.reshape(height, width) for name, values in out.items()}


def _combine_classes(
    out: dict[str, np.ndarray],
    model_of: Callable[[int], Any],
    table: np.ndarray,
    w: np.ndarray,
    valid: np.ndarray,
    needed: list[int],
    encoding: MapEncoding,
    classes: Sequence[int],
    rule: BorderRule,
) -> None:
    probabilities: dict[int, np.ndarray] = {}
    for region in needed:
        rows = w[region] > 0
        model = model_of(region)
        proba = np.asarray(model.predict_proba(model_input(model, valid_rows(table, rows))))
        aligned = align_probabilities(proba.T, np.asarray(model.classes_).tolist(), classes)
        full = np.zeros((len(classes), table.shape[0]), dtype=np.float32)
        full[:, rows] = aligned
        probabilities[region] = full
    index, confidence = combine_predictions(probabilities, w, rule)
    out[LABEL_VARIABLE][valid] = np.asarray(classes)[index].astype(encoding.dtype)
    out[CONFIDENCE_VARIABLE][valid] = _percent(confidence)
    if encoding.probability_classes:
        total = sum(w[r].astype(np.float64) * probabilities[r] for r in needed)
        blended = np.asarray(total) / w.sum(axis=0, dtype=np.float64)
        position = {int(c): i for i, c in enumerate(classes)}
        for code in encoding.probability_classes:
            out[probability_variable(code)][valid] = _percent(blended[position[code]])


def _region_model(folder: str, encoding: MapEncoding) -> Any:
    model, contract = _cached_model(folder)
    if learner_for(contract.kind).halo(contract):
        raise ModelError(
            f"the region model in {folder} is a {contract.kind} model that reads neighbouring "
            "pixels; region models are blended pixel by pixel",
            fix="use a per-pixel model (sklearn, torch) with reference.regions",
            field="model.kind",
        )
    if contract.task != encoding.task:
        raise ModelError(
            f"the region model in {folder} is a {contract.task} model, the map is {encoding.task}",
            fix="train every region's model for the same task",
            field="model",
        )
    return model


def predict_chunk_regions(task: RegionPredictTask) -> PredictReport:
    """Predict one chunk with the region models (combined near borders) into the map store."""
    names = region_names(task.region_store)
    if len(names) != len(task.model_folders):
        raise ValueError(
            f"the region store {task.region_store} lists {len(names)} regions {list(names)}, "
            f"the task has {len(task.model_folders)} model folders; give one per region, in "
            "region order"
        )
    weights = region_weights(task.region_store, task.window, task.border_pixels)
    stack = read_block(task.cube_store, task.variables, task.window, 0)
    layers = predict_stack_regions(
        lambda region: _region_model(task.model_folders[region], task.encoding),
        stack,
        weights,
        task.encoding,
        classes=task.classes,
        rule=task.rule,
    )
    report = _write_layers(task.map_store, task.window, layers, task.encoding)
    missing = never_valid(task.cube_store, stack, task.window, 0)
    return report if missing is None else dataclasses.replace(report, never_valid_pixels=missing)
