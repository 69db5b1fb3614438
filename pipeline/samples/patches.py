"""Patch samples: square patches of the cube cut around the reference, with dense labels.

A patch model learns from patches, not from pixel rows. The patches are placed over the sample
pixels the pixel path drew (``samples.parquet``: the split by polygon and the training selection
are the same), so the split stays exactly that of pixel models: a pixel of a validation polygon
is never a training label, even inside a training patch that overlaps it (its features are
imagery, its label is masked). Polygons become dense labels inside each patch; points are
single labelled pixels (sparse labels); every other pixel is ignored by the loss (``IGNORE``).

The store (Zarr v3, one patch per chunk) holds, for ``n`` patches of ``size`` pixels:

* ``features`` (n, n_features, size, size) float32, the cube's features in its order; NaN off
  the grid and where a feature is missing;
* ``label`` (n, size, size) int32: the class code of each sample pixel, ``IGNORE`` elsewhere;
* ``split`` (n, size, size) uint8: ``NONE``, ``TRAIN_SIDE`` or ``VALIDATION_SIDE`` (run 0's split);
* ``polygon`` (n, size, size) int32: the polygon of each sample pixel (-1 elsewhere), so the
  training loop keeps polygons whole when it holds some out for early stopping;
* ``origin`` (n, 2) int64: each patch's top-left row and column on its tile's grid;
* attributes ``size``, ``feature_names`` and ``tiles`` (each patch's tile key, or null).
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import pandas as pd
import zarr

from pipeline.cube.store import read_features
from pipeline.model import Window
from pipeline.samples.split import TRAIN, VALIDATION

__all__ = [
    "IGNORE",
    "NONE",
    "TRAIN_SIDE",
    "VALIDATION_SIDE",
    "PatchSet",
    "PatchSource",
    "patch_origins",
    "read_padded",
    "read_patches",
    "write_patches",
]

IGNORE = -1
NONE, TRAIN_SIDE, VALIDATION_SIDE = 0, 1, 2


@dataclass(frozen=True)
class PatchSource:
    """Where the patches of one tile are cut: its cube store, variables and grid size."""

    tile: str | None
    cube_store: str
    variables: tuple[tuple[str, str], ...]
    height: int
    width: int


@dataclass(frozen=True)
class PatchSet:
    features: np.ndarray
    label: np.ndarray
    split: np.ndarray
    polygon: np.ndarray
    origin: np.ndarray
    feature_names: tuple[str, ...]

    @property
    def size(self) -> int:
        return int(self.label.shape[-1])

    def training(self) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """Features, labels (IGNORE off the training side) and polygons of the patches that
        hold at least one training label."""
        labels = np.where(self.split == TRAIN_SIDE, self.label, IGNORE).astype(np.int64)
        keep = (labels != IGNORE).any(axis=(1, 2))
        polygons = np.where(labels != IGNORE, self.polygon, -1)
        return self.features[keep], labels[keep], polygons[keep]


def _starts(low: int, high: int, size: int, extent: int) -> list[int]:
    """Starts of the patches covering pixels low..high (inclusive) of an axis of ``extent``:
    one centred patch when they fit in one, else abutting patches centred on the span; kept on
    the grid when the grid is at least a patch wide."""
    span = high - low + 1
    count = max(1, math.ceil(span / size))
    first = low + (span - count * size) // 2
    out = []
    for k in range(count):
        start = first + k * size
        start = min(max(start, 0), extent - size) if extent >= size else 0
        out.append(start)
    return sorted(set(out))


def patch_origins(pixels: pd.DataFrame, size: int, height: int, width: int) -> np.ndarray:
    """(n, 2) top-left corners of the patches covering each polygon's sample pixels, sorted and
    without repeats (a patch shared by neighbouring polygons is cut once)."""
    origins: set[tuple[int, int]] = set()
    rows = pixels["row"].to_numpy()
    cols = pixels["col"].to_numpy()
    for _, index in pixels.groupby("polygon_id", sort=True).indices.items():
        r, c = rows[index], cols[index]
        for r0 in _starts(int(r.min()), int(r.max()), size, height):
            for c0 in _starts(int(c.min()), int(c.max()), size, width):
                origins.add((r0, c0))
    return np.asarray(sorted(origins), dtype=np.int64).reshape(-1, 2)


def read_padded(
    cube_store: str, variables: Sequence[tuple[str, str]], window: Window, height: int, width: int
) -> np.ndarray:
    """The features of ``window`` (which may reach off the grid): NaN off the grid."""
    rs, cs = max(window.row_off, 0), max(window.col_off, 0)
    re = min(window.row_off + window.height, height)
    ce = min(window.col_off + window.width, width)
    inside = read_features(cube_store, list(variables), Window(rs, cs, re - rs, ce - cs))
    out = np.full((inside.shape[0], window.height, window.width), np.nan, np.float32)
    out[:, rs - window.row_off : re - window.row_off, cs - window.col_off : ce - window.col_off] = (
        inside
    )
    return out


def _labels_of(
    pixels: pd.DataFrame, origins: np.ndarray, size: int
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Dense label, split and polygon rasters of each patch from the sample pixels."""
    n = len(origins)
    label = np.full((n, size, size), IGNORE, np.int32)
    split = np.full((n, size, size), NONE, np.uint8)
    polygon = np.full((n, size, size), -1, np.int32)
    ordered = pixels.sort_values(["row", "col"], kind="stable")
    rows = ordered["row"].to_numpy()
    cols = ordered["col"].to_numpy()
    codes = ordered["label"].to_numpy(np.int64)
    sides = ordered["split"].to_numpy()
    side_code = np.where(
        sides == TRAIN, TRAIN_SIDE, np.where(sides == VALIDATION, VALIDATION_SIDE, NONE)
    )
    ids = ordered["polygon_id"].to_numpy(np.int64)
    for i, (r0, c0) in enumerate(origins):
        lo, hi = np.searchsorted(rows, r0), np.searchsorted(rows, r0 + size)
        inside = lo + np.flatnonzero((cols[lo:hi] >= c0) & (cols[lo:hi] < c0 + size))
        r, c = rows[inside] - r0, cols[inside] - c0
        label[i, r, c] = codes[inside]
        split[i, r, c] = side_code[inside]
        polygon[i, r, c] = ids[inside]
    return label, split, polygon


def write_patches(
    path: str,
    sources: Sequence[PatchSource],
    pixels: pd.DataFrame,
    size: int,
    feature_names: Sequence[str],
) -> dict[str, int]:
    """Cut the patches of every tile and write the store at ``path`` (a local folder)."""
    parts = []
    for source in sources:
        mine = pixels if source.tile is None else pixels[pixels["tile"] == source.tile]
        if mine.empty:
            continue
        origins = patch_origins(mine, size, source.height, source.width)
        label, split, polygon = _labels_of(mine, origins, size)
        features = np.stack(
            [
                read_padded(
                    source.cube_store,
                    source.variables,
                    Window(int(r0), int(c0), size, size),
                    source.height,
                    source.width,
                )
                for r0, c0 in origins
            ]
        )
        parts.append((source.tile, origins, features, label, split, polygon))
    group = zarr.open_group(path, mode="w", zarr_format=3)
    n = sum(len(p[1]) for p in parts)
    n_features = len(feature_names)

    def array(name: str, shape: tuple[int, ...], dtype: str, fill: int | float) -> zarr.Array:
        chunks = (1, *shape[1:])
        return group.create_array(name, shape=shape, chunks=chunks, dtype=dtype, fill_value=fill)

    arrays = {
        "features": array("features", (n, n_features, size, size), "float32", np.nan),
        "label": array("label", (n, size, size), "int32", IGNORE),
        "split": array("split", (n, size, size), "uint8", NONE),
        "polygon": array("polygon", (n, size, size), "int32", -1),
        "origin": array("origin", (n, 2), "int64", 0),
    }
    start = 0
    tiles: list[str | None] = []
    for tile, origins, features, label, split, polygon in parts:
        stop = start + len(origins)
        for name, values in (
            ("features", features),
            ("label", label),
            ("split", split),
            ("polygon", polygon),
            ("origin", origins),
        ):
            arrays[name][start:stop] = values
        tiles += [tile] * len(origins)
        start = stop
    group.attrs.update({"size": size, "feature_names": list(feature_names), "tiles": tiles})
    all_split = np.concatenate([p[4] for p in parts]) if parts else np.zeros(0)
    return {
        "patches": n,
        "training_label_pixels": int((all_split == TRAIN_SIDE).sum()),
        "masked_validation_pixels": int((all_split == VALIDATION_SIDE).sum()),
    }


def read_patches(path: str) -> PatchSet:
    group = zarr.open_group(path, mode="r")

    def values(name: str) -> np.ndarray:
        array = group[name]
        assert isinstance(array, zarr.Array)
        return np.asarray(array[...])

    return PatchSet(
        values("features"),
        values("label"),
        values("split"),
        values("polygon"),
        values("origin"),
        tuple(str(n) for n in group.attrs["feature_names"]),  # type: ignore[union-attr]
    )
