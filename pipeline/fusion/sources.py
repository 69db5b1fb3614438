"""The sources of a fusion, read: an earlier run's maps and confusion matrix, a model's labels on
a cube chunk, and one chunk fused into the fused map store.

A source is either a model folder (its labels are predicted on the chunk, with the halo its
learner asks for, exactly as the map of its run would be) or a map of an earlier run on the same
grid (its label and confidence COGs, read by window). Memory per chunk: the chunk's features
once per model source, and two small layers per source.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from pipeline.errors import InputDataError
from pipeline.model import GridSpec, Window

FIELD = "fusion.sources"


@dataclass(frozen=True)
class StoreMaps:
    """The maps of an earlier classification run, as a fusion source reads them."""

    labels: str
    confidence: str
    metrics: str
    """Its report's metrics.json: the validation confusion matrix and its classes."""

    def identity(self) -> tuple[Any, ...]:
        """What decides the source's content, for digests: each file's size and modification
        time, and the report's bytes (a rewritten map reruns the fusion, a copy does not)."""
        parts: list[Any] = []
        for path in (self.labels, self.confidence):
            stat = Path(path).stat()
            parts.append((path, stat.st_size, stat.st_mtime_ns))
        parts.append(Path(self.metrics).read_text(encoding="utf-8"))
        return tuple(parts)


def store_maps(store: str, grid: GridSpec) -> StoreMaps:
    """The maps of the run store ``store`` (its own output names, from its recorded manifest),
    checked to be on ``grid``."""
    import rasterio

    root = Path(store)
    recorded = root / "state" / "manifest.json"
    if "://" in store or not recorded.is_file():
        raise InputDataError(
            f"fusion source store {store!r} is not a finished local run store (no "
            "state/manifest.json)",
            fix="name the outputs.store folder of an earlier sitsflow run on this machine",
            field=FIELD,
        )
    outputs = json.loads(recorded.read_text(encoding="utf-8"))["spec"]["outputs"]
    maps = StoreMaps(
        str(root / outputs.get("labels", "maps/labels.tif")),
        str(root / outputs.get("confidence", "maps/confidence.tif")),
        str(root / outputs.get("report", "report") / "metrics.json"),
    )
    for path in (maps.labels, maps.confidence, maps.metrics):
        if not Path(path).is_file():
            raise InputDataError(
                f"fusion source store {store!r} has no {Path(path).relative_to(root)}",
                fix="finish that run first (sitsflow run --resume), or remove the source",
                field=FIELD,
            )
    with rasterio.open(maps.labels) as src:
        same = (
            src.width == grid.width
            and src.height == grid.height
            and tuple(src.transform)[:6] == tuple(grid.affine)[:6]
            and src.crs is not None
            and src.crs.to_string() == grid.crs
        )
        found = f"{src.width} x {src.height} px, {src.crs}, {tuple(src.transform)[:6]}"
    if not same:
        raise InputDataError(
            f"fusion source store {store!r} maps {found}, not this run's grid "
            f"({grid.width} x {grid.height} px, {grid.crs}, {tuple(grid.affine)[:6]})",
            fix="fuse maps of the same area, resolution and CRS: give both runs the same "
            "area section",
            field=FIELD,
        )
    return maps


def store_confusion(maps: StoreMaps) -> tuple[tuple[int, ...], np.ndarray]:
    """The classes and the validation confusion matrix (rows reference, columns map) of a
    store source's report."""
    metrics = json.loads(Path(maps.metrics).read_text(encoding="utf-8"))
    return tuple(int(c) for c in metrics["classes"]), np.asarray(metrics["confusion"], np.int64)


@dataclass(frozen=True)
class ModelSource:
    folder: str
    """A worker-local model folder."""
    variables: tuple[tuple[str, str], ...] | None = None
    """The cube variables it reads (a model of one sensor's features); None: the task's."""


@dataclass(frozen=True)
class MapSource:
    labels: str
    confidence: str


Source = ModelSource | MapSource


@dataclass(frozen=True)
class FuseTask:
    """One chunk: every source's labels there, fused, written to the fused map store."""

    cube_store: str
    variables: tuple[tuple[str, str], ...]
    sources: tuple[Source, ...]
    map_store: str
    window: Window
    encoding: Any
    """The fused map's ``MapEncoding`` (classes: the union of the sources')."""
    method: str
    masses: tuple[tuple[float, ...], ...]
    """Dempster-Shafer: each source's mass per class of ``classes``."""
    classes: tuple[int, ...]
    offset: tuple[int, int] = (0, 0)
    """Where the window's grid (a tile's) starts in the map sources' grid (the mosaic's)."""
    owned: np.ndarray | None = None
    """(h, w) the window's pixels its tile owns (a tiled run): the rest is left unmapped, as
    the tile's own map leaves it, so that the mosaic takes them from their owner."""


def _read_map(path: str, window: Window) -> tuple[np.ndarray, Any]:
    import rasterio
    from rasterio.windows import Window as RioWindow

    with rasterio.open(path) as src:
        data = src.read(
            1, window=RioWindow(window.col_off, window.row_off, window.width, window.height)
        )
        return data, src.nodata


def source_layers(task: FuseTask, source: Source) -> tuple[np.ndarray, np.ndarray]:
    """A source's labels (in the fused map's codes, its no-data where none) and confidence
    (percent) on the task's window."""
    from pipeline.predict.blockwise import (
        CONFIDENCE_VARIABLE,
        LABEL_VARIABLE,
        _cached_model,
        encode_prediction,
        read_block,
    )

    encoding = task.encoding
    if isinstance(source, ModelSource):
        from pipeline.learn.registry import learner_for

        model, contract = _cached_model(source.folder)
        learner = learner_for(contract.kind)
        halo = learner.halo(contract)
        variables = task.variables if source.variables is None else source.variables
        block = read_block(task.cube_store, variables, task.window, halo)
        layers = encode_prediction(
            learner.predict_block(model, block, halo, "classification"), encoding
        )
        return layers[LABEL_VARIABLE], layers[CONFIDENCE_VARIABLE]
    w = task.window
    at = Window(w.row_off + task.offset[0], w.col_off + task.offset[1], w.height, w.width)
    labels, nodata = _read_map(source.labels, at)
    confidence, _ = _read_map(source.confidence, at)
    out = labels.astype(np.int64)
    if nodata is not None:
        out[labels == nodata] = int(encoding.nodata)
    return out.astype(encoding.dtype), confidence


def fuse_chunk(task: FuseTask) -> dict[str, Any]:
    """Fuse one chunk into the fused map store; counts and confidence sums for the report."""
    import zarr

    from pipeline.fusion.kernels import dempster_shafer, majority_vote
    from pipeline.predict.blockwise import CONFIDENCE_NODATA, CONFIDENCE_VARIABLE, LABEL_VARIABLE

    layers = [source_layers(task, s) for s in task.sources]
    labels = np.stack([la for la, _ in layers])
    confidence = np.stack([c for _, c in layers]).astype(np.float64)
    confidence[confidence > 100] = 0  # no-data confidence (255) says nothing
    nodata = task.encoding.nodata
    if task.method == "majority_vote":
        fused, percent = majority_vote(labels, confidence, task.classes, nodata)
    else:
        masses = np.asarray(task.masses, dtype=np.float64)
        fused, percent = dempster_shafer(labels, confidence, masses, task.classes, nodata)
    if task.owned is not None and not task.owned.all():
        fused = np.where(task.owned, fused, nodata).astype(fused.dtype)
        percent = np.where(task.owned, percent, CONFIDENCE_NODATA).astype(percent.dtype)
        layers = [(np.where(task.owned, la, nodata), co) for la, co in layers]
    group = zarr.open_group(task.map_store, mode="r+")
    rows, cols = task.window.slices
    group[LABEL_VARIABLE][rows, cols] = fused  # type: ignore[index]
    group[CONFIDENCE_VARIABLE][rows, cols] = percent  # type: ignore[index]
    mapped = fused != nodata
    summary: dict[str, Any] = {
        "mapped_pixels": int(mapped.sum()),
        "confidence_sum": float(percent[mapped].sum()),
        "sources": [],
    }
    for (la, co), _ in zip(layers, task.sources, strict=True):
        here = la != nodata
        summary["sources"].append([int(here.sum()), float(np.asarray(co)[here].sum())])
    return summary
